"""A verifier worker process, started by `VerifierPool` (pool.py): `python -m tulu_cli.rewards.pool_worker
READ_FD WRITE_FD PARENT_PID`.

In (`multiprocessing.connection` framing): a setup `{"path": [...]}`, then chunks: a JSON header line
`{"kind": "row"|"line", "loose": bool, "timeout_s": float, "profile": str, "plugins": [...], ...}` with
`"items": [...]` for "row" chunks, or `"numbers": [...]` for "line" chunks followed by their texts, one a
line. Out, one JSON array a line: `["ready"]`; `["start", t]` when a chunk starts; `[t, *payload]` after
each item (t: time.monotonic() when it finished, a clock shared by all processes of the machine);
`["pause"]` / `["resume", t]` around a verifier's one-time start-up (registry.warming_up), which is not
charged to the row.
"""

from __future__ import annotations

import ctypes
import importlib
import json
import os
import signal
import sys
import time
from collections.abc import Iterable
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

    # The parent holds the line: it appends the fields itself where it can (verify_file.complete_line).
    return score_line(item[0], item[1], loose=loose, timeout_s=timeout_s, profile=profile, compact=True)


def _items(message: bytes) -> tuple[dict, Iterable[list]]:
    header, _, texts = message.partition(b"\n")
    chunk = json.loads(header)
    if chunk["kind"] == "line":
        return chunk, zip(chunk["numbers"], texts.decode("utf-8").split("\n"), strict=True)
    return chunk, chunk["items"]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def main() -> None:
    read_fd, write_fd, parent_pid = (int(value) for value in sys.argv[1:4])
    _die_with_parent(parent_pid)
    inbox = Connection(read_fd, writable=False)

    def send(message: list) -> None:
        _write_all(write_fd, json.dumps(message).encode() + b"\n")

    sys.path[:] = json.loads(inbox.recv_bytes())["path"]
    from tulu_cli.rewards.registry import add_warm_up_hooks, known_datasets

    known_datasets()
    add_warm_up_hooks(lambda: send(["pause"]), lambda: send(["resume", time.monotonic()]))
    imported: set[str] = set()
    send(["ready"])
    while True:
        try:
            chunk, items = _items(inbox.recv_bytes())
        except EOFError:
            return
        for module in set(chunk["plugins"]) - imported:
            imported.add(module)
            try:
                importlib.import_module(module)
            except Exception as exc:  # its rows then report "no verifier for dataset ..."
                print(f"verifier worker: cannot import {module}: {exc}", file=sys.stderr, flush=True)
        send(["start", time.monotonic()])
        for item in items:
            payload = _score(chunk["kind"], item, chunk["loose"], chunk["timeout_s"], chunk["profile"])
            send([time.monotonic(), *payload])


if __name__ == "__main__":
    main()
