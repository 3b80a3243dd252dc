"""Atomic file and directory writes: a killed run never leaves a half-written output that looks complete;
and the scratch folders a stage spools into inside its run directory."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO


@contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[TextIO]:
    """A text file to write `path` through: a temporary file in the same directory, renamed onto `path`
    when the block ends without an exception (and removed when it raises)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same directory and an atomic rename."""
    with atomic_open(path) as handle:
        handle.write(text)


def atomic_copy(source: str | os.PathLike, path: str | os.PathLike) -> None:
    """Copy the UTF-8 text file `source` to `path` atomically (see `atomic_open`)."""
    with open(source, encoding="utf-8") as original, atomic_open(path) as handle:
        shutil.copyfileobj(original, handle)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling directory; when the block ends without an exception it takes the place
    of `path` in one step, so a reader sees the old directory or the new one, never a partial one or
    none, and two writers finishing at once (two sweep points filling one cache entry) both succeed,
    the last one's directory staying. On an exception the temporary directory is removed; after a
    kill it stays behind under a hidden name and `path` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial"))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    install_dir(tmp, path)


@contextmanager
def scratch_dir(run_dir: Path, prefix: str) -> Iterator[Path]:
    """A new hidden folder `run_dir/PREFIX*` for a stage's spool files, removed when the block ends however
    it ends; those a killed run left behind are removed first."""
    for left_behind in run_dir.glob(f"{prefix}*"):
        shutil.rmtree(left_behind, ignore_errors=True)
    folder = Path(tempfile.mkdtemp(dir=run_dir, prefix=prefix))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def install_dir(tmp: Path, path: Path) -> None:
    """Put the finished directory `tmp` at `path` in one step, replacing what is there (see atomic_dir)."""
    for _ in range(8):
        try:
            os.rename(tmp, path)  # onto an empty directory or nothing
            return
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        exchanged = _exchange(tmp, path)
        if exchanged:
            shutil.rmtree(tmp, ignore_errors=True)  # now the previous directory
            return
        if exchanged is None:
            break
    # No atomic exchange on this file system: move the old directory aside under a name of its own.
    old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
    os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def _exchange(first: Path, second: Path) -> bool | None:
    """Swap two paths in one step (Linux `renameat2(RENAME_EXCHANGE)`): True when swapped, False when
    `second` no longer exists, None when this system or file system cannot exchange."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return None
    at_cwd, rename_exchange = -100, 2
    if renameat2(at_cwd, os.fsencode(first), at_cwd, os.fsencode(second), rename_exchange) == 0:
        return True
    error = ctypes.get_errno()
    if error == errno.ENOENT:
        return False
    if error in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return None
    raise OSError(error, os.strerror(error), str(second))


def json_line(value: Any, **options) -> str:
    """`value` as JSON text that can always be written as UTF-8: non-ASCII characters as they are, unless
    a string holds a lone surrogate (JSON can escape one, UTF-8 cannot encode it, and `json.loads` makes
    one of a `\\ud800` escape), in which case every non-ASCII character is escaped. Lossless either way."""
    text = json.dumps(value, ensure_ascii=False, **options)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, ensure_ascii=True, **options)
    return text


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def write_jsonl(path: str | os.PathLike, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json_line(row) + "\n" for row in rows))
