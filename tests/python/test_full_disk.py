"""A full disk at every size (labels python, fault): 2-rank merges whose output directory is a tmpfs
of a few KB up to past the size of the output. Every run that runs out of space must end within
the timeout, every rank non-zero, with one message naming the file and "No space left on device",
no error from inside HDF5 (HDF5-DIAG: a write that failed inside HDF5 is what split the ranks in
HDF5 1.10.8's collectives) and nothing committed; the runs with room enough commit an output that
verifies. Linear merges sweep the sizes (no model engine, ~2 s each); RECALL merges (which also
save the per-block weights) and merges with the default checkpoint interval run at a few sizes.
Needs root for the tmpfs mounts (the test fails, saying so, where it cannot mount)."""
import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from recall_testlib import BIN, MPIRUN, Checks, run, tiny_llama, write_jsonl  # noqa: E402

TIMEOUT_S = 90  # a run that has not ended by then hangs (the failure agreement's own deadline is 300 s)
check = Checks()


def mounted_run(disk, size_kb, cfg, sets):
    """Runs a 2-rank merge into a fresh tmpfs of size_kb at `disk`; returns (ranks' exit codes or
    None on a hang, output, seconds, committed, whether a committed output verifies)."""
    os.makedirs(disk, exist_ok=True)
    m = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", disk], capture_output=True, text=True)
    if m.returncode != 0:
        return "mount", m.stderr.strip(), 0, False, False
    try:
        # Each rank reports its own exit code; mpirun waits for every rank instead of killing the rest.
        cmd = [MPIRUN, "-np", "2", "--oversubscribe", "sh", "-c",
               '"$0" "$@"; rc=$?; echo "rank $OMPI_COMM_WORLD_RANK exit $rc"; exit $rc',
               BIN, "merge", "--config", cfg, "--quiet", "--set", f"output.dir={disk}/out"]
        for s in sets:
            cmd += ["--set", s]
        env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
                   OMPI_MCA_rmaps_base_oversubscribe="1", OMPI_MCA_orte_abort_on_non_zero_status="0")
        t0 = time.time()
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                             start_new_session=True)
        try:
            out, _ = p.communicate(timeout=TIMEOUT_S)
            codes = sorted(int(line.split()[3]) for line in out.splitlines() if line.startswith("rank ") and " exit " in line)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, _ = p.communicate()
            codes = None
        took = time.time() - t0
        committed = os.path.exists(f"{disk}/out")
        verified = committed and run(["verify", f"{disk}/out"], check=False).returncode == 0
        return codes, out, took, committed, verified
    finally:
        subprocess.run(["umount", "-l", disk], capture_output=True)


def phase(out):
    """The step and file an error names, for the summary."""
    for line in out.splitlines():
        if "recall: error:" in line:
            step = line.split("step '")[1].split("'")[0] if "step '" in line else "?"
            for f in ("merged.h5", "model.safetensors", "recall_state.json", "progress.txt", "manifest.json",
                      "config.json", "job.key"):
                if f in line:
                    return f"{step}: {f}"
            return step
    return "?"


def expect_run(disk, size_kb, cfg, sets, what):
    codes, out, took, committed, verified = mounted_run(disk, size_kb, cfg, sets)
    if codes == "mount":
        check(False, f"cannot mount a {size_kb} KB tmpfs for the full-disk test (needs root): {out}")
        return None
    label = f"{what}, {size_kb} KB"
    if codes is None:
        check(False, f"{label}: no hang (still running after {TIMEOUT_S} s; killed)")
        print(out[-3000:])
        return "hang"
    if codes == [0, 0]:
        check(committed, f"{label}: room enough, committed")
        check(verified, f"{label}: the committed output verifies")
        return "ok"
    ok = (len(codes) == 2 and all(c != 0 for c in codes) and "No space left on device" in out and disk in out
          and "HDF5-DIAG" not in out and "recall: warning" not in out and not committed)
    check(ok, f"{label}: every rank non-zero {codes}, in {took:.1f} s, '{phase(out)}' named, no HDF5 error, "
              f"nothing committed")
    if not ok:
        print(out[-3000:])
    return phase(out)


def main():
    tmp = tempfile.mkdtemp(prefix="recall-disk-")
    base = tiny_llama(f"{tmp}/base", seed=0, layers=4)
    for i, n in enumerate(["a", "b"]):
        tiny_llama(f"{tmp}/{n}", seed=i + 1, base_state=base, noise=0.02)
    rng = np.random.default_rng(1)
    write_jsonl(f"{tmp}/data.jsonl", [{"input_ids": [1] + rng.integers(3, 128, size=12).tolist()} for _ in range(24)])
    cfg = f"{tmp}/cfg.yaml"
    open(cfg, "w").write(
        "models:\n" + "".join(f"  - {{name: {n}, path: {tmp}/{n}}}\n" for n in "ab") +
        f"method: linear\ndata: {tmp}/data.jsonl\ntypical: {{clusters: 4}}\nparallel: {{stages: 2, micro_batch: 2}}\n"
        f"output: {{dir: {tmp}/unused, dtype: bfloat16, checkpoint_bytes: 0}}\n")
    disk = f"{tmp}/disk"
    # What a finished output occupies (merged.h5, hf/ and the small files), for the range of sizes.
    run(["merge", "--config", cfg, "--quiet", "--set", f"output.dir={tmp}/ref"], np=2)
    need_kb = int(subprocess.run(["du", "-sk", f"{tmp}/ref"], capture_output=True, text=True).stdout.split()[0])
    print(f"a finished output occupies {need_kb} KB")

    # Linear merges, a checkpoint after every tensor: every 4 KB page from 4 KB (where the small files
    # rank 0 writes between collective calls run out of space), then every 16 KB up to past the output
    # (the writer's reservations need more than the output while it is written).
    phases = {}
    sizes = [4, 8, 12, 16, 20, 24, 32, 48, 64, 96, 128, 192] + list(range(256, 2 * need_kb + 256, 16))
    successes = 0
    for kb in sizes:
        result = expect_run(disk, kb, cfg, [], "linear")
        if result == "ok":
            successes += 1
            if successes == 2:
                break
        elif result is not None:
            phases.setdefault(result, []).append(kb)
        if result is None:
            break
    check(successes == 2, "a disk past the size of the output lets the merge commit")
    for p, kbs in phases.items():
        print(f"  {p}: {', '.join(f'{k} KB' for k in kbs)}")
    named = " ".join(phases)
    check("merged.h5" in named and "model.safetensors" in named,
          "the sweep ran out of space both in merged.h5 and in the HF shards")

    # RECALL (per-block weights saved before the merge) and the default checkpoint interval.
    for kb in (4, 64, need_kb // 2, need_kb):
        expect_run(disk, kb, cfg, ["method=recall", "typical.clusters=4"], "recall")
    for kb in (64, need_kb // 2):
        expect_run(disk, kb, cfg, ["output.checkpoint_bytes=4GB"], "linear, default checkpoints")
    subprocess.run(["rm", "-rf", tmp])
    check.finish()


if __name__ == "__main__":
    main()
