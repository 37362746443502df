"""A resumed data-aware merge and its saved calibration statistics (<out>.partial/statistics/):

- interrupted in the merge (a rank killed after its 2nd tensor), the rerun resumes with the saved
  statistics (the log says so) and writes the bytes of an uninterrupted run;
- a damaged statistics file is found before any merge, named in the log, and the statistics are
  computed again (they are recall's own files, under its job key), giving the same bytes: a
  truncated Gram file, a Gram file whose matrix has another shape, a missing block file, a Fisher
  file without its norm, and an unreadable complete.json.
RegMean and Fisher on 2 ranks."""
import os
import shutil
import sys
import tempfile

import numpy as np
from safetensors.numpy import load_file, save_file

sys.path.insert(0, os.path.dirname(__file__))
from recall_testlib import Checks, run, tiny_llama, write_jsonl  # noqa: E402

check = Checks()


def config(tmp, method, out):
    cfg = f"{tmp}/{os.path.basename(out)}.yaml"
    with open(cfg, "w") as f:
        f.write("models:\n" + "".join(f"  - {{name: {n}, path: {tmp}/{n}}}\n" for n in ("base", "a", "b")) +
                f"method: {method}\ndata: {tmp}/data.jsonl\n"
                f"output: {{dir: {out}, dtype: float32, checkpoint_bytes: 0}}\n")
    return cfg


def merged_bytes(out):
    return open(f"{out}/hf/model.safetensors", "rb").read()


def interrupted(cfg, out):
    """Runs the merge until rank 1 is killed after its 2nd merged tensor; returns the statistics dir."""
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(out + ".partial", ignore_errors=True)
    p = run(["merge", "--config", cfg, "--quiet"], np=2, check=False, env={"RECALL_FAULT_INJECT": "merge:1:2"})
    stats = f"{out}.partial/statistics"
    ok = p.returncode != 0 and os.path.exists(f"{stats}/complete.json")
    check(ok, f"{os.path.basename(out)}: the interrupted job kept its statistics (exit {p.returncode})")
    return stats


def truncate(path):
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)


def reshape_gram(path):
    t = load_file(path)
    name = next(k for k in t if k.endswith(".gram"))
    t[name] = np.ones((3, 3), dtype=np.float64)
    save_file(t, path)


def strip_fisher_norm(path):
    save_file(load_file(path), path)  # the tensors without recall's metadata (sum_squares)


def main():
    tmp = tempfile.mkdtemp(prefix="recall-stats-resume-")
    try:
        base = tiny_llama(f"{tmp}/base", seed=0, dtype="float32", layers=2)
        for i, n in enumerate(["a", "b"]):
            tiny_llama(f"{tmp}/{n}", seed=i + 1, dtype="float32", layers=2, base_state=base, noise=0.02)
        rng = np.random.default_rng(3)
        write_jsonl(f"{tmp}/data.jsonl", [{"input_ids": [1] + rng.integers(3, 120, size=9).tolist()} for _ in range(24)])

        for method in ("regmean", "fisher"):
            ref_out = f"{tmp}/ref-{method}"
            run(["merge", "--config", config(tmp, method, ref_out), "--quiet"], np=2)
            ref = merged_bytes(ref_out)
            out = f"{tmp}/out-{method}"
            cfg = config(tmp, method, out)

            interrupted(cfg, out)
            p = run(["merge", "--config", cfg], np=2, check=False)
            check(p.returncode == 0 and "resuming: calibration statistics" in p.stdout and "damaged" not in p.stdout
                  and merged_bytes(out) == ref,
                  f"{method}: the rerun resumes with the saved statistics and equals an uninterrupted run")

            if method == "regmean":
                damages = [("a truncated Gram file", "1/block_0.safetensors", truncate, "1/block_0.safetensors"),
                           ("a Gram matrix of another shape", "2/block_1.safetensors", reshape_gram, ".gram' must be F64"),
                           ("a missing block file", "0/block_1.safetensors", os.remove, "0/block_1.safetensors")]
            else:
                damages = [("a Fisher file without its norm", "1/fisher.safetensors", strip_fisher_norm, "sum_squares"),
                           ("a truncated Fisher file", "2/fisher.safetensors", truncate, "2/fisher.safetensors")]
            damages.append(("an unreadable complete.json", "complete.json",
                            lambda path: open(path, "w").write("{not json"), "complete.json"))
            for what, rel, damage, named in damages:
                stats = interrupted(cfg, out)
                damage(f"{stats}/{rel}")
                p = run(["merge", "--config", cfg], np=2, check=False)
                line = next((l for l in p.stdout.splitlines() if "damaged" in l), "")
                check(p.returncode == 0 and named in line and "computing them again" in line and
                      "resuming: calibration statistics" not in p.stdout and merged_bytes(out) == ref,
                      f"{method}: {what} is named ({line.strip()[:160]!r}) and the statistics are computed again, "
                      f"giving an uninterrupted run's bytes (exit {p.returncode})")
                if p.returncode != 0:
                    print(p.stdout[-2000:], p.stderr[-2000:])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    check.finish()


if __name__ == "__main__":
    main()
