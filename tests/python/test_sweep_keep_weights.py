"""The sweep spec key keep_weights, end to end with `recall sweep run --local` on tiny random Llamas.

keep_weights: none: every point's weight files (merged.h5, hf/*.safetensors) are gone after its
evaluation while its reports, manifest, config and eval results stay; the log says how many bytes
each point freed; a rerun merges nothing; the report lists every point, weights dropped; `recall
verify` on such a point fails with a clear message (no crash); a point whose evaluation is lost
is merged again.
keep_weights: best: points run one by one in an order where later points beat earlier ones (and
one ties a better-indexed point), so both the replacement and the drop-own paths run; exactly one
point keeps its weights, the one the report ranks first, and they verify.
A spec with none/best and no eval sets fails with its line and column."""
import csv
import json
import os
import re
import shutil
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from recall_testlib import Checks, run, tiny_llama, write_jsonl  # noqa: E402

check = Checks()
TEMPS = [0.25, 2.0, 16.0]


def weight_files(point):
    out = f"{point}/out"
    found = [f for f in ("merged.h5", "hf/model.safetensors.index.json") if os.path.exists(f"{out}/{f}")]
    if os.path.isdir(f"{out}/hf"):
        found += [f"hf/{f}" for f in os.listdir(f"{out}/hf") if f.endswith(".safetensors")]
    return found


def results(sweep):
    run(["sweep", "report", sweep])
    return list(csv.DictReader(open(f"{sweep}/results.csv")))


def spec(tmp, name, points, keep, eval_set=True):
    lines = ["base_config: base.yaml", "points:"] + [f"  - {{recall.temperature: {t}}}" for t in points]
    if eval_set:
        lines += ["eval:", f"  data: [{{name: heldout, path: {tmp}/eval.jsonl}}]"]
    lines.append(f"keep_weights: {keep}")
    open(f"{tmp}/{name}.yaml", "w").write("\n".join(lines) + "\n")
    return f"{tmp}/{name}.yaml"


def sweep_run(sweep, *extra):
    p = run(["sweep", "run", sweep, "--local", "--np", "1", *extra], check=False)
    print(p.stdout, p.stderr, flush=True)
    return p


def check_none(tmp):
    sweep = f"{tmp}/none"
    p = run(["sweep", "plan", spec(tmp, "none", TEMPS, "none"), "--out", sweep])
    check("weights dropped after evaluation (keep_weights: none)" in p.stdout, f"plan says what it keeps: {p.stdout!r}")
    p = sweep_run(sweep)
    check(p.returncode == 0 and "3 finished now, 0 already finished, 0 failed" in p.stdout, "3 points merged and evaluated")
    total = 0
    for i in range(3):
        pt = f"{sweep}/points/{i:04d}"
        m = re.search(rf"point {i:04d} \(recall.temperature=[^)]*\): dropped its weights \(keep_weights: none\): "
                      r"removed merged\.h5, hf/model\.safetensors; freed (\d+) bytes", p.stdout)
        marker = json.load(open(f"{pt}/out/weights_dropped.json")) if os.path.exists(f"{pt}/out/weights_dropped.json") else {}
        check(m is not None and int(m.group(1)) > 0 and marker.get("bytes") == int(m.group(1)),
              f"point {i}: the log says how many bytes it freed, as weights_dropped.json records")
        total += int(m.group(1)) if m else 0
        check(weight_files(pt) == [], f"point {i}: no weight file left ({weight_files(pt)})")
        kept = ["out/manifest.json", "out/report.json", "out/report.svg", "out/hf/config.json", "config.yaml",
                "eval/heldout.json"]
        check(all(os.path.exists(f"{pt}/{f}") for f in kept), f"point {i}: report, manifest, config and eval kept")
    check(f"keep_weights freed {total} bytes" in p.stdout, "the summary adds up the bytes freed")

    logs = {i: os.path.getsize(f"{sweep}/points/{i:04d}/merge.log") for i in range(3)}
    p = sweep_run(sweep)
    check(p.returncode == 0 and "0 finished now, 3 already finished, 0 failed" in p.stdout and "merging" not in p.stdout
          and all(os.path.getsize(f"{sweep}/points/{i:04d}/merge.log") == logs[i] for i in range(3)),
          "a rerun finds every point finished and merges nothing")
    rows = results(sweep)
    check(len(rows) == 3 and all(r["status"] == "finished" and r["metric"] and r["weights"] == "dropped" for r in rows),
          f"the report lists every point finished, with its metric, weights dropped: {rows}")
    md = open(f"{sweep}/results.md").read()
    check("Weights (keep_weights: none): dropped for every finished point" in md, "results.md says the weights were dropped")

    p = run(["verify", f"{sweep}/points/0000/out"], check=False)
    print(p.stderr)
    check(p.returncode == 1 and "keep_weights" in p.stderr and "weights_dropped.json" in p.stderr,
          f"verify on a point whose weights were dropped fails saying so: {p.stderr.strip()!r}")

    metric = {int(r["point"]): float(r["metric"]) for r in rows}
    os.remove(f"{sweep}/points/0001/eval/heldout.json")
    p = sweep_run(sweep, "--point", "1")
    again = results(sweep)
    check(p.returncode == 0 and "merging on 1 rank(s) (again" in p.stdout and "dropped its weights" in p.stdout
          and weight_files(f"{sweep}/points/0001") == []
          and float(next(r for r in again if r["point"] == "0001")["metric"]) == metric[1],
          "a dropped point whose evaluation is lost is merged, evaluated and dropped again, with the same metric")
    return metric


def check_best(tmp, metric):
    # The none sweep's metrics say which temperature is best; the best sweep runs them worst-first
    # but for one (the drop-own path), and repeats the best as point 3, run before the original
    # (the lower index wins a tie).
    ranked = sorted(range(3), key=lambda i: metric[i])
    check(len(set(metric.values())) == 3, f"the 3 temperatures give 3 different metrics: {metric}")
    lo, mid, hi = ranked
    sweep = f"{tmp}/best"
    run(["sweep", "plan", spec(tmp, "best", TEMPS + [TEMPS[hi]], "best"), "--out", sweep])
    said = {}
    for i in (mid, lo, 3, hi):
        p = sweep_run(sweep, "--point", str(i))
        check(p.returncode == 0 and "1 finished now" in p.stdout, f"point {i} finished")
        said[i] = p.stdout
    check("keeps its weights: the first point evaluated" in said[mid], f"point {mid}, the first, keeps its weights")
    check(re.search(rf"dropped its weights: point {mid:04d} ranks above it .*freed \d+ bytes", said[lo]) is not None,
          f"point {lo} ranks below point {mid} and drops its own weights")
    check(re.search(rf"keeps its weights: ranks above point {mid:04d} .*dropped point {mid:04d}'s weights: removed "
                    r"merged\.h5, hf/model\.safetensors; freed \d+ bytes", said[3]) is not None,
          f"point 3 beats point {mid} and drops its weights")
    check(f"keeps its weights: ties with point 0003 and has the lower index" in said[hi] and "dropped point 0003's" in said[hi],
          f"point {hi} ties point 3 and keeps its weights by the lower index")
    having = [i for i in range(4) if weight_files(f"{sweep}/points/{i:04d}")]
    check(having == [hi], f"exactly one point keeps weights, point {hi} (found {having})")
    best = json.load(open(f"{sweep}/best.json"))
    check(best["point"] == hi, f"best.json names point {hi}: {best}")
    rows = results(sweep)
    check(rows[0]["point"] == f"{hi:04d}" and rows[0]["weights"] == "kept"
          and [r["weights"] for r in rows[1:]] == ["dropped"] * 3, f"the report ranks point {hi} first, its weights kept")
    md = open(f"{sweep}/results.md").read()
    check(f"Best point: {hi:04d}" in md and f"kept for point {hi:04d}, dropped for the 3 other finished points" in md,
          "results.md names the best point and the kept weights")
    p = run(["verify", f"{sweep}/points/{hi:04d}/out"], check=False)
    check(p.returncode == 0 and "verified" in p.stdout, f"the kept weights verify: {p.stdout.strip()} {p.stderr.strip()}")
    p = sweep_run(sweep)
    check(p.returncode == 0 and "0 finished now, 4 already finished" in p.stdout and "merging" not in p.stdout
          and [i for i in range(4) if weight_files(f"{sweep}/points/{i:04d}")] == [hi], "a rerun changes nothing")


def main():
    tmp = tempfile.mkdtemp(prefix="recall-sweep-keep-")
    small = dict(layers=2, hidden=32, inter=48, heads=2, kv_heads=1)
    base = tiny_llama(f"{tmp}/base", seed=0, **small)
    tiny_llama(f"{tmp}/a", seed=1, base_state=base, noise=0.02, **small)
    tiny_llama(f"{tmp}/b", seed=2, base_state=base, noise=0.03, **small)
    rng = np.random.default_rng(0)
    write_jsonl(f"{tmp}/data.jsonl", [{"input_ids": [1] + rng.integers(3, 128, size=10).tolist()} for _ in range(12)])
    write_jsonl(f"{tmp}/eval.jsonl", [{"input_ids": [1] + rng.integers(3, 128, size=12).tolist()} for _ in range(6)])
    open(f"{tmp}/base.yaml", "w").write(f"""models:
  - {{name: base, path: {tmp}/base}}
  - {{name: a, path: {tmp}/a}}
  - {{name: b, path: {tmp}/b}}
reference: b
data: {tmp}/data.jsonl
typical: {{clusters: 4}}
output: {{dir: {tmp}/unused, formats: [h5, hf]}}
""")
    for keep in ("none", "best"):
        p = run(["sweep", "plan", spec(tmp, f"bad-{keep}", TEMPS, keep, eval_set=False), "--out", f"{tmp}/bad"], check=False)
        check(p.returncode == 1 and f"bad-{keep}.yaml:6:15: 'keep_weights: {keep}' keeps" in p.stderr
              and "no eval sets" in p.stderr and not os.path.exists(f"{tmp}/bad"),
              f"keep_weights: {keep} without eval sets fails at its line and column: {p.stderr.strip()!r}")

    metric = check_none(tmp)
    check_best(tmp, metric)
    if not check.failures:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"files kept in {tmp}")
    check.finish()


if __name__ == "__main__":
    main()
