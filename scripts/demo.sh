#!/usr/bin/env bash
# The demo: installs what is missing, builds, then builds a small world and merges it.
#   1. generates a corpus of stories and three tasks (arithmetic in words, reversing words, a word
#      cipher), a tokenizer and a random tiny Llama (scripts/demo_world.py);
#   2. pretrains the tiny Llama on the stories with `recall finetune`;
#   3. fine-tunes one expert per task from it;
#   4. merges the experts with RECALL (reference: the newest expert, cipher) and with the linear
#      baseline, each on N MPI ranks and into a full output directory under out/demo/;
#   5. evaluates every model on every task, prints the per-block weights and a results table, and
#      says how to read it.
# Each step says what it does before it starts. N is the machine's cores, at most 6 (the RECALL
# merge has 3 models x 2 pipeline stages = 6 cells, one rank each at most).
# Environment: RECALL_DEMO_OUT (default out/demo), RECALL_DEMO_PRETRAIN_STEPS (400),
# RECALL_DEMO_TASK_STEPS (200), RECALL_DEMO_RANKS (N above; 1-6).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
start=$(date +%s)
say() { printf '\n== %s (%ss)\n' "$*" $(( $(date +%s) - start )); }
note() { printf '   %s\n' "$@"; }

cores=$(nproc)
ranks=${RECALL_DEMO_RANKS:-$(( cores < 6 ? cores : 6 ))}
if ! [[ "$ranks" =~ ^[1-6]$ ]]; then
  echo "demo: RECALL_DEMO_RANKS must be 1 to 6 (the RECALL merge has 3 models x 2 stages = 6 cells), got '$ranks'" >&2
  exit 2
fi
out=${RECALL_DEMO_OUT:-$here/out/demo}
world="$out/world"
pretrain_steps=${RECALL_DEMO_PRETRAIN_STEPS:-400}
task_steps=${RECALL_DEMO_TASK_STEPS:-200}
tasks=(arithmetic reverse cipher)

say "0/5 setting up: Debian packages, the Python environment, and the build of recall"
note "missing Debian packages and the Python environment (torch, transformers; a few GB) are installed" \
     "once; then recall is built (Release) into build/ - the first build compiles everything and takes" \
     "minutes, later ones only what changed"
source "$here/scripts/setup.sh"
# Ninja prints a line per compiled file: show each tenth of the way, and every other line (errors).
recall_build 2>&1 | awk '/^\[[0-9]+\/[0-9]+\]/ {
    split(substr($1, 2), a, "/"); n = a[1] + 0; t = a[2] + 0
    if (t != total) { total = t; shown = 0 }
    if (n > 0 && (int(10 * n / t) > shown || n == t)) { shown = int(10 * n / t); printf "   build: %d of %d steps\n", n, t }
    next }
  { print "   " $0 }'
R="$here/build/bin/recall"

say "1/5 generating the demo world in $world"
note "3000 generated stories, three tasks of 2000 training and 100 test prompts each (add two numbers" \
     "in words, reverse three words, translate two words with a made-up cipher), a 384-token" \
     "SentencePiece tokenizer trained on all of it, and a randomly initialised Llama of 4 blocks x 128"
rm -rf "$out"
mkdir -p "$out/models" "$out/eval"
"$RECALL_PYTHON" "$here/scripts/demo_world.py" "$world" 2>&1 | grep -v "Writing model shards" || true

say "2/5 pretraining the tiny Llama on the stories ($pretrain_steps steps)"
note "recall finetune: AdamW with warm-up and cosine decay, batches of 16 stories; the loss, printed" \
     "every 50 steps, starts near ln(384) = 5.95 (a uniform guess over the vocabulary) and falls as it learns"
"$R" finetune --model "$world/init" --data "$world/pretrain.jsonl" --out "$out/models/base" \
  --steps "$pretrain_steps" --batch 16 --lr 3e-3 --warmup 20 --seed 0 --log-every 50 | grep -v '^losses:'

say "3/5 fine-tuning one expert per task from the pretrained model ($task_steps steps each)"
note "each expert learns one task and, as fine-tuning does, drifts from what the others learned;" \
     "the loss is on the completion given the prompt, printed every 100 steps"
for t in "${tasks[@]}"; do
  note "expert '$t':"
  "$R" finetune --model "$out/models/base" --data "$world/tasks/$t/train.jsonl" --out "$out/models/$t" \
    --steps "$task_steps" --batch 16 --lr 3e-4 --warmup 10 --seed 1 --log-every 100 | grep -v '^losses:'
done

say "4/5 merging the three experts: RECALL, then the linear baseline, on $ranks MPI rank(s) each"
note "RECALL picks 16 typical samples of the newest task (cipher; its expert is the reference), runs them" \
     "through every expert, and weights each expert per block by how similar its hidden states are to" \
     "the reference's; linear gives every expert 1/3 everywhere. recall verify then checks every" \
     "checksum of both outputs. ($ranks rank(s): the machine has $cores core(s); RECALL_DEMO_RANKS overrides)"
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
mpirun -np "$ranks" "$R" merge --config "$out/recall.yaml"
mpirun -np "$ranks" "$R" merge --config "$out/linear.yaml" --quiet
"$R" verify "$out/recall"
"$R" verify "$out/linear"

models=(base "${tasks[@]}" recall linear)
say "5/5 evaluating ${#models[@]} models on ${#tasks[@]} tasks (100 test prompts each)"
note "recall eval: the loss of each test completion given its prompt, and whether the greedy" \
     "completion is exactly right; one line per model as its three evaluations finish"
for m in "${models[@]}"; do
  dir="$out/models/$m"
  [ -d "$dir" ] || dir="$out/$m/hf"
  line=""
  for t in "${tasks[@]}"; do
    t0=$(date +%s)
    "$R" eval --model "$dir" --data "$world/tasks/$t/test.jsonl" --out "$out/eval/$m.$t.json" \
      >"$out/eval/$m.$t.log" 2>&1 || { cat "$out/eval/$m.$t.log"; exit 1; }
    line+=" $t $(( $(date +%s) - t0 )) s,"
  done
  note "$m:${line%,}"
done
"$RECALL_PYTHON" "$here/scripts/demo_report.py" "$out" "${tasks[@]}"
say "done: outputs in $out (recall/, linear/: merged.h5, hf/, report.json, report.svg)"
