"""`tulu recipe NAME [options]`: run a recipe shipped in the package (a shell script chaining the stages),
so that an installed `tulu` runs them from any folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tulu_cli.config_catalog import description

# Sourced by the recipes, not one itself.
LIBRARY = "lib"


def recipes_dir() -> Path:
    return Path(__file__).resolve().parent / "recipes"


def recipes() -> dict[str, Path]:
    return {path.stem: path for path in sorted(recipes_dir().glob("*.sh")) if path.stem != LIBRARY}


def listing() -> str:
    found = recipes()
    width = max(len(name) for name in found)
    return "\n".join(["Recipes (tulu recipe NAME [--dry-run] [--from STAGE] [--runs DIR] [STAGE:key=value ...];",
                      "tulu recipe NAME --help shows one recipe's options):",
                      *(f"  {name:<{width}}  {description(path)}" for name, path in found.items())])


def recipe_command(args: list[str]) -> int:
    """List the recipes, or replace this process with `bash RECIPE ARGS...` (signals then reach it directly)."""
    if not args or args[0] in ("list", "--help", "-h"):
        print(listing())
        return 0
    name, *rest = args
    path = recipes().get(name.removesuffix(".sh"))
    if path is None:
        print(f"error: no recipe {name}; available: {', '.join(recipes())}", file=sys.stderr)
        return 2
    env = dict(os.environ)
    # The recipes call `tulu`: the one installed beside this interpreter, even when its folder is not on PATH.
    scripts = Path(sys.executable).parent
    if (scripts / "tulu").exists():
        env["PATH"] = os.pathsep.join(p for p in (str(scripts), env.get("PATH", "")) if p)
    env["TULU_RECIPE"] = f"tulu recipe {name.removesuffix('.sh')}"
    sys.stdout.flush()
    os.execvpe("bash", ["bash", str(path), *rest], env)
