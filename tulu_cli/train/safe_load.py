"""Reading pickled training state from files that may come from elsewhere, without running code from them.

torch's restricted unpickler (`weights_only=True`) rebuilds tensors, containers and numbers, plus the
few types allowed here: numpy arrays and dtypes (RNG states, as accelerate allows them) and, when the
run uses DeepSpeed, the ZeRO stage enum and loss scalers its checkpoints hold. A pickle that asks for
anything else (the way a crafted file runs code) is refused before any of it is executed.
"""

from __future__ import annotations

import os
import pickle
import sys
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from tulu_cli.errors import StageError

PICKLE_SUFFIXES = (".bin", ".pkl", ".pt", ".pth", ".pickle")
# torch reads both at every `torch.load`: the first set, the restricted unpickler is used whatever the
# caller asked for; the two set together, every load fails.
FORCE_RESTRICTED = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
FORCE_UNRESTRICTED = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


def allowed_globals() -> list:
    from accelerate.utils.other import TORCH_SAFE_GLOBALS

    allowed = list(TORCH_SAFE_GLOBALS)
    if "deepspeed" in sys.modules:
        from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
        from deepspeed.runtime.zero.config import ZeroStageEnum

        allowed += [ZeroStageEnum, LossScaler, DynamicLossScaler]
    return allowed


def load_tensors(path: Path) -> Any:
    """`torch.load` of an untrusted file: restricted unpickling, or a StageError naming the file."""
    zipped = zipfile.is_zipfile(path)
    try:
        with torch.serialization.safe_globals(allowed_globals()):
            # mmap: checking a large optimizer state does not read all of it into memory.
            return torch.load(path, map_location="cpu", weights_only=True, mmap=zipped)
    except pickle.UnpicklingError as exc:
        raise StageError(f"refused to load {path}: it asks to run or build something other than tensors and plain "
                         f"data ({refusal(exc)}); a checkpoint is loaded without running code from it") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise StageError(f"cannot load {path}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") \
            from None


def refusal(exc: pickle.UnpicklingError) -> str:
    """The line of the restricted unpickler's message that names what the file asked for."""
    reason = str(exc).strip().splitlines()
    return next((line for line in reason if "GLOBAL" in line or "Unsupported" in line), reason[0] if reason else "").strip()


def is_pickled(path: Path) -> bool:
    """Whether `path` is a file that accelerate or DeepSpeed would unpickle: torch's zip format whatever
    its name, or a name they load with torch.load. (Other files are read by parsers that run no code.)"""
    return path.suffix in PICKLE_SUFFIXES or zipfile.is_zipfile(path)


def check_checkpoint_files(root: Path) -> None:
    """Refuse a checkpoint with any pickled file the restricted unpickler would not load (StageError)."""
    for path in sorted(root.rglob("*")):
        if path.is_file() and is_pickled(path):
            load_tensors(path)


@contextmanager
def restricted_loading() -> Iterator[None]:
    """Every `torch.load` inside the block unpickles as `load_tensors` does, with the same allowed types,
    whatever its caller asks: DeepSpeed loads its checkpoint files with `weights_only=False`, so without
    this a file replaced after `check_checkpoint_files` had passed it would be unpickled without limits."""
    previous = {name: os.environ.pop(name, None) for name in (FORCE_RESTRICTED, FORCE_UNRESTRICTED)}
    os.environ[FORCE_RESTRICTED] = "1"
    try:
        with torch.serialization.safe_globals(allowed_globals()):
            yield
    except pickle.UnpicklingError as exc:
        raise StageError(f"refused a checkpoint file while loading it (changed since it was checked?): "
                         f"{refusal(exc)}") from None
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
