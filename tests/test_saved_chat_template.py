"""The chat template saved in `final/` is the one the model was trained with (the Tulu format), even
when the source tokenizer carries another (as Llama 3.1 tokenizers carry Meta's)."""

from __future__ import annotations

import pytest

from tests.conftest import run_tulu
from tulu_cli.config import assets_dir
from tulu_cli.data.chat import CHAT_TEMPLATE, render
from tulu_cli.modeling import load_tokenizer

# A Llama 3 style template: what a hub tokenizer may carry instead of the Tulu one.
OTHER_TEMPLATE = (
    "{% for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{{ message['content'] }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
MESSAGES = [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "5"}]


@pytest.fixture
def foreign_tokenizer_dir(tmp_path, tiny_tokenizer):
    path = tmp_path / "tokenizer"
    tiny_tokenizer.chat_template = OTHER_TEMPLATE
    try:
        tiny_tokenizer.save_pretrained(path)
    finally:
        tiny_tokenizer.chat_template = CHAT_TEMPLATE
    return path


def test_sft_final_renders_the_tulu_format_whatever_the_source_template(tmp_path, foreign_tokenizer_dir):
    from transformers import AutoTokenizer

    assert "<|start_header_id|>" in AutoTokenizer.from_pretrained(foreign_tokenizer_dir).apply_chat_template(
        MESSAGES, tokenize=False
    )
    run_dir = tmp_path / "run"
    run_tulu("sft", "conf=tiny", "train.max_steps=2", f"model.tokenizer={foreign_tokenizer_dir}",
             f"output_dir={run_dir}")
    saved = AutoTokenizer.from_pretrained(run_dir / "final")
    eos = saved.eos_token
    assert saved.apply_chat_template(MESSAGES, tokenize=False) == render(MESSAGES, eos)[0]
    assert saved.apply_chat_template(MESSAGES[:1], tokenize=False, add_generation_prompt=True) == render(
        MESSAGES[:1], eos, add_generation_prompt=True
    )[0]


def test_the_source_template_is_kept_only_when_asked(foreign_tokenizer_dir):
    kept = load_tokenizer({"tokenizer": str(foreign_tokenizer_dir), "chat_template": "tokenizer"}, assets_dir())
    assert kept.chat_template == OTHER_TEMPLATE
    assert load_tokenizer({"tokenizer": str(foreign_tokenizer_dir)}, assets_dir()).chat_template == CHAT_TEMPLATE
    with pytest.raises(ValueError, match="model.chat_template"):
        load_tokenizer({"tokenizer": str(foreign_tokenizer_dir), "chat_template": "meta"}, assets_dir())
