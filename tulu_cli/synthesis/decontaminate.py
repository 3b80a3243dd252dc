"""Decontamination of synthetic rows in the synthesis run itself, with the `tulu decontaminate` machinery:
the same eval-set config (`evals` files and named `eval_sets`, e.g. the tulu3_dev suite), index and matcher.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from tulu_cli.decontam import TrainRow, find_contamination, user_turns
from tulu_cli.decontam.index import SCORES
from tulu_cli.errors import StageError
from tulu_cli.progress import progress_bars
from tulu_cli.stages.decontaminate import load_eval_sets


def contaminated_rows(rows: Callable[[], Iterable[tuple[int, dict]]], count: int, cfg: dict) -> dict[int, dict]:
    """Row index -> its best match `{eval_set, eval_id, score}` over the configured eval sets, for the
    `count` (index, row) pairs `rows()` yields (read once per eval set)."""
    unknown = set(cfg) - {"evals", "eval_sets", "ngram", "threshold", "mode", "score", "workers"}
    if unknown:
        raise StageError(f"decontaminate: unknown keys {sorted(unknown)}")
    threshold, mode, ngram = (
        float(cfg.get("threshold", 0.5)),
        cfg.get("mode", "ngram"),
        int(cfg.get("ngram", 8)),
    )
    found: dict[int, dict] = {}
    with progress_bars() as new_bar:
        for eval_set, index in load_eval_sets(cfg, ngram, cfg.get("score") or SCORES[0]):
            advance = new_bar(f"decontaminate x {eval_set.spec.name}", count)
            try:
                matches = find_contamination(
                    (TrainRow("synthetic", str(index), user_turns(row)) for index, row in rows()),
                    index,
                    threshold=threshold,
                    mode=mode,
                    workers=int(cfg.get("workers") or 1),
                    progress=advance,
                )
            except ValueError as exc:
                raise StageError(f"decontaminate: {exc}") from None
            for match in matches:
                row = int(match.train_id)
                if row not in found or match.score > found[row]["score"]:
                    found[row] = {
                        "eval_set": eval_set.spec.name,
                        "eval_id": match.eval_id,
                        "score": round(match.score, 6),
                    }
    return found
