"""recall finetune on stories260K: the loss decreases; the saved model's logits equal the
in-memory ones (--probe) and Hugging Face loads it with the same logits; the same seed gives the
same weights byte for byte and another seed different ones; completion samples are trained on the
completion tokens only (first-step loss == recall eval's completion loss)."""
import hashlib
import json
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
import numpy as np
import sentencepiece as spm
import torch
import transformers
from safetensors.numpy import load_file

RECALL = os.environ.get("RECALL_BIN", "build/bin/recall")
DATA = os.path.join(os.environ.get("RECALL_SHARED_DIR", "../shared"), "data", "stories260K")
transformers.utils.logging.disable_progress_bar()
torch.set_num_threads(2)

TRAIN = [
    {"text": "Once upon a time, there was a little girl named Lily. She loved to play outside in the park."},
    {"text": "One day, a cat found a big red ball under the tree."},
    {"text": "Tom and Sue went to the beach. They built a big sand castle together."},
    {"prompt": "The dog was", "completion": "very happy to see the blue bird."},
]
PROBE = [{"text": "One day, a cat found a big red ball under the tree."}, {"input_ids": [1, 403, 407, 261]}]


def run(*args):
    r = subprocess.run([RECALL, *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"recall {' '.join(args)} failed:\n{r.stderr}")
    return r.stdout


def write_jsonl(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def main():
    failures = []

    def check(ok, what):
        print(("ok   " if ok else "FAIL ") + what)
        if not ok:
            failures.append(what)

    with tempfile.TemporaryDirectory() as w:
        base = os.path.join(w, "base")
        run("convert", "--from", "llama2c", os.path.join(DATA, "stories260K.bin"), "--out", base,
            "--tokenizer", os.path.join(DATA, "tok512.model"))
        train, probe = os.path.join(w, "train.jsonl"), os.path.join(w, "probe.jsonl")
        write_jsonl(train, TRAIN)
        write_jsonl(probe, PROBE)
        common = ["--data", train, "--steps", "30", "--batch", "2", "--lr", "3e-3", "--warmup", "5"]
        outs = {}
        for name, seed in [("a", 1), ("b", 1), ("c", 2)]:
            out = run("finetune", "--model", base, "--out", os.path.join(w, name), "--seed", str(seed),
                      "--probe", probe, "--probe-out", os.path.join(w, name + ".probe.safetensors"), *common)
            outs[name] = [float(x) for x in out.split("losses:")[1].split()]
        losses = outs["a"]
        check(np.mean(losses[-5:]) < 0.5 * np.mean(losses[:2]),
              f"training loss decreases: first two {np.round(losses[:2], 4).tolist()}, last five mean {np.mean(losses[-5:]):.4f}")
        run("eval", "--model", base, "--data", train, "--out", os.path.join(w, "e0.json"))
        before = json.load(open(os.path.join(w, "e0.json")))["summary"]["text"]["loss"]
        run("eval", "--model", os.path.join(w, "a"), "--data", train, "--out", os.path.join(w, "e1.json"))
        after = json.load(open(os.path.join(w, "e1.json")))["summary"]["text"]["loss"]
        check(after < 0.5 * before, f"eval loss on the training texts: {before:.4f} before, {after:.4f} after")

        st = [os.path.join(w, n, "model.safetensors") for n in "abc"]
        check(sha(st[0]) == sha(st[1]), "same seed -> byte-identical weights")
        check(sha(st[0]) != sha(st[2]), "another seed -> different weights")

        # Saved model == in-memory model, through recall and through Hugging Face.
        mem = load_file(os.path.join(w, "a.probe.safetensors"))
        hs = os.path.join(w, "hs.safetensors")
        mask = mem["mask"]
        sp = spm.SentencePieceProcessor(model_file=os.path.join(DATA, "tok512.model"))
        # The probe mixes text and ids; hidden-states takes one kind, so give it the ids of both.
        seqs = [[1] + sp.encode(PROBE[0]["text"]), PROBE[1]["input_ids"]]
        check([int(m.sum()) for m in mask] == [len(s) for s in seqs], "probe token counts")
        tok_file = os.path.join(w, "probe_ids.jsonl")
        write_jsonl(tok_file, [{"input_ids": s} for s in seqs])
        run("hidden-states", "--model", os.path.join(w, "a"), "--tokens", tok_file, "--out", hs)
        saved = load_file(hs)["logits"]
        d = np.abs(saved - mem["logits"]).max()
        check(d == 0.0, f"recall logits of the saved model == in-memory logits (max abs diff {d:.3g})")
        model = transformers.LlamaForCausalLM.from_pretrained(os.path.join(w, "a"), dtype=torch.float32).eval()
        real = mask.astype(bool)
        with torch.no_grad():
            padded = [s + [0] * (mask.shape[1] - len(s)) for s in seqs]
            hf = model(input_ids=torch.tensor(padded), attention_mask=torch.tensor(mask)).logits.numpy()
        rel = np.abs(hf[real] - mem["logits"][real]).max() / np.abs(hf[real]).max()
        check(rel < 1e-4, f"Hugging Face loads the result: logits rel diff {rel:.2e}")

        # Completion-only loss: one step on one completion sample reports recall eval's completion loss.
        one = os.path.join(w, "one.jsonl")
        write_jsonl(one, [TRAIN[3]])
        out = run("finetune", "--model", base, "--data", one, "--out", os.path.join(w, "d"), "--steps", "1",
                  "--batch", "1", "--warmup", "0", "--lr", "1e-6")
        first = float(out.split("losses:")[1].split()[0])
        run("eval", "--model", base, "--data", one, "--out", os.path.join(w, "e2.json"))
        comp = json.load(open(os.path.join(w, "e2.json")))["summary"]["completion"]["loss"]
        check(abs(first - comp) < 1e-5 * comp, f"first-step loss {first:.6f} == eval completion loss {comp:.6f}")
    print(f"{len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
