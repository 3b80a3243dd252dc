"""What `tulu STAGE --help` lists: the stage's presets, each with the first line of its leading comment,
and the config groups its presets choose from, over every config root (the user's first)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import yaml

from tulu_cli.config import DEFAULT_PRESET, conf_dir, preset_files


def description(path: Path) -> str:
    """The first line of the comment a config file (or script) starts with ('' when it starts with none)."""
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip()
        if not line or line.startswith("#!"):
            continue
        if not line.startswith("#"):
            return ""
        text = line.lstrip("#").strip()
        if text and not text.startswith("@package"):
            return text
    return ""


def group_keys(stage: str, roots: Sequence[Path]) -> dict[str, str]:
    """Override key -> config group, for every group a stage file of any root selects in its defaults list
    (`/model: tiny` gives model -> model; `/data@prompts: x` gives data@prompts -> data)."""
    keys: dict[str, str] = {}
    for root in roots:
        for path in sorted((root / stage).glob("*.yaml")):
            try:
                defaults = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("defaults") or []
            except (yaml.YAMLError, AttributeError, UnicodeDecodeError):
                continue  # composing this file reports its error; the help lists what it can read
            for entry in defaults:
                for key in entry if isinstance(entry, dict) else ():
                    key = str(key).removeprefix("override ").strip()
                    if key.startswith("/"):
                        keys.setdefault(key[1:], key[1:].split("@")[0])
    return dict(sorted(keys.items()))


def group_options(group: str, roots: Sequence[Path]) -> list[str]:
    return sorted({path.stem for root in roots for path in (root / group).glob("*.yaml")
                   if not path.stem.startswith("_")})


def stage_catalog(stage: str, roots: Sequence[Path]) -> str:
    """The presets and config groups of a stage, as plain text for the end of `tulu STAGE --help`."""
    files = preset_files(stage, roots)
    width = max((len(name) for name in files), default=0)
    lines = [f"Presets (conf=NAME, default {DEFAULT_PRESET}):"]
    for name, path in files.items():
        origin = "" if path.parent.parent == conf_dir() else f"  [{path.parent.parent}]"
        lines.append(f"  {name:<{width}}  {description(path)}{origin}".rstrip())
    keys = group_keys(stage, roots)
    if keys:
        width = max(len(key) for key in keys)
        lines += ["", "Config groups (choose with KEY=NAME, e.g. model=llama8b):"]
        lines += [f"  {key:<{width}}  {', '.join(group_options(group, roots))}" for key, group in keys.items()]
    lines += ["", "Config folders, searched in order (--config-dir, $TULU_CONFIG_PATH, bundled):"]
    lines += [f"  {root}" for root in roots]
    return "\n".join(lines)
