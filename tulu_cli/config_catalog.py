"""What `tulu STAGE --help` lists: the stage's presets, each with the first line of its leading comment,
and the config groups its presets choose from, over every config root (the user's first)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import yaml

from tulu_cli.config import CONFIG_PATH_ENV, DEFAULT_PRESET, conf_dir, preset_files


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


def group_keys(stage: str, roots: Sequence[Path]) -> dict[str, list[str]]:
    """Config group -> the override keys a stage file of any root selects it with in its defaults list
    (`/model: tiny` gives model -> [model]; `/data@prompts: x` gives data -> [data@prompts])."""
    keys: dict[str, list[str]] = {}
    for root in roots:
        for path in sorted((root / stage).glob("*.yaml")):
            try:
                defaults = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("defaults") or []
            except (yaml.YAMLError, AttributeError, UnicodeDecodeError):
                continue  # composing this file reports its error; the help lists what it can read
            for entry in defaults:
                for key in entry if isinstance(entry, dict) else ():
                    key = str(key).removeprefix("override ").strip()
                    if key.startswith("/") and key[1:] not in keys.setdefault(key[1:].split("@")[0], []):
                        keys[key[1:].split("@")[0]].append(key[1:])
    return {group: sorted(found) for group, found in sorted(keys.items())}


def group_options(group: str, roots: Sequence[Path]) -> list[str]:
    return sorted({path.stem for root in roots for path in (root / group).glob("*.yaml")
                   if not path.stem.startswith("_")})


def show_stage_catalog(stage: str, roots: Sequence[Path]) -> None:
    """Print the presets and config groups of a stage (the end of `tulu STAGE --help`)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(highlight=False)
    presets = Table(box=None, show_header=False, padding=(0, 1, 0, 2))
    presets.add_column(no_wrap=True)
    presets.add_column()
    for name, path in preset_files(stage, roots).items():
        root = path.parent.parent
        presets.add_row(name, Text(description(path)).append("" if root == conf_dir() else f" ({root})", "dim"))
    console.print(f"\n[bold]Presets[/bold] (conf=NAME, default {DEFAULT_PRESET}):")
    console.print(presets)
    groups = group_keys(stage, roots)
    if groups:
        table = Table(box=None, show_header=False, padding=(0, 1, 0, 2))
        table.add_column(no_wrap=True)
        table.add_column()
        for group, keys in groups.items():
            options = Text(", ".join(group_options(group, roots)))
            if keys != [group]:
                options.append(f"\nchosen with {', '.join(f'{key}=NAME' for key in keys)}", "dim")
            table.add_row(group, options)
        console.print("\n[bold]Config groups[/bold] (choose an option with GROUP=NAME, e.g. model=llama8b):")
        console.print(table)
    console.print(f"\n[bold]Config folders[/bold], searched in order (--config-dir, ${CONFIG_PATH_ENV}, bundled):")
    for root in roots:
        console.print(Text(f"  {root}"))
