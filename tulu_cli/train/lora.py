"""LoRA and QLoRA (peft): the one place where a trainer's model gets adapters, where the frozen starting
model is read back from it (adapters off), where checkpoints keep only the trained parameters, and
where the adapters are merged into the weights that `final/` holds.

With `model.lora.enabled`, the base weights are frozen and only the adapters (`lora_A`, `lora_B`) are
trained, so the optimizer state covers only them. The starting model stays inside the trained one:
switching the adapters off gives it back exactly, which is the reference of DPO (online) and RLVR
without a second copy of the weights. `model.lora.load_in_4bit` (QLoRA) loads the frozen base weights
as 4-bit NF4 through bitsandbytes, which needs a CUDA GPU.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from tulu_cli.errors import StageError

# Inside `final/`: the adapter as peft saves it, beside the merged model.
ADAPTER_DIR = "adapter"
# In a checkpoint written by accelerate, the model's weights (here only the trained ones).
CHECKPOINT_WEIGHTS = "model.safetensors"
# Printed by a trainer whose reference is the trained model with its adapters off.
REFERENCE_NOTE = "reference: the policy with its LoRA adapters off (no second model)"


def lora_settings(model_cfg: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The `model.lora` section when LoRA is on, else None."""
    lora = model_cfg.get("lora")
    return lora if lora and lora.get("enabled") else None


def quantization_kwargs(model_cfg: Mapping[str, Any], dtype) -> dict:
    """`from_pretrained` arguments that load the base weights in 4 bits (QLoRA), or none.

    Fails with a clear message where QLoRA cannot run: no CUDA GPU, bitsandbytes missing, or a model
    built from `init` (only stored weights can be quantized on load).
    """
    lora = lora_settings(model_cfg)
    if lora is None or not lora.get("load_in_4bit"):
        return {}
    if not model_cfg.get("path"):
        raise StageError("model.lora.load_in_4bit=true needs model.path: only stored weights are quantized on load")
    if not torch.cuda.is_available():
        raise StageError("model.lora.load_in_4bit=true (QLoRA) needs a CUDA GPU; on a CPU use LoRA without it "
                         "(model.lora.load_in_4bit=false)")
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        raise StageError("model.lora.load_in_4bit=true (QLoRA) needs bitsandbytes: pip install 'tulu-cli[qlora]'")
    from accelerate import PartialState
    from transformers import BitsAndBytesConfig

    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                bnb_4bit_compute_dtype=dtype)
    return {"quantization_config": config, "device_map": {"": PartialState().local_process_index}}


def load_policy(model_cfg: Mapping[str, Any], tokenizer, seed: int = 0):
    """The model a trainer trains: the starting model, with LoRA adapters on it when `model.lora` is on."""
    from tulu_cli.modeling import load_model
    from tulu_cli.train.runtime import is_zero3

    lora = lora_settings(model_cfg)
    if lora is not None and is_zero3():
        raise StageError("model.lora.enabled=true does not run under DeepSpeed ZeRO-3: use a launcher without "
                         "deepspeed (one GPU: launcher=gpu1; CPU: cpu or cpu_ddp2)")
    model = load_model(model_cfg, tokenizer, seed)
    return model if lora is None else add_adapters(model, lora, bool(model_cfg.get("gradient_checkpointing")))


def add_adapters(model, lora: Mapping[str, Any], gradient_checkpointing: bool):
    """Wrap `model` in a peft model with fresh adapters (the update starts at zero: lora_B is zero)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if getattr(model, "is_loaded_in_4bit", False):
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False})
    targets = lora["target_modules"]
    config = LoraConfig(r=int(lora["r"]), lora_alpha=float(lora["alpha"]), lora_dropout=float(lora["dropout"]),
                        target_modules=targets if isinstance(targets, str) else list(targets),
                        bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def is_lora_model(module) -> bool:
    """Whether `module` is a peft model (peft is only imported by runs that use it)."""
    return "peft" in sys.modules and isinstance(module, sys.modules["peft"].PeftModel)


class WithoutAdapters:
    """The trained peft model with its adapters switched off for each call: the frozen starting model,
    read from the same weights (no second copy). Called like a model, in eval mode, as a frozen
    reference is; `eval`/`train`/`training` act on the trained model, for code that toggles them."""

    def __init__(self, peft_model):
        self.model = peft_model

    @property
    def training(self) -> bool:
        return self.model.training

    def eval(self):
        self.model.eval()
        return self

    def train(self, mode: bool = True):
        self.model.train(mode)
        return self

    def get_base_model(self):
        """The wrapped transformers model (what a caller inspects for the arguments it takes)."""
        return self.model.get_base_model()

    def __call__(self, *args, **kwargs):
        was_training = self.model.training
        self.model.eval()
        try:
            with self.model.disable_adapter():
                return self.model(*args, **kwargs)
        finally:
            self.model.train(was_training)


def starting_model(accelerator, model, part: str | None = None):
    """The frozen starting model inside a LoRA-trained `model` (adapters off), or None without LoRA."""
    module = accelerator.unwrap_model(model)
    if part is not None:
        module = getattr(module, part)
    return WithoutAdapters(module) if is_lora_model(module) else None


def keep_trained_parameters_in_checkpoints(accelerator, model) -> None:
    """With LoRA, a checkpoint holds only the parameters that train (the adapters, and a PPO value
    model), not the frozen base weights; resume loads them back and checks that every one is there.
    The optimizer, schedule and RNG states are saved and restored as for full fine-tuning."""
    if not any(is_lora_model(module) for module in accelerator.unwrap_model(model).modules()):
        return

    def trained_names(prepared) -> set[str]:
        return {name for name, param in prepared.named_parameters() if param.requires_grad}

    def before_save(models, weights, _output_dir) -> None:
        for index, (prepared, state) in enumerate(zip(models, weights, strict=False)):
            names = trained_names(prepared)
            weights[index] = {key: value for key, value in state.items() if key in names}

    def before_load(models, input_dir) -> None:
        from safetensors.torch import load_file

        for prepared in models:
            path = Path(input_dir) / CHECKPOINT_WEIGHTS
            if not path.exists():
                raise StageError(f"resume: {input_dir} has no {CHECKPOINT_WEIGHTS} (the trained adapter weights)")
            state = load_file(str(path))
            expected = trained_names(prepared)
            if set(state) != expected:
                missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
                raise StageError(f"resume: {path} does not hold this run's trained parameters (LoRA "
                                 f"model.lora.* must match the checkpoint's run); missing {missing[:3]}, "
                                 f"unexpected {extra[:3]}")
            prepared.load_state_dict(state, strict=False)
        # Loaded here: accelerate must not load them again (its loader expects every weight).
        models.clear()

    accelerator.register_save_state_pre_hook(before_save)
    accelerator.register_load_state_pre_hook(before_load)


def merged_tensors(peft_model) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) of every weight of the model with the adapters merged in, named as in the plain
    transformers model, one tensor at a time: a LoRA layer's weight is its base weight (dequantized
    from 4 bits under QLoRA) plus scale * B @ A; other 4-bit weights are dequantized; the rest is as
    it is. A tensor shared by two modules (tied embeddings) is given once, under its first name.
    The trained model is left unchanged."""
    from peft.tuners.lora import LoraLayer
    from peft.utils.integrations import dequantize_module_weight

    base = peft_model.get_base_model()
    lora_prefixes: list[str] = []
    seen: set[int] = set()
    for prefix, module in base.named_modules():
        if any(prefix.startswith(f"{outer}.") for outer in lora_prefixes):
            continue
        if isinstance(module, LoraLayer):
            lora_prefixes.append(prefix)
            layer = module.get_base_layer()
            weight = dequantize_module_weight(layer).detach()
            dtype = _output_dtype(layer, weight)
            merged = weight.float()
            for adapter in module.active_adapters:
                if adapter in module.lora_A:
                    merged = merged + module.get_delta_weight(adapter).float()
            yield f"{prefix}.weight", merged.to(dtype)
            if getattr(layer, "bias", None) is not None:
                yield f"{prefix}.bias", layer.bias.detach()
            continue
        quantized = _is_4bit(module)
        for name, tensor in module.named_parameters(recurse=False):
            if id(tensor) in seen:
                continue
            seen.add(id(tensor))
            if quantized and name == "weight":
                tensor = dequantize_module_weight(module)
            yield (f"{prefix}.{name}" if prefix else name), tensor.detach()
        for name, tensor in module.named_buffers(recurse=False):
            if name not in module._non_persistent_buffers_set:
                yield (f"{prefix}.{name}" if prefix else name), tensor.detach()


def _is_4bit(module) -> bool:
    return type(getattr(module, "weight", None)).__name__ == "Params4bit"


def _output_dtype(layer, weight: torch.Tensor) -> torch.dtype:
    """A merged weight keeps its layer's dtype; a 4-bit layer's becomes its compute dtype."""
    if _is_4bit(layer):
        return getattr(layer, "compute_dtype", None) or torch.bfloat16
    return weight.dtype


def save_merged_and_adapter(peft_model, tokenizer, directory: Path) -> None:
    """Write into `directory` the merged model (safetensors shards, config without quantization, the
    tokenizer: loadable with plain transformers) and the adapter alone in `directory/adapter/`."""
    from tulu_cli.train.checkpoint import ShardWriter, save_model_files

    base = peft_model.get_base_model()
    # QLoRA keeps norms and embeddings in float32 for training; the merged model is saved in its dtype.
    dtype = base.config.dtype if isinstance(base.config.dtype, torch.dtype) else None
    writer = ShardWriter(directory)
    for name, tensor in merged_tensors(peft_model):
        writer.add(name, tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor)
    writer.finish()
    save_model_files(base, tokenizer, directory)
    _drop_quantization(directory / "config.json")
    # Embedding rows added for the tokenizer (cover_tokenizer) are in the merged model, not the adapter.
    peft_model.save_pretrained(directory / ADAPTER_DIR, safe_serialization=True, save_embedding_layers=False)


def _drop_quantization(config_path: Path) -> None:
    """The merged weights are full precision: the saved config must not ask for a 4-bit load."""
    import json

    config = json.loads(config_path.read_text())
    if config.pop("quantization_config", None) is not None:
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
