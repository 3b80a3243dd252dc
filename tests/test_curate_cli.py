"""`tulu curate` through the CLI: a 2-job sweep of the tiny preset, a failing source, the Tulu 3 dry runs, a
killed run's working files cleared when its folder is built again."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tulu_cli.data.sources import load_source

TULU = [sys.executable, "-m", "tulu_cli.cli"]


def tulu(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*TULU, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_tiny_sweep_builds_the_stage_datasets(tmp_path):
    bad = tmp_path / "extra.jsonl"
    bad.write_text(json.dumps({"id": "x", "messages": [{"role": "user", "content": "Hi"},
                                                       {"role": "assistant", "content": "Hello"}]}) + "\n{oops\n")
    out = tmp_path / "sweep"
    proc = tulu("curate", "conf=tiny", "-m", f"output_dir={out}", "datasets.sft.seed=1,2",
                f"+datasets.sft.sources.extra={{path:{bad},take:1.0}}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    hashes = []
    for job in ("0", "1"):
        run = out / job
        for name in ("sft", "prefs", "rlvr"):
            manifest = json.loads((run / name / "manifest.json").read_text())
            assert manifest["rows"] == len(load_source(str(run / name)).dataset) > 0
            assert (run / f"{name}.rejects.jsonl").exists()
        sft = json.loads((run / "sft" / "manifest.json").read_text())
        assert sft["counts"]["rows_out"] == 4000 + 6 + 1 and sft["counts"]["rejected"] == {"unparsable_line": 1}
        assert [s["take_mode"] for s in sft["sources"]] == ["fraction", "rows", "fraction"]
        reject = json.loads((run / "sft.rejects.jsonl").read_text().splitlines()[0])
        assert (reject["file"], reject["row"], reject["reason"]) == (str(bad), 2, "unparsable_line")
        hashes.append(sft["content_sha256"])
    assert json.loads((out / "0" / "sft" / "manifest.json").read_text())["seed"] == 1
    assert hashes[0] != hashes[1]  # a different seed shuffles differently
    # The SFT trainer's loader reads the directory unchanged.
    assert load_source(str(out / "0" / "sft")).dataset.column_names == ["id", "source", "messages"]


def test_unreadable_source_fails_the_run_with_its_name(tmp_path):
    proc = tulu("curate", f"output_dir={tmp_path / 'run'}", "datasets.sft.sources.tiny_sft.path=nowhere/data.jsonl",
                cwd=tmp_path)
    assert proc.returncode != 0
    assert "nowhere/data.jsonl" in proc.stdout and "no such file" in proc.stdout
    assert not (tmp_path / "run" / "sft").exists()


@pytest.mark.parametrize("preset, hub_id", [
    ("tulu3_sft", "ai2-adapt-dev/personahub_math_v5_regen_149960"),
    ("tulu3_prefs_8b", "allenai/llama-3.1-tulu-3-8b-preference-mixture"),
    ("tulu3_rlvr", "allenai/RLVR-GSM-MATH-IF-Mixed-Constraints"),
])
def test_published_mixtures_dry_run(tmp_path, preset, hub_id):
    proc = tulu("curate", f"conf={preset}", "--dry-run", f"output_dir={tmp_path}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert hub_id in proc.stdout


def test_a_killed_runs_working_files_are_removed_when_the_folder_is_built_again(tmp_path):
    run = tmp_path / "run"
    left_behind = run / ".rlvr.work-killed"
    left_behind.mkdir(parents=True)
    (left_behind / "rows.arrow").write_bytes(b"\0" * 4096)
    proc = tulu("curate", "conf=tiny", "~datasets.sft", "~datasets.prefs", f"output_dir={run}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (run / "rlvr" / "manifest.json").exists()
    assert not list(run.glob(".rlvr.work-*"))
