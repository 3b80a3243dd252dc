"""Training curves from metrics.jsonl: `tulu plot` and the curves `tulu eval compare --plot` adds."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import run_tulu
from tulu_cli.eval.compare import write_plot
from tulu_cli.eval.results import TaskResult, load_results, write_results
from tulu_cli.plots import load_curves, plot_command, training_curves
from tulu_cli.runlog import MetricsLogger

PNG = b"\x89PNG\r\n\x1a\n"


def rlvr_like_run(run_dir: Path, steps: int = 3) -> Path:
    """A run directory whose metrics.jsonl holds rows with the keys `tulu rlvr` logs (written by its logger)."""
    run_dir.mkdir(parents=True)
    logger = MetricsLogger(run_dir)
    for step in range(1, steps + 1):
        logger.log(step, loss=0.5 / step, verified_rate=0.2 * step, reward=2.0 * step, kl=0.01 * step, lr=1e-5,
                   entropy=1.0)
    return run_dir


def panel_lines(figure) -> dict[str, list[str]]:
    return {axes.get_title(): [line.get_label() for line in axes.get_lines()] for axes in figure.axes}


def test_plot_draws_the_panels_the_runs_logged(tiny_sft_chain, tmp_path):
    grpo = rlvr_like_run(tmp_path / "grpo")
    figure = training_curves([load_curves(tiny_sft_chain), load_curves(grpo, "grpo")])
    assert panel_lines(figure) == {"loss": ["sft", "grpo"], "reward": ["grpo: reward"], "verified rate": ["grpo"],
                                   "KL": ["grpo"], "learning rate": ["sft", "grpo"]}
    loss = figure.axes[0].get_lines()[0]
    assert list(loss.get_xdata()) == [2, 4]  # the SFT run logged steps 2 and 4
    assert list(panel_lines(training_curves([load_curves(tiny_sft_chain / "metrics.jsonl")]))) == [
        "loss", "learning rate"]

    out = tmp_path / "pictures" / "curves.png"
    result = run_tulu("plot", str(tiny_sft_chain), f"ppo={grpo}", "-o", str(out))
    assert out.read_bytes()[:8] == PNG and f"curves written: {out}" in result.stdout


def test_torn_or_missing_metrics_give_a_clear_message(tmp_path, capsys):
    missing = tmp_path / "empty_run"
    missing.mkdir()
    assert plot_command([str(missing)], tmp_path / "a.png") == 2
    assert "no metrics.jsonl in it" in capsys.readouterr().out

    torn_inside = rlvr_like_run(tmp_path / "torn_inside")
    lines = (torn_inside / "metrics.jsonl").read_text().splitlines()
    (torn_inside / "metrics.jsonl").write_text("\n".join([lines[0], lines[1][:20], lines[2]]) + "\n")
    assert plot_command([str(torn_inside)], tmp_path / "b.png") == 2
    assert "metrics.jsonl: line 2 is not JSON" in capsys.readouterr().out
    assert not (tmp_path / "b.png").exists()

    # A last line cut off by a kill is left out with a note; the rest is drawn.
    torn_last = rlvr_like_run(tmp_path / "torn_last")
    with (torn_last / "metrics.jsonl").open("a") as handle:
        handle.write('{"step": 4, "loss": 0.1')
    assert plot_command([str(torn_last)], None) == 0
    assert "line 4 was cut off mid-write" in capsys.readouterr().out
    assert (torn_last / "curves.png").read_bytes()[:8] == PNG

    result = run_tulu("plot", str(tmp_path / "nowhere"), check=False)
    assert result.returncode == 2 and "nowhere: no such directory" in result.stdout


def test_compare_plot_adds_the_training_curves_of_evaluated_tulu_models(tiny_sft_chain, tmp_path):
    results = [TaskResult(task="gsm_tiny", type="generative", metric="accuracy", value=0.25, n=4,
                          metrics={"accuracy": 0.25}, settings_hash="s")]
    write_results(tmp_path / "base", results, suite="tiny", label="base", model={"path": "somewhere/else"},
                  config_hash="h")
    write_results(tmp_path / "sft", results, suite="tiny", label="sft", model={"path": str(tiny_sft_chain / "final")},
                  config_hash="h")
    documents = [load_results(tmp_path / "base"), load_results(tmp_path / "sft")]
    figure = write_plot(tmp_path / "compare.png", ["base", "sft"], documents)
    assert panel_lines(figure) == {"eval scores by stage": ["gsm_tiny"], "loss": ["sft"], "learning rate": ["sft"]}
    assert (tmp_path / "compare.png").read_bytes()[:8] == PNG
