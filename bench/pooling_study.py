"""Which token pooling keeps RECALL's similarities informative when the first token carries a
massive activation (issue 18)? Independent of the merge job: transformers forward passes and numpy.

Pretrained LLMs put activations hundreds of times larger than the rest on the first token
("attention sinks", massive activations). RECALL pools a sample's hidden states into one vector
(today: the mean over all real tokens, BOS included), for the typical samples' k-means and for
the per-block RBF similarities. This script measures, for the poolings `mean`, `mean_skip_first`
and `last` (recall/merge/pooling.h):

  - on stories260K (a real trained Llama), the BOS state's norm relative to the other tokens';
  - two sets of models on stories260K: fine-tunes (`recall finetune` of the base on four tasks of
    bench/continual/tasks.py, reference = the `fact` expert) and perturbed copies (base + Gaussian
    noise of 2, 4, 8, 16 % of each tensor's std, reference 1 %; the ground-truth order of
    similarity to the reference is the noise order);
  - each set as is (scale 1) and with an artificial massive first-token activation: a forward hook
    multiplies position 0's residual stream by S (100, 1000) after block 0, so every later block
    output carries it ("propagated": the other tokens attend to a changed position 0, so the model
    itself changes), or position 0 of every recorded block output multiplied by S after the
    forward pass ("readout": the same model, only the pooled vectors see the outlier).

For each (set, S, pooling): typical samples (K = 16 of 96 task texts, recall's documented k-means++
re-implemented in tests/python/recall_testlib.py, on the reference's last block), the per-block
RBF similarities (median heuristic) and softmax weights (tau = 1), and

  len_r2        share of the variance of the reference's pooled last-block vectors explained by a
                linear fit on 1/T (T = sample length): 1 = the representations encode only length
  sigma2 x      the median-heuristic bandwidth sigma^2 relative to S = 1 (geometric mean over blocks)
  typ_overlap   typical samples shared with the same pooling at S = 1 (fraction of K)
  w_spread      mean over blocks of max_m w_m - min_m w_m (0 = uniform weights)
  s_range       mean over blocks of the range of the non-reference models' similarities
  tau_clean     mean over blocks of Kendall's tau between the non-reference similarities and
                those of the same pooling at S = 1 (1 = same order of models)
  tau_truth     perturbed set: Kendall's tau against the ground-truth order

    python bench/pooling_study.py --out out/pooling [--steps 60] [--scales 1,100,1000]

Environment: RECALL_BIN (default <repo>/build/bin/recall, for `convert` and `finetune`),
RECALL_SHARED_DIR (default <repo>/../shared). Writes OUT/results.json and prints the tables.
"""
import argparse
import json
import os
import random
import subprocess
import sys

import numpy as np
import torch
import transformers

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "python"))
sys.path.insert(0, os.path.join(REPO, "bench", "continual"))
import recall_testlib as ref  # noqa: E402
import tasks as T  # noqa: E402

RECALL_BIN = os.environ.get("RECALL_BIN", os.path.join(REPO, "build", "bin", "recall"))
SHARED = os.environ.get("RECALL_SHARED_DIR", os.path.join(REPO, "..", "shared"))
POOLINGS = ["mean", "mean_skip_first", "last"]
EXPERTS = ["arith", "reverse", "sentiment", "cipher", "fact"]  # the last is the reference
NOISE = [0.02, 0.04, 0.08, 0.16, 0.01]                       # the last is the reference
K, N, SEED = 16, 96, 0


def sh(cmd, log):
    with open(log, "w") as f:
        subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=True,
                       env=dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1")))


def build_models(out, steps):
    """The converted base, the fine-tuned experts and the perturbed copies (reused when present)."""
    data = os.path.join(SHARED, "data", "stories260K")
    base = os.path.join(out, "base")
    if not os.path.exists(os.path.join(base, "config.json")):
        sh([RECALL_BIN, "convert", "--from", "llama2c", os.path.join(data, "stories260K.bin"), "--out", base,
            "--tokenizer", os.path.join(data, "tok512.model")], os.path.join(out, "convert.log"))
    T.write_tasks(os.path.join(out, "tasks"), 0, 2000, 50, tasks=T.TASKS)
    finetuned = []
    os.makedirs(os.path.join(out, "ft"), exist_ok=True)
    for task in EXPERTS:
        d = os.path.join(out, "ft", task)
        if not os.path.exists(os.path.join(d, "config.json")):
            sh([RECALL_BIN, "finetune", "--model", base, "--data", os.path.join(out, "tasks", task, "train.jsonl"),
                "--out", d, "--steps", str(steps), "--batch", "16", "--lr", "1e-3", "--seed", "0"], d + ".log")
        finetuned.append(d)
    perturbed = []
    model = transformers.AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    clean = {k: v.clone() for k, v in model.state_dict().items()}
    for i, level in enumerate(NOISE):
        d = os.path.join(out, "perturbed", f"noise{level}")
        if not os.path.exists(os.path.join(d, "config.json")):
            g = torch.Generator().manual_seed(100 + i)
            with torch.no_grad():
                for k, v in model.state_dict().items():
                    v.copy_(clean[k] + level * clean[k].std() * torch.randn(v.shape, generator=g))
            model.save_pretrained(d, safe_serialization=True)
        perturbed.append(d)
    return base, {"finetuned": (["base"] + EXPERTS, [base] + finetuned),
                  "perturbed": ([f"noise{x}" for x in NOISE], perturbed)}


def task_texts(out):
    """N texts (prompt + completion) drawn from the five tasks' training rows, as token ids."""
    import sentencepiece
    sp = sentencepiece.SentencePieceProcessor(model_file=os.path.join(SHARED, "data", "stories260K", "tok512.model"))
    rows = []
    for task in T.TASKS:
        for line in open(os.path.join(out, "tasks", task, "train.jsonl")):
            r = json.loads(line)
            rows.append(r["prompt"] + r["completion"])
    random.Random(0).shuffle(rows)
    return [[1] + sp.encode(t) for t in rows[:N]]  # BOS (1) first, as recall tokenizes


def hidden_states(model_dir, samples, scale, readout_only=False):
    """Per sample: [L, T, H] block outputs (before the final norm), float64; with scale != 1 the
    residual stream of position 0 is multiplied by `scale` after block 0 (propagated: later blocks
    see it), or with readout_only position 0 of every recorded block output is multiplied by
    `scale` and the forward pass itself is unchanged."""
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    outs = []

    def record(m, i, o):
        h = o[0] if isinstance(o, tuple) else o
        outs.append(h)

    def massive(m, i, o):
        h = o[0] if isinstance(o, tuple) else o
        h[:, 0, :] *= scale
        return o

    hooks = []
    if scale != 1 and not readout_only:
        hooks.append(model.model.layers[0].register_forward_hook(massive))
    hooks += [layer.register_forward_hook(record) for layer in model.model.layers]
    res = []
    with torch.no_grad():
        for ids in samples:
            outs.clear()
            model(torch.tensor([ids]))
            h = np.stack([o.reshape(len(ids), -1).double().numpy() for o in outs])
            if readout_only:
                h[:, 0] *= scale
            res.append(h)
    for h in hooks:
        h.remove()
    return res


def pool(h, pooling):
    """h [L, T, H] -> [L, H]."""
    if pooling == "mean":
        return h.mean(1)
    if pooling == "mean_skip_first":
        return h[:, 1:].mean(1) if h.shape[1] > 1 else h[:, 0]
    return h[:, -1]


def kendall(a, b):
    n, s = len(a), 0.0
    for i in range(n):
        for j in range(i + 1, n):
            s += np.sign(a[i] - a[j]) * np.sign(b[i] - b[j])
    return s / (n * (n - 1) / 2)


def length_r2(x, lengths):
    """R^2 of the least-squares fit of x [N, H] on [1, 1/T], over all dimensions together."""
    a = np.stack([np.ones(len(lengths)), 1.0 / np.asarray(lengths, dtype=float)], 1)
    coef, *_ = np.linalg.lstsq(a, x, rcond=None)
    resid = x - a @ coef
    return 1.0 - (resid ** 2).sum() / ((x - x.mean(0)) ** 2).sum()


def bos_ratio(states):
    """Per block: median over samples of ||h_0|| / median_{t>=1} ||h_t||."""
    r = [np.linalg.norm(h[:, 0], axis=-1) / np.median(np.linalg.norm(h[:, 1:], axis=-1), axis=1)
         for h in states if h.shape[1] > 1]
    return np.median(np.stack(r), 0)


def analyse(states, samples, truth=None):
    """states[m][x] = [L, T, H] of model m (the last one is the reference) -> metrics per pooling."""
    M, L = len(states), states[0][0].shape[0]
    lengths = [len(s) for s in samples]
    out = {}
    for p in POOLINGS:
        reps = np.stack([np.stack([pool(h, p) for h in states[m]], 1) for m in range(M)])  # [M, L, N, H]
        typical = ref.kmeans_typical(reps[-1, -1], K, SEED)
        r = reps[:, :, typical]
        sims, weights, sigma2 = [], [], []
        for l in range(L):
            sigma2.append(ref.median_sq(r[:, l].reshape(-1, r.shape[-1])))
            s = ref.rbf_similarity(r[:, l], M - 1, sigma2=sigma2[-1])
            sims.append(s)
            weights.append(ref.softmax(s, 1.0))
        out[p] = {"typical": typical, "sim": np.array(sims), "w": np.array(weights), "sigma2": np.array(sigma2),
                  "len_r2": float(length_r2(reps[-1, -1], lengths))}
        if truth is not None:
            out[p]["tau_truth"] = float(np.mean([kendall(s[:-1], truth) for s in sims]))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=60, help="fine-tuning steps of each expert")
    ap.add_argument("--scales", default="1,100,1000", help="first-token scales S (1 = none)")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    torch.set_num_threads(1)
    scales = [float(x) for x in a.scales.split(",")]
    base, sets = build_models(a.out, a.steps)
    samples = task_texts(a.out)
    results = {"bos_ratio_stories260K": bos_ratio(hidden_states(base, samples, 1)).tolist(), "sets": {}}
    print(f"stories260K, ||h_BOS|| / median ||h_t|| per block: {np.round(results['bos_ratio_stories260K'], 2)}")
    print(f"samples: {N} task texts, lengths {min(map(len, samples))}-{max(map(len, samples))} tokens; K = {K}")
    for name, (labels, dirs) in sets.items():
        truth = -np.array(NOISE[:-1]) if name == "perturbed" else None
        clean = analyse([hidden_states(d, samples, 1) for d in dirs], samples, truth)
        for mode in ("propagated", "readout"):
            rows = []
            for S in scales:
                res = clean if S == 1 else analyse([hidden_states(d, samples, S, mode == "readout") for d in dirs],
                                                   samples, truth)
                for p in POOLINGS:
                    r, c = res[p], clean[p]
                    rows.append({
                        "scale": S, "pooling": p, "len_r2": r["len_r2"],
                        "sigma2_ratio": float(np.exp(np.mean(np.log(r["sigma2"] / c["sigma2"])))),
                        "typ_overlap": len(set(r["typical"]) & set(c["typical"])) / K,
                        "w_spread": float((r["w"].max(1) - r["w"].min(1)).mean()),
                        "s_range": float((r["sim"][:, :-1].max(1) - r["sim"][:, :-1].min(1)).mean()),
                        "tau_clean": float(np.mean([kendall(x[:-1], y[:-1]) for x, y in zip(r["sim"], c["sim"])])),
                        "tau_truth": r.get("tau_truth"),
                        "sim_last_block": r["sim"][-1].tolist(), "w_last_block": r["w"][-1].tolist(),
                    })
            results["sets"][f"{name}/{mode}"] = {"models": labels, "reference": labels[-1], "rows": rows}
            print(f"\n### {name}, {mode} (models {', '.join(labels[:-1])}; reference {labels[-1]})\n")
            print("| S | pooling | len_r2 | sigma2 x | typ_overlap | w_spread | s_range | tau_clean |" +
                  (" tau_truth |" if truth is not None else ""))
            print("|---|---|---|---|---|---|---|---|" + ("---|" if truth is not None else ""))
            for r in rows:
                print(f"| {r['scale']:g} | {r['pooling']} | {r['len_r2']:.3f} | {r['sigma2_ratio']:.3g} | "
                      f"{r['typ_overlap']:.2f} | {r['w_spread']:.4f} | {r['s_range']:.4f} | {r['tau_clean']:+.2f} |" +
                      (f" {r['tau_truth']:+.2f} |" if truth is not None else ""))
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
