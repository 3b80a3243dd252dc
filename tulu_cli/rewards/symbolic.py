"""Symbolic answer comparison under a hard wall-clock limit.

`signal.alarm` only works in the main thread and cannot stop C-level loops reliably, so the work runs in
a long-lived child process (one per parent process) which is killed and restarted when a call overruns.
Safe to call from any thread (calls are serialised) and from inside worker processes. A comparison that
runs out of time raises `VerifyTimeout`.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

from tulu_cli.rewards.registry import VerifyTimeout, warming_up

_WORKER_SCRIPT = Path(__file__).with_name("symbolic_worker.py")
# Starting the child (importing sympy) is not charged to a comparison's budget.
STARTUP_TIMEOUT_S = 120.0
# Longer candidate answers are not parsed symbolically (a MATH answer is a short expression).
MAX_SYMBOLIC_CHARS = 1000


class SymbolicWorker:
    def __init__(self, script: Path = _WORKER_SCRIPT) -> None:
        self._script = script
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None
        self._pid = os.getpid()
        self._requests = 0

    def _alive(self) -> bool:
        # After a fork the child inherits the handle of its parent's worker: never share it.
        return self._proc is not None and self._pid == os.getpid() and self._proc.poll() is None

    def _start(self) -> None:
        with warming_up():
            self._spawn()

    def _spawn(self) -> None:
        self._pid = os.getpid()
        self._proc = subprocess.Popen(
            [sys.executable, str(self._script)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )
        if self._read_line(STARTUP_TIMEOUT_S) is None:
            self._kill()
            raise RuntimeError("the symbolic worker process did not start")

    def _read_line(self, timeout_s: float) -> str | None:
        assert self._proc is not None and self._proc.stdout is not None
        ready, _, _ = select.select([self._proc.stdout], [], [], max(0.0, timeout_s))
        if not ready:
            return None
        line = self._proc.stdout.readline()
        return line or None

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or self._pid != os.getpid():
            return
        proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()

    def start(self) -> None:
        with self._lock:
            if not self._alive():
                self._start()

    def call(self, op: str, first: str, second: str, timeout_s: float) -> bool | None:
        """True/False for the comparison (False when it failed), None when it ran out of time. A reply
        that is not this request's (a broken protocol) restarts the child and counts as out of time."""
        if timeout_s <= 0:
            return None
        with self._lock:
            if not self._alive():
                self._start()
            assert self._proc is not None and self._proc.stdin is not None
            deadline = time.monotonic() + timeout_s
            self._requests += 1
            request_id = self._requests
            try:
                self._proc.stdin.write(json.dumps({"id": request_id, "op": op, "a": first, "b": second}) + "\n")
                self._proc.stdin.flush()
            except OSError:
                self._kill()
                return None
            line = self._read_line(deadline - time.monotonic())
            if line is None:
                self._kill()
                return None
            try:
                reply = json.loads(line)
            except json.JSONDecodeError:
                reply = None
            if not isinstance(reply, dict) or reply.get("id") != request_id:
                self._kill()
                return None
            return bool(reply.get("ok"))

    def close(self) -> None:
        with self._lock:
            self._kill()


_WORKER = SymbolicWorker()
atexit.register(_WORKER.close)


def warm_up() -> None:
    """Start the child process now rather than on the first comparison."""
    _WORKER.start()


def _decided(answer: bool | None) -> bool:
    if answer is None:
        raise VerifyTimeout("the symbolic comparison ran out of time")
    return answer


def sympy_equal(first: str, second: str, timeout_s: float) -> bool:
    if max(len(first), len(second)) > MAX_SYMBOLIC_CHARS:
        return False
    return _decided(_WORKER.call("sympy_equal", first, second, timeout_s))


def math_verify_equal(gold: str, prediction: str, timeout_s: float) -> bool:
    return _decided(_WORKER.call("math_verify", gold, prediction, timeout_s))
