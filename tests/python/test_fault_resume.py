"""Fault injection and resume (labels python, fault).

- SIGKILL of one rank during extraction and during the merge: every rank ends non-zero within a
  bounded time, nothing is committed (no output directory; `recall verify` rejects the .partial),
  and the rerun resumes and produces output bitwise identical to an uninterrupted run.
- `--fresh` ignores the interrupted work and gives the same bytes.
- An I/O error (not a kill) at a resume checkpoint, in one rank's fsyncs or in rank 0's progress
  record: every rank exits 1 within seconds with one message (the checkpoint's parts are agreed on;
  with a bare barrier there the other ranks waited until the agreement's deadline), nothing is
  committed, and the rerun resumes to the same bytes.
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
from recall_testlib import BIN, MPIRUN, run, tiny_family  # noqa: E402

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


def run_ranks(args, env, limit_s=60):
    """recall `args` on 2 ranks, each rank's exit code recorded; (stderr, {rank: code} or None on a hang, s)."""
    cmd = [MPIRUN, "-np", "2", "--oversubscribe", "sh", "-c",
           '"$0" "$@"; rc=$?; echo "rank-exit $OMPI_COMM_WORLD_RANK $rc" >&2; exit $rc', BIN] + args
    e = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
             OMPI_MCA_rmaps_base_oversubscribe="1", OMPI_MCA_orte_abort_on_non_zero_status="0", **env)
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=limit_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        _, err = proc.communicate()
        return err, None, time.time() - t0
    codes = {}
    for line in err.splitlines():
        if line.startswith("rank-exit "):
            r, c = line.split()[1:]
            codes[int(r)] = int(c)
    return err, codes, time.time() - t0


def main():
    tmp = tempfile.mkdtemp(prefix="recall-fault-")
    tiny_family(tmp)
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

    # An I/O error at checkpoint 3 (checkpoint_bytes: 0 checkpoints after every tensor).
    for spec, who in (("checkpoint:1:3:error", "rank 1's fsyncs"), ("record:0:3:error", "rank 0's progress record")):
        out = f"{tmp}/{spec.split(':')[0]}"
        phase, rank = spec.split(":")[:2]
        err, codes, took = run_ranks(["merge", "--config", cfg, "--set", f"output.dir={out}", "--quiet"],
                                     {"RECALL_FAULT_INJECT": spec})
        expect(codes == {0: 1, 1: 1} and took < 60,
               f"error in {who}: every rank exits 1 within {took:.1f} s (ranks {codes}; None = still running after 60 s)")
        expect(f"fault injection: rank {rank} fails in phase '{phase}' at 3" in err and err.count("recall: error:") == 1,
               f"error in {who}: one message names it: {err.strip()[:300]!r}")
        expect(not os.path.exists(out), f"error in {who}: nothing committed")
        if codes is None:
            continue  # killed ranks may still hold the output's lock for a moment
        p = run(["merge", "--config", cfg, "--set", f"output.dir={out}"], np=2)
        expect("tensors already merged" in p.stdout and digest(out) == ref,
               f"error in {who}: the rerun resumes and its output is bitwise identical")

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
