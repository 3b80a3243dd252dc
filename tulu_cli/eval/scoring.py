"""Scoring generated answers with the project's verifiers (the same checkers that give RLVR rewards).

GSM8K- and MATH-style items give `accuracy` (the math verifier's flexible match is the "flex" of
`minerva_math::tulu`). IFEval items give the four IFEval numbers: prompt-level (every instruction
followed) and instruction-level (share of instructions followed), each strict and loose. Every answer is
scored in the verifier pool, within the per-row time limit, so no generated text can hang the stage. An
answer the verifier could not score (past the time limit, or the verifier failed on it, e.g. its worker
died) scores 0 and counts in `unverified`, the task's share of such answers, instead of failing the task.
"""

from __future__ import annotations

from tulu_cli.rewards.ifeval import build_checks
from tulu_cli.rewards.registry import DEFAULT_TIMEOUT_S, VerifyResult, verify_batch

# Instruction-level IFEval accuracy is a mean over instructions, so items weigh by their count.
METRIC_WEIGHTS = {"inst_strict": "instructions", "inst_loose": "instructions"}

Answer = tuple[str, str, str, "str | None"]  # verifier, response, ground truth, prompt


def _scored(answers: list[Answer], loose: bool, profile: str) -> list[VerifyResult]:
    rows = [{"dataset": verifier, "response": response, "ground_truth": truth,
             **({"messages": [{"role": "user", "content": prompt}]} if prompt is not None else {})}
            for verifier, response, truth, prompt in answers]  # fmt: skip
    return verify_batch(rows, loose=loose, timeout_s=DEFAULT_TIMEOUT_S, profile=profile)


def score_responses(answers: list[Answer], profile: str = "default") -> list[dict[str, float]]:
    """The metrics of each answer, with `unverified` 1.0 for an answer the verifier could not score."""
    strict = _scored(answers, False, profile)
    ifeval = [index for index, answer in enumerate(answers) if answer[0].lower() == "ifeval"]
    loose = dict(zip(ifeval, _scored([answers[i] for i in ifeval], True, profile), strict=True))
    scores = []
    for index, (_, _, truth, prompt) in enumerate(answers):
        unverified = float(strict[index].error is not None or (index in loose and loose[index].error is not None))
        if index not in loose:
            scores.append({"accuracy": strict[index].score, "unverified": unverified})
            continue
        # The score is the share of instructions followed: 1.0 exactly when every one is.
        count = len(build_checks(truth, prompt, profile))
        strict_score, loose_score = strict[index].score, loose[index].score
        scores.append({"prompt_strict": float(strict_score == 1.0), "prompt_loose": float(loose_score == 1.0),
                       "inst_strict": strict_score, "inst_loose": loose_score, "instructions": float(count),
                       "unverified": unverified})  # fmt: skip
    return scores


def score_response(
    verifier: str, response: str, ground_truth: str, prompt: str | None, profile: str = "default"
) -> dict[str, float]:
    return score_responses([(verifier, response, ground_truth, prompt)], profile)[0]
