"""Verifier worker processes with a wall-clock limit on every row, however the verifier hangs.

A pure-Python loop or a C-level regular expression cannot be interrupted inside its own process (neither
a signal handler nor another thread runs while `re` holds the GIL), so rows are scored in long-lived
worker processes (pool_worker.py). When a worker's current row runs past its limit, the worker is
killed with its process group (its symbolic child too) and replaced: the row scores 0 as timed out and
the rest of its chunk goes to the replacement. Rows travel in chunks, so the fast path costs a few
microseconds of messaging per row, and results come back in input order.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import select
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from tulu_cli.rewards.registry import Task, VerifyResult, plugin_modules, timed_out_result

# A cooperative verifier (the symbolic step) reports its own timeout; a hung one is killed this late.
KILL_GRACE_S = 0.25
STARTUP_TIMEOUT_S = 120.0
CHUNK_ROWS = 64
CHUNK_CHARS = 1 << 20
# Chunks a worker may hold (one running, one waiting), and rows read ahead per worker.
CHUNKS_IN_FLIGHT = 2
READ_AHEAD_CHUNKS = 4
# Bytes of replies read from a worker at once.
READ_BYTES = 1 << 20
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]

Payload = list
Failed = Callable[[Any, VerifyResult], Payload]
Complete = Callable[[Any, Payload], Payload]


@dataclass(frozen=True)
class Ready:
    """An item whose payload is already known (a row rejected before any verifier ran)."""

    payload: Payload


@dataclass
class _Job:
    seq: int
    item: Any
    # The item as the chunk carries it: JSON, or for a "line" item its text (see `_chunk`).
    encoded: str
    # The last row of the chunk it was sent in.
    last: bool = False


class _Worker:
    def __init__(self) -> None:
        to_child_read, to_child_write = os.pipe()
        from_child_read, from_child_write = os.pipe()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_PACKAGE_ROOT), env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tulu_cli.rewards.pool_worker",
             str(to_child_read), str(from_child_write), str(os.getpid())],
            pass_fds=(to_child_read, from_child_write),
            stdin=subprocess.DEVNULL,
            env=env,
            # Its own process group, so a kill reaches the symbolic child it may have started.
            start_new_session=True,
        )  # fmt: skip
        os.close(to_child_read)
        os.close(from_child_write)
        # Replies come as JSON lines, read in bulk; `partial` holds the start of an unfinished one.
        self.inbox = from_child_read
        self.partial = b""
        self._outbox = Connection(to_child_write, readable=False)
        # Sends happen on a thread: a write to a worker stuck mid-chunk must never block the clock.
        self._sends: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._sender = threading.Thread(target=self._send_loop, daemon=True)
        self._sender.start()
        self.spawned = time.monotonic()
        self.ready = False
        self.pending: deque[_Job] = deque()
        self.chunks = 0
        # When the row at the head of `pending` started (None: not started, or clock paused).
        self.clock: float | None = None
        self.paused_since: float | None = None
        path = [os.getcwd() if entry == "" else entry for entry in sys.path]
        self.send(json.dumps({"path": path}).encode())

    def _send_loop(self) -> None:
        while (message := self._sends.get()) is not None:
            try:
                self._outbox.send_bytes(message)
            except OSError:
                return

    def send(self, message: bytes) -> None:
        self._sends.put(message)

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        self._sends.put(None)
        self._sender.join(timeout=5)
        os.close(self.inbox)
        self._outbox.close()


class VerifierPool:
    """`workers` verifier processes; `run` scores items in order, each within its time limit."""

    def __init__(self, workers: int = 1) -> None:
        self.workers = max(1, int(workers))
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._procs: list[_Worker] = []
        # Longest time one row took, killed rows included, and workers replaced after a hang or crash.
        self.slowest_row_s = 0.0
        self.replaced = 0

    def __enter__(self) -> VerifierPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._pid != os.getpid():
            return
        for worker in self._procs:
            worker.kill()
        self._procs = []

    def run_rows(self, tasks: Iterable[Task | VerifyResult], *, loose: bool, timeout_s: float,
                 profile: str = "default") -> Iterator[VerifyResult]:  # fmt: skip
        """Results of `registry.row_task` outputs, in order (a VerifyResult passes straight through)."""
        items = (
            Ready([task.score, task.error, task.timed_out]) if isinstance(task, VerifyResult) else task
            for task in tasks
        )
        for payload in self.run(
            "row", items, loose=loose, timeout_s=timeout_s, profile=profile,
            failed=lambda item, result: [result.score, result.error, result.timed_out],
        ):  # fmt: skip
            yield VerifyResult(*payload)

    def run(self, kind: str, items: Iterable[Any], *, loose: bool, timeout_s: float, failed: Failed,
            profile: str = "default", complete: Complete | None = None) -> Iterator[Payload]:  # fmt: skip
        """Payloads of `items` in order; `failed(item, result)` makes the payload of a row that hung or
        whose worker died, `complete(item, payload)` (when given) the final payload from a worker's reply.
        Reads ahead a bounded number of items, so memory does not grow with rows."""
        with self._lock:
            if self._pid != os.getpid():
                raise RuntimeError("a VerifierPool cannot be used from a forked child process")
            run = _Run(self, kind, loose, float(timeout_s), failed, profile, complete)
            try:
                yield from run.results(iter(items))
            finally:
                run.abandon()

    def _workers(self) -> list[_Worker]:
        while len(self._procs) < self.workers:
            self._procs.append(_Worker())
        return self._procs

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        self._procs[self._procs.index(worker)] = _Worker()
        self.replaced += 1


class _Run:
    """The bookkeeping of one `VerifierPool.run` call."""

    def __init__(self, pool: VerifierPool, kind: str, loose: bool, timeout_s: float, failed: Failed,
                 profile: str, complete: Complete | None):  # fmt: skip
        self.pool, self.kind, self.loose, self.timeout_s, self.failed = pool, kind, loose, timeout_s, failed
        self.profile, self.complete = profile, complete
        self.queued: deque[_Job] = deque()
        self.done: dict[int, Payload] = {}
        self.plugins = plugin_modules()

    def results(self, source: Iterator[Any]) -> Iterator[Payload]:
        next_seq = next_out = 0
        exhausted = False
        window = self.pool.workers * CHUNK_ROWS * READ_AHEAD_CHUNKS
        while True:
            while not exhausted and next_seq - next_out < window:
                item = next(source, _END)
                if item is _END:
                    exhausted = True
                elif isinstance(item, Ready):
                    self.done[next_seq] = item.payload
                    next_seq += 1
                else:
                    encoded = item[1] if self.kind == "line" else json.dumps(item, ensure_ascii=False)
                    self.queued.append(_Job(next_seq, item, encoded))
                    next_seq += 1
            while next_out in self.done:
                yield self.done.pop(next_out)
                next_out += 1
            if exhausted and next_out == next_seq:
                return
            self._dispatch()
            self._collect()

    def _dispatch(self) -> None:
        for worker in self.pool._workers():
            if not worker.pending and worker.ready and worker.proc.poll() is not None:
                self.pool._replace(worker)  # died while idle: nothing to charge
                continue
            while self.queued and worker.ready and worker.chunks < CHUNKS_IN_FLIGHT:
                jobs, chars = [], 0
                while self.queued and len(jobs) < CHUNK_ROWS and (not jobs or chars < CHUNK_CHARS):
                    job = self.queued.popleft()
                    job.last = False
                    jobs.append(job)
                    chars += len(job.encoded)
                jobs[-1].last = True
                worker.send(self._chunk(jobs))
                worker.pending.extend(jobs)
                worker.chunks += 1

    def _chunk(self, jobs: list[_Job]) -> bytes:
        """A JSON header line; then for "line" items their texts, one a line (a JSONL line holds no
        newline), their numbers in the header; else `items` in the header, as JSON."""
        header = {"kind": self.kind, "loose": self.loose, "timeout_s": self.timeout_s, "profile": self.profile,
                  "plugins": self.plugins}  # fmt: skip
        if self.kind == "line":
            header["numbers"] = [job.item[0] for job in jobs]
            return (json.dumps(header) + "\n" + "\n".join(job.encoded for job in jobs)).encode()
        encoded = json.dumps(header)
        return f'{encoded[:-1]}, "items": [{",".join(job.encoded for job in jobs)}]}}'.encode()

    def _collect(self) -> None:
        """Wait for replies (or the next deadline), then kill and replace any worker past its limit."""
        workers = self.pool._workers()
        now = time.monotonic()
        wait_s = min([0.5, *(deadline - now for deadline in map(self._deadline, workers) if deadline)])
        poller = select.poll()
        for worker in workers:
            poller.register(worker.inbox, select.POLLIN)
        ready = {fd for fd, _ in poller.poll(max(0.0, wait_s) * 1000)}
        for worker in list(workers):
            if worker.inbox in ready and not self._drain(worker):
                self._worker_died(worker)
        now = time.monotonic()
        for worker in list(self.pool._workers()):
            deadline = self._deadline(worker)
            if not worker.ready and now - worker.spawned > STARTUP_TIMEOUT_S:
                worker.kill()
                raise RuntimeError(f"a verifier worker process did not start within {STARTUP_TIMEOUT_S:g}s")
            if deadline and now > deadline:
                self._fail_head(worker, timed_out_result(self.timeout_s), now)

    def _deadline(self, worker: _Worker) -> float | None:
        if worker.paused_since is not None:
            return worker.paused_since + STARTUP_TIMEOUT_S
        if worker.pending and worker.clock is not None:
            return worker.clock + self.timeout_s + KILL_GRACE_S
        return None

    def _drain(self, worker: _Worker) -> bool:
        """Handle the messages waiting from `worker` (one read); False when it has exited."""
        try:
            data = os.read(worker.inbox, READ_BYTES)
        except OSError:
            return False
        if not data:
            return False
        *lines, worker.partial = (worker.partial + data).split(b"\n")
        for line in lines:
            self._handle(worker, json.loads(line))
        return True

    def _handle(self, worker: _Worker, message: list) -> None:
        tag = message[0]
        if tag == "ready":
            worker.ready = True
        elif tag == "start":
            worker.clock = message[1]
        elif tag == "pause":
            worker.clock, worker.paused_since = None, time.monotonic()
        elif tag == "resume":
            worker.clock, worker.paused_since = message[1], None
        else:
            job = worker.pending.popleft()
            payload = message[1:]
            self.done[job.seq] = payload if self.complete is None else self.complete(job.item, payload)
            if worker.clock is not None:
                self.pool.slowest_row_s = max(self.pool.slowest_row_s, tag - worker.clock)
            worker.clock = tag if worker.pending else None
            worker.chunks -= job.last

    def _worker_died(self, worker: _Worker) -> None:
        code = worker.proc.wait()
        if not worker.ready:
            raise RuntimeError(f"a verifier worker process failed to start (exit code {code})")
        if worker.pending:
            self._fail_head(worker, VerifyResult(0.0, f"the verifier process died (exit code {code})"))
        else:
            self.pool._replace(worker)

    def _fail_head(self, worker: _Worker, result: VerifyResult, now: float | None = None) -> None:
        """The row `worker` is stuck on gets `result`; its other rows go back to the front of the queue."""
        job = worker.pending.popleft()
        if now is not None and worker.clock is not None:
            self.pool.slowest_row_s = max(self.pool.slowest_row_s, now - worker.clock)
        self.done[job.seq] = self.failed(job.item, result)
        self.queued.extendleft(reversed(worker.pending))
        worker.pending.clear()
        self.pool._replace(worker)

    def abandon(self) -> None:
        """A run left early (an exception in the consumer): workers still busy with it are replaced."""
        for worker in list(self.pool._procs):
            if worker.pending:
                worker.pending.clear()
                self.pool._replace(worker)


_END = object()
_SHARED: dict[int, VerifierPool] = {}
_SHARED_LOCK = threading.Lock()


def shared_pool(workers: int) -> VerifierPool:
    """This process's long-lived pool of `workers` processes (started once, reused by every batch)."""
    with _SHARED_LOCK:
        pool = _SHARED.get(workers)
        if pool is None or pool._pid != os.getpid():
            pool = _SHARED[workers] = VerifierPool(workers)
        return pool


@atexit.register
def _close_shared_pools() -> None:
    for pool in _SHARED.values():
        pool.close()
