"""Data-aware merges through `recall merge`, each against an independent reference computed here
with transformers and numpy on the same tiny float32 models and calibration samples:

- RegMean: the Gram matrices of every linear layer's inputs (forward pre-hooks on q/o/gate/down
  projections, one sample at a time, float64), off-diagonals scaled by alpha, solved in float64;
  the other tensors averaged. Merged on 1, 2 and 4 ranks: equal to the reference within 1e-5
  relative and bitwise equal to each other; alpha = 0.5 changes the result as the reference does;
  `parallel.stream_samples` (block-major streaming) gives the same bytes as resident extraction;
  inputs 288 and 544 wide (several tiles of the solve) on 1 rank (1 thread) and 4 (2 threads each)
  equal the reference and each other's bytes.
- RegMean++: the same solve with block l's Gram matrices taken on the merged model's path (as
  fusion-bench's regmean_plusplus: the embedding merged first, the hidden states of block l from the
  merged blocks < l, each model's own block l hooked on them), the reference built block by block
  in transformers by swapping each model's layer l into the partly merged model. 1, 2 and 4 ranks
  (2 stages) and streaming with spills: equal to it within 1e-5 relative and bitwise equal to each
  other; not plain RegMean.
- Fisher: per-sample gradients of the mean next-token log-likelihood, squared and averaged
  (the diagonal empirical Fisher), then the Fisher-weighted average; 1, 2 and 4 ranks, bitwise equal.
- AIM on task arithmetic: the base's mean |activation| per input channel, normalized, shrinks the
  merged task vector per channel; 1, 2 and 4 ranks, bitwise equal.
Prints each comparison with its figure."""
import os
import shutil
import sys
import tempfile

import numpy as np
from safetensors.numpy import load_file

sys.path.insert(0, os.path.dirname(__file__))
from recall_testlib import run, tiny_llama, write_jsonl, Checks  # noqa: E402

check = Checks()
TOL = 1e-5
LINEAR = {"self_attn.q_proj": "attn_in", "self_attn.k_proj": "attn_in", "self_attn.v_proj": "attn_in",
          "self_attn.o_proj": "attn_out", "mlp.gate_proj": "mlp_in", "mlp.up_proj": "mlp_in",
          "mlp.down_proj": "mlp_out"}
HOOKED = {"self_attn.q_proj": "attn_in", "self_attn.o_proj": "attn_out", "mlp.gate_proj": "mlp_in",
          "mlp.down_proj": "mlp_out"}


def samples(n, seed):
    rng = np.random.default_rng(seed)
    return [[1] + [int(x) for x in rng.integers(3, 120, size=int(rng.integers(4, 14)))] for _ in range(n)]


def load_model(path):
    import torch
    import transformers
    return transformers.AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()


def linear_statistics(path, data):
    """{(block, group): (X^T X float64, sum |x| float64, tokens)} over every token of every sample."""
    import torch
    model = load_model(path)
    stats = {}

    def hook(key):
        def pre(_module, args):
            x = args[0].detach().double().reshape(-1, args[0].shape[-1])
            g, a, t = stats.get(key, (0, 0, 0))
            stats[key] = (g + (x.T @ x).numpy(), a + x.abs().sum(0).numpy(), t + x.shape[0])
        return pre

    for l, layer in enumerate(model.model.layers):
        for name, group in HOOKED.items():
            layer.get_submodule(name).register_forward_pre_hook(hook((l, group)))
    with torch.no_grad():
        for s in data:
            model(torch.tensor([s]))
    return stats


def hooked_grams(model, data, layer):
    """{group: X^T X float64} of layer `layer`'s linear inputs in `model`, over every token of every sample."""
    import torch
    grams, handles = {}, []

    def hook(group):
        def pre(_module, args):
            x = args[0].detach().double().reshape(-1, args[0].shape[-1])
            grams[group] = grams.get(group, 0) + (x.T @ x).numpy()
        return pre

    for name, group in HOOKED.items():
        handles.append(model.model.layers[layer].get_submodule(name).register_forward_pre_hook(hook(group)))
    with torch.no_grad():
        for s in data:
            model(torch.tensor([s]))
    for h in handles:
        h.remove()
    return grams


def regmean_plusplus_reference(paths, data, alpha):
    """RegMean++ as fusion-bench's regmean_plusplus runs it, for shared calibration samples: the
    embedding averaged first; for each layer l, every model's own layer l put in place l of the
    partly merged model (layers < l merged) and hooked, the layer solved from those Grams (norms
    averaged) and loaded into the merged model before layer l + 1."""
    import copy
    import torch
    states = [state(p) for p in paths]
    models = [load_model(p) for p in paths]
    merged = copy.deepcopy(models[0])
    out = {k: sum(s[k] for s in states) / len(states) for k in states[0] if ".layers." not in k}
    with torch.no_grad():
        merged.model.embed_tokens.weight.copy_(torch.from_numpy(out["model.embed_tokens.weight"]).float())
    layers = merged.model.layers
    for l in range(len(layers)):
        own = layers[l]
        grams = []
        for m in models:
            layers[l] = m.model.layers[l]
            grams.append(hooked_grams(merged, data, l))
        layers[l] = own
        prefix, loaded = f"model.layers.{l}.", {}
        for name in states[0]:
            if not name.startswith(prefix):
                continue
            key = linear_of(name)
            if key is None:
                out[name] = sum(s[name] for s in states) / len(states)
            else:
                a, b = 0, 0
                for s, g in zip(states, grams):
                    scaled = alpha * g[key[1]] + (1 - alpha) * np.diag(np.diag(g[key[1]]))
                    a, b = a + scaled, b + scaled @ s[name].T
                out[name] = np.linalg.solve(a, b).T
            loaded[name[len(prefix):]] = torch.from_numpy(out[name]).float()
        own.load_state_dict(loaded)
    return out


def state(path):
    return {k: v.astype(np.float64) for k, v in load_file(f"{path}/model.safetensors").items()}


def linear_of(name):
    """(block, group) of a block's linear weight, else None."""
    parts = name.split(".")
    if len(parts) == 6 and parts[1] == "layers" and parts[-1] == "weight":
        group = LINEAR.get(f"{parts[3]}.{parts[4]}")
        if group:
            return int(parts[2]), group
    return None


def regmean_reference(paths, data, alpha):
    states = [state(p) for p in paths]
    grams = [linear_statistics(p, data) for p in paths]
    out = {}
    for name in states[0]:
        key = linear_of(name)
        if key is None:
            out[name] = sum(s[name] for s in states) / len(states)
            continue
        a, b = 0, 0
        for s, g in zip(states, grams):
            gram = g[key][0]
            scaled = alpha * gram + (1 - alpha) * np.diag(np.diag(gram))
            a, b = a + scaled, b + scaled @ s[name].T
        out[name] = np.linalg.solve(a, b).T
    return out


def rel_error(ours, ref):
    worst, where = 0.0, ""
    for k, r in ref.items():
        e = float(np.abs(ours[k].astype(np.float64) - r).max() / max(np.abs(r).max(), 1e-30))
        if e > worst:
            worst, where = e, k
    return worst, where


def merged(out_dir):
    return load_file(f"{out_dir}/hf/model.safetensors")


def write_config(path, tmp, models, method, extra=""):
    with open(path, "w") as f:
        f.write("models:\n" + "".join(f"  - {{name: {n}, path: {tmp}/{n}}}\n" for n in models) +
                f"method: {method}\ndata: {tmp}/data.jsonl\ncalibration: {{samples: 0}}\n{extra}"
                f"output: {{dir: {tmp}/out-{os.path.basename(path)[:-5]}, dtype: float32}}\n")
    return f"{tmp}/out-{os.path.basename(path)[:-5]}"


def test_regmean(tmp, data):
    models = ["base", "a", "b"]
    paths = [f"{tmp}/{n}" for n in models]
    ref = regmean_reference(paths, data, 0.9)
    outs = {}
    for np_ in (1, 2, 4):
        # 4 ranks need 4 cells: 2 stages per model (the Gram matrices do not depend on the grid).
        out = write_config(f"{tmp}/regmean{np_}.yaml", tmp, models, "regmean",
                           "parallel: {stages: 2}\n" if np_ == 4 else "")
        run(["merge", "--config", f"{tmp}/regmean{np_}.yaml", "--quiet"], np=np_)
        outs[np_] = merged(out)
        err, where = rel_error(outs[np_], ref)
        check(err <= TOL, f"regmean on {np_} rank(s) equals the numpy reference: max relative error {err:.2e} "
                          f"({where}; tolerance {TOL})")
    same = all(np.array_equal(outs[1][k].view(np.uint32), outs[n][k].view(np.uint32)) for n in (2, 4) for k in outs[1])
    check(same, "regmean: 1, 2 and 4 ranks (2 stages) write the same bytes")
    out = write_config(f"{tmp}/regmean-stream.yaml", tmp, models, "regmean", "parallel: {stream_samples: 8}\n")
    run(["merge", "--config", f"{tmp}/regmean-stream.yaml", "--quiet"], np=2)
    stream = merged(out)
    check(all(np.array_equal(stream[k].view(np.uint32), outs[1][k].view(np.uint32)) for k in stream),
          "regmean with parallel.stream_samples (block-major) writes the same bytes as resident extraction")
    # alpha reaches the solve.
    half = regmean_reference(paths, data, 0.5)
    out = write_config(f"{tmp}/regmean-a05.yaml", tmp, models, "regmean", "params: {alpha: 0.5}\n")
    run(["merge", "--config", f"{tmp}/regmean-a05.yaml", "--quiet"], np=2)
    ours = merged(out)
    err, where = rel_error(ours, half)
    moved, _ = rel_error(ours, ref)
    check(err <= TOL and moved > 100 * TOL, f"regmean alpha 0.5 equals its reference ({err:.2e}, {where}) and "
                                            f"differs from alpha 0.9 ({moved:.2e})")
    check(not os.path.exists(f"{out}/statistics") and not os.path.exists(f"{out}.partial"),
          "the calibration statistics are not left in the committed output")


def test_regmean_wide(tmp, data):
    """Input widths over one 256-wide tile (hidden 288, MLP 544: 2 and 3 tiles of linalg.h's tiled
    Cholesky and its 256-column panels): equal to the reference on 1 rank (bound to one core: one
    thread) and on 4 (oversubscribed, unbound: every core's thread), bitwise equal to each other."""
    models = ["wbase", "wa", "wb"]
    base = tiny_llama(f"{tmp}/wbase", seed=10, dtype="float32", layers=2, hidden=288, inter=544, heads=4, kv_heads=2)
    for i, n in enumerate(models[1:]):
        tiny_llama(f"{tmp}/{n}", seed=11 + i, dtype="float32", layers=2, hidden=288, inter=544, heads=4, kv_heads=2,
                   base_state=base, noise=0.02)
    ref = regmean_reference([f"{tmp}/{n}" for n in models], data, 0.9)
    outs = {}
    for np_ in (1, 4):
        out = write_config(f"{tmp}/wide{np_}.yaml", tmp, models, "regmean", "parallel: {stages: 2}\n" if np_ == 4 else "")
        p = run(["merge", "--config", f"{tmp}/wide{np_}.yaml"], np=np_)
        threads = next((l for l in p.stdout.splitlines() if "linear weights solved" in l), "")
        outs[np_] = merged(out)
        err, where = rel_error(outs[np_], ref)
        check(err <= TOL, f"regmean, inputs 288 and 544 wide, on {np_} rank(s) equals the numpy reference: max relative "
                          f"error {err:.2e} ({where}); {threads.split('(')[1].split(')')[0] if '(' in threads else threads}")
    check(all(np.array_equal(outs[1][k].view(np.uint32), outs[4][k].view(np.uint32)) for k in outs[1]),
          "regmean over several tiles: 1 rank (1 thread) and 4 ranks (2 threads each) write the same bytes")


def test_regmean_plusplus(tmp, data):
    models = ["base", "a", "b"]
    paths = [f"{tmp}/{n}" for n in models]
    ref = regmean_plusplus_reference(paths, data, 0.9)
    outs = {}
    # Streaming with max_length 16 (no sample is longer) bounds the held states to 8 x 16 x 64 x 4 =
    # 32 KiB, shared by a rank's streams: every micro-batch (8 x up to 14 tokens x 64 x 4) spills.
    runs = [(1, ""), (2, ""), (4, "parallel: {stages: 2}\n"), (2, "max_length: 16\nparallel: {stream_samples: 8}\n")]
    for i, (np_, extra) in enumerate(runs):
        out = write_config(f"{tmp}/rmpp{i}.yaml", tmp, models, "regmean_plusplus", extra)
        run(["merge", "--config", f"{tmp}/rmpp{i}.yaml", "--quiet"], np=np_)
        outs[i] = merged(out)
        err, where = rel_error(outs[i], ref)
        what = f"{np_} rank(s)" + (" streaming (spilled hidden states)" if "stream" in extra else "") + \
            (" on 2 stages" if "stages" in extra else "")
        check(err <= TOL, f"regmean_plusplus on {what} equals the transformers/numpy reference: max relative error "
                          f"{err:.2e} ({where}; tolerance {TOL})")
    same = all(np.array_equal(outs[0][k].view(np.uint32), outs[i][k].view(np.uint32)) for i in outs for k in outs[0])
    check(same, "regmean_plusplus: 1, 2, 4 ranks (2 stages) and streaming write the same bytes")
    plain = regmean_reference(paths, data, 0.9)
    moved, where = rel_error(outs[0], plain)
    apart, _ = rel_error(ref, plain)
    check(moved > 100 * TOL, f"regmean_plusplus differs from plain regmean: max relative difference {moved:.2e} "
                             f"({where}; the references differ by {apart:.2e})")


def fisher_of(path, data):
    """The diagonal empirical Fisher: per sample, the gradient of its mean next-token log-likelihood,
    squared (float64) and averaged over the samples with at least 2 tokens."""
    import torch
    model = load_model(path)
    acc, n = {}, 0
    for s in data:
        if len(s) < 2:
            continue
        model.zero_grad()
        ids = torch.tensor([s])
        (-model(ids, labels=ids).loss).backward()
        for name, p in model.named_parameters():
            g = p.grad.detach().double().numpy()
            acc[name] = acc.get(name, 0) + g * g
        n += 1
    return {k: (v / n).astype(np.float32).astype(np.float64) for k, v in acc.items()}


def fisher_reference(paths, data, weights, normalize=True, eps=1e-6):
    states = [state(p) for p in paths]
    fishers = [fisher_of(p, data) for p in paths]
    norms = [np.sqrt(sum(float((f * f).sum()) for f in fs.values())) for fs in fishers]
    c = list(weights)
    if normalize:
        inv = [1 / (x + eps) for x in norms]
        c = [w * i / sum(inv) for w, i in zip(weights, inv)]
    out = {}
    for name in states[0]:
        num = sum(ci * (f[name] + eps) * s[name] for ci, f, s in zip(c, fishers, states))
        den = sum(ci * (f[name] + eps) for ci, f in zip(c, fishers))
        out[name] = num / den
    return out


def fisher_config(tmp, tag, models, weights, extra=""):
    """A fisher merge of `models` with per-model `weights`, writing to {tmp}/out-{tag}."""
    cfg = f"{tmp}/{tag}.yaml"
    with open(cfg, "w") as f:
        f.write("models:\n" + "".join(f"  - {{name: {n}, path: {tmp}/{n}, params: {{weight: {w}}}}}\n"
                                       for n, w in zip(models, weights)) +
                f"method: fisher\ndata: {tmp}/data.jsonl\ncalibration: {{samples: 0}}\n{extra}"
                f"output: {{dir: {tmp}/out-{tag}, dtype: float32}}\n")
    return cfg


def test_fisher(tmp, data):
    models = ["base", "a", "b"]
    paths = [f"{tmp}/{n}" for n in models]
    weights = [1.0, 2.0, 0.5]
    ref = fisher_reference(paths, data, weights)
    outs = {}
    for np_ in (1, 2, 4):  # 4 ranks: one without a model's Fisher to compute, 2 stages for the grid
        run(["merge", "--config", fisher_config(tmp, f"fisher{np_}", models, weights,
                                                "parallel: {stages: 2}\n" if np_ == 4 else ""), "--quiet"], np=np_)
        outs[np_] = merged(f"{tmp}/out-fisher{np_}")
        err, where = rel_error(outs[np_], ref)
        check(err <= TOL, f"fisher on {np_} rank(s) equals the torch reference (per-sample gradients): max relative "
                          f"error {err:.2e} ({where})")
    for np_ in (2, 4):
        check(all(np.array_equal(outs[1][k].view(np.uint32), outs[np_][k].view(np.uint32)) for k in outs[1]),
              f"fisher: 1 and {np_} ranks write the same bytes")
    # Without normalization the weights differ (each model's Fisher scale counts).
    plain = fisher_reference(paths, data, weights, normalize=False)
    run(["merge", "--config", fisher_config(tmp, "fisher-plain", models, weights, "params: {normalize: false}\n"),
         "--quiet"], np=2)
    ours = merged(f"{tmp}/out-fisher-plain")
    err, where = rel_error(ours, plain)
    check(err <= TOL, f"fisher with params.normalize false equals its reference ({err:.2e}, {where})")


def test_aim(tmp, data):
    """Task arithmetic (weights 0.7 and 0.4) with AIM: each block linear weight's merged task vector
    scaled per input channel j by 1 - I_j (1 - omega), I the base's mean |x| over its largest."""
    omega = 0.3
    base = state(f"{tmp}/base")
    tuned = [state(f"{tmp}/a"), state(f"{tmp}/b")]
    weights = [0.7, 0.4]
    stats = linear_statistics(f"{tmp}/base", data)
    ref = {}
    for name, b in base.items():
        m = b + sum(w * (t[name] - b) for w, t in zip(weights, tuned))
        key = linear_of(name)
        if key is not None:
            s = stats[key][1] / stats[key][2]
            m = b + (m - b) * (1 - (s / s.max()) * (1 - omega))[None, :]
        ref[name] = m
    cfg = f"{tmp}/aim.yaml"
    with open(cfg, "w") as f:
        f.write(f"models:\n  - {{name: base, path: {tmp}/base}}\n"
                f"  - {{name: a, path: {tmp}/a, params: {{weight: 0.7}}}}\n"
                f"  - {{name: b, path: {tmp}/b, params: {{weight: 0.4}}}}\n"
                f"base: base\nmethod: task_arithmetic\ndata: {tmp}/data.jsonl\ncalibration: {{samples: 0}}\n"
                f"aim: {{omega: {omega}}}\noutput: {{dir: {tmp}/out-aim, dtype: float32}}\n")
    for np_ in (1, 2, 4):  # 4 ranks: 2 stages, so that every rank has a cell
        run(["merge", "--config", cfg, "--quiet", "--set", f"output.dir={tmp}/out-aim{np_}"] +
            (["--set", "parallel.stages=2"] if np_ == 4 else []), np=np_)
    ours = merged(f"{tmp}/out-aim1")
    err, where = rel_error(ours, ref)
    check(err <= TOL, f"task_arithmetic + aim (omega {omega}) equals the reference: max relative error {err:.2e} ({where})")
    for np_ in (2, 4):
        other = merged(f"{tmp}/out-aim{np_}")
        check(all(np.array_equal(ours[k].view(np.uint32), other[k].view(np.uint32)) for k in ours),
              f"aim: 1 and {np_} ranks write the same bytes")
    plain = {k: base[k] + sum(w * (t[k] - base[k]) for w, t in zip(weights, tuned)) for k in base}
    moved, _ = rel_error(ours, plain)
    check(moved > 100 * TOL, f"aim changes the merge ({moved:.2e} from plain task arithmetic)")


def make_inputs(tmp):
    """The tiny float32 models base, a, b (a and b fine-tuned-like variants of base) and 40
    calibration samples in {tmp}/data.jsonl; returns the samples."""
    base = tiny_llama(f"{tmp}/base", seed=0, dtype="float32", layers=2)
    for i, n in enumerate(["a", "b"]):
        tiny_llama(f"{tmp}/{n}", seed=i + 1, dtype="float32", layers=2, base_state=base, noise=0.02)
    data = samples(40, seed=5)
    write_jsonl(f"{tmp}/data.jsonl", [{"input_ids": s} for s in data])
    return data


def main():
    tmp = tempfile.mkdtemp(prefix="recall-data-aware-")
    try:
        data = make_inputs(tmp)
        test_aim(tmp, data)
        test_fisher(tmp, data)
        test_regmean(tmp, data)
        test_regmean_wide(tmp, data)
        test_regmean_plusplus(tmp, data)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    check.finish()


if __name__ == "__main__":
    main()
