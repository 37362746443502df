#!/bin/bash
# Submits a continual-learning chain (fine-tune -> merge -> fine-tune -> ...) as Slurm jobs
# linked with --dependency=afterok, so each step starts only when the steps it needs succeeded
# (and is cancelled if one of them failed).
#
#   slurm/continual.sh PLAN [--dry-run]
#
# PLAN is a text file, one step per line (blank lines and lines starting with # are ignored):
#
#   NAME  KIND  [after=STEP[,STEP...]|after=none]  [--sbatch-option ...]  --  ARGUMENTS...
#
#   KIND      finetune  ARGUMENTS go to `recall finetune` (slurm/finetune.sbatch)
#             merge     ARGUMENTS are CONFIG.yaml [--set key=value ...] (slurm/merge.sbatch)
#             sweep     ARGUMENTS are a planned SWEEPDIR (slurm/sweep.sbatch; give --array=0-N)
#   after=    the steps this one waits for; default: the step on the line before (a chain)
#   --...     options for this step's sbatch (--nodes=4 --ntasks-per-node=8 --gpus-per-task=1 ...)
#
# Quotes group words as in a shell ("--set output.dir=/a b"). Example (docs/slurm.md):
#
#   ft_math   finetune --gpus-per-task=1 -- --model /m/base --data math.jsonl --out /m/math --device cuda
#   merge1    merge    --nodes=1 --ntasks-per-node=8 -- configs/merge1.yaml
#
# The whole plan is checked before anything is submitted. Every step script skips work that is
# already complete, so submitting the same plan again after a failure resumes it.
# With --dry-run the sbatch command lines are printed and nothing is submitted.
set -euo pipefail

usage() { echo "usage: slurm/continual.sh PLAN [--dry-run]" >&2; exit 2; }
[ $# -ge 1 ] || usage
PLAN=$1
DRY=0
[ $# -ge 2 ] && { [ "$2" = "--dry-run" ] || usage; DRY=1; }
[ -f "$PLAN" ] || { echo "continual: plan '$PLAN' does not exist" >&2; exit 2; }
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ $DRY -eq 0 ] && ! command -v sbatch > /dev/null; then
  echo "continual: sbatch not found (is Slurm installed here? use --dry-run to only print the commands)" >&2
  exit 2
fi

# ---- pass 1: parse and check every line; nothing is submitted if any line is wrong ----------
names=() kinds=() deps=() sbopts=() stepargs=()
declare -A known=()
n=0
lineno=0
prev=""
while IFS= read -r line || [ -n "$line" ]; do
  lineno=$((lineno + 1))
  trimmed="${line#"${line%%[![:space:]]*}"}"
  [ -z "$trimmed" ] && continue
  [ "${trimmed:0:1}" = "#" ] && continue
  where="$PLAN:$lineno"
  # Split into words honouring quotes (xargs does the shell-like splitting).
  if ! words_raw=$(printf '%s\n' "$trimmed" | xargs printf '%s\0' 2> /dev/null | tr '\0' '\037'); then
    echo "continual: $where: unbalanced quotes" >&2
    exit 2
  fi
  IFS=$'\037' read -r -a words <<< "$words_raw"
  [ ${#words[@]} -ge 2 ] || { echo "continual: $where: expected 'NAME KIND ... -- ARGUMENTS', got: $trimmed" >&2; exit 2; }
  name=${words[0]} kind=${words[1]}
  [[ "$name" =~ ^[A-Za-z0-9_.-]+$ ]] || { echo "continual: $where: step name '$name' must use letters, digits, _ . -" >&2; exit 2; }
  [ -z "${known[$name]:-}" ] || { echo "continual: $where: step '$name' is defined twice (first on line ${known[$name]})" >&2; exit 2; }
  case "$kind" in
    finetune | merge | sweep) ;;
    *) echo "continual: $where: unknown kind '$kind' (expected finetune, merge or sweep)" >&2; exit 2 ;;
  esac
  after="$prev" opts="" args="" seen_sep=0
  for ((i = 2; i < ${#words[@]}; i++)); do
    w=${words[$i]}
    if [ $seen_sep -eq 1 ]; then args+="${w}"$'\037'; continue; fi
    case "$w" in
      --) seen_sep=1 ;;
      after=none) after="" ;;
      after=*)
        after=${w#after=}
        IFS=',' read -r -a want <<< "$after"
        for d in "${want[@]}"; do
          [ -n "${known[$d]:-}" ] || { echo "continual: $where: step '$name' is after '$d', which is not an earlier step" >&2; exit 2; }
        done ;;
      --*) opts+="${w}"$'\037' ;;
      *) echo "continual: $where: '$w' before '--' is neither after=... nor an sbatch --option" >&2; exit 2 ;;
    esac
  done
  [ -n "$args" ] || { echo "continual: $where: step '$name' has no arguments after '--'" >&2; exit 2; }
  if [ "$kind" = merge ]; then
    cfg=${args%%$'\037'*}
    [ -f "$cfg" ] || { echo "continual: $where: merge config '$cfg' does not exist" >&2; exit 2; }
  fi
  names+=("$name") kinds+=("$kind") deps+=("$after") sbopts+=("$opts") stepargs+=("$args")
  known[$name]=$lineno
  prev=$name
  n=$((n + 1))
done < "$PLAN"
[ $n -gt 0 ] || { echo "continual: $PLAN lists no steps" >&2; exit 2; }

# ---- pass 2: submit in order, each with afterok on the job ids of its dependencies ----------
declare -A ids=()
for ((s = 0; s < n; s++)); do
  name=${names[$s]} kind=${kinds[$s]}
  IFS=$'\037' read -r -a opts <<< "${sbopts[$s]}"
  IFS=$'\037' read -r -a args <<< "${stepargs[$s]}"
  dep=()
  if [ -n "${deps[$s]}" ]; then
    IFS=',' read -r -a want <<< "${deps[$s]}"
    list=""
    for d in "${want[@]}"; do list+=":${ids[$d]}"; done
    dep=(--dependency="afterok$list" --kill-on-invalid-dep=yes)
  fi
  cmd=(sbatch --parsable --job-name="recall-$name" "${dep[@]}" "${opts[@]}" "$HERE/$kind.sbatch" "${args[@]}")
  if [ $DRY -eq 1 ]; then
    printf '%q ' "${cmd[@]}"
    echo
    id="dry$s"
  else
    out=$("${cmd[@]}") || { echo "continual: submitting step '$name' failed; steps before it stay queued" >&2; exit 1; }
    id=${out%%;*}
  fi
  ids[$name]=$id
  echo "step $name ($kind): job $id${deps[$s]:+, after ${deps[$s]}}"
done
