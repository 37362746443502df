"""Every RECALL knob through the job (issue 18): `recall merge` on tiny random Llamas, once per knob
setting, against a recomputation here that takes nothing from the output under test.

The reference side: every model's block outputs from transformers (forward hooks, float32, one
unpadded sample at a time) averaged over the sample's tokens; the typical samples chosen here by
recall's documented k-means++ (recall_testlib.kmeans_typical: mt19937_64, Lloyd, reseeding,
nearest untaken sample) on the reference's last block; then in numpy the similarities (RBF with the
median heuristic, a fixed gamma or a bandwidth factor; linear CKA; RBF CKA with a threshold), the
softmax weights (temperature; per block or global), the non-block weights (uniform, nearest_block,
reference) and the merged tensors sum_m w_m P_m (float32, rounded to bf16). The job's side:
/recall/similarity, /recall/weights and /recall/typical_samples of merged.h5, report.json, and the
tensors of the HF export.

Each knob's run differs from the defaults in that knob alone, and its expected values differ from
the defaults' by far more than the tolerances (printed), so a job that ignored the knob fails."""
import json
import os
import shutil
import sys
import tempfile

import h5py
import numpy as np
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(__file__))
from recall_testlib import (Checks, block_means_hf, check_weighted_bf16, cka, gram_rbf, kmeans_typical,  # noqa: E402
                            median_sq, rbf_similarity, run, softmax, tiny_llama, write_jsonl)

NAMES = ["a", "b", "c"]  # c is the reference (the newest fine-tune)
REF = 2
K, SEED = 8, 5
SIM_TOL = 2e-6     # |similarity - reference|: float32 forward passes of two engines
WEIGHT_TOL = 1e-5  # |weight - reference| (the largest amplification is 1/tau = 20)

check = Checks()


def expected_similarity(reps, kind="rbf", factor=1.0, gamma=None, threshold=None, pairwise=False):
    """reps [M, L, K, H] -> [L, M] similarities to the reference, computed here (pairwise: each
    model's mean RBF similarity to every other model, the median bandwidth over all rows)."""
    M, L = reps.shape[0], reps.shape[1]
    out = np.zeros((L, M))
    for l in range(L):
        r = reps[:, l]
        if pairwise:
            sigma2 = factor * median_sq(r.reshape(-1, r.shape[-1]))
            S = np.stack([rbf_similarity(r, j, sigma2=sigma2) for j in range(M)])  # S[j][i] = s(i, j)
            out[l] = [(S[:, i].sum() - S[i, i]) / (M - 1) for i in range(M)]
        elif kind == "rbf":
            sigma2 = factor * median_sq(r.reshape(-1, r.shape[-1]))
            out[l] = rbf_similarity(r, REF, sigma2=None if gamma else sigma2, gamma=gamma)
        elif kind == "linear_cka":
            out[l] = [cka(r[m] @ r[m].T, r[REF] @ r[REF].T) for m in range(M)]
        else:
            out[l] = [cka(gram_rbf(r[m], threshold), gram_rbf(r[REF], threshold)) for m in range(M)]
    return out


def expected_weights(sim, tau=1.0, granularity="block"):
    if granularity == "global":
        return np.tile(softmax(sim.mean(0), tau), (sim.shape[0], 1))
    return np.stack([softmax(s, tau) for s in sim])


def non_block_expected(policy, W):
    M = W.shape[1]
    if policy == "uniform":
        return {"embed": np.full(M, 1.0 / M), "last": np.full(M, 1.0 / M)}
    if policy == "nearest_block":
        return {"embed": W[0], "last": W[-1]}
    return {"embed": np.eye(M)[REF], "last": np.eye(M)[REF]}


class Fixture:
    def reps_for(self, typical_pooling="mean_skip_first", kernel_pooling="mean_skip_first"):
        """(typical samples, reps [M, L, K, H]) under the two pooling choices, computed here."""
        def means(pooling):
            if pooling not in self.means:
                self.means[pooling] = np.stack([block_means_hf(f"{self.tmp}/{n}", self.samples, pooling)
                                                for n in NAMES])
            return self.means[pooling]
        typical = kmeans_typical(means(typical_pooling)[REF, -1], K, SEED)
        return typical, means(kernel_pooling)[:, :, typical, :]

    def __init__(self, tmp):
        self.tmp = tmp
        base = tiny_llama(f"{tmp}/base", seed=0)
        for i, (n, noise) in enumerate(zip(NAMES, (0.03, 0.06, 0.015))):
            tiny_llama(f"{tmp}/{n}", seed=10 + i, base_state=base, noise=noise)
        rng = np.random.default_rng(1)
        self.samples = [[1] + rng.integers(3, 128, size=int(rng.integers(2, 16))).tolist() for _ in range(24)]
        write_jsonl(f"{tmp}/data.jsonl", [{"input_ids": s} for s in self.samples])
        self.inputs = [load_file(f"{tmp}/{n}/model.safetensors") for n in NAMES]
        self.means = {}
        # typical.hidden_state -1 = the last block's output of the reference model
        self.typical, self.reps = self.reps_for()  # [M, L, K, H]
        self.L = self.reps.shape[1]

    def merge(self, tag, sets=(), np_=1):
        out = f"{self.tmp}/{tag}"
        cfg = f"{self.tmp}/{tag}.yaml"
        lines = ["models:"] + [f"  - {{name: {n}, path: {self.tmp}/{n}}}" for n in NAMES]
        lines += [f"reference: {NAMES[REF]}", "method: recall", f"data: {self.tmp}/data.jsonl",
                  f"typical: {{clusters: {K}, seed: {SEED}}}", f"output: {{dir: {out}, dtype: bfloat16}}"]
        open(cfg, "w").write("\n".join(lines) + "\n")
        args = ["merge", "--config", cfg, "--quiet"]
        for s in sets:
            args += ["--set", s]
        run(args, np=np_)
        return out

    def verify(self, what, out, sim, W, non_block, typical=None):
        """The job's output in `out` against the expected similarities [L, M], weights [L, M],
        non-block weights and typical samples (default: the mean-pooled ones), all computed here."""
        typical = self.typical if typical is None else typical
        with h5py.File(f"{out}/merged.h5", "r") as f:
            got_sim, got_w = f["recall/similarity"][()], f["recall/weights"][()]
            got_typical = list(f["recall/typical_samples"][()])
        report = json.load(open(f"{out}/report.json"))
        got_typical = [int(i) for i in got_typical]
        check(got_typical == typical and report["typical_samples"] == typical,
              f"{what}: typical samples {got_typical} = recomputed k-means++ {typical}")
        ds = float(np.abs(got_sim - sim).max())
        check(ds <= SIM_TOL, f"{what}: similarities = numpy's (max |diff| {ds:.2e} <= {SIM_TOL})")
        dw = float(np.abs(got_w - W).max())
        check(dw <= WEIGHT_TOL, f"{what}: weights = numpy's (max |diff| {dw:.2e} <= {WEIGHT_TOL}); "
              f"block 0 {np.round(W[0], 4)}, last {np.round(W[-1], 4)}")
        check(np.array_equal(np.array([b["weights"] for b in report["blocks"]]), got_w),
              f"{what}: report.json weights = merged.h5 /recall/weights")
        merged = load_file(f"{out}/hf/model.safetensors")
        beyond, differ, worst, total = 0, 0, 0, 0
        for name, t in merged.items():
            if ".layers." in name:
                w = W[int(name.split(".")[2])]
            else:
                w = non_block["embed"] if "embed_tokens" in name else non_block["last"]
            b, d, u = check_weighted_bf16(t, [inp[name] for inp in self.inputs], w, WEIGHT_TOL)
            beyond, differ, worst, total = beyond + b, differ + d, max(worst, u), total + t.numel()
        # Weights equal to ~1e-8 may round an fp32 sum to the other side of a bf16 tie, rarely.
        check(beyond == 0 and differ <= total * 1e-3,
              f"{what}: merged tensors = bf16(sum_m w_m P_m) with numpy's weights ({differ} of {total} "
              f"elements differ, by at most {worst} ulp; {beyond} beyond 1 ulp + {WEIGHT_TOL} sum|P|)")


def main():
    tmp = tempfile.mkdtemp(prefix="recall-knobs-")
    fx = Fixture(tmp)
    R, L = fx.reps, fx.L
    print(f"typical samples (recomputed): {fx.typical}")

    base_sim = expected_similarity(R)
    base_w = expected_weights(base_sim)

    def differs(what, W):  # the knob's expected weights are far from the defaults'
        d = float(np.abs(W - base_w).max())
        check(d > 100 * WEIGHT_TOL, f"{what}: expected weights differ from the defaults' by {d:.3g}")

    # defaults: rbf, median heuristic, factor 1, tau 1, per block, non_block uniform
    out = fx.merge("default")
    fx.verify("defaults (rbf, uniform)", out, base_sim, base_w, non_block_expected("uniform", base_w))

    # kernel.gamma: exp(-gamma d^2) in every block; gamma chosen from block 0's median (2 / median)
    gamma = float(f"{2.0 / median_sq(R[:, 0].reshape(-1, R.shape[-1])):.3g}")
    sim = expected_similarity(R, gamma=gamma)
    W = expected_weights(sim)
    differs(f"kernel.gamma={gamma}", W)
    fx.verify(f"kernel.gamma={gamma}", fx.merge("gamma", [f"kernel.gamma={gamma}"]), sim, W,
              non_block_expected("uniform", W))

    # kernel.bandwidth_factor
    sim = expected_similarity(R, factor=0.25)
    W = expected_weights(sim)
    differs("kernel.bandwidth_factor=0.25", W)
    fx.verify("kernel.bandwidth_factor=0.25", fx.merge("factor", ["kernel.bandwidth_factor=0.25"]), sim, W,
              non_block_expected("uniform", W))

    # kernel.kind: linear_cka (on 2 ranks, 2 stages)
    sim = expected_similarity(R, kind="linear_cka")
    W = expected_weights(sim)
    differs("kernel.kind=linear_cka", W)
    fx.verify("kernel.kind=linear_cka", fx.merge("lcka", ["kernel.kind=linear_cka", "parallel.stages=2"], np_=2),
              sim, W, non_block_expected("uniform", W))

    # kernel.kind: rbf_cka with kernel.cka_threshold 2 (the threshold also against 0.5: its default)
    sim = expected_similarity(R, kind="rbf_cka", threshold=2.0)
    W = expected_weights(sim)
    differs("kernel.kind=rbf_cka", W)
    sim_half = expected_similarity(R, kind="rbf_cka", threshold=0.5)
    d = float(np.abs(sim - sim_half).max())
    check(d > 100 * SIM_TOL, f"kernel.cka_threshold: thresholds 2 and 0.5 give similarities {d:.3g} apart")
    fx.verify("kernel.kind=rbf_cka, cka_threshold=2",
              fx.merge("rcka", ["kernel.kind=rbf_cka", "kernel.cka_threshold=2"]), sim, W,
              non_block_expected("uniform", W))

    # recall.non_block: nearest_block and reference (uniform is the defaults' run)
    for policy in ("nearest_block", "reference"):
        nb = non_block_expected(policy, base_w)
        uni = non_block_expected("uniform", base_w)
        d = max(float(np.abs(nb[k] - uni[k]).max()) for k in nb)
        check(d > 100 * WEIGHT_TOL, f"recall.non_block={policy}: expected weights differ from uniform by {d:.3g}")
        fx.verify(f"recall.non_block={policy}", fx.merge(policy, [f"recall.non_block={policy}"]), base_sim, base_w, nb)

    # recall.granularity: global
    W = expected_weights(base_sim, granularity="global")
    differs("recall.granularity=global", W)
    fx.verify("recall.granularity=global", fx.merge("global", ["recall.granularity=global"]), base_sim, W,
              non_block_expected("uniform", W))

    # recall.temperature: 0.05 (near argmax) and 5 (near uniform), the first on 2 ranks
    for tau, np_ in ((0.05, 2), (5.0, 1)):
        W = expected_weights(base_sim, tau=tau)
        differs(f"recall.temperature={tau}", W)
        fx.verify(f"recall.temperature={tau}", fx.merge(f"tau{tau}", [f"recall.temperature={tau}"], np_=np_),
                  base_sim, W, non_block_expected("uniform", W))

    # typical.pooling: the clustering on the last token's states (representations stay the default's)
    typical, reps = fx.reps_for(typical_pooling="last")
    check(typical != fx.typical, f"typical.pooling=last: the recomputed typical samples {typical} differ from "
          f"the default's {fx.typical}")
    sim = expected_similarity(reps)
    W = expected_weights(sim)
    fx.verify("typical.pooling=last", fx.merge("tpool", ["typical.pooling=last"]), sim, W,
              non_block_expected("uniform", W), typical=typical)

    # kernel.pooling: representations with the BOS token (the typical samples stay the default's)
    _, reps = fx.reps_for(kernel_pooling="mean")
    sim = expected_similarity(reps)
    W = expected_weights(sim)
    differs("kernel.pooling=mean", W)
    fx.verify("kernel.pooling=mean", fx.merge("kpool", ["kernel.pooling=mean"], np_=2), sim, W,
              non_block_expected("uniform", W))

    # recall.similarity: pairwise_mean
    sim = expected_similarity(R, pairwise=True)
    W = expected_weights(sim)
    differs("recall.similarity=pairwise_mean", W)
    fx.verify("recall.similarity=pairwise_mean", fx.merge("pairwise", ["recall.similarity=pairwise_mean"]), sim, W,
              non_block_expected("uniform", W))

    shutil.rmtree(tmp)
    check.finish()


if __name__ == "__main__":
    main()
