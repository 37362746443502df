#!/usr/bin/env bash
# The demo: installs what is missing, builds, then builds a small world and merges it.
#   1. generates a corpus of stories and three tasks (arithmetic in words, reversing words, a word
#      cipher), a tokenizer and a random tiny Llama (scripts/demo_world.py);
#   2. pretrains the tiny Llama on the stories with `recall finetune`;
#   3. fine-tunes one expert per task from it;
#   4. merges the experts with RECALL on 4 MPI ranks (reference: the newest expert, cipher) and with
#      the linear baseline, each into a full output directory under out/demo/;
#   5. evaluates every model on every task and prints the per-block weights and a results table.
# Environment: RECALL_DEMO_OUT (default out/demo), RECALL_DEMO_PRETRAIN_STEPS, RECALL_DEMO_TASK_STEPS.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$here/scripts/setup.sh"
recall_build >/dev/null
R="$here/build/bin/recall"
out=${RECALL_DEMO_OUT:-$here/out/demo}
world="$out/world"
pretrain_steps=${RECALL_DEMO_PRETRAIN_STEPS:-400}
task_steps=${RECALL_DEMO_TASK_STEPS:-200}
tasks=(arithmetic reverse cipher)
start=$(date +%s)
say() { printf '\n== %s (%ss)\n' "$*" $(( $(date +%s) - start )); }

say "1/5 generating the demo world in $world"
rm -rf "$out"
mkdir -p "$out/models" "$out/eval"
"$RECALL_PYTHON" "$here/scripts/demo_world.py" "$world" 2>&1 | grep -v "Writing model shards" || true

say "2/5 pretraining a tiny Llama on generated stories ($pretrain_steps steps)"
"$R" finetune --model "$world/init" --data "$world/pretrain.jsonl" --out "$out/models/base" \
  --steps "$pretrain_steps" --batch 16 --lr 3e-3 --warmup 20 --seed 0 --log-every 50 | grep -v '^losses:' 

say "3/5 fine-tuning one expert per task ($task_steps steps each)"
for t in "${tasks[@]}"; do
  "$R" finetune --model "$out/models/base" --data "$world/tasks/$t/train.jsonl" --out "$out/models/$t" \
    --steps "$task_steps" --batch 16 --lr 3e-4 --warmup 10 --seed 1 --log-every 100 | grep -v '^losses:' 
done

say "4/5 merging the experts: RECALL on 4 MPI ranks, linear on 2"
cat > "$out/recall.yaml" <<YAML
models:
  - {name: arithmetic, path: $out/models/arithmetic}
  - {name: reverse, path: $out/models/reverse}
  - {name: cipher, path: $out/models/cipher}
reference: cipher
method: recall
data: $world/tasks/cipher/samples.jsonl
typical: {clusters: 16}
parallel: {stages: 2, micro_batch: 8}
output: {dir: $out/recall, dtype: float32}
YAML
sed -e 's/^method: recall/method: linear/' -e "s#dir: $out/recall#dir: $out/linear#" "$out/recall.yaml" > "$out/linear.yaml"
mpirun -np 4 --oversubscribe "$R" merge --config "$out/recall.yaml"
mpirun -np 2 --oversubscribe "$R" merge --config "$out/linear.yaml" --quiet
"$R" verify "$out/recall"
"$R" verify "$out/linear"

say "5/5 evaluating every model on every task"
for m in base "${tasks[@]}" recall linear; do
  dir="$out/models/$m"
  [ -d "$dir" ] || dir="$out/$m/hf"
  for t in "${tasks[@]}"; do
    "$R" eval --model "$dir" --data "$world/tasks/$t/test.jsonl" --out "$out/eval/$m.$t.json" \
      >"$out/eval/$m.$t.log" 2>&1 || { cat "$out/eval/$m.$t.log"; exit 1; }
  done
done
"$RECALL_PYTHON" - "$out" "${tasks[@]}" <<'PY'
import json, sys
out, tasks = sys.argv[1], sys.argv[2:]
rep = json.load(open(f"{out}/recall/report.json"))
print("RECALL per-block weights (rows: blocks; columns: " + ", ".join(rep["models"]) + ")")
for b in rep["blocks"]:
    print(f"  block {b['index']}: " + "  ".join(f"{w:.3f}" for w in b["weights"]) +
          "   similarity " + "  ".join(f"{s:.3f}" for s in b["similarity"]))
print("\ncompletion loss on 100 test prompts per task (lower is better) / exact-match accuracy")
print(f"{'model':<12}" + "".join(f"{t:>18}" for t in tasks) + f"{'mean loss':>12}")
for m in ["base"] + tasks + ["recall", "linear"]:
    cells, losses = [], []
    for t in tasks:
        c = json.load(open(f"{out}/eval/{m}.{t}.json"))["summary"]["completion"]
        cells.append(f"{c['loss']:.3f} / {c['exact_match']:.2f}")
        losses.append(c["loss"])
    print(f"{m:<12}" + "".join(f"{x:>18}" for x in cells) + f"{sum(losses) / len(losses):>12.3f}")
PY
say "done: outputs in $out (recall/, linear/: merged.h5, hf/, report.json, report.svg)"
