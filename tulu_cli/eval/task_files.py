"""One named file a task reads whole (AlpacaEval's reference outputs, its GLM data): a local path, or a
file of a hub dataset repository read through the Hugging Face cache (offline once cached).

A section is `{path, file, revision}`: `path` a local file, or a hub dataset id with `file` the name of
the file inside it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tulu_cli.data.sources import is_local


def describe(section: Mapping[str, Any]) -> str:
    path = str(section.get("path"))
    return path if is_local(path) else f"{path}/{section.get('file')}"


def cached_or_needed(section: Mapping[str, Any], where: str) -> tuple[Path | None, str | None]:
    """(the file here, None), or (None, what it needs) for a hub file not in the cache; raises ValueError
    for a local file that does not exist or a hub section without `file`. Looks, never downloads."""
    path = str(section.get("path") or "")
    if not path:
        raise ValueError(f"{where}.path is required (a local file or a hub dataset id)")
    if is_local(path):
        local = Path(path).expanduser()
        if not local.is_file():
            raise ValueError(f"{where}: file {path} does not exist")
        return local, None
    if not section.get("file"):
        raise ValueError(f"{where}.file is required with the hub dataset {path} (the file inside it)")
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(path, str(section["file"]), revision=section.get("revision"),
                                    repo_type="dataset")
    if isinstance(cached, str):
        return Path(cached), None
    return None, f"hub file {describe(section)} (network; then cached)"


def task_file(section: Mapping[str, Any], where: str) -> Path:
    """The file, downloading a hub file into the cache when it is not there yet."""
    local, _ = cached_or_needed(section, where)
    if local is not None:
        return local
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(str(section["path"]), str(section["file"]), revision=section.get("revision"),
                                repo_type="dataset"))
