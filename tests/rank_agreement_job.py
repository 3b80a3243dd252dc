"""A 2-rank job for the rank agreements (`python -m tests.rank_agreement_job --run-dir DIR` under a
launcher profile); each rank writes its answers to DIR/answer_<rank>.json.

- `true_on_every_rank`: the main process creates DIR/target as soon as its own call returns, while
  rank 1 calls 2 seconds later; then both ask again.
- `agreed_checkpoint`: DIR/checkpoints holds a complete step 1; the main process lists it, then a
  complete step 2 appears before rank 1 (2 seconds late) lists the checkpoints.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tulu_cli.train.checkpoint import STATE_FILE, agreed_checkpoint, checkpoint_root, resolve_resume
from tulu_cli.train.runtime import make_accelerator, true_on_every_rank


def write_checkpoint(run_dir: Path, step: int) -> None:
    folder = checkpoint_root(run_dir) / f"step_{step:08d}"
    folder.mkdir(parents=True)
    (folder / STATE_FILE).write_text(json.dumps({"step": step}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir", type=Path, required=True)
    run_dir = parser.parse_args().run_dir
    accelerator = make_accelerator(1, 1, None)
    target = run_dir / "target"
    if not accelerator.is_main_process:
        time.sleep(2.0)
    missing = true_on_every_rank(accelerator, not target.exists())
    if accelerator.is_main_process:
        target.mkdir()
    # Asked again once it exists on the main process: whatever rank 1 sees by then, no rank answers True.
    again = true_on_every_rank(accelerator, not target.exists())

    if accelerator.is_main_process:
        write_checkpoint(run_dir, 1)
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        time.sleep(2.0)
    seen = resolve_resume(True, run_dir)
    if accelerator.is_main_process:
        write_checkpoint(run_dir, 2)
    resumed = agreed_checkpoint(accelerator, seen, run_dir)

    answer = {"missing": missing, "again": again, "seen": seen.name, "resumed": resumed.name}
    (run_dir / f"answer_{accelerator.process_index}.json").write_text(json.dumps(answer))
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main()
