"""A run directory belongs to one run: a new run there is refused unless `resume=true` continues the
earlier one or `overwrite=true` replaces it; dry runs write nothing into it; a checkpoint past the run's
end is refused; a torn last metrics line does not block resume; a crafted checkpoint is refused
without running its code, also when a file is replaced between the check and the load."""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import run_tulu
from tulu_cli.runlog import read_metrics

SHORT = ["conf=tiny", "data.max_rows=64", "train.max_steps=2", "checkpoint.every_steps=1", "train.log_every=1"]


@pytest.fixture(scope="module")
def earlier_run(tmp_path_factory) -> Path:
    """A finished 2-step SFT run with a checkpoint after each step."""
    run_dir = tmp_path_factory.mktemp("earlier") / "run"
    run_tulu("sft", *SHORT, f"output_dir={run_dir}")
    return run_dir


def copy_of(run_dir: Path, target: Path) -> Path:
    shutil.copytree(run_dir, target, symlinks=True)
    return target


def snapshot(root: Path) -> dict[str, str]:
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file()}


def checkpoints(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "checkpoints").iterdir())


def test_a_new_run_in_a_used_directory_is_refused_and_a_dry_run_writes_nothing(earlier_run, tmp_path):
    run_dir = copy_of(earlier_run, tmp_path / "run")
    before = snapshot(run_dir)
    refused = run_tulu("sft", *SHORT, "train.max_steps=1", f"output_dir={run_dir}", check=False)
    assert refused.returncode == 2, refused.stdout[-2000:] + refused.stderr[-2000:]
    assert "already holds a run (checkpoints, final, initial, metrics.jsonl)" in refused.stderr
    assert "resume=true continues that run, overwrite=true replaces it" in refused.stderr
    dry = run_tulu("sft", *SHORT, "optim.lr=1e-5", "--dry-run", f"output_dir={run_dir}")
    assert "the dry run writes nothing there" in dry.stdout
    assert snapshot(run_dir) == before


def test_overwrite_replaces_the_earlier_run(earlier_run, tmp_path):
    run_dir = copy_of(earlier_run, tmp_path / "run")
    (run_dir / "notes-of-the-earlier-run.txt").write_text("gone with overwrite=true\n")
    result = run_tulu("sft", *SHORT, "train.max_steps=1", "overwrite=true", f"output_dir={run_dir}")
    assert f"overwrite=true: removed the earlier run in {run_dir}" in result.stdout
    assert checkpoints(run_dir) == ["step_00000001"]
    assert [m["step"] for m in read_metrics(run_dir)] == [1]
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["max_steps"] == 1
    assert not (run_dir / "notes-of-the-earlier-run.txt").exists()
    both = run_tulu("sft", *SHORT, "resume=true", "overwrite=true", f"output_dir={run_dir}", check=False)
    assert both.returncode == 2 and "set one" in both.stderr


def test_resume_from_a_checkpoint_past_the_runs_end_is_refused(earlier_run, tmp_path):
    run_dir = copy_of(earlier_run, tmp_path / "run")
    final = snapshot(run_dir / "final")
    result = run_tulu("sft", *SHORT, "train.max_steps=1", "resume=true", f"output_dir={run_dir}", check=False)
    assert result.returncode == 1
    assert "is at step 2, past this run's 1 steps" in result.stdout
    assert snapshot(run_dir / "final") == final and checkpoints(run_dir) == ["step_00000001", "step_00000002"]


def test_a_torn_last_metrics_line_does_not_block_resume(earlier_run, tmp_path):
    run_dir = copy_of(earlier_run, tmp_path / "run")
    shutil.rmtree(run_dir / "final")
    shutil.rmtree(run_dir / "checkpoints" / "step_00000002")
    with (run_dir / "metrics.jsonl").open("a") as handle:
        handle.write('{"step": 2, "loss": 6.1')  # killed mid-write
    result = run_tulu("sft", *SHORT, "resume=true", f"output_dir={run_dir}")
    assert "resumed from" in result.stdout and "line 3 was cut off mid-write" in result.stdout
    assert [m["step"] for m in read_metrics(run_dir)] == [1, 2]
    assert (run_dir / "final" / "model.safetensors").exists()


class RunsCode:
    """Unpickling this runs `os.system` (a stand-in for any code a crafted checkpoint could run)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_crafted_checkpoint_is_refused_without_running_its_code(earlier_run, tmp_path):
    crafted = copy_of(earlier_run / "checkpoints" / "step_00000001", tmp_path / "downloaded_checkpoint")
    marker = tmp_path / "code-ran"
    # Where accelerate keeps the state of a registered object (the schedule, in older checkpoints).
    torch.save({"base_lrs": [0.1], "lr_lambdas": [RunsCode(marker)]}, crafted / "custom_checkpoint_0.pkl")
    (crafted / "scheduler.json").unlink()
    result = run_tulu("sft", *SHORT, f"resume={crafted}", f"output_dir={tmp_path / 'run'}", check=False)
    assert result.returncode == 1
    assert f"refused to load {crafted / 'custom_checkpoint_0.pkl'}" in result.stdout
    assert not marker.exists(), "the checkpoint ran code"


def test_a_checkpoint_with_the_earlier_pickled_schedule_is_refused_with_the_reason(earlier_run, tmp_path):
    legacy = copy_of(earlier_run / "checkpoints" / "step_00000001", tmp_path / "legacy_checkpoint")
    torch.save({"base_lrs": [0.1], "last_epoch": 1}, legacy / "custom_checkpoint_0.pkl")
    (legacy / "scheduler.json").unlink()
    result = run_tulu("sft", *SHORT, f"resume={legacy}", f"output_dir={tmp_path / 'run'}", check=False)
    assert result.returncode == 1
    assert "keeps its learning-rate schedule in custom_checkpoint_0.pkl" in result.stdout


def test_a_rank_without_a_saved_random_state_says_so_and_resumes(earlier_run, tmp_path):
    run_dir = copy_of(earlier_run, tmp_path / "run")
    (run_dir / "checkpoints" / "step_00000001" / "random_states_0.pkl").unlink()
    result = run_tulu("sft", *SHORT, f"resume={run_dir / 'checkpoints' / 'step_00000001'}", f"output_dir={run_dir}")
    assert "[rank 0] warning:" in result.stdout and "has no random_states_0.pkl" in result.stdout


@pytest.mark.parametrize("name", ["optimizer.bin", "random_states_0.pkl", "pytorch_model/mp_rank_00_model_states.pt",
                                  "model.safetensors.index"])
def test_every_pickled_file_of_a_checkpoint_is_checked(earlier_run, tmp_path, name):
    from tulu_cli.errors import StageError
    from tulu_cli.train.safe_load import check_checkpoint_files

    checkpoint = copy_of(earlier_run / "checkpoints" / "step_00000001", tmp_path / "checkpoint")
    check_checkpoint_files(checkpoint)  # the real checkpoint loads
    marker = tmp_path / "code-ran"
    (checkpoint / name).parent.mkdir(exist_ok=True)
    torch.save({"state": RunsCode(marker)}, checkpoint / name)
    with pytest.raises(StageError, match=f"refused to load .*{Path(name).name}"):
        check_checkpoint_files(checkpoint)
    assert not marker.exists()


def test_a_file_replaced_after_the_check_is_refused_by_the_load_itself(earlier_run, tmp_path):
    from tulu_cli.train.safe_load import FORCE_RESTRICTED, check_checkpoint_files, restricted_loading

    checkpoint = copy_of(earlier_run / "checkpoints" / "step_00000001", tmp_path / "checkpoint")
    check_checkpoint_files(checkpoint)
    marker = tmp_path / "code-ran"
    torch.save({"state": RunsCode(marker)}, checkpoint / "optimizer.bin")  # swapped in after the check
    with restricted_loading():
        assert torch.load(checkpoint / "random_states_0.pkl", weights_only=False)  # the real files still load
        with pytest.raises(pickle.UnpicklingError):
            torch.load(checkpoint / "optimizer.bin", weights_only=False)  # what DeepSpeed asks for
    assert not marker.exists()
    assert FORCE_RESTRICTED not in os.environ


def test_recipe_training_steps_replace_their_run_unless_resumed(tmp_path):
    from tests.test_recipes import recipe, stage_lines

    result = recipe("tiny", "--dry-run", "--from", "dpo", "--runs", str(tmp_path), "dpo:resume=true")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = {line.split(":")[0][3:]: line for line in stage_lines(result.stdout)}
    assert "resume=true" in lines["dpo"] and "overwrite=true" not in lines["dpo"]
    assert "overwrite=true" in lines["rlvr"]


def test_restricted_loading_works_beside_a_users_opposite_setting(earlier_run, tmp_path, monkeypatch):
    """TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD (a common workaround) would make torch refuse every load when set
    together with the restricting variable; it is set aside inside the block and restored after it."""
    from tulu_cli.errors import StageError
    from tulu_cli.train.safe_load import FORCE_UNRESTRICTED, restricted_loading

    monkeypatch.setenv(FORCE_UNRESTRICTED, "1")
    checkpoint = earlier_run / "checkpoints" / "step_00000001"
    with restricted_loading():
        assert torch.load(checkpoint / "random_states_0.pkl", weights_only=False)
    assert os.environ[FORCE_UNRESTRICTED] == "1"
    crafted = tmp_path / "crafted.bin"
    torch.save({"state": RunsCode(tmp_path / "code-ran")}, crafted)
    with pytest.raises(StageError, match="refused a checkpoint file while loading it"), restricted_loading():
        torch.load(crafted, weights_only=False)
    assert not (tmp_path / "code-ran").exists()
