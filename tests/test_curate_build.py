"""Building a mix from local files: rejects per reason with file/row/field, de-dup, atomic output, hub path."""

from __future__ import annotations

import json

import pytest

from tulu_cli.curate.build import build_mix
from tulu_cli.curate.dataset_dir import read_manifest, write_dataset
from tulu_cli.data.sources import SourceError, _load_hub, load_source


def no_progress(description, total):
    return lambda n: None


def chat(prompt, answer="ok"):
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]


@pytest.fixture
def messy_jsonl(tmp_path):
    lines = [
        json.dumps({"id": "a", "messages": chat("one")}),
        json.dumps({"id": "b", "messages": chat("two")}),
        "{not json",
        json.dumps({"id": "c", "messages": [{"role": "wizard", "content": "x"}]}),
        json.dumps({"id": "d", "messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "y"}]}),
        json.dumps({"id": "e", "messages": [{"role": "assistant", "content": "y"}, {"role": "user", "content": "x"}]}),
        json.dumps({"id": "f", "messages": [{"role": "user", "content": ["list"]}, {"role": "assistant", "content": "y"}]}),
        json.dumps({"id": "g"}),
        json.dumps({"id": "a2", "messages": chat("one")}),
    ]
    path = tmp_path / "messy.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_bad_rows_are_counted_and_set_aside_with_file_row_field(messy_jsonl, tmp_path):
    sharegpt = tmp_path / "sharegpt.json"
    sharegpt.write_text(json.dumps([{"conversations": [{"from": "human", "value": "two"}, {"from": "gpt", "value": "ok"}]},
                                    {"conversations": [{"from": "human", "value": "three"}, {"from": "gpt", "value": "ok"}]}]))
    mix = {"kind": "sft", "sources": {"messy": {"path": str(messy_jsonl), "take": 1.0},
                                      "share": {"path": str(sharegpt), "take": 1.0}}}
    result = build_mix("m", mix, seed=0, progress=no_progress)
    messy, share = result.sources
    assert messy.rows_read == 9 and messy.rows_out == 2 and messy.duplicates == 1
    assert dict(messy.rejected) == {"unparsable_line": 1, "unknown_role": 1, "empty_content": 1, "turn_order": 1,
                                    "non_string_content": 1, "missing_field": 1}
    assert share.duplicates == 1 and share.rows_out == 1  # "two" already came from the first source
    by_reason = {r["reason"]: r for r in result.rejects if r["source"] == "messy"}
    assert by_reason["unparsable_line"]["row"] == 3 and by_reason["unparsable_line"]["file"] == str(messy_jsonl)
    assert (by_reason["unknown_role"]["row"], by_reason["unknown_role"]["field"]) == (4, "messages[0].role")
    assert by_reason["missing_field"]["row"] == 8
    assert by_reason["duplicate"]["detail"] == "same content as source 'messy' row 1"
    share_dup = next(r for r in result.rejects if r["source"] == "share")
    assert (share_dup["reason"], share_dup["row"]) == ("duplicate", 1)
    assert share_dup["detail"] == "same content as source 'messy' row 2"
    assert sorted(result.table.column("id").to_pylist()) == ["a", "b", "share-2"]
    assert result.counts()["rows_out"] == 3 and result.counts()["rows_in"] == 11


def test_preference_pair_with_different_prompts_is_rejected(tmp_path):
    path = tmp_path / "prefs.jsonl"
    good = {"prompt": "Q", "chosen": chat("Q", "good"), "rejected": chat("Q", "bad")}
    bad = {"prompt": "Q", "chosen": chat("Q", "good"), "rejected": chat("Another Q", "bad")}
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    result = build_mix("p", {"kind": "preference", "sources": {"p": {"path": str(path)}}}, 0, no_progress)
    assert result.table.num_rows == 1
    assert [(r["reason"], r["row"], r["field"]) for r in result.rejects] == [("prompt_mismatch", 2, "rejected")]


def test_unreadable_source_fails_with_its_name(tmp_path):
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet at all")
    for path in (broken, tmp_path / "missing.jsonl"):
        with pytest.raises(SourceError, match=str(path.name)):
            build_mix("m", {"kind": "sft", "sources": {"s": {"path": str(path)}}}, 0, no_progress)


class Unprintable:
    def __str__(self):
        raise RuntimeError("interrupted while writing the manifest")


def test_output_is_atomic_and_readable(messy_jsonl, tmp_path):
    result = build_mix("m", {"kind": "sft", "sources": {"s": {"path": str(messy_jsonl)}}}, 0, no_progress)
    out = tmp_path / "out" / "m"
    manifest = write_dataset(out, result.table, {"name": "m"}, rows_per_file=1)
    assert [f["rows"] for f in manifest["files"]] == [1, 1]
    assert read_manifest(out)["content_sha256"] == manifest["content_sha256"]
    assert len(load_source(str(out)).dataset) == 2
    # A failure while writing (here: in the manifest, the last step) leaves the previous output untouched
    # and no partial directory behind; a fresh name is never created.
    for target in (out, tmp_path / "out" / "fresh"):
        with pytest.raises(RuntimeError, match="interrupted"):
            write_dataset(target, result.table.slice(0, 1), {"name": Unprintable()})
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["m"]
    assert read_manifest(out)["rows"] == 2


def test_hub_loader_on_a_local_dataset_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    folder = tmp_path / "hub_like"
    folder.mkdir()
    (folder / "train.jsonl").write_text("".join(json.dumps({"id": str(i), "messages": chat(f"q{i}")}) + "\n"
                                                for i in range(3)))
    loaded = _load_hub(str(folder), "train", None, None)
    assert len(loaded.dataset) == 3 and loaded.dataset[0]["messages"][0]["content"] == "q0"


def test_a_mix_selects_the_rows_the_reference_mixer_selects(tmp_path):
    import datasets

    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"id": f"r{i}", "messages": chat(f"prompt {i}")}) + "\n" for i in range(200)))
    mix = {"kind": "sft", "shuffle": False, "sources": {"s": {"path": str(path), "rows": 25}}}
    result = build_mix("m", mix, seed=42, progress=no_progress)
    reference = datasets.load_dataset("json", data_files=str(path), split="train").shuffle(seed=42)
    assert result.table.column("id").to_pylist() == reference.select(range(25))["id"]
    # a bare 1 among numbers at most 1 is every row, as in the reference
    whole = build_mix("w", {"kind": "sft", "shuffle": False, "sources": {str(path): 1}}, seed=42, progress=no_progress)
    assert whole.table.column("id").to_pylist() == reference["id"]
