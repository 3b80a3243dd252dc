#!/usr/bin/env bash
# The whole Tulu 3 recipe on a CPU in minutes, on the bundled tiny task:
#   curate -> decontaminate -> sft -> prefs (on-policy pairs) -> dpo -> rlvr -> eval x4 -> compare
# Usage: tulu recipe tiny [--runs DIR] [--from STAGE] [--dry-run] [STAGE:key=value ...]
# Stages: curate decontaminate sft prefs dpo rlvr eval compare. Outputs go to runs/tiny/<stage>.
# A training stage replaces its earlier run (overwrite=true): it starts from the stage before it, which a
# rerun may have changed; `--from sft sft:resume=true` continues a killed SFT run instead.
set -euo pipefail
STAGES=(curate decontaminate sft prefs dpo rlvr eval compare)
RUNS=runs/tiny
source "$(dirname "$0")/lib.sh"
parse_recipe_args "$@"
TULU=${TULU:-tulu}
CLEAN=$RUNS/decontaminate/decontaminated

step curate "$TULU" curate conf=tiny output_dir=$RUNS/curate
# The tiny prompts are templated: two different problems with the same template share most of their
# 8-grams, so Tulu 3's 0.5 overlap threshold would flag every problem that shares a name and item with
# an eval problem. Only a whole match is contamination here (every n-gram of the eval prompt present,
# hence the ngram_fraction score); it removes the planted eval copies.
step decontaminate "$TULU" decontaminate conf=tiny "train=[$RUNS/curate/sft,$RUNS/curate/prefs,$RUNS/curate/rlvr]" \
  score=ngram_fraction threshold=1.0 remove=true output_dir=$RUNS/decontaminate
step sft "$TULU" sft conf=tiny data.train=$CLEAN/sft output_dir=$RUNS/sft overwrite=true
step prefs "$TULU" curate conf=prefs_tiny model.path=$RUNS/sft/final \
  prompts.sources.tiny_rlvr.path=$CLEAN/rlvr output_dir=$RUNS/prefs
step dpo "$TULU" dpo conf=tiny model.path=$RUNS/sft/final data.train=$RUNS/prefs/pairs output_dir=$RUNS/dpo \
  overwrite=true
step rlvr "$TULU" rlvr conf=tiny model.path=$RUNS/dpo/final data.train=$CLEAN/rlvr output_dir=$RUNS/rlvr \
  overwrite=true
for model in base sft dpo rlvr; do
  case $model in base) path=$RUNS/sft/initial ;; *) path=$RUNS/$model/final ;; esac
  step eval "$TULU" eval conf=tiny model.path=$path output_dir=$RUNS/eval/$model
done
if [ -z "$DRY_RUN" ]; then
  step compare "$TULU" eval compare base=$RUNS/eval/base sft=$RUNS/eval/sft dpo=$RUNS/eval/dpo \
    rlvr=$RUNS/eval/rlvr --plot $RUNS/compare.png
fi
