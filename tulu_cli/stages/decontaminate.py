"""`tulu decontaminate`: find (and with remove=true drop) training rows that overlap the eval suite.

Each training input (a `tulu curate` output directory or a local/hub dataset) is matched against each
eval set with the exact n-gram matcher of `tulu_cli.decontam`. Writes RUN_DIR/report.json: every
contaminated (training row, eval set) pair with its best eval instance and score, and a summary per
training input x eval set. With remove=true, RUN_DIR/decontaminated/NAME holds each input without the
rows contaminated by any eval set (curate format, with manifest), and NAME.removed.jsonl what was removed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from datasets import disable_progress_bars
from omegaconf import DictConfig, OmegaConf

from tulu_cli.curate.dataset_dir import read_manifest, write_dataset, write_rows_jsonl
from tulu_cli.curate.display import console, decontaminate_table
from tulu_cli.curate.eval_suite import EvalSet, eval_set_specs, load_eval_set
from tulu_cli.curate.schemas import conversation
from tulu_cli.data.sources import Loaded, SourceError, is_local, load_source, row_dict
from tulu_cli.data.validate import RowError
from tulu_cli.decontam import EvalIndex, Match, TrainRow, find_contamination, user_turns
from tulu_cli.decontam.index import SCORES
from tulu_cli.decontam.match import check_settings
from tulu_cli.entry import StageError, entrypoint
from tulu_cli.io import atomic_write_json
from tulu_cli.progress import progress_bars


@dataclass
class TrainInput:
    """One training input, read from its Arrow dataset as it is matched: no row is held in memory
    beyond the chunk being matched."""

    file: str  # as given in the config; names the input in the report
    name: str  # output name with remove=true
    loaded: Loaded
    # Rows with no user turn (nothing to match), counted by the first full pass over `rows()`.
    without_user_turns: int = 0

    def __len__(self) -> int:
        return len(self.loaded.dataset)

    def rows(self) -> Iterator[TrainRow]:
        """The rows to match; `TrainRow.id` is the row's index in `loaded.dataset` (unique across the
        input's files, unlike a row number, which starts again in each file)."""
        without = 0
        for index, example in enumerate(self.loaded.dataset):
            turns = train_user_turns(row_dict(example))
            without += not turns
            yield TrainRow(self.file, str(index), turns)
        self.without_user_turns = without

    def row_id(self, index: int) -> str:
        """The row's own `id`, else `row-N` with N its row number in its file."""
        value = row_dict(self.loaded.dataset[index]).get("id")
        return str(value) if value is not None else f"row-{self.loaded.row_number(index)}"


def train_user_turns(row: dict) -> list[str]:
    """User turns of a training row in any supported schema (preference rows: their chosen prompt)."""
    turns = user_turns(row)
    if turns:
        return turns
    try:
        return user_turns({"messages": conversation(row)})
    except RowError:
        return []


def _input_name(path: str, taken: set[str]) -> str:
    base = Path(path).name if is_local(path) else path.replace("/", "__")
    for suffix in (".jsonl", ".json", ".parquet", ".arrow"):
        base = base.removesuffix(suffix)
    name, count = base or "train", 1
    while name in taken:
        count += 1
        name = f"{base}_{count}"
    taken.add(name)
    return name


def load_train_inputs(cfg: dict) -> list[TrainInput]:
    train = cfg.get("train")
    paths = [train] if isinstance(train, str) else list(train or [])
    if not paths:
        raise StageError("no training data: set train=[A.jsonl,...] (files, curate output directories or hub ids)")
    inputs, taken = [], set()
    for path in map(str, paths):
        try:
            loaded = load_source(path, cfg.get("split") or "train", max_rows=cfg.get("max_rows"))
        except SourceError as exc:
            raise StageError(f"training input: {exc}") from None
        inputs.append(TrainInput(path, _input_name(path, taken), loaded))
    return inputs


def load_eval_sets(cfg: dict, n: int, score: str = SCORES[0]) -> list[tuple[EvalSet, EvalIndex]]:
    try:
        specs = eval_set_specs(cfg.get("evals"), cfg.get("eval_sets"))
    except ValueError as exc:
        raise StageError(str(exc)) from None
    if not specs:
        raise StageError("no eval sets: set evals=[E.jsonl,...] or eval_sets (name -> path, fields)")
    loaded = []
    for spec in specs:
        try:
            eval_set = load_eval_set(spec)
        except SourceError as exc:
            raise StageError(f"eval set {spec.name!r}: {exc}") from None
        if not eval_set.instances:
            raise StageError(f"eval set {spec.name!r} ({spec.path}) has no prompt text "
                             f"(fields: {spec.fields or 'user turns / prompt / question'})")
        loaded.append((eval_set, EvalIndex.build(eval_set.instances, n=n, score=score)))
    return loaded


def match_all(inputs: list[TrainInput], eval_sets: list[tuple[EvalSet, EvalIndex]],
              cfg: dict) -> dict[tuple[str, str], list[Match]]:
    """Matches per (training file, eval set name)."""
    results = {}
    with progress_bars() as new_bar:
        for train in inputs:
            for eval_set, index in eval_sets:
                advance = new_bar(f"{train.name} x {eval_set.spec.name}", len(train))
                results[(train.file, eval_set.spec.name)] = find_contamination(
                    train.rows(), index, threshold=float(cfg["threshold"]), mode=cfg["mode"],
                    workers=int(cfg.get("workers") or 1), progress=advance)
    return results


def build_report(inputs: list[TrainInput], eval_sets: list[tuple[EvalSet, EvalIndex]],
                 results: dict[tuple[str, str], list[Match]], cfg: dict) -> dict[str, Any]:
    """Every contaminated (training row, eval set) pair names the row three ways: its `train_id`, the
    file it was read from with its row number there (`train_row_file`, `train_row`), and its position
    in the whole input (`train_index`, what remove=true goes by)."""
    contaminated, summary = [], []
    for train in inputs:
        for eval_set, _ in eval_sets:
            matches = results[(train.file, eval_set.spec.name)]
            for match in matches:
                index = int(match.train_id)
                contaminated.append({"train_file": train.file, "train_id": train.row_id(index),
                                     "train_row_file": train.loaded.row_file(index),
                                     "train_row": train.loaded.row_number(index), "train_index": index,
                                     "eval_file": eval_set.spec.name, "eval_id": match.eval_id,
                                     "score": round(match.score, 6)})
            checked = len(train)
            summary.append({"train_file": train.file, "eval_file": eval_set.spec.name, "rows_checked": checked,
                            "rows_contaminated": len(matches),
                            "percent": round(100.0 * len(matches) / checked, 4) if checked else 0.0})
    return {
        "settings": {"ngram": cfg["ngram"], "threshold": cfg["threshold"], "mode": cfg["mode"],
                     "score": cfg.get("score") or SCORES[0]},
        "train": [{"file": t.file, "rows": len(t), "unparsable_lines": len(t.loaded.rejects),
                   "rows_without_user_turns": t.without_user_turns} for t in inputs],
        "evals": [{"file": e.spec.name, "path": e.spec.path, "fields": e.spec.fields, "rows": e.rows_read,
                   "instances": len(e.instances), "rows_without_text": e.without_text,
                   "unparsable_lines": e.unparsable} for e, _ in eval_sets],
        "contaminated": contaminated,
        "summary": summary,
    }


def remove_contaminated(train: TrainInput, report: dict, out_root: Path, config: dict) -> dict:
    """Write the input without its contaminated rows as a curated dataset; return its counts."""
    hits: dict[int, list[dict]] = defaultdict(list)
    for item in report["contaminated"]:
        if item["train_file"] == train.file:
            hits[item["train_index"]].append(item)
    removed_indices = np.fromiter(sorted(hits), np.int64, len(hits))
    keep = np.setdiff1d(np.arange(len(train), dtype=np.int64), removed_indices)
    removed_file = out_root / f"{train.name}.removed.jsonl"
    # Each removed row's raw text is read from the memory-mapped input as its line is written.
    write_rows_jsonl(removed_file, ({**hits[i][0], "matches": hits[i], "raw": row_dict(train.loaded.dataset[i])}
                                    for i in map(int, removed_indices)))
    if train.loaded.rejects:
        write_rows_jsonl(out_root / f"{train.name}.rejects.jsonl", (r.to_json() for r in train.loaded.rejects))
    per_eval: dict[str, int] = defaultdict(int)
    for matches in hits.values():
        for match in matches:
            per_eval[match["eval_file"]] += 1
    source_manifest = read_manifest(Path(train.file)) if is_local(train.file) else None
    counts = {"rows_in": len(train) + len(train.loaded.rejects), "rows_out": len(keep),
              "rejected": {"contaminated": len(removed_indices), **({"unparsable_line": len(train.loaded.rejects)}
                                                             if train.loaded.rejects else {})},
              "contaminated_per_eval_set": dict(per_eval)}
    manifest = {
        "name": train.name,
        "kind": (source_manifest or {}).get("kind"),
        "decontaminated_from": train.file,
        "input_content_sha256": (source_manifest or {}).get("content_sha256"),
        "sources": (source_manifest or {}).get("sources", [{"name": train.name, "path": train.file}]),
        "seed": (source_manifest or {}).get("seed"),
        "counts": counts,
        "decontamination": {**report["settings"], "evals": [e["file"] for e in report["evals"]]},
        "rejects_file": f"../{removed_file.name}",
        "config": config,
    }
    # The whole input as Arrow, memory-mapped (a slice, no copy); the kept rows are taken a shard at a time.
    table = train.loaded.dataset.with_format("arrow")[:]
    write_dataset(out_root / train.name, table, manifest, int(config.get("rows_per_file") or 100_000), order=keep)
    return {"output": str(out_root / train.name), "rows_in": counts["rows_in"], "rows_out": len(keep),
            "removed": len(removed_indices)}


def main(cfg: DictConfig, run_dir: Path) -> None:
    disable_progress_bars()  # our own bars and table are the console output
    config: dict = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    score = config.get("score") or SCORES[0]
    try:
        check_settings(float(config.get("threshold", -1)), config.get("mode"), score)
    except ValueError as exc:
        raise StageError(str(exc)) from None
    if int(config.get("ngram", 0)) < 1:
        raise StageError(f"ngram must be >= 1, got {config.get('ngram')}")
    eval_sets = load_eval_sets(config, int(config["ngram"]), score)
    inputs = load_train_inputs(config)
    results = match_all(inputs, eval_sets, config)
    report = build_report(inputs, eval_sets, results, config)
    if config.get("remove"):
        out_root = run_dir / "decontaminated"
        report["removed"] = {t.file: remove_contaminated(t, report, out_root, config) for t in inputs}
    atomic_write_json(run_dir / "report.json", report)
    console.print(decontaminate_table(report["summary"]))
    total = len({(c["train_file"], c["train_index"]) for c in report["contaminated"]})
    console.print(f"{total} contaminated training rows; report: {run_dir / 'report.json'}")
    for file, removal in report.get("removed", {}).items():
        console.print(f"decontaminated {file}: {removal['rows_out']}/{removal['rows_in']} rows kept -> {removal['output']}")


if __name__ == "__main__":
    entrypoint(main)
