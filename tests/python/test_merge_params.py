"""`params.normalize` reaches every method through `recall merge`, and an unset value means the
method's mergekit default: TIES and task arithmetic merged by the job (2 ranks) with normalize
unset and set to the opposite of the method's default equal mergekit 0.1.5 run with the same
parameters (float32 models, so no magnitude ties; within 1 ulp), and the setting changes the bytes.
RECALL's temperature as a gradient over the blocks: each block's weights in report.json are the
softmax of its similarities at the interpolated temperature. Prints each comparison."""
import json
import os
import shutil
import sys
import tempfile

import numpy as np
import yaml
from safetensors.numpy import load_file

sys.path.insert(0, os.path.dirname(__file__))
from recall_testlib import run, tiny_llama, write_jsonl, Checks  # noqa: E402

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
            # mergekit's Python API in this process (a mergekit-yaml process would import torch again).
            from mergekit.config import MergeConfiguration
            from mergekit.merge import MergeOptions, run_merge
            run_merge(MergeConfiguration.model_validate(yaml.safe_load(open(mk_cfg))), f"{tmp}/mk-{tag}",
                      MergeOptions(copy_tokenizer=False, write_model_card=False, quiet=True))
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
    temperature_gradient(tmp)
    shutil.rmtree(tmp, ignore_errors=True)
    check.finish()


def temperature_gradient(tmp):
    """recall.temperature: [0.05, 0.5, 2] over 4 blocks: block l at t = l / 3 of the gradient."""
    base = tiny_llama(f"{tmp}/r0", seed=0, layers=4)
    for i, n in enumerate(["r1", "r2"]):
        tiny_llama(f"{tmp}/{n}", seed=i + 1, layers=4, base_state=base, noise=0.05 * (i + 1))
    rng = np.random.default_rng(0)
    write_jsonl(f"{tmp}/data.jsonl", [{"input_ids": [1] + rng.integers(3, 128, size=10).tolist()} for _ in range(12)])
    cfg = f"{tmp}/recall.yaml"
    with open(cfg, "w") as f:
        f.write("models:\n" + "".join(f"  - {{name: {n}, path: {tmp}/{n}}}\n" for n in ("r0", "r1", "r2")) +
                f"method: recall\ndata: {tmp}/data.jsonl\ntypical: {{clusters: 4}}\n"
                f"recall: {{temperature: [0.05, 0.5, 2]}}\noutput: {{dir: {tmp}/out-recall}}\n")
    run(["merge", "--config", cfg, "--quiet"], np=2)
    blocks = json.load(open(f"{tmp}/out-recall/report.json"))["blocks"]
    worst = 0.0
    for b in blocks:
        s = b["index"] / 3 * 2
        i = min(int(s), 1)
        tau = (1 - (s - i)) * [0.05, 0.5, 2][i] + (s - i) * [0.05, 0.5, 2][i + 1]
        sim = np.array(b["similarity"])
        w = np.exp((sim - sim.max()) / tau)
        worst = max(worst, float(np.abs(w / w.sum() - np.array(b["weights"])).max()))
    check(len(blocks) == 4 and worst < 1e-12, f"recall.temperature gradient: each block's weights are the softmax at "
                                             f"its interpolated temperature (max difference {worst:.1e})")
    spread = [max(b["weights"]) - min(b["weights"]) for b in blocks]
    check(spread[0] > spread[3], f"recall.temperature gradient: the coldest block's weights spread most ({spread})")


if __name__ == "__main__":
    main()
