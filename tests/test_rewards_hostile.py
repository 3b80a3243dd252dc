"""Hostile rows against each verifier, run in this process's code path (no worker pool to hide a hang).

Each case once hung for minutes (a keyword compiled as a catastrophic regular expression, quadratic span
regexes on a 100k-character response, per-sentence tokenisation of a whole long text) or crashed the
batch (RecursionError on deeply nested JSON). The cases run in a child interpreter, so a case that hangs
is killed after CASE_LIMIT_S and reported as hung instead of stalling the test run.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Each case must finish well inside this (they take milliseconds to a second now).
CASE_LIMIT_S = 8.0


def ifeval(instruction_id: str, **kwargs) -> str:
    return json.dumps({"instruction_id_list": [instruction_id], "kwargs": [kwargs]})


def func(name: str, **kwargs) -> str:
    return json.dumps({"func_name": name, **kwargs})


DEEP = "[" * 100_000 + "]" * 100_000
# name: (dataset, ground_truth, response, loose, expected score, expected error substring or None)
CASES = {
    "keyword_catastrophic_regex": ("ifeval", ifeval("keywords:existence", keywords=["(a+)+$"]), "a" * 40 + "b",
                                   False, 0.0, None),
    "keyword_is_literal_text": ("ifeval", ifeval("keywords:existence", keywords=["[citation needed", "a.b"]),
                                "A claim [Citation needed] about a.b", False, 1.0, None),
    "frequency_catastrophic_regex": ("ifeval", ifeval("keywords:frequency", keyword="(x+x+)+y", frequency=1,
                                                      relation="at least"), "x" * 40, False, 0.0, None),
    "forbidden_catastrophic_regex": ("ifeval", ifeval("keywords:forbidden_words", forbidden_words=["(a|aa)+c"]),
                                     "a" * 40, False, 1.0, None),
    "postscript_catastrophic_regex": ("ifeval", ifeval("detectable_content:postscript", postscript_marker="(a*)*b"),
                                      "a" * 40, False, 0.0, None),
    "sections_catastrophic_regex": ("ifeval", ifeval("detectable_format:multiple_sections",
                                                     section_spliter="(a*)*b", num_sections=1), "a" * 40,
                                    False, 0.0, None),
    "placeholders_100k_brackets": ("ifeval", ifeval("detectable_content:number_placeholders", num_placeholders=1),
                                   "[" * 100_000, False, 0.0, None),
    "placeholders_func_100k_brackets": ("ifeval", func("validate_placeholders", N=1), "[" * 100_000,
                                        False, 0.0, None),
    "title_100k_openings": ("ifeval", ifeval("detectable_format:title"), "<<" * 50_000, False, 0.0, None),
    "title_func_100k_openings": ("ifeval", func("validate_title"), "<<a" * 33_000, False, 0.0, None),
    "json_response_nested_100k": ("ifeval", ifeval("detectable_format:json_format"), DEEP, False, 0.0, None),
    "json_func_response_nested_100k": ("ifeval", func("validate_json_format"), DEEP, False, 0.0, None),
    "ground_truth_nested_100k": ("ifeval", DEEP, "x", False, 0.0, "ground_truth"),
    "ground_truth_object_nested_100k": ("ifeval", '{"a":' * 100_000 + "1" + "}" * 100_000, "x", False, 0.0,
                                        "ground_truth"),
    "capital_words_200k_sentences": ("ifeval", ifeval("change_case:capital_word_frequency", capital_frequency=3,
                                                      capital_relation="at least"), "WORD. " * 40_000,
                                     False, 1.0, None),
    "sentences_2m_loose": ("ifeval", ifeval("length_constraints:number_sentences", num_sentences=3,
                                              relation="less than"), "Hi. " * 500_000, True, 0.0, None),
    "math_100k_plain_text": ("math", "2", "x" * 100_000, False, 0.0, None),
    "math_repeated_final_answer": ("math", "2", "Final Answer: The final answer is " * 3_000, False, 0.0, None),
    "math_100k_unclosed_boxed": ("math", "2", "\\boxed{" * 20_000, False, 0.0, None),
    "math_100k_unclosed_text": ("math", "2", "\\boxed{\\text{" + "\\text{" * 20_000 + "}", False, 0.0, None),
}  # fmt: skip

_CHILD = """
import json, sys, time
from tulu_cli.rewards.registry import verify_row
cases = json.loads(sys.stdin.read())
for name, (dataset, truth, response, loose) in cases:
    print(json.dumps({"start": name}), flush=True)
    started = time.monotonic()
    result = verify_row({"dataset": dataset, "ground_truth": truth, "response": response}, loose=loose,
                        timeout_s=5.0)
    print(json.dumps({"name": name, "elapsed": time.monotonic() - started, "score": result.score,
                      "error": result.error}), flush=True)
"""


def _run_isolated(cases: dict) -> dict[str, dict]:
    """name -> {"elapsed", "score", "error"} or {"hung": True}/{"crashed": text}; a hung case is killed
    and the child restarted at the next one."""
    outcomes: dict[str, dict] = {}
    remaining = list(cases)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    while remaining:
        payload = json.dumps([[name, list(cases[name][:4])] for name in remaining])
        child = subprocess.Popen([sys.executable, "-c", _CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
        child.stdin.write(payload)
        child.stdin.close()
        current, deadline = None, None
        while True:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            readable, _, _ = select.select([child.stdout], [], [], timeout)
            if not readable:
                child.kill()
                outcomes[current] = {"hung": True}
                break
            line = child.stdout.readline()
            if not line:
                child.wait()
                if current is not None:
                    outcomes[current] = {"crashed": child.stderr.read()[-2000:]}
                break
            message = json.loads(line)
            if "start" in message:
                current, deadline = message["start"], time.monotonic() + CASE_LIMIT_S
            else:
                outcomes[message["name"]] = message
                current, deadline = None, None
        child.wait()
        child.stderr.close()
        child.stdout.close()
        remaining = [name for name in remaining if name not in outcomes]
    return outcomes


@pytest.fixture(scope="module")
def outcomes():
    return _run_isolated(CASES)


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_row_is_scored_quickly(outcomes, name):
    outcome = outcomes[name]
    assert "hung" not in outcome, f"{name} ran past {CASE_LIMIT_S}s"
    assert "crashed" not in outcome, f"{name} crashed: {outcome.get('crashed')}"
    *_, score, error = CASES[name]
    assert outcome["score"] == score
    if error is None:
        assert outcome["error"] is None
    else:
        assert error in outcome["error"]
    assert outcome["elapsed"] < CASE_LIMIT_S
