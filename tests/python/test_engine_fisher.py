"""The engine's diagonal empirical Fisher (recall/engine/fisher.h, issue 20) against torch on tiny
random models, through tests/engine_helpers/fisher_tool:
  - every tensor equals F = (1/N) sum_s g_s^2 from transformers in float32 (one unpadded
    sample per loss.backward(), g_s the gradient of the mean next-token log-likelihood, squares
    summed in float64) within 1e-5 of the tensor's largest value, for a Llama (GQA, untied), a
    Qwen2 (q/k/v biases, tied embeddings: the lm_head appears once, as model.embed_tokens.weight)
    and a Mistral whose sliding window (4) is shorter than most samples (the masked attention);
    names and shapes are the checkpoint's, dtype F32;
  - the metadata: samples = N (a 1-token sample is skipped), tokens = sum(T_s - 1), sum_squares =
    the file's sum of F^2; the progress callback once per input sample; two runs byte-identical;
  - no sample with a next token, and a token id outside the vocabulary, are errors that say so;
  - fisher_memory_bytes bounds the measured anonymous RSS of a run (and is not loose by > 4x)."""
import hashlib
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import transformers
from safetensors import safe_open

sys.path.insert(0, os.path.dirname(__file__))
from recall_testlib import Checks, tiny_llama, write_jsonl  # noqa: E402

RECALL = os.environ.get("RECALL_BIN", "build/bin/recall")
TOOL = os.path.join(os.path.dirname(os.path.abspath(RECALL)), "fisher_tool")
torch.set_num_threads(2)
transformers.utils.logging.disable_progress_bar()


def fisher_tool(model_dir, samples, out, w):
    ids = os.path.join(w, "ids.jsonl")
    write_jsonl(ids, samples)
    return subprocess.run([TOOL, model_dir, ids, out], capture_output=True, text=True)


def reference_fisher(model_dir, samples):
    """F per named parameter (float64) from transformers, with N and the scored tokens."""
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    acc = {name: torch.zeros(p.shape, dtype=torch.float64) for name, p in model.named_parameters()}
    n = tokens = 0
    for ids in samples:
        if len(ids) < 2:
            continue
        model.zero_grad(set_to_none=True)
        x = torch.tensor([ids])
        logp = torch.log_softmax(model(input_ids=x).logits.float(), -1)[0, :-1]
        ll = logp.gather(-1, x[0, 1:, None]).squeeze(-1).mean()
        ll.backward()
        for name, p in model.named_parameters():
            acc[name] += p.grad.double() ** 2
        n += 1
        tokens += len(ids) - 1
    return {name: a / n for name, a in acc.items()}, n, tokens


def read_fisher(path):
    """{name: tensor} in the file's layout order, and the metadata."""
    with open(path, "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    order = sorted((v["data_offsets"][0], k) for k, v in header.items() if k != "__metadata__")
    with safe_open(path, "pt") as f:
        return {k: f.get_tensor(k) for _, k in order}, f.metadata()


BLOCK_ORDER = ["input_layernorm.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight",
               "self_attn.v_proj.weight", "self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias",
               "self_attn.o_proj.weight", "post_attention_layernorm.weight", "mlp.gate_proj.weight",
               "mlp.up_proj.weight", "mlp.down_proj.weight"]


def canonical(names):
    """recall's canonical tensor order: embedding, blocks in order (roles as above), norm, lm_head."""
    def key(name):
        if name == "model.embed_tokens.weight":
            return (0, 0, 0)
        if name.startswith("model.layers."):
            block, role = name[len("model.layers."):].split(".", 1)
            return (1, int(block), BLOCK_ORDER.index(role))
        return (2, 0, ["model.norm.weight", "lm_head.weight"].index(name))
    return sorted(names, key=key)


def tiny_model(path, seed, kind):
    """"qwen2-tied": q/k/v biases and tied embeddings; "mistral": a sliding window of 4 tokens."""
    torch.manual_seed(seed)
    common = dict(vocab_size=96, hidden_size=64, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=128, bos_token_id=1, eos_token_id=2)
    if kind == "qwen2-tied":
        model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**common, tie_word_embeddings=True))
    else:
        model = transformers.MistralForCausalLM(transformers.MistralConfig(**common, sliding_window=4))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape))
    model.save_pretrained(path, safe_serialization=True)


def check_parity(check, w, label, model_dir, samples):
    out = os.path.join(w, label, "0", "fisher.safetensors")  # the parent directories are created
    r = fisher_tool(model_dir, samples, out, w)
    check(r.returncode == 0, f"{label}: fisher_tool runs" + ("" if r.returncode == 0 else ": " + r.stderr.strip()))
    if r.returncode != 0:
        return
    result = json.loads(r.stdout)
    got, meta = read_fisher(out)
    ref, n, tokens = reference_fisher(model_dir, samples)
    check(set(got) == set(ref) and list(got) == canonical(ref),
          f"{label}: tensor names are the model's parameters ({len(got)}), in canonical order")
    worst = 0.0
    for name, f in ref.items():
        g = got.get(name)
        if g is None or g.dtype != torch.float32 or tuple(g.shape) != tuple(f.shape):
            check(False, f"{label}: {name} is F32 {list(f.shape)}")
            continue
        diff = (g.double() - f).abs().max().item()
        scale = f.abs().max().item()
        rel = diff / scale if scale > 0 else diff
        worst = max(worst, rel)
        if rel > 1e-5:
            check(False, f"{label}: {name} max abs diff {diff:.3g}, relative {rel:.3g} > 1e-5")
    print(f"      {label}: worst max|F - F_ref| / max|F_ref| over {len(ref)} tensors = {worst:.3g}")
    check(worst <= 1e-5, f"{label}: every tensor within 1e-5 of the torch reference")
    file_sq = sum((t.double() ** 2).sum().item() for t in got.values())
    ref_sq = sum((t ** 2).sum().item() for t in ref.values())
    check(meta.get("samples") == str(n) and result["samples"] == n,
          f"{label}: metadata samples {meta.get('samples')} == N {n} (the 1-token sample skipped)")
    check(meta.get("tokens") == str(tokens) and result["tokens"] == tokens,
          f"{label}: metadata tokens {meta.get('tokens')} == sum(T - 1) {tokens}")
    sq = float(meta.get("sum_squares", "nan"))
    check(abs(sq - file_sq) <= 1e-12 * file_sq and abs(sq - ref_sq) <= 1e-5 * ref_sq,
          f"{label}: metadata sum_squares {sq:.9g} == the file's {file_sq:.9g} ~ the reference's {ref_sq:.9g}")
    total = len(samples)
    check(result["progress"] == [[i + 1, total] for i in range(total)],
          f"{label}: progress called once per sample, ({total}, {total}) last")
    return out


def main():
    check = Checks()
    samples = [[1, 5, 9, 33, 17, 2], [1, 40], [7], [1, 12, 12, 12, 90, 3, 4, 5, 6, 7, 8, 9, 50, 51],
               [1, 64, 3, 120, 11, 19, 23]]
    with tempfile.TemporaryDirectory() as w:
        llama = os.path.join(w, "llama")
        tiny_llama(llama, seed=3, layers=2, dtype="float32")
        out = check_parity(check, w, "llama", llama, samples)
        qwen = os.path.join(w, "qwen2")
        tiny_model(qwen, 4, "qwen2-tied")
        check_parity(check, w, "qwen2-tied", qwen, [s for s in samples if max(s) < 96])
        mistral = os.path.join(w, "mistral")
        tiny_model(mistral, 6, "mistral")
        check_parity(check, w, "mistral-sliding", mistral, [s for s in samples if max(s) < 96])
        with safe_open(os.path.join(qwen, "model.safetensors"), "pt") as f:
            print("      qwen2-tied checkpoint:", "lm_head.weight" in f.keys() and "has" or "has no", "lm_head.weight")

        if out:
            again = os.path.join(w, "again.safetensors")
            fisher_tool(llama, samples, again, w)
            digest = lambda p: hashlib.sha256(open(p, "rb").read()).hexdigest()  # noqa: E731
            check(digest(out) == digest(again), "llama: a second run writes the same bytes")

        r = fisher_tool(llama, [[1], [5], []], os.path.join(w, "none.safetensors"), w)
        check(r.returncode == 1 and "none of the 3 samples" in r.stderr and "two tokens or more" in r.stderr,
              "no sample with a next token: " + r.stderr.strip())
        r = fisher_tool(llama, [[1, 2, 3], [1, 128]], os.path.join(w, "oov.safetensors"), w)
        check(r.returncode == 1 and "sample 1 has token id 128 at position 1" in r.stderr and "vocab_size 128" in r.stderr,
              "an id outside the vocabulary: " + r.stderr.strip())
        check(not os.path.exists(os.path.join(w, "none.safetensors")), "nothing is written on error")

        check_memory(check, w)
    check.finish()


def check_memory(check, w):
    """A model whose Fisher state (16 bytes per parameter) and activations dwarf the allocator's
    noise: 9.4M parameters, 512-token samples."""
    big = os.path.join(w, "big")
    tiny_llama(big, seed=5, vocab=16000, hidden=256, layers=2, heads=8, kv_heads=4, inter=512, dtype="float32")
    rng = np.random.default_rng(0)
    samples = [[1] + rng.integers(3, 16000, size=t - 1).tolist() for t in (512, 200, 512)]
    r = fisher_tool(big, samples, os.path.join(w, "big.safetensors"), w)
    check(r.returncode == 0, "memory run" + ("" if r.returncode == 0 else ": " + r.stderr.strip()))
    if r.returncode != 0:
        return
    m = json.loads(r.stdout)
    used = m["anon_peak"] - m["anon_before"]
    print(f"      memory: peak RssAnon growth {used / 2**20:.1f} MiB, fisher_memory_bytes {m['bound'] / 2**20:.1f} MiB"
          f" (ratio {m['bound'] / max(used, 1):.2f}), {m['seconds']:.1f} s")
    check(used <= m["bound"], "fisher_memory_bytes is an upper bound of the measured growth")
    check(m["bound"] <= 4 * used, "fisher_memory_bytes is within 4x of the measured growth")


if __name__ == "__main__":
    main()
