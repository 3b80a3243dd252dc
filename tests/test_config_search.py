"""The user's own config folders (`--config-dir`, `$TULU_CONFIG_PATH`) are searched before the bundled tree:
their presets extend bundled ones, their group options stand beside (or in for) bundled ones, and
`tulu STAGE --help` lists them with the bundled presets and config groups."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tests.conftest import CONF, run_tulu
from tulu_cli.config import CONFIG_PATH_ENV, UsageError, config_roots, hydra_search

MY_MIX = """\
# My mix: the 8B preset on my own data at a smaller learning rate.
defaults:
  - llama8b
  - _self_

data:
  train: my_data/mix.jsonl
optim:
  lr: 1.0e-6
"""
MY_LLAMA = """\
# My Llama: the 8B model from a local folder.
defaults:
  - llama8b
  - _self_

path: /models/my-llama
"""


def user_dir(root: Path, lr: float = 1e-6) -> Path:
    """A user's config folder: an SFT preset built on the bundled llama8b and a model built on the bundled one."""
    (root / "sft").mkdir(parents=True)
    (root / "model").mkdir()
    (root / "sft" / "my_mix.yaml").write_text(MY_MIX.replace("1.0e-6", repr(lr)))
    (root / "model" / "my_llama.yaml").write_text(MY_LLAMA)
    return root


def composed(stage: str, preset: str, roots: list[Path], *overrides: str) -> dict:
    """Compose a preset exactly as `tulu` does (same primary folder and search path)."""
    primary, searchpath = hydra_search(stage, preset, roots)
    with initialize_config_dir(str(primary), version_base="1.3"):
        cfg = compose(preset, overrides=[searchpath, "output_dir=unused", *overrides])
    return OmegaConf.to_container(cfg)


def test_user_preset_extends_a_bundled_one_and_picks_a_user_group_option(tmp_path):
    mine = user_dir(tmp_path / "my configs, v2")  # a space and a comma must survive Hydra's override grammar
    cfg = composed("sft", "my_mix", config_roots([mine]), "model=my_llama")
    assert cfg["optim"]["lr"] == 1e-6 and cfg["data"]["train"] == "my_data/mix.jsonl"
    # Everything else is the bundled 8B preset's, and the model is the bundled llama8b but for its path.
    assert cfg["train"]["effective_batch_size"] == 128 and cfg["seed"] == 123
    assert cfg["model"]["path"] == "/models/my-llama" and cfg["model"]["dtype"] == "bfloat16"


def test_user_folders_come_first_in_order(tmp_path, monkeypatch):
    flag, first, second = (user_dir(tmp_path / name, lr) for name, lr in (("flag", 1e-6), ("a", 2e-6), ("b", 3e-6)))
    monkeypatch.setenv(CONFIG_PATH_ENV, os.pathsep.join(["", str(first), str(second)]))
    assert config_roots() == [first, second, CONF]
    assert config_roots([flag, first]) == [flag, first, second, CONF]
    assert composed("sft", "my_mix", config_roots())["optim"]["lr"] == 2e-6
    assert composed("sft", "my_mix", config_roots([flag]))["optim"]["lr"] == 1e-6
    # A user group option with a bundled name stands in for the bundled one, for bundled presets too.
    (second / "model" / "tiny.yaml").write_text("# mine\npath: /models/mine\n")
    assert composed("sft", "tiny", config_roots())["model"] == {"path": "/models/mine"}


def test_a_missing_user_folder_is_an_error_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv(CONFIG_PATH_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(UsageError, match=f"\\${CONFIG_PATH_ENV} names .*nowhere"):
        config_roots()
    result = run_tulu("sft", "--config-dir", str(tmp_path / "absent"), "--dry-run", check=False)
    assert result.returncode == 2 and "--config-dir names" in result.stderr and "absent" in result.stderr


def test_stage_help_lists_presets_groups_and_user_presets(tmp_path):
    mine = user_dir(tmp_path / "mine")
    out = run_tulu("sft", "--config-dir", str(mine), "--help", env={"COLUMNS": "200"}).stdout
    lines = out.splitlines()
    row = {line.split()[0]: line for line in lines if line.startswith("  ") and line.split()}
    assert "Tulu 3 8B SFT: published hyperparameters" in row["llama8b"]
    assert "Tiny SFT on CPU" in row["tiny"] and "_base" not in row
    assert "My mix: the 8B preset on my own data" in row["my_mix"] and str(mine.resolve()) in row["my_mix"]
    assert "llama70b, llama8b, my_llama, tiny" in row["model"] and "cpu_zero3" in row["launcher"]
    assert [line.strip() for line in lines[lines.index(next(x for x in lines if "Config folders" in x)) + 1:]
            if line.strip()] == [str(mine.resolve()), str(CONF)]
    curate = run_tulu("curate", "--help", env={"COLUMNS": "200"}).stdout
    assert "data@prompts=NAME" in curate and "tulu3_sft_mixture" in curate


def test_hydra_cfg_job_shows_a_user_preset(tmp_path):
    mine = user_dir(tmp_path / "mine")
    result = run_tulu("sft", "conf=my_mix", "--cfg", "job", env={CONFIG_PATH_ENV: str(mine)})
    cfg = yaml.safe_load(result.stdout)
    assert cfg["optim"]["lr"] == 1e-6 and cfg["train"]["max_seq_length"] == 4096


def test_recipes_are_listed_and_an_unknown_one_is_refused():
    listed = run_tulu("recipe", "list").stdout
    assert all(name in listed for name in ("tiny", "tulu3_8b", "tulu3_70b")) and " lib " not in listed
    unknown = run_tulu("recipe", "nope", check=False)
    assert unknown.returncode == 2 and "no recipe nope" in unknown.stderr and "tulu3_8b" in unknown.stderr
