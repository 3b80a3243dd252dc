"""RLVR time per rollout batch, split into generation, scoring, experience and update: `tulu rlvr`
PPO and GRPO on the tiny preset, and GRPO against TRL's GRPOTrainer on the same prompts and settings.

Run with `make bench` or `pytest tests/benchmarks/bench_rlvr.py -m bench -s`. Size (env vars):
- TULU_BENCH_RLVR_STEPS    rollout batches per run (default 6; the first is a warm-up, left out)
- TULU_BENCH_RLVR_REPEATS  tulu/TRL GRPO pairs, run alternately (default 2)

tulu: the tiny preset (GRPO: 8 prompts x 8 samples, PPO: 64 prompts x 1, responses of at most 40
tokens at temperature 0.7, 16 sequences per micro-batch, one update per batch, HF generate with the
learner, CPU), phase seconds read back from its metrics.jsonl. TRL: GRPOTrainer with the same prompt
strings (tulu's rendered chat prompts, in tulu's order), the same model (a fresh tiny Llama: it
rarely stops, so both sides sample full 40-token responses), num_generations 8, 64 completions per
optimizer step (16 per micro-batch x 4), max_completion_length 40, temperature 0.7, beta 0.01,
lr 3e-5 constant, HF generate on CPU, and tulu's verifiers as its reward function. TRL's phases are
timed by wrapping its methods: generation = `_generate`, scoring = `_calculate_rewards`,
experience = the rest of `_generate_and_score_completions` (the reference model's log-probs;
advantages), update = the rest of the optimizer step (forward/backward of the micro-batches,
optimizer). Each side runs in its own process with one intra-op thread, in float32 (GRPOConfig's bf16
autocast and gradient-checkpointing defaults turned off, as tulu's tiny preset runs).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, TULU

STEPS = int(os.environ.get("TULU_BENCH_RLVR_STEPS", "6"))
REPEATS = int(os.environ.get("TULU_BENCH_RLVR_REPEATS", "2"))
PHASES = ("generation_s", "scoring_s", "experience_s", "update_s")
SEED, PROMPTS, SAMPLES, MICRO, RESPONSE, TEMPERATURE, MAX_PROMPT = 42, 8, 8, 16, 40, 0.7, 128
CHILD_ENV = {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def per_batch(rows: list[dict]) -> dict[str, float]:
    """Median seconds of each phase over the rollout batches after the first (a warm-up)."""
    kept = rows[1:] or rows
    medians = {phase: statistics.median(row[phase] for row in kept) for phase in PHASES}
    medians["total_s"] = statistics.median(sum(row[phase] for phase in PHASES) for row in kept)
    return medians


def run_tulu_child(spec: dict) -> dict:
    from tulu_cli.runlog import read_metrics

    run_dir = Path(spec["run_dir"])
    command = [*TULU, "rlvr", "conf=tiny", f"algorithm={spec['algorithm']}", f"model.path={spec['model']}",
               f"output_dir={run_dir}", f"data.cache_dir={spec['cache']}", f"seed={SEED}",
               f"train.max_steps={STEPS}", "train.log_every=1", "checkpoint.every_steps=1000000"]
    subprocess.run(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True,
                   capture_output=True, text=True, timeout=7200)
    rows = read_metrics(run_dir)
    return {**per_batch(rows), "response_length": statistics.median(row["response_length"] for row in rows)}


def run_trl_child(spec: dict) -> dict:
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from tulu_cli.config import assets_dir
    from tulu_cli.modeling import load_tokenizer
    from tulu_cli.rewards.registry import verify_batch
    from tulu_cli.train.rl.data import prepare_rlvr, prompt_rows
    from tulu_cli.train.rlvr import rollout_plan

    torch.manual_seed(SEED)
    tokenizer = load_tokenizer({"path": spec["model"]}, assets_dir())
    data = {"train": str(assets_dir() / "tiny" / "rlvr_train.jsonl"), "split": "train", "config": None,
            "revision": None, "max_rows": None, "num_proc": 1, "cache_dir": spec["cache"]}
    prepared, _ = prepare_rlvr(data, tokenizer, MAX_PROMPT, Path(spec["run_dir"]))
    # The prompts of tulu's first rollout batches, in tulu's order.
    algo = {"prompts_per_rollout": PROMPTS, "samples_per_prompt": SAMPLES, "minibatches_per_rollout": 1}
    train = {"per_device_batch_size": MICRO, "episodes": 100000, "max_steps": STEPS}
    plan, _ = rollout_plan(len(prepared), "grpo", _Namespace(algo), _Namespace(train), 1, SEED)
    rows = [row for step in range(STEPS) for row in prompt_rows(prepared, plan.micro_batches(step, 0)[0])]
    dataset = datasets.Dataset.from_list([{"prompt": r.prompt, "ground_truth": r.ground_truth,
                                           "dataset": r.dataset, "messages": json.dumps(r.messages)} for r in rows])

    def verifier_reward(prompts, completions, ground_truth, dataset, messages, **kwargs):
        batch = [{"dataset": d, "ground_truth": g, "response": c, "messages": json.loads(m)}
                 for c, g, d, m in zip(completions, ground_truth, dataset, messages, strict=True)]
        return [10.0 * result.score for result in verify_batch(batch, timeout_s=2.0, workers=1)]

    config = GRPOConfig(output_dir=spec["run_dir"], per_device_train_batch_size=MICRO,
                        gradient_accumulation_steps=PROMPTS * SAMPLES // MICRO, num_generations=SAMPLES,
                        max_completion_length=RESPONSE, temperature=TEMPERATURE, top_p=1.0, beta=0.01,
                        epsilon=0.2, num_iterations=1, learning_rate=3e-5, lr_scheduler_type="constant",
                        max_grad_norm=1.0, max_steps=STEPS, shuffle_dataset=False, report_to=[],
                        save_strategy="no", logging_steps=STEPS, use_cpu=True, seed=SEED, dataloader_num_workers=0,
                        # GRPOConfig defaults to bf16 autocast and gradient checkpointing; tulu's tiny preset
                        # runs neither (float32 on both sides, nothing recomputed).
                        bf16=False, gradient_checkpointing=False)
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32, attn_implementation="sdpa")
    trainer = GRPOTrainer(model=model, reward_funcs=verifier_reward, args=config, train_dataset=dataset,
                          processing_class=tokenizer)
    clock = phase_clock(TrainerCallback)(trainer)
    trainer.add_callback(clock)
    trainer.train()
    return {**per_batch(clock.rows), "response_length": clock.response_length}


class _Namespace(dict):
    __getattr__ = dict.get


def phase_clock(callback_base):
    """A TrainerCallback class timing each optimizer step (one rollout batch) of a GRPOTrainer by phase."""

    class PhaseClock(callback_base):
        def __init__(self, trainer):
            self.rows, self.seconds, self.lengths = [], {}, []
            for name in ("_generate", "_calculate_rewards", "_generate_and_score_completions"):
                setattr(trainer, name, _timed(getattr(trainer, name), self.seconds, name))
            generate = trainer._generate

            def counting(prompts):
                result = generate(prompts)
                self.lengths.extend(len(ids) for ids in result[1])  # (prompt_ids, completion_ids, ...)
                return result
            trainer._generate = counting

        @property
        def response_length(self) -> float:
            return statistics.median(self.lengths)

        def on_step_begin(self, args, state, control, **kwargs):
            self.seconds.update(_generate=0.0, _calculate_rewards=0.0, _generate_and_score_completions=0.0)
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            total = time.perf_counter() - self.started
            generation, scoring = self.seconds["_generate"], self.seconds["_calculate_rewards"]
            whole = self.seconds["_generate_and_score_completions"]
            self.rows.append({"generation_s": generation, "scoring_s": scoring,
                              "experience_s": whole - generation - scoring, "update_s": total - whole})
    return PhaseClock


def _timed(method, seconds: dict, name: str):
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            seconds[name] += time.perf_counter() - started
    return wrapper


def run_child(kind: str, spec: dict) -> dict:
    result = subprocess.run([sys.executable, "-m", "tests.benchmarks.bench_rlvr", kind, json.dumps(spec)], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT), **CHILD_ENV}, capture_output=True,
                            text=True, timeout=7200)
    if result.returncode != 0:
        raise AssertionError(f"{kind} run failed\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def show(label: str, runs: list[dict]) -> dict[str, float]:
    medians = {key: statistics.median(run[key] for run in runs) for key in (*PHASES, "total_s", "response_length")}
    print(f"  {label:>10}: " + "  ".join(f"{key[:-2]} {medians[key]:.3f}s" for key in (*PHASES, "total_s"))
          + f"  (response length {medians['response_length']:.0f})")
    return medians


@pytest.mark.bench
@pytest.mark.timeout(14400)
def test_rlvr_phase_times_ppo_grpo_and_trl_grpo(tmp_path, tiny_tokenizer, tiny_model_factory):
    model = tmp_path / "model"
    tiny_model_factory().save_pretrained(model)
    tiny_tokenizer.save_pretrained(model)
    spec = {"model": str(model), "cache": str(tmp_path / "cache")}
    runs = {"tulu_ppo": [], "tulu_grpo": [], "trl_grpo": []}
    runs["tulu_ppo"].append(run_child("tulu", {**spec, "algorithm": "ppo", "run_dir": str(tmp_path / "ppo")}))
    ratios = []
    for repeat in range(REPEATS):
        runs["tulu_grpo"].append(run_child("tulu", {**spec, "algorithm": "grpo", "run_dir": str(tmp_path / f"g{repeat}")}))
        runs["trl_grpo"].append(run_child("trl", {**spec, "run_dir": str(tmp_path / f"trl{repeat}")}))
        ratios.append({key: runs["trl_grpo"][-1][key] / max(runs["tulu_grpo"][-1][key], 1e-9)
                       for key in (*PHASES, "total_s")})
    print(f"\nRLVR seconds per rollout batch (median of batches 2..{STEPS}, tiny Llama, CPU 1 thread):")
    show("tulu PPO", runs["tulu_ppo"])
    show("tulu GRPO", runs["tulu_grpo"])
    show("TRL GRPO", runs["trl_grpo"])
    print("  TRL/tulu GRPO time per phase (median of pairs; >1: tulu faster): " + "  ".join(
        f"{key[:-2]} {statistics.median(r[key] for r in ratios):.2f}x" for key in (*PHASES, "total_s")))
    assert all(run["update_s"] > 0 and run["generation_s"] > 0 for kind in runs.values() for run in kind)


if __name__ == "__main__":
    runner = {"tulu": run_tulu_child, "trl": run_trl_child}[sys.argv[1]]
    print(json.dumps(runner(json.loads(sys.argv[2]))))
