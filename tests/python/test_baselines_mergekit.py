"""Baseline merges: recall's kernels (through tests/helpers/merge_tool) against mergekit 0.1.5.

Builds a tiny random llama base and three fine-tunes (base + small noise on every tensor) in
bfloat16 and in float32, merges them with mergekit's Python API (CPU, offline, no tokenizer) and
with merge_tool, and compares every tensor:
  linear, task_arithmetic, ties, slerp: within 1 ulp of the output dtype. mergekit computes in
    float32 for bfloat16 outputs and in float64 for float32 outputs (config `dtype`), the same
    widths recall accumulates in.
  dare_linear, dare_ties (mergekit draws with torch.bernoulli, recall with its own counter-based
    stream): the fraction of elements changed vs its expectation, the L1 norm the rescale keeps,
    the rescale factor, and the deterministic parts (elements all models drop stay the base).
Prints the max abs/rel/ulp differences per method and dtype; exits non-zero on any failure.
"""
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
import numpy as np
import torch
import transformers
from safetensors.torch import load_file

BUILD = os.environ.get("RECALL_BUILD_DIR", "build")
MERGE_TOOL = os.path.join(BUILD, "bin", "merge_tool")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
transformers.utils.logging.disable_progress_bar()

failures = []


def check(cond, msg):
    print(("ok   " if cond else "FAIL ") + msg)
    if not cond:
        failures.append(msg)


def make_models(root, dtype_name):
    dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32}[dtype_name]
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, vocab_size=128,
                                   max_position_embeddings=64, initializer_range=0.05,
                                   tie_word_embeddings=False)
    torch.manual_seed(0)
    base = transformers.LlamaForCausalLM(cfg).to(torch.float32)
    base_state = {k: v.clone() for k, v in base.state_dict().items()}
    paths = {}
    for i, name in enumerate(["base", "m1", "m2", "m3"]):
        g = torch.Generator().manual_seed(100 + i)
        state = {}
        for k, v in base_state.items():
            noise = torch.randn(v.shape, generator=g) * (0.02 if i else 0.0)
            state[k] = (v + noise).to(dtype)
        model = transformers.LlamaForCausalLM(cfg).to(dtype)
        model.load_state_dict(state)
        path = os.path.join(root, f"{name}-{dtype_name}")
        model.save_pretrained(path, safe_serialization=True)
        paths[name] = path
    return paths


def run_mergekit(config, out):
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge
    run_merge(MergeConfiguration.model_validate(config), out,
              MergeOptions(copy_tokenizer=False, write_model_card=False, random_seed=0, quiet=True))
    return load_file(os.path.join(out, "model.safetensors"))


def run_tool(args, out):
    cmd = [MERGE_TOOL] + args + ["--out", out]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stdout}{r.stderr}")
    return load_file(os.path.join(out, "model.safetensors"))


def ordered(t):
    """Float tensor -> integers whose differences count ulps."""
    if t.dtype in (torch.bfloat16, torch.float16):
        i = t.view(torch.int16).to(torch.int64)
        return torch.where(i < 0, -(i & 0x7FFF), i)
    i = t.view(torch.int32).to(torch.int64)
    return torch.where(i < 0, -(i & 0x7FFFFFFF), i)


def compare_exact(label, ours, theirs, max_ulp=1):
    names = sorted(ours)
    check(set(names) <= set(theirs), f"{label}: mergekit output has all {len(names)} tensors")
    worst_ulp, worst_abs, worst_rel, n_diff, n_total = 0, 0.0, 0.0, 0, 0
    for name in names:
        a, b = ours[name], theirs[name]
        if a.dtype != b.dtype or a.shape != b.shape:
            check(False, f"{label}: {name} dtype/shape {a.dtype}{tuple(a.shape)} vs {b.dtype}{tuple(b.shape)}")
            continue
        ulp = (ordered(a) - ordered(b)).abs()
        d = (a.double() - b.double()).abs()
        worst_ulp = max(worst_ulp, int(ulp.max()))
        worst_abs = max(worst_abs, float(d.max()))
        worst_rel = max(worst_rel, float((d / b.double().abs().clamp_min(1e-30)).max()))
        n_diff += int((ulp > 0).sum())
        n_total += a.numel()
    print(f"     {label}: max abs {worst_abs:.3e}, max rel {worst_rel:.3e}, max ulp {worst_ulp}, "
          f"{n_diff}/{n_total} elements differ")
    check(worst_ulp <= max_ulp, f"{label}: within {max_ulp} ulp of mergekit (max {worst_ulp})")


def main():
    if not os.path.exists(MERGE_TOOL):
        print(f"merge_tool not found at {MERGE_TOOL}; build the target merge_tool")
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        for dtype_name, work in (("bfloat16", "float32"), ("float32", "float64")):
            p = make_models(tmp, dtype_name)
            base = load_file(os.path.join(p["base"], "model.safetensors"))
            m1 = load_file(os.path.join(p["m1"], "model.safetensors"))
            ms = ["m1", "m2", "m3"]
            w = [0.5, 0.3, 0.7]
            common = {"dtype": work, "out_dtype": dtype_name}

            def mk(name, cfg):
                return run_mergekit({**common, **cfg}, os.path.join(tmp, f"mk-{name}-{dtype_name}"))

            def ours(name, args):
                return run_tool(args + ["--dtype", dtype_name], os.path.join(tmp, f"rc-{name}-{dtype_name}"))

            models_arg = ["--models"] + [p[m] for m in ms]
            # linear (mergekit normalizes by the weight sum by default).
            compare_exact(f"linear {dtype_name}",
                          ours("linear", ["linear"] + models_arg + ["--weights"] + [str(x) for x in w]),
                          mk("linear", {"merge_method": "linear",
                                        "models": [{"model": p[m], "parameters": {"weight": x}} for m, x in zip(ms, w)]}))
            # task arithmetic with lambda.
            compare_exact(f"task_arithmetic {dtype_name}",
                          ours("ta", ["task_arithmetic", "--base", p["base"]] + models_arg +
                               ["--weights"] + [str(x) for x in w] + ["--lambda", "0.8"]),
                          mk("ta", {"merge_method": "task_arithmetic", "base_model": p["base"],
                                    "parameters": {"lambda": 0.8},
                                    "models": [{"model": p[m], "parameters": {"weight": x}} for m, x in zip(ms, w)]}))
            # TIES: trim to density, elect sign, disjoint weighted mean (normalize by default).
            # mergekit ranks magnitudes with torch.argsort, whose order among equal magnitudes is
            # arbitrary (bf16 deltas tie often); recall keeps the lowest indices. So: compare with
            # mergekit run with a stable argsort (same tie rule) within 1 ulp, and check that stock
            # mergekit differs only where some model has a magnitude tie at its top-k threshold.
            dens = [0.5, 0.3, 0.7]
            ties_cfg = {"merge_method": "ties", "base_model": p["base"],
                        "models": [{"model": p[m], "parameters": {"weight": x, "density": d}}
                                   for m, x, d in zip(ms, w, dens)]}
            rc_ties = ours("ties", ["ties", "--base", p["base"]] + models_arg + ["--weights"] +
                           [str(x) for x in w] + ["--density"] + [str(x) for x in dens])
            stock = mk("ties", ties_cfg)
            argsort = torch.argsort
            torch.argsort = lambda t, dim=-1, descending=False, **kw: torch.sort(
                t, dim=dim, descending=descending, stable=True).indices
            try:
                stable = mk("ties-stable", ties_cfg)
            finally:
                torch.argsort = argsort
            compare_exact(f"ties {dtype_name} (mergekit with stable argsort)", rc_ties, stable)
            wdt = torch.float32 if work == "float32" else torch.float64
            outside, differ = 0, 0
            for name, a in rc_ties.items():
                b = stock[name]
                diff = ordered(a) != ordered(b)
                tie = torch.zeros(a.shape, dtype=torch.bool)
                for m, dd in zip(ms, dens):
                    delta = (load_file(os.path.join(p[m], "model.safetensors"))[name].to(wdt) -
                             base[name].to(wdt)).abs()
                    k = max(1, int(dd * delta.numel()))
                    thr = delta.flatten().sort(descending=True).values[k - 1]
                    if int((delta >= thr).sum()) > k:
                        tie |= delta == thr
                differ += int(diff.sum())
                outside += int((diff & ~tie).sum())
            print(f"     ties {dtype_name} vs stock mergekit: {differ} elements differ, {outside} of them "
                  f"away from a magnitude tie")
            check(outside == 0, f"ties {dtype_name}: stock mergekit differs only at magnitude ties")
            # SLERP of the base and m1.
            compare_exact(f"slerp {dtype_name}",
                          ours("slerp", ["slerp", "--base", p["base"], "--models", p["m1"], "--t", "0.3"]),
                          mk("slerp", {"merge_method": "slerp", "base_model": p["base"], "parameters": {"t": 0.3},
                                       "models": [{"model": p["base"]}, {"model": p["m1"]}]}))

            # DARE: statistics only (different RNGs).
            for method, n_models in (("dare_linear", 1), ("dare_ties", 3)):
                density = 0.3
                sel = ms[:n_models]
                res = {
                    "recall": ours(method, [method, "--base", p["base"], "--models"] + [p[m] for m in sel] +
                                   ["--weights", "1", "--density", str(density), "--seed", "7"]),
                    "mergekit": mk(method, {"merge_method": method, "base_model": p["base"],
                                            "models": [{"model": p[m], "parameters": {"weight": 1.0, "density": density}}
                                                       for m in sel]}),
                }
                expect = 1 - (1 - density) ** n_models
                for who, out in res.items():
                    changed = total = 0
                    scales, l1_err = [], 0.0
                    for name, t in out.items():
                        if name not in base or t.numel() < 4096:
                            continue
                        d_out = t.double() - base[name].double()
                        changed += int((d_out != 0).sum())
                        total += t.numel()
                        if n_models == 1:
                            d_in = m1[name].double() - base[name].double()
                            kept = (d_out != 0) & (d_in != 0)
                            scales.append(float((d_out[kept] / d_in[kept]).median()))
                            l1_err = max(l1_err, abs(float(d_out.abs().sum() / d_in.abs().sum()) - 1))
                    frac = changed / total
                    sd = (expect * (1 - expect) / total) ** 0.5
                    print(f"     {method} {dtype_name} {who}: changed fraction {frac:.4f} "
                          f"(expected {expect:.4f} +- {sd:.4f})" +
                          (f", median rescale {np.median(scales):.4f} (1/density {1 / density:.4f}), "
                           f"max L1 ratio error {l1_err:.2e}" if scales else ""))
                    check(abs(frac - expect) < 6 * sd + (0.01 if dtype_name == "bfloat16" else 0),
                          f"{method} {dtype_name} {who}: changed fraction within 6 sd")
                    if scales:
                        check(abs(np.median(scales) - 1 / density) < 0.05 / density,
                              f"{method} {dtype_name} {who}: rescale ~ 1/density")
                        check(l1_err < (2e-2 if dtype_name == "bfloat16" else 1e-5),
                              f"{method} {dtype_name} {who}: L1 norm of the delta kept")
    print(f"{len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
