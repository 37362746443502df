"""recall eval against a transformers computation on stories260K: per-sample next-token loss of
text samples, completion loss and greedy exact match, multiple-choice log-likelihoods and
accuracy, and the summary means (token-weighted loss, perplexity)."""
import json
import math
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
import sentencepiece as spm
import torch
import transformers

RECALL = os.environ.get("RECALL_BIN", "build/bin/recall")
DATA = os.path.join(os.environ.get("RECALL_SHARED_DIR", "../shared"), "data", "stories260K")
transformers.utils.logging.disable_progress_bar()
torch.set_num_threads(2)

SAMPLES = [
    {"text": "Once upon a time, there was a little girl named Lily. She loved to play outside."},
    {"text": "The cat sat on the mat and looked at the big red ball."},
    {"input_ids": [1, 403, 407, 261, 378, 432, 383, 286]},
    {"prompt": "Once upon a time, there was a little girl named Lily.",
     "completion": "She loved to play outside in the park."},
    {"prompt": "Once upon a time, there was a little", "completion": "dog who could fly to the moon."},
    {"prompt": "Once upon a time, there was a little girl named", "choices": ["Lily.", "Tim.", "the car."],
     "answer": 0},
    {"prompt": "One day, she saw a big, red", "choices": ["car.", "ball.", "sun."], "answer": 2},
]


def main():
    failures = []

    def check(ok, what):
        print(("ok   " if ok else "FAIL ") + what)
        if not ok:
            failures.append(what)

    with tempfile.TemporaryDirectory() as work:
        model_dir = os.path.join(work, "m")
        subprocess.run([RECALL, "convert", "--from", "llama2c", os.path.join(DATA, "stories260K.bin"),
                        "--out", model_dir, "--tokenizer", os.path.join(DATA, "tok512.model")],
                       check=True, stdout=subprocess.DEVNULL)
        data = os.path.join(work, "data.jsonl")
        with open(data, "w") as f:
            for s in SAMPLES:
                f.write(json.dumps(s) + "\n")
        out = os.path.join(work, "eval.json")
        r = subprocess.run([RECALL, "eval", "--model", model_dir, "--data", data, "--out", out, "--batch", "3"],
                           capture_output=True, text=True)
        print(r.stdout, r.stderr)
        if r.returncode != 0:
            return 1
        got = json.load(open(out))

        sp = spm.SentencePieceProcessor(model_file=os.path.join(DATA, "tok512.model"))
        model = transformers.LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()

        def logprob(ids, first):
            with torch.no_grad():
                logits = model(torch.tensor([ids])).logits[0].float()
            lp = torch.log_softmax(logits, -1)
            return sum(lp[t - 1, ids[t]].item() for t in range(first, len(ids))), len(ids) - first

        def greedy(ids, n):
            seq = list(ids)
            for _ in range(n):
                with torch.no_grad():
                    seq.append(int(model(torch.tensor([seq])).logits[0, -1].argmax()))
            return seq[len(ids):]

        sums = {"text": [0.0, 0], "completion": [0.0, 0]}
        correct = {"completion": 0, "choices": 0}
        for s, g in zip(SAMPLES, got["samples"]):
            if "choices" in s:
                prompt = [1] + sp.encode(s["prompt"])
                lls = [logprob(prompt + sp.encode(c), len(prompt))[0] for c in s["choices"]]
                pred = max(range(len(lls)), key=lambda i: lls[i])
                d = max(abs(a - b) for a, b in zip(lls, g["choice_logprobs"]))
                check(d < 1e-4 and pred == g["predicted"],
                      f"line {g['line']}: choice log-likelihoods max abs diff {d:.2e}, predicted {g['predicted']} (HF {pred})")
                correct["choices"] += pred == s["answer"]
                continue
            if "prompt" in s:
                prompt = [1] + sp.encode(s["prompt"])
                comp = sp.encode(s["completion"])
                lp, n = logprob(prompt + comp, len(prompt))
                match = greedy(prompt, len(comp)) == comp
                check(match == g["exact_match"], f"line {g['line']}: exact match {g['exact_match']} (HF {match})")
                correct["completion"] += match
                kind = "completion"
            else:
                ids = s.get("input_ids") or [1] + sp.encode(s["text"])
                lp, n = logprob(ids, 1)
                kind = "text"
            loss = -lp / n
            rel = abs(loss - g["loss"]) / abs(loss)
            check(n == g["tokens"] and rel < 1e-5,
                  f"line {g['line']}: loss {g['loss']:.6f} vs HF {loss:.6f} (rel {rel:.1e}), tokens {g['tokens']} vs {n}")
            sums[kind][0] -= lp
            sums[kind][1] += n
        for kind in ("text", "completion"):
            loss = sums[kind][0] / sums[kind][1]
            s = got["summary"][kind]
            check(abs(s["loss"] - loss) / loss < 1e-5 and abs(s["perplexity"] - math.exp(loss)) / math.exp(loss) < 1e-5,
                  f"summary {kind}: loss {s['loss']:.6f} vs HF {loss:.6f}, perplexity {s['perplexity']:.4f}")
        check(got["summary"]["completion"]["exact_match"] == correct["completion"] / 2,
              f"summary exact match {got['summary']['completion']['exact_match']} (HF {correct['completion'] / 2})")
        check(got["summary"]["choices"]["accuracy"] == correct["choices"] / 2,
              f"summary choice accuracy {got['summary']['choices']['accuracy']} (HF {correct['choices'] / 2})")
        check(0 < correct["completion"] < 2, "one completion matches greedily and one does not (non-trivial check)")
    print(f"{len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
