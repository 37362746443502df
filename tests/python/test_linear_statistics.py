"""The engine's linear-input statistics (issue 20) and block-major streaming (issue 15), through
tests/engine_tools/extract_tool (engine::pool_own_cells as the merge job calls it):

  1. the Gram matrices X^T X and sums |x| of the inputs of q_proj (attn_in), o_proj (attn_out),
     gate_proj (mlp_in) and down_proj (mlp_out) equal an independent recomputation with
     transformers' forward pre-hooks on the same models and samples (each sample alone, so no pad
     token can enter), in float64, and the token counts are exact;
  2. the statistics files and the pooled hidden states are bitwise equal on 1, 2 and 3 ranks,
     resident and streaming, with and without spilling the held hidden states to scratch files,
     and for a statistics-only pass (which keeps no pooled state);
  3. a streaming pass loads every block once whatever the number of micro-batches (the ranks'
     block-load counters add up to models x blocks), spill files are removed after the pass, and
     the progress callbacks count every sample and token once.
"""
import glob
import json
import os
import subprocess
import tempfile

import numpy as np

from recall_testlib import BIN, MPIRUN, Checks, tiny_llama, write_jsonl

TOOL = os.path.join(os.path.dirname(BIN), "extract_tool")
GROUPS = {"attn_in": "self_attn.q_proj", "attn_out": "self_attn.o_proj", "mlp_in": "mlp.gate_proj",
          "mlp_out": "mlp.down_proj"}
LAYERS = 4


def extract(cfg, out, np_, *args):
    cmd = [MPIRUN, "-np", str(np_), "--oversubscribe", TOOL, cfg, out] + list(args)
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise AssertionError(f"extract_tool failed ({p.returncode}): {' '.join(cmd)}\n{p.stdout}\n{p.stderr}")
    ranks = [json.load(open(f)) for f in sorted(glob.glob(f"{out}/rank*.json"))]
    return ranks


def files_of(out, sub):
    return {os.path.relpath(f, f"{out}/{sub}"): open(f, "rb").read()
            for f in sorted(glob.glob(f"{out}/{sub}/**/*", recursive=True)) if os.path.isfile(f)}


def hf_statistics(model_dir, samples):
    """{(block, group): (gram, abs_sum, tokens)} in float64 from transformers (float32 forward)."""
    import torch
    import transformers
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    acc = {}

    def hook(key):
        def pre(module, inputs):
            x = inputs[0].reshape(-1, inputs[0].shape[-1]).double()
            g, a, t = acc.get(key, (0, 0, 0))
            acc[key] = (g + (x.T @ x).numpy(), a + x.abs().sum(0).numpy(), t + x.shape[0])
        return pre

    handles = [model.model.layers[l].get_submodule(path).register_forward_pre_hook(hook((l, g)))
               for l in range(LAYERS) for g, path in GROUPS.items()]
    with torch.no_grad():
        for ids in samples:
            model(torch.tensor([ids]))
    for h in handles:
        h.remove()
    return acc


def main():
    from safetensors.numpy import load_file
    check = Checks()
    tmp = tempfile.mkdtemp(prefix="recall-linstats-")
    base = tiny_llama(f"{tmp}/a", seed=0, layers=LAYERS)
    tiny_llama(f"{tmp}/b", seed=1, layers=LAYERS, base_state=base, noise=0.02)
    # 11 samples of 2..12 tokens: micro-batches of 4 (3 of them, the last short) pad every row but
    # the longest of each.
    samples = [[1] + [(5 * i + 3 * j) % 120 + 3 for j in range(1 + (7 * i) % 11)] for i in range(11)]
    write_jsonl(f"{tmp}/data.jsonl", [{"input_ids": s} for s in samples])
    cfg = f"{tmp}/c.yaml"
    with open(cfg, "w") as f:
        f.write(f"models:\n  - {{name: a, path: {tmp}/a}}\n  - {{name: b, path: {tmp}/b}}\nmethod: recall\n"
                f"data: {tmp}/data.jsonl\ntypical: {{clusters: 2}}\nparallel: {{stages: 2, micro_batch: 4}}\n"
                f"output: {{dir: {tmp}/unused}}\n")
    N, T = len(samples), sum(len(s) for s in samples)
    stats = ["--gram", "--abs-sum"]
    stream = ["--set", "parallel.stream_samples=1"]
    scratch = f"{tmp}/scratch"
    runs = {
        "resident np1": extract(cfg, f"{tmp}/r1", 1, *stats),
        "resident np2": extract(cfg, f"{tmp}/r2", 2, *stats),
        "resident np3": extract(cfg, f"{tmp}/r3", 3, *stats),
        "streaming np1": extract(cfg, f"{tmp}/s1", 1, *stats, *stream),
        "streaming np3": extract(cfg, f"{tmp}/s3", 3, *stats, *stream),
        # Every micro-batch spilled (a 1-byte bound), and the first one held with the rest spilled
        # (4 samples x 12 tokens x 64 x 4 bytes = 12288 bytes fit in 13000, the second's 11264 and the
        # third's 7680 do not fit in what is left).
        "streaming np2, all spilled": extract(cfg, f"{tmp}/p2", 2, *stats, *stream, "--max-resident-bytes", "1",
                                              "--scratch", scratch),
        "streaming np2, one held, rest spilled": extract(cfg, f"{tmp}/q2", 2, *stats, *stream,
                                                         "--max-resident-bytes", "13000", "--scratch", scratch),
        "statistics only, resident np2": extract(cfg, f"{tmp}/o2", 2, *stats, "--no-pooled"),
        "statistics only, streaming np3": extract(cfg, f"{tmp}/o3", 3, *stats, "--no-pooled", *stream),
    }
    outs = dict(zip(runs, ["r1", "r2", "r3", "s1", "s3", "p2", "q2", "o2", "o3"]))

    # ---- 1. against transformers ---------------------------------------------------------------
    worst = 0.0
    for m, name in enumerate(["a", "b"]):
        ref = hf_statistics(f"{tmp}/{name}", samples)
        for l in range(LAYERS):
            got = load_file(f"{tmp}/r1/stats/{m}/block_{l}.safetensors")
            expected_names = {f"{g}.{k}" for g in GROUPS for k in ("gram", "abs_sum", "tokens")}
            check(set(got) == expected_names, f"model {m} block {l}: tensors {sorted(got)}")
            for g in GROUPS:
                gram, absum, tokens = ref[(l, g)]
                G, A = got[f"{g}.gram"], got[f"{g}.abs_sum"]
                ok = (G.dtype == np.float64 and A.dtype == np.float64 and G.shape == gram.shape and
                      got[f"{g}.tokens"].dtype == np.int64 and got[f"{g}.tokens"].tolist() == [tokens] == [T])
                err = max(np.abs(G - gram).max() / np.abs(gram).max(), np.abs(A - absum).max() / np.abs(absum).max())
                worst = max(worst, err)
                check(ok and err < 2e-5, f"model {m} block {l} {g}: Gram {G.shape} and |x| sums match transformers "
                      f"(relative error {err:.1e}), {tokens} tokens")
    print(f"largest relative difference from transformers: {worst:.2e}")

    # ---- 2. bitwise equal everywhere -----------------------------------------------------------
    stats_ref, pooled_ref = files_of(f"{tmp}/r1", "stats"), files_of(f"{tmp}/r1", "pooled")
    check(len(stats_ref) == 2 * LAYERS and len(pooled_ref) == 2 * (LAYERS + 1),
          f"one statistics file per model and block ({len(stats_ref)}), every hidden state pooled")
    for what, out in outs.items():
        check(files_of(f"{tmp}/{out}", "stats") == stats_ref, f"{what}: statistics files equal the 1-rank ones bitwise")
        if what.startswith("statistics only"):
            check(files_of(f"{tmp}/{out}", "pooled") == {}, f"{what}: no pooled hidden state kept")
        else:
            check(files_of(f"{tmp}/{out}", "pooled") == pooled_ref,
                  f"{what}: pooled hidden states equal the resident 1-rank ones bitwise")

    # ---- 3. block loads, progress, scratch -----------------------------------------------------
    for what, ranks in runs.items():
        loads = sum(r["block_loads"] for r in ranks)
        check(loads == 2 * LAYERS, f"{what}: {loads} block loads on {len(ranks)} rank(s) = 2 models x {LAYERS} "
              f"blocks (each block read once per pass, 3 micro-batches)")
        got = (sum(r["progress_samples"] for r in ranks), sum(r["progress_tokens"] for r in ranks))
        check(got == (2 * N, 2 * T), f"{what}: progress counted {got} samples/tokens = 2 x ({N}, {T})")
    # On 2 ranks each rank runs one model's two stages as one pass, which writes every micro-batch it
    # spills once when it arrives and once per block: 2 models x (1 + 4 blocks) writes of each
    # micro-batch's [n, T, 64] float32.
    mb = [samples[i:i + 4] for i in range(0, N, 4)]
    nbytes = [len(b) * max(len(s) for s in b) * 64 * 4 for b in mb]
    for what, expected in (("streaming np2, all spilled", 10 * sum(nbytes)),
                           ("streaming np2, one held, rest spilled", 10 * sum(nbytes[1:])),
                           ("streaming np3", 0), ("resident np2", 0)):
        spilled = sum(r["spilled_bytes"] for r in runs[what])
        check(spilled == expected, f"{what}: {spilled} bytes spilled (expected {expected})")
    check(os.path.isdir(scratch) and os.listdir(scratch) == [], "spill directories removed after the pass")
    check.finish()


if __name__ == "__main__":
    main()
