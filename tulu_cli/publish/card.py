"""The model card of a trained model: `RUN_DIR/final/README.md` in the Hugging Face hub's format.

Built only from what the run directory holds, so it can be rebuilt at any time (`tulu eval` rebuilds it
to add its results): `config.yaml` (base model, stage, hyperparameters), Hydra's record of the command,
`command.txt` (the launch), `data_report.json` (the stage's row counts), the manifest of a curated or
decontaminated data directory (its sources, counts and decontamination), `metrics.jsonl` (the values at
the end) and `final/eval_results.json` (what `tulu eval` measured; it lives with the model, so a
retrained model never carries the scores of the one it replaced).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tulu_cli.data.encoded import DATA_REPORT_FILE
from tulu_cli.errors import StageError
from tulu_cli.io import atomic_write_json, atomic_write_text
from tulu_cli.run_lineage import hub_base_model, run_config, training_run_of

CARD_FILE = "README.md"
EVAL_RESULTS_FILE = "eval_results.json"
LIBRARY = "transformers"
# The config sections that make up the card's hyperparameter table (the full config is config.yaml).
HYPERPARAMETER_SECTIONS = ("train", "optim", "loss", "loss_tokens", "reference", "rollout")
STAGE_TITLES = {"sft": "supervised fine-tuning", "dpo": "preference tuning", "rlvr": "RL with verifiable rewards"}


def write_model_card(run_dir: Path) -> Path:
    """(Re)write `RUN_DIR/final/README.md` atomically; return its path."""
    path = Path(run_dir) / "final" / CARD_FILE
    atomic_write_text(path, str(build_model_card(Path(run_dir))))
    return path


def build_model_card(run_dir: Path):
    from huggingface_hub import ModelCard, ModelCardData

    config = run_config(run_dir)
    if config is None:
        raise StageError(f"{run_dir}: no readable config.yaml, so no model card")
    stage = str(config.get("stage"))
    hub = config.get("hub") or {}
    sources = data_sources(config)
    evals = read_eval_results(run_dir / "final")
    name = hub.get("repo_id") or run_dir.name
    card_data = ModelCardData(
        model_name=name,
        base_model=hub_base_model((config.get("model") or {}).get("path")),
        library_name=LIBRARY,
        license=hub.get("license"),
        pipeline_tag="text-generation",
        tags=list(dict.fromkeys(["tulu", "tulu-cli", stage, *method_tags(config), *as_list(hub.get("tags"))])),
        datasets=hub_datasets(sources) or None,
        eval_results=eval_results_metadata(evals) or None,
    )
    sections = [
        f"# {name}\n\n{summary(config, stage)}",
        data_section(run_dir, sources),
        hyperparameter_section(config),
        launch_section(run_dir, stage),
        final_metrics_section(run_dir),
        eval_section(evals),
    ]
    body = "\n\n".join(section for section in sections if section)
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n{body}\n")


def as_list(value: Any) -> list[str]:
    """A config value given as one item (`hub.tags=math`) or a list (`hub.tags=[math,gsm8k]`)."""
    if not value:
        return []
    return [str(item) for item in value] if isinstance(value, list | tuple) else [str(value)]


def method_tags(config: dict) -> list[str]:
    """The training method as a tag: the DPO loss or the RL algorithm."""
    if config.get("stage") == "dpo":
        return [str((config.get("loss") or {}).get("type", "dpo"))]
    if config.get("stage") == "rlvr":
        return [str(config.get("algorithm"))]
    return []


def summary(config: dict, stage: str) -> str:
    model = config.get("model") or {}
    path = model.get("path")
    if path:
        origin = training_run_of(path)
        start = f"`{path}`" + (f" (a `tulu {run_config(origin)['stage']}` model)" if origin else "")
    else:
        start = "a model initialised with random weights from `model.init` (see the hyperparameters)"
    title = STAGE_TITLES.get(stage, stage)
    return (f"Trained by `tulu {stage}` ({title}, the Tulu 3 recipe) starting from {start}. "
            f"The run's full resolved configuration is `config.yaml` in its run directory.")


# --- data -------------------------------------------------------------------------------------------

def data_sources(config: dict) -> list[dict]:
    """The stage's data: per split (train, eval) the source as configured, whether it is a hub id, and
    the manifest of a curated or decontaminated dataset directory."""
    from tulu_cli.curate.dataset_dir import read_manifest
    from tulu_cli.data.sources import is_local

    data = config.get("data") or {}
    out = []
    for split in ("train", "eval"):
        source = data.get(split)
        if not source:
            continue
        local = is_local(str(source))
        path = Path(str(source)).expanduser()
        manifest = read_manifest(path) if local and path.is_dir() else None
        out.append({"split": split, "source": str(source), "hub": not local, "manifest": manifest,
                    "config": data.get("config"), "revision": data.get("revision")})
    return out


def hub_datasets(sources: list[dict]) -> list[str]:
    """Hub dataset ids among the sources, and among the sources a curated manifest records."""
    from tulu_cli.data.sources import is_local

    ids = [entry["source"] for entry in sources if entry["hub"]]
    for entry in sources:
        for origin in (entry["manifest"] or {}).get("sources") or []:
            path = origin.get("path")
            if path and not is_local(str(path)):
                ids.append(str(path))
    return list(dict.fromkeys(ids))


def data_section(run_dir: Path, sources: list[dict]) -> str:
    if not sources:
        return ""
    counts = read_json_file(run_dir / DATA_REPORT_FILE) or {}
    lines = ["## Training data", "", "| split | source | rows read | rows used | truncated | set aside |",
             "|---|---|---|---|---|---|"]
    for entry in sources:
        report = counts.get(entry["split"]) or {}
        rejected = ", ".join(f"{reason}: {count}" for reason, count in (report.get("rejected") or {}).items())
        lines.append(f"| {entry['split']} | `{entry['source']}` | {report.get('rows_read', '-')} | "
                     f"{report.get('rows_kept', '-')} | {report.get('truncated', '-')} | {rejected or '0'} |")
    for entry in sources:
        manifest = entry["manifest"]
        if manifest:
            lines += ["", *manifest_lines(entry["split"], manifest)]
    return "\n".join(lines)


def manifest_lines(split: str, manifest: dict) -> list[str]:
    """The mix behind a curated dataset directory, and its decontamination when it was decontaminated."""
    origin = (f"a `tulu decontaminate` output (of `{manifest['decontaminated_from']}`)"
              if manifest.get("decontaminated_from") else "a `tulu curate` dataset")
    lines = [f"The {split} data is {origin} of {manifest.get('rows', '?')} rows (content sha256 "
             f"`{str(manifest.get('content_sha256', ''))[:16]}`), mixed from:", "",
             "| source | path | rows |", "|---|---|---|"]
    for origin in manifest.get("sources") or []:
        rows = origin.get("rows_out", origin.get("take", "-"))
        lines.append(f"| {origin.get('name', '-')} | `{origin.get('path', '-')}` | {rows} |")
    decontamination = manifest.get("decontamination")
    if decontamination:
        counts = manifest.get("counts") or {}
        removed = (counts.get("rejected") or {}).get("contaminated", 0)
        per_eval = ", ".join(f"{name}: {count}" for name, count in (counts.get("contaminated_per_eval_set") or {}).items())
        lines += ["", f"Decontaminated by `tulu decontaminate` against {', '.join(decontamination.get('evals') or [])} "
                  f"({decontamination.get('ngram')}-grams, score `{decontamination.get('score')}`, threshold "
                  f"{decontamination.get('threshold')}): {removed} of {counts.get('rows_in', '?')} rows removed"
                  + (f" (per eval set: {per_eval})." if per_eval else ".")]
    return lines


# --- hyperparameters, launch, metrics -----------------------------------------------------------------

def hyperparameter_section(config: dict) -> str:
    values: dict[str, Any] = {}
    model = config.get("model") or {}
    values["model.path"] = model.get("path")
    if not model.get("path"):
        values.update(flatten("model.init", model.get("init")))
    if (model.get("lora") or {}).get("enabled"):
        values.update(flatten("model.lora", model["lora"]))
    stage_sections = list(HYPERPARAMETER_SECTIONS)
    if config.get("stage") == "rlvr":
        stage_sections[1:1] = ["algorithm", str(config.get("algorithm"))]
    for section in stage_sections:
        if section in config:
            values.update(flatten(section, config[section]))
    launcher = config.get("launcher") or {}
    for key in ("num_machines", "processes_per_machine", "mixed_precision"):
        if key in launcher:
            values[f"launcher.{key}"] = launcher[key]
    values["seed"] = config.get("seed")
    lines = ["## Hyperparameters", "", "| field | value |", "|---|---|"]
    lines += [f"| `{key}` | {format_value(value)} |" for key, value in values.items()]
    return "\n".join(lines)


def flatten(prefix: str, value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out.update(flatten(f"{prefix}.{key}", inner))
        return out
    return {prefix: value}


def launch_section(run_dir: Path, stage: str) -> str:
    lines = ["## How it was launched", "", "```bash", tulu_command(run_dir, stage), "```"]
    command = run_dir / "command.txt"
    if command.is_file():
        lines += ["", "which ran the training processes as:", "", "```bash", command.read_text(encoding="utf-8").strip(),
                  "```"]
    return "\n".join(lines)


def tulu_command(run_dir: Path, stage: str) -> str:
    """The `tulu` command line of the run, from Hydra's record of the job (preset and overrides)."""
    import shlex

    import yaml

    record = run_dir / ".hydra"
    try:
        hydra = yaml.safe_load((record / "hydra.yaml").read_text(encoding="utf-8"))["hydra"]
        overrides = yaml.safe_load((record / "overrides.yaml").read_text(encoding="utf-8")) or []
        preset = hydra["job"]["config_name"]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return f"tulu {stage}  # (the run directory holds no record of the command line)"
    return shlex.join(["tulu", stage, f"conf={preset}", *[str(item) for item in overrides]])


def final_metrics_section(run_dir: Path) -> str:
    from tulu_cli.runlog import read_metrics

    rows = read_metrics(run_dir)
    if not rows:
        return ""
    last: dict[str, tuple[int, Any]] = {}
    for row in rows:
        for key, value in row.items():
            if key != "step":
                last[key] = (row.get("step"), value)
    lines = [f"## Metrics at the end of training (step {rows[-1].get('step')})", "",
             "Each metric's last logged value (`metrics.jsonl`).", "", "| metric | value | step |", "|---|---|---|"]
    lines += [f"| {key} | {format_value(value)} | {step} |" for key, (step, value) in sorted(last.items())]
    return "\n".join(lines)


def format_value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        return repr(value) if len(repr(value)) <= 10 else f"{value:.6g}"
    if isinstance(value, list | dict):
        return f"`{json.dumps(value)}`"
    return str(value)


# --- evaluation ---------------------------------------------------------------------------------------

def read_eval_results(final_dir: Path) -> dict[str, dict]:
    """Eval runs of this model recorded by `tulu eval`: eval run directory -> {suite, created, tasks}."""
    return read_json_file(final_dir / EVAL_RESULTS_FILE) or {}


def record_eval(model_path: str | None, eval_run_dir: Path, document: dict) -> Path | None:
    """When `model_path` is a tulu run's `final/`, keep this eval run's scores beside the model and rebuild
    its card; return the card's path (None for any other model). A rerun into the same eval directory
    replaces its earlier entry."""
    run_dir = training_run_of(model_path)
    if run_dir is None:
        return None
    final_dir = run_dir / "final"
    recorded = read_eval_results(final_dir)
    recorded[str(Path(eval_run_dir).resolve())] = {
        "suite": document.get("suite"), "created": document.get("created"),
        "tasks": {name: {key: entry.get(key) for key in ("metric", "value", "n", "type")}
                  for name, entry in document["tasks"].items() if entry.get("status") == "ok"},
    }
    atomic_write_json(final_dir / EVAL_RESULTS_FILE, recorded)
    return write_model_card(run_dir)


def eval_results_metadata(evals: dict[str, dict]) -> list:
    """The model-index entries: one per task of each recorded eval run (the newest run of a task wins)."""
    from huggingface_hub import EvalResult

    latest: dict[str, tuple[str, dict]] = {}
    for run in sorted(evals.values(), key=lambda run: str(run.get("created") or "")):
        for task, entry in run["tasks"].items():
            latest[task] = (str(run.get("suite")), entry)
    return [EvalResult(task_type="text-generation", task_name=task, dataset_type=task, dataset_name=f"{task} ({suite})",
                       metric_type=str(entry["metric"]), metric_value=entry["value"])
            for task, (suite, entry) in latest.items() if entry.get("value") is not None]


def eval_section(evals: dict[str, dict]) -> str:
    if not evals:
        return ""
    lines = ["## Evaluation", "", "Scores (x100) from `tulu eval` of this model.", "",
             "| task | metric | score | n | suite | eval run |", "|---|---|---|---|---|---|"]
    for run_dir, run in evals.items():
        for task, entry in run["tasks"].items():
            score = "-" if entry.get("value") is None else f"{100 * entry['value']:.1f}"
            lines.append(f"| {task} | {entry['metric']} | {score} | {entry.get('n')} | {run.get('suite')} | "
                         f"`{run_dir}` |")
    return "\n".join(lines)


def read_json_file(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StageError(f"{path}: unreadable ({exc}): remove or repair it") from None
