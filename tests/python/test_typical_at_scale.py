"""Typical samples at any N (issue 15): a RECALL merge of tiny Llamas on 2 ranks with the default
typical config over a data file of many short lines succeeds; only the reference's clustered
hidden state is pooled ([N, H] floats), k-means runs on typical.kmeans_samples of them and the K
samples come from the whole file; the log has progress lines with a rate and an ETA for the
typical step and for the representations; report.json has the phase timings; and on every rank
the anonymous memory peak stays at or below the plan, whose RECALL data term grows with N.

The hidden size (128) makes the pooled matrix (N x 128 x 4 = 512 MB at 10^6 lines) larger than the
plan's fixed program allowance, so a plan without it, or an extraction that kept every hidden
state (3 x 512 MB), fails the memory check. RECALL_TYPICAL_N sets N (default 10^6, about 2 min on
2 shared cores; docs/PERFORMANCE.md quotes the figures)."""
import json
import os
import re
import sys
import tempfile
import time

from recall_testlib import Checks, run, tiny_llama

N = int(os.environ.get("RECALL_TYPICAL_N", "1000000"))
H = 128


def write_lines(path, n):
    """n short token-id lines of 2-5 tokens (BOS first), pseudo-random (a fixed LCG), all over the file."""
    rows, state = [], 12345
    for i in range(n):
        ids = []
        for _ in range(state % 4 + 1):
            state = (state * 6364136223846793005 + 1442695040888963407) % 2**64
            ids.append(str((state >> 33) % 120 + 3))
        rows.append('{"input_ids":[1,' + ",".join(ids) + "]}\n")
    with open(path, "w") as f:
        f.write("".join(rows))


def main():
    check = Checks()
    tmp = tempfile.mkdtemp(prefix="recall-typical-scale-")
    for i, name in enumerate(["a", "b"]):
        tiny_llama(f"{tmp}/{name}", seed=i + 1, hidden=H, inter=192, layers=2, heads=4, kv_heads=2)
    data = f"{tmp}/data.jsonl"
    write_lines(data, N)
    cfg = f"{tmp}/c.yaml"
    with open(cfg, "w") as f:
        f.write(f"models:\n  - {{name: a, path: {tmp}/a}}\n  - {{name: b, path: {tmp}/b}}\nmethod: recall\n"
                f"data: {data}\nmax_length: 16\nparallel: {{micro_batch: 512}}\noutput: {{dir: {tmp}/out}}\n")
    t0 = time.time()
    p = run(["merge", "--config", cfg], np=2, check=False)
    wall = time.time() - t0
    out = p.stdout + p.stderr
    check(p.returncode == 0, f"RECALL merge of {N} lines on 2 ranks exits 0 in {wall:.1f} s (rc {p.returncode})"
          + ("" if p.returncode == 0 else "\n" + out[-3000:]))
    if p.returncode != 0:
        check.finish()
    for line in out.splitlines():
        if re.search(r"typical samples|representations|memory plan|rank \d+:|data:", line):
            print("  | " + line)
    progress = re.findall(rf"typical samples: (\d+)/{N} samples \([0-9.]+%\), [0-9.]+ samples/s, [0-9]+ tokens/s, "
                          r"(ETA \d+ s|done in [0-9.]+ s)", out)
    check(any(e.startswith("ETA") for _, e in progress),
          f"the typical step logs progress lines with a rate and an ETA ({len(progress)} lines)")
    check(progress and progress[-1] == (str(N), progress[-1][1]) and progress[-1][1].startswith("done"),
          "its last progress line says all samples are done")
    check(re.search(r"representations: (\d+)/\1 samples \(100.0%\), [0-9.]+ samples/s, [0-9]+ tokens/s, done in", out)
          is not None, "the representations log a progress line")
    check(f"of {N} samples" in out and "iterations on 50000 of" in out,
          "k-means runs on typical.kmeans_samples = 50000 of the N samples")
    report = json.load(open(f"{tmp}/out/report.json"))
    typical = report["typical_samples"]
    check(len(typical) == 32 and len(set(typical)) == 32 and all(0 <= i < N for i in typical),
          f"32 distinct typical samples in [0, {N})")
    check(max(typical) >= N // 2, f"typical samples come from the whole file (largest index {max(typical)})")
    timings = report["timings"]
    check(all(k in timings for k in ["tokenize", "typical samples", "representations", "similarity", "merge"]),
          "report.json times the phases: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    for m in report["memory"]:
        check(0 < m["peak_anon_bytes"] <= m["planned_bytes"],
              f"rank {m['rank']}: anonymous peak {m['peak_anon_bytes'] / 1e6:.1f} MB <= plan "
              f"{m['planned_bytes'] / 1e6:.1f} MB")
    plan = re.search(r"rank 0: [0-9.]+ [KMG]?B \+ [0-9.]+ [KMG]?B \+ [0-9.]+ [KMG]?B \+ ([0-9.]+) ([KMG]?B) \+", out)
    scale = {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9}
    recall_data = float(plan.group(1)) * scale[plan.group(2)] if plan else 0
    check(recall_data >= N * H * 4, f"the plan's RECALL data ({recall_data / 1e6:.1f} MB) holds the pooled "
          f"N x H matrix ({N * H * 4 / 1e6:.1f} MB)")
    print(f"figures: N={N} wall {wall:.1f} s, " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()) + "; " +
          "; ".join(f"rank {m['rank']} peak anon {m['peak_anon_bytes'] / 1e6:.1f} MB of plan "
                    f"{m['planned_bytes'] / 1e6:.1f} MB" for m in report["memory"]))
    check.finish()


if __name__ == "__main__":
    sys.exit(main())
