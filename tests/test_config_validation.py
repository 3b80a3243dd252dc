"""Config values are checked in the `tulu` process before anything is launched: types, ranges and batch
divisibility, each message naming the field and the value; `train.max_steps=0` is refused, not "no limit"."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, run_tulu


@pytest.mark.parametrize(("stage", "overrides", "messages"), [
    ("sft", ["optim.lr=abc", "train.per_device_batch_size=-1"],
     ["optim.lr='abc': must be a number > 0", "train.per_device_batch_size=-1: must be a whole number >= 1"]),
    ("sft", ["train.max_steps=0"], ["train.max_steps=0: must be a whole number >= 1 or null"]),
    ("sft", ["train.effective_batch_size=24"],
     ["train.effective_batch_size=24 must be a multiple of train.per_device_batch_size x ranks = 16 x 1 = 16"]),
    ("dpo", ["launcher=cpu_ddp2", "train.effective_batch_size=6", "train.per_device_batch_size=2",
             "model.path=unused"], ["per_device_batch_size x ranks = 2 x 2 = 4"]),
    ("rlvr", ["launcher=cpu_ddp2", "grpo.prompts_per_rollout=7", "model.path=unused"],
     ["grpo.prompts_per_rollout=7 must be a multiple of the 2 ranks"]),
    ("rlvr", ["rollout.temperature=0", "train.max_steps=1.5", "model.path=unused",
              "generation.vllm.seed_each_prompt=maybe"],
     ["rollout.temperature=0: must be a number > 0", "train.max_steps=1.5: must be a whole number >= 1 or null",
      "generation.vllm.seed_each_prompt='maybe': must be true or false"]),
    ("decontaminate", ["threshold=1.5", "ngram=true"], ["threshold=1.5: must be a number > 0 and <= 1",
                                                        "ngram=True: must be a whole number >= 1"]),
    ("eval", ["generation.top_p=0", "seed=-3"], ["generation.top_p=0: must be a number > 0 and <= 1", "seed=-3: must be a whole number >= 0"]),
])
def test_bad_values_are_refused_before_launch_naming_field_and_value(tmp_path, stage, overrides, messages):
    started = time.time()
    result = run_tulu(stage, "conf=tiny", *overrides, f"output_dir={tmp_path}", check=False, timeout=120)
    elapsed = time.time() - started
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    for message in messages:
        assert message in result.stderr, result.stderr
    assert not (tmp_path / "config.yaml").exists() and not (tmp_path / "logs").exists(), "something was launched"
    assert elapsed < 30, f"validation took {elapsed:.1f}s"


def test_valid_presets_pass_and_validation_needs_no_torch():
    probe = subprocess.run([sys.executable, "-c", """
import sys
from omegaconf import OmegaConf
from hydra import compose, initialize_config_dir
from tulu_cli.config import config_roots, hydra_search, presets, register_resolvers
from tulu_cli.validate_config import config_errors
register_resolvers()
bad = []
for stage in ("curate", "decontaminate", "sft", "dpo", "rlvr", "eval"):
    for preset in presets(stage):
        primary, searchpath = hydra_search(stage, preset, config_roots())
        with initialize_config_dir(str(primary), version_base="1.3"):
            cfg = compose(preset, overrides=["output_dir=unused", searchpath])
        resolved = OmegaConf.to_container(cfg, resolve=True)
        resolved.pop("hydra", None)
        bad += [f"{stage}/{preset}: {e}" for e in config_errors(stage, resolved)]
print(bad)
print("torch" in sys.modules)
"""], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert probe.returncode == 0, probe.stderr[-3000:]
    assert probe.stdout.split("\n")[-3:-1] == ["[]", "False"], probe.stdout
