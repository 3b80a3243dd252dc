"""Resumable checkpoints and the final Hugging Face model.

A checkpoint is `checkpoints/step_XXXXXXXX/`: accelerate's state (model, optimizer, every rank's RNG
state), the learning-rate schedule as `scheduler.json`, and `trainer_state.json` (the optimizer step,
which fixes the data position, and the batch plan it was taken under). It is written under a hidden
name and renamed when complete, so a killed run never leaves a checkpoint that looks whole but is not.
A run resumed from an earlier checkpoint of its own directory moves the later ones to
`checkpoints/superseded/`: they belong to the run it replaces, and neither `resume=true` nor the
rotation of kept checkpoints may take them for this run's.

A checkpoint may come from elsewhere (`resume=PATH`), so it is untrusted input: before anything in it
is loaded, every pickled file in it is read with torch's restricted unpickler (tensors, containers and
a few numpy types only), and one that asks for anything else is refused without running it. The load
itself runs under the same restriction (DeepSpeed asks torch for unrestricted unpickling), so a file
replaced between the check and the load is refused too.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tulu_cli.errors import StageError
from tulu_cli.io import install_dir

STATE_FILE = "trainer_state.json"
SCHEDULER_FILE = "scheduler.json"
# How accelerate named the state of the first object registered for checkpointing: the schedule, in
# checkpoints written before it was saved as JSON. accelerate refuses to load a checkpoint that holds it
# unless an object is registered for it, and would unpickle it without restrictions, so such a checkpoint
# is refused with the reason.
LEGACY_SCHEDULER_FILE = "custom_checkpoint_0.pkl"


def checkpoint_root(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def latest_checkpoint(run_dir: Path) -> Path | None:
    root = checkpoint_root(run_dir)
    complete = sorted(p for p in root.glob("step_*") if (p / STATE_FILE).exists()) if root.exists() else []
    return complete[-1] if complete else None


def resolve_resume(resume, run_dir: Path) -> Path | None:
    """`resume=true` -> newest checkpoint in the run dir (None if there is none yet); a path -> that one."""
    if resume in (None, False, "false", "False"):
        return None
    if resume in (True, "true", "True"):
        return latest_checkpoint(run_dir)
    path = Path(str(resume))
    if not (path / STATE_FILE).exists():
        raise StageError(f"resume={resume}: not a complete checkpoint (no {STATE_FILE})")
    return path


def agreed_checkpoint(accelerator, checkpoint: Path | None, run_dir: Path) -> Path | None:
    """The checkpoint the main process resumes from, on every rank. Each rank lists the checkpoints
    itself: one whose view of a shared file system lags or leads the main process's (a restart while a
    checkpoint is being renamed, a node's stale cache) would pick another step, or none, and the ranks
    would then wait in different collectives."""
    from tulu_cli.train.runtime import main_process_number

    mine = read_trainer_state(checkpoint)["step"] if checkpoint is not None else -1
    step = main_process_number(accelerator, mine)
    if step == mine:
        return checkpoint
    if step < 0:
        return None
    agreed = checkpoint_root(run_dir) / f"step_{step:08d}"
    if checkpoint is not None and checkpoint.parent != agreed.parent or not (agreed / STATE_FILE).exists():
        raise StageError(f"the main process resumes from step {step}, but process {accelerator.process_index} "
                         f"sees {checkpoint or 'no checkpoint'} instead of a complete {agreed}")
    return agreed


def save_checkpoint(accelerator, run_dir: Path, step: int, keep: int, scheduler, extra: dict | None = None) -> Path:
    root = checkpoint_root(run_dir)
    final = root / f"step_{step:08d}"
    partial = root / f".step_{step:08d}.partial"
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (partial / SCHEDULER_FILE).write_text(json.dumps(scheduler.state_dict()) + "\n")
        (partial / STATE_FILE).write_text(json.dumps({"step": step, **(extra or {})}) + "\n")
        install_dir(partial, final)
        if keep > 0:
            for old in sorted(root.glob("step_*"))[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def set_aside_later_checkpoints(run_dir: Path, step: int) -> list[Path]:
    """Move this run directory's checkpoints past `step` to `checkpoints/superseded/`; return their new paths."""
    root = checkpoint_root(run_dir)
    moved = []
    for later in sorted(root.glob("step_*")) if root.exists() else []:
        if int(later.name.removeprefix("step_")) > step:
            target = root / "superseded" / later.name
            target.parent.mkdir(exist_ok=True)
            install_dir(later, target)
            moved.append(target)
    return moved


def load_checkpoint(accelerator, path: Path, scheduler) -> dict:
    """Restore the state saved at `path` (refusing unsafe files first); return its trainer state."""
    from tulu_cli.train.runtime import print_whole_line
    from tulu_cli.train.safe_load import check_checkpoint_files, restricted_loading

    check_checkpoint_files(path)
    if not (path / SCHEDULER_FILE).exists():
        if (path / LEGACY_SCHEDULER_FILE).exists():
            raise StageError(f"resume: {path} keeps its learning-rate schedule in {LEGACY_SCHEDULER_FILE}, as "
                             f"checkpoints of earlier versions of tulu did; resume it with the version that wrote "
                             f"it, or start afresh (overwrite=true)")
        raise StageError(f"resume: {path} has no {SCHEDULER_FILE} (not a checkpoint of this trainer)")
    state = read_trainer_state(path)
    rng_file = path / f"random_states_{accelerator.process_index}.pkl"
    if not rng_file.exists():
        # accelerate goes on without a word when a rank has no saved random state.
        print_whole_line(f"[rank {accelerator.process_index}] warning: {path} has no {rng_file.name} (taken with fewer "
                         f"ranks?): this rank's random state starts from the run's seed, not from the checkpoint")
    with restricted_loading():
        accelerator.load_state(str(path))
    scheduler.load_state_dict(read_json(path / SCHEDULER_FILE))
    return state


def read_trainer_state(path: Path) -> dict:
    state = read_json(path / STATE_FILE)
    if not isinstance(state, dict) or not isinstance(state.get("step"), int) or state["step"] < 0:
        raise StageError(f"resume: {path / STATE_FILE} holds no step number")
    return state


def read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StageError(f"resume: cannot read {path}: {exc}") from None


def save_final(accelerator, model, tokenizer, run_dir: Path, part: str | None = None, name: str = "final") -> Path:
    """Write `RUN_DIR/name/` (default `final/`): a safetensors model and its tokenizer, loadable with
    `from_pretrained`. Every rank must call it.

    `part` names a submodule to save instead of the whole model (e.g. the policy of a module that
    also holds a value model). A LoRA model is saved merged, with its adapter in `adapter/`. Under
    ZeRO-3 the full weights are gathered one module at a time and written in shards, so neither a
    device nor the main process's memory holds the whole model.
    """
    from tulu_cli.io import atomic_dir
    from tulu_cli.train.lora import is_lora_model, save_merged_and_adapter
    from tulu_cli.train.runtime import is_zero3

    target = run_dir / name
    module = accelerator.unwrap_model(model)
    if part is not None:
        module = getattr(module, part)
    if is_lora_model(module):
        # LoRA never runs under ZeRO-3: every rank holds the whole model, the main process writes it.
        if accelerator.is_main_process:
            with atomic_dir(target) as tmp:
                save_merged_and_adapter(module, tokenizer, tmp)
    elif is_zero3():
        if accelerator.is_main_process:
            with atomic_dir(target) as tmp:
                write_gathered(module, tmp)
                save_model_files(module, tokenizer, tmp)
        else:
            write_gathered(module, None)
    else:
        state_dict = accelerator.get_state_dict(model)
        if accelerator.is_main_process:
            if part is not None:
                prefix = f"{part}."
                state_dict = {key[len(prefix):]: value for key, value in state_dict.items()
                              if key.startswith(prefix)}
            with atomic_dir(target) as tmp:
                module.save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
                tokenizer.save_pretrained(tmp)
    accelerator.wait_for_everyone()
    return target


def write_gathered(module, directory: Path | None, max_shard_bytes: int = 2 * 1024**3) -> None:
    """Gather a ZeRO-3 module's parameters one submodule at a time and write them (when `directory`
    is set, on the main process) as safetensors shards of at most `max_shard_bytes`, with an index
    when there is more than one. Every rank takes part in each gather. A parameter shared by two
    modules (tied embeddings) is written once, under its first name, as `save_pretrained` does."""
    import deepspeed

    writer = ShardWriter(directory, max_shard_bytes) if directory is not None else None
    seen: set[int] = set()
    for prefix, submodule in module.named_modules():
        params = [p for p in submodule.parameters(recurse=False) if id(p) not in seen]
        with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
            named = [(n, t) for n, t in submodule.named_parameters(recurse=False) if id(t) not in seen]
            named += [(n, t) for n, t in submodule.named_buffers(recurse=False)
                      if n not in submodule._non_persistent_buffers_set]
            for local_name, tensor in named:
                seen.add(id(tensor))
                if writer is not None:
                    writer.add(f"{prefix}.{local_name}" if prefix else local_name, tensor)
    if writer is not None:
        writer.finish()


class ShardWriter:
    """Writes named tensors, added one at a time, as safetensors shards of at most `max_shard_bytes`
    (`model.safetensors`, or `model-0000N-of-0000M.safetensors` and an index when there are more)."""

    def __init__(self, directory: Path, max_shard_bytes: int = 2 * 1024**3):
        self.directory, self.max_shard_bytes = directory, max_shard_bytes
        self.files: list[tuple[Path, list[str]]] = []
        self.shard: dict = {}
        self.shard_bytes = self.total_bytes = 0

    def add(self, name: str, tensor) -> None:
        nbytes = tensor.numel() * tensor.element_size()
        if self.shard and self.shard_bytes + nbytes > self.max_shard_bytes:
            self._flush()
        # A copy: a gathered or merged tensor's storage may be released once the caller moves on.
        self.shard[name] = tensor.detach().to("cpu", copy=True).contiguous()
        self.shard_bytes += nbytes
        self.total_bytes += nbytes

    def _flush(self) -> None:
        from safetensors.torch import save_file

        if self.shard:
            path = self.directory / f".shard-{len(self.files):05d}.safetensors"
            save_file(self.shard, str(path), metadata={"format": "pt"})
            self.files.append((path, list(self.shard)))
        self.shard, self.shard_bytes = {}, 0

    def finish(self) -> None:
        self._flush()
        if len(self.files) == 1:
            self.files[0][0].rename(self.directory / "model.safetensors")
            return
        weight_map = {}
        for number, (path, keys) in enumerate(self.files, start=1):
            final_name = f"model-{number:05d}-of-{len(self.files):05d}.safetensors"
            path.rename(self.directory / final_name)
            weight_map.update(dict.fromkeys(keys, final_name))
        index = {"metadata": {"total_size": self.total_bytes}, "weight_map": weight_map}
        (self.directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def save_model_files(module, tokenizer, directory: Path) -> None:
    """Everything of a `save_pretrained` directory but the weights: config, generation config, tokenizer."""
    module.config.architectures = [type(module).__name__]
    module.config.save_pretrained(directory)
    if getattr(module, "generation_config", None) is not None and module.can_generate():
        module.generation_config.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
