"""`recall sweep plan|run|report` without Slurm, on tiny random Llamas.

Checks: the plan (array range, index.csv); a point's merge is byte-identical to `recall merge` of
the same settings; the report's metric equals minus the eval loss that transformers computes on
the point's merged model; a point that fails at run time is recorded (error.txt, results.md's
failed list) while the others finish; rerunning skips finished points (their outputs untouched)
and retries the failed one; a point held by another process is left alone; a bad spec fails with
its line and column and writes nothing."""
import csv
import hashlib
import json
import os
import re
import shutil
import subprocess
import socket
import sys
import tempfile

import numpy as np
import torch
import transformers

sys.path.insert(0, os.path.dirname(__file__))
from recall_testlib import run, tiny_llama, write_jsonl  # noqa: E402

failures = []


def expect(cond, msg):
    print(("ok   " if cond else "FAIL ") + msg, flush=True)
    if not cond:
        failures.append(msg)


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def hf_loss(model_dir, rows):
    """Token-weighted mean next-token NLL of input_ids samples, float32, with transformers."""
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    nll, count = 0.0, 0
    with torch.no_grad():
        for r in rows:
            ids = torch.tensor([r["input_ids"]])
            logits = model(ids).logits[0, :-1].double()
            lp = torch.log_softmax(logits, -1).gather(1, ids[0, 1:, None])
            nll -= lp.sum().item()
            count += ids.shape[1] - 1
    return nll / count


def main():
    tmp = tempfile.mkdtemp(prefix="recall-sweep-")
    small = dict(layers=2, hidden=32, inter=48, heads=2, kv_heads=1)
    base = tiny_llama(f"{tmp}/base", seed=0, **small)
    tiny_llama(f"{tmp}/a", seed=1, base_state=base, noise=0.02, **small)
    tiny_llama(f"{tmp}/b", seed=2, base_state=base, noise=0.03, **small)
    rng = np.random.default_rng(0)
    write_jsonl(f"{tmp}/data.jsonl", [{"input_ids": [1] + rng.integers(3, 128, size=10).tolist()} for _ in range(12)])
    eval_rows = [{"input_ids": [1] + rng.integers(3, 128, size=12).tolist()} for _ in range(6)]
    write_jsonl(f"{tmp}/eval.jsonl", eval_rows)
    open(f"{tmp}/base.yaml", "w").write(f"""models:
  - {{name: base, path: {tmp}/base}}
  - {{name: a, path: {tmp}/a}}
  - {{name: b, path: {tmp}/b}}
reference: b
data: {tmp}/data.jsonl
typical: {{clusters: 4}}
output: {{dir: {tmp}/unused}}
""")
    # Point 2 asks for more pipeline stages than the 2 blocks: valid YAML, fails when run.
    open(f"{tmp}/spec.yaml", "w").write(f"""base_config: base.yaml
grid:
  recall.temperature: [0.5, 4.0]
points:
  - {{parallel.stages: 3}}
eval:
  data: [{{name: heldout, path: {tmp}/eval.jsonl}}]
""")
    sweep = f"{tmp}/sweep"

    # --- plan ----------------------------------------------------------------------------------
    p = run(["sweep", "plan", f"{tmp}/spec.yaml", "--out", sweep])
    expect("array: 0-2" in p.stdout and "sbatch --array=0-2 slurm/sweep.sbatch" in p.stdout,
           f"plan prints the array range: {p.stdout.strip()!r}")
    index = open(f"{sweep}/index.csv").read()
    expect(index == "point,recall.temperature,parallel.stages\n0000,0.5,1\n0001,4,1\n0002,1,3\n",
           f"index.csv lists each point's swept values: {index!r}")

    # --- run: two points finish, one fails, the sweep goes on -------------------------------------
    p = run(["sweep", "run", sweep, "--local", "--np", "2"], check=False)
    print(p.stdout)
    expect(p.returncode == 1, f"sweep run exits 1 when a point failed (got {p.returncode})")
    expect("2 finished now, 0 already finished, 1 failed" in p.stdout, "2 points finished, 1 failed")
    err = open(f"{sweep}/points/0002/error.txt").read() if os.path.exists(f"{sweep}/points/0002/error.txt") else ""
    expect(err.startswith("merge failed (exit status") and "stages" in err.split("\n")[0],
           f"error.txt names the cause: {err.splitlines()[0] if err else '(missing)'!r}")

    # A point's merge is the merge of its settings.
    run(["merge", "--config", f"{tmp}/base.yaml", "--set", "recall.temperature=4.0", "--set",
         f"output.dir={tmp}/direct"], np=1)
    a, b = sha(f"{sweep}/points/0001/out/hf/model.safetensors"), sha(f"{tmp}/direct/hf/model.safetensors")
    expect(a == b, f"point 0001's merge equals `recall merge --set recall.temperature=4.0` ({a[:12]} vs {b[:12]})")

    # --- report ----------------------------------------------------------------------------------
    p = run(["sweep", "report", sweep])
    rows = {r["point"]: r for r in csv.DictReader(open(f"{sweep}/results.csv"))}
    expect([rows[k]["status"] for k in ("0000", "0001", "0002")] == ["finished", "finished", "failed"],
           "results.csv statuses: finished, finished, failed")
    worst = 0.0
    for k in ("0000", "0001"):
        want = hf_loss(f"{sweep}/points/{k}/out/hf", eval_rows)
        got = -float(rows[k]["metric"])
        worst = max(worst, abs(got - want) / want)
        print(f"point {k}: recall eval loss {got:.6f}, transformers {want:.6f}")
    expect(worst < 1e-4, f"metric = -(eval loss) matches transformers on the merged models (max rel diff {worst:.2e})")
    order = list(csv.DictReader(open(f"{sweep}/results.csv")))
    expect(float(order[0]["metric"]) >= float(order[1]["metric"]) and order[2]["point"] == "0002",
           "results.csv is best first, the failed point last")
    md = open(f"{sweep}/results.md").read()
    expect("## Failed points" in md and "- point 0002 (recall.temperature=1, parallel.stages=3): merge failed" in md,
           "results.md lists the failed point with its error")
    expect(md.count("\n| ") == 3, "results.md table: a header and the 2 finished rows")
    svg = open(f"{sweep}/results.svg").read()
    expect(svg.startswith("<svg") and svg.count("<circle") == 4, "results.svg: 2 points in each of 2 panels")

    # --- rerun: finished points are skipped, the failed one is retried ---------------------------
    m0 = os.path.getmtime(f"{sweep}/points/0000/out/manifest.json")
    p = run(["sweep", "run", sweep, "--local"], check=False)
    expect(p.returncode == 1 and "0 finished now, 2 already finished, 1 failed" in p.stdout,
           "rerun skips the 2 finished points and retries the failed one")
    expect(os.path.getmtime(f"{sweep}/points/0000/out/manifest.json") == m0, "a finished point's output is untouched")
    # Fix the failed point's config and run just it.
    cfg = open(f"{sweep}/points/0002/config.yaml").read()
    open(f"{sweep}/points/0002/config.yaml", "w").write(cfg.replace("stages: 3", "stages: 1"))
    p = run(["sweep", "run", sweep, "--local", "--point", "2"])
    expect("1 finished now" in p.stdout and not os.path.exists(f"{sweep}/points/0002/error.txt"),
           "the repaired point finishes and its error.txt is gone")
    # Eval lost after a merge: only the evaluation is redone.
    os.remove(f"{sweep}/points/0001/eval/heldout.json")
    m1 = os.path.getmtime(f"{sweep}/points/0001/out/manifest.json")
    p = run(["sweep", "run", sweep, "--local", "--point", "1"])
    expect("merging" not in p.stdout and "evaluating" in p.stdout and
           os.path.getmtime(f"{sweep}/points/0001/out/manifest.json") == m1 and
           os.path.exists(f"{sweep}/points/0001/eval/heldout.json"), "a missing evaluation is redone without merging again")
    run(["sweep", "report", sweep])
    rows = list(csv.DictReader(open(f"{sweep}/results.csv")))
    expect(all(r["status"] == "finished" for r in rows), "after the repair all 3 points are finished")

    # --- a point another process holds is left alone; a dead holder's lock is taken over ----------
    # Locks are O_EXCL files naming the holder (job, host, pid), not flock: Lustre mounted noflock
    # or localflock gives no cross-node flock.
    os.remove(f"{sweep}/points/0000/eval/heldout.json")
    lock = f"{sweep}/points/0000/.lock"
    host = socket.gethostname()
    open(lock, "w").write(f"job=4711 restart=0 host={host} pid={os.getpid()} since=now nonce=1\n")
    p = run(["sweep", "run", sweep, "--local", "--point", "0"])
    expect(f"another process is running it (job 4711 (restart 0) on {host}, pid {os.getpid()}" in p.stdout
           and "1 busy elsewhere" in p.stdout and not os.path.exists(f"{sweep}/points/0000/eval/heldout.json")
           and os.path.exists(lock), f"a point locked by a live process is skipped, its holder named: {p.stdout.strip()!r}")
    dead = subprocess.Popen(["true"])
    dead.wait()
    open(lock, "w").write(f"job=4711 restart=0 host={host} pid={dead.pid} since=now nonce=1\n")
    p = run(["sweep", "run", sweep, "--local", "--point", "0"])
    expect(f"took over the stale lock of job 4711" in p.stdout and f"its process {dead.pid} no longer runs" in p.stdout
           and "1 finished now" in p.stdout and os.path.exists(f"{sweep}/points/0000/eval/heldout.json")
           and not os.path.exists(lock), f"a dead holder's lock is taken over and the point runs: {p.stdout.strip()!r}")

    # --- errors ------------------------------------------------------------------------------------
    open(f"{tmp}/bad.yaml", "w").write("base_config: base.yaml\ngrid:\n  recall.temperature: [1, -2]\n")
    p = run(["sweep", "plan", f"{tmp}/bad.yaml", "--out", f"{tmp}/bad"], check=False)
    expect(p.returncode == 1 and f"{tmp}/bad.yaml:3:27: grid point 1 (recall.temperature=-2)" in p.stderr
           and "'recall.temperature' must be a finite number in [0," in p.stderr and not os.path.exists(f"{tmp}/bad"),
           f"a bad grid value fails with the spec's line:column and writes nothing: {p.stderr.strip()!r}")
    p = run(["sweep", "run", f"{tmp}/nowhere"], check=False)
    expect(p.returncode == 1 and "is not a sweep directory" in p.stderr, f"run on a non-sweep: {p.stderr.strip()!r}")
    p = run(["sweep", "run", sweep, "--point", "7"], check=False)
    expect(p.returncode == 1 and "--point 7 is out of range" in p.stderr and "3 points (0-2)" in p.stderr,
           f"out-of-range point: {p.stderr.strip()!r}")
    p = run(["sweep", "resolve", f"{tmp}/base.yaml", "--set", "output.dir=/x/y", "--key", "output.dir"])
    expect(p.stdout.strip() == "/x/y", "sweep resolve prints a resolved key")

    if failures:
        print(f"FAILED: {'; '.join(failures)} (files kept in {tmp})")
        return 1
    shutil.rmtree(tmp, ignore_errors=True)
    print("all sweep checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
