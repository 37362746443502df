"""Every mergekit method recall runs, against mergekit 0.1.5, through `recall merge` on 2 ranks.

Builds tiny random 8-block Llamas once per dtype (a base and three fine-tunes: base + N(0, 0.02)
noise), in bfloat16 and in float32, then for each case writes one mergekit YAML and runs it
unchanged through mergekit's Python API and through `recall merge --config FILE` (2 ranks,
`--set output.dir=... output.formats=[hf]`), and compares every tensor:
  - deterministic methods: within 1 ulp of the output dtype. mergekit runs with `dtype: float32`
    for bfloat16 outputs and `dtype: float64` for float32 outputs, the widths recall accumulates in.
    Where mergekit's order among equal magnitudes or variances is arbitrary (torch.argsort,
    torch.sort and torch.topk in ties, breadcrumbs and sce), mergekit runs with those made stable,
    which is recall's rule (lowest index first); stock mergekit's TIES differs only at such ties.
  - random methods (dare_*, della*): mergekit draws with torch.bernoulli and recall with its own
    counter-based stream, so the fraction of elements changed, the L1 norm the rescale keeps, the
    rescale factor and (DELLA) the keep rate by magnitude rank are compared with their expectation.
Cases include a gradient `t` with filters, per-model densities, filters on weights, SLERP with the
base listed second, and frankenmerges through `slices` (the block count changes). The example
configs of configs/mergekit/ run unchanged as well. Prints a table of the measured ulps per method
and dtype (docs/ALGORITHM.md has it) and exits non-zero on any failure.
"""
import contextlib
import json
import os
import re
import shutil
import sys
import tempfile

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
import numpy as np
import torch
import yaml
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(__file__))
from recall_testlib import Checks, run, tiny_llama  # noqa: E402

SOURCE = os.environ.get("RECALL_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "../.."))
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
check = Checks()
NAMES = ["base", "instruct", "math", "code"]
LAYERS = 8
WORK = {"bfloat16": "float32", "float32": "float64"}  # mergekit's compute dtype = recall's accumulator
table = []  # (case, dtype, max ulp, elements differing, total, near-zero elements, their size)
# Subsets for quick runs (all by default): RECALL_MERGEKIT_GROUPS=slerp,random RECALL_MERGEKIT_DTYPES=float32
GROUPS = os.environ.get("RECALL_MERGEKIT_GROUPS", "deterministic,slerp,slices,random,examples").split(",")
DTYPES = os.environ.get("RECALL_MERGEKIT_DTYPES", "bfloat16,float32").split(",")


def make_models(root, dtype):
    base = tiny_llama(f"{root}/models/base", seed=0, dtype=dtype, layers=LAYERS)
    for i, n in enumerate(NAMES[1:]):
        tiny_llama(f"{root}/models/{n}", seed=i + 1, dtype=dtype, layers=LAYERS, base_state=base, noise=0.02)


def load_dir(path):
    out = {}
    for fn in sorted(os.listdir(path)):
        if fn.endswith(".safetensors"):
            out.update(load_file(os.path.join(path, fn)))
    return out


@contextlib.contextmanager
def stable_sorting():
    """torch.sort/argsort/topk with a stable order (equal values: lowest index first)."""
    sort, argsort, topk = torch.sort, torch.argsort, torch.topk

    def sort_(t, dim=-1, descending=False, stable=None, **kw):
        return sort(t, dim=dim, descending=descending, stable=True)

    def topk_(t, k, dim=-1, largest=True, sorted=True):
        s = sort(t, dim=dim, descending=largest, stable=True)
        return s.values.narrow(dim, 0, k), s.indices.narrow(dim, 0, k)

    torch.sort = sort_
    torch.argsort = lambda t, dim=-1, descending=False, **kw: sort(t, dim=dim, descending=descending, stable=True).indices
    torch.topk = topk_
    try:
        yield
    finally:
        torch.sort, torch.argsort, torch.topk = sort, argsort, topk


def run_mergekit(text, out, stable=True):
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge
    cfg = MergeConfiguration.model_validate(yaml.safe_load(text))
    opts = MergeOptions(copy_tokenizer=False, write_model_card=False, random_seed=0, quiet=True)
    with stable_sorting() if stable else contextlib.nullcontext():
        run_merge(cfg, out, opts)
    return load_dir(out), json.load(open(f"{out}/config.json"))


def run_recall(yml, out, extra=()):
    run(["merge", "--config", yml, "--set", f"output.dir={out}", "--set", "output.formats=[hf]", "--quiet", *extra],
        np=2)
    return load_dir(f"{out}/hf"), json.load(open(f"{out}/hf/config.json"))


def ordered(t):
    """Float tensor -> integers whose differences count ulps."""
    if t.dtype in (torch.bfloat16, torch.float16):
        i = t.view(torch.int16).to(torch.int64)
        return torch.where(i < 0, -(i & 0x7FFF), i)
    i = t.view(torch.int32).to(torch.int64)
    return torch.where(i < 0, -(i & 0x7FFFFFFF), i)


def compare(label, dtype, ours, theirs, max_ulp=1):
    """Within max_ulp of the output dtype, except where the result cancels below the working
    precision of the tensor (|difference| <= 8 eps_work max|tensor|, eps_work = 2^-24 for float32
    arithmetic, 2^-53 for float64): there both tools hold rounding noise of the same size (torch's
    kernels use FMA, recall's do not), which ulps of a value near zero exaggerate."""
    check(sorted(ours) == sorted(theirs), f"{label} {dtype}: the same {len(theirs)} tensors as mergekit")
    eps = 2.0 ** -24 if dtype == "bfloat16" else 2.0 ** -53
    worst, n_diff, n_noise, noise_units, total = 0, 0, 0, 0.0, 0
    for name in sorted(set(ours) & set(theirs)):
        a, b = ours[name], theirs[name]
        if a.dtype != b.dtype or a.shape != b.shape:
            check(False, f"{label} {dtype}: {name} is {a.dtype}{tuple(a.shape)}, mergekit's {b.dtype}{tuple(b.shape)}")
            continue
        ulp = (ordered(a) - ordered(b)).abs()
        d = (a.double() - b.double()).abs()
        scale = float(b.double().abs().max())
        noise = (ulp > max_ulp) & (d <= 8 * eps * scale)
        if bool(noise.any()):
            noise_units = max(noise_units, float(d[noise].max()) / (eps * scale))
        rest = ulp[~noise]
        worst = max(worst, int(rest.max()) if rest.numel() else 0)
        n_diff, n_noise, total = n_diff + int((ulp > 0).sum()), n_noise + int(noise.sum()), total + a.numel()
    table.append((label, dtype, worst, n_diff, total, n_noise, noise_units))
    check(worst <= max_ulp, f"{label} {dtype}: within {max_ulp} ulp of mergekit (max {worst}, {n_diff}/{total} differ; "
                            f"{n_noise} near-zero results differ by up to {noise_units:.2f} eps_work x max|tensor|)")


def mk_yaml(dtype, method, models=None, slices=None, base="base", parameters=None, extra=""):
    """A mergekit config over models/<name> with mergekit's compute dtype for recall's accumulator."""
    doc = {"merge_method": method, "dtype": WORK[dtype], "out_dtype": dtype}
    if models is not None:
        doc["models"] = [{"model": f"models/{n}", **({"parameters": p} if p else {})} for n, p in models]
    if slices is not None:
        doc["slices"] = [{"sources": [{"model": f"models/{n}", "layer_range": list(r)} for n, r in s]} for s in slices]
    if base:
        doc["base_model"] = f"models/{base}"
    if parameters:
        doc["parameters"] = parameters
    return yaml.safe_dump(doc, sort_keys=False) + extra


def slug(name, dtype):
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{name}-{dtype}")


def case(name, dtype, text, max_ulp=1, stable=True, recall_yaml=None):
    """Runs one config through both tools; returns (recall, mergekit) tensors."""
    path = f"cases/{slug(name, dtype)}.yml"
    with open(path, "w") as f:
        f.write(text)
    theirs, their_cfg = run_mergekit(text, f"mk/{slug(name, dtype)}", stable)
    ours, our_cfg = run_recall(recall_yaml or path, f"rc/{slug(name, dtype)}")
    if max_ulp is not None:
        compare(name, dtype, ours, theirs, max_ulp)
    check(our_cfg["num_hidden_layers"] == their_cfg["num_hidden_layers"],
          f"{name} {dtype}: config.json num_hidden_layers {our_cfg['num_hidden_layers']} (mergekit "
          f"{their_cfg['num_hidden_layers']})")
    return ours, theirs


def deterministic_cases(dtype):
    three = [("instruct", {"weight": 0.5, "density": 0.5}), ("math", {"weight": 0.3, "density": 0.3}),
             ("code", {"weight": 0.7, "density": 0.7})]
    with_base = [("base", None)] + three
    # linear with a per-model filter: mlp tensors of `code` weigh 0.1, the rest 0.7.
    case("linear+filter", dtype, mk_yaml(dtype, "linear", base=None, models=[
        ("instruct", {"weight": 0.5}), ("math", {"weight": 0.3}),
        ("code", {"weight": [{"filter": "mlp", "value": 0.1}, {"value": 0.7}]})]))
    case("task_arithmetic", dtype, mk_yaml(dtype, "task_arithmetic", models=with_base, parameters={"lambda": 0.8}))
    case("ties", dtype, mk_yaml(dtype, "ties", models=with_base))
    case("breadcrumbs", dtype, mk_yaml(dtype, "breadcrumbs", models=[
        ("instruct", {"weight": 0.5, "density": 0.6, "gamma": 0.05}), ("math", {"weight": 0.3, "density": 0.8}),
        ("code", {"weight": 0.7, "density": 0.5, "gamma": 0.1})]))
    case("breadcrumbs_ties", dtype, mk_yaml(dtype, "breadcrumbs_ties", models=three, parameters={"gamma": 0.02}))
    case("model_stock", dtype, mk_yaml(dtype, "model_stock", models=[("instruct", None), ("math", None), ("code", None)]))
    case("model_stock filter_wise", dtype, mk_yaml(dtype, "model_stock", models=[("instruct", None), ("math", None)],
                                                   parameters={"filter_wise": True}))
    case("sce", dtype, mk_yaml(dtype, "sce", models=[("instruct", None), ("math", None), ("code", None)],
                               parameters={"select_topk": 0.5}))
    case("karcher", dtype, mk_yaml(dtype, "karcher", base=None, models=[("instruct", None), ("math", None), ("code", None)]))
    case("nuslerp (base)", dtype, mk_yaml(dtype, "nuslerp", models=[("instruct", {"weight": 0.3}), ("math", {"weight": 0.7})]))
    case("nuslerp (rows)", dtype, mk_yaml(dtype, "nuslerp", base=None, parameters={"nuslerp_flatten": False},
                                          models=[("instruct", {"weight": 0.6}), ("math", {"weight": 0.4})]))
    case("multislerp (base)", dtype, mk_yaml(dtype, "multislerp", models=[
        ("instruct", {"weight": 0.2}), ("math", {"weight": 0.3}), ("code", {"weight": 0.5})]))
    case("multislerp", dtype, mk_yaml(dtype, "multislerp", base=None, models=[
        ("instruct", {"weight": 1}), ("math", {"weight": 2})]))
    case("nearswap", dtype, mk_yaml(dtype, "nearswap", models=[("base", None), ("instruct", None)],
                                    parameters={"t": 0.01}))


def slerp_cases(dtype):
    # A gradient t (per block) with filters, the base listed second: mergekit takes v0 from the base.
    t = [{"filter": "self_attn", "value": [0, 0.5, 0.3, 0.7, 1]}, {"filter": "mlp", "value": [1, 0.5, 0.7, 0.3, 0]},
         {"value": 0.5}]
    second, _ = case("slerp gradient, base second", dtype,
                     mk_yaml(dtype, "slerp", models=[("instruct", None), ("base", None)], parameters={"t": t}))
    first, _ = case("slerp gradient, base first", dtype,
                    mk_yaml(dtype, "slerp", models=[("base", None), ("instruct", None)], parameters={"t": t}))
    check(all(torch.equal(first[k], second[k]) for k in first), f"slerp {dtype}: the base listed first or second "
                                                                 "gives the same bytes")
    # report.json: the gradient resolved per tensor (block 2 of 8: t = 2/7 along [0, .5, .3, .7, 1]).
    rep = json.load(open(f"rc/{slug('slerp gradient, base second', dtype)}/report.json"))["tensor_params"]
    s = 2 / 7 * 4
    want = 0.5 * (1 - (s - 1)) + 0.3 * (s - 1)
    got = rep["model.layers.2.self_attn.q_proj.weight"]["t"][0]
    check(abs(got - want) < 1e-12 and rep["model.layers.2.input_layernorm.weight"]["t"][0] == 0.5,
          f"slerp {dtype}: report.json gives the resolved t per tensor ({got:.6f}, expected {want:.6f}; 0.5 by the "
          "fallback filter)")


def slice_cases(dtype):
    # A frankenmerge (12 blocks from two 8-block models), and slerp over two slices of other models.
    case("passthrough slices", dtype, mk_yaml(dtype, "passthrough", base=None,
                                              slices=[[("instruct", (0, 6))], [("math", (2, 8))]]))
    case("slerp slices", dtype, mk_yaml(dtype, "slerp", slices=[
        [("base", (0, 4)), ("instruct", (0, 4))], [("base", (4, 8)), ("math", (2, 6))]],
        parameters={"t": [0.2, 0.8]}))
    # The same frankenmerge in recall's own config syntax, with a per-source scale.
    text = ("models:\n" + "".join(f"  - {{name: {n}, path: models/{n}}}\n" for n in NAMES) +
            "method: passthrough\nslices:\n"
            "  - sources: [{model: instruct, layer_range: [0, 6], params: {scale: 0.5}}]\n"
            "  - sources: [{model: math, layer_range: [2, 8]}]\n"
            f"output: {{dtype: {dtype}}}\n")
    with open(f"cases/native-{dtype}.yml", "w") as f:
        f.write(text)
    mk = yaml.safe_load(mk_yaml(dtype, "passthrough", base=None, slices=[[("instruct", (0, 6))], [("math", (2, 8))]]))
    mk["slices"][0]["sources"][0]["parameters"] = {"scale": 0.5}
    mk = yaml.safe_dump(mk, sort_keys=False)
    case("passthrough slices, scale (recall syntax)", dtype, mk, recall_yaml=f"cases/native-{dtype}.yml")


def l1(t):
    return float(t.double().abs().sum())


def random_cases(dtype, base):
    """DARE and DELLA: statistics of the drop against their expectation, for both tools."""
    m1 = load_file("models/instruct/model.safetensors")
    for method, sel, density, extra in (("dare_linear", ["instruct"], 0.3, {}), ("dare_ties", NAMES[1:], 0.3, {}),
                                        ("della_linear", ["instruct"], 0.4, {"epsilon": 0.2}),
                                        ("della", NAMES[1:], 0.4, {"epsilon": 0.1})):
        text = mk_yaml(dtype, method, models=[(n, {"weight": 1.0, "density": density, **extra}) for n in sel])
        ours, theirs = case(method, dtype, text, max_ulp=None)
        expect = 1 - (1 - density) ** len(sel)
        for who, out in (("recall", ours), ("mergekit", theirs)):
            changed = total = 0
            scales, l1_err, hi_keep, lo_keep = [], 0.0, [], []
            for name, t in out.items():
                if t.numel() < 4096:
                    continue
                d_out = t.double() - base[name].double()
                changed += int((d_out != 0).sum())
                total += t.numel()
                if len(sel) == 1:
                    d_in = m1[name].double() - base[name].double()
                    kept = (d_out != 0) & (d_in != 0)
                    scales.append(float((d_out[kept] / d_in[kept]).median()))
                    l1_err = max(l1_err, abs(l1(d_out) / l1(d_in) - 1))
                    # DELLA keeps large magnitudes more often: the upper half of each row's ranks
                    # at density + epsilon / 2, the lower half at density - epsilon / 2.
                    mag = d_in.abs().reshape(d_in.shape[0], -1)
                    upper = mag >= mag.median(dim=1, keepdim=True).values
                    k = kept.reshape(mag.shape)
                    hi_keep.append(float(k[upper].double().mean()))
                    lo_keep.append(float(k[~upper].double().mean()))
            frac = changed / total
            sd = (expect * (1 - expect) / total) ** 0.5
            print(f"     {method} {dtype} {who}: changed fraction {frac:.4f} (expected {expect:.4f} +- {sd:.4f})"
                  + (f", median rescale {np.median(scales):.3f} (1/density {1 / density:.3f}), L1 kept to "
                     f"{l1_err:.1e}" if scales else ""))
            check(abs(frac - expect) < 6 * sd + (0.01 if dtype == "bfloat16" else 0),
                  f"{method} {dtype} {who}: changed fraction within 6 sd of {expect:.4f}")
            if not scales:
                continue
            check(l1_err < (2e-2 if dtype == "bfloat16" else 1e-5), f"{method} {dtype} {who}: L1 norm of the delta kept")
            if method == "dare_linear":
                check(abs(np.median(scales) - 1 / density) < 0.05 / density, f"{method} {dtype} {who}: rescale ~ 1/density")
            else:
                eps = extra["epsilon"]
                hi, lo = float(np.mean(hi_keep)), float(np.mean(lo_keep))
                print(f"     {method} {dtype} {who}: keep rate {hi:.3f} above the row median magnitude, {lo:.3f} "
                      f"below (expected about {density + eps / 2:.3f} / {density - eps / 2:.3f})")
                check(abs(hi - (density + eps / 2)) < 0.02 and abs(lo - (density - eps / 2)) < 0.02,
                      f"{method} {dtype} {who}: keep rate ranked by magnitude")


def stock_ties(dtype, base):
    """Stock mergekit's TIES (unstable argsort) differs from recall only at magnitude ties."""
    text = mk_yaml(dtype, "ties", models=[("instruct", {"weight": 0.5, "density": 0.5}),
                                          ("math", {"weight": 0.3, "density": 0.3})])
    stock, _ = run_mergekit(text, f"mk/ties-stock-{dtype}", stable=False)
    with open(f"cases/ties2-{dtype}.yml", "w") as f:
        f.write(text)
    ours, _ = run_recall(f"cases/ties2-{dtype}.yml", f"rc/ties2-{dtype}")
    wdt = torch.float32 if dtype == "bfloat16" else torch.float64
    differ = outside = 0
    for name, a in ours.items():
        diff = ordered(a) != ordered(stock[name])
        tie = torch.zeros(a.shape, dtype=torch.bool)
        for m, dd in (("instruct", 0.5), ("math", 0.3)):
            delta = (load_file(f"models/{m}/model.safetensors")[name].to(wdt) - base[name].to(wdt)).abs()
            k = max(1, int(dd * delta.numel()))
            thr = delta.flatten().float().sort(descending=True).values[k - 1]
            if int((delta.float() >= thr).sum()) > k:
                tie |= delta.float() == thr
        differ += int(diff.sum())
        outside += int((diff & ~tie).sum())
    print(f"     ties {dtype} vs stock mergekit: {differ} elements differ, {outside} of them away from a magnitude tie")
    check(outside == 0, f"ties {dtype}: stock mergekit differs only at magnitude ties")


def example_configs():
    """configs/mergekit/*.yml, unchanged (bfloat16 models)."""
    folder = os.path.join(SOURCE, "configs", "mergekit")
    files = sorted(f for f in os.listdir(folder) if f.endswith(".yml"))
    check(len(files) >= 5, f"{len(files)} example mergekit configs in configs/mergekit")
    for f in files:
        path = os.path.join(folder, f)
        text = open(path).read()
        ours, theirs = case(f"configs/mergekit/{f}", "bfloat16", text, max_ulp=None, recall_yaml=path)
        if "dare_ties" in text:  # random: changed fraction as for DARE above
            base = load_file("models/base/model.safetensors")
            frac = sum(int((ours[k].double() != base[k].double()).sum()) for k in ours) / sum(t.numel() for t in ours.values())
            frac_mk = sum(int((theirs[k].double() != base[k].double()).sum()) for k in theirs) / sum(t.numel() for t in theirs.values())
            print(f"     {f}: changed fraction {frac:.4f} (mergekit {frac_mk:.4f})")
            check(abs(frac - frac_mk) < 0.02, f"{f}: changed fraction as mergekit's")
        else:
            compare(f"configs/mergekit/{f}", "bfloat16", ours, theirs)


def main():
    tmp = tempfile.mkdtemp(prefix="recall-mergekit-")
    home = os.getcwd()
    try:
        for dtype in DTYPES:
            root = f"{tmp}/{dtype}"
            os.makedirs(f"{root}/cases")
            os.chdir(root)
            from mergekit.io.tasks import LoaderCache
            LoaderCache.loaders.clear()  # mergekit caches models by (relative) path across merges
            make_models(root, dtype)
            base = load_file("models/base/model.safetensors")
            if "deterministic" in GROUPS:
                deterministic_cases(dtype)
            if "slerp" in GROUPS:
                slerp_cases(dtype)
            if "slices" in GROUPS:
                slice_cases(dtype)
            if "random" in GROUPS:
                random_cases(dtype, base)
            if dtype == "bfloat16" and "examples" in GROUPS:
                stock_ties(dtype, base)
                example_configs()
            os.chdir(home)
    finally:
        os.chdir(home)
        shutil.rmtree(tmp, ignore_errors=True)
    print("\n| case | bf16 output | f32 output |\n|---|---|---|")
    for c in dict.fromkeys(c for c, *_ in table):
        cells = []
        for dt in ("bfloat16", "float32"):
            r = [x for x in table if x[0] == c and x[1] == dt]
            if not r:
                cells.append("-")
                continue
            _, _, worst, n_diff, total, n_noise, units = r[0]
            cell = "identical" if n_diff == 0 else f"max {worst} ulp, {n_diff - n_noise} of {total} differ"
            if n_noise:
                cell += f"; {n_noise} near-zero (<= {units:.2f} eps_work x max)"
            cells.append(cell)
        print(f"| {c} | {cells[0]} | {cells[1]} |")
    check.finish()


if __name__ == "__main__":
    main()
