#!/usr/bin/env bash
# The published Tulu 3 recipe for one model size (used by tulu3_8b.sh and tulu3_70b.sh):
#   curate (SFT, preference and RLVR mixtures) -> decontaminate (against the Tulu 3 dev suite)
#   -> sft -> dpo -> rlvr -> eval of each trained stage -> compare
# Usage: tulu recipe tulu3 SIZE [--runs DIR] [--from STAGE] [--dry-run] [STAGE:key=value ...]
# SIZE is 8b or 70b. Stages: curate decontaminate sft dpo rlvr eval compare.
# A training stage never deletes an earlier run of its own (days of GPU time): rerunning into one stops with
# a message. Continue a killed stage with `--from sft sft:resume=true`, or replace it with `sft:overwrite=true`.
set -euo pipefail
SIZE="${1:?usage: $0 8b|70b [options]}"; shift
case "$SIZE" in 8b|70b) ;; *) echo "SIZE must be 8b or 70b" >&2; exit 2 ;; esac
# Continuing needs the size too, unless the recipe was started as tulu3_8b / tulu3_70b.
case "${TULU_RECIPE:=$0}" in *_"$SIZE") ;; *) TULU_RECIPE="$TULU_RECIPE $SIZE" ;; esac
STAGES=(curate decontaminate sft dpo rlvr eval compare)
RUNS=runs/tulu3_$SIZE
source "$(dirname "$0")/lib.sh"
parse_recipe_args "$@"
TULU=${TULU:-tulu}
PRESET=llama$SIZE
DATA=$RUNS/data
CLEAN=$RUNS/decontaminate/decontaminated

step curate "$TULU" curate conf=tulu3_sft output_dir=$DATA/sft
step curate "$TULU" curate conf=tulu3_prefs_$SIZE output_dir=$DATA/prefs
step curate "$TULU" curate conf=tulu3_rlvr output_dir=$DATA/rlvr
step decontaminate "$TULU" decontaminate conf=tulu3_sft \
  "train=[$DATA/sft/tulu3_sft,$DATA/prefs/tulu3_prefs_$SIZE,$DATA/rlvr/tulu3_rlvr]" remove=true \
  output_dir=$RUNS/decontaminate
step sft "$TULU" sft conf=$PRESET data.train=$CLEAN/tulu3_sft output_dir=$RUNS/sft
step dpo "$TULU" dpo conf=$PRESET model.path=$RUNS/sft/final data.train=$CLEAN/tulu3_prefs_$SIZE output_dir=$RUNS/dpo
step rlvr "$TULU" rlvr conf=$PRESET model.path=$RUNS/dpo/final data.train=$CLEAN/tulu3_rlvr output_dir=$RUNS/rlvr
for model in sft dpo rlvr; do
  step eval "$TULU" eval conf=tulu3_dev model.path=$RUNS/$model/final output_dir=$RUNS/eval/$model
done
if [ -z "$DRY_RUN" ]; then
  step compare "$TULU" eval compare sft=$RUNS/eval/sft dpo=$RUNS/eval/dpo rlvr=$RUNS/eval/rlvr \
    --plot $RUNS/compare.png
fi
