"""The contract between `tulu` and a launched stage process.

`tulu` writes the resolved config to `RUN_DIR/config.yaml` and launches
`python -m tulu_cli.<module> --run-dir RUN_DIR` (under torchrun/accelerate when distributed).
Each stage module ends with `entrypoint(main)`, where `main(cfg, run_dir)` does the work.
A failure is summarised in `RUN_DIR/logs/failure.txt` (rank 0) so the parent can show it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from tulu_cli.errors import StageError
from tulu_cli.launch import PARENT_PID_ENV

__all__ = ["FAILURE_FILE", "StageError", "entrypoint"]

FAILURE_FILE = "logs/failure.txt"
PARENT_POLL_S = 0.5


def entrypoint(main: Callable[[DictConfig, Path], None]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir", required=True, type=Path)
    args = parser.parse_args()
    run_dir: Path = args.run_dir
    stop_with_parent()
    cfg = OmegaConf.load(run_dir / "config.yaml")
    try:
        main(cfg, run_dir)
    except Exception as exc:  # noqa: BLE001 - every failure is summarised for the parent
        rank = int(os.environ.get("RANK", "0"))
        summary = f"{type(exc).__name__}: {exc}" if isinstance(exc, StageError) else (
            f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc()}")
        if rank == 0:
            failure = run_dir / FAILURE_FILE
            failure.parent.mkdir(parents=True, exist_ok=True)
            failure.write_text(summary)
        print(f"[rank {rank}] {summary}", file=sys.stderr, flush=True)
        sys.exit(1)


def stop_with_parent() -> None:
    """When launched by `tulu`, die with it: a killed `tulu` must not leave a stage training on.

    Every process of the stage runs this (workers of torchrun/accelerate too, which the launcher may
    start in sessions of their own), so none outlives the `tulu` process that owns the run directory.
    """
    parent = os.environ.get(PARENT_PID_ENV)
    if not parent or not parent.isdigit():
        return

    def watch() -> None:
        while process_alive(int(parent)):
            time.sleep(PARENT_POLL_S)
        print(f"[rank {os.environ.get('RANK', '0')}] the tulu process {parent} is gone: stopping", file=sys.stderr,
              flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="stop-with-parent", daemon=True).start()


def process_alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie, killed but not yet reaped, is not)."""
    if os.path.exists("/proc/self/stat"):
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
                return handle.read().rsplit(")", 1)[-1].split()[0] not in ("Z", "X")
        except (FileNotFoundError, ProcessLookupError):
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True
