"""`parallel.device: cuda` on a node without a CUDA device (this machine: no GPU) fails at the
job's start, before the preflight reads a header: `recall merge` and `recall preflight` on 2 ranks
end within seconds, every rank exits non-zero (each rank's exit code is recorded by a wrapper), and
the one message names the setting, the host and the fix; `recall finetune --device cuda` likewise. A preflight that plans for another job
(--world N) does not check this node's device and still succeeds. On a node with GPUs the check
passes and the context's world communicator is NCCL's (not exercised here)."""
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from recall_testlib import BIN, MPIRUN, Checks, run, tiny_llama, write_jsonl  # noqa: E402

check = Checks()
LIMIT_S = 60  # a hang would last until the agreement's deadline (minutes); a clean failure takes seconds


def run_ranks(args, np=2, abort_on_failure=False):
    """recall `args` on `np` ranks; returns (process, {rank: exit code}, seconds). By default mpirun
    lets every rank finish when one exits non-zero (so that each wrapper reports its exit code; it
    then exits 0 itself); abort_on_failure keeps mpirun's own behaviour (kill the others, exit
    non-zero), whose exit code is what a batch script sees."""
    wrapper = '"$0" "$@"; rc=$?; echo "rank-exit ${OMPI_COMM_WORLD_RANK:-?} $rc" >&2; exit $rc'
    cmd = [MPIRUN, "-np", str(np), "--oversubscribe", "sh", "-c", wrapper, BIN] + args
    # mpirun must not kill the other ranks when the first exits non-zero (their wrappers would not
    # get to report their exit codes): each rank's own exit is what is checked.
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1",
               OMPI_MCA_orte_abort_on_non_zero_status="1" if abort_on_failure else "0")
    t0 = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=LIMIT_S + 60)
    codes = {int(r): int(c) for r, c in re.findall(r"rank-exit (\d+) (\d+)", p.stderr)}
    return p, codes, time.monotonic() - t0


def main():
    tmp = tempfile.mkdtemp(prefix="recall-device-")
    try:
        for i, n in enumerate(["a", "b"]):
            tiny_llama(f"{tmp}/{n}", seed=i, layers=2)
        write_jsonl(f"{tmp}/data.jsonl", [{"input_ids": [1 + (3 * i + j) % 120 for j in range(8)]} for i in range(8)])
        cfg = f"{tmp}/recall.yaml"
        with open(cfg, "w") as f:
            f.write(f"models:\n  - {{name: a, path: {tmp}/a}}\n  - {{name: b, path: {tmp}/b}}\n"
                    f"method: recall\nreference: b\ndata: {tmp}/data.jsonl\ntypical: {{clusters: 2}}\n"
                    f"output: {{dir: {tmp}/out}}\n")
        host = socket.gethostname()
        for cmd in ("merge", "preflight"):
            args = [cmd, "--config", cfg, "--set", "parallel.device=cuda"]
            launcher = run_ranks(args, abort_on_failure=True)[0]
            check(launcher.returncode != 0, f"{cmd} with parallel.device=cuda: mpirun exits non-zero "
                                            f"({launcher.returncode})")
            p, codes, secs = run_ranks(args)
            err = p.stderr
            check(codes == {0: 1, 1: 1}, f"{cmd} with parallel.device=cuda: every rank exits 1 (ranks {codes})")
            check(secs < LIMIT_S, f"{cmd}: ends in {secs:.1f} s (limit {LIMIT_S} s)")
            check("step 'device'" in err and "parallel.device is cuda but this node has no CUDA device" in err
                  and f"on host {host}" in err and "use parallel.device: cpu" in err and "(2 of 2 ranks failed)" in err,
                  f"{cmd}: one message names the setting, the host and the fix, from both ranks: {err.strip()[:400]!r}")
            check(err.count("recall: error:") == 1, f"{cmd}: the message is printed once")
            check("preflight ok" not in p.stdout and "plan:" not in p.stdout,
                  f"{cmd}: it stops before the preflight reads a header")
            check(not os.path.exists(f"{tmp}/out") and not os.path.exists(f"{tmp}/out.partial")
                  and not os.path.exists(f"{tmp}/out.lock"), f"{cmd}: no output, partial output or lock")
        # `recall finetune --device cuda` checks the device the same way (before loading the model).
        p, codes, secs = run_ranks(["finetune", "--model", f"{tmp}/a", "--data", f"{tmp}/data.jsonl", "--out",
                                    f"{tmp}/ft", "--steps", "1", "--device", "cuda"])
        check(codes == {0: 1, 1: 1} and secs < LIMIT_S, f"finetune --device cuda: every rank exits 1 within "
                                                        f"{LIMIT_S} s (ranks {codes}, {secs:.1f} s)")
        check("step 'device'" in p.stderr and "--device is cuda but this node has no CUDA device" in p.stderr
              and f"on host {host}" in p.stderr and p.stderr.count("recall: error:") == 1,
              f"finetune --device cuda: one message naming the option and the host {p.stderr.strip()[:400]!r}")
        check(not os.path.exists(f"{tmp}/ft"), "finetune --device cuda: no output directory")
        # Planning for another job's nodes does not check this node's device.
        p = run(["preflight", "--config", cfg, "--set", "parallel.device=cuda", "--world", "2"], check=False)
        check(p.returncode == 0 and "parallel.device cuda is not checked here" in p.stdout,
              f"preflight --world 2 with parallel.device=cuda plans without checking this node (exit {p.returncode}) "
              f"{p.stderr.strip()[-300:]!r}")
        # The same config on cpu goes through the preflight (the failure above was the device's).
        p, codes, _ = run_ranks(["preflight", "--config", cfg])
        check(p.returncode == 0 and codes == {0: 0, 1: 0} and "communicators mpi" in p.stdout,
              f"preflight with parallel.device=cpu succeeds on both ranks (ranks {codes}) {p.stderr.strip()[-300:]!r}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    check.finish()


if __name__ == "__main__":
    main()
