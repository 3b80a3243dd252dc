"""Every model a stage loads runs on its own architecture's code: no loader lets transformers swap its
layers for kernels fetched from the hub, which newer transformers releases do by default on a GPU (and
which fails on a node without internet)."""

from __future__ import annotations

from tulu_cli.generation.base import _load_for_generation
from tulu_cli.modeling import load_model
from tulu_cli.train.rl.models import load_value_model


def test_no_loader_kernelizes_the_model_with_hub_kernels(start_model, tiny_tokenizer):
    model_cfg = {"path": str(start_model)}
    loaded = {
        "policy": load_model(model_cfg, tiny_tokenizer),
        "value model from the policy": load_value_model(model_cfg, None, tiny_tokenizer).backbone,
        "value model from a reward model": load_value_model(model_cfg, str(start_model), tiny_tokenizer).backbone,
        "generation model": _load_for_generation(str(start_model))[0],
    }
    kernelized = [name for name, model in loaded.items() if model.use_kernels]
    assert not kernelized, f"loaded with hub kernels: {kernelized}"
