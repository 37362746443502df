"""Memory plan vs measured memory, per rank (issue 15): runs merges and prints, for every rank,
the plan the job printed (report.json "memory"[].planned_bytes) against the peaks of resident
anonymous memory (what the plan bounds, sampled every 10 ms from /proc/self/status) and of
file-backed memory (the page cache of the memory-mapped inputs, which the kernel reclaims).

Rows: RECALL (resident and streaming), linear, TIES, SLERP and the data-aware methods (RegMean
resident and streaming, task arithmetic + AIM, Fisher) on 1 and 2 ranks on a small Llama, and with
--big the same methods at Llama-3-70B block shapes (hidden 8192, MLP 28672, 64/8 heads,
2 blocks, vocab 32768: ~4.5 GB per model in bf16). The big models are written sparse: each
tensor's first 64 KiB hold random values, the rest is a hole, so they cost little disk and
reading them is fast; the merge and the extraction still touch every byte.

    python bench/memory_plan.py                 # small rows (~2 min here)
    python bench/memory_plan.py --big --tmp /big/scratch   # + 70B-shaped rows (~13.5 GB of inputs)
    python bench/memory_plan.py --big --only 70b-aim        # one case (names as printed, spaces as -)

At 70B shapes Fisher needs 16 bytes a parameter of a whole model on one rank (36 GB for the
2-block slice) and RegMean's merge solves a 28672^2 system per down_proj (~12 min on 2 cores).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "python"))
from recall_testlib import write_jsonl  # noqa: E402

RECALL = os.environ.get("RECALL_BIN", os.path.join(HERE, "..", "build", "bin", "recall"))


def llama_config(hidden, inter, layers, heads, kv, vocab):
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
            "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": heads,
            "num_key_value_heads": kv, "vocab_size": vocab, "max_position_embeddings": 4096,
            "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": False,
            "torch_dtype": "bfloat16", "bos_token_id": 1, "eos_token_id": 2}


def tensor_shapes(c):
    H, I, heads, kv, V = c["hidden_size"], c["intermediate_size"], c["num_attention_heads"], \
        c["num_key_value_heads"], c["vocab_size"]
    d = H // heads
    out = [("model.embed_tokens.weight", (V, H))]
    for l in range(c["num_hidden_layers"]):
        p = f"model.layers.{l}."
        out += [(p + "input_layernorm.weight", (H,)), (p + "self_attn.q_proj.weight", (heads * d, H)),
                (p + "self_attn.k_proj.weight", (kv * d, H)), (p + "self_attn.v_proj.weight", (kv * d, H)),
                (p + "self_attn.o_proj.weight", (H, heads * d)), (p + "post_attention_layernorm.weight", (H,)),
                (p + "mlp.gate_proj.weight", (I, H)), (p + "mlp.up_proj.weight", (I, H)),
                (p + "mlp.down_proj.weight", (H, I))]
    out += [("model.norm.weight", (H,)), ("lm_head.weight", (V, H))]
    return out


def write_model(path, cfg, seed, dense_bytes):
    """A bf16 safetensors model; each tensor's first `dense_bytes` random (norms ~1), the rest holes."""
    os.makedirs(path, exist_ok=True)
    json.dump(cfg, open(os.path.join(path, "config.json"), "w"))
    rng = np.random.default_rng(seed)
    header, offset = {}, 0
    shapes = tensor_shapes(cfg)
    for name, shape in shapes:
        n = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(os.path.join(path, "model.safetensors"), "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text)
        start = f.tell()
        f.truncate(start + offset)
        for name, shape in shapes:
            b, e = header[name]["data_offsets"]
            n = min(e - b, dense_bytes) // 2
            v = rng.standard_normal(n).astype(np.float32) * 0.02 + (1.0 if name.endswith("norm.weight") else 0.0)
            f.seek(start + b)
            f.write((v.view(np.uint32) >> 16).astype(np.uint16).tobytes())


def run_case(tmp, name, models, extra, ranks):
    cfg = os.path.join(tmp, name + ".yaml")
    out = os.path.join(tmp, "out-" + name)
    with open(cfg, "w") as f:
        f.write("models:\n" + "".join(f"  - {{name: {n}, path: {p}}}\n" for n, p in models) + extra +
                f"\noutput: {{dir: {out}, overwrite: true}}\n")
    # --bind-to none: each rank may use every core (RegMean's solve runs on the rank's usable CPUs;
    # Open MPI would bind each of 1 or 2 ranks to one core here).
    cmd = ["mpirun", "-np", str(ranks), "--oversubscribe", "--bind-to", "none", RECALL, "merge", "--config", cfg,
           "--quiet"]
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True,
                       env=dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1"))
    secs = time.time() - t0
    if p.returncode != 0:
        print(f"| {name} | {ranks} | failed: {(p.stdout + p.stderr).strip().splitlines()[-1]} |||||", flush=True)
        return False
    ok = True
    report = json.load(open(os.path.join(out, "report.json")))
    phases = ", ".join(f"{k} {v:.0f} s" for k, v in report.get("timings", {}).items())
    print(f"<!-- {name}: phases (rank 0): {phases} -->", flush=True)
    for m in report["memory"]:
        within = m["peak_anon_bytes"] <= m["planned_bytes"]
        ok &= within
        print(f"| {name} | {ranks} | {m['rank']} | {m['planned_bytes'] / 1e9:.3f} | {m['peak_anon_bytes'] / 1e9:.3f} | "
              f"{m['peak_anon_bytes'] / m['planned_bytes']:.2f} | {m['peak_file_bytes'] / 1e9:.3f} | {secs:.0f} | "
              f"{'yes' if within else 'NO'} |", flush=True)
    shutil.rmtree(out, ignore_errors=True)
    return ok


def cases(tmp, prefix, names, data, clusters):
    m = [(n, os.path.join(tmp, f"{prefix}-{n}")) for n in names]
    recall = f"method: recall\ndata: {data}\ntypical: {{clusters: {clusters}}}\nmax_length: 16"
    return [
        (f"{prefix} recall", m, recall, [1, 2]),
        (f"{prefix} recall streaming", m, recall + "\nparallel: {stream_samples: 4}", [1, 2]),
        (f"{prefix} linear", m, "method: linear", [1, 2]),
        (f"{prefix} ties", m, "method: ties\nbase: base\nparams: {density: 0.5}", [1, 2]),
        (f"{prefix} slerp", m[:2], "method: slerp\nbase: base\nparams: {t: 0.4}", [1, 2]),
        # issue 20: the data-aware methods, calibrated on the same samples (`data`)
        (f"{prefix} regmean", m, f"method: regmean\ndata: {data}\nmax_length: 16", [1, 2]),
        (f"{prefix} regmean streaming", m, f"method: regmean\ndata: {data}\nmax_length: 16\n"
                                           "parallel: {stream_samples: 4}", [1, 2]),
        (f"{prefix} aim", m, f"method: task_arithmetic\nbase: base\naim: {{omega: 0.4}}\ndata: {data}\nmax_length: 16",
         [1, 2]),
        (f"{prefix} fisher", m, f"method: fisher\ndata: {data}\nmax_length: 16\ncalibration: {{samples: 16}}", [1, 2]),
    ]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--big", action="store_true", help="also the 70B-shaped rows")
    ap.add_argument("--tmp", default=None, help="scratch directory (the big rows need ~30 GB)")
    ap.add_argument("--only", default="", help="run only cases whose name contains this")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="recall-memplan-", dir=a.tmp)
    names = ["base", "a", "b"]
    data = os.path.join(tmp, "data.jsonl")
    write_jsonl(data, [{"input_ids": [1] + [(13 * i + 7 * j) % 30000 + 3 for j in range(12)]} for i in range(64)])
    small = llama_config(512, 1536, 4, 8, 4, 32000)
    for i, n in enumerate(names):
        write_model(os.path.join(tmp, f"small-{n}"), small, i, 1 << 40)
    todo = cases(tmp, "small", names, data, 8)
    if a.big:
        big = llama_config(8192, 28672, 2, 64, 8, 32768)
        for i, n in enumerate(names):
            write_model(os.path.join(tmp, f"70b-{n}"), big, i, 64 << 10)
        # Fisher's whole-model backward (16 bytes a parameter: 36 GB here) does not fit this VM, nor do
        # two ranks each solving a down_proj (10.4 GB each) beside the inputs: RegMean on one rank.
        for name, models, extra, ranks in cases(tmp, "70b", names, data, 4):
            if "fisher" not in name:
                todo.append((name, models, extra, [1] if "regmean" in name else ranks))
    print("| case | ranks | rank | plan GB | anonymous peak GB | peak / plan | file-backed peak GB | seconds | within |")
    print("|---|---|---|---|---|---|---|---|---|")
    ok = True
    for name, models, extra, ranks in todo:
        if a.only and a.only not in name.replace(" ", "-"):
            continue
        for r in ranks:
            ok &= run_case(tmp, name.replace(" ", "-") + f"-np{r}", models, extra, r)
    shutil.rmtree(tmp, ignore_errors=True)
    print("every rank within its plan" if ok else "SOME RANK EXCEEDED ITS PLAN")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
