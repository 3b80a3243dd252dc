"""A 2-rank job for `true_on_every_rank` (`python -m tests.rank_agreement_job --run-dir DIR` under a
launcher profile): the main process creates DIR/target as soon as its own call returns, while rank 1
calls 2 seconds later; then both ask again. Each rank writes its answers to DIR/answer_<rank>.json."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tulu_cli.train.runtime import make_accelerator, true_on_every_rank


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
    answer = {"missing": missing, "again": again}
    (run_dir / f"answer_{accelerator.process_index}.json").write_text(json.dumps(answer))
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main()
