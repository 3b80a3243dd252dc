"""LoRA (peft): only adapters train, the frozen base stays bit-identical, checkpoints hold the adapter and
resume from it, `final/` is the merged model (checked against peft's own merge_and_unload) with the
adapter beside it, and the reference of DPO/RLVR is the same model with its adapters off."""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import run_tulu
from tulu_cli.errors import StageError
from tulu_cli.train.lora import REFERENCE_NOTE

LORA = {"enabled": True, "r": 4, "alpha": 8, "dropout": 0.0, "load_in_4bit": False,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}
PROMPT = torch.tensor([[1, 17, 42, 99, 5, 23, 64, 7]])


def logits(model, ids: torch.Tensor = PROMPT) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.fixture
def trained_lora(tiny_model_factory):
    """A tiny Llama with adapters whose update is no longer zero, as after some training."""
    from tulu_cli.train.lora import add_adapters

    model = add_adapters(tiny_model_factory(), LORA, gradient_checkpointing=False).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    return model


def test_only_adapter_parameters_train(tiny_model_factory):
    from tulu_cli.train.lora import add_adapters

    model = add_adapters(tiny_model_factory(), LORA, gradient_checkpointing=False)
    trained = [name for name, param in model.named_parameters() if param.requires_grad]
    assert trained and all("lora_A" in name or "lora_B" in name for name in trained)
    # Fresh adapters change nothing: lora_B starts at zero.
    torch.testing.assert_close(logits(model.eval()), logits(tiny_model_factory()), rtol=0, atol=0)


def test_saved_final_is_peft_merge_and_the_adapter_reloads(trained_lora, tiny_tokenizer, tiny_model_factory, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tulu_cli.train.lora import save_merged_and_adapter

    save_merged_and_adapter(trained_lora, tiny_tokenizer, tmp_path)
    merged = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    oracle = copy.deepcopy(trained_lora).merge_and_unload().eval()
    assert not hasattr(merged, "peft_config")
    torch.testing.assert_close(logits(merged), logits(oracle), rtol=0, atol=0)
    assert not torch.equal(logits(merged), logits(tiny_model_factory())), "the adapter changed nothing"
    # The trained model is left as it was (the merge was computed, not applied in place).
    torch.testing.assert_close(logits(trained_lora), logits(oracle), rtol=1e-5, atol=1e-5)
    reloaded = PeftModel.from_pretrained(tiny_model_factory(), tmp_path / "adapter").eval()
    torch.testing.assert_close(logits(reloaded), logits(trained_lora), rtol=0, atol=0)


def test_reference_is_the_base_model_with_adapters_off(trained_lora, tiny_model_factory, tiny_tokenizer):
    """DPO without the cache scores pairs with the starting model: the trained model, adapters off."""
    from accelerate import Accelerator

    from tulu_cli.config import assets_dir
    from tulu_cli.data.preference_data import prepare_preferences
    from tulu_cli.train.lora import starting_model
    from tulu_cli.train.pair_logprobs import dataset_logprobs

    accelerator = Accelerator(cpu=True)
    pairs, _ = prepare_preferences(str(assets_dir() / "tiny" / "prefs_test.jsonl"), {"max_rows": 6}, 256,
                                   tiny_tokenizer, None)
    pad = tiny_tokenizer.pad_token_id
    trained_lora.train()
    reference = dataset_logprobs(accelerator, starting_model(accelerator, trained_lora), pairs, 4, pad, True)
    base = dataset_logprobs(accelerator, tiny_model_factory(), pairs, 4, pad, True)
    policy = dataset_logprobs(accelerator, trained_lora, pairs, 4, pad, True)
    assert torch.equal(reference.chosen, base.chosen) and torch.equal(reference.rejected, base.rejected)
    assert not torch.allclose(policy.chosen, base.chosen), "the adapters changed nothing"
    assert trained_lora.training, "the reference pass left the policy out of training mode"
    assert starting_model(accelerator, tiny_model_factory()) is None


def test_generation_engine_receives_the_merged_weights(trained_lora, tiny_model_factory, tiny_tokenizer):
    """RLVR with a separate engine: the plain model there gets base + adapter, under the plain names."""
    from tulu_cli.generation.hf import HFBackend
    from tulu_cli.train.lora import merged_tensors

    engine = HFBackend(tiny_model_factory(seed=5).eval(), tiny_tokenizer)
    engine.load_weights(merged_tensors(trained_lora))
    oracle = copy.deepcopy(trained_lora).merge_and_unload().eval()
    torch.testing.assert_close(logits(engine.model), logits(oracle), rtol=0, atol=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given where there is no GPU")
def test_qlora_without_a_gpu_fails_clearly():
    from tulu_cli.train.lora import quantization_kwargs

    with pytest.raises(StageError, match="needs a CUDA GPU"):
        quantization_kwargs({"path": "some/model", "lora": {**LORA, "load_in_4bit": True}}, torch.bfloat16)
    with pytest.raises(StageError, match="needs model.path"):
        quantization_kwargs({"path": None, "lora": {**LORA, "load_in_4bit": True}}, torch.bfloat16)
    assert quantization_kwargs({"path": "some/model", "lora": LORA}, torch.bfloat16) == {}


def test_lora_under_zero3_is_refused_before_launch(tmp_path):
    result = run_tulu("sft", "conf=tiny", "launcher=cpu_zero3", "model.lora.enabled=true", f"output_dir={tmp_path}",
                      check=False, timeout=120)
    assert result.returncode == 2
    assert "LoRA does not run under DeepSpeed ZeRO-3" in result.stderr and "launcher=gpu1" in result.stderr
    assert not (tmp_path / "logs").exists(), "something was launched"


SFT = ["sft", "conf=tiny", "model.lora.enabled=true", "model.lora.r=4", "data.max_rows=64",
       "train.max_seq_length=128", "train.effective_batch_size=4", "train.per_device_batch_size=4",
       "train.max_steps=4", "train.log_every=1", "checkpoint.every_steps=2", "optim.lr=1e-2", "optim.warmup_ratio=0"]


def test_lora_sft_trains_the_adapter_resumes_and_saves_a_merged_final(tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run_tulu(*SFT, f"output_dir={straight}")
    checkpoint = straight / "checkpoints" / "step_00000002"
    saved = load_file(str(checkpoint / "model.safetensors"))
    assert saved and all(".lora_A." in key or ".lora_B." in key for key in saved), sorted(saved)[:5]
    # A run stopped after step 2 continues from that checkpoint to the same adapter and model.
    result = run_tulu(*SFT, f"output_dir={resumed}", f"resume={checkpoint}")
    assert "resumed from" in result.stdout
    adapter = load_file(str(straight / "final" / "adapter" / "adapter_model.safetensors"))
    again = load_file(str(resumed / "final" / "adapter" / "adapter_model.safetensors"))
    assert adapter.keys() == again.keys()
    for name, tensor in adapter.items():
        torch.testing.assert_close(again[name], tensor, rtol=1e-4, atol=1e-6, msg=name)

    # The base weights did not move: initial/ + the trained adapter, merged by peft, is final/ exactly,
    # and every weight without an adapter is bit-identical to the starting model's.
    final = AutoModelForCausalLM.from_pretrained(straight / "final").eval()
    initial = AutoModelForCausalLM.from_pretrained(straight / "initial").eval()
    untouched = load_file(str(straight / "initial" / "model.safetensors"))
    merged_weights = load_file(str(straight / "final" / "model.safetensors"))
    for name in ("model.embed_tokens.weight", "model.norm.weight", "model.layers.0.input_layernorm.weight"):
        assert torch.equal(merged_weights[name], untouched[name]), name
    assert not torch.equal(merged_weights["model.layers.0.self_attn.q_proj.weight"],
                           untouched["model.layers.0.self_attn.q_proj.weight"])
    oracle = PeftModel.from_pretrained(initial, straight / "final" / "adapter").merge_and_unload().eval()
    ids = torch.tensor([[1, 30, 31, 32, 33, 34]])
    torch.testing.assert_close(logits(final, ids), logits(oracle, ids), rtol=0, atol=0)

    assert "| `model.lora.r` | 4 |" in (straight / "final" / "README.md").read_text()
    tokenizer = AutoTokenizer.from_pretrained(straight / "final")
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is 2 + 3?"}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    output = final.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert output.shape[1] > prompt["input_ids"].shape[1]


def test_lora_dpo_with_online_reference_trains_without_a_second_model(tmp_path, start_model):
    result = run_tulu("dpo", "conf=tiny", f"model.path={start_model}", "model.lora.enabled=true",
                      "reference.mode=online", "data.max_rows=16", "data.eval=null", "train.max_seq_length=128",
                      "train.effective_batch_size=4", "train.per_device_batch_size=4", "train.max_steps=2",
                      "train.log_every=1", "optim.lr=1e-2", "optim.warmup_ratio=0", f"output_dir={tmp_path}")
    assert "reference online" in result.stdout
    assert REFERENCE_NOTE in result.stdout
    from tulu_cli.runlog import read_metrics

    metrics = read_metrics(tmp_path)
    # Step 1: the adapters start at zero, so the policy is its reference exactly; step 2 has moved.
    assert metrics[0]["rewards/margin"] == 0.0 and metrics[1]["rewards/margin"] != 0.0
    assert (tmp_path / "final" / "model.safetensors").exists()
    assert (tmp_path / "final" / "adapter" / "adapter_config.json").exists()


@pytest.mark.slow
def test_lora_ppo_trains_policy_adapters_and_the_full_value_model(tmp_path, start_model):
    result = run_tulu("rlvr", "conf=tiny", f"model.path={start_model}", "model.lora.enabled=true", "algorithm=ppo",
                      "ppo.prompts_per_rollout=8", "ppo.value_warmup_steps=0", "train.per_device_batch_size=4",
                      "rollout.response_length=8", "train.max_steps=1", f"output_dir={tmp_path}")
    assert REFERENCE_NOTE in result.stdout
    saved = load_file(str(tmp_path / "checkpoints" / "step_00000001" / "model.safetensors"))
    adapters = [key for key in saved if key.startswith("policy.")]
    assert adapters and all(".lora_A." in key or ".lora_B." in key for key in adapters)
    assert "value.head.weight" in saved and "value.backbone.embed_tokens.weight" in saved
    assert (tmp_path / "final" / "adapter" / "adapter_model.safetensors").exists()
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(tmp_path / "final")


def test_merged_model_written_in_several_shards_loads_the_same(trained_lora, tiny_tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM

    from tulu_cli.train.checkpoint import ShardWriter, save_model_files
    from tulu_cli.train.lora import merged_tensors

    writer = ShardWriter(tmp_path, max_shard_bytes=400_000)
    for name, tensor in merged_tensors(trained_lora):
        writer.add(name, tensor)
    writer.finish()
    save_model_files(trained_lora.get_base_model(), tiny_tokenizer, tmp_path)
    assert len(list(tmp_path.glob("model-*-of-*.safetensors"))) > 2
    assert (tmp_path / "model.safetensors.index.json").exists()
    oracle = copy.deepcopy(trained_lora).merge_and_unload().eval()
    torch.testing.assert_close(logits(AutoModelForCausalLM.from_pretrained(tmp_path).eval()), logits(oracle),
                               rtol=0, atol=0)
