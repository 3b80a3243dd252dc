"""The on-disk cache of tokenised datasets, shared by later runs and by every rank of a run.

An entry is `CACHE_DIR/KEY/`: `rows/` (the kept rows, written by `Dataset.save_to_disk`, read back
memory-mapped by `load_from_disk`), `report.json` (the DataReport) and `rejects.jsonl`. It is
written atomically, so a killed tokenisation never leaves an entry that looks complete. KEY hashes
what the rows depend on: the source (for a local file or directory its files' names, sizes and
modification times; for a hub dataset its datasets fingerprint), the tokenizer's full definition,
the chat template, the encoder's options (max length, ...), the output features, and the code that
reads, validates and encodes rows (a changed encoder never reuses old rows).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from tulu_cli.config import user_cache_dir
from tulu_cli.data.chat import CHAT_TEMPLATE

FORMAT_VERSION = 1
# The modules whose code decides what a source row becomes (with the encoder's own module).
ENCODING_MODULES = ("tulu_cli.data.sources", "tulu_cli.data.arrow_rows", "tulu_cli.data.row_files",
                    "tulu_cli.data.validate", "tulu_cli.data.chat", "tulu_cli.data.encoded", __name__)


def cache_root(configured: str | None) -> Path:
    """`data.cache_dir` when set, else the user's cache (`$XDG_CACHE_HOME` or ~/.cache)/tulu/tokenized."""
    return Path(configured).expanduser() if configured else user_cache_dir("tokenized")


def local_source_identity(path: Path) -> dict:
    """Path, and name, size and modification time of every file a local source is read from."""
    files = [path] if path.is_file() else sorted(f for f in path.rglob("*") if f.is_file())
    return {"path": str(path.resolve()),
            "files": [(str(f.relative_to(path)) if f != path else f.name, f.stat().st_size, f.stat().st_mtime_ns)
                      for f in files]}


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash of everything that decides the tokenizer's ids: its full definition and special tokens."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    definition = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    digest = hashlib.blake2b(definition.encode(), digest_size=16)
    digest.update(json.dumps({"class": type(tokenizer).__name__, "special": tokenizer.special_tokens_map,
                              "chat_template": getattr(tokenizer, "chat_template", None)},
                             sort_keys=True, default=str).encode())
    return digest.hexdigest()


def code_fingerprint(modules: tuple[str, ...]) -> str:
    """A hash of the source files of `modules` (imported already)."""
    digest = hashlib.blake2b(digest_size=16)
    for name in modules:
        digest.update(Path(sys.modules[name].__file__).read_bytes())
    return digest.hexdigest()


def cache_key(source: dict, encode, options: dict, features: dict) -> str:
    """The entry name for `source` encoded by `encode` with `options` (the tokenizer among them)."""
    options = {name: tokenizer_fingerprint(value) if name == "tokenizer" else value for name, value in options.items()}
    description = {"version": FORMAT_VERSION, "source": source, "template": CHAT_TEMPLATE,
                   "encoder": f"{encode.__module__}.{encode.__qualname__}",
                   "code": code_fingerprint(tuple(dict.fromkeys((*ENCODING_MODULES, encode.__module__)))),
                   "options": options, "features": {name: str(value) for name, value in features.items()}}
    return hashlib.blake2b(json.dumps(description, sort_keys=True, default=str).encode(), digest_size=16).hexdigest()


def load_entry(entry: Path) -> tuple[Any, dict] | None:
    """(memory-mapped rows, report dict) of a complete entry, else None."""
    import datasets

    if not (entry / "report.json").exists():
        return None
    report = json.loads((entry / "report.json").read_text(encoding="utf-8"))
    return datasets.load_from_disk(str(entry / "rows")), report
