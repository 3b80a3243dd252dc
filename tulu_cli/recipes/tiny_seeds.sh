#!/usr/bin/env bash
# The tiny recipe once per seed, then one table of each stage's mean and spread over the seeds, with the
# gain of each stage over the one before it: whether a stage's gain is larger than seed noise.
# Usage: tulu recipe tiny_seeds [SEED ...] [--runs DIR] [STAGE:key=value ...]   (seeds default: 1 2 3)
# Seed N runs in DIR/seedN (default runs/tiny_seeds/seedN); the table also goes to DIR/compare.txt.
set -euo pipefail
RUNS=runs/tiny_seeds
SEEDS=()
PASS=()
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    --runs) RUNS="$2"; shift 2 ;;
    --runs=*) RUNS="${1#--runs=}"; shift ;;
    [0-9]*) SEEDS+=("$1"); shift ;;
    *) PASS+=("$1"); shift ;;
  esac
done
[ ${#SEEDS[@]} -gt 0 ] || SEEDS=(1 2 3)
TULU=${TULU:-tulu}
COLUMNS_ARGS=()
for seed in "${SEEDS[@]}"; do
  echo "=== seed $seed"
  bash "$(dirname "$0")/tiny.sh" --seed "$seed" --runs "$RUNS/seed$seed" "${PASS[@]}"
done
for model in base sft dpo rlvr; do
  for seed in "${SEEDS[@]}"; do COLUMNS_ARGS+=("$model=$RUNS/seed$seed/eval/$model"); done
done
[[ " ${PASS[*]} " == *" --dry-run "* ]] && exit 0
"$TULU" eval compare --mean "${COLUMNS_ARGS[@]}" | tee "$RUNS/compare.txt"
