"""`hub.push=true hub.repo_id=OWNER/NAME`: upload a run's `final/` to the Hugging Face hub.

The repository is created when missing (private unless `hub.private=false`); the token is the one
huggingface_hub finds (`HF_TOKEN`, or `hf auth login`), never a config value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tulu_cli.errors import StageError


def repo_arguments(hub: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments of `huggingface_hub.create_repo` for the run's `hub` config."""
    return {"repo_id": str(hub["repo_id"]), "repo_type": "model", "private": bool(hub.get("private", True)),
            "exist_ok": True}


def upload_arguments(final_dir: Path, hub: dict[str, Any], stage: str) -> dict[str, Any]:
    """Keyword arguments of `huggingface_hub.upload_folder` for `final_dir` and the run's `hub` config."""
    return {"repo_id": str(hub["repo_id"]), "repo_type": "model", "folder_path": str(final_dir),
            "revision": hub.get("revision") or None,
            "commit_message": f"tulu {stage}: {final_dir.parent.name}",
            # Hidden names are atomic-write leftovers of an interrupted writer, never part of the model.
            "ignore_patterns": [".*", "**/.*"]}


def push_final(final_dir: Path, hub: dict[str, Any], stage: str) -> str:
    """Create the repository if needed and upload `final_dir`; return the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        api.create_repo(**repo_arguments(hub))
        if hub.get("revision"):
            api.create_branch(str(hub["repo_id"]), branch=str(hub["revision"]), exist_ok=True)
        commit = api.upload_folder(**upload_arguments(final_dir, hub, stage))
    except Exception as exc:  # noqa: BLE001 - whatever the hub client raises (HTTP, network, auth), say where the model is
        reason = " ".join(str(exc).split())
        raise StageError(f"hub push of {final_dir} to {hub['repo_id']} failed ({type(exc).__name__}: {reason}); the "
                         f"model is saved there: push it later with `hf upload {hub['repo_id']} {final_dir}`") from None
    return str(getattr(commit, "commit_url", commit))
