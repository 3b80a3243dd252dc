"""Building the tokenizer and model a stage starts from: loaded from the hub or a local directory,
or (tiny runs) a Llama-architecture model initialised from a config with a tokenizer trained on
bundled data."""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from tulu_cli.data.chat import CHAT_TEMPLATE

BOS, EOS, PAD = "<|begin_of_text|>", "<|end_of_text|>", "<pad>"


CHAT_TEMPLATE_CHOICES = ("tulu", "tokenizer")

# Passed to every `from_pretrained` of a model: weights run on their own architecture's code. Newer
# transformers releases (5.25 among them, not 5.17) otherwise swap layers for kernels fetched from the
# hub when the model is on a GPU: code downloaded at load time, numerics that change with the hub, and
# a load that fails on a node without internet.
NO_HUB_KERNELS = {"use_kernels": False}


def load_tokenizer(model_cfg: Mapping[str, Any], assets: Path):
    """The tokenizer of `model.tokenizer` or `model.path`; else one trained on bundled files.

    `model.chat_template`: `tulu` (default, as the reference trainers do) sets the Tulu template
    whatever the source tokenizer carries, so the `final/` a trainer saves renders the format it was
    trained in (a Llama 3.1 tokenizer may carry Meta's own); `tokenizer` keeps the source's template
    (the Tulu one when it has none), for evaluating a model in the format it ships with.
    """
    template = model_cfg.get("chat_template") or "tulu"
    if template not in CHAT_TEMPLATE_CHOICES:
        raise ValueError(f"model.chat_template must be one of {', '.join(CHAT_TEMPLATE_CHOICES)}, got {template!r}")
    from transformers import AutoTokenizer

    source = model_cfg.get("tokenizer") or model_cfg.get("path")
    if source:
        tokenizer = AutoTokenizer.from_pretrained(source, revision=model_cfg.get("revision"))
    elif model_cfg.get("train_tokenizer"):
        spec = model_cfg["train_tokenizer"]
        tokenizer = train_tokenizer(_message_texts([assets / f for f in spec["files"]]), spec["vocab_size"])
    else:
        raise ValueError("model: set `path` (hub id or directory), `tokenizer`, or `train_tokenizer`")
    if tokenizer.pad_token is None:
        tokenizer.add_special_tokens({"pad_token": PAD})
    if tokenizer.eos_token is None:
        raise ValueError(f"tokenizer of {source!r} has no eos token; the chat format needs one")
    if template == "tulu" or not tokenizer.chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def train_tokenizer(texts: Iterator[str], vocab_size: int):
    """A byte-level BPE tokenizer with Llama 3's special tokens; digits are split one by one."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    core.decoder = decoders.ByteLevel()
    core.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[BOS, EOS, PAD],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(texts, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token=BOS, eos_token=EOS, pad_token=PAD)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _message_texts(files: list[Path]) -> Iterator[str]:
    from tulu_cli.data.chat import render
    from tulu_cli.data.sources import load_source, row_dict

    for path in files:
        loaded = load_source(str(path))
        if loaded.rejects:
            bad = loaded.rejects[0]
            raise ValueError(f"tokenizer training file {str(path)!r} row {bad.row}: {bad.reason}: {bad.detail}")
        for example in loaded.dataset:
            row = row_dict(example)
            for key in ("messages", "chosen", "rejected"):
                if row.get(key):
                    yield render(row[key], EOS)[0]


def load_model(model_cfg: Mapping[str, Any], tokenizer, seed: int = 0):
    """The causal LM of `model.path` (its weights in 4 bits under QLoRA), or a new Llama from `model.init`;
    embeddings cover the tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    attention = attention_implementation(model_cfg.get("attn_implementation", "sdpa"))
    dtype = getattr(torch, model_cfg.get("dtype") or "float32")
    if model_cfg.get("path"):
        from tulu_cli.train.lora import quantization_kwargs

        model = AutoModelForCausalLM.from_pretrained(model_cfg["path"], revision=model_cfg.get("revision"),
                                                     dtype=dtype, attn_implementation=attention,
                                                     **quantization_kwargs(model_cfg, dtype), **NO_HUB_KERNELS)
    elif model_cfg.get("init"):
        config = LlamaConfig(vocab_size=_multiple_of_8(len(tokenizer)), bos_token_id=tokenizer.bos_token_id,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                             attn_implementation=attention, **dict(model_cfg["init"]))
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).to(dtype)
    else:
        raise ValueError("model: set `path` (hub id or directory) or `init` (an architecture to build)")
    cover_tokenizer(model, tokenizer)
    model.config.pad_token_id = tokenizer.pad_token_id
    if model_cfg.get("gradient_checkpointing"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    return model


def cover_tokenizer(model, tokenizer) -> None:
    """Grow the embeddings (to a multiple of 8) when the tokenizer has more tokens than they have
    rows; a larger vocabulary is kept as it is."""
    if embedding_rows(model) < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=8)


def embedding_rows(model) -> int:
    """Rows of the input embedding. Under ZeRO-3 (`zero.Init`) the local weight is an empty shard,
    so its shape reads 0; the full shape is `ds_shape`."""
    weight = model.get_input_embeddings().weight
    return int(weight.ds_shape[0]) if hasattr(weight, "ds_shape") else int(weight.shape[0])


def attention_implementation(requested: str) -> str:
    if requested == "sdpa_varlen":
        from tulu_cli.varlen_attention import register

        return register()
    if requested == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        warnings.warn("flash-attn is not installed; using sdpa attention", stacklevel=2)
        return "sdpa"
    return requested


def _multiple_of_8(size: int) -> int:
    return (size + 7) // 8 * 8
