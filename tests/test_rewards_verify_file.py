"""`tulu verify` end to end on a JSONL file with good and malformed rows."""

from __future__ import annotations

import json
import re

from typer.testing import CliRunner

from tulu_cli.cli import app
from tulu_cli.rewards import register
from tulu_cli.rewards.registry import VerifyOptions
from tulu_cli.rewards.verify_file import default_output_path


# At module level, so the worker processes import it too.
@register("test_file_c_regex_hang")
def c_regex_hang(response: str, ground_truth: str, options: VerifyOptions) -> float:
    return float(re.match(r"(a|aa)+c", "a" * 60) is not None)

LINES = [
    json.dumps({"dataset": "gsm8k", "ground_truth": "1234", "response": "That is 1,234 in total."}),
    json.dumps({"dataset": "MATH", "ground_truth": "\\frac{1}{2}", "response": "So $\\boxed{\\dfrac12}$."}),
    json.dumps(
        {
            "dataset": "ifeval",
            "ground_truth": json.dumps(
                {"instruction_id_list": ["punctuation:no_comma", "startend:quotation"], "kwargs": [{}, {}]}
            ),
            "response": '"no commas here"',
            "messages": [{"role": "user", "content": "Say something."}],
        }
    ),
    "{this is not json",
    json.dumps({"dataset": "gsm8k", "ground_truth": "3"}),
    json.dumps({"dataset": "poetry", "ground_truth": "3", "response": "3"}),
    json.dumps({"dataset": "ifeval", "ground_truth": "{broken", "response": "x"}),
    "",
    json.dumps({"dataset": "gsm8k", "ground_truth": "5", "response": "I think 4"}),
]


def test_verify_command_end_to_end(tmp_path):
    source = tmp_path / "rollouts.jsonl"
    source.write_text("\n".join(LINES) + "\n")
    out = tmp_path / "scored.jsonl"
    result = CliRunner().invoke(app, ["verify", str(source), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["verified"] for row in rows] == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert [("error" in row) for row in rows] == [False, False, False, True, True, True, True, False]
    assert rows[3]["error"].startswith("row 4:") and "JSON" in rows[3]["error"]
    assert rows[4]["error"].startswith("row 5:") and "response" in rows[4]["error"]
    assert rows[5]["error"].startswith("row 6:") and "dataset" in rows[5]["error"]
    assert rows[6]["error"].startswith("row 7:") and "ground_truth" in rows[6]["error"]
    assert rows[0]["response"] == "That is 1,234 in total." and rows[2]["messages"][0]["role"] == "user"
    assert "gsm8k" in result.output and "ifeval" in result.output
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left behind


def test_default_output_path_and_loose(tmp_path):
    source = tmp_path / "in.jsonl"
    truth = json.dumps({"instruction_id_list": ["startend:quotation"], "kwargs": [{}]})
    source.write_text(
        json.dumps({"dataset": "ifeval", "ground_truth": truth, "response": 'Sure:\n"quoted"'}) + "\n"
    )
    assert default_output_path(source) == tmp_path / "in.verified.jsonl"
    assert CliRunner().invoke(app, ["verify", str(source)]).exit_code == 0
    assert json.loads((tmp_path / "in.verified.jsonl").read_text())["verified"] == 0.0
    assert CliRunner().invoke(app, ["verify", str(source), "--loose"]).exit_code == 0
    assert json.loads((tmp_path / "in.verified.jsonl").read_text())["verified"] == 1.0


def test_missing_input_file_is_an_error(tmp_path):
    result = CliRunner().invoke(app, ["verify", str(tmp_path / "absent.jsonl")])
    assert result.exit_code != 0


def test_a_hostile_file_gets_every_row_written_within_the_limit(tmp_path, monkeypatch):
    monkeypatch.setenv("TULU_PROGRESS_EVERY_S", "0")
    good = json.dumps({"dataset": "gsm8k", "ground_truth": "4", "response": "so 4"}).encode()
    lines = [
        b"\xef\xbb\xbf" + good,  # a byte order mark before the first row
        json.dumps({"dataset": "test_file_c_regex_hang", "ground_truth": "x", "response": "y"}).encode(),
        b'{"dataset": "gsm8k", "ground_truth": "4", "response": "caf\xe9 4"}',  # Latin-1, not UTF-8
        b"[" * 100_000 + b"]" * 100_000,
        json.dumps({"dataset": "ifeval", "ground_truth": "[" * 50_000 + "]" * 50_000, "response": "x"}).encode(),
        json.dumps({"dataset": "math", "ground_truth": "2", "response": "\\boxed{" * 20_000}).encode(),
        good,
    ]
    source = tmp_path / "hostile.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "scored.jsonl"
    result = CliRunner().invoke(app, ["verify", str(source), "--out", str(out), "--timeout", "1", "--workers", "2"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [row["verified"] for row in rows] == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    assert [row.get("error", "")[:6] for row in rows] == ["", "row 2:", "row 3:", "row 4:", "row 5:", "", ""]
    assert "timed out after 1s" in rows[1]["error"]
    assert "UTF-8" in rows[2]["error"] and "nested too deeply" in rows[3]["error"]
    assert "ground_truth" in rows[4]["error"]
    assert re.search(r"7 rows in [\d.]+s \([\d,]+ rows/s\), 4 with errors, 1 timed out", result.output)
    assert re.search(r"verify: \d+/7 rows", result.output)  # progress lines outside a terminal
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def _shaped_lines() -> list[str]:
    """Rows of every shape the output is made from: appended to (after a comma, or to an empty object),
    re-serialised (fields already there, not an object, not JSON), over several chunks of two workers."""
    language = json.dumps({"func_name": "validate_response_language", "language": "en"})
    ifeval = json.dumps({"instruction_id_list": ["language:response_language", "change_case:english_capital"],
                         "kwargs": [{"language": "de"}, {}]})  # fmt: skip
    shapes = [
        json.dumps({"dataset": "ifeval", "ground_truth": language, "response": "The river runs by the old mill."}),
        json.dumps({"dataset": "ifeval", "ground_truth": ifeval, "response": "DER FLUSS FLIESST AN DER MÜHLE VORBEI."}),
        json.dumps({"dataset": "gsm8k", "ground_truth": "7", "response": "so 7"}, ensure_ascii=False) + "   ",
        json.dumps({"dataset": "gsm8k", "ground_truth": "7", "response": "sept — 7 €"}, ensure_ascii=False),
        "{}",
        json.dumps({"dataset": "gsm8k", "ground_truth": "7", "response": "7", "verified": 0.5}),
        json.dumps({"dataset": "gsm8k", "ground_truth": "7", "response": "7", "error": "old"}),
        json.dumps(["gsm8k", "7"]),
        '{"dataset": "gsm8k", "response": "a\rb"}',
        # Re-serialised with a lone surrogate escape, which UTF-8 cannot encode as a character.
        '{"dataset": "gsm8k", "ground_truth": "7", "response": "7 \\ud800", "verified": 0.5}',
    ]
    return [shapes[index % len(shapes)] for index in range(300)]


def test_lines_written_are_the_lines_scored_in_process(tmp_path):
    """The parent makes most output lines from a worker's verdict and its own copy of the line: the file
    is byte for byte what scoring every line in this process gives."""
    from tulu_cli.rewards.verify_file import score_line, verify_command

    lines = _shaped_lines()
    source, out = tmp_path / "shapes.jsonl", tmp_path / "shapes.verified.jsonl"
    source.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
    assert verify_command(source, out, loose=False, workers=2) == 0
    expected = [score_line(number, text, loose=False, timeout_s=5.0)[4] for number, text in enumerate(lines, 1)]
    assert out.read_text(encoding="utf-8").splitlines() == expected
    rows = [json.loads(line) for line in expected]
    assert [row["verified"] for row in rows[:5]] == [1.0, 0.5, 1.0, 1.0, 0.0]
    assert rows[4] == {"verified": 0.0, "error": "row 5: missing field 'dataset'"}
    assert rows[9]["response"] == "7 \ud800" and rows[9]["verified"] == 1.0
