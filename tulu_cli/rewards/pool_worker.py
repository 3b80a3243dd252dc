"""A verifier worker process, started by `VerifierPool` (pool.py): `python -m tulu_cli.rewards.pool_worker
READ_FD WRITE_FD PARENT_PID`.

Messages are JSON over `multiprocessing.connection` framing. In: a setup `{"path": [...]}`, then chunks
`{"kind": "row"|"line", "loose": bool, "timeout_s": float, "profile": str, "plugins": [...], "items": [...]}`. Out:
`["ready"]`; `["start", t]` when a chunk starts; `[t, *payload]` after each item (t: time.monotonic()
when it finished, a clock shared by all processes of the machine); `["pause"]` / `["resume", t]` around
a verifier's one-time start-up (registry.warming_up), which is not charged to the row.
"""

from __future__ import annotations

import ctypes
import importlib
import json
import os
import signal
import sys
import time
from multiprocessing.connection import Connection

PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid: int) -> None:
    """A hung worker cannot notice its parent's death, so ask the kernel to kill it then (Linux)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:
        os._exit(0)


def _score(kind: str, item: list, loose: bool, timeout_s: float, profile: str) -> list:
    if kind == "row":
        from tulu_cli.rewards.registry import score_task

        result = score_task(item, loose=loose, timeout_s=timeout_s, profile=profile)
        return [result.score, result.error, result.timed_out]
    from tulu_cli.rewards.verify_file import score_line

    return score_line(item[0], item[1], loose=loose, timeout_s=timeout_s, profile=profile)


def main() -> None:
    read_fd, write_fd, parent_pid = (int(value) for value in sys.argv[1:4])
    _die_with_parent(parent_pid)
    inbox, outbox = Connection(read_fd, writable=False), Connection(write_fd, readable=False)

    def send(message: list) -> None:
        outbox.send_bytes(json.dumps(message).encode())

    sys.path[:] = json.loads(inbox.recv_bytes())["path"]
    from tulu_cli.rewards.registry import add_warm_up_hooks, known_datasets

    known_datasets()
    add_warm_up_hooks(lambda: send(["pause"]), lambda: send(["resume", time.monotonic()]))
    imported: set[str] = set()
    send(["ready"])
    while True:
        try:
            chunk = json.loads(inbox.recv_bytes())
        except EOFError:
            return
        for module in set(chunk["plugins"]) - imported:
            imported.add(module)
            try:
                importlib.import_module(module)
            except Exception as exc:  # its rows then report "no verifier for dataset ..."
                print(f"verifier worker: cannot import {module}: {exc}", file=sys.stderr, flush=True)
        send(["start", time.monotonic()])
        for item in chunk["items"]:
            payload = _score(chunk["kind"], item, chunk["loose"], chunk["timeout_s"], chunk["profile"])
            send([time.monotonic(), *payload])


if __name__ == "__main__":
    main()
