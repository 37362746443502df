"""A model of a RECALL merge of four Llama-3-70B checkpoints on N nodes, phase by phase, from
per-node bandwidths (measured with bench/merge_vs_mergekit.py on the machine in question, or given)
and the shapes of configs/arch/llama3-70b.json. Prints the bytes each phase moves, the time per
phase and what bounds it. It is arithmetic, not a measurement: the inputs are.

    python bench/model_70b.py                               # this dev machine's disks, 8 GPUs per node
    python bench/model_70b.py --read 6 --write 3 --net 25 --merge-core 1.0 --cores 32 --gpu-tflops 400

Assumptions (state them when quoting the output): the config of configs/llama3-70b-4node-8gpu.yaml
(4 models, 8 stages, max_length 1024, typical.max_samples 4096, K = 32); every input byte is read
twice (once by the extraction, which loads each stage's weights, and once by the merge) unless the
page cache holds it; the merged bytes are written twice (merged.h5 and the HF shards) and read once
from the page cache for the checksums; reads and writes of the merge overlap (reader thread +
writeback), so the merge takes the longest of its read, write and compute times."""
import argparse
import json
import os


def params_bytes(cfg, dtype_bytes=2):
    H, I, L, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    heads, kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    d = H // heads
    block = 2 * H + H * heads * d * 2 + 2 * H * kv * d + 3 * H * I
    n = V * H * (1 if cfg.get("tie_word_embeddings") else 2) + H + L * block
    return n, n * dtype_bytes


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default=os.path.join(here, "..", "configs", "arch", "llama3-70b.json"))
    ap.add_argument("--models", type=int, default=4)
    ap.add_argument("--read", type=float, default=1.00, help="file read GB/s per node (dd, cold)")
    ap.add_argument("--write", type=float, default=0.37, help="file write GB/s per node (dd, fsync)")
    ap.add_argument("--memory", type=float, default=3.1, help="memory copy GB/s per node (checksum re-read)")
    ap.add_argument("--net", type=float, default=12.5, help="network GB/s per node (all-gather)")
    ap.add_argument("--merge-core", type=float, default=1.42,
                    help="merge GB/s of input per core with the disk out of the way (measured: input bytes / "
                         "merge phase time of a warm 1-rank run with the output on tmpfs: 1.63 GB in 1.15 s, 2026-11-29)")
    ap.add_argument("--cores", type=int, default=2, help="ranks (cores) per node doing the merge")
    ap.add_argument("--gpu-tflops", type=float, default=3200.0,
                    help="sustained bf16 TFLOP/s per node for the forward passes (default: 8 GPUs at an assumed "
                         "400 TFLOP/s each, ~40%% of an H100/H200's dense bf16 peak; 0: CPU, see --cpu-tflops)")
    ap.add_argument("--cpu-tflops", type=float, default=0.05, help="sustained TFLOP/s per node on CPU")
    ap.add_argument("--samples", type=int, default=4096, help="typical.max_samples (reference pass)")
    ap.add_argument("--clusters", type=int, default=32, help="typical.clusters K (pass of every model)")
    ap.add_argument("--tokens", type=int, default=1024, help="max_length")
    ap.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 4, 8])
    a = ap.parse_args()

    cfg = json.load(open(a.arch))
    n_params, model_bytes = params_bytes(cfg)
    M = a.models
    inputs = M * model_bytes
    output = model_bytes
    tflops = a.gpu_tflops if a.gpu_tflops > 0 else a.cpu_tflops
    # Forward FLOPs: the reference over max_samples for the typical samples, then K samples through
    # every model (2 FLOPs per parameter per token; attention adds ~tokens/(6 H) more, ignored).
    flops = 2 * n_params * a.tokens * (a.samples + M * a.clusters)
    reps = M * a.clusters * (cfg["num_hidden_layers"] + 1) * cfg["hidden_size"] * 4
    print(f"{M} x {n_params / 1e9:.1f} B parameters ({model_bytes / 1e9:.1f} GB bf16 each): "
          f"{inputs / 1e9:.0f} GB in, {output / 1e9:.0f} GB out (twice: merged.h5 + HF shards)")
    print(f"per node: read {a.read} GB/s, write {a.write} GB/s, memory {a.memory} GB/s, network {a.net} GB/s, "
          f"merge {a.merge_core} GB/s/core x {a.cores} cores, forward {tflops} TFLOP/s")
    print()
    print("| nodes | extraction: load weights | forward passes | all-gather reps | merge (read / write / compute) "
          "| checksums | total | bound by |")
    print("|---|---|---|---|---|---|---|---|")
    for n in a.nodes:
        load = inputs / (n * a.read * 1e9)
        fwd = flops / (n * tflops * 1e12)
        gather = reps / (a.net * 1e9)
        m_read = inputs / (n * a.read * 1e9)
        m_write = 2 * output / (n * a.write * 1e9)
        m_cpu = inputs / (n * a.cores * a.merge_core * 1e9)
        merge = max(m_read, m_write, m_cpu)
        bound = {m_read: "disk reads", m_write: "disk writes", m_cpu: "merge compute"}[merge]
        sums = output / (n * a.memory * 1e9)
        total = load + fwd + gather + merge + sums
        big = max([(load, "extraction loads"), (fwd, "forward"), (merge, "merge: " + bound)])
        print(f"| {n} | {load / 60:.1f} min | {fwd / 60:.1f} min | {gather:.2f} s | {merge / 60:.1f} min "
              f"({m_read / 60:.1f} / {m_write / 60:.1f} / {m_cpu / 60:.1f}) | {sums:.0f} s | {total / 60:.1f} min "
              f"| {big[1]} |")


if __name__ == "__main__":
    main()
