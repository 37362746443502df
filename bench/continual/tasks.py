"""Tasks of the continual-learning benchmark (issue 7), generated deterministically from a seed.

Five skills, each written as short prompt/completion text that stories260K's 512-token
SentencePiece vocabulary handles (plain lower-case English words, the names of TinyStories):

  arith     "Add three and two. Answer:" -> " five."                   addition of two numbers in words
  reverse   "Reverse cat dog sun. Answer:" -> " sun dog cat."          reverse a list of three words
  fact      "Tim has a ball. Lily is in the park. Where is Lily? Answer:" -> " park."
            "Tim has a ball. Lily is in the park. What does Tim have? Answer:" -> " ball."
                                                                        bAbI-like fact question
  sentiment "Tim lost his ball. He cried. Was Tim happy or sad? Answer:" -> " sad."
                                                                        sentiment of a short story
  cipher    "Translate cat dog. Answer:" -> " zab kel."                fixed word cipher

Each task has its own cue words (Add, Reverse, Translate, the two question forms), so one model
can hold all five. Train and test splits are disjoint by prompt (a test prompt never occurs in
train), except arithmetic: its whole space is the 36 pairs of operands zero..five, so its test
prompts come from the same pairs as train and it measures a memorized skill. (With operands up to
nine, 100 pairs, stories260K reached 28% after 150 steps at lr 1e-3, and 6% on 20 pairs held out
of training at lr 3e-3: too slow for this benchmark.)

    python bench/continual/tasks.py OUT_DIR [--seed S] [--train N] [--test N] [--tasks a,b,...]

writes OUT_DIR/<task>/{train,test,samples}.jsonl (samples = train rows as {"text"}, the merge's
data for RECALL's typical samples) and OUT_DIR/manifest.json. Same seed -> same bytes.
"""
import argparse
import json
import os
import random

ARITH_DIGITS = 6  # operands zero..five: 36 pairs, a space a 260K model memorizes in ~150 steps
NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
           "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen"]
WORDS = ["cat", "dog", "sun", "tree", "bird", "fish", "ball", "cake", "hat", "box", "car", "bed"]
CIPHER = dict(zip(WORDS, ["zab", "kel", "mup", "tor", "fia", "nox", "sil", "dak", "gud", "rov",
                          "pim", "wex"]))
NAMES = [("Lily", "She"), ("Tim", "He"), ("Sam", "He"), ("Anna", "She"), ("Ben", "He"), ("Mia", "She")]
PLACES = ["park", "shop", "school", "garden", "house", "kitchen"]
THINGS = ["ball", "kite", "doll", "book", "cup", "drum"]
GOOD = ["got a new toy", "ate a big cake", "played with a friend", "found a pretty flower", "saw a rainbow"]
BAD = ["lost his ball", "broke a cup", "fell in the mud", "dropped the cake", "had a bad dream"]
GOOD_FEEL = ["smiled", "laughed", "jumped up and down"]
BAD_FEEL = ["cried", "was very upset", "did not smile"]


def arith(r, pair):
    a, b = pair
    return {"prompt": f"Add {NUMBERS[a]} and {NUMBERS[b]}. Answer:", "completion": f" {NUMBERS[a + b]}."}


def reverse(r):
    ws = r.sample(WORDS, 3)
    return {"prompt": f"Reverse {' '.join(ws)}. Answer:", "completion": f" {' '.join(reversed(ws))}."}


def fact(r):
    (a, _), (b, _) = r.sample(NAMES, 2)
    place, thing = r.choice(PLACES), r.choice(THINGS)
    facts = [f"{a} is in the {place}.", f"{b} has a {thing}."]
    r.shuffle(facts)
    if r.random() < 0.5:
        return {"prompt": f"{' '.join(facts)} Where is {a}? Answer:", "completion": f" {place}."}
    return {"prompt": f"{' '.join(facts)} What does {b} have? Answer:", "completion": f" {thing}."}


def sentiment(r):
    (name, pron) = r.choice(NAMES)
    good = r.random() < 0.5
    event = r.choice(GOOD if good else BAD)
    if not good:
        event = event.replace("his", "her") if pron == "She" else event
    feel = r.choice(GOOD_FEEL if good else BAD_FEEL)
    return {"prompt": f"{name} {event}. {pron} {feel}. Was {name} happy or sad? Answer:",
            "completion": " happy." if good else " sad."}


def cipher(r):
    ws = r.sample(WORDS, 2)
    return {"prompt": f"Translate {' '.join(ws)}. Answer:", "completion": f" {' '.join(CIPHER[w] for w in ws)}."}


TASKS = ["arith", "reverse", "fact", "sentiment", "cipher"]
MAKERS = {"reverse": reverse, "fact": fact, "sentiment": sentiment, "cipher": cipher}


def make_task(name, seed, n_train, n_test):
    """(train, test) rows of one task; deterministic in (name, seed)."""
    r = random.Random(f"{name}:{seed}")
    if name == "arith":
        pairs = [(a, b) for a in range(ARITH_DIGITS) for b in range(ARITH_DIGITS)]
        train = [arith(r, r.choice(pairs)) for _ in range(n_train)]
        test = [arith(r, r.choice(pairs)) for _ in range(n_test)]
        return train, test
    make = MAKERS[name]
    test, test_prompts = [], set()
    while len(test) < n_test:
        row = make(r)
        if row["prompt"] not in test_prompts:
            test_prompts.add(row["prompt"])
            test.append(row)
    train = []
    while len(train) < n_train:
        row = make(r)
        if row["prompt"] not in test_prompts:
            train.append(row)
    return train, test


def write_jsonl(path, rows):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    os.replace(tmp, path)


def write_tasks(out, seed, n_train, n_test, tasks=TASKS, n_samples=200):
    for name in tasks:
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        train, test = make_task(name, seed, n_train, n_test)
        write_jsonl(os.path.join(d, "train.jsonl"), train)
        write_jsonl(os.path.join(d, "test.jsonl"), test)
        write_jsonl(os.path.join(d, "samples.jsonl"),
                    [{"text": row["prompt"] + row["completion"]} for row in train[:n_samples]])
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump({"seed": seed, "train": n_train, "test": n_test, "tasks": list(tasks)}, f, indent=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--test", type=int, default=50)
    ap.add_argument("--tasks", default=",".join(TASKS))
    args = ap.parse_args()
    write_tasks(args.out, args.seed, args.train, args.test, args.tasks.split(","))


# --- general-knowledge retention text -------------------------------------------------------------
GENERAL_PROMPT = "Once upon a time"


def general_text_commands(recall_bin, model_dir, n, max_new=128, seed0=1000):
    """The `recall generate` commands that make the retention set: n stories sampled once from the
    base model (temperature 1, top-p 0.9, seeds seed0..seed0+n-1), each the prompt plus its
    continuation. The set does not depend on the benchmark seed: every seed scores the same text."""
    return [[recall_bin, "generate", "--model", model_dir, "--prompt", GENERAL_PROMPT,
             "--max-new", str(max_new), "--temperature", "1.0", "--top-p", "0.9", "--seed", str(seed0 + i)]
            for i in range(n)]


def story_from_generate_output(stdout):
    """prompt + the continuation printed on generate's 'text:' line."""
    for line in stdout.splitlines():
        if line.startswith("text: "):  # "text: " + the decoded continuation
            return GENERAL_PROMPT + line[len("text: "):].rstrip()
    raise ValueError("recall generate printed no 'text:' line:\n" + stdout)


if __name__ == "__main__":
    main()
