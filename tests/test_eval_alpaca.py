"""AlpacaEval 2 end to end on a handful of tiny instructions: the tiny model answers, a judge on a real
HTTP server (127.0.0.1) answers with log-probs, and the win rate and length-controlled win rate are
checked against alpaca_eval's own code (its output switching, prompt building, log-prob parser, win rate
and GLM) run on the same outputs and the same judge; a run whose judge fails midway resumes without
generating again or resending a finished judge call."""

from __future__ import annotations

import json
import math
import re
import sys
import types

import pytest

from tests.openai_chat_server import TinyChatServer
from tulu_cli.eval.alpaca_eval import judge_template
from tulu_cli.eval.models import EvalModel
from tulu_cli.eval.tasks import parse_task
from tulu_cli.stages.evaluate import run_task

INSTRUCTIONS = [
    ("Add 3 and 4.", "3 + 4 = 7. The answer is 7."),
    ("Name a colour.", "Blue."),
    ("Write a sentence about the sea.", "The sea stretches to the horizon, grey and restless under the clouds."),
    ("What is 10 minus 2?", "10 - 2 = 8, so the answer is 8, which you can check by adding 2 back to 8."),
    ("Say hello.", "Hello!"),
    ("List two fruits.", "Apple and pear."),
    ("Count to five.", "1, 2, 3, 4, 5."),
]
OUTPUT_PATTERN = re.compile(r'"model_identifier": "(m|M)",\n\s*"output": """(.*?)"""\n', re.S)


def length_judge(messages: list[dict]) -> list[tuple[str, float]]:
    """Prefers the longer output, with a pull toward the one shown first (so the order matters)."""
    outputs = dict(OUTPUT_PATTERN.findall(messages[-1]["content"]))
    first = 1 / (1 + math.exp(-((len(outputs["m"]) - len(outputs["M"])) / 12 + 0.4)))
    return [("m", math.log(first)), ("M", math.log(1 - first)), ("The", -9.0)]


def import_alpaca_eval():
    """alpaca_eval 0.6.6 imports `pkg_resources` (gone from setuptools 81+) for version checks only."""
    if "pkg_resources" not in sys.modules:
        try:
            import pkg_resources  # noqa: F401
        except ImportError:
            from packaging.version import parse

            sys.modules["pkg_resources"] = types.SimpleNamespace(parse_version=parse)
    return pytest.importorskip("alpaca_eval")


def write_glm_data(path, count: int) -> None:
    """A df_gamed.csv of alpaca_eval's shape for `count` instructions: two gamed baselines per instruction."""
    rows = ["model,index,preference,std_delta_len,instruction_difficulty,not_gamed_baseline"]
    for baseline, (bias, sign) in {"gpt4_1106_preview_verbose": (0.7, 1), "gpt4_1106_preview_concise": (0.3, -1)}.items():
        for index in range(count):
            difficulty = math.sin(index + 1)
            preference = min(0.98, max(0.02, bias + 0.15 * math.cos(3 * index)))
            rows.append(f"{baseline},{index},{preference},{sign * (0.5 + 0.2 * index)},{difficulty},False")
    path.write_text("\n".join(rows) + "\n")


def alpaca_inputs(tmp_path) -> tuple[dict, dict]:
    """The task's settings (judge endpoint left to fill) over local data files, and the resolved run config."""
    reference = tmp_path / "alpaca_eval_gpt4_baseline.json"
    reference.write_text(json.dumps([{"instruction": i, "output": o, "generator": "gpt4_1106_preview",
                                      "dataset": "tiny"} for i, o in INSTRUCTIONS]))
    glm_data = tmp_path / "df_gamed.csv"
    write_glm_data(glm_data, len(INSTRUCTIONS))
    settings = {"type": "alpaca_eval", "metric": "length_controlled_winrate", "chat_template": "tulu",
                "max_new_tokens": 12, "data": {"path": str(reference)}, "glm_data": {"path": str(glm_data)}}
    resolved = {"generation": {"backend": "hf", "batch_size": 4, "max_new_tokens": 12, "temperature": 0.0,
                               "top_p": 1.0, "seed": 0}, "seed": 0}
    return settings, resolved


def tiny_eval_model(tiny_dir, resolved: dict, tmp_path) -> EvalModel:
    return EvalModel({"path": str(tiny_dir), "chat_template": "tulu", "dtype": "float32",
                      "attn_implementation": "sdpa"}, resolved["generation"], tmp_path, seed=0)


def test_alpaca_eval_matches_alpaca_evals_own_pipeline(tiny_dir, tiny_model_factory, tiny_tokenizer, tmp_path):
    alpaca_eval = import_alpaca_eval()
    from alpaca_eval import processors, utils
    from alpaca_eval.completion_parsers import logprob_parser
    from alpaca_eval.metrics import get_winrate, glm_winrate

    settings, resolved = alpaca_inputs(tmp_path)
    glm_data = settings["glm_data"]["path"]
    with TinyChatServer(tiny_model_factory(seed=2), tiny_tokenizer, aspects=[]) as server:
        server.logprob_judge = length_judge
        spec = parse_task("alpaca_eval", {**settings, "judge": {"base_url": server.base_url, "model": "tiny-judge",
                                                                 "concurrency": 3, "max_retries": 0}})
        model = tiny_eval_model(tiny_dir, resolved, tmp_path)
        result, predictions, rejects = run_task(spec, model, resolved, tmp_path / "work")
        served = [body["messages"] for body in server.served]
    assert result.status == "ok", result.detail
    assert (result.n, rejects, len(served)) == (len(INSTRUCTIONS), [], len(INSTRUCTIONS))
    outputs = [row["output"] for row in predictions]
    assert all(output != ref for output, (_, ref) in zip(outputs, INSTRUCTIONS, strict=True))

    # alpaca_eval's annotator steps on the same outputs: switch the order, build the prompts, parse the judge
    import pandas as pd

    frame = pd.DataFrame({"instruction": [i for i, _ in INSTRUCTIONS], "output_1": [o for _, o in INSTRUCTIONS],
                          "output_2": outputs})
    switcher = processors.RandomSwitchTwoColumnsProcessor(
        two_columns_to_switch=["output_1", "output_2"], random_seed_columns=["instruction"],
        fn_replace_if_switch=lambda df: df.assign(preference=3 - df["preference"]) if "preference" in df else df,
        _switch_column="is_switched_outputs", seed=123)
    switched = switcher.preprocess(frame)
    prompts, _ = utils.make_prompts(switched, judge_template())
    expected_messages = [[{"role": m["role"], "content": m["content"]} for m in utils.prompt_to_chatml(prompt)]
                         for prompt in prompts]
    assert sorted(map(json.dumps, served)) == sorted(map(json.dumps, expected_messages))
    assert switched["is_switched_outputs"].any() and not switched["is_switched_outputs"].all()
    switched["preference"] = [
        logprob_parser({"logprobs": {"content": [{"top_logprobs": [{"token": t, "logprob": lp} for t, lp in
                                                                     length_judge(messages)]}]}},
                       numerator_token="m", denominator_tokens=["m", "M"], is_binarize=False)[0]
        for messages in expected_messages]
    annotations = switcher.postprocess(switched)
    assert [row["preference"] for row in predictions] == pytest.approx(list(annotations["preference"]), abs=1e-9)

    annotations["annotator"] = "weighted_alpaca_eval_gpt4_turbo"
    annotations["generator_1"], annotations["generator_2"] = "gpt4_1106_preview", "tiny"
    glm_winrate.hf_hub_download = lambda **kwargs: str(glm_data)  # the hub file, read locally
    expected = {**get_winrate(annotations),
                **glm_winrate.get_length_controlled_winrate(annotations, save_weights_dir=None)}
    assert alpaca_eval.__version__ == "0.6.6"
    for name in ("win_rate", "discrete_win_rate", "standard_error", "length_controlled_winrate",
                 "lc_standard_error"):
        assert 100 * result.metrics[name] == pytest.approx(float(expected[name]), abs=1e-6), name
    assert result.value == result.metrics["length_controlled_winrate"] and result.metrics["judged"] == 1.0
    # the length control moves the score: this judge rewards length
    assert abs(result.metrics["length_controlled_winrate"] - result.metrics["win_rate"]) > 0.01


def test_failed_judging_resumes_without_regenerating_or_resending(tiny_dir, tiny_model_factory, tiny_tokenizer,
                                                                  tmp_path):
    settings, resolved = alpaca_inputs(tmp_path)

    def evaluate(server, work, judge_model="tiny-judge"):
        spec = parse_task("alpaca_eval", {**settings, "judge": {"base_url": server.base_url, "model": judge_model,
                                                                 "concurrency": 2, "max_retries": 0}})
        model = tiny_eval_model(tiny_dir, resolved, tmp_path)
        result, predictions, _ = run_task(spec, model, resolved, work)
        return result, predictions, model

    with TinyChatServer(tiny_model_factory(seed=2), tiny_tokenizer, aspects=[]) as server:
        server.logprob_judge = length_judge
        whole, whole_predictions, _ = evaluate(server, tmp_path / "whole")
        assert whole.status == "ok", whole.detail
        assert len(server.served) == len(INSTRUCTIONS)
        server.served.clear()

        server.fail_after = 3  # three judge calls answered, then the endpoint breaks
        failed, _, _ = evaluate(server, tmp_path / "work")
        assert failed.status == "error" and "HTTP 500" in failed.detail
        first = [body["messages"] for body in server.served]
        assert len(first) == 3
        (journal,) = (tmp_path / "work").glob("judgements/*/shard-00000.calls.jsonl")
        assert len(journal.read_text().splitlines()) == 3
        (generations,) = (tmp_path / "work").glob("generations/*/shard-00000.jsonl")
        generated_at = generations.stat().st_mtime_ns

        server.fail_after = None
        resumed, predictions, model = evaluate(server, tmp_path / "work")
        assert resumed.status == "ok", resumed.detail
        rest = [body["messages"] for body in server.served[3:]]
        assert len(rest) == len(INSTRUCTIONS) - 3
        assert not {json.dumps(m) for m in rest} & {json.dumps(m) for m in first}
        # the outputs were read back, not generated again: the model was never loaded
        assert generations.stat().st_mtime_ns == generated_at and model._model is None
        assert not journal.exists()  # folded into the finished shard
        assert resumed.metrics == whole.metrics
        assert [row["preference"] for row in predictions] == [row["preference"] for row in whole_predictions]

        evaluate(server, tmp_path / "work")  # finished: nothing is sent again
        assert len(server.served) == len(INSTRUCTIONS)
        other_judge, _, _ = evaluate(server, tmp_path / "work", judge_model="tiny-judge-2")
        assert other_judge.status == "ok" and len(server.served) == 2 * len(INSTRUCTIONS)


def test_dry_run_status_says_what_alpaca_eval_needs(tmp_path, monkeypatch):
    from tulu_cli.eval.readiness import task_status

    settings = {"type": "alpaca_eval", "metric": "length_controlled_winrate",
                "data": {"path": "tatsu-lab/alpaca_eval", "file": "alpaca_eval_gpt4_baseline.json"},
                "glm_data": {"path": "tatsu-lab/alpaca_eval", "file": "df_gamed.csv"},
                "judge": {"base_url": None, "model": "gpt-4-1106-preview", "api_key_env": "TINY_JUDGE_KEY"}}
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    monkeypatch.delenv("TINY_JUDGE_KEY", raising=False)
    status = task_status(parse_task("alpaca_eval", settings), {})
    assert status == ("runnable; needs: hub file tatsu-lab/alpaca_eval/alpaca_eval_gpt4_baseline.json (network; "
                      "then cached), hub file tatsu-lab/alpaca_eval/df_gamed.csv (network; then cached), a judge "
                      "endpoint: set tasks.alpaca_eval.judge.base_url and .model (any OpenAI-compatible server that "
                      "returns log-probs)")
    reference, glm = tmp_path / "reference.json", tmp_path / "df_gamed.csv"
    reference.write_text("[]")
    glm.write_text("")
    local = {**settings, "data": {"path": str(reference)}, "glm_data": {"path": str(glm)},
             "judge": {**settings["judge"], "base_url": "http://127.0.0.1:9/v1"}}
    assert task_status(parse_task("alpaca_eval", local), {}) == (
        "runnable; needs: judge endpoint http://127.0.0.1:9/v1 serving gpt-4-1106-preview with log-probs, "
        "API key in $TINY_JUDGE_KEY (not set here)")
    monkeypatch.setenv("TINY_JUDGE_KEY", "k")
    assert task_status(parse_task("alpaca_eval", local), {}).endswith("API key in $TINY_JUDGE_KEY")
    missing = {**local, "glm_data": {"path": str(tmp_path / "nowhere.csv")}}
    assert task_status(parse_task("alpaca_eval", missing), {}) == (
        f"not runnable: tasks.alpaca_eval.glm_data: file {tmp_path / 'nowhere.csv'} does not exist")
