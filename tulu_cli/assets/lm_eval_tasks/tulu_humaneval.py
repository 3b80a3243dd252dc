"""lm-eval hooks of the project's HumanEval pass@10 tasks: the programs to run, and pass@k over them
(tulu_cli.eval.code_execution runs each program in its own limited process)."""

from __future__ import annotations

from tulu_cli.eval.code_execution import score_samples


def build_programs(resps: list[list[str]], docs: list[dict]) -> list[list[str]]:
    """The function prompt followed by each sampled completion, cut at the closing code fence."""
    return [[doc["prompt"] + (r if r.find("```") == -1 else r[: r.find("```")]) for r in resp]
            for resp, doc in zip(resps, docs, strict=True)]


def pass_at_10(references: list[str], predictions: list[list[str]]) -> dict[str, float]:
    """pass@10 of one problem: each candidate program followed by the problem's tests."""
    return score_samples([f"{program}\n{references[0]}" for program in predictions[0]], [10])
