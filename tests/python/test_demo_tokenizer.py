"""transformers' AutoTokenizer tokenizes as recall does on the demo's models and on a converted
llama2.c model, thanks to the tokenizer_config.json that scripts/demo_world.py and `recall
convert` write beside tokenizer.model (without it transformers picks a generic tokenizer: no BOS,
no SentencePiece dummy prefix, "Once" -> O|n|ce).

recall's ids come from `tok_tool model-encode-jsonl` (the model directory's tokenizer and BOS
from config.json: what recall feeds a model for a text). Compared on every text of the demo
world (the 3000 stories, every task's prompts, completions and prompt + completion) and on
TinyStories-like sentences for stories260K.

Known difference, not checked: SentencePiece's normalizer folds runs of spaces, tabs and newlines
into one space; transformers' tokenizer converted from tokenizer.model keeps them, so texts with
such whitespace (none in the demo) still tokenize differently."""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from recall_testlib import BIN, SHARED, Checks, run  # noqa: E402

check = Checks()
SRC = os.environ.get("RECALL_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "../.."))
TOOL = os.path.join(os.environ.get("RECALL_BUILD_DIR", os.path.join(os.path.dirname(BIN), "..")), "bin", "tok_tool")


def compare(model_dir, texts, what):
    from transformers import AutoTokenizer
    p = subprocess.run([TOOL, "model-encode-jsonl", model_dir], input="".join(json.dumps(t) + "\n" for t in texts),
                       capture_output=True, text=True)
    if p.returncode != 0:
        check(False, f"{what}: tok_tool failed: {p.stderr.strip()}")
        return
    ours = [json.loads(l) for l in p.stdout.splitlines()]
    hf_tok = AutoTokenizer.from_pretrained(model_dir)
    theirs = hf_tok(texts)["input_ids"]
    bad = [(t, o, h) for t, o, h in zip(texts, ours, theirs) if o != h]
    check(len(ours) == len(texts) and not bad,
          f"{what}: transformers ({type(hf_tok).__name__}) gives recall's ids for all {len(texts)} texts"
          + (f"; {len(bad)} differ, first: {bad[0][0]!r}: recall {bad[0][1][:12]} vs transformers {bad[0][2][:12]}"
             if bad else ""))


def main():
    with tempfile.TemporaryDirectory(prefix="recall-demo-tok-") as tmp:
        world = f"{tmp}/world"
        subprocess.run([sys.executable, f"{SRC}/scripts/demo_world.py", world], check=True, capture_output=True)
        check(os.path.exists(f"{world}/init/tokenizer_config.json"), "demo_world.py writes init/tokenizer_config.json")
        texts = ["Once upon", "Once upon a time"]
        texts += [json.loads(l)["text"] for l in open(f"{world}/pretrain.jsonl")]
        for task in ("arithmetic", "reverse", "cipher"):
            for split in ("train", "test"):
                for l in open(f"{world}/tasks/{task}/{split}.jsonl"):
                    r = json.loads(l)
                    texts += [r["prompt"], r["completion"], r["prompt"] + r["completion"]]
        compare(f"{world}/init", texts, "demo world")

        s260 = f"{tmp}/s260"
        data = os.path.join(SHARED, "data", "stories260K")
        run(["convert", "--from", "llama2c", f"{data}/stories260K.bin", "--out", s260, "--tokenizer", f"{data}/tok512.model"])
        compare(s260, ["Once upon a time, there was a little girl named Lily.", "Once upon",
                       "She loved to play outside in the park. One day, she saw a big, red ball.",
                       "Tom said, \"Can I play too?\" Lily smiled and said yes!", "The end."],
                "stories260K converted by recall convert")
    check.finish()


if __name__ == "__main__":
    main()
