"""The continual-learning benchmark (bench/continual, issue 7) end to end on a reduced run: stories260K
converted, two generated tasks, experts fine-tuned for a few steps, scenario 1 (linear and RECALL
merges of the experts) and scenario 2 (a RECALL chain and SeqFT), every model evaluated, results
written. Checks the pipeline and real invariants, not that RECALL wins:

- results.json/csv/md exist and hold every model, scenario and seed asked for;
- accuracies lie in [0, 1], perplexities are finite and > 1, losses >= 0;
- the base does not solve the tasks and each expert beats it on its own task;
- the retention text is the same for every seed and was sampled from the base (the base's
  perplexity on it is lower than any expert's);
- RECALL's report.json weights sum to 1 per block and favour the reference in scenario 2;
- the scenario-2 accuracy matrix and BWT/forgetting agree with their definition;
- an identical rerun runs no step and writes the same results; other settings are refused.
"""
import csv
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from recall_testlib import BIN, SHARED  # noqa: E402

SRC = os.environ.get("RECALL_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
RUN = os.path.join(SRC, "bench", "continual", "run.py")
TASKS = ["reverse", "fact"]
failures = []


def expect(cond, msg):
    print(("ok   " if cond else "FAIL ") + msg)
    if not cond:
        failures.append(msg)


def bench(out, *extra):
    cmd = [sys.executable, RUN, "--out", out, "--quick", "--seeds", "0", "--tasks", ",".join(TASKS),
           "--steps", "30", "--mtl-steps", "40", "--train", "200", "--test", "16",
           "--s1-methods", "linear,recall", "--s2-methods", "recall", "--ranks", "2", "--jobs", "2", *extra]
    env = dict(os.environ, RECALL_BIN=BIN, RECALL_SHARED_DIR=SHARED)
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    print(f"$ {' '.join(cmd)}  ({time.time() - t0:.1f} s, exit {p.returncode})")
    return p


def main():
    tmp = tempfile.mkdtemp(prefix="recall-continual-")
    out = os.path.join(tmp, "bench")
    p = bench(out)
    expect(p.returncode == 0, "the reduced benchmark exits 0")
    if p.returncode != 0:
        print(p.stdout[-4000:], p.stderr[-4000:])
        return 1
    for f in ("results.json", "results.csv", "results.md", "bench.json", "last_run.json",
              "common/general.jsonl", "common/general.meta.json"):
        expect(os.path.exists(os.path.join(out, f)), f"{f} written")
    res = json.load(open(os.path.join(out, "results.json")))
    first_run = json.load(open(os.path.join(out, "last_run.json")))
    expect(first_run["steps"]["ok"] > 20 and first_run["steps"]["failed"] == 0,
           f"first run ran its steps: {first_run['steps']}")

    # --- scenario 1 ------------------------------------------------------------------------------
    s1 = res["s1"]
    want = ["base", "expert_reverse", "expert_fact", "multitask", "s1_linear", "s1_recall"]
    expect(sorted(s1) == sorted(want), f"scenario-1 rows {sorted(s1)}")
    for key, per in s1.items():
        v = per["0"]
        expect(v is not None, f"{key}: evaluated")
        if v is None:
            continue
        accs = list(v["acc"].values())
        expect(all(0.0 <= a <= 1.0 for a in accs) and 0.0 <= v["avg_acc"] <= 1.0, f"{key}: accuracies {accs} in [0, 1]")
        expect(all(x >= 0 for x in v["loss"].values()), f"{key}: losses >= 0")
        expect(math.isfinite(v["general_ppl"]) and v["general_ppl"] > 1.0, f"{key}: perplexity {v['general_ppl']:.2f}")
    base = s1["base"]["0"]
    expect(all(a < 0.25 for a in base["acc"].values()), f"the base does not solve the tasks: {base['acc']}")
    for t in TASKS:
        e = s1[f"expert_{t}"]["0"]
        expect(e["acc"][t] > base["acc"][t] + 0.25, f"expert {t} beats the base on {t}: {e['acc'][t]:.2f}")
        expect(e["loss"][t] < base["loss"][t], f"expert {t}: completion loss {e['loss'][t]:.3f} < base's")
        expect(base["general_ppl"] < e["general_ppl"],
               f"the base's perplexity on its own samples ({base['general_ppl']:.2f}) < expert {t}'s "
               f"({e['general_ppl']:.2f})")

    # --- RECALL weights --------------------------------------------------------------------------
    w1 = res["weights"]["s1"]["recall"]["0"]
    expect(w1 is not None and w1["models"] == TASKS and w1["reference"] == TASKS[-1],
           "scenario-1 RECALL merges the experts with the last task's expert as reference")
    expect(all(abs(sum(b["weights"]) - 1) < 1e-9 for b in w1["blocks"]),
           f"scenario-1 block weights sum to 1: {[b['weights'] for b in w1['blocks']]}")
    for i, w in enumerate(res["weights"]["s2"]["recall"]["0"]):
        expect(all(abs(sum(b["weights"]) - 1) < 1e-9 and b["weights"][1] >= b["weights"][0] for b in w["blocks"]),
               f"scenario-2 step {i + 1}: block weights sum to 1 and the new expert's is >= 0.5: "
               f"{[round(b['weights'][1], 3) for b in w['blocks']]}")

    # --- scenario 2 ------------------------------------------------------------------------------
    s2 = res["s2"]
    expect(sorted(s2) == ["recall", "seqft"], f"scenario-2 chains {sorted(s2)}")
    n = len(TASKS)
    for chain, per in s2.items():
        v = per["0"]
        R = v["R"]
        expect(len(R) == n and all(len(r) == n and all(0 <= x <= 1 for x in r) for r in R),
               f"{chain}: {n}x{n} accuracy matrix in [0, 1]")
        bwt = sum(R[n - 1][j] - R[j][j] for j in range(n - 1)) / (n - 1)
        expect(abs(v["bwt"] - bwt) < 1e-12, f"{chain}: BWT {v['bwt']:.3f} by its definition")
        expect(abs(v["avg_acc"] - sum(R[n - 1]) / n) < 1e-12, f"{chain}: ACC = mean of the last row")
        expect(v["forgetting"] >= -1e-12, f"{chain}: forgetting {v['forgetting']:.3f} >= 0")
    # step 1 of SeqFT is the first task's expert itself
    expect(s2["seqft"]["0"]["R"][0] == [s1[f"expert_{TASKS[0]}"]["0"]["acc"][t] for t in TASKS],
           "SeqFT step 1 is the first expert")

    # --- files -----------------------------------------------------------------------------------
    rows = list(csv.DictReader(open(os.path.join(out, "results.csv"))))
    expect(len(rows) == len(s1) + len(s2), f"results.csv has {len(rows)} rows")
    md = open(os.path.join(out, "results.md")).read()
    expect("Scenario 1" in md and "Scenario 2" in md and "RECALL (defaults)" in md and "SeqFT" in md,
           "results.md holds both scenarios' tables")
    g = [json.loads(l) for l in open(os.path.join(out, "common", "general.jsonl"))]
    expect(len(g) == 4 and all(r["text"].startswith("Once upon a time") for r in g), "4 retention stories")
    ev = [json.loads(l) for l in open(os.path.join(out, "seed0", "tasks", "eval_set.jsonl"))]
    expect(ev[-4:] == g, "the retention stories close the seed's eval set")

    # --- rerun: nothing runs, same results ---------------------------------------------------------
    before = open(os.path.join(out, "results.csv")).read()
    p = bench(out)
    second = json.load(open(os.path.join(out, "last_run.json")))
    expect(p.returncode == 0 and second["steps"]["ok"] == 0
           and second["steps"]["skipped"] == sum(first_run["steps"].values()),
           f"an identical rerun runs nothing: {second['steps']}")
    expect(open(os.path.join(out, "results.csv")).read() == before, "and writes the same results.csv")
    p = bench(out, "--lr", "1e-4")
    expect(p.returncode != 0 and "other settings" in p.stderr, "a rerun with other settings is refused")

    print(f"\n{len(failures)} failure(s)")
    if not failures:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
