#!/usr/bin/env bash
# Tulu 3 70B: Llama 3.1 70B -> SFT -> DPO -> RLVR (PPO) with the published hyperparameters, on
# several 8-GPU nodes (launcher=multinode; set MASTER_ADDR, NUM_MACHINES, MACHINE_RANK or run under SLURM).
exec "$(dirname "$0")/tulu3.sh" 70b "$@"
