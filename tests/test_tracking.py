"""`report_to`: the tiny SFT run reports to TensorBoard and trackio for real; both are read back and
compared with metrics.jsonl and the resolved config."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import yaml

from tests.conftest import ROOT, run_tulu
from tulu_cli import tracking
from tulu_cli.runlog import read_metrics


def tensorboard_scalars(log_dir) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: {event.step: event.value for event in events.Scalars(tag)} for tag in events.Tags()["scalars"]}


def tensorboard_hparams(log_dir) -> dict:
    """The hyperparameters written by `add_hparams` (in a sub-folder of the tracker's folder)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    for folder in sorted(p for p in log_dir.iterdir() if p.is_dir()):
        events = EventAccumulator(str(folder))
        events.Reload()
        try:
            content = events.SummaryMetadata("_hparams_/session_start_info").plugin_data.content
        except KeyError:
            continue
        hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
        return {key: value.WhichOneof("kind") and getattr(value, value.WhichOneof("kind"))
                for key, value in hparams.items()}
    raise AssertionError(f"no hyperparameters under {log_dir}")


def trackio_run(trackio_dir, project: str, run: str) -> tuple[list[dict], dict]:
    """(logged rows, config) of a trackio run, read from its local store in a fresh interpreter (trackio
    reads TRACKIO_DIR when imported)."""
    code = ("import json, sys\nfrom trackio.sqlite_storage import SQLiteStorage as S\n"
            "print(json.dumps([S.get_runs(sys.argv[1]), S.get_logs(sys.argv[1], sys.argv[2]), "
            "S.get_run_config(sys.argv[1], sys.argv[2])]))")
    out = subprocess.run([sys.executable, "-c", code, project, run], capture_output=True, text=True, check=True,
                         env={"TRACKIO_DIR": str(trackio_dir), "PATH": "/usr/bin:/bin"}, cwd=ROOT)
    runs, logs, config = json.loads(out.stdout.strip().splitlines()[-1])
    assert run in runs, runs
    return logs, config


def test_sft_reports_metrics_and_config_to_tensorboard_and_trackio(tmp_path):
    run_dir = tmp_path / "sft-tracked"
    trackio_dir = tmp_path / "trackio"
    run_tulu("sft", "conf=tiny", "train.max_steps=4", "train.log_every=2", "report_to=[tensorboard,trackio]",
             "tracker_project=tulu-test", f"output_dir={run_dir}",
             env={"TRACKIO_DIR": str(trackio_dir), "TULU_PROGRESS_EVERY_S": "0"})
    # Outside a terminal the stage prints plain progress lines (into the log too), no bar.
    stage_log = (run_dir / "logs" / "stage.log").read_text()
    assert re.search(r"^sft: 4/4 steps \(100%\), [\d.,]+ steps/s, ETA 0:00:00$", stage_log, re.M)
    assert "::tulu-progress::" not in stage_log and "━" not in stage_log
    metrics = read_metrics(run_dir)
    assert [row["step"] for row in metrics] == [2, 4]
    names = {key for row in metrics for key, value in row.items() if key != "step" and value is not None}
    assert {"loss", "lr", "grad_norm", "tokens_per_s"} <= names
    config = yaml.safe_load((run_dir / "config.yaml").read_text())

    log_dir = run_dir / tracking.TRACKING_DIR / "tulu-test"
    scalars = tensorboard_scalars(log_dir)
    assert set(scalars) == names
    for row in metrics:
        for name in names:
            assert scalars[name][row["step"]] == pytest.approx(row[name], rel=1e-6), name
    hparams = tensorboard_hparams(log_dir)
    assert hparams["optim.lr"] == pytest.approx(config["optim"]["lr"])
    assert hparams["train.max_steps"] == 4 and hparams["model.path"] == "null"
    assert hparams["report_to"] == json.dumps(["tensorboard", "trackio"])
    assert set(hparams) == set(tracking.flat_config(config))

    logs, tracked_config = trackio_run(trackio_dir, "tulu-test", run_dir.name)
    assert [row["step"] for row in logs] == [2, 4]
    for row, logged in zip(metrics, logs, strict=True):
        assert {key: logged[key] for key in names} == pytest.approx({key: row[key] for key in names}, rel=1e-9)
    assert tracked_config["optim.lr"] == pytest.approx(config["optim"]["lr"])
    assert tracked_config["data.train"] == config["data"]["train"]


@pytest.mark.parametrize("stage", ["sft", "dpo", "rlvr"])
def test_unknown_tracker_is_refused_before_launch(stage, tmp_path):
    result = run_tulu(stage, "conf=tiny", "report_to=[tensorbord]", f"output_dir={tmp_path}", check=False)
    assert result.returncode == 2
    assert "report_to=['tensorbord']: unknown tracker 'tensorbord'; choose from tensorboard, wandb, trackio" in (
        result.stderr)
    assert not (tmp_path / "config.yaml").exists()


def test_tracker_without_its_package_names_the_install(monkeypatch):
    monkeypatch.setitem(tracking.TRACKERS, "wandb", "a_tracker_package_that_is_not_installed")
    error = tracking.report_to_error(["tensorboard", "wandb"])
    assert error == ("report_to names wandb, but its package is not installed: pip install 'tulu-cli[tracking]' "
                     "(or pip install a_tracker_package_that_is_not_installed)")
    from tulu_cli.errors import StageError

    with pytest.raises(StageError, match="report_to names wandb"):
        tracking.accelerator_options(["wandb"], ROOT)


def test_report_to_values():
    assert tracking.tracker_names(None) == [] and tracking.tracker_names("wandb") == ["wandb"]
    assert tracking.report_to_error([]) is None and tracking.report_to_error("tensorboard") is None
    assert tracking.report_to_error(["tensorboard", "tensorboard"]) == (
        "report_to=['tensorboard', 'tensorboard']: a tracker is named twice")
    assert "must be a list of tracker names" in tracking.report_to_error(3)
    assert tracking.flat_config({"a": {"b": 1, "c": [1, 2], "d": None}, "e": "x"}) == {
        "a.b": 1, "a.c": "[1, 2]", "a.d": "null", "e": "x"}
    assert tracking.tracker_values({"step": 3, "loss": 1.5, "grad_norm": None}) == {"loss": 1.5}
