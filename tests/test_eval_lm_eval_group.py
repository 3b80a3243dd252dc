"""MMLU 0-shot CoT through lm-eval's real task and group code, offline: subject tasks built from lm-eval's own
MMLU CoT template on local files, grouped by the project's group definition (renamed to the local tags) and by
lm-eval's MMLU group shape. The model answers from a script, so that the numbers can be checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tulu_cli.config import assets_dir
from tulu_cli.eval.lm_eval_backend import lm_eval_arguments, run_lm_eval
from tulu_cli.eval.readiness import task_status
from tulu_cli.eval.tasks import TaskConfigError, parse_task

lm_eval = pytest.importorskip("lm_eval")
from lm_eval.api.model import LM  # noqa: E402

TEMPLATE = Path(lm_eval.__file__).parent / "tasks" / "mmlu" / "flan_cot_zeroshot" / "_mmlu_flan_cot_zeroshot_template_yaml"
SHIPPED = assets_dir() / "lm_eval_tasks" / "tulu_mmlu_flan_cot_zeroshot.yaml"
# category tag -> (questions, how many the scripted model answers correctly)
SUBJECTS = {"stem": (3, 2), "other": (1, 1), "social_sciences": (2, 0), "humanities": (2, 1)}
GENERATION = {"backend": "hf", "temperature": 0.0, "top_p": 1.0, "max_new_tokens": 32}


class ScriptedLM(LM):
    """Answers each question with a fixed chain of thought ending in the scripted letter."""

    def __init__(self, answers: dict[str, str]) -> None:
        super().__init__()
        self.answers = answers

    def generate_until(self, requests):
        outputs = []
        for request in requests:
            prompt = request.args[0]
            letter = next(letter for question, letter in self.answers.items() if question in prompt)
            outputs.append(f"Let me reason about the options. The answer is ({letter}).")
        return outputs

    def loglikelihood(self, requests):
        raise NotImplementedError("generation only")

    def loglikelihood_rolling(self, requests):
        raise NotImplementedError("generation only")


def _write_tasks(root: Path) -> dict[str, str]:
    """Subject tasks (lm-eval's MMLU CoT template, local data) tagged like lm-eval's categories; the answers."""
    answers = {}
    for tag, (count, correct) in SUBJECTS.items():
        rows = []
        for i in range(count):
            question = f"Question {i} about {tag.replace('_', ' ')}: which option is right?"
            rows.append({"question": question, "choices": ["w", "x", "y", "z"], "answer": 1, "subject": tag})
            answers[question] = "B" if i < correct else "C"
        data = root / f"{tag}.jsonl"
        data.write_text("".join(json.dumps(row) + "\n" for row in rows))
        (root / f"local_{tag}.yaml").write_text(
            f"include: {TEMPLATE}\ntask: local_mmlu_cot_{tag}\ntag: local_mmlu_cot_{tag}_tag\n"
            f"dataset_path: json\ndataset_name: null\n"
            f"dataset_kwargs:\n  data_files:\n    validation: {data}\n    dev: {data}\n"
            f'description: "Questions about {tag}.\\n\\n"\n')
    # the project's group, aimed at the local tags instead of lm-eval's MMLU ones
    shipped = SHIPPED.read_text().replace("group: tulu_mmlu_flan_cot_zeroshot", "group: local_tulu_group")
    for tag in SUBJECTS:
        shipped = shipped.replace(f"mmlu_flan_cot_zeroshot_{tag}\n", f"local_mmlu_cot_{tag}_tag\n")
    (root / "local_tulu_group.yaml").write_text(shipped)
    # lm-eval's MMLU CoT group shape: category groups and a top group, all averaging `acc`
    categories = "".join(f"  - group: local_{tag}\n    task:\n      - local_mmlu_cot_{tag}_tag\n"
                         f"    aggregate_metric_list:\n      - metric: acc\n        weight_by_size: True\n"
                         for tag in SUBJECTS)
    (root / "local_lm_eval_shape.yaml").write_text(
        f"group: local_lm_eval_shape\ntask:\n{categories}aggregate_metric_list:\n  - metric: acc\n"
        f"    weight_by_size: True\nmetadata:\n  version: 2\n")
    return answers


@pytest.fixture(scope="module")
def local_tasks(tmp_path_factory):
    from lm_eval.tasks import TaskManager

    root = tmp_path_factory.mktemp("lm_eval_tasks")
    answers = _write_tasks(root)
    return root, ScriptedLM(answers), TaskManager(include_path=str(root), include_defaults=False)


def _run(local_tasks, group: str):
    root, lm, manager = local_tasks
    spec = parse_task("mmlu", {"type": "lm_eval", "lm_eval_task": group, "metric": "exact_match,flexible-extract",
                               "num_shots": 0, "chat_template": "none", "include_path": [str(root)]})
    arguments = lm_eval_arguments(spec, GENERATION, {"include_path": []}, seed=1234)
    return run_lm_eval(spec, lm, arguments, task_manager=manager)


def test_project_group_reports_the_size_weighted_exact_match(local_tasks):
    metrics, n, predictions = _run(local_tasks, "local_tulu_group")
    correct = sum(c for _, c in SUBJECTS.values())
    total = sum(q for q, _ in SUBJECTS.values())
    # weighted by subject size: 4/8, not the mean of the subject scores (2/3 + 1 + 0 + 1/2) / 4
    assert metrics["exact_match,flexible-extract"] == pytest.approx(correct / total)
    assert metrics["exact_match,strict-match"] == pytest.approx(correct / total)
    assert n == total and len(predictions) == 2 * total  # one per document and answer filter
    assert {p["filter"] for p in predictions} == {"strict-match", "flexible-extract"}
    assert {p["lm_eval_task"] for p in predictions} == {f"local_mmlu_cot_{tag}" for tag in SUBJECTS}


def test_lm_eval_mmlu_group_shape_has_no_exact_match_row(local_tasks):
    with pytest.raises(TaskConfigError, match="is not among lm-eval's results"):
        _run(local_tasks, "local_lm_eval_shape")


def test_dry_run_status_names_the_group_metric_mismatch(local_tasks):
    root, _, _ = local_tasks
    resolved = {"lm_eval": {"include_path": [str(root)]}, "generation": GENERATION}

    def status(group: str) -> str:
        return task_status(parse_task("mmlu", {"type": "lm_eval", "lm_eval_task": group, "include_path": [],
                                               "metric": "exact_match,flexible-extract"}), resolved)

    assert status("local_lm_eval_shape").startswith("not runnable: lm-eval group local_lm_eval_shape averages acc")
    assert status("mmlu_flan_cot_zeroshot").startswith("not runnable: lm-eval group mmlu_flan_cot_zeroshot")
    assert status("local_tulu_group").startswith("runnable")
    assert status("no_such_task") == "not runnable: lm-eval has no task or group 'no_such_task'"


def test_shipped_group_uses_the_subtasks_metric_and_filters():
    """The shipped group names lm-eval's four MMLU CoT category tags and the template's metric and filters."""
    import yaml

    group = yaml.safe_load(SHIPPED.read_text())
    template = yaml.safe_load(TEMPLATE.read_text())
    tags = {yaml.safe_load(path.read_text()).get("tag") for path in TEMPLATE.parent.glob("mmlu_*.yaml")}
    assert set(group["task"]) == tags
    assert [m["metric"] for m in template["metric_list"]] == ["exact_match"]
    assert group["aggregate_metric_list"][0]["metric"] == "exact_match"
    assert set(group["aggregate_metric_list"][0]["filter_list"]) == {f["name"] for f in template["filter_list"]}
