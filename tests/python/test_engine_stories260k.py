"""stories260K (converted from llama2.c): recall's forward pass and greedy decoding against the
golden values of ../shared/data/stories260K/README.md, plus text input (SentencePiece + BOS) and
seeded sampling."""
import os
import subprocess
import sys
import tempfile

import numpy as np
from safetensors.numpy import load_file

RECALL = os.environ.get("RECALL_BIN", "build/bin/recall")
DATA = os.path.join(os.environ.get("RECALL_SHARED_DIR", "../shared"), "data", "stories260K")

GOLDEN_FIRST5 = [-6.22291, 8.40434, -6.22374, -6.22254, -6.22195]
GOLDEN_TOKENS = [int(t) for t in """403 407 261 378 432 383 286 261 376 298 315 421 395 317 426 338
401 396 267 337 410 408 419 292 411 322 265 282 295 433 426 385 328 432 358 394 261 370 432 352 266
268 388 426 338 391 266 267 337 335 312 432 398 312 286 267 414 270 333 415""".split()]
GOLDEN_TEXT = ("Once upon a time, there was a little girl named Lily. She loved to play outside in the "
               "park. One day, she saw a big, red ball. She wanted to play with it, but it was too high")
SENTENCE = "Once upon a time, there was a little girl named Lily."


def run(*args):
    r = subprocess.run([RECALL, *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"recall {' '.join(args)} failed ({r.returncode}):\n{r.stderr}")
    return r.stdout


def field(out, name):
    for line in out.splitlines():
        if line.startswith(name + ":"):
            return line[len(name) + 1:].strip()
    raise SystemExit(f"no '{name}:' line in output:\n{out}")


def main():
    failures = []

    def check(ok, what):
        print(("ok   " if ok else "FAIL ") + what)
        if not ok:
            failures.append(what)

    with tempfile.TemporaryDirectory() as work:
        model = os.path.join(work, "stories260K")
        run("convert", "--from", "llama2c", os.path.join(DATA, "stories260K.bin"), "--out", model,
            "--tokenizer", os.path.join(DATA, "tok512.model"))

        # Golden BOS logits.
        tokens = os.path.join(work, "bos.jsonl")
        with open(tokens, "w") as f:
            f.write('{"input_ids": [1]}\n')
        out = os.path.join(work, "bos.safetensors")
        run("hidden-states", "--model", model, "--tokens", tokens, "--out", out)
        logits = load_file(out)["logits"][0, 0].astype(np.float64)
        d5 = np.abs(logits[:5] - GOLDEN_FIRST5).max()
        check(int(logits.argmax()) == 403 and abs(logits.max() - 17.02352) < 1e-4,
              f"BOS argmax {int(logits.argmax())} (golden 403), max logit {logits.max():.5f} (golden 17.02352)")
        check(d5 < 1e-4, f"first five logits {np.round(logits[:5], 5).tolist()}, max abs diff {d5:.2e}")
        check(abs(logits.sum() + 1070.1722) < 2e-3,
              f"sum of logits {logits.sum():.4f} (golden -1070.1722, diff {abs(logits.sum() + 1070.1722):.2e})")

        # The first 60 greedy tokens, exactly, and their text.
        gen = run("generate", "--model", model, "--tokens", "1", "--max-new", "60")
        got = [int(t) for t in field(gen, "tokens").split()]
        first_diff = next((i for i, (a, b) in enumerate(zip(got, GOLDEN_TOKENS)) if a != b), None)
        check(got == GOLDEN_TOKENS, f"60 greedy tokens equal the golden ones (first difference: {first_diff}, got {len(got)})")
        check(field(gen, "text") == GOLDEN_TEXT, f"decoded text: {field(gen, 'text')!r}")

        # Text input: BOS + SentencePiece ids, same hidden states as the equivalent token ids.
        text = os.path.join(work, "text.jsonl")
        with open(text, "w") as f:
            f.write('{"text": "%s"}\n{"text": "Lily"}\n' % SENTENCE)
        ids = [1] + GOLDEN_TOKENS[:15]
        with open(tokens, "w") as f:
            f.write('{"input_ids": %s}\n' % ids)
        run("hidden-states", "--model", model, "--text", text, "--out", os.path.join(work, "t.safetensors"))
        run("hidden-states", "--model", model, "--tokens", tokens, "--out", os.path.join(work, "i.safetensors"))
        a, b = load_file(os.path.join(work, "t.safetensors")), load_file(os.path.join(work, "i.safetensors"))
        check(int(a["mask"][0].sum()) == 16, f"text sample has {int(a['mask'][0].sum())} tokens (BOS + 15 golden ids)")
        check(np.array_equal(a["hidden.5"][0], b["hidden.5"][0]) and np.array_equal(a["logits"][0], b["logits"][0]),
              "text input gives the same hidden states and logits as its token ids")
        # A prompt given as text continues like the golden sequence.
        gen = run("generate", "--model", model, "--prompt", SENTENCE, "--max-new", "10")
        got = [int(t) for t in field(gen, "tokens").split()]
        check(got == GOLDEN_TOKENS[15:25], f"--prompt continuation {got} == golden {GOLDEN_TOKENS[15:25]}")

        # Sampling: deterministic per seed, different across seeds.
        s = [field(run("generate", "--model", model, "--tokens", "1", "--max-new", "40", "--temperature", "1",
                       "--top-p", "0.9", "--seed", str(seed)), "tokens") for seed in (7, 7, 8)]
        check(s[0] == s[1], "same seed, same sampled tokens")
        check(s[0] != s[2], "different seeds, different sampled tokens")
        check(s[0].split() != [str(t) for t in GOLDEN_TOKENS[:40]], "sampling at temperature 1 differs from greedy")

    print(f"{len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
