"""Signals: `tulu` forwards SIGINT/SIGTERM to its stage and reports an interruption (Ctrl-C exits 130),
and a stage never outlives a killed `tulu` (SIGKILL of the parent alone, 2 torchrun ranks)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, TULU

LONG = ["conf=tiny", "data.max_rows=64", "train.epochs=500", "checkpoint.every_steps=10000"]


def stage_pids(run_dir: Path) -> list[int]:
    """Processes whose command line names this run directory (the stage, its launcher and ranks)."""
    wanted = str(run_dir).encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(os.getpid()):
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"--run-dir" in cmdline and wanted in cmdline:
                pids.append(int(entry.name))
    return pids


def wait_for(condition, timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def start(run_dir: Path, output: Path, *extra: str) -> subprocess.Popen:
    with output.open("w") as sink:
        return subprocess.Popen([*TULU, "sft", *LONG, *extra, f"output_dir={run_dir}"], cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=listen_to_ctrl_c)


def listen_to_ctrl_c() -> None:
    """As in a terminal's foreground job (a test run in the background inherits SIGINT ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def kill_leftovers(process: subprocess.Popen, run_dir: Path) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    for pid in stage_pids(run_dir):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def working(run_dir: Path) -> bool:
    """The stage has read its data (its entry point, and so its watchdog, is running)."""
    log = run_dir / "logs" / "stage.log"
    return log.exists() and "data: " in log.read_text(errors="replace")


@pytest.mark.parametrize(("signum", "code", "name"), [(signal.SIGINT, 130, "SIGINT"), (signal.SIGTERM, 143, "SIGTERM")])
def test_a_signal_to_tulu_stops_the_stage_and_is_reported_as_an_interruption(tmp_path, signum, code, name):
    run_dir = tmp_path / "run"
    process = start(run_dir, tmp_path / "output.txt")
    try:
        assert wait_for(lambda: working(run_dir), 600), "the stage did not start"
        os.kill(process.pid, signum)  # the tulu process alone, as a terminal's Ctrl-C or `kill` would
        process.wait(timeout=60)
        output = (tmp_path / "output.txt").read_text()
        assert process.returncode == code, output[-3000:]
        assert f"tulu sft interrupted ({name})" in output and "failed (exit code" not in output
        assert wait_for(lambda: not stage_pids(run_dir), 30), "the stage outlived tulu"
    finally:
        kill_leftovers(process, run_dir)


def test_a_killed_tulu_takes_its_ranks_with_it(tmp_path):
    run_dir = tmp_path / "run"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = start(run_dir, tmp_path / "output.txt", "launcher=cpu_ddp2", f"launcher.main_port={port}")
    try:
        assert wait_for(lambda: working(run_dir), 600), "the ranks did not start"
        assert len(stage_pids(run_dir)) >= 3, "expected torchrun and two ranks"
        os.kill(process.pid, signal.SIGKILL)  # only the tulu process: nothing can be forwarded
        process.wait(timeout=30)
        assert wait_for(lambda: not stage_pids(run_dir), 60), f"left running: {stage_pids(run_dir)}"
    finally:
        kill_leftovers(process, run_dir)
