"""`verifier.profile`: the defaults verify right answers the Tulu 3 release code failed (or passed wrong
ones), and `tulu3_release` reproduces the release, one example per differing function (the README table);
every verifier call, in this process too, is held to its time limit."""

from __future__ import annotations

import json
import time

import pytest

from tulu_cli.eval.scoring import score_responses
from tulu_cli.rewards import register, verify
from tulu_cli.rewards.registry import VerifyOptions


def _if(func_name: str, **kwargs) -> str:
    return json.dumps({"func_name": func_name, **kwargs})


CAPITALS_11 = "ONE TWO THREE FOUR FIVE SIX SEVEN EIGHT NINE TEN ELEVEN words"
# (what differs, dataset, response, ground truth, default score, release score): the README table.
EXAMPLES = [
    ("validate_placeholders: the release returned a tuple, always true", "ifeval",
     "No placeholders here.", _if("validate_placeholders", N=2), 0.0, 1.0),
    ("verify_sentence_constraint: '!' ends no sentence in the release", "ifeval",
     "Stop! Go now.", _if("verify_sentence_constraint", N=2, quantifier="at least"), 1.0, 0.0),
    ("validate_paragraphs: i=0 reads the last paragraph in the release", "ifeval",
     "First one.\n\nSecond one.", _if("validate_paragraphs", N=2, first_word="Second", i=0), 0.0, 1.0),
    ("validate_choice: release tests `text in option`, over the characters of a string", "ifeval",
     "My answer is yes.", _if("validate_choice", options="('My answer is yes.', 'My answer is no.')"), 1.0, 0.0),
    ("validate_choice: release tests `text in option` (list of options)", "ifeval",
     "My answer is yes. It is.", _if("validate_choice", options=["My answer is yes.", "My answer is no."]), 1.0, 0.0),
    ("validate_sections: release counts the preamble and wants exactly N", "ifeval",
     "Overview.\nSection 1\nA\nSection 2\nB", _if("validate_sections", N=2, section_splitter="Section"), 1.0, 0.0),
    ("validate_frequency_capital_words: 'around' is exact in the release", "ifeval",
     CAPITALS_11, _if("validate_frequency_capital_words", N=10, quantifier="around"), 1.0, 0.0),
    ("every verifier: the release keeps only the text after `<|assistant|>`", "ifeval",
     "a, b<|assistant|>\nno commas here", _if("validate_no_commas"), 0.0, 1.0),
    ("gsm8k: the value counts, not its text", "gsm8k", "The total is $18.00.", "18", 1.0, 0.0),
    ("gsm8k: the answer after ####, not the last number", "gsm8k", "#### 18\nCheck: 3 + 15 = 18 - 0", "18", 1.0, 0.0),
    ("gsm8k: with no number the release compares the whole response", "gsm8k", "eighteen", "eighteen", 0.0, 1.0),
    ("gsm8k: the release drops the minus sign of an integer", "gsm8k", "10 - 11 = -1\n#### -1", "1", 0.0, 1.0),
    ("math: \\fbox answers (the release's remove_boxed rejects them)", "math", "Answer: \\fbox{x = 5}", "5", 1.0, 0.0),
    ("math: the boxed answer Minerva-normalised as well", "math", "Hence $\\boxed{\\text{12}}$.", "12", 1.0, 0.0),
]  # fmt: skip


@pytest.mark.parametrize("what, dataset, response, truth, default, release", EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_each_difference_under_both_profiles(what, dataset, response, truth, default, release):
    assert verify(dataset, response, truth) == default
    assert verify(dataset, response, truth, profile="tulu3_release") == release


@pytest.mark.parametrize(
    "dataset, response, truth",
    [
        ("ifeval", 'Thanks. Is there anything else I can help with?\n', _if("validate_end", end_phrase="help with?")),
        ("ifeval", '  "Quoted whole."\n', _if("validate_quotation")),
        ("ifeval", "Hello [name], at [address].", _if("validate_placeholders", N=2)),
        ("gsm8k", "So 9 + 9 = 18.\n#### 18", "18"),
        ("gsm8k", "The answer is 1,234.", "1234"),
        ("math", "Thus $\\boxed{\\frac{1}{2}}$.", "0.5"),
        ("math", "Final Answer: The final answer is $5$. I hope it is correct.", "5"),
    ],
)
def test_right_answers_verify_under_both_profiles(dataset, response, truth):
    assert verify(dataset, response, truth) == 1.0
    assert verify(dataset, response, truth, profile="tulu3_release") == 1.0


def test_an_unknown_profile_is_refused():
    with pytest.raises(ValueError, match="tulu3_release"):
        verify("gsm8k", "18", "18", profile="tulu3")


@register("test_in_process_error")
def fail(response: str, ground_truth: str, options: VerifyOptions) -> float:
    if response == "fail":
        raise ValueError("a verifier that fails on this answer")
    return 1.0


def test_an_answer_the_verifier_fails_on_scores_zero_and_counts_as_unverified():
    scores = score_responses([("test_in_process_error", "fail", "", None), ("test_in_process_error", "ok", "", None)])
    assert scores == [{"accuracy": 0.0, "unverified": 1.0}, {"accuracy": 1.0, "unverified": 0.0}]


@register("test_in_process_hang")
def hang(response: str, ground_truth: str, options: VerifyOptions) -> float:
    while response == "hang":
        pass
    return 1.0


def test_in_process_callers_are_held_to_the_time_limit():
    started = time.monotonic()
    assert verify("test_in_process_hang", "hang", "", timeout_s=1.0) == 0.0
    scores = score_responses([("test_in_process_hang", "hang", "", None), ("test_in_process_hang", "ok", "", None)])
    assert scores == [{"accuracy": 0.0, "unverified": 1.0}, {"accuracy": 1.0, "unverified": 0.0}]
    assert time.monotonic() - started < 30  # two limits (1 s and 5 s) and a worker restart, never the hang


def test_config_profile_is_checked_before_launch():
    from tulu_cli.validate_config import config_errors

    assert any("verifier.profile='tulu3'" in error or "verifier.profile=tulu3" in error
               for error in config_errors("rlvr", {"verifier": {"profile": "tulu3"}}))  # fmt: skip
    assert not any("verifier" in error for error in config_errors("eval", {"verifier": {"profile": "tulu3_release"}}))
