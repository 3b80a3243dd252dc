"""`tulu curate conf=if_augment_tiny` rows scored by the real `tulu verify` CLI (planted satisfying and
violating responses); persona synthesis with a local tiny model; `tulu curate conf=persona_tiny` killed
halfway and resumed gives the datasets of an uninterrupted run without redoing finished shards (slow)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import kill_tulu_when, run_tulu
from tests.test_synthesis_constraints import planted
from tulu_cli.config import assets_dir
from tulu_cli.data.sources import load_source
from tulu_cli.rewards.if_functions import IFEVAL_ID
from tulu_cli.synthesis.pipeline import run_synthesis


def test_if_augment_tiny_rows_verify_as_planted(tmp_path):
    out = tmp_path / "if"
    run_tulu("curate", "conf=if_augment_tiny", f"output_dir={out}")
    rows = load_source(str(out / "rlvr")).dataset.to_list()
    assert len(rows) == 300 and {r["dataset"] for r in rows} == {"ifeval"}
    types = {t for r in rows for t in r["constraint_type"].split(",")}
    assert types == set(IFEVAL_ID.values())  # all 25 constraints occur in the preset's output
    manifest = json.loads((out / "rlvr" / "manifest.json").read_text())
    assert manifest["mode"] == "synthesize" and manifest["counts"]["rows"] == 300 and manifest["seed"] == 42

    planted_rows = []
    single = [r for r in rows if isinstance(json.loads(r["ground_truth"]), dict)]
    for row in single:
        good, bad = planted(json.loads(row["ground_truth"]))
        planted_rows += [{**row, "response": good, "expect": 1.0}, {**row, "response": bad, "expect": 0.0}]
    names = {json.loads(r["ground_truth"])["func_name"] for r in single}
    assert len(names) >= 20, names
    file = tmp_path / "planted.jsonl"
    file.write_text("".join(json.dumps(r) + "\n" for r in planted_rows))
    run_tulu("verify", str(file))
    scored = [json.loads(line) for line in (tmp_path / "planted.verified.jsonl").read_text().splitlines()]
    assert len(scored) == len(planted_rows)
    wrong = [
        (r["ground_truth"], r["response"], r["verified"])
        for r in scored
        if r["verified"] != r["expect"] or "error" in r
    ]
    assert not wrong

    # The same run again gives the same rows (seeded per prompt).
    run_tulu("curate", "conf=if_augment_tiny", f"output_dir={tmp_path / 'again'}")
    assert (
        json.loads((tmp_path / "again" / "rlvr" / "manifest.json").read_text())["content_sha256"]
        == manifest["content_sha256"]
    )


@pytest.fixture
def one_thread():
    """One intra-op thread, as the tiny presets run (idle-spinning threads on a busy machine are slow)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_persona_prompts_from_a_local_tiny_model(tmp_path, tiny_dir, one_thread):
    config = {
        "seed": 1,
        "skill": "math",
        "shard_size": 2,
        "model": {"path": str(tiny_dir), "backend": "hf"},
        "generation": {"backend": "hf", "batch_size": 8},
        "personas": {"path": str(assets_dir() / "tiny" / "personas.jsonl"), "take": 6},
        "prompt_generation": {
            "template": "Write a math problem for: {persona}",
            "per_persona": 2,
            "min_words": 1,
            "keep_unfinished": True,
        },
        "sampling": {"max_new_tokens": 8},
        "near_dup": {"enabled": True},
        "responses": {"samples": 1, "max_new_tokens": 6},
    }
    run_synthesis(config, tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["counts"]["generated"] == 12
    assert (
        summary["datasets"]["prompts"]["rows"]
        == summary["datasets"]["sft"]["rows"]
        == summary["counts"]["rows"]
    )
    shards = sorted((tmp_path / "run" / "work" / "prompts").glob("*/shard-*.jsonl"))
    assert len(shards) == 3 and not list((tmp_path / "run" / "work").glob("*/*/*.calls.jsonl"))
    sft = load_source(str(tmp_path / "run" / "sft")).dataset
    assert all([m["role"] for m in conv] == ["user", "assistant"] for conv in sft["messages"])


def _persona_args(model, out):
    return [
        "curate",
        "conf=persona_tiny",
        f"model.path={model}",
        f"output_dir={out}",
        "personas.take=16",
        "shard_size=2",
        "sampling.max_new_tokens=16",
        "responses.max_new_tokens=8",
    ]


def _hashes(run):
    return {
        name: json.loads((run / name / "manifest.json").read_text())["content_sha256"]
        for name in ("prompts", "sft")
    }


@pytest.mark.slow
def test_persona_tiny_killed_and_resumed(tmp_path, tiny_dir):
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    run_tulu(*_persona_args(tiny_dir, reference))
    def shards():
        return list(resumed.glob("work/prompts/*/shard-*[0-9].jsonl"))

    kill_tulu_when(_persona_args(tiny_dir, resumed), lambda: len(shards()) >= 3, timeout=240)
    finished = shards()
    assert 3 <= len(finished) < 8 and not (resumed / "prompts").exists(), "not killed halfway"
    before = {path: path.stat().st_mtime_ns for path in finished}

    run_tulu(*_persona_args(tiny_dir, resumed))
    assert all(path.stat().st_mtime_ns == mtime for path, mtime in before.items())  # not redone
    assert _hashes(resumed) == _hashes(reference)
    assert (
        json.loads((resumed / "summary.json").read_text())["counts"]
        == json.loads((reference / "summary.json").read_text())["counts"]
    )


def test_scale_presets_compose(tmp_path):
    import yaml

    for preset in ("persona_math", "persona_if", "if_augment"):
        run_tulu("curate", f"conf={preset}", f"output_dir={tmp_path / preset}", "--dry-run")
    math = yaml.safe_load((tmp_path / "persona_math" / "config.yaml").read_text())
    assert math["mode"] == "synthesize" and math["model"]["base_url"] and "path" not in math["model"]
    assert math["responses"]["self_consistency"] == {"verifier": "math", "min_agreement": 1.0}
    assert (
        "gsm8k" in math["decontaminate"]["eval_sets"] and "{persona}" in math["prompt_generation"]["template"]
    )
    persona_if = yaml.safe_load((tmp_path / "persona_if" / "config.yaml").read_text())
    assert persona_if["constraints"]["per_prompt"] == [1, 3] and persona_if["responses"]["verify"] is True
    augment = yaml.safe_load((tmp_path / "if_augment" / "config.yaml").read_text())
    assert list(augment["prompts"]["sources"]) == ["tulu3_sft_mixture"] and augment["responses"] is None
