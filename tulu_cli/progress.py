"""Progress of long loops (training steps, tokenisation, generation, preference sampling, verify), one
implementation for every stage.

On rank 0 attached to a terminal: a live rich bar with the count, rate and ETA. Elsewhere (a log file,
CI): a plain line every `TULU_PROGRESS_EVERY_S` seconds (30 by default) and a last one when a loop that
printed any ends, so logs stay readable. Other ranks show nothing.

A stage launched by `tulu` writes into a pipe, so `tulu` decides for it (`TULU_PROGRESS`): when `tulu`
itself is in a terminal the stage sends its progress as event lines, and `tulu` draws the bars
(`StageProgress`) above which the stage's other output scrolls; otherwise the stage prints plain lines.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

# How progress is shown: bar | lines | events | off (unset: decided as `progress_mode` says).
PROGRESS_ENV = "TULU_PROGRESS"
# Seconds between plain progress lines.
EVERY_ENV = "TULU_PROGRESS_EVERY_S"
DEFAULT_EVERY_S = 30.0
# Seconds between event lines a launched stage sends for one bar, and between redraws of a live bar.
EVENT_EVERY_S = 0.5
REDRAW_EVERY_S = 0.1
EVENT_PREFIX = "::tulu-progress:: "
MODES = ("bar", "lines", "events", "off")
_bar_ids = itertools.count()


def progress_mode(stream: Any = None) -> str:
    """`off` on every rank but 0; else TULU_PROGRESS when set; else `bar` in a terminal, `lines` elsewhere."""
    if os.environ.get("RANK", "0") != "0":
        return "off"
    forced = os.environ.get(PROGRESS_ENV, "").strip().lower()
    if forced in MODES:
        return forced
    stream = sys.stdout if stream is None else stream
    interactive = getattr(stream, "isatty", lambda: False)() and os.environ.get("TERM") != "dumb"
    return "bar" if interactive else "lines"


def stage_mode() -> str:
    """The TULU_PROGRESS value for a stage this process launches (its output comes through a pipe)."""
    mode = progress_mode()
    return "events" if mode == "bar" else mode


def line_every_s() -> float:
    try:
        return max(0.0, float(os.environ.get(EVERY_ENV, DEFAULT_EVERY_S)))
    except ValueError:
        return DEFAULT_EVERY_S


def rate_and_eta(done: float, total: int | None, elapsed: float) -> tuple[float, float | None]:
    """(items per second, seconds left or None when unknown)."""
    rate = done / elapsed if elapsed > 0 else 0.0
    if total is None or rate <= 0:
        return rate, None
    return rate, max(total - done, 0) / rate


def clock(seconds: float | None) -> str:
    if seconds is None:
        return "-:--:--"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def describe(description: str, completed: float, total: int | None, unit: str, rate: float,
             eta: float | None) -> str:
    """`sft: 40/100 steps (40%), 2.10 steps/s, ETA 0:00:28`: one plain progress line."""
    count = f"{completed:,.0f}/{total:,}" if total else f"{completed:,.0f}"
    share = f" ({100 * completed / total:.0f}%)" if total else ""
    shown_rate = f"{rate:,.2f}" if rate < 100 else f"{rate:,.0f}"
    return f"{description}: {count} {unit}{share}, {shown_rate} {unit}/s, ETA {clock(eta)}"


class Bar:
    """One loop's progress: `advance(n)` as items finish, `close()` at the end (or use `progress(...)`)."""

    def __init__(self, description: str, total: int | None, unit: str = "rows", completed: int = 0,
                 mode: str | None = None):
        self.description, self.total, self.unit = description, total, unit
        self.completed = self.initial = completed
        self.mode = mode or progress_mode()
        self.started = self.last_line = self.last_event = time.monotonic()
        self.lines, self.printed = 0, None
        self.every_s = line_every_s()
        self.closed = False
        self.id = f"{os.getpid()}-{next(_bar_ids)}"
        self.task = _live.add(self) if self.mode == "bar" else None

    def advance(self, n: float = 1) -> None:
        self.update(self.completed + n)

    def update(self, completed: float) -> None:
        self.completed = completed
        now = time.monotonic()
        if self.mode == "bar" and (now - self.last_event >= REDRAW_EVERY_S or completed == self.total):
            _live.refresh(self)
            self.last_event = now
        elif self.mode == "lines" and now - self.last_line >= self.every_s:
            self._print_line(now)
        elif self.mode == "events" and now - self.last_event >= EVENT_EVERY_S:
            self._send_event(now)

    def rate_and_eta(self, now: float | None = None) -> tuple[float, float | None]:
        elapsed = (time.monotonic() if now is None else now) - self.started
        return rate_and_eta(self.completed - self.initial, None if self.total is None else self.total - self.initial,
                            elapsed)

    def line(self, now: float | None = None) -> str:
        return describe(self.description, self.completed, self.total, self.unit, *self.rate_and_eta(now))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        now = time.monotonic()
        if self.mode == "bar":
            _live.remove(self)
        elif self.mode == "lines" and self.lines and self.printed != self.completed:
            self._print_line(now)
        elif self.mode == "events" and self.last_event > self.started:
            self._send_event(now, done=True)

    def _print_line(self, now: float) -> None:
        print(self.line(now), flush=True)
        self.last_line, self.printed = now, self.completed
        self.lines += 1

    def _send_event(self, now: float, done: bool = False) -> None:
        event = {"id": self.id, "description": self.description, "total": self.total,
                 "unit": self.unit, "completed": self.completed, "initial": self.initial,
                 "elapsed": now - self.started, "done": done}
        print(EVENT_PREFIX + json.dumps(event), flush=True)
        self.last_event = now


@contextmanager
def progress(description: str, total: int | None, unit: str = "rows", completed: int = 0) -> Iterator[Bar]:
    bar = Bar(description, total, unit, completed)
    try:
        yield bar
    finally:
        bar.close()


def track(items: Iterable, description: str, total: int | None, unit: str = "steps", completed: int = 0) -> Iterator:
    """Yield each item of `items`, counting one done when the loop body for it has finished."""
    with progress(description, total, unit, completed) as bar:
        for item in items:
            yield item
            bar.advance(1)


@contextmanager
def progress_bars() -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    """Yield `new_bar(description, total) -> advance(n)`; the bars close when the block ends."""
    bars: list[Bar] = []

    def new_bar(description: str, total: int) -> Callable[[int], None]:
        bars.append(Bar(description, total))
        return bars[-1].advance

    try:
        yield new_bar
    finally:
        for bar in bars:
            bar.close()


class _Live:
    """The live rich display of this process: one Progress holding every open bar, shown while any is."""

    def __init__(self) -> None:
        self.progress = None

    def add(self, bar: Bar):
        if self.progress is None:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[unit]}"),
                TextColumn("{task.fields[rate]}"), TextColumn("ETA {task.fields[eta]}"), TimeElapsedColumn(),
                console=Console(file=sys.stdout), redirect_stderr=False,
            )  # fmt: skip
            self.progress.start()
        return self.progress.add_task(bar.description, total=bar.total, completed=bar.completed, unit=bar.unit,
                                      rate="", eta=clock(None))

    def refresh(self, bar: Bar) -> None:
        rate, eta = bar.rate_and_eta()
        self.progress.update(bar.task, completed=bar.completed, rate=f"{rate:,.2f} {bar.unit}/s", eta=clock(eta))

    def remove(self, bar: Bar) -> None:
        self.progress.remove_task(bar.task)
        if not self.progress.tasks:
            self.progress.stop()
            self.progress = None

    @property
    def active(self) -> bool:
        return self.progress is not None


_live = _Live()


class StageProgress:
    """In `tulu`: turns the event lines of the stage it launched into bars of its own, and passes every
    other line on (above the bars while they are shown)."""

    def __init__(self) -> None:
        self.bars: dict[str, Bar] = {}

    def feed(self, line: bytes) -> bool:
        """Handle one output line of the stage; False when it is not a progress event."""
        if not line.startswith(EVENT_PREFIX.encode()):
            return False
        try:
            event = json.loads(line[len(EVENT_PREFIX):])
            key = str(event["id"])
            bar = self.bars.get(key)
            if bar is None:
                bar = self.bars[key] = Bar(str(event["description"]), event.get("total"), str(event.get("unit", "")),
                                           int(event.get("initial", 0)))
                bar.started = time.monotonic() - float(event.get("elapsed", 0.0))
            bar.update(event["completed"])
            if event.get("done"):
                bar.close()
                del self.bars[key]
        except (ValueError, KeyError, TypeError):
            return False
        return True

    def echo(self, line: bytes) -> None:
        """Show one line of the stage's output (through the live display while a bar is drawn)."""
        if _live.active:
            sys.stdout.write(line.decode("utf-8", errors="replace"))
        else:
            sys.stdout.buffer.write(line)
        sys.stdout.flush()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()
