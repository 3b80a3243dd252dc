"""`tulu curate`: build each dataset of the preset (a data mix) into RUN_DIR/NAME with a manifest.

`mode: preferences` builds on-policy preference data instead (tulu_cli/preferences/pipeline.py), and
`mode: synthesize` synthetic prompts for a target skill: persona-driven and constraint-augmented
(tulu_cli/synthesis/pipeline.py).

Per dataset: RUN_DIR/NAME/data/*.parquet and RUN_DIR/NAME/manifest.json (written atomically), the
rows set aside in RUN_DIR/NAME.rejects.jsonl (file, row, field, reason), and one summary table.
"""

from __future__ import annotations

import os
from pathlib import Path

from datasets import disable_progress_bars
from omegaconf import DictConfig, OmegaConf

from tulu_cli.curate.build import build_mix
from tulu_cli.curate.dataset_dir import write_dataset
from tulu_cli.curate.display import console, curate_table
from tulu_cli.curate.mixing import MixError
from tulu_cli.data.sources import SourceError
from tulu_cli.entry import StageError, entrypoint
from tulu_cli.io import atomic_write_json, scratch_dir
from tulu_cli.progress import progress_bars


def main(cfg: DictConfig, run_dir: Path) -> None:
    disable_progress_bars()  # our own bars and table are the console output
    config = OmegaConf.to_container(cfg, resolve=True)
    mode = config.get("mode", "mix")
    if mode == "preferences":
        from tulu_cli.preferences.pipeline import run_preferences

        return run_preferences(config, run_dir)
    if mode == "synthesize":
        from tulu_cli.synthesis.pipeline import run_synthesis

        return run_synthesis(config, run_dir)
    if mode != "mix":
        raise StageError(f"mode must be mix, preferences or synthesize, got {mode!r}")
    datasets = config.get("datasets") or {}
    if not datasets:
        raise StageError("nothing to build: the preset has no `datasets` (name -> data mix)")
    manifests: dict[str, dict] = {}
    for name, mix in datasets.items():
        seed = int(mix.get("seed", config.get("seed", 0)))
        # The mix's working files (valid rows, rejects) sit next to the outputs, on the same file system.
        with scratch_dir(run_dir, f".{name}.work-") as work:
            try:
                with progress_bars() as new_bar:
                    result = build_mix(name, mix, seed, new_bar, work)
            except (SourceError, MixError, ValueError) as exc:
                raise StageError(f"dataset {name!r}: {exc}") from None
            rejects_file = run_dir / f"{name}.rejects.jsonl"
            os.replace(result.rejects.path, rejects_file)
            manifest = {"name": name, "kind": result.kind, "seed": seed, "shuffle": bool(mix.get("shuffle", True)),
                        "sources": [stats.to_json() for stats in result.sources], "counts": result.counts(),
                        "rejects_file": f"../{rejects_file.name}", "config": {"mix": mix, "stage": config}}
            manifests[name] = write_dataset(run_dir / name, result.rows, manifest,
                                            int(config.get("rows_per_file", 100_000)), result.order)
    console.print(curate_table(manifests))
    atomic_write_json(run_dir / "summary.json", {name: {"path": str(run_dir / name), **m["counts"]}
                                                  for name, m in manifests.items()})


if __name__ == "__main__":
    entrypoint(main)
