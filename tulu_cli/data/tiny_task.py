"""The tiny task: arithmetic word problems (GSM8K answer style) and simple formatting instructions.

A task a tiny model learns on a CPU in minutes, in every schema of the recipe, built so that each
stage of the recipe has something to add, as in Tulu 3:
- SFT teaches the answer formats and the arithmetic, and most instruction constraints;
- three constraints (title, postscript, quotation marks) are under-covered by the SFT data: most SFT
  answers to those prompts ignore the constraint, so the SFT model follows them only sometimes.
  On-policy preference pairs judged by the verifier (chosen = follows, rejected = does not) carry what
  SFT missed, so DPO raises held-out instruction following; RLVR raises it and the arithmetic further.
- `mc_test` scores the skill the data teaches: each option is a whole worked answer to an unseen
  problem (one correct, three with a wrong sum), compared by the model's log-likelihood.
Held-out evaluation sets never share a prompt with any training file.
The bundled files under assets/tiny/ are this module's output:
`python -m tulu_cli.data.tiny_task OUT_DIR` regenerates them byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path

NAMES = ["Ana", "Ben", "Cara", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jin", "Kai", "Lea", "Max", "Nia", "Omar", "Pia"]
ITEMS = ["apples", "books", "coins", "pens", "shells", "stamps", "cards", "eggs", "rocks", "cups"]
ANIMALS = ["cat", "dog", "fox", "owl", "bee", "cow", "duck", "frog", "goat", "hen", "lion", "seal"]
ADJECTIVES = ["small", "quick", "calm", "brave", "soft", "loud", "shy", "happy", "clever", "gentle"]
CONSTRAINTS = ["lowercase", "uppercase", "end_phrase", "no_commas", "quotation", "title", "postscript"]
# Constraints whose SFT answers mostly ignore the instruction (see SFT_COMPLIANCE).
UNDER_COVERED = {"quotation", "title", "postscript"}
# Share of SFT answers to under-covered constraints that follow the instruction.
SFT_COMPLIANCE = 0.3
END_PHRASE = "That is all."
POSTSCRIPT = "P.S."


@dataclass(frozen=True)
class Problem:
    """One item of the task: the user prompt, the ideal response, a plausible wrong one, and its check."""

    kind: str  # "math" or "if"
    prompt: str
    response: str
    wrong_response: str
    dataset: str  # verifier key
    ground_truth: str
    constraint_type: str | None = None


def math_problem(rng: random.Random) -> Problem:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    if rng.random() < 0.5:
        a, b = rng.randint(1, 30), rng.randint(1, 9)
        answer = a + b
        prompt = f"{name} has {a} {item}. {name} gets {b} more. How many {item} does {name} have now?"
        work = f"{a} + {b} = {answer}"
    else:
        a = rng.randint(2, 30)
        b = rng.randint(1, min(9, a - 1))
        answer = a - b
        prompt = f"{name} has {a} {item}. {name} gives away {b}. How many {item} does {name} have left?"
        work = f"{a} - {b} = {answer}"
    offset = rng.choice([-2, -1, 1, 2])
    # Word problems have no negative answers: a wrong answer below zero goes above instead.
    wrong = answer + (offset if answer + offset >= 0 else -offset)
    response = f"{name} has {work} {item}.\n#### {answer}"
    wrong_work = work.rsplit("=", 1)[0] + f"= {wrong}"
    wrong_response = f"{name} has {wrong_work} {item}.\n#### {wrong}"
    return Problem("math", prompt, response, wrong_response, "gsm8k", str(answer))


def instruction_problem(rng: random.Random) -> Problem:
    animal = rng.choice(ANIMALS)
    first, second, third = rng.sample(ADJECTIVES, 3)
    base = f"The {animal} is {first} and {second}."
    listed = f"The {animal} is {first}, {second}, and {third}."
    kind = rng.choice(CONSTRAINTS)
    ask = f"Write a sentence saying that a {animal} is {first} and {second}."
    if kind == "lowercase":
        prompt = f"{ask} Your entire response should be in English, and in all lowercase letters."
        return Problem("if", prompt, base.lower(), base, "ifeval", json.dumps({"func_name": "validate_lowercase"}), kind)
    if kind == "uppercase":
        prompt = f"{ask} Your entire response should be in English, and in all capital letters."
        return Problem("if", prompt, base.upper(), base, "ifeval", json.dumps({"func_name": "validate_uppercase"}), kind)
    if kind == "end_phrase":
        prompt = f"{ask} Finish your response with this exact phrase: {END_PHRASE}"
        truth = json.dumps({"func_name": "validate_end", "end_phrase": END_PHRASE})
        return Problem("if", prompt, f"{base} {END_PHRASE}", base, "ifeval", truth, kind)
    if kind == "no_commas":
        prompt = f"{ask} Do not use any commas in your response."
        return Problem("if", prompt, base, listed, "ifeval", json.dumps({"func_name": "validate_no_commas"}), kind)
    if kind == "quotation":
        prompt = f"{ask} Wrap your entire response with double quotation marks."
        return Problem("if", prompt, f'"{base}"', base, "ifeval", json.dumps({"func_name": "validate_quotation"}), kind)
    if kind == "title":
        prompt = f"{ask} Your answer must contain a title, wrapped in double angular brackets, such as <<poem of joy>>."
        title = f"<<the {animal}>>"
        return Problem("if", prompt, f"{title}\n{base}", base, "ifeval", json.dumps({"func_name": "validate_title"}), kind)
    prompt = f"{ask} At the end of your response, please explicitly add a postscript starting with {POSTSCRIPT}"
    truth = json.dumps({"func_name": "verify_postscript", "postscript_marker": POSTSCRIPT})
    return Problem("if", prompt, f"{base}\n{POSTSCRIPT} I like the {animal}.", base, "ifeval", truth, kind)


def sft_response(problem: Problem, rng: random.Random) -> str:
    """The SFT answer: the ideal one, except that most answers to under-covered constraints ignore them."""
    if problem.constraint_type in UNDER_COVERED and rng.random() >= SFT_COMPLIANCE:
        return problem.wrong_response
    return problem.response


def problems(seed: int, count: int, math_share: float, exclude: set[str]) -> list[Problem]:
    """`count` distinct problems whose prompts are not in `exclude` (so held-out sets stay unseen)."""
    rng = random.Random(seed)
    chosen: dict[str, Problem] = {}
    while len(chosen) < count:
        problem = math_problem(rng) if rng.random() < math_share else instruction_problem(rng)
        if problem.prompt not in exclude and problem.prompt not in chosen:
            chosen[problem.prompt] = problem
    return list(chosen.values())


def row_id(prefix: str, text: str) -> str:
    return f"{prefix}-{hashlib.sha1(text.encode()).hexdigest()[:12]}"


def sft_row(problem: Problem, source: str, response: str | None = None) -> dict:
    return {
        "id": row_id(source, problem.prompt),
        "messages": [{"role": "user", "content": problem.prompt},
                     {"role": "assistant", "content": problem.response if response is None else response}],
        "source": source,
    }


def preference_row(problem: Problem, source: str) -> dict:
    user = {"role": "user", "content": problem.prompt}
    return {
        "id": row_id(source, problem.prompt),
        "prompt": problem.prompt,
        "chosen": [user, {"role": "assistant", "content": problem.response}],
        "rejected": [user, {"role": "assistant", "content": problem.wrong_response}],
        "source": source,
    }


def verifiable_row(problem: Problem, source: str) -> dict:
    return {
        "id": row_id(source, problem.prompt),
        "messages": [{"role": "user", "content": problem.prompt}],
        "ground_truth": problem.ground_truth,
        "dataset": problem.dataset,
        "constraint_type": problem.constraint_type,
        "constraint": None if problem.kind == "math" else problem.prompt.split(". ", 1)[1],
        "source": source,
    }


def with_answer(response: str, answer: int, wrong: int) -> str:
    """A worked answer with its result (after `=` and after `####`) replaced by `wrong`."""
    work, final = response.rsplit("\n#### ", 1)
    return work.replace(f"= {answer} ", f"= {wrong} ") + f"\n#### {wrong}"


def multiple_choice_rows(math_problems: list[Problem], seed: int) -> list[dict]:
    """MMLU-style items scored by log-likelihood: the options are four worked answers to the problem,
    the correct one and three whose result is off by 1 to 3, in ascending order of their result."""
    rng = random.Random(seed)
    rows = []
    for problem in math_problems:
        answer = int(problem.ground_truth)
        wrong = rng.sample([value for value in (answer - 2, answer - 1, answer + 1, answer + 2, answer + 3) if value >= 0], 3)
        results = sorted([answer, *wrong])
        choices = [problem.response if value == answer else with_answer(problem.response, answer, value) for value in results]
        rows.append({"id": row_id("tiny_mc", problem.prompt), "question": problem.prompt,
                     "choices": choices, "answer": results.index(answer)})
    return rows


def build(out_dir: Path) -> dict[str, int]:
    """Write every tiny dataset into `out_dir`; return row counts per file."""
    held_out = problems(seed=7, count=300, math_share=0.6, exclude=set())
    unseen_math = problems(seed=11, count=100, math_share=1.0, exclude={p.prompt for p in held_out})
    unseen = {p.prompt for p in held_out} | {p.prompt for p in unseen_math}
    train = problems(seed=1, count=4000, math_share=0.75, exclude=unseen)
    sft_rng = random.Random(5)
    seen = unseen | {p.prompt for p in train}
    preference = problems(seed=2, count=1700, math_share=0.75, exclude=unseen)
    verifiable = problems(seed=3, count=1200, math_share=0.7, exclude=seen)
    files = {
        "sft_train.jsonl": [sft_row(p, "tiny_sft", sft_response(p, sft_rng)) for p in train],
        "prefs_train.jsonl": [preference_row(p, "tiny_prefs") for p in preference[:1500]],
        "prefs_test.jsonl": [preference_row(p, "tiny_prefs") for p in held_out[:200]],
        "rlvr_train.jsonl": [verifiable_row(p, "tiny_rlvr") for p in verifiable],
        "gsm_test.jsonl": [verifiable_row(p, "tiny_gsm") for p in held_out if p.kind == "math"],
        "if_test.jsonl": [verifiable_row(p, "tiny_if") for p in held_out if p.kind == "if"],
        "mc_test.jsonl": multiple_choice_rows(unseen_math, seed=12),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in files.items():
        (out_dir / name).write_text("".join(json.dumps(row) + "\n" for row in rows))
    return {name: len(rows) for name, rows in files.items()}


if __name__ == "__main__":
    print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "assets" / "tiny"))
