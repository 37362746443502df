"""Tokenizer benchmark: recall's BpeTokenizer vs Hugging Face `tokenizers`, one thread each.

Builds a Llama-3-style byte-level BPE (the real Llama-3 split regex, 8000 merges trained here)
and a corpus of pseudo-English with Zipf-distributed words, digits, punctuation, accents, CJK,
emoji and newlines; times HF encode_batch with RAYON_NUM_THREADS=1 (best of 3), then runs
build/bin/bench_tokenizer on the same documents, which prints both figures and the ratio.
Run: ~/.cache/recall/venv/bin/python bench/bench_tokenizer.py [BUILD_DIR] [--mb 4]
"""
import json
import os
import random
import subprocess
import sys
import tempfile
import time

os.environ["RAYON_NUM_THREADS"] = "1"  # before tokenizers starts its thread pool
os.environ["TOKENIZERS_PARALLELISM"] = "false"

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "python"))
import test_tokenizer_parity as fx  # noqa: E402  (the tokenizer builders)


def pseudo_words(rng, n):
    syll = ["ka", "lo", "mi", "ne", "ta", "re", "si", "on", "an", "er", "in", "th", "st", "qu",
            "ough", "ing", "ed", "al", "ex", "pro", "con", "ment", "tion", "ly", "ous", "ble"]
    words = set()
    while len(words) < n:
        w = "".join(rng.choice(syll) for _ in range(rng.choice([1, 2, 2, 3, 3, 4])))
        words.add(w.capitalize() if rng.random() < 0.1 else w)
    return sorted(words)


def corpus(rng, megabytes):
    words = pseudo_words(rng, 20000)
    weights = [1.0 / (i + 1) for i in range(len(words))]
    extra = fx.EXOTIC + ["1234", "3.14", "2026", "(", ")", ",", ".", "!", "?", ":", ";", "'s"]
    docs, size = [], 0
    while size < megabytes * 1e6:
        parts = []
        for w in rng.choices(words, weights, k=rng.randint(20, 400)):
            if rng.random() < 0.05:
                w = rng.choice(extra)
            parts.append(w)
            r = rng.random()
            parts.append(", " if r < 0.05 else ".\n" if r < 0.08 else "  " if r < 0.09 else " ")
        doc = "".join(parts)
        docs.append(doc)
        size += len(doc.encode())
    return docs


def main():
    args = [a for a in sys.argv[1:]]
    mb = 4.0
    if "--mb" in args:
        i = args.index("--mb")
        mb = float(args[i + 1])
        del args[i:i + 2]
    build = args[0] if args else os.path.join(HERE, "..", "build")
    rng = random.Random(0)
    docs = corpus(rng, mb)
    train = corpus(random.Random(1), 2.0)
    with tempfile.TemporaryDirectory() as tmp:
        tok = fx.build_llama3(train, vocab_size=8256)
        path = os.path.join(tmp, "tokenizer.json")
        tok.save(path)
        tok = fx.Tokenizer.from_file(path)
        cpath = os.path.join(tmp, "corpus.jsonl")
        with open(cpath, "w", encoding="utf-8") as f:
            for d in docs:
                f.write(json.dumps(d) + "\n")
        hf = 0
        for method in ("encode_batch", "encode_batch_fast"):  # _fast skips offsets (>= 0.21)
            if not hasattr(tok, method):
                continue
            best, tokens = 1e300, 0
            for _ in range(3):
                t0 = time.perf_counter()
                enc = getattr(tok, method)(docs, add_special_tokens=False)
                best = min(best, time.perf_counter() - t0)
                tokens = sum(len(e.ids) for e in enc)
            print(f"HF tokenizers (1 thread, {method}): {tokens / best:.0f} tokens/s "
                  f"(best of 3), {tokens} tokens")
            hf = max(hf, tokens / best)  # the faster HF figure is the reference
        p = subprocess.run([os.path.join(build, "bin", "bench_tokenizer"), path, cpath,
                            "--repeat", "3", "--reference", str(hf), "--expect-tokens",
                            str(tokens)])
        return p.returncode


if __name__ == "__main__":
    sys.exit(main())
