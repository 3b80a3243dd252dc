"""Personas for prompt synthesis: from a local file (JSONL/JSON/Parquet, a curate output directory) or a hub
dataset such as PersonaHub, one persona description per row in a configured field.

A row without a non-empty string in that field is set aside (file, row, field, reason); an exact repeat of
an earlier persona is set aside as a duplicate. `take` draws a seeded sample (a number read as a data mix
reads a bare number: above 1 an integer row count, otherwise a fraction; at most all of them) in file order.
"""

from __future__ import annotations

from dataclasses import dataclass

from tulu_cli.curate.mixing import MixError, bare_number_modes, select, target_rows
from tulu_cli.data.sources import SourceError, load_source, row_dict
from tulu_cli.errors import StageError


@dataclass(frozen=True)
class Persona:
    id: str
    text: str


def load_personas(cfg: dict, seed: int) -> tuple[list[Persona], list[dict]]:
    """(personas, rejects) from the `personas` config block.

    Keys: path, field, id_field, take, split, config, revision, max_rows.
    """
    unknown = set(cfg) - {"path", "field", "id_field", "take", "split", "config", "revision", "max_rows"}
    if unknown:
        raise StageError(f"personas: unknown keys {sorted(unknown)}")
    if not cfg.get("path"):
        raise StageError("personas.path (a persona file or hub dataset) is required")
    path, field, id_field = (
        str(cfg["path"]),
        str(cfg.get("field") or "persona"),
        str(cfg.get("id_field") or "id"),
    )
    try:
        loaded = load_source(
            path, cfg.get("split") or "train", cfg.get("config"), cfg.get("revision"), cfg.get("max_rows")
        )
    except SourceError as exc:
        raise StageError(f"personas: {exc}") from None
    rejects = [{"stage": "personas", **bad.to_json(), "file": path} for bad in loaded.rejects]
    personas, seen = [], {}
    for index, example in enumerate(loaded.dataset):
        row, number = row_dict(example), loaded.row_number(index)
        text = row.get(field)
        if not isinstance(text, str) or not text.strip():
            rejects.append(
                {
                    "stage": "personas",
                    "file": path,
                    "row": number,
                    "field": field,
                    "reason": "missing_field" if text is None else "bad_persona",
                    "detail": f"expected a non-empty string in {field!r}",
                    "raw": row,
                }
            )
            continue
        text = text.strip()
        if text in seen:
            rejects.append(
                {
                    "stage": "personas",
                    "file": path,
                    "row": number,
                    "field": field,
                    "reason": "duplicate",
                    "detail": f"same persona as row {seen[text]}",
                    "raw": row,
                }
            )
            continue
        seen[text] = number
        row_id = row.get(id_field)
        personas.append(Persona(str(row_id) if row_id is not None else f"persona-{number}", text))
    take = cfg.get("take")
    if take is not None:
        if isinstance(take, bool) or not isinstance(take, (int, float)) or take < 0:
            raise StageError(f"personas.take must be a row count (int) or a fraction (float), got {take!r}")
        try:
            mode = bare_number_modes({"personas": take})["personas"]
        except MixError as exc:
            raise StageError(f"personas.take: {exc}") from None
        # Never more than all: a persona repeated would only repeat its prompts.
        target = min(target_rows(take, mode, len(personas)), len(personas))
        personas = [personas[i] for i in sorted(select(len(personas), target, seed))]
    return personas, rejects
