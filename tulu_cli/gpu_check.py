"""A smoke check for a CUDA machine (`make gpu-check`): tiny SFT, DPO (cached and online reference)
and RLVR (GRPO and PPO, HF generation from the sharded policy) for a few steps each, under one-GPU
DeepSpeed ZeRO-3 in bf16 (`launcher=zero3_1gpu`), each through the `tulu` command as a user runs it.
Where vLLM is importable (`pip install -e ".[vllm]"`), RLVR runs once more with a colocated vLLM engine
(weights sent one parameter at a time after each update, the engine/learner log-prob check after the
first); without vLLM that case is skipped, not failed. The tiny eval suite then scores the GRPO model on
the GPU. LoRA and QLoRA SFT run on the GPU without DeepSpeed (`launcher=gpu1`); QLoRA is skipped without
bitsandbytes (`pip install -e ".[qlora]"`). Prints PASS/FAIL/SKIP per stage with the reason and a
summary; exits 1 if any stage failed.

Needs only this package's own dependencies (torch with CUDA, transformers, accelerate, deepspeed):
vLLM only for its own case, no flash-attn, nothing downloaded. `--dry-run` checks the configurations
and prints the commands without a GPU; `--launcher cpu_zero3` runs the same checks on 2 CPU ranks, in
bf16 as on the GPU (a dtype mismatch between partitions shows there too).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# Each stage starts from the previous one's final/ (SFT from a fresh tiny model).
STAGES: dict[str, list[str]] = {
    "sft": ["sft", "conf=tiny", "data.max_rows=256", "train.max_steps=4", "train.log_every=1",
            "checkpoint.every_steps=2"],
    "dpo": ["dpo", "conf=tiny", "model.path={sft}", "data.max_rows=64", "data.eval=null", "train.max_steps=3",
            "train.log_every=1", "reference.cache_dir={work}/ref_cache"],
    "dpo_online": ["dpo", "conf=tiny", "model.path={sft}", "data.max_rows=64", "data.eval=null",
                   "train.max_steps=3", "train.log_every=1", "reference.mode=online"],
    "rlvr_grpo": ["rlvr", "conf=tiny", "algorithm=grpo", "model.path={dpo}", "data.max_rows=64",
                  "grpo.prompts_per_rollout=4", "grpo.samples_per_prompt=4", "train.per_device_batch_size=4",
                  "rollout.response_length=24", "train.max_steps=2", "generation.backend=hf"],
    "rlvr_ppo": ["rlvr", "conf=tiny", "algorithm=ppo", "model.path={dpo}", "data.max_rows=64",
                 "ppo.prompts_per_rollout=8", "ppo.epochs_per_rollout=2", "train.per_device_batch_size=4",
                 "rollout.response_length=24", "train.max_steps=2", "generation.backend=hf",
                 "ppo.value_warmup_steps=0"],
    # GRPO sampling from a vLLM engine colocated with the learner on the same GPU (asleep while it trains).
    "rlvr_vllm": ["rlvr", "conf=tiny", "algorithm=grpo", "model.path={dpo}", "data.max_rows=64",
                  "grpo.prompts_per_rollout=4", "grpo.samples_per_prompt=4", "train.per_device_batch_size=4",
                  "rollout.response_length=24", "train.max_steps=2", "generation.backend=vllm",
                  "generation.vllm.mode=colocate", "generation.vllm.gpu_memory_utilization=0.3"],
    # The eval suite on the GRPO model, as one process (eval's own launcher) that puts the model on the GPU.
    "eval": ["eval", "conf=tiny", "model.path={rlvr}", "tasks.gsm_tiny.data.max_rows=32",
             "tasks.ifeval_tiny.data.max_rows=32", "tasks.mc_tiny.data.max_rows=32"],
    # LoRA from the SFT model on one GPU without DeepSpeed (LoRA does not run under ZeRO-3), and QLoRA
    # (4-bit base weights through bitsandbytes).
    "sft_lora": ["sft", "conf=tiny", "model.path={sft}", "model.lora.enabled=true", "data.max_rows=256",
                 "train.max_steps=4", "train.log_every=1", "checkpoint.every_steps=2"],
    "sft_qlora": ["sft", "conf=tiny", "model.path={sft}", "model.lora.enabled=true", "model.lora.load_in_4bit=true",
                  "data.max_rows=256", "train.max_steps=4", "train.log_every=1", "checkpoint.every_steps=2"],
}
# Stages that need an optional package (vLLM, bitsandbytes); skipped where it is not importable.
OPTIONAL_PACKAGE = {"rlvr_vllm": ("vllm", ".[vllm]"), "sft_qlora": ("bitsandbytes", ".[qlora]")}
# Stages that run without DeepSpeed: `gpu1` (or `cpu` when the check runs on CPU) instead of the profile.
LORA_STAGES = ("sft_lora", "sft_qlora")
VLLM_STAGES = ("rlvr_vllm",)
# Stages that keep their preset's launcher (not the profile under check).
OWN_LAUNCHER_STAGES = ("eval",)
STAGE_TIMEOUT_S = 240
# What each rank reports of its model at startup (`train.runtime.report_partitioning`).
PARTITIONING = re.compile(r"partitioning \(model\): rank=(\d+) world=\d+ params=(\d+) zero3=(\d+)")
# On CPU launchers (which train in float32), the GPU profiles' precision: bf16, and DeepSpeed's bf16 mode.
CPU_AS_GPU_PRECISION = ["launcher.mixed_precision=bf16"]
CPU_AS_GPU_DEEPSPEED_PRECISION = ["+launcher.deepspeed.bf16={enabled: true}"]


@dataclass
class Outcome:
    stage: str
    passed: bool
    detail: str
    seconds: float


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", type=Path, default=Path("runs/gpu-check"))
    parser.add_argument("--launcher", default="zero3_1gpu", help="launcher profile (cpu_zero3 runs on CPU)")
    parser.add_argument("--dry-run", action="store_true", help="check configs and print commands; run nothing")
    args = parser.parse_args(argv)
    work = args.output_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    problem = None if args.dry_run or on_cpu(args.launcher) else preflight()
    outcomes: list[Outcome] = []
    if problem:
        outcomes.append(Outcome("preflight", False, problem, 0.0))
    else:
        for stage in STAGES:
            package, extra = OPTIONAL_PACKAGE.get(stage, (None, None))
            if package and not args.dry_run and importlib.util.find_spec(package) is None:
                print(f"SKIP {stage}: {package} is not installed (pip install -e \"{extra}\")", flush=True)
                continue
            outcomes.append(run_stage(stage, work, args.launcher, args.dry_run))
            report(outcomes[-1])
    if problem:
        report(outcomes[0])
    failed = [o.stage for o in outcomes if not o.passed]
    total = sum(o.seconds for o in outcomes)
    verdict = f"FAIL ({', '.join(failed)})" if failed else "PASS"
    print(f"gpu-check: {len(outcomes) - len(failed)}/{len(outcomes)} passed in {total:.0f} s: {verdict}", flush=True)
    (work / "summary.json").write_text(json.dumps([o.__dict__ for o in outcomes], indent=2) + "\n")
    return 1 if failed else 0


def preflight() -> str | None:
    """Why this machine cannot run the check (None when it can); printed as the preflight FAIL."""
    try:
        import torch
    except ImportError:
        return "torch is not installed (make install TORCH_SPEC=\"torch==X --index-url .../cu128\")"
    if not torch.cuda.is_available():
        return (f"torch {torch.__version__} sees no CUDA device; install a CUDA build: "
                "make install TORCH_SPEC=\"torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128\"")
    if not torch.cuda.is_bf16_supported():
        return f"{torch.cuda.get_device_name(0)} does not support bf16 (the profile trains in bf16)"
    try:
        import accelerate
        import deepspeed
    except ImportError as exc:
        return f"{exc.name} is not installed (pip install -e .)"
    print(f"gpu-check: {torch.cuda.get_device_name(0)}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
          f"accelerate {accelerate.__version__}, deepspeed {deepspeed.__version__}", flush=True)
    return None


def stage_command(stage: str, work: Path, launcher: str) -> list[str]:
    paths = {"work": work, "sft": work / "sft" / "final", "dpo": work / "dpo" / "final",
             "rlvr": work / "rlvr_grpo" / "final"}
    args = [arg.format(**paths) for arg in STAGES[stage]]
    if stage not in OWN_LAUNCHER_STAGES:
        rehearsal = on_cpu(launcher)
        if stage in LORA_STAGES:
            launcher = "cpu" if rehearsal else "gpu1"
        if rehearsal:
            args += CPU_AS_GPU_PRECISION + (CPU_AS_GPU_DEEPSPEED_PRECISION if uses_deepspeed(launcher) else [])
        args.append(f"launcher={launcher}")
    return [sys.executable, "-m", "tulu_cli.cli", *args, f"output_dir={work / stage}"]


def on_cpu(launcher: str) -> bool:
    """Whether `launcher` is a CPU profile: the check is then a rehearsal, with no GPU to look for."""
    return launcher.startswith("cpu")


def uses_deepspeed(launcher: str) -> bool:
    """Whether the CPU launcher profile `launcher` has a DeepSpeed section (CPU profiles name it directly)."""
    import yaml

    from tulu_cli.config import conf_dir

    profile = yaml.safe_load((conf_dir() / "launcher" / f"{launcher}.yaml").read_text())
    return bool(profile.get("deepspeed"))


def run_stage(stage: str, work: Path, launcher: str, dry_run: bool) -> Outcome:
    command = stage_command(stage, work, launcher)
    print(f"gpu-check: {stage}: {' '.join(command[2:])}", flush=True)
    started = time.time()
    try:
        result = subprocess.run([*command, *(["--dry-run"] if dry_run else [])], capture_output=True, text=True,
                                timeout=STAGE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return Outcome(stage, False, f"no result within {STAGE_TIMEOUT_S} s (see {work / stage / 'logs'})",
                       time.time() - started)
    seconds = time.time() - started
    if result.returncode != 0:
        lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
        failure = work / stage / "logs" / "failure.txt"
        reason = failure.read_text().splitlines()[0] if failure.exists() else (lines[-1] if lines else "no output")
        return Outcome(stage, False, f"exit code {result.returncode}: {reason}", seconds)
    if dry_run:
        return Outcome(stage, True, "config resolved (dry run)", seconds)
    try:
        passed, detail = check_outputs(stage, work / stage, on_gpu=not on_cpu(launcher))
    # An output missing, unreadable or of another shape fails this stage only.
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        passed, detail = False, f"outputs unreadable: {type(exc).__name__}: {exc}"
    return Outcome(stage, passed, detail, seconds)


def check_outputs(stage: str, run_dir: Path, on_gpu: bool) -> tuple[bool, str]:
    if stage == "eval":
        return check_eval(run_dir, on_gpu)
    passed, detail = check_run(run_dir, sharded=stage not in LORA_STAGES)
    if passed and stage in VLLM_STAGES:
        log = (run_dir / "logs" / "stage.log").read_text(errors="replace")
        check = next((line for line in log.splitlines() if line.startswith("log-prob check")), "")
        passed, detail = check.startswith("log-prob check passed"), f"{detail}; {check or 'no log-prob check'}"
    return passed, detail


def check_run(run_dir: Path, sharded: bool = True) -> tuple[bool, str]:
    """(passed, detail): finite losses every step, the model sharded by ZeRO-3 (`sharded`; else a LoRA
    run, whose final/ must also hold the adapter), full weights in final/."""
    from safetensors import safe_open

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    losses = [row.get("loss") for row in rows]
    if not rows or not all(_finite(x) for x in losses):
        return False, f"losses not all finite: {losses}"
    log = (run_dir / "logs" / "stage.log").read_text(errors="replace")
    # Searched, not split by line: the ranks write to one pipe, so two reports can share a line.
    ranks = PARTITIONING.findall(log)
    unmanaged = [f"rank {rank}: {zero3} of {params} parameters" for rank, params, zero3 in ranks if zero3 != params]
    if sharded and (not ranks or unmanaged):
        return False, f"parameters not managed by ZeRO-3: {'; '.join(unmanaged) or 'no partitioning report'}"
    if not sharded and not (run_dir / "final" / "adapter" / "adapter_model.safetensors").exists():
        return False, "final/adapter/ holds no adapter"
    empty = []
    for path in sorted((run_dir / "final").glob("*.safetensors")):
        with safe_open(path, "pt") as weights:
            empty += [key for key in weights.keys() if 0 in weights.get_slice(key).get_shape()]
    if empty or not list((run_dir / "final").glob("*.safetensors")):
        return False, f"final/ holds empty or no tensors: {empty[:3]}"
    return True, f"{len(rows)} steps, last loss {losses[-1]:.4g}, final/ full weights"


def check_eval(run_dir: Path, on_gpu: bool) -> tuple[bool, str]:
    """(passed, detail): every task of the suite scored (status ok, a finite score), the model on the GPU
    when the check runs on one."""
    tasks = json.loads((run_dir / "results.json").read_text())["tasks"]
    failed = [f"{name}: {task['status']}, score {task.get('value')}" + (f" ({task['detail']})" if task.get("detail") else "")
              for name, task in tasks.items() if task["status"] != "ok" or not _finite(task.get("value"))]
    if not tasks or failed:
        return False, f"tasks not scored: {'; '.join(failed) or 'none ran'}"
    log = (run_dir / "logs" / "stage.log").read_text(errors="replace")
    device = next((line.split()[-1] for line in log.splitlines() if line.startswith("eval model on ")), "unknown")
    if on_gpu and not device.startswith("cuda"):
        return False, f"the model ran on {device}, not the GPU"
    scores = ", ".join(f"{name} {task['value']:.3g}" for name, task in tasks.items())
    return True, f"{len(tasks)} tasks scored on {device}: {scores}"


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def report(outcome: Outcome) -> None:
    status = "PASS" if outcome.passed else "FAIL"
    print(f"{status} {outcome.stage} ({outcome.seconds:.0f} s): {outcome.detail}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
