#!/usr/bin/env bash
# Tulu 3 8B: Llama 3.1 8B -> SFT -> DPO -> RLVR (PPO) with the published hyperparameters, on one
# 8-GPU node (ZeRO-3). Options as `tulu recipe tulu3`, e.g. --dry-run, --from dpo, sft:launcher=multinode.
exec "$(dirname "$0")/tulu3.sh" 8b "$@"
