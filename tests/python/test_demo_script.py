"""scripts/demo.sh and scripts/demo_report.py without running the 8-minute demo:

- RECALL_DEMO_RANKS outside 1-6 (the RECALL merge's 3 models x 2 stages) stops the demo at once,
  saying why, before it installs, builds or writes anything; no `mpirun -np <number>` is left in
  the script (the rank count follows the machine);
- demo_report.py prints the per-block weights, the results table and a reading drawn from the
  numbers: the loss and exact-match explanations, each expert's own-task rank, the merges' mean
  losses and where RECALL is lower, and "neither merge answers any test prompt exactly" only when
  that is so."""
import json
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from recall_testlib import Checks  # noqa: E402

check = Checks()
SRC = os.environ.get("RECALL_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "../.."))
TASKS = ["arithmetic", "reverse", "cipher"]


def fake_results(out, recall_exact):
    os.makedirs(f"{out}/recall/hf")
    os.makedirs(f"{out}/eval")
    json.dump({"vocab_size": 384}, open(f"{out}/recall/hf/config.json", "w"))
    blocks = [{"index": l, "weights": [0.25, 0.25, 0.5 - 0.01 * l], "similarity": [0.4, 0.4, 1.0]} for l in range(4)]
    for b in blocks:
        b["weights"][0] += 0.01 * b["index"]
    json.dump({"models": TASKS, "reference": "cipher", "blocks": blocks}, open(f"{out}/recall/report.json", "w"))
    loss = {"base": [7.0, 4.0, 7.0], "arithmetic": [3.0, 4.0, 6.0], "reverse": [7.0, 1.0, 7.0],
            "cipher": [5.0, 4.0, 3.0], "recall": [5.0, 2.5, 4.5], "linear": [5.5, 2.0, 5.0]}
    for m, ls in loss.items():
        for t, l in zip(TASKS, ls):
            em = recall_exact if (m, t) == ("recall", "cipher") else 0.0
            json.dump({"summary": {"completion": {"loss": l, "exact_match": em}}}, open(f"{out}/eval/{m}.{t}.json", "w"))


def main():
    script = open(f"{SRC}/scripts/demo.sh").read()
    check(re.search(r"-np\s+[0-9]", script) is None and '-np "$ranks"' in script,
          "demo.sh launches its merges on $ranks ranks, no fixed count")
    with tempfile.TemporaryDirectory() as tmp:
        for bad in ("9", "0", "four"):
            p = subprocess.run(["bash", f"{SRC}/scripts/demo.sh"], capture_output=True, text=True,
                               env=dict(os.environ, RECALL_DEMO_RANKS=bad, RECALL_DEMO_OUT=f"{tmp}/out"))
            check(p.returncode == 2 and f"RECALL_DEMO_RANKS must be 1 to 6" in p.stderr and f"got '{bad}'" in p.stderr
                  and "[setup]" not in p.stdout and not os.path.exists(f"{tmp}/out"),
                  f"RECALL_DEMO_RANKS={bad} stops the demo before anything runs: {p.stderr.strip()!r}")
        for exact in (0.0, 0.07):
            out = f"{tmp}/res{exact}"
            fake_results(out, exact)
            p = subprocess.run([sys.executable, f"{SRC}/scripts/demo_report.py", out, *TASKS], capture_output=True,
                               text=True)
            text = " ".join(p.stdout.split())
            check(p.returncode == 0 and "block 3: 0.280 0.250 0.470" in text
                  and re.search(r"recall +5\.000 / 0\.00 +2\.500 / 0\.00 +4\.500 / " + f"{exact:.2f}", p.stdout)
                  and "How to read it:" in text and "5.95 = ln(384) is a uniform guess" in text
                  and "exact match can be 0.00 for both merges" in text
                  and "Experts: 3 of 3 are the best expert on their own task" in text
                  and "mean loss 4.000 for RECALL, 4.167 for linear (each task's own expert: 2.333)" in text
                  and "RECALL is lower on 2 of 3 tasks (arithmetic, cipher)" in text
                  and "'cipher' 0.470 to 0.500 of each block (linear: 0.333)" in text
                  and (("neither merge answers any test prompt exactly" in text) == (exact == 0)),
                  f"demo_report.py (RECALL exact match on cipher {exact}): table and reading from the numbers"
                  + ("" if p.returncode == 0 else f": {p.stderr}"))
    check.finish()


if __name__ == "__main__":
    main()
