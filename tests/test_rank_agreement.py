"""Rank agreement on 2 real CPU ranks: a rank that looks late, after the main process has created a path
or a newer checkpoint, still gets the answer the main process got, so all ranks take the same
collective branch (the SFT stage's save of a freshly initialised model as `initial/`, the DPO reference
cache and the choice of checkpoint on `resume=true` rely on it)."""

from __future__ import annotations

import json
import subprocess

from omegaconf import OmegaConf

from tests.conftest import CONF, ROOT, free_port
from tulu_cli import launch


def test_a_late_rank_agrees_with_the_main_process_on_a_missing_path_and_the_checkpoint_to_resume(tmp_path):
    launcher = OmegaConf.to_container(OmegaConf.load(CONF / "launcher" / "cpu_ddp2.yaml"))
    launcher["main_port"] = free_port()
    launch.write_launcher_files(launcher, tmp_path)
    command = launch.build_command(launcher, "tests.rank_agreement_job", tmp_path)
    env = {**launch.launch_env(launcher), "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    answers = [json.loads((tmp_path / f"answer_{rank}.json").read_text()) for rank in (0, 1)]
    assert [{k: answer[k] for k in ("missing", "again")} for answer in answers] == [{"missing": True, "again": False}] * 2
    assert (tmp_path / "target").is_dir()
    # Rank 1 listed the checkpoints after step 2 appeared; it still resumes where the main process does.
    assert [answer["seen"] for answer in answers] == ["step_00000001", "step_00000002"]
    assert [answer["resumed"] for answer in answers] == ["step_00000001"] * 2
