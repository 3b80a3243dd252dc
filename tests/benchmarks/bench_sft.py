"""SFT throughput: `tulu sft` against TRL's SFTTrainer (padding-free), on the same rows in the same
order, the same batch, sequence length, steps and model, for the tiny Llama and a ~100M-parameter one,
the latter also with Llama 3's 128k vocabulary (the real tokenizer, `llama3_vocab.py`), as Tulu 3 trains.

Run with `make bench` or `pytest tests/benchmarks/bench_sft.py -m bench -s`. Size (env vars):
- TULU_BENCH_SFT_STEPS, TULU_BENCH_SFT_BATCH            tiny model: steps per run, rows per step (30, 16)
- TULU_BENCH_SFT_100M_STEPS, TULU_BENCH_SFT_100M_BATCH  ~100M models (both vocabularies): the same (4, 8)
- TULU_BENCH_SFT_REPEATS   tulu/TRL pairs, run alternately (default 3); the ratio reported is the median

Both sides train on the rows `tulu sft` tokenises from the bundled tiny SFT set (the same token ids and
loss masks: TRL gets them as a tokenised dataset with labels, read sequentially in tulu's batch order),
mean token loss, AdamW at lr 1e-4, linear schedule, grad-norm clip 1.0, float32 (TRL's default bf16
autocast off), no gradient checkpointing (TRL's default off), sdpa attention, CPU, one process with
one intra-op thread each. Padding-free on both sides: each batch's rows are
concatenated into one row with position ids restarting per row (tulu `train.packing=true`; TRL
`padding_free=True` without dataset packing, which keeps each step's rows the same as tulu's; TRL's
`packing=True` would regroup the rows into max-length bins). tulu runs twice per repeat: with sdpa
under the block-diagonal mask of the packed row (as TRL does) and with `sdpa_varlen` (sdpa per row). Tokens/s = input tokens of the rows
trained on (no padding exists on either side) / training-loop seconds: tulu's `timings.json` train_s
(checkpoint writes excluded), TRL's on_train_begin -> on_train_end. Each run is its own process;
peak RSS is that process's (tulu: its training process) maximum resident set.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, TULU

# (optimizer steps per run, rows per step: one micro-batch) of each model size.
HUNDRED_M = (int(os.environ.get("TULU_BENCH_SFT_100M_STEPS", "4")), int(os.environ.get("TULU_BENCH_SFT_100M_BATCH", "8")))
SIZES = {"tiny": (int(os.environ.get("TULU_BENCH_SFT_STEPS", "30")), int(os.environ.get("TULU_BENCH_SFT_BATCH", "16"))),
         "100m": HUNDRED_M, "100m_llama3_vocab": HUNDRED_M}
REPEATS = int(os.environ.get("TULU_BENCH_SFT_REPEATS", "3"))
MAX_LENGTH, LR, SEED = 256, 1e-4, 42
# ~100M parameters: 16 layers of 6.3M (hidden 768, 12 heads, 4 key-value heads, MLP 2048).
LLAMA_100M = {"hidden_size": 768, "intermediate_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 12,
              "num_key_value_heads": 4, "max_position_embeddings": 1024, "rope_theta": 10000.0,
              "tie_word_embeddings": True}
CHILD_ENV = {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def data_cfg(cache_dir: Path, max_rows: int) -> dict:
    from tulu_cli.config import assets_dir

    return {"train": str(assets_dir() / "tiny" / "sft_train.jsonl"), "split": "train", "config": None,
            "revision": None, "max_rows": max_rows, "num_proc": 1, "cache_dir": str(cache_dir)}


def run_tulu_child(spec: dict) -> dict:
    """In the child: `tulu sft` as a user runs it; its training loop time, tokens and peak RSS."""
    run_dir = Path(spec["run_dir"])
    command = [*TULU, "sft", "conf=tiny", f"model.path={spec['model']}", f"output_dir={run_dir}",
               f"model.attn_implementation={spec['attention']}",
               f"data.cache_dir={spec['cache']}", f"data.max_rows={spec['rows']}", f"seed={SEED}",
               f"train.max_seq_length={MAX_LENGTH}", f"train.per_device_batch_size={spec['batch']}",
               f"train.effective_batch_size={spec['batch']}", f"train.max_steps={spec['steps']}", "train.packing=true",
               "train.loss_reduction=mean", "train.max_grad_norm=1.0", f"train.log_every={spec['steps']}",
               f"optim.lr={LR}", "optim.scheduler=linear", "optim.warmup_ratio=0", "checkpoint.every_steps=1000000"]
    subprocess.run(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True,
                   capture_output=True, text=True, timeout=7200)
    timings = json.loads((run_dir / "timings.json").read_text())
    return {"train_s": timings["train_s"], "tokens": timings["input_tokens"],
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024}


def run_trl_child(spec: dict) -> dict:
    """In the child: TRL's SFTTrainer on tulu's tokenised rows, in tulu's batch order."""
    import torch
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from tulu_cli.config import assets_dir
    from tulu_cli.data.sft_data import prepare_sft
    from tulu_cli.modeling import load_tokenizer
    from tulu_cli.train.batching import BatchPlan

    torch.manual_seed(SEED)
    tokenizer = load_tokenizer({"path": spec["model"]}, assets_dir())
    dataset, _ = prepare_sft(data_cfg(Path(spec["cache"]), spec["rows"]), MAX_LENGTH, tokenizer, Path(spec["run_dir"]))
    plan = BatchPlan(len(dataset), spec["batch"], spec["batch"], 1, 1, SEED, spec["steps"])
    order = [row for step in range(spec["steps"]) for row in plan.micro_batches(step, 0)[0]]
    rows = dataset.select(order).select_columns(["input_ids", "labels"])
    tokens = sum(len(ids) for ids in rows["input_ids"])

    class LoopClock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()

        def on_train_end(self, args, state, control, **kwargs):
            self.seconds = time.perf_counter() - self.started

    clock = LoopClock()
    config = SFTConfig(output_dir=spec["run_dir"], per_device_train_batch_size=spec["batch"], gradient_accumulation_steps=1,
                       max_steps=spec["steps"], learning_rate=LR, lr_scheduler_type="linear", warmup_steps=0,
                       weight_decay=0.0, max_grad_norm=1.0, max_length=None, padding_free=True, packing=False,
                       train_sampling_strategy="sequential", report_to=[], save_strategy="no",
                       logging_steps=spec["steps"], use_cpu=True, seed=SEED, dataloader_num_workers=0,
                       # SFTConfig defaults to bf16 autocast and gradient checkpointing; tulu's tiny preset
                       # runs neither, so both are off here (float32 on both sides, nothing recomputed).
                       bf16=False, gradient_checkpointing=False)
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32, attn_implementation="sdpa")
    trainer = SFTTrainer(model=model, args=config, train_dataset=rows, processing_class=tokenizer, callbacks=[clock])
    trainer.train()
    return {"train_s": clock.seconds, "tokens": tokens,
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def run_child(kind: str, spec: dict) -> dict:
    result = subprocess.run([sys.executable, "-m", "tests.benchmarks.bench_sft", kind, json.dumps(spec)], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT), **CHILD_ENV}, capture_output=True,
                            text=True, timeout=7200)
    if result.returncode != 0:
        raise AssertionError(f"{kind} run failed\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def save_model(path: Path, tokenizer, init: dict | None, tiny_model_factory) -> int:
    """Save the starting model (the tiny preset's, or a fresh Llama of `init`); return its parameter count."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if init is None:
        model = tiny_model_factory()
    else:
        torch.manual_seed(SEED)
        model = LlamaForCausalLM(LlamaConfig(vocab_size=(len(tokenizer) + 7) // 8 * 8, bos_token_id=tokenizer.bos_token_id,
                                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                                             **init))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.bench
@pytest.mark.timeout(14400)
@pytest.mark.parametrize("size", list(SIZES))
def test_sft_tokens_per_second_against_trl(size, tmp_path, tiny_tokenizer, tiny_model_factory):
    model = tmp_path / "model"
    tokenizer = tiny_tokenizer
    if size == "100m_llama3_vocab":
        from tests.benchmarks.llama3_vocab import llama3_tokenizer_dir
        from tulu_cli.config import assets_dir
        from tulu_cli.modeling import load_tokenizer

        # The rows are tokenised again with this tokenizer, in the Tulu chat format.
        tokenizer = load_tokenizer({"path": str(llama3_tokenizer_dir())}, assets_dir())
    params = save_model(model, tokenizer, None if size == "tiny" else LLAMA_100M, tiny_model_factory)
    steps, batch = SIZES[size]
    spec = {"model": str(model), "cache": str(tmp_path / "cache"), "rows": batch * (steps + 1), "steps": steps,
            "batch": batch}
    variants = {"tulu": ("tulu", "sdpa"), "tulu_varlen": ("tulu", "sdpa_varlen"), "trl": ("trl", "sdpa")}
    runs = {name: [] for name in variants}
    for repeat in range(REPEATS):
        for name, (kind, attention) in variants.items():
            runs[name].append(run_child(kind, {**spec, "attention": attention, "run_dir": str(tmp_path / f"{name}{repeat}")}))
        assert len({runs[name][-1]["tokens"] for name in variants}) == 1, "every side must train on the same rows"

    def speed(run: dict) -> float:
        return run["tokens"] / run["train_s"]
    mib = 1 << 20
    print(f"\nSFT {size} Llama ({params / 1e6:.1f}M params), {steps} steps x {batch} rows, "
          f"{runs['tulu'][0]['tokens']} input tokens, padding-free both sides, CPU 1 thread:")
    for name in variants:
        speeds = [speed(run) for run in runs[name]]
        peak = max(run["peak_rss_bytes"] for run in runs[name])
        print(f"  {name:>11}: tokens/s {' '.join(f'{s:.0f}' for s in speeds)} (median {statistics.median(speeds):.0f}), "
              f"peak RSS {peak / mib:.0f} MiB")
    trl_peak = max(run["peak_rss_bytes"] for run in runs["trl"])
    for name in ("tulu", "tulu_varlen"):
        ratios = [speed(ours) / speed(theirs) for ours, theirs in zip(runs[name], runs["trl"], strict=True)]
        peak = max(run["peak_rss_bytes"] for run in runs[name])
        print(f"  {name}/TRL tokens/s per repeat: {' '.join(f'{r:.2f}' for r in ratios)}; "
              f"median {statistics.median(ratios):.2f}x; peak RSS {name}/TRL {peak / trl_peak:.2f}")


if __name__ == "__main__":
    runner = {"tulu": run_tulu_child, "trl": run_trl_child}[sys.argv[1]]
    print(json.dumps(runner(json.loads(sys.argv[2]))))
