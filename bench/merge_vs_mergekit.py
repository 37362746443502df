"""Merge throughput of `recall merge` against mergekit and this machine's limits, in one run.

    python bench/merge_vs_mergekit.py [--hidden 1024 --layers 16 --inter 2816 --vocab 32000] [--np 1 2]
                                      [--formats hf | hf,h5 | h5]

Creates three random Llamas in bf16 (same shapes), then times, side by side:
  - memory copy bandwidth (numpy, 1 GiB), file write and read bandwidth (dd, 2 GiB, page cache dropped
    where permitted), and the job's own bytes (the inputs read, the output written once per output
    format) through cat and dd, one after the other and at the same time: the disk's floor for this job;
  - mergekit's linear merge (mergekit-yaml, CPU, --lazy-unpickle off) of the three models;
  - recall's linear merge (the same weights) under mpirun with each --np, writing output.formats
    --formats (default hf: the Hugging Face directory alone, the same bytes mergekit writes).
Prints GB/s of input read for each, the ratio recall / mergekit (target >= 3) and recall / the slower
of the disk limits (target >= 0.7), recall's time against the disk floor, recall's phases and where
rank 0's merge loop spent its time. Everything is written under a temporary directory and removed."""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np


def timed(cmd, env=None):
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        sys.stderr.write(p.stdout + p.stderr)
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return dt


def drop_caches():
    try:
        subprocess.run(["sync"])
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--inter", type=int, default=2816)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--np", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--recall", default=os.path.join(os.path.dirname(__file__), "../build/bin/recall"))
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--formats", default="hf", help="recall's output.formats, comma-separated (hf, h5)")
    a = ap.parse_args()
    import torch
    import transformers

    tmp = tempfile.mkdtemp(prefix="recall-bench-merge-", dir=os.environ.get("RECALL_BENCH_DIR"))
    names = ["m0", "m1", "m2"]
    cfg = transformers.LlamaConfig(vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=a.inter,
                                   num_hidden_layers=a.layers, num_attention_heads=a.hidden // 64,
                                   num_key_value_heads=a.hidden // 64, tie_word_embeddings=False)
    for i, n in enumerate(names):
        torch.manual_seed(i)
        with torch.device("cpu"):
            m = transformers.LlamaForCausalLM(cfg).to(torch.bfloat16)
        m.save_pretrained(f"{tmp}/{n}", safe_serialization=True, max_shard_size="2GB")
        del m
    params = sum(os.path.getsize(os.path.join(f"{tmp}/m0", f)) for f in os.listdir(f"{tmp}/m0") if f.endswith(".safetensors")) / 2
    in_bytes = 3 * 2 * params
    print(f"models: 3 x {params / 1e9:.3f} B parameters (bf16), {in_bytes / 1e9:.2f} GB of input")

    # Machine limits, measured now.
    x = np.ones(1 << 27, dtype=np.float64)  # 1 GiB
    y = np.empty_like(x)
    t0 = time.perf_counter()
    for _ in range(4):
        np.copyto(y, x)
    copy_gbs = 4 * 2 * x.nbytes / (time.perf_counter() - t0) / 1e9  # read + write
    del x, y
    ddf = f"{tmp}/dd.bin"
    t = timed(["dd", "if=/dev/zero", f"of={ddf}", "bs=16M", "count=128", "conv=fsync", "status=none"])
    write_gbs = 2 * 1024**3 / t / 1e9
    dropped = drop_caches()
    t = timed(["dd", f"if={ddf}", "of=/dev/null", "bs=16M", "status=none"])
    read_gbs = 2 * 1024**3 / t / 1e9
    os.remove(ddf)
    print(f"machine: memory copy {copy_gbs:.2f} GB/s (read+write), file write {write_gbs:.2f} GB/s, "
          f"file read {read_gbs:.2f} GB/s ({'cold' if dropped else 'page cache not dropped'})")
    # The job's own bytes through the disk without any merging: read the three inputs (cat, cold)
    # and write the output once per format (HF shards, merged.h5: dd, fsync'd), one after the other
    # and at the same time. The faster of the two is the disk's floor for this job.
    formats = [f for f in a.formats.split(",") if f]
    inputs = [os.path.join(f"{tmp}/{n}", f) for n in names for f in sorted(os.listdir(f"{tmp}/{n}"))
              if f.endswith(".safetensors")]
    out_mib = int(len(formats) * in_bytes / 3 / 2**20)
    write_cmd = ["dd", "if=/dev/zero", f"of={ddf}", "bs=1M", f"count={out_mib}", "conv=fsync", "status=none"]
    drop_caches()
    t0 = time.perf_counter()
    subprocess.run(["sh", "-c", 'cat "$@" > /dev/null', "cat"] + inputs, check=True)
    subprocess.run(write_cmd, check=True)
    t_serial = time.perf_counter() - t0
    os.remove(ddf)
    drop_caches()
    t0 = time.perf_counter()
    reader = subprocess.Popen(["sh", "-c", 'cat "$@" > /dev/null', "cat"] + inputs)
    subprocess.run(write_cmd, check=True)
    reader.wait()
    t_together = time.perf_counter() - t0
    os.remove(ddf)
    t_floor = min(t_serial, t_together)
    print(f"disk floor for this job's bytes ({in_bytes / 1e9:.2f} GB read, {out_mib * 2**20 / 1e9:.2f} GB written): "
          f"{t_serial:.2f} s one after the other, {t_together:.2f} s at the same time")

    # mergekit
    mk = f"{tmp}/mergekit.yml"
    with open(mk, "w") as f:
        f.write("merge_method: linear\ndtype: bfloat16\nmodels:\n" +
                "".join(f"  - model: {tmp}/{n}\n    parameters: {{weight: 1.0}}\n" for n in names))
    mergekit = os.path.join(os.path.dirname(sys.executable), "mergekit-yaml")
    drop_caches()
    t_mk = timed([mergekit, mk, f"{tmp}/out-mergekit", "--no-copy-tokenizer", "--allow-crimes"],
                 env=dict(os.environ, HF_HUB_OFFLINE="1"))
    mk_gbs = in_bytes / t_mk / 1e9
    # mergekit leaves its output in the page cache; recall syncs its outputs before it commits.
    # Also shown, for reference only: mergekit's time until its one copy is on disk too.
    t_sync = timed(["sync"])
    print(f"mergekit linear: {t_mk:.2f} s, {mk_gbs:.3f} GB/s of input (+ {t_sync:.2f} s until `sync` has its "
          f"output on disk)")

    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")
    for np_ in a.np:
        rc = f"{tmp}/recall-{np_}.yaml"
        with open(rc, "w") as f:
            f.write("models:\n" + "".join(f"  - {{name: {n}, path: {tmp}/{n}}}\n" for n in names) +
                    f"method: linear\noutput: {{dir: {tmp}/out-recall-{np_}, dtype: bfloat16, "
                    f"formats: [{', '.join(formats)}]}}\n")
        drop_caches()
        t = timed(["mpirun", "-np", str(np_), "--oversubscribe", a.recall, "merge", "--config", rc, "--quiet"], env=env)
        gbs = in_bytes / t / 1e9
        print(f"recall linear, {np_} rank(s), output.formats [{', '.join(formats)}]: {t:.2f} s, {gbs:.3f} GB/s of input; "
              f"{gbs / mk_gbs:.2f}x mergekit (target >= 3), {gbs / min(read_gbs, write_gbs):.2f}x the slower "
              f"disk limit (target >= 0.7)")
        with open(f"{tmp}/out-recall-{np_}/report.json") as f:
            rep = json.load(f)
        phases = ", ".join(f"{k} {v:.2f} s" for k, v in rep["timings"].items())
        rss = max(rep.get("peak_rss_bytes", [0])) / 1e9
        print(f"    {t_floor / t:.2f}x the disk floor for the same bytes ({t_floor:.2f} s); "
              f"{(t_mk + t_sync) / t:.2f}x mergekit followed by sync")
        print(f"    phases: {phases}; start-up, commit and exit {t - sum(rep['timings'].values()):.2f} s; "
              f"peak RSS per rank up to {rss:.2f} GB")
        loop = rep.get("merge_loop_seconds", [])
        if loop:
            l0 = loop[0]
            print(f"    merge loop of rank 0: waiting for reads {l0['wait_for_reads']:.2f} s, merging "
                  f"{l0['merge']:.2f} s, writing {l0['write']:.2f} s; the rest of the merge phase is the "
                  f"final sync and closing the files")
    if not a.keep:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
