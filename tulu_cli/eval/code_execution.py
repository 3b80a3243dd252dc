"""Running generated programs against their tests, for pass@k (HumanEval, HumanEval+).

Each program runs in its own Python process (`python -I`, an empty working folder, a minimal environment,
CPU-time and memory limits, a wall-clock timeout) in a session of its own, whose whole process group is
killed when the program ends or runs out of time, so a process it started cannot outlive it or hold the
run; it passes when the process exits with status 0. This
limits runaway programs; it is not a security boundary: run code evaluation inside a sandbox (a
container without network or secrets). lm-eval only runs tasks marked `unsafe_code` when the user sets
`lm_eval.confirm_run_unsafe_code=true`.

pass@k is the unbiased estimator of Chen et al. (2021): with n samples of which c pass,
1 - C(n - c, k) / C(n, k).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from math import comb

TIMEOUT_S = 10.0
MEMORY_BYTES = 2 * 1024**3


def _limit_resources() -> None:  # runs in the child before exec
    import resource

    resource.setrlimit(resource.RLIMIT_CPU, (int(TIMEOUT_S) + 1, int(TIMEOUT_S) + 1))
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))


def program_passes(program: str, timeout_s: float = TIMEOUT_S) -> bool:
    """Whether `program` (solution + tests) runs to completion with exit status 0 within the limits."""
    with tempfile.TemporaryDirectory(prefix="tulu-code-") as folder:
        path = os.path.join(folder, "program.py")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(program)
        # No pipes: a process the program leaves behind could hold them open past the program's end.
        process = subprocess.Popen([sys.executable, "-I", path], cwd=folder, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   env={"PATH": os.environ.get("PATH", ""), "PYTHONHASHSEED": "0"},
                                   preexec_fn=_limit_resources if os.name == "posix" else None,
                                   start_new_session=os.name == "posix")
        try:
            return process.wait(timeout=timeout_s) == 0
        except subprocess.TimeoutExpired:
            return False
        finally:
            _kill_session(process)


def _kill_session(process: subprocess.Popen) -> None:
    """SIGKILL the program's process group (what it started as well), then reap the program."""
    if os.name == "posix":
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # the program and everything it started have already ended
    else:
        process.kill()
    process.wait()


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (k <= n)."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per problem, got {n}")
    return 1.0 if n - c < k else 1.0 - comb(n - c, k) / comb(n, k)


def score_samples(programs: list[str], ks: list[int], workers: int | None = None) -> dict[str, float]:
    """pass@k for each k over the sample programs of one problem."""
    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        correct = sum(pool.map(program_passes, programs))
    return {f"pass@{k}": pass_at_k(len(programs), correct, k) for k in ks}
