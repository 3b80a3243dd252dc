"""Shared fixtures: a tiny tokenizer and model built locally, and a runner for the `tulu` command."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tulu_cli.config import conf_dir

ROOT = Path(__file__).resolve().parent.parent
# The config tree bundled in the package.
CONF = conf_dir()
TULU = [sys.executable, "-m", "tulu_cli.cli"]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (rendezvous and weight-transfer groups of tests running side by side)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_tulu(*args: str, check: bool = True, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `tulu ARGS...` as a user would (a real subprocess); return the completed process."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    result = subprocess.run([*TULU, *args], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"tulu {' '.join(args)} exited {result.returncode}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def child_pids(pid: int) -> list[int]:
    """Direct children of `pid` (Linux /proc)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def kill_everything(process: subprocess.Popen) -> None:
    """SIGKILL the `tulu` process group and the process group of the stage it launched, at once."""
    groups = [process.pid, *child_pids(process.pid)]
    for group in groups:
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait(timeout=30)


def kill_tulu_when(args: list[str], ready: Callable[[], bool], timeout: float = 300) -> bool:
    """Start `tulu ARGS` as a user would, wait until `ready()` holds, then SIGKILL its process group and
    the stage's (as a crash of the machine would). True if it was killed mid-run."""
    process = subprocess.Popen([*TULU, *args], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + timeout
    try:
        while time.time() < deadline and process.poll() is None:
            if ready():
                kill_everything(process)
                return True
            time.sleep(0.02)
        return False
    finally:
        if process.poll() is None:
            kill_everything(process)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from tulu_cli.config import assets_dir
    from tulu_cli.modeling import load_tokenizer

    return load_tokenizer({"train_tokenizer": {"files": ["tiny/sft_train.jsonl"], "vocab_size": 384}}, assets_dir())


@pytest.fixture(scope="session")
def tiny_model_factory(tiny_tokenizer):
    """Build a fresh tiny Llama (same seed, same weights each call)."""
    from omegaconf import OmegaConf

    from tulu_cli.modeling import load_model

    model_cfg = OmegaConf.to_container(OmegaConf.load(CONF / "model" / "tiny.yaml"))

    def build(seed: int = 0):
        return load_model(model_cfg, tiny_tokenizer, seed=seed)

    return build


@pytest.fixture(scope="session")
def start_model(tmp_path_factory, tiny_tokenizer, tiny_model_factory):
    """A tiny policy to start from, saved like a `tulu sft` final/ directory."""
    path = tmp_path_factory.mktemp("start") / "final"
    tiny_model_factory(seed=3).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def fake_hub():
    """A real HTTP server on 127.0.0.1 standing in for the Hugging Face hub (tests/fake_hub_server.py)."""
    from tests.fake_hub_server import FakeHub

    with FakeHub() as hub:
        yield hub


def hub_env(hub) -> dict[str, str]:
    """Environment that points huggingface_hub at `hub` (a FakeHub) and nowhere else."""
    return {"HF_ENDPOINT": hub.url, "HF_TOKEN": "hf_local_test_token", "HF_HUB_OFFLINE": "0",
            "HF_HUB_DISABLE_TELEMETRY": "1"}


@pytest.fixture(scope="session")
def tiny_sft_chain(tmp_path_factory, fake_hub) -> Path:
    """The run directory of a 4-step tiny SFT run on real `tulu curate` + `tulu decontaminate` output (the
    decontaminated SFT mix, its 6 planted eval prompts removed), with a hub repo id, licence and tag set,
    pushed at the end to `fake_hub` as my-org/tiny-sft. Tests that change the run work on a copy."""
    root = tmp_path_factory.mktemp("chain")
    run_tulu("curate", "conf=tiny", "~datasets.prefs", "~datasets.rlvr", f"output_dir={root / 'curate'}")
    run_tulu("decontaminate", "conf=tiny", f"train=[{root / 'curate' / 'sft'}]", "score=ngram_fraction",
             "threshold=1.0", "remove=true", f"output_dir={root / 'decontaminate'}")
    run_tulu("sft", "conf=tiny", f"data.train={root / 'decontaminate' / 'decontaminated' / 'sft'}",
             "train.max_steps=4", "train.log_every=2", "checkpoint.every_steps=4", "hub.repo_id=my-org/tiny-sft",
             "hub.license=apache-2.0", "hub.tags=[arithmetic]", "hub.push=true", f"output_dir={root / 'sft'}",
             env=hub_env(fake_hub))
    return root / "sft"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, tiny_model_factory, tiny_tokenizer):
    """A saved tiny model and tokenizer (seed 1) that endpoint servers load."""
    path = tmp_path_factory.mktemp("tiny_model")
    tiny_model_factory(seed=1).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path
