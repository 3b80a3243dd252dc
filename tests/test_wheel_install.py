"""`pip install .` without `-e`: the wheel holds every preset and recipe, and the `tulu` installed from it
(not this source tree) runs a bundled preset and a user's preset from another folder.

The wheel is built and installed offline; the fresh environment sees the test environment's packages
(torch, Hydra, ...) through a .pth file, so nothing but this package is installed into it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import yaml

from tests.conftest import CONF, ROOT
from tests.test_config_search import user_dir
from tulu_cli.config import CONFIG_PATH_ENV
from tulu_cli.recipe_runner import recipes_dir


def run(*command: str | Path, cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    result = subprocess.run([str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"{command} exited {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """Build the wheel from a copy of the sources (the build writes build/ and *.egg-info beside them) and
    install it, without dependencies or network, into a fresh virtual environment. Returns (wheel, venv)."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "tulu_cli", source / "tulu_cli", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "--quiet",
        "--wheel-dir", work / "dist", source, cwd=work)
    (wheel,) = (work / "dist").glob("tulu_cli-*.whl")
    venv = work / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=work)
    run(sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "--no-deps", "--no-index",
        "--quiet", wheel, cwd=work)
    site_packages = run(venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))",
                        cwd=work).stdout.strip()
    # A plain path in a .pth file only extends sys.path (the .pth files there, such as an editable install of
    # this package, are not run), and after the fresh site-packages: the installed package comes first.
    shared = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
    (Path(site_packages) / "test_environment.pth").write_text("".join(f"{path}\n" for path in shared))
    return wheel, venv


def user_env(**extra: str) -> dict[str, str]:
    """The environment of a user of the installed package: no source tree on the path."""
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", CONFIG_PATH_ENV)}
    return {**env, **extra}


def test_wheel_holds_every_preset_and_recipe(installed):
    wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = [f"tulu_cli/{path.relative_to(CONF.parent).as_posix()}" for path in CONF.rglob("*.yaml")]
    shipped += [f"tulu_cli/recipes/{path.name}" for path in recipes_dir().glob("*.sh")]
    assert len(shipped) > 50 and [name for name in shipped if name not in names] == []
    (license_file,) = [name for name in names if name.endswith(".dist-info/licenses/LICENSE")]
    assert zipfile.ZipFile(wheel).read(license_file) == (ROOT / "LICENSE").read_bytes()
    metadata = next(name for name in names if name.endswith(".dist-info/METADATA"))
    assert "License-Expression: Apache-2.0" in zipfile.ZipFile(wheel).read(metadata).decode().splitlines()


def test_installed_tulu_runs_a_bundled_and_a_user_preset_from_another_folder(installed, tmp_path):
    _, venv = installed
    tulu = venv / "bin" / "tulu"
    elsewhere = tmp_path / "project"
    mine = user_dir(elsewhere / "my_configs")
    imported = run(venv / "bin" / "python", "-c", "import tulu_cli; print(tulu_cli.__file__)", cwd=elsewhere,
                   env=user_env()).stdout.strip()
    assert Path(imported).is_relative_to(venv) and not Path(imported).is_relative_to(ROOT)

    run(tulu, "sft", "conf=llama8b", "--dry-run", "output_dir=runs/8b", cwd=elsewhere, env=user_env())
    cfg = yaml.safe_load((elsewhere / "runs" / "8b" / "config.yaml").read_text())
    assert cfg["optim"]["lr"] == 5e-6 and cfg["model"]["path"] == "meta-llama/Llama-3.1-8B"
    assert (elsewhere / "runs" / "8b" / "command.txt").read_text().startswith(str(venv / "bin" / "python"))

    run(tulu, "sft", "--config-dir", "my_configs", "conf=my_mix", "model=my_llama", "--dry-run",
        "output_dir=runs/flag", cwd=elsewhere, env=user_env())
    run(tulu, "sft", "conf=my_mix", "--dry-run", "output_dir=runs/env", cwd=elsewhere,
        env=user_env(**{CONFIG_PATH_ENV: str(mine)}))
    for name in ("flag", "env"):
        cfg = yaml.safe_load((elsewhere / "runs" / name / "config.yaml").read_text())
        assert cfg["optim"]["lr"] == 1e-6 and cfg["train"]["effective_batch_size"] == 128, name
    assert yaml.safe_load((elsewhere / "runs" / "flag" / "config.yaml").read_text())["model"]["path"] == "/models/my-llama"

    # The shipped recipes run from the package and call the installed `tulu` though its folder is not on PATH.
    # Its answer to an unknown preset shows it was reached, in a second rather than a dry run per stage.
    recipe = subprocess.run([tulu, "recipe", "tiny", "--dry-run", "--from", "eval", "eval:conf=absent"],
                            cwd=elsewhere, env=user_env(PATH="/usr/bin:/bin"), capture_output=True, text=True,
                            timeout=120)
    assert recipe.returncode == 1 and "== eval: tulu eval conf=tiny" in recipe.stdout, recipe.stderr
    assert "no preset conf=absent for `tulu eval`" in recipe.stderr and "continue with: tulu recipe tiny --from eval" in recipe.stderr
