"""Forward-pass parity: recall hidden-states (float32 compute) against Hugging Face transformers.

Builds tiny random models (llama with default, linear and llama3 rope; mistral with a sliding
window; qwen2 with q/k/v biases; qwen3 with q/k norms and an explicit head_dim) in f32, bf16 and
f16, with config.json in both dialects (rope_theta + rope_scaling, and rope_parameters), sharded
and unsharded, with norm weights around 1 and biases around 0. For a right-padded batch, every
hidden.*, final_norm and logits must agree within 1e-4 relative (max abs diff / max abs value) at
real tokens; pad positions must be zero; pooled.i must be the mean of hidden.i over real tokens.
"""
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
import numpy as np
import torch
import transformers
from safetensors.numpy import load_file

RECALL = os.environ.get("RECALL_BIN", "build/bin/recall")
transformers.utils.logging.disable_progress_bar()
TOL = 1e-4
BF16_TOL = 1e-2  # bfloat16 compute against HF in bfloat16: same ops, 8-bit mantissa
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}


def make_config(arch, rope):
    common = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=160, max_position_embeddings=64,
                  rms_norm_eps=1e-5, initializer_range=0.2, bos_token_id=1, eos_token_id=2,
                  tie_word_embeddings=False)
    rope_parameters = {"rope_type": "default", "rope_theta": 10000.0}
    if rope == "linear":
        rope_parameters = {"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.5}
    elif rope == "llama3":
        rope_parameters = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                           "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                           "original_max_position_embeddings": 32}
    if arch == "llama":
        return transformers.LlamaConfig(**common, attention_bias=True, mlp_bias=(rope == "linear"),
                                        rope_parameters=rope_parameters)
    if arch == "mistral":
        return transformers.MistralConfig(**common, sliding_window=5, rope_parameters=rope_parameters)
    if arch == "qwen2":
        return transformers.Qwen2Config(**dict(common, tie_word_embeddings=True),
                                        rope_parameters=rope_parameters)
    if arch == "qwen3":
        return transformers.Qwen3Config(**dict(common, num_hidden_layers=2), head_dim=24,
                                        rope_parameters=rope_parameters)
    raise ValueError(arch)


MODEL_CLASSES = {"llama": transformers.LlamaForCausalLM, "mistral": transformers.MistralForCausalLM,
                 "qwen2": transformers.Qwen2ForCausalLM, "qwen3": transformers.Qwen3ForCausalLM}


def to_old_dialect(path):
    """Rewrites config.json from rope_parameters to rope_theta + rope_scaling (the common form)."""
    cfg_path = os.path.join(path, "config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    rp = cfg.pop("rope_parameters")
    cfg["rope_theta"] = rp.pop("rope_theta")
    rope_type = rp.pop("rope_type", "default")
    if rope_type != "default":
        rp.pop("partial_rotary_factor", None)
        # The legacy spelling {"type": ...} for linear, {"rope_type": ...} for the others.
        cfg["rope_scaling"] = dict({"type" if rope_type == "linear" else "rope_type": rope_type}, **rp)
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=2)
    return cfg


def build(path, arch, rope, dtype, sharded, seed):
    torch.manual_seed(seed)
    config = make_config(arch, rope)
    model = MODEL_CLASSES[arch](config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.2 * torch.randn_like(p))
    model = model.to(DTYPES[dtype])
    model.save_pretrained(path, max_shard_size="60KB" if sharded else "1GB")


def hf_reference(path, arch, ids, mask, compute=torch.float32):
    model = MODEL_CLASSES[arch].from_pretrained(path, dtype=compute, attn_implementation="sdpa")
    model.eval()
    captured = {}

    def hook(_module, _inputs, output):
        captured["last"] = output[0] if isinstance(output, tuple) else output

    model.model.layers[-1].register_forward_hook(hook)
    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                    output_hidden_states=True)
    hs = [h.float().numpy() for h in out.hidden_states]
    L = len(model.model.layers)
    assert len(hs) == L + 1, len(hs)
    ref = {f"hidden.{i}": hs[i] for i in range(L)}
    ref[f"hidden.{L}"] = captured["last"].float().numpy()  # HF's last hidden_states entry is normed
    ref["final_norm"] = hs[L]
    ref["logits"] = out.logits.float().numpy()
    return ref, L


def run_case(work, arch, rope, dtype, dialect, sharded, seed, compute="float32"):
    suffix = "" if compute == "float32" else f"-compute-{compute}"
    path = os.path.join(work, f"{arch}-{rope}-{dtype}-{dialect}-{'sharded' if sharded else 'single'}{suffix}")
    tol = TOL if compute == "float32" else BF16_TOL
    build(path, arch, rope, dtype, sharded, seed)
    if sharded:
        assert os.path.exists(os.path.join(path, "model.safetensors.index.json")), "not sharded"
    if dialect == "old":
        to_old_dialect(path)
    rng = np.random.default_rng(seed)
    lengths = [11, 7, 2]
    T = max(lengths)
    ids = np.zeros((len(lengths), T), dtype=np.int64)
    mask = np.zeros_like(ids)
    for n, ln in enumerate(lengths):
        ids[n, :ln] = rng.integers(0, 160, ln)
        mask[n, :ln] = 1
    ref, L = hf_reference(path, arch, ids.tolist(), mask.tolist(), getattr(torch, compute))

    data = os.path.join(path, "tokens.jsonl")
    with open(data, "w") as f:
        for n, ln in enumerate(lengths):
            f.write(json.dumps({"input_ids": ids[n, :ln].tolist()}) + "\n")
    out = os.path.join(path, "hs.safetensors")
    subprocess.run([RECALL, "hidden-states", "--model", path, "--tokens", data, "--out", out,
                    "--dtype", compute, "--batch", "2"], check=True, stdout=subprocess.DEVNULL)
    got = load_file(out)

    failures = []
    if not np.array_equal(got["mask"], mask):
        failures.append("mask differs")
    real = mask.astype(bool)
    worst = 0.0
    for name, r in ref.items():
        g = got[name]
        if g.shape != r.shape:
            failures.append(f"{name}: shape {g.shape} != {r.shape}")
            continue
        diff = np.abs(g[real] - r[real]).max()
        rel = diff / np.abs(r[real]).max()
        worst = max(worst, rel)
        if not rel <= tol:
            failures.append(f"{name}: max abs diff {diff:.3g}, rel {rel:.3g}")
        if np.abs(g[~real]).max() != 0:
            failures.append(f"{name}: non-zero values at pad positions")
    for i in range(L + 1):
        h = got[f"hidden.{i}"].astype(np.float64)
        expect = (h * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
        prel = np.abs(got[f"pooled.{i}"] - expect).max() / np.abs(expect).max()
        if not prel <= 1e-6:
            failures.append(f"pooled.{i}: rel {prel:.3g} from the mean of hidden.{i}")
    if arch in ("mistral", "qwen3") and dtype == "f32" and dialect == "new" and not sharded:
        failures += check_generate(path, arch, ids[0, :3].tolist())
    return os.path.basename(path), worst, failures


def check_generate(path, arch, prompt, n=12):
    """recall generate (KV cache; for mistral the window of 5 is exceeded) == HF argmax loop."""
    model = MODEL_CLASSES[arch].from_pretrained(path, dtype=torch.float32).eval()
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            seq.append(int(model(input_ids=torch.tensor([seq])).logits[0, -1].argmax()))
    out = subprocess.run([RECALL, "generate", "--model", path, "--tokens", ",".join(map(str, prompt)),
                          "--max-new", str(n), "--ignore-eos"], check=True, capture_output=True, text=True).stdout
    got = [int(t) for t in out.split("tokens:")[1].splitlines()[0].split()]
    print(f"     generate {arch}: recall {got}, HF {seq[len(prompt):]}")
    return [] if got == seq[len(prompt):] else [f"generate: recall {got} != HF {seq[len(prompt):]}"]


def main():
    cases = []
    # Every architecture x dtype x dialect x sharding with default rope ...
    for arch, dtype, dialect, sharded in itertools.product(
            ["llama", "mistral", "qwen2", "qwen3"], ["f32", "bf16", "f16"], ["old", "new"], [False, True]):
        cases.append((arch, "default", dtype, dialect, sharded))
    # ... and llama's scaled rope variants in both dialects.
    for rope, dtype, dialect in itertools.product(["linear", "llama3"], ["f32", "bf16"], ["old", "new"]):
        cases.append(("llama", rope, dtype, dialect, dtype == "bf16"))
    # bfloat16 compute over bfloat16 weights, against HF run in bfloat16.
    for arch in ["llama", "mistral", "qwen2", "qwen3"]:
        cases.append((arch, "default", "bf16", "new", False, "bfloat16"))
    t0 = time.time()
    bad = 0
    with tempfile.TemporaryDirectory() as work:
        for seed, case in enumerate(cases):
            name, worst, failures = run_case(work, *case[:5], seed=seed, compute=(case + ("float32",))[5])
            status = "ok" if not failures else "FAIL"
            print(f"{status:4} {name:42} worst rel diff {worst:.2e}")
            for f in failures:
                print(f"       {f}")
            bad += bool(failures)
    print(f"{len(cases) - bad}/{len(cases)} cases within {TOL} relative ({BF16_TOL} for bfloat16 compute); "
          f"{time.time() - t0:.1f} s")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
