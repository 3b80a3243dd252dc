"""The constraints of `make test-lowest`: every declared floor becomes an exact pin, so the run
installs the oldest versions pyproject.toml claims to support."""

from __future__ import annotations

import tomllib
from pathlib import Path

from tests.lowest_requirements import floor_pins

ROOT = Path(__file__).resolve().parents[1]


def test_floors_become_exact_pins_and_the_rest_is_left_alone():
    requirements = ["torch>=2.13", "Hydra_Core>=1.3.2", "scikit-learn>=1.4.2,<1.10", "peft[extra]>=0.18",
                    "alpaca-eval==0.6.6", "wheel", "numpy>=2.0; python_version >= '3.11'", "torch>=2.0"]
    assert floor_pins(requirements) == ["torch==2.13", "hydra-core==1.3.2", "scikit-learn==1.4.2", "peft==0.18",
                                        "numpy==2.0"]


def test_every_runtime_dependency_declares_the_floor_the_lowest_run_installs():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    dependencies = project["dependencies"]
    pinned = {pin.split("==")[0] for pin in floor_pins(dependencies)}
    assert len(pinned) == len(dependencies), sorted(pinned)
