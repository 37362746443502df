"""What recall may do to the output directory (issue 17, labels python and fault), through
`recall merge` on 2 ranks with tiny models:

- output.overwrite never deletes what recall did not write: an unrelated non-empty directory, the
  directory holding the data file, the data file itself, a model directory, the directory
  holding the config, and "/" are refused at preflight and left intact;
- a <dir>.partial or <dir>.old the user made is refused and left intact;
- two jobs on one output (started 0, 0.3 and 1.5 s apart): one commits a result that verifies,
  the other is refused naming the holder of <dir>.lock, and no lock or temporary file is left;
- an interrupted job whose data file or a model's config.json then changes is not resumed: the
  rerun starts over and gives the bytes of a fresh run.
"""
import hashlib
import os
import shutil
import subprocess
import tempfile
import time

import numpy as np

from recall_testlib import BIN, MPIRUN, Checks, run, tiny_llama, write_jsonl

check = Checks()


def tree_digest(path):
    """sha256 over every file's relative path and bytes below path (or of the file)."""
    h = hashlib.sha256()
    if os.path.isfile(path):
        h.update(open(path, "rb").read())
        return h.hexdigest()
    for root, dirs, files in sorted(os.walk(path)):
        dirs.sort()
        for f in sorted(files):
            p = os.path.join(root, f)
            h.update(os.path.relpath(p, path).encode())
            h.update(open(p, "rb").read())
    return h.hexdigest()


def write_cfg(path, tmp, out, overwrite=False, data=None):
    with open(path, "w") as f:
        f.write("models:\n" + "".join(f"  - {{name: {n}, path: {tmp}/{n}}}\n" for n in "abc") +
                f"method: recall\ndata: {data or tmp + '/data/data.jsonl'}\ntypical: {{clusters: 4}}\n"
                f"output: {{dir: {out}, overwrite: {str(overwrite).lower()}, checkpoint_bytes: 0}}\n")


def merged_bytes(out):
    return open(f"{out}/hf/model.safetensors", "rb").read()


def main():
    tmp = tempfile.mkdtemp(prefix="recall-outsafe-")
    base = tiny_llama(f"{tmp}/a", seed=1, layers=2)
    for i, n in enumerate("bc"):
        tiny_llama(f"{tmp}/{n}", seed=i + 2, layers=2, base_state=base, noise=0.03)
    os.makedirs(f"{tmp}/data")
    rng = np.random.default_rng(0)
    write_jsonl(f"{tmp}/data/data.jsonl", [{"input_ids": [1] + rng.integers(3, 128, size=10).tolist()}
                                           for _ in range(16)])
    cfg = f"{tmp}/cfg.yaml"

    # --- overwrite refusals ---------------------------------------------------------------------
    os.makedirs(f"{tmp}/thesis")
    open(f"{tmp}/thesis/chapter1.tex", "w").write("years of work")
    victims = [("an unrelated non-empty directory", f"{tmp}/thesis", f"{tmp}/thesis", "is not a recall output"),
               ("the directory holding the data file", f"{tmp}/data", f"{tmp}/data", "is or holds the input"),
               ("the data file itself", f"{tmp}/data/data.jsonl", f"{tmp}/data/data.jsonl", "is or holds the input"),
               ("a model directory", f"{tmp}/b", f"{tmp}/b", "is or holds the input"),
               ("the directory holding the config", tmp, cfg, "is or holds the input"),
               ("the root directory", "/", None, "is the root directory")]
    for what, out, victim, message in victims:
        write_cfg(cfg, tmp, out, overwrite=True)
        before = tree_digest(victim) if victim else None
        p = run(["merge", "--config", cfg, "--quiet"], np=2, check=False)
        intact = victim is None or (os.path.exists(victim) and tree_digest(victim) == before)
        check(p.returncode != 0 and message in p.stderr and "preflight" in p.stderr and intact,
              f"overwrite of {what} is refused at preflight ({message!r}) and it is intact")

    # --- a user's <dir>.partial and <dir>.old -----------------------------------------------------
    for suffix, message in ((".partial", "was not written by recall"), (".old", "is not a recall output")):
        out = f"{tmp}/mine"
        os.makedirs(out + suffix)
        open(f"{out}{suffix}/notes.txt", "w").write("mine")
        write_cfg(cfg, tmp, out)
        p = run(["merge", "--config", cfg, "--quiet"], np=2, check=False)
        check(p.returncode != 0 and message in p.stderr and open(f"{out}{suffix}/notes.txt").read() == "mine",
              f"a user's {suffix} directory is refused ({message!r}) and left intact")
        shutil.rmtree(out + suffix)

    # --- a committed output is replaced with overwrite; a fresh run is the reference ----------------
    write_cfg(cfg, tmp, f"{tmp}/ref")
    run(["merge", "--config", cfg, "--quiet"], np=2)
    ref = merged_bytes(f"{tmp}/ref")
    write_cfg(cfg, tmp, f"{tmp}/ref", overwrite=True)
    p = run(["merge", "--config", cfg, "--quiet"], np=2, check=False)
    check(p.returncode == 0 and merged_bytes(f"{tmp}/ref") == ref and not os.path.exists(f"{tmp}/ref.old"),
          "overwrite replaces a committed recall output")

    # --- two jobs on one output -------------------------------------------------------------------
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")
    for delay in (0.0, 0.3, 1.5):
        out = f"{tmp}/race"
        shutil.rmtree(out, ignore_errors=True)
        write_cfg(cfg, tmp, out)
        cmd = [MPIRUN, "-np", "2", "--oversubscribe", BIN, "merge", "--config", cfg, "--quiet"]
        first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        time.sleep(delay)
        second = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        r1, r2 = first.communicate(), second.communicate()
        codes = sorted([first.returncode, second.returncode])
        loser = r2[1] if second.returncode else r1[1]
        committed = os.path.exists(f"{out}/manifest.json")
        verifies = committed and run(["verify", out], check=False).returncode == 0
        leftovers = [f for f in os.listdir(tmp) if f.startswith("race.")] + \
            [f for r, _, fs in os.walk(out) for f in fs if ".tmp." in f]
        # The second is refused by the lock while the first runs, or by preflight once it has committed.
        refused = ("is being written by another recall job" in loser and "race.lock" in loser) or \
            "already exists" in loser
        ok = codes[0] == 0 and codes[1] != 0 and refused and verifies and merged_bytes(out) == ref and not leftovers
        if not ok:
            print(f"     exit codes {first.returncode}, {second.returncode}; committed {committed}, verifies {verifies}; "
                  f"first's stderr: {r1[1][:1500]!r}; second's stderr: {r2[1][:1500]!r}")
        how = "the lock" if "race.lock" in loser else "preflight (the first had committed)"
        check(ok, f"two jobs {delay} s apart: one commits a verified result equal to a lone run's, the other is "
              f"refused by {how}; nothing left over {leftovers}")

    # --- a stale resume: the inputs changed after an interruption -----------------------------------
    for what, change in (("the data file", lambda: open(f"{tmp}/data/data.jsonl", "a").write(
                              '{"input_ids": [1, 9, 9, 9, 9]}\n')),
                         ("a model's config.json", lambda: open(f"{tmp}/c/config.json", "a").write("\n"))):
        out = f"{tmp}/stale"
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(out + ".partial", ignore_errors=True)
        write_cfg(cfg, tmp, out)
        run(["merge", "--config", cfg, "--quiet"], np=2, check=False, env={"RECALL_FAULT_INJECT": "merge:1:3"})
        check(os.path.exists(f"{out}.partial/job.key"), f"{what}: the interrupted job left its work")
        change()
        p = run(["merge", "--config", cfg], np=2, check=False)
        write_cfg(cfg, tmp, f"{tmp}/fresh-{len(what)}")
        run(["merge", "--config", cfg, "--quiet"], np=2)
        check(p.returncode == 0 and "resuming" not in p.stdout and "removed the unfinished" in p.stdout and
              merged_bytes(out) == merged_bytes(f"{tmp}/fresh-{len(what)}"),
              f"after {what} changed, the rerun starts over (says so) and equals a fresh run")
    shutil.rmtree(tmp, ignore_errors=True)
    check.finish()


if __name__ == "__main__":
    main()
