"""The demo's results: RECALL's per-block weights, a table of completion loss and exact match per
model and task, and a short reading of the table drawn from its numbers.

    python scripts/demo_report.py OUT_DIR TASK...     (OUT_DIR as scripts/demo.sh writes it)"""
import json
import math
import sys
import textwrap


def main():
    out, tasks = sys.argv[1], sys.argv[2:]
    rep = json.load(open(f"{out}/recall/report.json"))
    vocab = json.load(open(f"{out}/recall/hf/config.json"))["vocab_size"]
    experts = rep["models"]
    print("RECALL per-block weights (rows: blocks; columns: " + ", ".join(experts) + ")")
    for b in rep["blocks"]:
        print(f"  block {b['index']}: " + "  ".join(f"{w:.3f}" for w in b["weights"]) +
              "   similarity " + "  ".join(f"{s:.3f}" for s in b["similarity"]))

    models = ["base"] + tasks + ["recall", "linear"]
    res = {m: {t: json.load(open(f"{out}/eval/{m}.{t}.json"))["summary"]["completion"] for t in tasks} for m in models}
    mean = {m: sum(res[m][t]["loss"] for t in tasks) / len(tasks) for m in models}
    print("\ncompletion loss on 100 test prompts per task (lower is better) / exact-match accuracy")
    print(f"{'model':<12}" + "".join(f"{t:>18}" for t in tasks) + f"{'mean loss':>12}")
    for m in models:
        cells = [f"{res[m][t]['loss']:.3f} / {res[m][t]['exact_match']:.2f}" for t in tasks]
        print(f"{m:<12}" + "".join(f"{x:>18}" for x in cells) + f"{mean[m]:>12.3f}")

    k = experts.index(rep["reference"])
    w = [b["weights"][k] for b in rep["blocks"]]
    own = [t for t in tasks if min(tasks, key=lambda e: res[e][t]["loss"]) == t]
    gap = sum(res[e][t]["loss"] - res[t][t]["loss"] for e in tasks for t in tasks if t != e) / (len(tasks) * (len(tasks) - 1))
    better = [t for t in tasks if res["recall"][t]["loss"] < res["linear"][t]["loss"]]
    exact = any(res[m][t]["exact_match"] > 0 for m in ("recall", "linear") for t in tasks)
    notes = [
        f"Completion loss: the mean negative log-likelihood (natural log) of each answer token given the prompt; "
        f"lower is better. 0 is certain and right, {math.log(vocab):.2f} = ln({vocab}) is a uniform guess over the "
        f"vocabulary, and exp(loss) is how many tokens the model was, on average, as unsure as choosing among.",
        "Exact match: the share of prompts whose greedy completion reproduces every token of the answer. One wrong "
        "token fails the whole answer, so a tiny model (4 blocks of width 128, a few hundred training steps) can "
        "lower its loss a long way before any answer comes out exactly right: exact match can be 0.00 for both "
        "merges while their losses still tell which kept more of each skill."
        + ("" if exact else " Here neither merge answers any test prompt exactly."),
        f"Experts: {len(own)} of {len(tasks)} are the best expert on their own task; on the other tasks an expert's "
        f"loss is {gap:+.3f} from that task's own expert on average: the gap a merge tries to close with one model.",
        f"Merges: mean loss {mean['recall']:.3f} for RECALL, {mean['linear']:.3f} for linear (each task's own "
        f"expert: {sum(res[t][t]['loss'] for t in tasks) / len(tasks):.3f}); RECALL is lower on {len(better)} of "
        f"{len(tasks)} tasks" + (f" ({', '.join(better)})" if better else "") + ".",
        f"RECALL gave the reference '{rep['reference']}' {min(w):.3f} to {max(w):.3f} of each block (linear: "
        f"{1 / len(experts):.3f}); {out}/recall/report.svg draws the weights and similarities per block.",
    ]
    print("\nHow to read it:")
    for n in notes:
        print(textwrap.fill(n, 100, initial_indent="- ", subsequent_indent="  "))

if __name__ == "__main__":
    main()
