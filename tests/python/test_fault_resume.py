"""Fault injection and resume (labels python, fault).

- SIGKILL of one rank during extraction and during the merge: every rank ends non-zero within a
  bounded time, nothing is committed (no output directory; `recall verify` rejects the .partial),
  and the rerun resumes and produces output bitwise identical to an uninterrupted run.
- `--fresh` ignores the interrupted work and gives the same bytes.
- A full disk (a 600 KB tmpfs): a clear error naming the file, non-zero exit, nothing committed."""
import hashlib
import os
import subprocess
import sys
import tempfile
import time

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from recall_testlib import run, tiny_llama, write_jsonl  # noqa: E402

failures = []


def expect(cond, msg):
    print(("ok   " if cond else "FAIL ") + msg)
    if not cond:
        failures.append(msg)


def digest(out):
    h = hashlib.sha256()
    h.update(open(f"{out}/hf/model.safetensors", "rb").read())
    with h5py.File(f"{out}/merged.h5", "r") as f:
        for k in sorted(f["tensors"]):
            h.update(k.encode())
            h.update(np.ascontiguousarray(f["tensors"][k][()]).tobytes())
    return h.hexdigest()


def main():
    tmp = tempfile.mkdtemp(prefix="recall-fault-")
    base = tiny_llama(f"{tmp}/base", seed=0, layers=4)
    for i, n in enumerate(["a", "b", "c"]):
        tiny_llama(f"{tmp}/{n}", seed=i + 1, base_state=base, noise=0.02)
    rng = np.random.default_rng(1)
    write_jsonl(f"{tmp}/data.jsonl", [{"input_ids": [1] + rng.integers(3, 128, size=12).tolist()} for _ in range(24)])
    cfg = f"{tmp}/cfg.yaml"
    open(cfg, "w").write(
        "models:\n" + "".join(f"  - {{name: {n}, path: {tmp}/{n}}}\n" for n in "abc") +
        f"method: recall\ndata: {tmp}/data.jsonl\ntypical: {{clusters: 4}}\n"
        "parallel: {stages: 2, micro_batch: 2}\n"
        f"output: {{dir: {tmp}/ref, dtype: bfloat16, checkpoint_bytes: 0}}\n")
    run(["merge", "--config", cfg, "--quiet"], np=2)
    ref = digest(f"{tmp}/ref")

    for phase, count in (("extract", 1), ("merge", 7)):
        out = f"{tmp}/{phase}"
        t0 = time.time()
        p = run(["merge", "--config", cfg, "--set", f"output.dir={out}", "--quiet"], np=2, check=False,
                env={"RECALL_FAULT_INJECT": f"{phase}:1:{count}"})
        took = time.time() - t0
        expect(p.returncode != 0, f"kill during {phase}: mpirun exits non-zero ({p.returncode})")
        expect(took < 60, f"kill during {phase}: every rank ended within {took:.1f} s")
        expect(not os.path.exists(out), f"kill during {phase}: nothing committed")
        if os.path.exists(out + ".partial"):
            expect(run(["verify", out + ".partial"], check=False).returncode != 0,
                   f"kill during {phase}: verify rejects the .partial")
        p = run(["merge", "--config", cfg, "--set", f"output.dir={out}"], np=2)
        if phase == "merge":
            expect("tensors already merged" in p.stdout, f"rerun after a kill during {phase} resumes finished tensors")
        expect("resuming" in p.stdout, f"rerun after a kill during {phase} reports that it resumes")
        expect(digest(out) == ref, f"resumed output after a kill during {phase} is bitwise identical")
        expect(run(["verify", out], check=False).returncode == 0, f"resumed output after {phase} verifies")

    out = f"{tmp}/fresh"
    run(["merge", "--config", cfg, "--set", f"output.dir={out}", "--quiet"], np=2, check=False,
        env={"RECALL_FAULT_INJECT": "merge:0:3"})
    p = run(["merge", "--config", cfg, "--set", f"output.dir={out}", "--fresh"], np=2)
    expect("resuming" not in p.stdout, "--fresh does not resume")
    expect(digest(out) == ref, "--fresh output is bitwise identical")

    # A full disk: the output directory on a tiny tmpfs.
    disk = f"{tmp}/disk"
    os.makedirs(disk)
    m = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", disk], capture_output=True, text=True)
    if m.returncode != 0:
        expect(False, f"cannot mount a small tmpfs for the full-disk test (needs root): {m.stderr.strip()}")
    else:
        try:
            t0 = time.time()
            p = run(["merge", "--config", cfg, "--set", f"output.dir={disk}/out", "--quiet"], np=2, check=False)
            msg = p.stdout + p.stderr
            expect(p.returncode != 0 and "No space left on device" in msg and disk in msg,
                   "full disk: non-zero exit and an error naming the file")
            expect(time.time() - t0 < 60, "full disk: every rank ended promptly")
            expect(not os.path.exists(f"{disk}/out"), "full disk: nothing committed")
        finally:
            subprocess.run(["umount", disk])
    subprocess.run(["rm", "-rf", tmp])
    print(f"{len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
