"""Reference log-probs: computed once with the frozen starting policy and cached on disk, or (for
comparison) recomputed every step by a frozen copy held in memory.

The cache entry is `CACHE_DIR/KEY/` (`logprobs.safetensors` and `meta.json`), written atomically; an
entry that cannot be read (damaged, or not what this version writes) is a miss and is computed again.
The numbers are stored as safetensors, which loading cannot make run code. KEY hashes
what the numbers depend on: the model (path, revision, dtype, attention kernel, precision, and for a
local directory its weight files' names, sizes and modification times; for a freshly built model its
architecture and seed), the exact token ids and labels of every pair (so the data, the chat template,
the tokenizer and max_seq_length are all covered), and packing. A later run or a resumed run with
the same key loads the numbers instead of recomputing them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

from tulu_cli.train.dpo_losses import PairLogprobs

FORMAT_VERSION = 3
CACHE_FILE = "logprobs.safetensors"
# Pairs hashed per block by `data_digest`.
DIGEST_ROWS = 4096
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".json")


def default_cache_dir() -> Path:
    from tulu_cli.config import user_cache_dir

    return user_cache_dir("ref_logprobs")


def cache_dir(configured: str | None) -> Path:
    return Path(configured).expanduser() if configured else default_cache_dir()


def model_identity(model_cfg: Any, seed: int, precision: str) -> dict:
    model = OmegaConf.to_container(model_cfg, resolve=True) if OmegaConf.is_config(model_cfg) else dict(model_cfg)
    identity = {"path": model.get("path"), "revision": model.get("revision"), "dtype": model.get("dtype"),
                "attn_implementation": model.get("attn_implementation"), "precision": precision}
    lora = model.get("lora") or {}
    if lora.get("enabled") and lora.get("load_in_4bit"):
        # QLoRA's reference is the 4-bit base (adapters off), not the full-precision one.
        identity["load_in_4bit"] = True
    path = Path(str(model["path"])).expanduser() if model.get("path") else None
    if path is not None and path.is_dir():
        identity["path"] = str(path.resolve())
        identity["files"] = sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in path.iterdir()
                                   if f.name.endswith(WEIGHT_SUFFIXES))
    elif path is None:
        identity.update(init=model.get("init"), train_tokenizer=model.get("train_tokenizer"), seed=seed)
    return identity


def data_digest(pairs) -> str:
    """A hash of every pair's token ids and labels, in order, read from the dataset's Arrow buffers
    a block of rows at a time (per block and column: the row lengths, then the values)."""
    import pyarrow.compute as pc

    digest = hashlib.blake2b(digest_size=16)
    table = pairs.with_format("arrow")
    for start in range(0, len(pairs), DIGEST_ROWS):
        block = table[start:start + DIGEST_ROWS]
        for column in ("chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels"):
            values = block[column].combine_chunks()
            digest.update(pc.list_value_length(values).to_numpy(zero_copy_only=False).astype(np.int64).tobytes())
            digest.update(values.flatten().to_numpy(zero_copy_only=False).astype(np.int64).tobytes())
    return digest.hexdigest()


def cache_key(identity: dict, pairs, packing: bool) -> str:
    description = {"version": FORMAT_VERSION, "model": identity, "data": data_digest(pairs), "packing": packing}
    return hashlib.blake2b(json.dumps(description, sort_keys=True, default=str).encode(), digest_size=16).hexdigest()


def load_cached(root: Path, key: str, rows: int) -> PairLogprobs | None:
    """The cached log-probs of `rows` pairs, or None: no entry, or one that cannot be used."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = root / key / CACHE_FILE
    if not path.exists():
        return None
    try:
        values = load_file(path)["logprobs"]
    except (SafetensorError, KeyError, OSError, ValueError) as exc:
        print(f"reference cache {path} cannot be read ({type(exc).__name__}: {exc}); computing it again", flush=True)
        return None
    if values.shape != (4, rows) or values.dtype != torch.float64:
        return None
    return PairLogprobs(*values)


def store(root: Path, key: str, logprobs: PairLogprobs, meta: dict) -> Path:
    from safetensors.torch import save_file

    from tulu_cli.io import atomic_dir

    target = root / key
    values = torch.stack([logprobs.chosen, logprobs.rejected, logprobs.chosen_tokens, logprobs.rejected_tokens])
    with atomic_dir(target) as tmp:
        save_file({"logprobs": values.double().cpu().contiguous()}, tmp / CACHE_FILE)
        (tmp / "meta.json").write_text(json.dumps({"key": key, "rows": values.shape[1], **meta}, default=str,
                                                  indent=2) + "\n")
    return target


def cached_reference(accelerator, model, pairs, root: Path, key: str, batch_size: int, pad_id: int,
                     packing: bool, meta: dict) -> tuple[PairLogprobs, bool]:
    """(reference log-probs of `pairs`, whether they came from the cache).

    `model` must still be the starting policy. Every rank must see the entry for it to be used, so
    the ranks agree on whether to run the (collective) forward passes.
    """
    from tulu_cli.train.pair_logprobs import dataset_logprobs
    from tulu_cli.train.runtime import true_on_every_rank

    cached = load_cached(root, key, len(pairs))
    if true_on_every_rank(accelerator, cached is not None):
        return cached, True
    computed = dataset_logprobs(accelerator, model, pairs, batch_size, pad_id, packing)
    if accelerator.is_main_process:
        store(root, key, computed, meta)
    accelerator.wait_for_everyone()
    return computed, False


class CachedReference:
    """Reference log-probs looked up per row (from the cache or the one pass before training)."""

    def __init__(self, train: PairLogprobs, evaluation: PairLogprobs | None, key: str, hit: bool):
        self.train, self.evaluation, self.key, self.hit = train, evaluation, key, hit

    def for_rows(self, rows: list[int], pairs: list[dict], device) -> PairLogprobs:
        from tulu_cli.train.pair_logprobs import select

        return select(self.train, rows, device)


class OnlineReference:
    """A frozen copy of the starting policy run on every micro-batch (the uncached baseline)."""

    key = None
    hit = False

    def __init__(self, model, evaluation: PairLogprobs | None, pad_id: int, packing: bool, accelerator):
        self.model, self.evaluation = model, evaluation
        self.pad_id, self.packing, self.accelerator = pad_id, packing, accelerator

    def for_rows(self, rows: list[int], pairs: list[dict], device) -> PairLogprobs:
        from tulu_cli.train.pair_logprobs import forward_pairs

        with torch.no_grad(), self.accelerator.autocast():
            return forward_pairs(self.model, pairs, self.pad_id, self.packing, device)
