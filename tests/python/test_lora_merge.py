"""PEFT LoRA adapters as merge inputs: the adapter is applied (W + alpha/r * B A) as the base
weights are read, and must agree with PEFT's own merge_and_unload within 1 bf16 ulp. Also: a
RECALL merge of a full model with an adapter entry as the reference gives the typical samples and
similarities recomputed from transformers on the adapted model (and not those of the base), and
unsupported adapters are clear errors."""
import json
import os
import sys
import tempfile

import numpy as np
import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(__file__))
from recall_testlib import block_means_hf, kmeans_typical, median_sq, rbf_similarity, run, tiny_llama, write_jsonl  # noqa: E402

failures = []


def expect(cond, msg):
    print(("ok   " if cond else "FAIL ") + msg)
    if not cond:
        failures.append(msg)


def main():
    import peft
    import transformers
    tmp = tempfile.mkdtemp(prefix="recall-lora-")
    tiny_llama(f"{tmp}/base", seed=0)
    tiny_llama(f"{tmp}/other", seed=1)
    base = transformers.AutoModelForCausalLM.from_pretrained(f"{tmp}/base", dtype=torch.bfloat16)
    cfg = peft.LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                          target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    torch.manual_seed(3)
    model = peft.get_peft_model(base, cfg)
    with torch.no_grad():  # make the deltas visible at bf16 resolution
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn_like(p) * 0.2)
    model.save_pretrained(f"{tmp}/adapter", safe_serialization=True)
    merged = model.merge_and_unload()
    ref = {k: v.detach().clone() for k, v in merged.state_dict().items()}

    # linear merge of the adapter with itself: exactly the adapted weights
    open(f"{tmp}/same.yaml", "w").write(
        f"models:\n  - {{name: x, path: {tmp}/adapter, base_model: {tmp}/base}}\n"
        f"  - {{name: y, path: {tmp}/adapter, base_model: {tmp}/base}}\n"
        f"method: linear\noutput: {{dir: {tmp}/same, dtype: bfloat16}}\n")
    run(["merge", "--config", f"{tmp}/same.yaml", "--quiet"], np=2)
    got = load_file(f"{tmp}/same/hf/model.safetensors")
    worst, adapted = 0, 0
    for k, v in got.items():
        d = (v.view(torch.int16).int() - ref[k].view(torch.int16).int()).abs().max().item()
        worst = max(worst, d)
        adapted += "proj" in k and not torch.equal(ref[k], base.state_dict().get(k, ref[k]))
    expect(worst <= 1, f"adapter applied as read == PEFT merge_and_unload within 1 bf16 ulp (max {worst} ulp)")
    base_sd = load_file(f"{tmp}/base/model.safetensors")
    changed = sum(not torch.equal(got[k], base_sd[k]) for k in got if "proj" in k)
    expect(changed == 4 * 7, f"every targeted projection changed ({changed} of {4 * 7})")

    # RECALL with a full model and an adapter entry (reference): extraction uses adapted weights
    rng = np.random.default_rng(0)
    write_jsonl(f"{tmp}/data.jsonl", [{"input_ids": [1] + rng.integers(3, 128, size=10).tolist()} for _ in range(12)])
    open(f"{tmp}/recall.yaml", "w").write(
        f"models:\n  - {{name: other, path: {tmp}/other}}\n  - {{name: lora, path: {tmp}/adapter, base_model: {tmp}/base}}\n"
        f"reference: lora\nmethod: recall\ndata: {tmp}/data.jsonl\ntypical: {{clusters: 4}}\n"
        f"output: {{dir: {tmp}/recall, dtype: bfloat16}}\n")
    run(["merge", "--config", f"{tmp}/recall.yaml", "--quiet"], np=2)
    rep = json.load(open(f"{tmp}/recall/report.json"))
    expect(run(["verify", f"{tmp}/recall"], check=False).returncode == 0, "RECALL merge with an adapter verifies")
    # The adapter entry is the reference and its representations are those of the adapted model:
    # recomputed here from transformers on PEFT's merged model (the adapted weights, within 1 bf16
    # ulp of recall's), with recall's k-means++ (recall_testlib) for the typical samples and numpy
    # for the RBF similarity of 'other'. The same computation with the un-adapted base as the
    # reference gives other values, so a job that extracted the base's weights fails here.
    merged.save_pretrained(f"{tmp}/peft_merged", safe_serialization=True)
    samples = [json.loads(line)["input_ids"] for line in open(f"{tmp}/data.jsonl")]
    hf_other = block_means_hf(f"{tmp}/other", samples)
    expected = {}
    for what, ref_dir in (("adapted", f"{tmp}/peft_merged"), ("base", f"{tmp}/base")):
        ref_reps = block_means_hf(ref_dir, samples)
        typical = kmeans_typical(ref_reps[-1], 4, 0)
        sims = []
        for l in range(ref_reps.shape[0]):
            r = np.stack([hf_other[l][typical], ref_reps[l][typical]])
            sims.append(rbf_similarity(r, 1, sigma2=median_sq(r.reshape(-1, r.shape[-1])))[0])
        expected[what] = (typical, np.array(sims))
    got = np.array([b["similarity"][0] for b in rep["blocks"]])
    typical, want = expected["adapted"]
    gap = np.abs(expected["base"][1] - want).max()
    diff = np.abs(got - want).max()
    expect(rep["typical_samples"] == typical,
           f"typical samples {rep['typical_samples']} = k-means++ on the adapted model {typical} "
           f"(on the base: {expected['base'][0]})")
    expect(diff <= 2e-5 and gap > 100 * 2e-5, f"similarities of 'other' to the adapter entry = numpy's on the adapted model "
           f"(max |diff| {diff:.2e} <= 2e-5; to the un-adapted base they would be {gap:.2e} away)")
    # The extraction saw the adapted weights: the same merge with PEFT's merged model saved as a
    # full model gives the same similarities (up to the 1-ulp rounding differences).
    open(f"{tmp}/recall2.yaml", "w").write(
        f"models:\n  - {{name: other, path: {tmp}/other}}\n  - {{name: lora, path: {tmp}/peft_merged}}\n"
        f"reference: lora\nmethod: recall\ndata: {tmp}/data.jsonl\ntypical: {{clusters: 4}}\n"
        f"output: {{dir: {tmp}/recall2, dtype: bfloat16}}\n")
    run(["merge", "--config", f"{tmp}/recall2.yaml", "--quiet"], np=1)
    rep2 = json.load(open(f"{tmp}/recall2/report.json"))
    diff = max(abs(a["similarity"][0] - b["similarity"][0]) for a, b in zip(rep["blocks"], rep2["blocks"]))
    expect(rep["typical_samples"] == rep2["typical_samples"] and diff <= 2e-5,
           f"adapter entry == PEFT-merged full model in the extraction (max similarity difference {diff:.2e})")
    base_only = [b["similarity"][0] for b in rep["blocks"]]
    print(f"     similarities of 'other' to the adapted reference per block: {np.round(base_only, 4)}")

    # unsupported adapter options are clear errors
    cfgj = json.load(open(f"{tmp}/adapter/adapter_config.json"))
    cfgj["use_dora"] = True
    os.makedirs(f"{tmp}/dora", exist_ok=True)
    json.dump(cfgj, open(f"{tmp}/dora/adapter_config.json", "w"))
    os.link(f"{tmp}/adapter/adapter_model.safetensors", f"{tmp}/dora/adapter_model.safetensors")
    open(f"{tmp}/dora.yaml", "w").write(
        f"models:\n  - {{name: a, path: {tmp}/other}}\n  - {{name: d, path: {tmp}/dora, base_model: {tmp}/base}}\n"
        f"method: linear\noutput: {{dir: {tmp}/dora-out}}\n")
    p = run(["merge", "--config", f"{tmp}/dora.yaml"], np=1, check=False)
    expect(p.returncode != 0 and "DoRA adapters are not supported" in p.stdout + p.stderr, "DoRA adapter: clear error")
    print(f"{len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
