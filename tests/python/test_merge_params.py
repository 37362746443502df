"""`params.normalize` reaches every method through `recall merge`, and an unset value means the
method's mergekit default: TIES and task arithmetic merged by the job (2 ranks) with normalize
unset and set to the opposite of the method's default equal mergekit 0.1.5 run with the same
parameters (float32 models, so no magnitude ties; within 1 ulp), and the setting changes the bytes.
Prints each comparison."""
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
from safetensors.numpy import load_file

sys.path.insert(0, os.path.dirname(__file__))
from recall_testlib import run, tiny_llama, Checks  # noqa: E402

MERGEKIT = os.path.join(os.path.dirname(sys.executable), "mergekit-yaml")
check = Checks()


def max_ulp(a, b):
    worst = 0
    for k in a:
        x, y = a[k].astype(np.float32).view(np.int32).astype(np.int64), b[k].astype(np.float32).view(np.int32).astype(np.int64)
        worst = max(worst, int(np.abs(x - y).max()))
    return worst


def main():
    tmp = tempfile.mkdtemp(prefix="recall-params-")
    base = tiny_llama(f"{tmp}/base", seed=0, dtype="float32", layers=2)
    names = ["a", "b", "c"]
    for i, n in enumerate(names):
        tiny_llama(f"{tmp}/{n}", seed=i + 1, dtype="float32", layers=2, base_state=base, noise=0.02)
    weights, density = [0.6, 0.3, 0.5], 0.5
    outs = {}
    # Unset (the method's default) and the opposite of the default, per method: each compared with
    # mergekit given the same parameters.
    for method, flipped in (("ties", False), ("task_arithmetic", True)):
        for normalize in (None, flipped):
            tag = f"{method}-{normalize}"
            # weight per model (models[i].params); density and lambda for all models (params)
            norm = "" if normalize is None else f", normalize: {str(normalize).lower()}"
            params = f"{{density: {density}, lambda: 1.0{norm}}}"
            cfg = f"{tmp}/{tag}.yaml"
            with open(cfg, "w") as f:
                f.write("models:\n" + f"  - {{name: base, path: {tmp}/base}}\n" +
                        "".join(f"  - {{name: {n}, path: {tmp}/{n}, params: {{weight: {w}}}}}\n"
                                for n, w in zip(names, weights)) +
                        f"base: base\nmethod: {method}\nparams: {params}\n"
                        f"output: {{dir: {tmp}/out-{tag}, dtype: float32}}\n")
            run(["merge", "--config", cfg, "--quiet"], np=2)
            ours = load_file(f"{tmp}/out-{tag}/hf/model.safetensors")
            mk_cfg = f"{tmp}/mk-{tag}.yml"
            with open(mk_cfg, "w") as f:
                # recall accumulates float32 outputs in double: mergekit computes in float64 too.
                f.write(f"merge_method: {method}\nbase_model: {tmp}/base\ndtype: float64\nout_dtype: float32\n")
                f.write(f"parameters: {{lambda: 1.0{norm}}}\n")
                f.write("models:\n" + "".join(
                    f"  - model: {tmp}/{n}\n    parameters: {{weight: {w}, density: {density}}}\n"
                    for n, w in zip(names, weights)))
            p = subprocess.run([MERGEKIT, mk_cfg, f"{tmp}/mk-{tag}", "--no-copy-tokenizer", "--allow-crimes"],
                               capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
            if p.returncode != 0:
                print(p.stdout[-2000:], p.stderr[-2000:])
            check(p.returncode == 0, f"mergekit {tag} ran")
            theirs = {}
            for fn in os.listdir(f"{tmp}/mk-{tag}"):
                if fn.endswith(".safetensors"):
                    theirs.update(load_file(f"{tmp}/mk-{tag}/{fn}"))
            u = max_ulp(ours, theirs)
            check(u <= 1, f"{method}, normalize {normalize}: equal to mergekit within 1 ulp (max {u} ulp)")
            outs[tag] = ours
        differs = any(not np.array_equal(outs[f"{method}-None"][k], outs[f"{method}-{flipped}"][k])
                      for k in outs[f"{method}-None"])
        check(differs, f"{method}: normalize {str(flipped).lower()} changes the merged bytes")
    shutil.rmtree(tmp, ignore_errors=True)
    check.finish()


if __name__ == "__main__":
    main()
