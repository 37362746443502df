"""End to end: `recall merge` on tiny random Llamas under mpirun.

Checks, against an independent Python computation with transformers: the typical samples (recall's
documented k-means++ re-implemented in recall_testlib on the reference's pooled last block) ->
their pooled representations -> RBF similarities (median heuristic) -> softmax weights -> merged
tensors (fp32 accumulate, bf16 out, within 1 ulp), non-block tensors with uniform weights 1/M. Also:
bitwise identical output, similarities and weights for 1, 2 and 4 ranks; verify
accepts it and rejects a corrupted copy; merged.h5 readable by h5py with /recall datasets; the HF
export loads in transformers; merging identical models returns the model bit for bit; the linear
baseline; and bad inputs fail on every rank with a clear message and write nothing."""
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile

import h5py
import numpy as np
import torch
import transformers
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(__file__))
from recall_testlib import (block_means_hf, check_weighted_bf16, kmeans_typical, median_sq, rbf_similarity,  # noqa: E402
                            run, softmax, tiny_llama, write_jsonl)

failures = []


def expect(cond, msg):
    print(("ok   " if cond else "FAIL ") + msg)
    if not cond:
        failures.append(msg)


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def write_config(path, models, out, extra="", weights=None):
    """models: [(name, path)]; weights: per-model `params.weight` (models[i].params)."""
    lines = ["models:"] + [f"  - {{name: {n}, path: {p}" + (f", params: {{weight: {weights[i]}}}" if weights else "") + "}"
                           for i, (n, p) in enumerate(models)]
    lines += [extra, f"output: {{dir: {out}, dtype: bfloat16}}"]
    open(path, "w").write("\n".join(lines) + "\n")


def main():
    tmp = tempfile.mkdtemp(prefix="recall-merge-")
    rng = np.random.default_rng(0)
    base = tiny_llama(f"{tmp}/base", seed=0)
    names = ["a", "b", "c"]
    for i, n in enumerate(names):
        tiny_llama(f"{tmp}/{n}", seed=10 + i, base_state=base, noise=0.01 * (i + 1))
    samples = [[1] + rng.integers(3, 128, size=int(rng.integers(4, 20))).tolist() for _ in range(30)]
    write_jsonl(f"{tmp}/data.jsonl", [{"input_ids": s} for s in samples])
    models = [(n, f"{tmp}/{n}") for n in names]
    cfg = f"{tmp}/recall.yaml"
    write_config(cfg, models, f"{tmp}/out1", f"reference: c\nmethod: recall\ndata: {tmp}/data.jsonl\n"
                 "typical: {clusters: 6, seed: 3}\nparallel: {stages: 2, micro_batch: 4}")

    # --- runs on 1, 2 and 4 ranks: bitwise the same bytes -------------------------------------
    for np_ in (1, 2, 4):
        p = run(["merge", "--config", cfg, "--set", f"output.dir={tmp}/out{np_}"], np=np_)
        expect("done:" in p.stdout, f"merge on {np_} rank(s) finished")
    # Tensors whose rows several ranks wrote are read back for their checksums, with progress.
    p = run(["merge", "--config", cfg, "--set", f"output.dir={tmp}/outck", "--set", "method=linear",
             "--set", "parallel.merge_chunk_bytes=4096"], np=2)
    m = re.search(r"checksums: read back (\d+)/(\d+) tensors \(100\.0%\), [0-9.]+ tensors/s, done in", p.stdout)
    expect(bool(m) and m.group(1) == m.group(2) and int(m.group(2)) > 0,
           f"the checksum read-back logs its progress ({m.group(0) if m else 'no line'})")
    digests = {n: sha(f"{tmp}/out{n}/hf/model.safetensors") for n in (1, 2, 4)}
    expect(len(set(digests.values())) == 1, f"HF export identical on 1, 2, 4 ranks: {digests}")
    h5s = [h5py.File(f"{tmp}/out{n}/merged.h5", "r") for n in (1, 2, 4)]
    same = all(h5s[0]["tensors"][k][()].tobytes() == f["tensors"][k][()].tobytes() and
               h5s[0]["tensors"][k].attrs["xxh3_64"] == f["tensors"][k].attrs["xxh3_64"]
               for f in h5s[1:] for k in h5s[0]["tensors"])
    expect(same and all(set(f["tensors"]) == set(h5s[0]["tensors"]) for f in h5s[1:]),
           "merged.h5 tensors (bytes and checksums) identical on 1, 2, 4 ranks")

    # The pipelined extraction on 2 and 4 ranks (2 stages, cells spread over ranks) runs the same
    # operations on the same micro-batches as one process: the same similarities and weights, bit
    # for bit (report.json and merged.h5).
    reports = {n: json.load(open(f"{tmp}/out{n}/report.json")) for n in (1, 2, 4)}
    sims = {n: np.array([b["similarity"] for b in reports[n]["blocks"]]) for n in (1, 2, 4)}
    wts = {n: np.array([b["weights"] for b in reports[n]["blocks"]]) for n in (1, 2, 4)}
    for n in (2, 4):
        expect(np.array_equal(sims[n], sims[1]) and np.array_equal(wts[n], wts[1]),
               f"similarities and weights on {n} ranks equal the 1-rank ones bit for bit "
               f"(max differences {np.abs(sims[n] - sims[1]).max():.2e}, {np.abs(wts[n] - wts[1]).max():.2e})")
        expect(np.array_equal(h5s[0]["recall/weights"][()], h5s[[1, 2, 4].index(n)]["recall/weights"][()]) and
               np.array_equal(h5s[0]["recall/similarity"][()], h5s[[1, 2, 4].index(n)]["recall/similarity"][()]),
               f"merged.h5 /recall/weights and /recall/similarity on {n} ranks equal the 1-rank ones bit for bit")

    # Streaming extraction (one block loaded at a time, groups of 9 samples = 2 micro-batches of 4,
    # the last group shorter) runs the same operations: the same similarities and bytes, bit for bit.
    p = run(["merge", "--config", cfg, "--set", f"output.dir={tmp}/stream2", "--set", "parallel.stream_samples=9"],
            np=2)
    expect("done:" in p.stdout, "streaming extraction on 2 ranks finished")
    sim_s = np.array([b["similarity"] for b in json.load(open(f"{tmp}/stream2/report.json"))["blocks"]])
    sims_2 = sims[2]
    expect(np.array_equal(sim_s, sims_2), f"streaming similarities equal the resident ones bit for bit "
           f"(max difference {np.abs(sim_s - sims_2).max():.2e})")
    expect(sha(f"{tmp}/stream2/hf/model.safetensors") == digests[2], "streaming extraction: same merged bytes")

    out = f"{tmp}/out2"
    report = json.load(open(f"{out}/report.json"))
    expect(report["method"] == "recall" and report["models"] == names and report["reference"] == "c",
           "report.json names method, models, reference")
    expect(len(report["typical_samples"]) == 6 and len(set(report["typical_samples"])) == 6,
           f"6 distinct typical samples: {report['typical_samples']}")
    expect(len(report["peak_rss_bytes"]) == 2 and report["bytes_read"] > 0, "report has peak RSS per rank and bytes")
    W = np.array([b["weights"] for b in report["blocks"]])
    expect(np.allclose(W.sum(1), 1, atol=1e-12), "weights sum to 1 per block")

    # --- independent reference: typical samples, similarities and weights from transformers ----
    all_reps = np.stack([block_means_hf(f"{tmp}/{n}", samples) for n in names])  # [M, L, N, H]
    ref = names.index("c")
    typical = kmeans_typical(all_reps[ref, -1], 6, 3)  # typical: {clusters: 6, seed: 3}, last block
    expect(report["typical_samples"] == typical,
           f"typical samples {report['typical_samples']} = recomputed k-means++ {typical}")
    reps = all_reps[:, :, typical, :]
    max_sim_diff, W_ref = 0.0, []
    for l, blk in enumerate(report["blocks"]):
        sigma2 = median_sq(reps[:, l].reshape(-1, reps.shape[-1]))
        s = rbf_similarity(reps[:, l], ref, sigma2=sigma2)
        max_sim_diff = max(max_sim_diff, np.abs(s - blk["similarity"]).max())
        expect(abs(sigma2 - blk["sigma2"]) <= 1e-5 * sigma2, f"block {l}: sigma2 {blk['sigma2']:.6g} vs HF {sigma2:.6g}")
        W_ref.append(softmax(s, 1.0))
        expect(np.abs(W_ref[-1] - blk["weights"]).max() < 1e-5,
               f"block {l}: weights {np.round(blk['weights'], 5)} vs HF {np.round(W_ref[-1], 5)}")
    expect(max_sim_diff <= 2e-6, f"similarities = HF reference (max |difference| {max_sim_diff:.3g} <= 2e-6)")

    # --- merged tensors = sum_m alpha_m P_m (fp32 accumulate in model order, bf16 out) ---------
    # Block tensors with the weights computed above, the rest (non_block: uniform) with 1/3 each.
    merged = load_file(f"{out}/hf/model.safetensors")
    inputs = [load_file(f"{tmp}/{n}/model.safetensors") for n in names]
    beyond, differ, worst, total = 0, 0, 0, 0
    for name, t in merged.items():
        w = W_ref[int(name.split(".")[2])] if ".layers." in name else np.full(3, 1.0 / 3)
        b, d, u = check_weighted_bf16(t, [inp[name] for inp in inputs], w, 1e-5)
        beyond, differ, worst, total = beyond + b, differ + d, max(worst, u), total + t.numel()
    expect(beyond == 0 and differ <= total * 1e-3,
           f"merged tensors = bf16 of the fp32 weighted sum with the recomputed weights ({differ} of {total} "
           f"elements differ, by at most {worst} ulp; {beyond} beyond 1 ulp + 1e-5 sum|P|)")

    # --- the output's other views ------------------------------------------------------------
    f = h5py.File(f"{out}/merged.h5", "r")
    expect(np.allclose(f["recall/weights"][()], W), "merged.h5 /recall/weights equals report.json")
    expect(list(f["recall/typical_samples"][()]) == report["typical_samples"], "merged.h5 /recall/typical_samples")
    expect(len(f["tensors"]) == len(merged), f"merged.h5 holds {len(f['tensors'])} tensors")
    k = "model.layers.0.mlp.up_proj.weight"
    expect(np.array_equal(f["tensors"][k][()], merged[k].float().numpy()), "h5py reads bf16 values equal to the export")
    expect("xxh3_64" in f["tensors"][k].attrs and "merge_config" in f.attrs and "provenance" in f.attrs,
           "checksum, config and provenance attributes")
    hf = transformers.AutoModelForCausalLM.from_pretrained(f"{out}/hf")
    expect(hf.dtype == torch.bfloat16, "transformers loads the export (bf16)")
    with torch.no_grad():
        expect(torch.isfinite(hf(torch.tensor([samples[0]])).logits).all().item(), "export produces finite logits")
    for fn in ("report.svg", "config.resolved.yaml", "manifest.json", "hf/README.md", "hf/config.json"):
        expect(os.path.exists(f"{out}/{fn}"), f"{fn} written")
    expect(not os.path.exists(f"{out}.partial"), "no .partial directory left behind")

    # --- verify: accepts the output, rejects a flipped byte -----------------------------------
    expect(run(["verify", out], check=False).returncode == 0, "recall verify accepts the output")
    bad = f"{tmp}/corrupt"
    shutil.copytree(out, bad)
    with open(f"{bad}/hf/model.safetensors", "r+b") as fh:
        fh.seek(-3, 2)
        b = fh.read(1)
        fh.seek(-3, 2)
        fh.write(bytes([b[0] ^ 0x40]))
    p = run(["verify", bad], check=False)
    expect(p.returncode != 0 and "checksum mismatch" in p.stderr, "recall verify rejects a corrupted shard")

    # --- identical models: the merge returns the model bit for bit ----------------------------
    same_cfg = f"{tmp}/same.yaml"
    write_config(same_cfg, [("x", f"{tmp}/a"), ("y", f"{tmp}/a"), ("z", f"{tmp}/a")], f"{tmp}/same",
                 f"method: recall\ndata: {tmp}/data.jsonl\ntypical: {{clusters: 4}}")
    run(["merge", "--config", same_cfg, "--quiet"], np=2)
    m2 = load_file(f"{tmp}/same/hf/model.safetensors")
    expect(all(torch.equal(m2[k].view(torch.int16), inputs[0][k].view(torch.int16)) for k in m2),
           "merging three copies of a model returns it bit for bit")

    # --- a baseline on the same path ------------------------------------------------------------
    lin_cfg = f"{tmp}/linear.yaml"
    write_config(lin_cfg, models, f"{tmp}/linear", "method: linear", weights=[1, 1, 2])
    run(["merge", "--config", lin_cfg, "--quiet"], np=3)
    lin = load_file(f"{tmp}/linear/hf/model.safetensors")
    k = "model.layers.1.self_attn.q_proj.weight"
    want = ((inputs[0][k].float() + inputs[1][k].float() + 2 * inputs[2][k].float()) / 4).to(torch.bfloat16)
    ulp = (want.view(torch.int16).int() - lin[k].view(torch.int16).int()).abs().max().item()
    expect(ulp <= 1, f"linear (weights 1,1,2, normalized) within 1 ulp ({ulp})")
    expect(run(["verify", f"{tmp}/linear"], check=False).returncode == 0, "linear output verifies")

    # --- bad input: clear error on every rank, nothing written ----------------------------------
    tiny_llama(f"{tmp}/vocab", seed=5, vocab=160)
    os.makedirs(f"{tmp}/missing", exist_ok=True)
    for fn in os.listdir(f"{tmp}/a"):
        shutil.copy(f"{tmp}/a/{fn}", f"{tmp}/missing/{fn}")
    from safetensors.torch import save_file
    sd = load_file(f"{tmp}/missing/model.safetensors")
    del sd["model.layers.2.mlp.down_proj.weight"]
    save_file(sd, f"{tmp}/missing/model.safetensors", metadata={"format": "pt"})
    open(f"{tmp}/empty.jsonl", "w").close()
    shutil.copytree(f"{tmp}/b", f"{tmp}/nan")
    sd = load_file(f"{tmp}/nan/model.safetensors")
    sd["model.layers.3.self_attn.o_proj.weight"][5, 7] = float("nan")
    save_file(sd, f"{tmp}/nan/model.safetensors", metadata={"format": "pt"})
    os.makedirs(f"{tmp}/exists")
    cases = [
        ("vocabulary mismatch", [("a", f"{tmp}/a"), ("v", f"{tmp}/vocab")], f"{tmp}/o1", "method: linear",
         "vocab_size (vocabulary) is 160"),
        ("missing tensor", [("a", f"{tmp}/a"), ("m", f"{tmp}/missing")], f"{tmp}/o2", "method: linear",
         "missing tensor 'model.layers.2.mlp.down_proj.weight'"),
        ("reference not among models", models, f"{tmp}/o3", f"method: recall\nreference: zz\ndata: {tmp}/data.jsonl",
         "'reference' is 'zz', which is not among the models"),
        ("empty data", models, f"{tmp}/o4", f"method: recall\ndata: {tmp}/empty.jsonl", "holds no samples"),
        ("K larger than the data", models, f"{tmp}/o5", f"method: recall\ndata: {tmp}/data.jsonl\ntypical: {{clusters: 64}}",
         "typical.clusters is 64 but"),
        ("NaN in an input", [("a", f"{tmp}/a"), ("n", f"{tmp}/nan")], f"{tmp}/o6", "method: linear",
         "tensor 'model.layers.3.self_attn.o_proj.weight' holds NaN or infinity at [5, 7]"),
        ("output exists", models, f"{tmp}/exists", "method: linear", "already exists; set output.overwrite"),
        ("output inside an input", models, f"{tmp}/a/merged", "method: linear", f"lies inside the model directory '{tmp}/a'"),
    ]
    for what, ms, o, extra, needle in cases:
        c = f"{tmp}/bad.yaml"
        write_config(c, ms, o, extra)
        p = run(["merge", "--config", c], np=2, check=False)
        msg = p.stdout + p.stderr
        expect(p.returncode != 0 and needle in msg, f"bad input '{what}': non-zero exit and message contains '{needle}'")
        expect(msg.count("recall: error") <= 1, f"bad input '{what}': the error is printed once")
        if what != "output exists":
            expect(not os.path.exists(o), f"bad input '{what}': nothing committed")
            if what != "NaN in an input":  # found while merging: a .partial without manifest may remain
                expect(not os.path.exists(o + ".partial"), f"bad input '{what}': nothing written")
            else:
                expect(run(["verify", o + ".partial"], check=False).returncode != 0, "verify rejects the .partial")
    shutil.rmtree(tmp)
    print(f"{len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
