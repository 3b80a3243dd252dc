"""Checks of a resolved stage config before anything is launched: types, ranges and batch divisibility.

Every message names the field and the value it got, so `optim.lr=abc` fails in the parent process
within a second instead of deep inside a launched job. This module imports neither torch nor the
stage code: the trainers call its divisibility rules too, so both sides agree.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tulu_cli.rewards.registry import PROFILES

MISSING = object()
HUB_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


class ConfigError(Exception):
    """One or more config values are invalid; the message lists each as `field=value: reason`."""


def lookup(config: Mapping[str, Any], path: str) -> Any:
    value: Any = config
    for key in path.split("."):
        if not isinstance(value, Mapping) or key not in value:
            return MISSING
        value = value[key]
    return value


def shown(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


@dataclass(frozen=True)
class Number:
    """A number field: `whole` for counts; bounds are inclusive unless `above`/`below` (strict) are used.

    `numeric_text` accepts numbers given as text (launcher values read from the environment).
    """

    path: str
    whole: bool = False
    at_least: float | None = None
    above: float | None = None
    at_most: float | None = None
    below: float | None = None
    optional: bool = False
    numeric_text: bool = False

    def check(self, config: Mapping[str, Any]) -> str | None:
        value = lookup(config, self.path)
        if value is MISSING or (value is None and self.optional):
            return None
        number = self._number(value)
        if number is None or not self._in_range(number):
            kind = "a whole number" if self.whole else "a number"
            return f"{self.path}={shown(value)}: must be {kind}{self._range()}{' or null' if self.optional else ''}"
        return None

    def _number(self, value: Any) -> float | None:
        if isinstance(value, bool):
            return None
        if isinstance(value, str) and self.numeric_text:
            try:
                value = float(value)
            except ValueError:
                return None
        if not isinstance(value, int | float) or not math.isfinite(value):
            return None
        if self.whole and not float(value).is_integer():
            return None
        return float(value)

    def _in_range(self, number: float) -> bool:
        return ((self.at_least is None or number >= self.at_least) and (self.above is None or number > self.above)
                and (self.at_most is None or number <= self.at_most) and (self.below is None or number < self.below))

    def _range(self) -> str:
        parts = [f"{sign} {int(bound) if float(bound).is_integer() else bound}" for sign, bound in ((">=", self.at_least), (">", self.above),
                                                           ("<=", self.at_most), ("<", self.below))
                 if bound is not None]
        return (" " + " and ".join(parts)) if parts else ""


@dataclass(frozen=True)
class Choice:
    path: str
    options: tuple[Any, ...]

    def check(self, config: Mapping[str, Any]) -> str | None:
        value = lookup(config, self.path)
        if value is MISSING or value in self.options:
            return None
        return f"{self.path}={shown(value)}: must be one of {', '.join(shown(o) for o in self.options)}"


@dataclass(frozen=True)
class Flag:
    path: str

    def check(self, config: Mapping[str, Any]) -> str | None:
        value = lookup(config, self.path)
        if value is MISSING or isinstance(value, bool):
            return None
        return f"{self.path}={shown(value)}: must be true or false"


@dataclass(frozen=True)
class Resume:
    """`resume`: false, true (the newest checkpoint in output_dir) or a checkpoint directory."""

    path: str = "resume"

    def check(self, config: Mapping[str, Any]) -> str | None:
        value = lookup(config, self.path)
        if value is MISSING or value is None or isinstance(value, bool) or (isinstance(value, str) and value.strip()):
            return None
        return f"{self.path}={shown(value)}: must be true, false or a checkpoint directory"


@dataclass(frozen=True)
class HubRepo:
    """`hub.repo_id`: required, as OWNER/NAME, when `hub.push` is true (checked before the run trains for days)."""

    path: str = "hub.repo_id"

    def check(self, config: Mapping[str, Any]) -> str | None:
        if lookup(config, "hub.push") is not True:
            return None
        value = lookup(config, self.path)
        if isinstance(value, str) and HUB_REPO_ID.fullmatch(value):
            return None
        shown_value = "null" if value is None or value is MISSING else shown(value)
        return f"{self.path}={shown_value}: hub.push=true needs the repository to push to, as OWNER/NAME"


@dataclass(frozen=True)
class LoraRuntime:
    """`model.lora`: QLoRA only on top of LoRA, and no LoRA under DeepSpeed ZeRO-3 (the adapters would be
    partitioned with the frozen weights, which the merge and the adapter-only checkpoints do not handle)."""

    path: str = "model.lora"

    def check(self, config: Mapping[str, Any]) -> str | None:
        lora = lookup(config, self.path)
        if not isinstance(lora, Mapping):
            return None
        if lora.get("load_in_4bit") is True and lora.get("enabled") is not True:
            return f"{self.path}.load_in_4bit=true: QLoRA trains LoRA adapters, set {self.path}.enabled=true too"
        stage = lookup(config, "launcher.deepspeed.zero_optimization.stage")
        if lora.get("enabled") is True and stage == 3:
            return (f"{self.path}.enabled=true: LoRA does not run under DeepSpeed ZeRO-3 (launcher.deepspeed has "
                    f"zero_optimization.stage=3); use a launcher without deepspeed: launcher=gpu1 (one GPU), "
                    f"cpu or cpu_ddp2 (CPU)")
        return None


@dataclass(frozen=True)
class Trackers:
    """`report_to`: known tracker names whose packages are installed (see `tulu_cli.tracking`)."""

    path: str = "report_to"

    def check(self, config: Mapping[str, Any]) -> str | None:
        from tulu_cli.tracking import report_to_error

        value = lookup(config, self.path)
        return None if value is MISSING else report_to_error(value)


def whole(path: str, at_least: float = 1, optional: bool = False) -> Number:
    return Number(path, whole=True, at_least=at_least, optional=optional)


VERIFIER_PROFILE = Choice("verifier.profile", PROFILES)
COMMON = [Number("seed", whole=True, at_least=0, at_most=2**32 - 1), Flag("dry_run"), Flag("overwrite")]
LAUNCHER = [
    Number("launcher.num_machines", whole=True, at_least=1, numeric_text=True),
    Number("launcher.machine_rank", whole=True, at_least=0, numeric_text=True),
    Number("launcher.processes_per_machine", whole=True, at_least=1, numeric_text=True),
    Number("launcher.main_port", whole=True, at_least=1, at_most=65535, numeric_text=True),
]
OPTIM = [
    Number("optim.lr", above=0), Number("optim.weight_decay", at_least=0), Number("optim.eps", above=0),
    Number("optim.warmup_ratio", at_least=0, at_most=1),
]
LORA = [
    Flag("model.lora.enabled"), Flag("model.lora.load_in_4bit"), Number("model.lora.r", whole=True, at_least=1),
    Number("model.lora.alpha", above=0), Number("model.lora.dropout", at_least=0, below=1), LoraRuntime(),
]
TRAINER = [
    *OPTIM, *LORA, Resume(), Trackers(),
    whole("train.max_steps", optional=True), whole("train.per_device_batch_size"), whole("train.log_every"),
    Number("train.max_grad_norm", above=0, optional=True), Flag("train.packing"),
    whole("checkpoint.every_steps"), whole("checkpoint.keep", at_least=0),
    whole("data.max_rows", optional=True), Flag("hub.push"), Flag("hub.private"), HubRepo(),
]
BATCHED_TRAINER = [
    *TRAINER, whole("train.max_seq_length"), whole("train.epochs"), whole("train.effective_batch_size"),
    whole("data.num_proc"),
]
RL_ALGORITHM = [
    rule for section in ("ppo", "grpo") for rule in (
        whole(f"{section}.prompts_per_rollout"), whole(f"{section}.samples_per_prompt"),
        whole(f"{section}.epochs_per_rollout"), whole(f"{section}.minibatches_per_rollout"),
        Number(f"{section}.beta", at_least=0), Number(f"{section}.clip", above=0),
        Number(f"{section}.non_stop_penalty", optional=True), Number(f"{section}.value_coef", at_least=0),
        Number(f"{section}.value_clip", above=0), Number(f"{section}.gamma", at_least=0, at_most=1),
        Number(f"{section}.lam", at_least=0, at_most=1),
    )
]
GENERATION = [
    whole("generation.batch_size"), whole("generation.max_new_tokens"),
    Number("generation.temperature", at_least=0), Number("generation.top_p", above=0, at_most=1),
]
RULES: dict[str, list] = {
    "sft": [*BATCHED_TRAINER, Choice("train.loss_reduction", ("sum", "mean"))],
    "dpo": [
        *BATCHED_TRAINER, Number("loss.beta", above=0), Number("loss.label_smoothing", at_least=0, below=0.5),
        Number("loss.simpo_gamma_beta_ratio", at_least=0), whole("reference.batch_size"),
        whole("train.eval_every", optional=True),
    ],
    "rlvr": [
        *TRAINER, *RL_ALGORITHM, Choice("algorithm", ("ppo", "grpo")), whole("train.episodes"),
        whole("rollout.max_prompt_length"), whole("rollout.response_length"),
        Number("rollout.temperature", above=0), Number("rollout.top_p", above=0, at_most=1),
        Number("rollout.verifier_reward"), Number("rollout.verify_timeout_s", above=0),
        whole("rollout.verify_workers"), whole("generation.batch_size"), VERIFIER_PROFILE,
        Flag("generation.vllm.seed_each_prompt"),
    ],
    "eval": [*GENERATION, whole("lm_eval.limit", optional=True), VERIFIER_PROFILE],
    "decontaminate": [
        whole("ngram"), Number("threshold", above=0, at_most=1), Choice("mode", ("ngram", "exact")),
        whole("workers"), whole("rows_per_file"), whole("max_rows", optional=True), Flag("remove"),
    ],
    "curate": [whole("rows_per_file")],
}


def world_size(launcher: Mapping[str, Any]) -> int:
    return int(float(launcher["num_machines"])) * int(float(launcher["processes_per_machine"]))


def batch_multiple_error(effective: int, per_device: int, ranks: int) -> str | None:
    """Why an effective batch cannot be split into equal micro-batches over the ranks (None if it can)."""
    per_step = per_device * ranks
    if effective % per_step:
        return (f"train.effective_batch_size={effective} must be a multiple of train.per_device_batch_size x ranks "
                f"= {per_device} x {ranks} = {per_step}")
    return None


def rollout_split_error(section: str, prompts: int, samples: int, minibatches: int, micro: int,
                        ranks: int) -> str | None:
    """Why a rollout batch cannot be split over the ranks, minibatches and micro-batches (None if it can)."""
    if prompts % ranks:
        return f"{section}.prompts_per_rollout={prompts} must be a multiple of the {ranks} ranks"
    local = prompts // ranks * samples
    if local % minibatches or (local // minibatches) % micro:
        return (f"each rank's {local} responses per rollout ({section}.prompts_per_rollout={prompts} / {ranks} ranks "
                f"x {section}.samples_per_prompt={samples}) must split into {section}.minibatches_per_rollout="
                f"{minibatches} minibatches of a multiple of train.per_device_batch_size={micro}")
    return None


def divisibility_errors(stage: str, config: Mapping[str, Any]) -> list[str]:
    ranks = world_size(config["launcher"])
    train = config.get("train", {})
    if stage in ("sft", "dpo"):
        error = batch_multiple_error(int(train["effective_batch_size"]), int(train["per_device_batch_size"]), ranks)
        return [error] if error else []
    if stage == "rlvr":
        section = config["algorithm"]
        algo = config[section]
        error = rollout_split_error(section, int(algo["prompts_per_rollout"]), int(algo["samples_per_prompt"]),
                                    int(algo["minibatches_per_rollout"]), int(train["per_device_batch_size"]), ranks)
        return [error] if error else []
    return []


def config_errors(stage: str, config: Mapping[str, Any]) -> list[str]:
    """Every problem found in a resolved config, one message each (empty when it is valid)."""
    checks: list[Callable[[Mapping[str, Any]], str | None]] = [
        rule.check for rule in (*COMMON, *(LAUNCHER if "launcher" in config else []), *RULES.get(stage, []))]
    errors = list(dict.fromkeys(error for check in checks if (error := check(config))))
    if not errors and "launcher" in config:
        try:
            errors = divisibility_errors(stage, config)
        except (KeyError, TypeError):
            pass  # a field the rules above do not require is absent: the stage reports it
    return errors


def validate(stage: str, config: Mapping[str, Any]) -> None:
    errors = config_errors(stage, config)
    if errors:
        raise ConfigError("invalid config:\n  " + "\n  ".join(errors))
