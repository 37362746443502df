"""A rank that fails in the middle of the pipelined extraction stops every rank within seconds
(labels python, fault; issue 15 (d)).

RECALL_FAULT_INJECT="extract:RANK:3:error" makes one rank throw after its third micro-batch while
the stages hand hidden states to each other: on the FIRST stage of the pipelined model (the rank
after it waits in a receive that never completes), and on the LAST stage (the rank before it is
blocked in a send, or already waits in the next collective). Each rank's exit code is recorded by
a wrapper (mpirun lets every rank finish: OMPI_MCA_orte_abort_on_non_zero_status=0). Every rank
must exit 1 within LIMIT_S, with one message naming the failing rank and the step, and no
MPI_Abort and no watchdog: without the failure notice the other ranks sat in their transfers until
the agreement's deadline (300 s) and the job ended in MPI_Abort.

Layouts (model-major cells, reference b):
- RECALL, 3 models x 2 stages on 2 ranks: rank 0 holds b's stage 0 and rank 1 b's stage 1, so the
  typical-samples pass of b goes rank 0 -> rank 1;
- RECALL, 2 models x 2 stages on 4 ranks: b's pass goes rank 2 -> rank 3 while ranks 0 and 1 wait
  for its result in the broadcast;
- RegMean, 3 models x 2 stages on 2 ranks: the statistics pass of every model, model 1 pipelined."""
import os
import re
import subprocess
import sys
import tempfile
import time


sys.path.insert(0, os.path.dirname(__file__))
from recall_testlib import BIN, MPIRUN, Checks, tiny_family  # noqa: E402

LIMIT_S = 20   # every rank must have exited by then (tiny models; a clean failure takes a few seconds)
KILL_S = 60    # a run still going then hangs (the agreement's own deadline is 300 s): killed
check = Checks()


def print_stacks(session):
    """The stacks of the recall processes of a hung run (its own session), when gdb is here."""
    pids = subprocess.run(["pgrep", "-s", str(session), "-x", "recall"], capture_output=True, text=True).stdout.split()
    for pid in pids:
        try:
            bt = subprocess.run(["gdb", "-p", pid, "-batch", "-ex", "bt 25"], capture_output=True, text=True,
                                timeout=120)
        except (OSError, subprocess.TimeoutExpired) as e:
            print(f"      no stack of {pid}: {e}")
            continue
        frames = [line for line in bt.stdout.splitlines() if line.startswith("#")]
        print(f"      stack of {pid}:\n" + "\n".join(frames or bt.stderr.splitlines()[-5:]))


def kill_session(session):
    """mpirun puts each rank in a process group of its own: kill the whole session."""
    for pid in subprocess.run(["pgrep", "-s", str(session)], capture_output=True, text=True).stdout.split():
        try:
            os.kill(int(pid), 9)
        except OSError:
            pass


def run_ranks(np_, args, env):
    """recall `args` on np_ ranks; (stderr, {rank: exit code} or None when killed, seconds)."""
    wrapper = '"$0" "$@"; rc=$?; echo "rank-exit $OMPI_COMM_WORLD_RANK $rc" >&2; exit $rc'
    cmd = [MPIRUN, "-np", str(np_), "--oversubscribe", "sh", "-c", wrapper, BIN] + args
    e = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
             OMPI_MCA_rmaps_base_oversubscribe="1", OMPI_MCA_orte_abort_on_non_zero_status="0", **env)
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e,
                         start_new_session=True)
    try:
        _, err = p.communicate(timeout=KILL_S)
    except subprocess.TimeoutExpired:
        print_stacks(p.pid)
        kill_session(p.pid)
        _, err = p.communicate()
        return err, None, time.monotonic() - t0
    codes = {int(r): int(c) for r, c in re.findall(r"rank-exit (\d+) (\d+)", err)}
    return err, codes, time.monotonic() - t0


def write_config(path, tmp, names, method):
    with open(path, "w") as f:
        f.write("models:\n" + "".join(f"  - {{name: {n}, path: {tmp}/{n}}}\n" for n in names) +
                f"method: {method}\nreference: b\ndata: {tmp}/data.jsonl\ntypical: {{clusters: 4}}\n"
                "parallel: {stages: 2, micro_batch: 2}\n"
                f"output: {{dir: {tmp}/out}}\n")
    return path


def expect_stop(label, np_, cfg, rank, step):
    """The fault on `rank` in step `step`: every rank stops, with one message."""
    spec = f"extract:{rank}:3:error"
    out = os.path.join(os.path.dirname(cfg), f"out-{np_}-{rank}-{os.path.basename(cfg)}")
    err, codes, took = run_ranks(np_, ["merge", "--config", cfg, "--quiet", "--set", f"output.dir={out}"],
                                 {"RECALL_FAULT_INJECT": spec})
    print(f"      {label}: {took:.1f} s, ranks {codes}")
    check(codes == {r: 1 for r in range(np_)} and took < LIMIT_S,
          f"{label}: every rank exits 1 within {LIMIT_S} s (took {took:.1f} s, ranks {codes}; "
          f"None = still running after {KILL_S} s)")
    errors = [line for line in err.splitlines() if "recall: error:" in line]
    check(len(errors) == 1, f"{label}: one error message ({len(errors)}: {errors[:3]!r})")
    msg = errors[0] if errors else ""
    check(f"step '{step}': rank {rank} (host " in msg
          and f"fault injection: rank {rank} fails in phase 'extract' at 3" in msg
          and f"(1 of {np_} ranks failed)" in msg,
          f"{label}: the message names rank {rank}, the step and the cause: {msg[:300]!r}")
    check("MPI_Abort" not in err and "aborting the job" not in err and "did not complete within" not in err
          and "no answer within" not in err and "stopped on a failure notice" not in err,
          f"{label}: no MPI_Abort, no watchdog, no deadline, no second message: {err.strip()[-400:]!r}")
    check(not os.path.exists(out), f"{label}: nothing committed")


def main():
    tmp = tempfile.mkdtemp(prefix="recall-notice-")
    # 24 samples of 13 tokens, micro-batches of 2: 12 hand-overs per pass; [2, 13, 64] float32
    # hidden states are 6.6 KB, above the shared-memory eager limit, so a send waits for its receive.
    tiny_family(tmp)

    cfg = write_config(f"{tmp}/recall3.yaml", tmp, "abc", "recall")
    expect_stop("recall, 2 ranks, first stage fails", 2, cfg, 0, "typical samples")
    expect_stop("recall, 2 ranks, last stage fails", 2, cfg, 1, "typical samples")
    cfg = write_config(f"{tmp}/recall2.yaml", tmp, "ab", "recall")
    expect_stop("recall, 4 ranks, first stage fails", 4, cfg, 2, "typical samples")
    expect_stop("recall, 4 ranks, last stage fails", 4, cfg, 3, "typical samples")
    cfg = write_config(f"{tmp}/regmean.yaml", tmp, "abc", "regmean")
    expect_stop("regmean, 2 ranks, first stage fails", 2, cfg, 0, "statistics")
    expect_stop("regmean, 2 ranks, last stage fails", 2, cfg, 1, "statistics")
    check.finish()


if __name__ == "__main__":
    main()
