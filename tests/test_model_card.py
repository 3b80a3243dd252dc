"""The model card every trainer writes into `final/README.md` (hub format, read back with huggingface_hub),
its refresh by a later `tulu eval` of the model, and the push of `final/` (checked before launch; done at
the end of training through huggingface_hub to a real HTTP server on 127.0.0.1 standing in for the hub)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard

from tests.conftest import hub_env, run_tulu
from tulu_cli.curate.dataset_dir import read_manifest
from tulu_cli.errors import StageError
from tulu_cli.eval.results import load_results
from tulu_cli.publish.card import EVAL_RESULTS_FILE, build_model_card, format_value, record_eval
from tulu_cli.publish.push import push_final, repo_arguments, upload_arguments
from tulu_cli.runlog import read_metrics


def load_card(run_dir: Path) -> ModelCard:
    return ModelCard.load(run_dir / "final" / "README.md")


def test_sft_card_records_base_data_decontamination_hyperparameters_command_and_metrics(tiny_sft_chain):
    run = tiny_sft_chain
    card = load_card(run)
    meta = card.data.to_dict()
    assert meta["library_name"] == "transformers" and meta["license"] == "apache-2.0"
    assert {"tulu", "sft", "arithmetic"} <= set(meta["tags"]) and meta["pipeline_tag"] == "text-generation"
    assert "base_model" not in meta and "datasets" not in meta  # a fresh model on local data: no hub ids
    assert "model-index" not in meta  # not evaluated yet
    text = card.text
    assert text.lstrip().startswith("# my-org/tiny-sft") and "`tulu sft` (supervised fine-tuning" in text
    assert "initialised with random weights" in text

    config = yaml.safe_load((run / "config.yaml").read_text())
    data_dir = Path(config["data"]["train"])
    manifest = read_manifest(data_dir)
    counts = json.loads((run / "data_report.json").read_text())["train"]
    assert counts["rows_kept"] == manifest["rows"] == 4000  # every decontaminated row trained on
    assert f"| train | `{data_dir}` | {counts['rows_read']} | {counts['rows_kept']} | 0 | 0 |" in text
    for source in manifest["sources"]:
        assert f"| {source['name']} | `{source['path']}` | {source['rows_out']} |" in text
    assert "6 of 4006 rows removed" in text and "score `ngram_fraction`, threshold 1.0" in text

    assert "| `optim.lr` | 0.003 |" in text and "| `train.max_steps` | 4 |" in text
    assert "| `train.loss_reduction` | mean |" in text and "| `model.init.hidden_size` | 128 |" in text
    assert (f"tulu sft conf=tiny data.train={data_dir} train.max_steps=4" in text
            and f"output_dir={run}" in text)
    assert (run / "command.txt").read_text().strip() in text

    last = read_metrics(run)[-1]
    assert last["step"] == 4 and "Metrics at the end of training (step 4)" in text
    for key in ("loss", "lr", "grad_norm"):
        assert f"| {key} | {format_value(last[key])} | 4 |" in text
    assert sorted(path.name for path in (run / "final").iterdir() if path.name.startswith(".")) == []


def test_card_metadata_follows_local_models_back_to_hub_ids(tiny_sft_chain, tmp_path):
    """base_model is a hub id: the start model's, or the repository an upstream tulu run pushed to."""
    config = yaml.safe_load((tiny_sft_chain / "config.yaml").read_text())

    def make_run(name: str, **changes) -> Path:
        run = tmp_path / name
        (run / "final").mkdir(parents=True)
        (run / "config.yaml").write_text(yaml.safe_dump({**config, **changes}))
        return run

    sft = make_run("sft", model={**config["model"], "path": "meta-llama/Llama-3.1-8B"},
                   data={**config["data"], "train": "allenai/tulu-3-sft-mixture"}, hub={"push": False, "tags": "math"})
    dpo = make_run("dpo", stage="dpo", model={**config["model"], "path": str(sft / "final")},
                   loss={"type": "dpo_norm", "beta": 5.0}, hub={})
    sft_meta = build_model_card(sft).data
    assert sft_meta.base_model == "meta-llama/Llama-3.1-8B" and sft_meta.datasets == ["allenai/tulu-3-sft-mixture"]
    assert sft_meta.tags == ["tulu", "tulu-cli", "sft", "math"]  # one tag given as a string is one tag
    dpo_card = build_model_card(dpo)
    assert dpo_card.data.base_model == "meta-llama/Llama-3.1-8B" and "dpo_norm" in dpo_card.data.tags
    assert "a `tulu sft` model" in dpo_card.text and "| `loss.beta` | 5.0 |" in dpo_card.text
    # The curated data's manifest names only local files: no hub dataset ids.
    assert dpo_card.data.datasets is None
    (sft / "config.yaml").write_text(yaml.safe_dump({**yaml.safe_load((sft / "config.yaml").read_text()),
                                                     "hub": {"push": True, "repo_id": "my-org/tulu-sft"}}))
    assert build_model_card(dpo).data.base_model == "my-org/tulu-sft"


def test_tulu_eval_of_the_model_refreshes_its_card(tiny_sft_chain, start_model, tmp_path):
    run = tmp_path / "sft"
    shutil.copytree(tiny_sft_chain, run, ignore=shutil.ignore_patterns("checkpoints", "initial"))
    first = tmp_path / "eval"
    result = run_tulu("eval", "conf=tiny", f"model.path={run / 'final'}", f"output_dir={first}", "only=[gsm_tiny]",
                      "tasks.gsm_tiny.data.max_rows=4", "tasks.gsm_tiny.max_new_tokens=8")
    assert "model card updated" in result.stdout
    document = load_results(first)
    card = load_card(run)
    [entry] = card.data.eval_results
    assert (entry.task_name, entry.metric_type, entry.metric_value) == (
        "gsm_tiny", "accuracy", document["tasks"]["gsm_tiny"]["value"])
    assert card.data.model_name == "my-org/tiny-sft"
    assert "## Evaluation" in card.text and f"`{first.resolve()}`" in card.text
    assert "Metrics at the end of training" in card.text  # the rest of the card is rebuilt too

    # A later eval elsewhere adds its run (the newest score of a task is the metadata's); an eval rerun
    # into the same directory replaces its earlier entry.
    later = {**document, "created": "2999-01-01T00:00:00+0000",
             "tasks": {"gsm_tiny": {**document["tasks"]["gsm_tiny"], "value": 0.75}}}
    record_eval(str(run / "final"), tmp_path / "eval_later", later)
    record_eval(str(run / "final"), first, document)
    recorded = json.loads((run / "final" / EVAL_RESULTS_FILE).read_text())
    assert sorted(recorded) == sorted([str(first.resolve()), str((tmp_path / "eval_later").resolve())])
    assert [r.metric_value for r in load_card(run).data.eval_results] == [0.75]
    # A model that is not a tulu run's final/ is left alone.
    assert record_eval(str(start_model), first, document) is None
    assert not (start_model / "README.md").exists()


def test_training_pushes_final_to_the_hub_at_the_end(tiny_sft_chain, fake_hub):
    """The fixture's run had hub.push=true: its final/ went to the (local) hub as one commit, card included."""
    repo = fake_hub.repos["my-org/tiny-sft"]
    assert repo["private"] is True and not [request for request in fake_hub.unanswered if "tiny-sft" in request]
    [commit] = repo["commits"]
    assert commit["revision"] == "main" and commit["summary"] == "tulu sft: sft"
    final = tiny_sft_chain / "final"
    assert commit["files"] == {path.name: path.read_bytes() for path in final.iterdir()}
    assert {"README.md", "model.safetensors", "config.json", "tokenizer.json"} <= set(commit["files"])
    assert "pushed" in (tiny_sft_chain / "logs" / "stage.log").read_text()


def test_a_failed_push_names_the_repo_and_where_the_model_is(tiny_sft_chain, fake_hub, monkeypatch):
    for name, value in hub_env(fake_hub).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", fake_hub.url)
    final = tiny_sft_chain / "final"
    # The local hub serves no branches: creating `revision` fails with its HTTP error.
    with pytest.raises(StageError, match=r"hub push of .*final to my-org/other failed .*404.*push it later with "
                                         r"`hf upload my-org/other .*final`"):
        push_final(final, {"repo_id": "my-org/other", "revision": "v1"}, "sft")


def test_push_arguments_name_the_repo_the_folder_and_skip_hidden_files(tmp_path):
    hub = {"push": True, "repo_id": "my-org/tiny-sft", "private": False, "revision": "v1"}
    assert repo_arguments(hub) == {"repo_id": "my-org/tiny-sft", "repo_type": "model", "private": False,
                                   "exist_ok": True}
    final = tmp_path / "run-7" / "final"
    assert upload_arguments(final, hub, "dpo") == {
        "repo_id": "my-org/tiny-sft", "repo_type": "model", "folder_path": str(final), "revision": "v1",
        "commit_message": "tulu dpo: run-7", "ignore_patterns": [".*", "**/.*"]}
    assert repo_arguments({"repo_id": "a/b"})["private"] is True  # private unless said otherwise
    assert upload_arguments(final, {"repo_id": "a/b", "revision": None}, "sft")["revision"] is None


@pytest.mark.parametrize(("overrides", "message"), [
    (["hub.push=true"], "hub.repo_id=null: hub.push=true needs the repository to push to, as OWNER/NAME"),
    (["hub.push=true", "hub.repo_id=tiny-sft"], "hub.repo_id='tiny-sft': hub.push=true needs"),
    (["hub.push=yes", "hub.repo_id=a/b"], "hub.push='yes': must be true or false"),
])
def test_push_without_a_repository_is_refused_before_launch(tmp_path, overrides, message):
    result = run_tulu("sft", "conf=tiny", *overrides, f"output_dir={tmp_path}", check=False, timeout=120)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert not (tmp_path / "config.yaml").exists()


def test_an_eval_whose_card_cannot_be_written_still_succeeds(tiny_sft_chain, tmp_path, capsys):
    from tulu_cli.stages.evaluate import update_model_card

    run = tmp_path / "sft"
    shutil.copytree(tiny_sft_chain, run, ignore=shutil.ignore_patterns("checkpoints", "initial"))
    (run / "final" / EVAL_RESULTS_FILE).write_text('{"torn')
    before = (run / "final" / "README.md").read_text()
    document = {"suite": "tiny", "created": "now", "tasks": {}}
    update_model_card(str(run / "final"), tmp_path / "eval", document)
    assert f"model card of {run / 'final'} not updated: {run / 'final' / EVAL_RESULTS_FILE}: unreadable" in (
        capsys.readouterr().out)
    assert (run / "final" / "README.md").read_text() == before
