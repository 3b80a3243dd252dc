"""Progress: the terminal / log decision, plain lines outside a terminal (`tulu verify` on a file), and
the event lines a launched stage sends for `tulu` to draw."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from tests.conftest import ROOT, TULU, run_tulu
from tulu_cli import progress
from tulu_cli.progress import Bar, StageProgress, progress_mode, stage_mode


class Stream:
    def __init__(self, tty: bool):
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("RANK", progress.PROGRESS_ENV, progress.EVERY_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TERM", "xterm")
    return monkeypatch


def test_bar_in_a_terminal_on_rank_zero_only(clean_env):
    assert progress_mode(Stream(True)) == "bar"
    assert progress_mode(Stream(False)) == "lines"
    clean_env.setenv("TERM", "dumb")
    assert progress_mode(Stream(True)) == "lines"
    clean_env.setenv("TERM", "xterm")
    clean_env.setenv("RANK", "1")
    assert progress_mode(Stream(True)) == "off" and progress_mode(Stream(False)) == "off"
    clean_env.setenv("RANK", "0")
    clean_env.setenv(progress.PROGRESS_ENV, "lines")
    assert progress_mode(Stream(True)) == "lines"
    clean_env.setenv(progress.PROGRESS_ENV, "events")
    assert progress_mode(Stream(False)) == "events"


def test_a_launched_stage_sends_events_when_tulu_is_in_a_terminal(clean_env):
    clean_env.setattr("sys.stdout", Stream(True))
    assert stage_mode() == "events"
    clean_env.setattr("sys.stdout", Stream(False))
    assert stage_mode() == "lines"


def test_plain_lines_every_interval_and_one_last_line(clean_env, capsys):
    clean_env.setenv(progress.EVERY_ENV, "0")
    with progress.progress("tokenising", 3) as bar:
        for _ in range(3):
            bar.advance(1)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3  # one per update at interval 0; the last count is not printed twice
    assert re.fullmatch(r"tokenising: 3/3 rows \(100%\), [\d,.]+ rows/s, ETA 0:00:00", lines[-1])
    assert lines[0].startswith("tokenising: 1/3 rows (33%), ")
    clean_env.setenv(progress.EVERY_ENV, "30")
    assert list(progress.track(range(5), "sft", 5)) == [0, 1, 2, 3, 4]
    assert capsys.readouterr().out == ""  # a loop shorter than the interval prints nothing


def test_rate_and_eta_count_from_a_resumed_step():
    assert progress.rate_and_eta(done=10, total=40, elapsed=5.0) == (2.0, 15.0)
    assert progress.rate_and_eta(done=0, total=40, elapsed=5.0) == (0.0, None)
    assert progress.describe("sft", 30, 100, "steps", 2.0, 35.0) == "sft: 30/100 steps (30%), 2.00 steps/s, ETA 0:00:35"
    assert progress.clock(3725) == "1:02:05" and progress.clock(None) == "-:--:--"


def test_stage_events_become_bars_of_tulu_and_other_lines_pass(clean_env, capsys):
    clean_env.setenv(progress.PROGRESS_ENV, "events")
    clean_env.setattr(progress, "EVENT_EVERY_S", 0.0)
    bar = Bar("sft", 4, unit="steps", completed=1)
    bar.advance(1)
    bar.advance(1)
    bar.close()
    sent = capsys.readouterr().out.splitlines()
    assert len(sent) == 3 and all(line.startswith(progress.EVENT_PREFIX) for line in sent)
    events = [json.loads(line[len(progress.EVENT_PREFIX):]) for line in sent]
    assert [e["completed"] for e in events] == [2, 3, 3] and [e["done"] for e in events] == [False, False, True]
    assert events[0]["initial"] == 1 and events[0]["total"] == 4

    clean_env.setenv(progress.PROGRESS_ENV, "lines")
    clean_env.setenv(progress.EVERY_ENV, "0")
    shown = StageProgress()
    assert not shown.feed(b"[   3.0s] step=2  loss=1.5\n")
    assert shown.feed(sent[0].encode() + b"\n") and list(shown.bars.values())[0].completed == 2
    assert shown.feed(sent[2].encode() + b"\n") and not shown.bars
    assert "sft: 2/4 steps (50%)" in capsys.readouterr().out


def verify_input(tmp_path, rows: int):
    source = tmp_path / "answers.jsonl"
    source.write_text("".join(json.dumps({"dataset": "gsm8k", "ground_truth": str(i), "response": f"so {i}"}) + "\n"
                              for i in range(rows)))
    return source


def test_verify_on_a_file_prints_plain_progress_lines(tmp_path):
    result = run_tulu("verify", str(verify_input(tmp_path, 40)), "--workers", "1",
                      env={progress.EVERY_ENV: "0"})
    lines = [line for line in result.stdout.splitlines() if line.startswith("verify: ")]
    assert lines and re.fullmatch(r"verify: 40/40 rows \(100%\), [\d,.]+ rows/s, ETA 0:00:00", lines[-1])
    assert "\x1b[" not in "".join(lines) and "\r" not in result.stdout


def test_verify_in_a_terminal_draws_a_bar_instead_of_lines(tmp_path):
    controller, terminal = os.openpty()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TERM": "xterm", progress.EVERY_ENV: "0"}
    env.pop(progress.PROGRESS_ENV, None)
    process = subprocess.Popen([*TULU, "verify", str(verify_input(tmp_path, 40)), "--workers", "1"], cwd=ROOT,
                               env=env, stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal)
    os.close(terminal)
    output = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        output += chunk
    os.close(controller)
    assert process.wait(timeout=120) == 0
    text = output.decode("utf-8", errors="replace")
    assert "━" in text and "ETA" in text and "rows/s" in text
    assert not re.search(r"verify: \d+/40 rows \(", text)
