"""HumanEval pass@10: the unbiased estimator, programs run in their own limited process, and the project's
lm-eval task (its shipped template on local problems) through lm-eval's real task code, offline, with a
scripted model whose samples are known to pass or fail."""

from __future__ import annotations

import itertools
import json
import time
from collections import defaultdict
from math import comb
from pathlib import Path

import pytest

from tulu_cli.config import assets_dir
from tulu_cli.eval.code_execution import pass_at_k, program_passes, score_samples
from tulu_cli.eval.lm_eval_backend import lm_eval_arguments, run_lm_eval
from tulu_cli.eval.tasks import parse_task

TEMPLATE = assets_dir() / "lm_eval_tasks" / "_tulu_humaneval_pass10_yaml"
PROBLEMS = [
    {"task_id": "t/0", "prompt": "def add(a, b):\n", "entry_point": "add",
     "test": "def check(f):\n    assert f(2, 3) == 5\n"},
    {"task_id": "t/1", "prompt": "def mul(a, b):\n", "entry_point": "mul",
     "test": "def check(f):\n    assert f(2, 3) == 6\n"},
]
RIGHT = {"add": "    return a + b\n```", "mul": "    return a * b\n```"}
CORRECT_SAMPLES = {"add": 5, "mul": 0}  # of the 20 samples per problem


def test_pass_at_k_equals_counting_subsets():
    for n, c, k in [(20, 5, 10), (20, 0, 10), (20, 20, 10), (6, 2, 3), (5, 1, 1)]:
        outcomes = [True] * c + [False] * (n - c)
        subsets = list(itertools.combinations(outcomes, k))
        assert pass_at_k(n, c, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))
    with pytest.raises(ValueError, match="needs at least 10 samples"):
        pass_at_k(5, 1, 10)


def test_programs_run_in_their_own_limited_process():
    assert program_passes("def f():\n    return 1\nassert f() == 1\n")
    assert not program_passes("assert 1 == 2\n")
    assert not program_passes("while True:\n    pass\n", timeout_s=1.0)
    assert not program_passes("x = bytearray(8 * 1024**3)\n")  # over the memory limit
    assert score_samples(["assert True"] * 3 + ["assert False"] * 7, [1, 10]) == pytest.approx({"pass@1": 0.3, "pass@10": 1.0})


def _ended(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads process states from /proc")
@pytest.mark.parametrize("parent_exits", [True, False])
def test_a_process_the_program_starts_ends_with_it(tmp_path, parent_exits):
    """A program that forks a child which sleeps (holding what the program was given) neither holds the
    check past the program's end or its time limit nor leaves the child running."""
    pid_file = tmp_path / "child.pid"
    program = (f"import os, time\npath = {str(pid_file)!r}\n"
               "if os.fork() == 0:\n    open(path + '.tmp', 'w').write(str(os.getpid()))\n"
               "    os.rename(path + '.tmp', path)\n    time.sleep(120)\n"
               "while not os.path.exists(path):\n    time.sleep(0.01)\n"
               + ("" if parent_exits else "time.sleep(120)\n"))
    started = time.monotonic()
    assert program_passes(program, timeout_s=5.0) is parent_exits
    assert time.monotonic() - started < 5.0 + 2.0
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5.0
    while not _ended(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _ended(child)


class _ScriptedCoder:
    """Writes the right body for the first CORRECT_SAMPLES[problem] samples of a problem, a wrong one after."""

    def __init__(self) -> None:
        from lm_eval.api.model import LM

        class Coder(LM):
            def __init__(self) -> None:
                super().__init__()
                self.seen: dict[str, int] = defaultdict(int)

            def generate_until(self, requests):
                outputs = []
                for request in requests:
                    name = "add" if "def add" in request.args[0] else "mul"
                    self.seen[name] += 1
                    right = self.seen[name] <= CORRECT_SAMPLES[name]
                    outputs.append(RIGHT[name] if right else "    return None\n```")
                return outputs

            def loglikelihood(self, requests):
                raise NotImplementedError

            def loglikelihood_rolling(self, requests):
                raise NotImplementedError

        self.lm = Coder()


def test_pass_at_10_task_through_lm_eval(tmp_path):
    pytest.importorskip("lm_eval")
    from lm_eval.tasks import TaskManager

    data = tmp_path / "problems.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS))
    (tmp_path / "local_pass10.yaml").write_text(
        f"include: {TEMPLATE}\ntask: local_humaneval_pass10\ndataset_path: json\ndataset_name: null\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n")
    spec = parse_task("humaneval", {"type": "lm_eval", "lm_eval_task": "local_humaneval_pass10", "num_shots": 0,
                                    "metric": "pass@10,create_test", "temperature": 0.8, "top_p": 0.95,
                                    "chat_template": "none", "include_path": [str(tmp_path)]})
    generation = {"backend": "hf", "temperature": 0.0, "top_p": 1.0}
    arguments = lm_eval_arguments(spec, generation, {"include_path": [], "confirm_run_unsafe_code": True}, 1234)
    assert arguments["gen_kwargs"]["do_sample"] is True and arguments["gen_kwargs"]["temperature"] == 0.8
    coder = _ScriptedCoder().lm
    metrics, n, _ = run_lm_eval(spec, coder, arguments,
                                task_manager=TaskManager(include_path=str(tmp_path), include_defaults=False))
    expected = (1 - comb(20 - 5, 10) / comb(20, 10) + 0.0) / 2
    assert metrics["pass@10,create_test"] == pytest.approx(expected) and n == 2
    assert dict(coder.seen) == {"add": 20, "mul": 20}
    # without the user's permission lm-eval does not run generated code
    refused = {**arguments, "confirm_run_unsafe_code": False}
    with pytest.raises(Exception, match="(?i)unsafe"):
        run_lm_eval(spec, _ScriptedCoder().lm, refused,
                    task_manager=TaskManager(include_path=str(tmp_path), include_defaults=False))
