"""Constraints that pin every dependency of the package and its `dev` extra to its declared floor
(`name>=X` -> `name==X`), so `make test-lowest` runs the tests on the oldest versions pyproject.toml
claims to support. Prints one constraint per line.

A requirement without a `>=` floor (an exact pin, or a bare name) is left as it is. torch's pin
matches the build the install step put in place first (`==2.13` admits `2.13.0+cpu`).
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

FLOOR = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*>=\s*([^,;\s]+)")


def floor_pins(requirements: list[str]) -> list[str]:
    """`name==floor` for each requirement with a `>=` floor, in order, once per name."""
    pins: dict[str, str] = {}
    for requirement in requirements:
        match = FLOOR.match(requirement.strip())
        if not match:
            continue
        name = match.group(1).lower().replace("_", "-")
        pins.setdefault(name, f"{name}=={match.group(3)}")
    return list(pins.values())


def main(pyproject: Path) -> None:
    project = tomllib.loads(pyproject.read_text())["project"]
    print("\n".join(floor_pins(project["dependencies"] + project["optional-dependencies"]["dev"])))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "pyproject.toml")
