"""Builds the demo's small world, deterministically from a seed: a corpus of generated stories for
pretraining, three generated tasks (train/test, prompt/completion), a SentencePiece tokenizer
trained on all of it, and a randomly initialised tiny Llama that uses it.

    python scripts/demo_world.py OUT_DIR [--seed 0]

Writes OUT_DIR/init (HF model dir with tokenizer.model and the tokenizer_config.json that makes
transformers' AutoTokenizer tokenize as recall does), OUT_DIR/pretrain.jsonl,
OUT_DIR/tasks/<task>/{train,test}.jsonl."""
import argparse
import json
import os
import random

NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
           "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen"]
WORDS = ["cat", "dog", "sun", "tree", "bird", "fish", "moon", "star", "cake", "ball", "boat", "hat",
         "frog", "bear", "milk", "rain"]
CIPHER = dict(zip(WORDS, ["zab", "kel", "mup", "tor", "fia", "nox", "lur", "pem", "dak", "sil", "rov",
                          "gud", "wib", "hos", "yet", "qan"]))
NAMES = ["Lily", "Tom", "Anna", "Ben", "Mia", "Sam"]
PLACES = ["park", "garden", "forest", "beach", "house"]


def story(r):
    n, p, w, v = r.choice(NAMES), r.choice(PLACES), r.choice(WORDS), r.choice(WORDS)
    return (f"Once upon a time, {n} went to the {p}. {n} saw a {w} and a {v}. "
            f"The {w} was happy. {n} played with the {v} all day.")


def arithmetic(r):
    a, b = r.randint(0, 9), r.randint(0, 9)
    return {"prompt": f"Add {NUMBERS[a]} and {NUMBERS[b]}. Answer:", "completion": f" {NUMBERS[a + b]}."}


def reverse(r):
    ws = r.sample(WORDS, 3)
    return {"prompt": f"Reverse {' '.join(ws)}. Answer:", "completion": f" {' '.join(reversed(ws))}."}


def cipher(r):
    ws = r.sample(WORDS, 2)
    return {"prompt": f"Code {' '.join(ws)}. Answer:", "completion": f" {' '.join(CIPHER[w] for w in ws)}."}


TASKS = {"arithmetic": arithmetic, "reverse": reverse, "cipher": cipher}


def write(path, rows):
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    args = ap.parse_args()
    r = random.Random(args.seed)
    os.makedirs(args.out, exist_ok=True)
    corpus = [story(r) for _ in range(3000)]
    write(f"{args.out}/pretrain.jsonl", [{"text": s} for s in corpus])
    all_text = list(corpus)
    for name, make in TASKS.items():
        d = f"{args.out}/tasks/{name}"
        os.makedirs(d, exist_ok=True)
        train = [make(r) for _ in range(2000)]
        test = [make(random.Random(args.seed * 1000 + 7 + i)) for i in range(100)]
        write(f"{d}/train.jsonl", train)
        write(f"{d}/test.jsonl", test)
        write(f"{d}/samples.jsonl", [{"text": s["prompt"] + s["completion"]} for s in train[:200]])
        all_text += [s["prompt"] + s["completion"] for s in train]

    import sentencepiece as spm
    import torch
    import transformers
    with open(f"{args.out}/tokenizer_corpus.txt", "w") as f:
        f.write("\n".join(all_text) + "\n")
    spm.SentencePieceTrainer.train(
        input=f"{args.out}/tokenizer_corpus.txt", model_prefix=f"{args.out}/tok", vocab_size=384,
        model_type="bpe", character_coverage=1.0, byte_fallback=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        num_threads=1, minloglevel=2)
    torch.manual_seed(args.seed)
    cfg = transformers.LlamaConfig(vocab_size=384, hidden_size=args.hidden, intermediate_size=args.hidden * 3,
                                   num_hidden_layers=args.layers, num_attention_heads=4, num_key_value_heads=2,
                                   max_position_embeddings=128, tie_word_embeddings=True, bos_token_id=1,
                                   eos_token_id=2, rms_norm_eps=1e-5)
    model = transformers.LlamaForCausalLM(cfg)
    model.save_pretrained(f"{args.out}/init", safe_serialization=True)
    os.replace(f"{args.out}/tok.model", f"{args.out}/init/tokenizer.model")
    # Without it transformers picks a generic tokenizer for tokenizer.model: no BOS and no
    # SentencePiece dummy prefix ("Once" -> O|n|ce instead of <s> ▁Once). The same file as
    # `recall convert` writes; fine-tuning and merging copy it along.
    with open(f"{args.out}/init/tokenizer_config.json", "w") as f:
        json.dump({"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
                   "add_bos_token": True, "add_eos_token": False}, f, indent=2)
        f.write("\n")
    print(f"demo world in {args.out}: {len(corpus)} stories, tasks {', '.join(TASKS)}, "
          f"tiny llama {args.layers} blocks x {args.hidden}")


if __name__ == "__main__":
    main()
