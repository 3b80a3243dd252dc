"""The evaluation side of decontamination: eval sets from config, read into `EvalInstance`s.

An eval set is a local file or a hub dataset plus the field(s) whose text is matched (e.g. DROP's
passage and question; the `token_coverage` score matches each field separately and averages, the
`ngram_fraction` score matches them joined by newlines). A row missing one of the named fields is not
an instance (as in the Tulu 3 release) and is counted in `without_text`. Without fields, a row's prompt is its user turns
(`messages`, `prompt`, `instruction`), else its `question` or `problem`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tulu_cli.data.sources import load_source, row_dict
from tulu_cli.decontam import EvalInstance, eval_prompt_text

FALLBACK_FIELDS = ("question", "problem")
SPEC_KEYS = ("path", "split", "config", "configs", "revision", "fields", "id_field", "max_rows")


@dataclass
class EvalSetSpec:
    name: str
    path: str
    split: str = "test"
    config: str | None = None
    revision: str | None = None
    fields: list[str] | None = None
    id_field: str = "id"
    configs: list[str] | None = None  # several hub configs read as one eval set (ids prefixed CONFIG/)
    max_rows: int | None = None  # read at most this many rows of each config (the first ones)


@dataclass
class EvalSet:
    spec: EvalSetSpec
    instances: list[EvalInstance]
    rows_read: int
    without_text: int  # rows with no prompt text in the chosen fields (cannot match anything)
    unparsable: int


def eval_set_specs(evals: list[str] | None, eval_sets: dict[str, Any] | None) -> list[EvalSetSpec]:
    """Eval files listed by path (named by that path) and named eval sets from config."""
    specs = [EvalSetSpec(name=str(path), path=str(path)) for path in evals or []]
    for name, value in (eval_sets or {}).items():
        value = {"path": value} if isinstance(value, str) else dict(value)
        unknown = set(value) - set(SPEC_KEYS)
        if unknown or "path" not in value or ("config" in value and "configs" in value):
            raise ValueError(f"eval set {name!r}: needs `path` and at most one of config/configs; allowed keys "
                             f"are {', '.join(SPEC_KEYS)} (unknown: {sorted(unknown)})")
        fields = value.get("fields")
        specs.append(EvalSetSpec(name=str(name), path=str(value["path"]), split=value.get("split") or "test",
                                 config=value.get("config"), revision=value.get("revision"),
                                 fields=[fields] if isinstance(fields, str) else fields,
                                 id_field=value.get("id_field") or "id",
                                 configs=[str(c) for c in value["configs"]] if value.get("configs") else None,
                                 max_rows=int(value["max_rows"]) if value.get("max_rows") is not None else None))
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"eval set names must be distinct, got {names}")
    return specs


def _field_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(str(item) for item in value if isinstance(item, (str, int, float)))
    return "" if value is None else str(value)


def prompt_text(row: dict, fields: list[str] | None) -> str:
    if fields:
        return "\n".join(text for text in (_field_text(row.get(f)) for f in fields) if text)
    text = eval_prompt_text(row)
    if text:
        return text
    return next((row[f] for f in FALLBACK_FIELDS if isinstance(row.get(f), str)), "")


def load_eval_set(spec: EvalSetSpec) -> EvalSet:
    """Read an eval set; raises SourceError when it cannot be read."""
    instances, without_text, rows_read, unparsable = [], 0, 0, 0
    for config in spec.configs or [spec.config]:
        loaded = load_source(spec.path, spec.split, config, spec.revision, max_rows=spec.max_rows)
        prefix = f"{config}/" if spec.configs else ""
        for index, example in enumerate(loaded.dataset):
            row = row_dict(example)
            text = prompt_text(row, spec.fields)
            if not text.strip() or any(row.get(f) is None for f in spec.fields or ()):
                without_text += 1
                continue
            row_id = str(row.get(spec.id_field)) if row.get(spec.id_field) is not None else str(index)
            fields = tuple(_field_text(row[f]) for f in spec.fields) if len(spec.fields or ()) > 1 else ()
            instances.append(EvalInstance(spec.name, prefix + row_id, text, fields))
        rows_read += len(loaded.dataset) + len(loaded.rejects)
        unparsable += len(loaded.rejects)
    return EvalSet(spec, instances, rows_read, without_text, unparsable)
