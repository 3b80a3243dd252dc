"""One failing point of a sweep (-m) fails alone: the points after it still run, and the sweep exits non-zero
naming the failed point."""

from __future__ import annotations

import json

from tests.conftest import ROOT, run_tulu

TINY = ROOT / "tulu_cli" / "assets" / "tiny"


def test_a_failing_stage_does_not_stop_the_points_after_it(tmp_path):
    result = run_tulu("decontaminate", "-m", f"train=[{tmp_path / 'missing.jsonl'}],[{TINY / 'sft_train.jsonl'}]",
                      f"evals=[{TINY / 'gsm_test.jsonl'}]", f"output_dir={tmp_path}", check=False)
    assert result.returncode == 1
    assert f"tulu decontaminate failed in {tmp_path / '0'} (exit code 1)" in result.stderr
    assert json.loads((tmp_path / "1" / "report.json").read_text())["summary"], "the second point did not run"


def test_an_invalid_point_does_not_stop_the_points_after_it(tmp_path):
    result = run_tulu("sft", "-m", "conf=tiny", "train.max_steps=0,2", "--dry-run", f"output_dir={tmp_path}",
                      check=False)
    assert result.returncode == 1
    assert f"{tmp_path / '0'}: invalid config:\n  train.max_steps=0" in result.stderr
    assert (tmp_path / "1" / "config.yaml").exists() and not (tmp_path / "0" / "config.yaml").exists()
