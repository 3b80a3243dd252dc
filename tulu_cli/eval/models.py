"""The model under evaluation, loaded once and shared by every task: an HF model (CPU or one GPU) for
generation and log-likelihoods, or a vLLM engine for generation on GPU nodes."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tulu_cli.entry import StageError
from tulu_cli.run_lineage import producing_stage


class EvalModel:
    def __init__(self, model_cfg: Mapping[str, Any], generation: Mapping[str, Any], assets: Path, seed: int):
        self.model_cfg = dict(model_cfg)
        self.generation = dict(generation)
        self.assets = assets
        self.seed = seed
        self._tokenizer = None
        self._model = None
        self._backend = None
        self._lm = None

    @property
    def path(self) -> str | None:
        return self.model_cfg.get("path")

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from tulu_cli.modeling import load_tokenizer

            try:
                self._tokenizer = load_tokenizer(self.model_cfg, self.assets)
            except (OSError, ValueError) as exc:
                raise StageError(f"cannot load the tokenizer of model.path={self.path!r}: {exc}") from None
        return self._tokenizer

    def hf(self):
        """The HF model and tokenizer (loaded on first use, on GPU when there is one)."""
        if self._model is None:
            import torch

            from tulu_cli.modeling import load_model

            try:
                model = load_model(self.model_cfg, self.tokenizer, self.seed)
            except (OSError, ValueError) as exc:
                raise StageError(f"cannot load model.path={self.path!r}: {exc}") from None
            if torch.cuda.is_available():
                model = model.to("cuda")
            print(f"eval model on {next(model.parameters()).device}", flush=True)
            self._model = model.eval()
        return self._model, self.tokenizer

    def backend(self):
        """The generation backend of `generation.backend`."""
        if self._backend is None:
            from tulu_cli.generation import build_backend

            kind = self.generation["backend"]
            batch_size = int(self.generation["batch_size"])
            if kind == "vllm":
                if not self.path:
                    raise StageError("generation.backend=vllm needs model.path (a model directory or hub id)")
                self._backend = build_backend("vllm", model_path=self.path, batch_size=batch_size,
                                              **dict(self.generation.get("vllm") or {}))
            else:
                model, tokenizer = self.hf()
                self._backend = build_backend(kind, model=model, tokenizer=tokenizer, batch_size=batch_size)
        return self._backend

    def lm_eval_model(self, batch_size: int):
        if self._lm is None:
            from tulu_cli.eval.lm_eval_backend import build_lm

            if self.generation["backend"] == "vllm":
                self._lm = build_lm(self.generation, model_path=self.path, batch_size=batch_size)
            else:
                model, tokenizer = self.hf()
                self._lm = build_lm(self.generation, model=model, tokenizer=tokenizer, batch_size=batch_size)
        return self._lm

    def describe(self) -> dict:
        return {"path": self.path, "revision": self.model_cfg.get("revision"),
                "initialised": not self.path, "stage": producing_stage(self.path)}


def run_label(model_cfg: Mapping[str, Any]) -> str:
    """How a run is named in reports: the producing stage (sft, dpo, rlvr), else the directory or hub
    name of the model; a freshly initialised model is `untrained`."""
    path = model_cfg.get("path")
    if not path:
        return "untrained"
    stage = producing_stage(path)
    if stage:
        return stage
    candidate = Path(path).expanduser()
    return candidate.name if candidate.exists() else str(path)
