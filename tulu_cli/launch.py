"""Turn a resolved launcher profile into the argv of the stage process, and run it.

Commands are built as argument lists (never joined and re-split); `command.txt` records the
shell-quoted form so a user can copy it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tulu_cli.progress import PROGRESS_ENV, StageProgress, stage_mode

LAUNCHER_KINDS = ("python", "torchrun", "accelerate")


def build_command(launcher: Mapping[str, Any], module: str, run_dir: Path) -> list[str]:
    """Return the argv that runs `python -m module --run-dir run_dir` under `launcher`."""
    kind = launcher["kind"]
    entry = ["-m", module, "--run-dir", str(run_dir)]
    if kind == "python":
        return [sys.executable, *entry]
    if kind == "torchrun":
        return [
            sys.executable, "-m", "torch.distributed.run",
            f"--nnodes={launcher['num_machines']}",
            f"--node_rank={launcher['machine_rank']}",
            f"--nproc_per_node={launcher['processes_per_machine']}",
            f"--master_addr={launcher['main_address']}",
            f"--master_port={launcher['main_port']}",
            *entry,
        ]
    if kind == "accelerate":
        machines = int(launcher["num_machines"])
        command = [
            sys.executable, "-m", "accelerate.commands.launch",
            "--num_machines", str(machines),
            "--machine_rank", str(launcher["machine_rank"]),
            "--num_processes", str(machines * int(launcher["processes_per_machine"])),
            "--main_process_ip", str(launcher["main_address"]),
            "--main_process_port", str(launcher["main_port"]),
            "--mixed_precision", str(launcher["mixed_precision"]),
        ]
        if launcher.get("deepspeed"):
            command += ["--use_deepspeed", "--deepspeed_config_file", str(run_dir / "deepspeed.json")]
            if machines > 1:
                command += ["--deepspeed_multinode_launcher", "standard"]
        return [*command, *entry]
    raise ValueError(f"launcher.kind must be one of {', '.join(LAUNCHER_KINDS)}, got {kind!r}")


def write_launcher_files(launcher: Mapping[str, Any], run_dir: Path) -> None:
    """Write files the launch command refers to (the DeepSpeed config)."""
    if launcher.get("deepspeed"):
        (run_dir / "deepspeed.json").write_text(json.dumps(launcher["deepspeed"], indent=2) + "\n")


def launch_env(launcher: Mapping[str, Any]) -> dict[str, str]:
    env = dict(os.environ)
    env.update({str(k): str(v) for k, v in (launcher.get("env") or {}).items()})
    # The stage shows its progress as this process would (in a terminal: as events `tulu` draws as bars);
    # the libraries' own bars would reach a log through the pipe as one run-on line each.
    env[PROGRESS_ENV] = stage_mode()
    for name in ("HF_DATASETS_DISABLE_PROGRESS_BARS", "HF_HUB_DISABLE_PROGRESS_BARS"):
        env.setdefault(name, "1")
    # The stage imports this package; make sure the child finds it even from another directory.
    package_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    return env


@dataclass(frozen=True)
class StageExit:
    """How a stage process ended: its exit code, and the signal that interrupted `tulu` (if one did)."""

    code: int
    signal: int | None = None

    @property
    def interrupted(self) -> bool:
        return self.signal is not None


# Seconds a stage gets to stop after a forwarded SIGINT/SIGTERM before its process group is killed.
STOP_GRACE_S = 30.0
# The stage process learns the pid of the `tulu` process that launched it from this variable.
PARENT_PID_ENV = "TULU_PARENT_PID"


def run_logged(command: list[str], env: dict[str, str], log_path: Path) -> StageExit:
    """Run `command`, mirroring its output to the terminal and to `log_path`.

    The stage gets its own process group: SIGINT/SIGTERM sent to `tulu` are forwarded to that group
    (a second one, or a stage that has not stopped after STOP_GRACE_S, kills the group), and the stage
    dies with `tulu` if `tulu` itself is killed (see `stop_with_parent`).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**env, PARENT_PID_ENV: str(os.getpid())}
    received: list[int] = []
    timers: list[threading.Timer] = []
    shown = StageProgress()
    with log_path.open("ab") as log:
        process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, process_group=0,
                                   preexec_fn=functools.partial(_die_with_parent, os.getpid()))
        assert process.stdout is not None

        def kill_group() -> None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)

        def forward(signum: int, _frame) -> None:
            received.append(signum)
            if len(received) > 1:
                kill_group()
                return
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signum)
            timers.append(threading.Timer(STOP_GRACE_S, kill_group))
            timers[-1].daemon = True
            timers[-1].start()

        # A signal `tulu` was started to ignore (e.g. SIGINT in a background job) stays ignored.
        handled = [signum for signum in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(signum) != signal.SIG_IGN]
        previous = {signum: signal.signal(signum, forward) for signum in handled}
        try:
            for line in process.stdout:
                if shown.feed(line):
                    continue
                shown.echo(line)
                log.write(line)
                log.flush()  # a user (or a watchdog) following stage.log sees each line as it comes
            code = process.wait()
        finally:
            shown.close()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            if process.poll() is None:
                kill_group()
                process.wait()
            for timer in timers:
                timer.cancel()
        return StageExit(code, received[0] if received else None)


def _die_with_parent(parent: int) -> None:
    """In the launched child before exec: ask Linux to send it SIGTERM when `tulu` dies (a launcher such
    as torchrun then stops its workers). The stage's own watchdog (`entry.stop_with_parent`) covers the
    rest: workers a launcher started in sessions of their own, and systems without prctl."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
        if os.getppid() != parent:  # `tulu` died before the request was in place
            os._exit(1)
