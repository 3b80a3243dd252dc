"""GSM8K and MATH verifiers: hand cases, math-verify as an oracle, and the hard time limit."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ProcessPoolExecutor

import pytest

from tulu_cli.rewards import symbolic, verify
from tulu_cli.rewards.math_answer import verify_math
from tulu_cli.rewards.math_normalize import (
    candidate_answers,
    hendrycks_normalize,
    last_boxed_content,
    minerva_answer,
    minerva_normalize,
)


@pytest.fixture(scope="module", autouse=True)
def warm_worker():
    symbolic.warm_up()


@pytest.mark.parametrize(
    "response, truth, expected",
    [
        ("She pays 1,234 dollars in total.", "1234", 1.0),
        ("First 3 then 5, so the answer is 18", "18", 1.0),
        ("The answer is 18.", "18", 1.0),
        ("The answer is 18 and not 17", "18", 0.0),
        ("It is 12,345,678 exactly", "12345678", 1.0),
        # A negative answer keeps its sign (the release's pattern read "-4" as "4": profile tulu3_release).
        ("The answer is -4", "-4", 1.0),
        ("The answer is -4", "4", 0.0),
        ("The answer is -0.5", "-0.5", 1.0),
        ("It costs 2.50", "2.5", 1.0),  # equal values (the release compared text: profile tulu3_release)
        ("No number here", "3", 0.0),
        ("", "0", 0.0),
    ],
)
def test_gsm8k(response, truth, expected):
    assert verify("gsm8k", response, truth) == expected
    assert verify("GSM8K", response, truth) == expected


def test_extraction_helpers():
    assert last_boxed_content(r"a \boxed{1} then \boxed{\frac{1}{2}} end") == r"\frac{1}{2}"
    assert last_boxed_content(r"so \fbox{x^{2}}") == "x^{2}"
    assert last_boxed_content(r"so \boxed 5$ done") == "5"
    assert last_boxed_content(r"so \boxed{unbalanced") is None
    assert minerva_answer("Final Answer: The final answer is $7$. I hope it is correct.") == "$7$"
    assert minerva_normalize("$x = 10$ units") == "10"
    assert minerva_normalize("\\text{(B)}") == "(B)"
    assert hendrycks_normalize("\\dfrac{1}{2}") == "\\frac{1}{2}"
    assert hendrycks_normalize("0.5") == "\\frac{1}{2}"
    assert hendrycks_normalize("x = 3/4") == "\\frac{3}{4}"
    assert candidate_answers("the value is $3$ and then $4$") == ["4"]
    assert candidate_answers("just 12") == ["just12", "just 12"]


@pytest.mark.parametrize(
    "response, truth, expected",
    [
        (r"Thus the answer is $\boxed{\frac{1}{2}}$.", r"\frac{1}{2}", 1.0),
        (r"Thus $\boxed{\dfrac12}$", r"\frac{1}{2}", 1.0),
        (r"Thus $\boxed{0.5}$", r"\frac{1}{2}", 1.0),
        (r"\boxed{2\sqrt{3}}", r"\sqrt{12}", 1.0),
        (r"\boxed{x^2+2x+1}", r"(x+1)^2", 1.0),
        (r"\fbox{7}", "7", 1.0),
        (r"\boxed{8}", "7", 0.0),
        ("Final Answer: The final answer is $12$. I hope it is correct.", "12", 1.0),
        ("Final Answer: The final answer is 12 dollars. I hope it is correct.", "12", 1.0),
        ("so we get $x=5$ as the result", "5", 1.0),
        ("so we get $x=5$ and then $6$", "5", 0.0),
        ("5", "5", 1.0),
        (r"\boxed{90^\circ}", "90", 1.0),
        (r"\boxed{\left( 3, \frac{\pi}{2} \right)}", r"\left( 3, \frac{\pi}{2} \right)", 1.0),
        ("no answer at all", "3", 0.0),
    ],
)
def test_math_hand_cases(response, truth, expected):
    assert verify("math", response, truth) == expected
    assert verify("MATH", response, truth) == expected


# (boxed prediction, gold): the recipe's rules and math-verify should agree on each.
ORACLE_PAIRS = [
    ("\\frac{1}{2}", "\\frac{1}{2}"), ("0.5", "\\frac{1}{2}"), ("\\frac{2}{4}", "\\frac{1}{2}"),
    ("2\\sqrt{3}", "\\sqrt{12}"), ("\\sqrt{2}/2", "\\frac{\\sqrt{2}}{2}"), ("3", "3"), ("3.0", "3"),
    ("-7", "-7"), ("7", "-7"), ("\\pi", "\\pi"), ("2\\pi", "\\pi"), ("x^2+2x+1", "(x+1)^2"),
    ("x^2+1", "(x+1)^2"), ("10", "12"), ("\\frac{3}{4}", "0.75"), ("\\frac{1}{3}", "0.5"), ("100", "10^2"),
    ("4", "2^2"), ("5", "2^2"), ("\\sqrt{16}", "4"), ("e^{0}", "1"), ("2+3", "5"), ("6", "2 \\cdot 3"),
    ("\\frac{9}{3}", "3"), ("1", "0"),
]  # fmt: skip


@pytest.mark.parametrize("prediction, gold", ORACLE_PAIRS)
def test_math_agrees_with_math_verify(prediction, gold):
    response = f"The answer is $\\boxed{{{prediction}}}$."
    oracle = verify_math(response, gold, use_math_verify=True)
    assert verify("math", response, gold) == oracle


def test_math_verify_is_used_with_gold_first():
    assert verify_math(r"So $\boxed{\frac{1}{2}}$.", "0.5", use_math_verify=True) == 1.0
    assert verify_math(r"So $\boxed{3}$.", "4", use_math_verify=True) == 0.0


@pytest.mark.parametrize("answer", ["9^{9^{9^{9}}}", "(10^{10^{10}})!", "\\binom{10^{12}}{10^{6}}"])
def test_runaway_sympy_is_cut_off(answer):
    start = time.monotonic()
    assert verify("math", f"Hence $\\boxed{{{answer}}}$.", "3", timeout_s=1.0) == 0.0
    assert time.monotonic() - start < 4.0
    # The worker is restarted and keeps answering afterwards.
    assert verify("math", r"$\boxed{2\sqrt{3}}$", r"\sqrt{12}") == 1.0


def test_time_limit_holds_outside_the_main_thread():
    results = []

    def run():
        start = time.monotonic()
        results.append(
            (verify("math", r"$\boxed{9^{9^{9^{9}}}}$", "3", timeout_s=1.0), time.monotonic() - start)
        )

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    assert results and results[0][0] == 0.0 and results[0][1] < 4.0


def _hang_in_worker(_: int) -> tuple[float, float, float]:
    start = time.monotonic()
    hung = verify("math", r"$\boxed{9^{9^{9^{9}}}}$", "3", timeout_s=1.0)
    elapsed = time.monotonic() - start
    return hung, elapsed, verify("math", r"$\boxed{2\sqrt{3}}$", r"\sqrt{12}")


def test_time_limit_holds_inside_worker_processes():
    with ProcessPoolExecutor(max_workers=1) as pool:
        hung, elapsed, fine = pool.submit(_hang_in_worker, 0).result(timeout=120)
    assert hung == 0.0 and fine == 1.0
    assert elapsed < 10.0  # includes starting the child process inside the worker


NOISY_OPS = r'''
def noisy(first, second):
    print("a library's warning on stdout")
    sys.stdout.write("{\"ok\": true}\n")
    sys.stdout.flush()
    os.write(1, b"C code writing to fd 1\n")
    return first == second


OPS["noisy"] = noisy
'''


def test_what_a_comparison_prints_never_reaches_the_reply_stream(tmp_path):
    """A parser that prints (to sys.stdout or to fd 1) must not shift replies onto later requests: the
    worker under test is the real one with one extra operation that prints before it answers."""
    source = symbolic._WORKER_SCRIPT.read_text()
    script = tmp_path / "noisy_worker.py"
    script.write_text(source.replace('\nif __name__ == "__main__":', NOISY_OPS + '\nif __name__ == "__main__":'))
    worker = symbolic.SymbolicWorker(script)
    try:
        answers = [worker.call("noisy", "x", "y", 60.0), worker.call("sympy_equal", "1", "2", 60.0),
                   worker.call("noisy", "x", "x", 60.0), worker.call("sympy_equal", r"\sqrt{12}", r"2\sqrt{3}", 60.0)]
    finally:
        worker.close()
    assert answers == [False, False, True, True]
