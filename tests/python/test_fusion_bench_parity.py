"""recall's RegMean and Fisher merges against fusion-bench 0.2.33 from PyPI, on the same inputs.

fusion-bench computes its statistics only for CLIP and GPT-2 task pools, so the statistics here are
the independent ones of test_data_aware_merge.py (forward pre-hooks for the Gram matrices of each
block's linear inputs, per-sample gradients for the diagonal empirical Fisher, on the same tiny
float32 Llamas and calibration samples recall reads); fusion-bench's own merge functions
(`merging_with_regmean_weights`, `merging_with_fisher_weights`: reduce the off-diagonals, sum,
invert, multiply; normalize by each model's Fisher norm, add the minimal weight, average) turn them
into merged parameters. `recall merge` on 2 ranks must equal them within 1e-5 relative, for RegMean
at alpha 0.9 and 0.5 and Fisher with and without normalization."""
import os
import shutil
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(__file__))
from recall_testlib import Checks, run  # noqa: E402
from test_data_aware_merge import (LINEAR, fisher_config, fisher_of, linear_statistics,  # noqa: E402
                                   make_inputs, merged, rel_error, state, write_config)

from fusion_bench.method.fisher_merging.fisher_merging import merging_with_fisher_weights  # noqa: E402
from fusion_bench.method.regmean.regmean import merging_with_regmean_weights  # noqa: E402

check = Checks()
TOL = 1e-5


def params_by_name(paths):
    states = [state(p) for p in paths]
    return {k: [torch.from_numpy(s[k]) for s in states] for k in states[0]}


def fusion_bench_regmean(paths, data, alpha):
    """fusion-bench's merge from per-model {module name: Gram} dicts (one Gram per linear module, as its
    hooks give: q, k and v share the attention input's Gram, gate and up the MLP input's)."""
    grams = []
    for p in paths:
        stats = linear_statistics(p, data)
        g = {}
        for (layer, group), (gram, _, _) in stats.items():
            for module, gr in LINEAR.items():
                if gr == group:
                    g[f"model.layers.{layer}.{module}"] = torch.from_numpy(gram)
        grams.append(g)
    out = merging_with_regmean_weights(params_by_name(paths), grams, reduce_non_diagonal_ratio=alpha)
    return {k: v.numpy() for k, v in out.items()}


def fusion_bench_fisher(paths, data, weights, normalize):
    fishers = [{k: torch.from_numpy(v) for k, v in fisher_of(p, data).items()} for p in paths]
    out = merging_with_fisher_weights(params_by_name(paths), fishers, torch.tensor(weights, dtype=torch.float64),
                                      normalize_fisher_weight=normalize, minimal_fisher_weight=1e-6)
    return {k: v.numpy() for k, v in out.items()}


def main():
    tmp = tempfile.mkdtemp(prefix="recall-fusion-bench-")
    try:
        data = make_inputs(tmp)
        models = ["base", "a", "b"]
        paths = [f"{tmp}/{n}" for n in models]

        for alpha in (0.9, 0.5):
            ref = fusion_bench_regmean(paths, data, alpha)
            out = write_config(f"{tmp}/regmean-{int(alpha * 10)}.yaml", tmp, models, "regmean",
                               f"params: {{alpha: {alpha}}}\n")
            run(["merge", "--config", f"{tmp}/regmean-{int(alpha * 10)}.yaml", "--quiet"], np=2)
            err, where = rel_error(merged(out), ref)
            check(err <= TOL, f"regmean (alpha {alpha}) on 2 ranks equals fusion-bench's merging_with_regmean_weights: "
                              f"max relative error {err:.2e} ({where})")

        weights = [1.0, 2.0, 0.5]
        for normalize in (True, False):
            ref = fusion_bench_fisher(paths, data, weights, normalize)
            tag = f"fisher-{str(normalize).lower()}"
            cfg = fisher_config(tmp, tag, models, weights, f"params: {{normalize: {str(normalize).lower()}}}\n")
            run(["merge", "--config", cfg, "--quiet"], np=2)
            err, where = rel_error(merged(f"{tmp}/out-{tag}"), ref)
            check(err <= TOL, f"fisher (normalize {normalize}) on 2 ranks equals fusion-bench's "
                              f"merging_with_fisher_weights: max relative error {err:.2e} ({where})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    check.finish()


if __name__ == "__main__":
    main()
