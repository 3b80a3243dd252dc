"""Whether each task of an eval config can run here, and what it needs: the status column of
`tulu eval --dry-run`.

Reads files only (lm-eval's task YAML files, local data paths, which packages are installed), so a dry
run stays quick and imports neither lm-eval nor torch. A task is `runnable`, `runnable; needs: ...`
(something outside this machine or a setting the user must choose, e.g. the hub or running generated
code), or `not runnable: why`; what the generation backend needs (vLLM, a GPU) is said once for all.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tulu_cli.data.sources import is_local
from tulu_cli.eval.tasks import TaskSpec

# `task: NAME` or `group: NAME` at the top level of an lm-eval YAML file (quotes allowed, as lm-eval writes).
_NAME = re.compile(r'^"?(task|group)"?[ \t]*:[ \t]*"?([A-Za-z0-9_.\-]+)"?[ \t]*$', re.M)
_FIELD = r'^"?{key}"?[ \t]*:[ \t]*"?([^"\n#]+?)"?[ \t]*$'


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@functools.cache
def lm_eval_index(include_dirs: tuple[str, ...] = ()) -> dict[str, Path]:
    """lm-eval task and group names -> the YAML file defining them (include dirs first, as lm-eval reads them)."""
    roots = [Path(d) for d in include_dirs]
    spec = importlib.util.find_spec("lm_eval")
    if spec is not None and spec.submodule_search_locations:
        roots.append(Path(next(iter(spec.submodule_search_locations))) / "tasks")
    index: dict[str, Path] = {}
    for root in roots:
        for path in sorted(root.rglob("*yaml")) if root.is_dir() else []:
            for _, name in _NAME.findall(path.read_text(encoding="utf-8", errors="replace")):
                index.setdefault(name, path)
    return index


def yaml_field(path: Path, key: str, depth: int = 0) -> str | None:
    """A top-level field of an lm-eval YAML file, following its `include:` chain."""
    text = path.read_text(encoding="utf-8", errors="replace")
    found = re.search(_FIELD.format(key=re.escape(key)), text, re.M)
    if found:
        return found.group(1).strip()
    include = re.search(_FIELD.format(key="include"), text, re.M)
    if include and depth < 8 and (path.parent / include.group(1).strip()).is_file():
        return yaml_field(path.parent / include.group(1).strip(), key, depth + 1)
    return None


def group_metrics(path: Path) -> list[str] | None:
    """The metrics an lm-eval group file's top-level `aggregate_metric_list` averages (None: no such list)."""
    text = path.read_text(encoding="utf-8", errors="replace")
    found = re.search(r"^aggregate_metric_list:[ \t]*\n((?:[ \t-].*\n?)*)", text, re.M)
    if found is None:
        return None
    return re.findall(r"^[ \t]*-?[ \t]*metric:[ \t]*\"?([A-Za-z0-9_@.\-]+)", found.group(1), re.M)


def _lm_eval_needs(spec: TaskSpec, resolved: Mapping[str, Any]) -> list[str] | str:
    """What an lm-eval task needs, or why it cannot run."""
    if not installed("lm_eval"):
        return "lm-eval is not installed (pip install -e '.[eval]')"
    name = spec.settings["lm_eval_task"]
    include = tuple(str(p) for p in [*(resolved.get("lm_eval", {}).get("include_path") or []),
                                     *(spec.get("include_path", []))])
    path = lm_eval_index(include).get(name)
    if path is None:
        return f"lm-eval has no task or group {name!r}"
    aggregated = group_metrics(path)
    metric = spec.metric.split(",")[0]
    if aggregated is not None and metric not in aggregated:
        return (f"lm-eval group {name} averages {', '.join(aggregated) or 'nothing'}, not {metric}, so its row "
                f"would have no {spec.metric}")
    needs = []
    dataset = yaml_field(path, "dataset_path")
    needs.append(f"hub dataset {dataset} (network)" if dataset else "its subtasks' hub datasets (network)")
    if (yaml_field(path, "unsafe_code") or "").lower() == "true" and \
            not resolved.get("lm_eval", {}).get("confirm_run_unsafe_code"):
        needs.append("lm_eval.confirm_run_unsafe_code=true (it executes generated code: run it in a sandbox)")
    return needs


def _alpaca_eval_needs(spec: TaskSpec) -> list[str] | str:
    """What an AlpacaEval task needs: its two files (here or from the hub) and a judge endpoint."""
    from tulu_cli.eval.task_files import cached_or_needed

    if not (installed("sklearn") and installed("pandas")):
        return "scikit-learn and pandas are needed for the length-controlled GLM (pip install -e '.[eval]')"
    needs = []
    for key in ("data", "glm_data"):
        try:
            _, need = cached_or_needed(spec.settings[key], f"tasks.{spec.name}.{key}")
        except ValueError as exc:
            return str(exc)
        needs += [need] if need else []
    judge = spec.settings["judge"]
    if not judge.get("base_url") or not judge.get("model"):
        needs.append(f"a judge endpoint: set tasks.{spec.name}.judge.base_url and .model (any OpenAI-compatible "
                     "server that returns log-probs)")
        return needs
    return [*needs, f"judge endpoint {judge['base_url']} serving {judge['model']} with log-probs{_api_key(judge)}"]


def _api_key(endpoint: Mapping[str, Any]) -> str:
    """Where an endpoint's API key comes from (nothing when it takes none)."""
    key = endpoint.get("api_key_env")
    if not key:
        return ""
    return f", API key in ${key}" + ("" if os.environ.get(key) else " (not set here)")


def _dataset_needs(sections: Mapping[str, Mapping[str, Any] | None]) -> list[str] | str:
    """`hub dataset X (network)` once per hub dataset among the sections ({what: {path}}), or why a
    local one cannot be read."""
    needs = []
    for what, section in sections.items():
        path = (section or {}).get("path")
        if not path:
            continue
        local = is_local(str(path))
        if local and not Path(str(path)).expanduser().exists():
            return f"{what} file {path} does not exist"
        need = f"hub dataset {path} (network)"
        if not local and need not in needs:
            needs.append(need)
    return needs


def _safety_needs(spec: TaskSpec) -> list[str] | str:
    """What a safety task needs: its sets' data (here or from the hub) and a WildGuard endpoint."""
    needs = _dataset_needs({f"sets.{name}.data": settings.get("data") for name, settings in spec.settings["sets"].items()})
    if isinstance(needs, str):
        return needs
    classifier = spec.settings["classifier"]
    if not classifier.get("base_url") or not classifier.get("model"):
        return [*needs, f"a classifier endpoint: set tasks.{spec.name}.classifier.base_url and .model (an "
                        "OpenAI-compatible server of allenai/wildguard with the completions route, e.g. vLLM's)"]
    return [*needs, f"classifier endpoint {classifier['base_url']} serving {classifier['model']}{_api_key(classifier)}"]


def task_status(spec: TaskSpec, resolved: Mapping[str, Any]) -> str:
    if spec.type == "external":
        return f"not runnable: {spec.settings['reason']}"
    if spec.type == "lm_eval":
        needs = _lm_eval_needs(spec, resolved)
    elif spec.type == "alpaca_eval":
        needs = _alpaca_eval_needs(spec)
    elif spec.type == "safety":
        needs = _safety_needs(spec)
    else:
        needs = _dataset_needs({"data": spec.settings.get("data"), "few-shot": spec.settings.get("fewshot")})
    if isinstance(needs, str):
        return f"not runnable: {needs}"
    needs += [str(need) for need in spec.get("needs", [])]  # what the config says the task needs besides
    return "runnable" + (f"; needs: {', '.join(needs)}" if needs else "")


def backend_status(resolved: Mapping[str, Any]) -> str:
    """What the generation backend needs (shared by every task)."""
    backend = resolved.get("generation", {}).get("backend")
    if backend == "vllm" and not installed("vllm"):
        return "backend vllm needs vLLM on a GPU (pip install -e '.[vllm]'; or generation.backend=hf)"
    return f"backend {backend}"
