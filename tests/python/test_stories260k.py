"""stories260K end to end: `recall convert` the llama2.c checkpoint, `recall inspect --json` it,
then load it with transformers (AutoModelForCausalLM.from_pretrained) and compare with the golden
outputs of shared/data/stories260K/README.md: the BOS logits (argmax, max logit, first five,
sum) within 1e-4 and the first 60 greedy tokens exactly. Prints every comparison.
"""
import json
import os
import subprocess
import sys
import tempfile

import torch
from transformers import AutoModelForCausalLM

RECALL = os.environ["RECALL_BIN"]
DATA = os.path.join(os.environ["RECALL_SHARED_DIR"], "data", "stories260K")

GOLDEN_ARGMAX = 403
GOLDEN_MAX_LOGIT = 17.02352
GOLDEN_FIRST5 = [-6.22291, 8.40434, -6.22374, -6.22254, -6.22195]
GOLDEN_SUM = -1070.1722
GOLDEN_GREEDY = [int(t) for t in """
403 407 261 378 432 383 286 261 376 298 315 421 395 317 426 338 401 396 267 337 410 408
419 292 411 322 265 282 295 433 426 385 328 432 358 394 261 370 432 352 266 268 388 426
338 391 266 267 337 335 312 432 398 312 286 267 414 270 333 415""".split()]
TOL = 1e-4

FAILURES = []


def check(ok, what):
    print(("ok    " if ok else "FAIL  ") + what)
    if not ok:
        FAILURES.append(what)


def close(got, want, what, tol=TOL):
    diff = abs(got - want)
    rel = diff / max(abs(want), 1e-12)
    check(diff <= tol, f"{what}: {got:.6f} vs golden {want} (abs diff {diff:.2e}, rel {rel:.2e}, tol {tol:.1e})")


def main():
    assert len(GOLDEN_GREEDY) == 60
    with tempfile.TemporaryDirectory(prefix="recall-stories-") as tmp:
        out = os.path.join(tmp, "stories260K-hf")
        p = subprocess.run([RECALL, "convert", "--from", "llama2c",
                            os.path.join(DATA, "stories260K.bin"), "--out", out,
                            "--tokenizer", os.path.join(DATA, "tok512.model")],
                           capture_output=True, text=True)
        print(p.stdout.strip(), p.stderr.strip())
        check(p.returncode == 0, f"recall convert exits 0 (got {p.returncode})")
        if p.returncode != 0:
            return 1
        files = sorted(os.listdir(out))
        check(files == ["config.json", "model.safetensors", "tokenizer.model", "tokenizer_config.json"],
              f"output files {files}")
        check(open(os.path.join(out, "tokenizer.model"), "rb").read()
              == open(os.path.join(DATA, "tok512.model"), "rb").read(), "tokenizer.model copied byte for byte")

        p = subprocess.run([RECALL, "inspect", "--json", out], capture_output=True, text=True)
        check(p.returncode == 0, f"recall inspect exits 0 (got {p.returncode}) {p.stderr.strip()}")
        info = json.loads(p.stdout)
        check(info["architecture"] == "llama", f"inspect: architecture {info['architecture']}")
        check(info["blocks"] == 5, f"inspect: blocks {info['blocks']}")
        check(info["attention_heads"] == 8, f"inspect: attention heads {info['attention_heads']}")
        check(info["kv_heads"] == 4, f"inspect: KV heads {info['kv_heads']}")
        check(info["tie_word_embeddings"] is True, f"inspect: tied embeddings {info['tie_word_embeddings']}")
        check(info["hidden_size"] == 64 and info["intermediate_size"] == 172 and info["vocab_size"] == 512,
              f"inspect: hidden {info['hidden_size']}, MLP {info['intermediate_size']}, vocab {info['vocab_size']}")
        check(info["tensor_count"] == 1 + 5 * 9 + 1, f"inspect: {info['tensor_count']} tensors (no lm_head)")
        # 260K parameters: 512x64 embedding + 5 blocks + final norm.
        check(info["parameters"] == 512 * 64 + 5 * (2 * 64 + 64 * 64 * 2 + 2 * 32 * 64 + 3 * 172 * 64) + 64,
              f"inspect: {info['parameters']} parameters")
        p = subprocess.run([RECALL, "inspect", out], capture_output=True, text=True)
        check(p.returncode == 0 and "tied" in p.stdout and "5" in p.stdout,
              "recall inspect (human) mentions blocks and tied embeddings")
        print(p.stdout)

        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
        model.eval()
        check(type(model).__name__ == "LlamaForCausalLM", f"transformers loads {type(model).__name__}")
        check(model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr(),
              "lm_head is tied to the embedding")
        # The golden logits were computed in float64: compare a float64 copy of the model within
        # 1e-4, and the float32 model within 1e-4 per logit and 1e-6 relative for the sum of 512.
        model64 = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float64).eval()
        for label, m, sum_tol in (("float64", model64, TOL), ("float32", model, abs(GOLDEN_SUM) * 1e-6)):
            with torch.no_grad():
                logits = m(torch.tensor([[1]])).logits[0, -1].double()
            check(int(logits.argmax()) == GOLDEN_ARGMAX,
                  f"{label}: BOS argmax {int(logits.argmax())} (golden {GOLDEN_ARGMAX})")
            close(float(logits.max()), GOLDEN_MAX_LOGIT, f"{label}: BOS max logit")
            for i, want in enumerate(GOLDEN_FIRST5):
                close(float(logits[i]), want, f"{label}: BOS logit[{i}]")
            close(float(logits.sum()), GOLDEN_SUM, f"{label}: BOS logit sum", sum_tol)

        with torch.no_grad():
            gen = model.generate(torch.tensor([[1]]), max_new_tokens=60, do_sample=False,
                                 num_beams=1, eos_token_id=None, pad_token_id=0)
        tokens = gen[0, 1:].tolist()
        first_diff = next((i for i, (a, b) in enumerate(zip(tokens, GOLDEN_GREEDY)) if a != b), None)
        check(tokens == GOLDEN_GREEDY,
              f"60 greedy tokens equal the golden ones (first difference at {first_diff}): {tokens[:12]}...")

    print(f"\n{len(FAILURES)} failure(s)")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
