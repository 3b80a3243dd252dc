"""After the first weight sync: do the engine and the learner score the same tokens alike?

A few training prompts are scored by the generation engine (its prompt log-probs) and by the learner's
policy; a mean absolute difference above the tolerance means the engine samples from another
distribution than the one being trained (weights loaded wrongly, another tokenisation, a dtype
problem), which would silently bias every update. Sampling temperature is left out on both sides.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from tulu_cli.errors import StageError
from tulu_cli.train.logprobs import prompt_token_logprobs


@dataclass(frozen=True)
class LogprobAgreement:
    tokens: int
    mean_abs_diff: float
    max_abs_diff: float

    def describe(self) -> str:
        return (f"engine vs learner log-probs on {self.tokens} prompt tokens: mean |diff| "
                f"{self.mean_abs_diff:.4f}, max |diff| {self.max_abs_diff:.4f}")


def compare(engine: list[list[float]], learner: list[list[float]]) -> LogprobAgreement:
    diffs = [abs(a - b) for row_e, row_l in zip(engine, learner, strict=True)
             for a, b in zip(row_e, row_l, strict=True)]
    if not diffs:
        raise ValueError("log-prob check: the prompts have no token after the first")
    return LogprobAgreement(len(diffs), sum(diffs) / len(diffs), max(diffs))


def check_engine_logprobs(accelerator, backend, model, prompts: list[list[int]], tolerance: float,
                          on_mismatch: str = "fail") -> LogprobAgreement | None:
    """Compare on this rank (every rank takes part in the learner's forward passes); returns the
    agreement where this rank owns an engine. `on_mismatch`: fail (StageError) or warn."""
    policy = accelerator.unwrap_model(model).policy
    learner = prompt_token_logprobs(policy, prompts, accelerator.device)
    if backend is None:
        return None
    agreement = compare(backend.prompt_logprobs(prompts), learner)
    if agreement.mean_abs_diff <= tolerance:
        print(f"log-prob check passed: {agreement.describe()} (tolerance {tolerance})", flush=True)
        return agreement
    message = (f"log-prob check failed: {agreement.describe()}, above the tolerance {tolerance}: the generation "
               "engine does not hold the learner's weights (check the model path, dtype and weight sync)")
    if on_mismatch == "fail":
        raise StageError(message)
    warnings.warn(message, stacklevel=2)
    return agreement
