"""The one loader of input files: every field of every row kept whatever the first row holds, each unreadable
line set aside with its file and line, strict UTF-8, byte order marks, folders of mixed files, empty files,
mistyped local paths, and rows held in Arrow rather than in Python objects."""

from __future__ import annotations

import json
import time
import tracemalloc

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from omegaconf import OmegaConf

from tests.conftest import run_tulu
from tulu_cli.curate.build import build_mix
from tulu_cli.data.sft_data import prepare_sft
from tulu_cli.data.sources import SourceError, is_local, load_source, row_dict


def chat(prompt, answer="ok"):
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]


def no_progress(description, total):
    return lambda n: None


def write_lines(path, rows):
    path.write_bytes(b"".join((row if isinstance(row, bytes) else json.dumps(row).encode()) + b"\n" for row in rows))
    return path


def rows_of(loaded):
    return [row_dict(example) for example in loaded.dataset]


def sft_mix(path):
    return {"kind": "sft", "sources": {"src": {"path": str(path), "take": 1.0}}}


# Item 2: columns from the first row only.

def test_a_field_the_first_row_lacks_is_kept_for_every_other_row(tmp_path):
    source = write_lines(tmp_path / "first_row_short.jsonl",
                         [{"id": "short"}] + [{"id": f"r{i}", "messages": chat(f"q{i}")} for i in range(3)])
    result = build_mix("m", sft_mix(source), seed=0, progress=no_progress)
    (stats,) = result.sources
    assert stats.rows_out == 3 and dict(stats.rejected) == {"missing_field": 1}
    (reject,) = result.rejects
    assert (reject["row"], reject["field"], reject["file"]) == (1, "messages", str(source))
    assert reject["raw"]["id"] == "short"


def test_a_file_that_changes_schema_part_way_keeps_all_its_rows(tmp_path):
    alpaca = [{"instruction": f"say {i}", "output": f"{i}"} for i in range(1500)]
    tulu = [{"messages": chat(f"tell {i}"), "meta": {"n": i}} for i in range(1500)]
    source = write_lines(tmp_path / "two_schemas.jsonl", alpaca + tulu)
    result = build_mix("m", sft_mix(source), seed=0, progress=no_progress)
    assert result.sources[0].rows_out == 3000 and not result.rejects


def test_fields_of_differing_types_across_rows_keep_each_rows_own_value(tmp_path):
    rows = [{"id": 1, "messages": chat("a"), "score": "high"},
            {"id": "two", "messages": [{"role": "user", "content": [{"type": "text", "text": "b"}]},
                                       {"role": "assistant", "content": "ok"}], "score": 0.5},
            {"id": 3, "messages": chat("c"), "extra": {"deep": [1, 2]}}]
    loaded = load_source(str(write_lines(tmp_path / "mixed.jsonl", rows)))
    assert rows_of(loaded) == [{**row, **{k: None for k in ("id", "messages", "score", "extra") if k not in row}}
                               for row in rows]
    # The rule for a field with no common type: each row keeps its own value, and the stage's validation
    # judges it (here the row whose `ground_truth` is a number is rejected, naming the field).
    rl_rows = [{"messages": chat("1+1"), "ground_truth": "2", "dataset": "gsm8k"},
               {"messages": chat("1+2"), "ground_truth": 3, "dataset": "gsm8k"}]
    source = write_lines(tmp_path / "rl.jsonl", rl_rows)
    result = build_mix("m", {"kind": "rlvr", "sources": {"rl": {"path": str(source), "take": 1.0}}}, 0, no_progress)
    assert [(r["row"], r["field"], r["reason"]) for r in result.rejects] == [(2, "ground_truth", "non_string_content")]


# Item 6: non-UTF-8 bytes.

def test_non_utf8_bytes_are_a_reject_with_file_line_and_offset_never_replaced(tmp_path):
    latin1 = b'{"id": "b", "messages": "caf\xe9"}'
    source = write_lines(tmp_path / "latin1.jsonl", [{"id": "a", "messages": chat("x")}, latin1,
                                                     {"id": "c", "messages": chat("y")}])
    loaded = load_source(str(source))
    assert [row["id"] for row in rows_of(loaded)] == ["a", "c"]
    (reject,) = loaded.rejects
    assert (reject.source, reject.row, reject.field, reject.reason) == (str(source), 2, "<line>", "invalid_utf8")
    offset = latin1.index(b"\xe9")
    assert f"byte {offset} " in reject.detail and "caf\\xe9" in reject.raw
    assert not any("\ufffd" in json.dumps(row, ensure_ascii=False) for row in rows_of(loaded))


def test_non_utf8_bytes_in_a_json_document_reject_that_element(tmp_path):
    source = tmp_path / "doc.json"
    source.write_bytes(b'{"version": 2, "data": [{"id": "a"}, {"id": "caf\xe9"}, 7, {"id": "d"}]}')
    loaded = load_source(str(source))
    assert [row["id"] for row in rows_of(loaded)] == ["a", "d"]
    assert [(r.row, r.reason) for r in loaded.rejects] == [(2, "invalid_utf8"), (3, "unparsable_line")]


def test_a_lone_surrogate_escape_is_a_reject_naming_the_field(tmp_path):
    source = write_lines(tmp_path / "surrogate.jsonl", [{"id": "a"}, b'{"id": "b", "m": [{"c": "x\\ud800"}]}',
                                                        b'{"id": "\\ud83d\\ude00"}'])
    loaded = load_source(str(source))
    assert [row["id"] for row in rows_of(loaded)] == ["a", "\U0001F600"]
    assert [(r.row, r.field, r.reason) for r in loaded.rejects] == [(2, "m[0].c", "invalid_unicode")]


# Item 12: byte order marks.

def test_a_utf8_byte_order_mark_keeps_the_first_row_and_is_counted(tmp_path):
    lines = tmp_path / "bom.jsonl"
    lines.write_bytes(b"\xef\xbb\xbf" + b'{"id": 1}\n{"id": 2}\n')
    loaded = load_source(str(lines))
    assert [row["id"] for row in rows_of(loaded)] == [1, 2] and not loaded.rejects
    assert loaded.counts["utf8_bom"] == 1
    document = tmp_path / "bom.json"
    document.write_bytes(b"\xef\xbb\xbf" + json.dumps([{"id": 1}, {"id": 2}]).encode())
    assert [row["id"] for row in rows_of(load_source(str(document)))] == [1, 2]
    lines_named_json = tmp_path / "bom_lines.json"
    lines_named_json.write_bytes(b"\xef\xbb\xbf" + b'{"id": 1}\n{"id": 2}\n')
    assert [row["id"] for row in rows_of(load_source(str(lines_named_json)))] == [1, 2]
    (tmp_path / "bom_sft.jsonl").write_bytes(b"\xef\xbb\xbf" + json.dumps({"messages": chat("q")}).encode() + b"\n")
    result = build_mix("m", sft_mix(tmp_path / "bom_sft.jsonl"), 0, no_progress)
    assert result.sources[0].rows_out == 1 and result.sources[0].to_json()["noticed"] == {"utf8_bom": 1}


def test_a_utf16_file_fails_naming_its_encoding(tmp_path):
    source = tmp_path / "utf16.jsonl"
    source.write_bytes('{"id": 1}\n'.encode("utf-16"))
    with pytest.raises(SourceError, match=r"utf16\.jsonl.*UTF-16 encoded.*convert it to UTF-8"):
        load_source(str(source))


# Item 11: empty files.

@pytest.mark.parametrize("content", [b"", b"\n \n"])
def test_an_empty_file_fails_naming_it_in_every_stage(tmp_path, tiny_tokenizer, content):
    source = tmp_path / "empty.jsonl"
    source.write_bytes(content)
    with pytest.raises(SourceError, match=r"'.*empty\.jsonl' holds no rows"):
        load_source(str(source))
    with pytest.raises(SourceError, match="holds no rows"):
        build_mix("m", sft_mix(source), seed=0, progress=no_progress)
    with pytest.raises(SourceError, match="holds no rows"):
        prepare_sft(OmegaConf.create({"train": str(source), "num_proc": 1}), 64, tiny_tokenizer, tmp_path)


def test_curate_fails_on_an_empty_source_naming_it(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    proc = run_tulu("curate", f"output_dir={tmp_path / 'run'}", f"datasets.sft.sources.tiny_sft.path={empty}",
                    check=False, timeout=300)
    assert proc.returncode != 0
    assert f"source '{empty}' holds no rows" in proc.stdout + proc.stderr
    assert not (tmp_path / "run" / "sft").exists()


def test_a_file_with_no_readable_row_fails_with_its_first_reject(tmp_path):
    source = write_lines(tmp_path / "junk.jsonl", [b"{oops", b"[1, 2]"])
    with pytest.raises(SourceError, match=r"no readable rows: all 2 were set aside .*junk\.jsonl row 1: unparsable_line"):
        load_source(str(source))


# Item 13: folders.

def test_a_folder_reads_jsonl_json_and_parquet_files_side_by_side(tmp_path):
    folder = tmp_path / "mixed_folder"
    folder.mkdir()
    pq.write_table(pa.table({"id": ["p1", "p2"], "messages": [chat("p1"), chat("p2")]}), folder / "a.parquet")
    write_lines(folder / "b.jsonl", [{"id": "j1", "messages": chat("j1")}, b"{bad", {"id": "j3", "source": "x"}])
    (folder / "c.json").write_text(json.dumps([{"id": "d1", "messages": chat("d1")}]))
    (folder / ".hidden.jsonl").write_text("{bad\n")
    (folder / "notes.txt").write_text("not data")
    loaded = load_source(str(folder))
    assert [row["id"] for row in rows_of(loaded)] == ["p1", "p2", "j1", "j3", "d1"]
    assert [loaded.row_file(i).rsplit("/", 1)[-1] for i in range(5)] == ["a.parquet"] * 2 + ["b.jsonl"] * 2 + ["c.json"]
    assert [loaded.row_number(i) for i in range(5)] == [1, 2, 1, 3, 1]
    assert [(r.source, r.row) for r in loaded.rejects] == [(str(folder / "b.jsonl"), 2)]
    result = build_mix("m", sft_mix(folder), seed=0, progress=no_progress)
    missing = next(r for r in result.rejects if r["reason"] == "missing_field")
    assert (missing["file"], missing["row"]) == (str(folder / "b.jsonl"), 3)


def test_a_bad_file_in_a_folder_fails_naming_that_file(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    pq.write_table(pa.table({"id": [1]}), folder / "a.parquet")
    (folder / "b.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(SourceError, match=r"'.*folder' \(file '.*b\.parquet'\)"):
        load_source(str(folder))
    (folder / "b.parquet").unlink()
    (folder / "c.json").write_text('[{"id": 1}, {"id": 2,, }]')
    with pytest.raises(SourceError, match=r"file '.*c\.json'.*row 2: invalid JSON document"):
        load_source(str(folder))


def test_a_curate_output_folder_reads_only_its_data_files(tmp_path):
    folder = tmp_path / "curated"
    (folder / "data").mkdir(parents=True)
    pq.write_table(pa.table({"id": ["a"], "messages": [chat("a")]}), folder / "data" / "train-00000-of-00001.parquet")
    (folder / "manifest.json").write_text(json.dumps({"rows": 1}))
    loaded = load_source(str(folder))
    assert [row["id"] for row in rows_of(loaded)] == ["a"] and loaded.row_file(0).endswith(".parquet")


# Item 17: a mistyped local path is not sent to the hub.

def test_a_mistyped_local_path_fails_fast_naming_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    write_lines(tmp_path / "data" / "train.jsonl", [{"id": 1}])
    start = time.monotonic()
    with pytest.raises(SourceError, match=r"'data/train': no such file or directory; did you mean 'data/train.jsonl'"):
        load_source("data/train")
    with pytest.raises(SourceError, match=r"'runs/tiny/sft': no such file or directory"):
        load_source("runs/tiny/sft")
    with pytest.raises(SourceError, match="no such file or directory"):
        load_source("my data/train")
    assert time.monotonic() - start < 5
    assert not is_local("allenai/tulu-3-sft-mixture") and not is_local("gsm8k")
    assert is_local("data/typo") and is_local("a/b/c") and is_local("C:\\data\\x") and is_local("~/x")


# Streaming and memory.

def test_a_json_document_is_read_element_by_element_across_chunk_boundaries(tmp_path, monkeypatch):
    from tulu_cli.data import row_files

    monkeypatch.setattr(row_files, "_JSON_CHUNK", 5)
    rows = [{"id": i, "n": 12345.678 * i, "s": "é\"\\ " * i, "l": [True, None, {"k": []}]} for i in range(20)]
    source = tmp_path / "doc.json"
    source.write_text(json.dumps({"meta": {"skip": [1, {"data": 2}]}, "data": rows}, ensure_ascii=False, indent=1))
    assert rows_of(load_source(str(source))) == rows
    source.write_text(json.dumps({"data": rows[:2]}))  # one line, yet a document, not one JSON Lines row
    assert rows_of(load_source(str(source))) == rows[:2]
    source.write_text(json.dumps({"data": rows[:2], "after": {"data": 1}}, indent=1))
    assert rows_of(load_source(str(source))) == rows[:2]
    source.write_text("".join(json.dumps({"id": i, "data": [i]}) + "\n" for i in range(3)))  # JSON Lines
    assert rows_of(load_source(str(source))) == [{"id": i, "data": [i]} for i in range(3)]
    source.write_text(json.dumps(rows[:2], indent=1) + "\n" + json.dumps(rows[:2]))
    with pytest.raises(SourceError, match="more follows the end of the document"):
        load_source(str(source))
    source.write_text(json.dumps({"no_data": []}, indent=1))
    with pytest.raises(SourceError, match="must be a list of rows or an object with a `data` list"):
        load_source(str(source))


def test_deep_nesting_is_kept_as_json_or_set_aside(tmp_path):
    deep = 1
    for _ in range(60):
        deep = [deep]
    source = write_lines(tmp_path / "deep.jsonl", [{"id": 1, "v": deep}, b'{"id": 2, "v": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"])
    loaded = load_source(str(source))
    assert rows_of(loaded) == [{"id": 1, "v": deep}]
    assert [(r.row, r.reason) for r in loaded.rejects] == [(2, "unparsable_line")]


def test_keys_that_are_data_do_not_become_thousands_of_fields(tmp_path):
    nested = write_lines(tmp_path / "nested_ids.jsonl", [{"id": i, "scores": {f"user{i}": i}} for i in range(2000)])
    start = time.monotonic()
    loaded = load_source(str(nested))
    assert time.monotonic() - start < 30
    assert rows_of(loaded)[1999] == {"id": 1999, "scores": {"user1999": 1999}}
    flat = write_lines(tmp_path / "flat_ids.jsonl", [{"id": i, f"user{i}": i} for i in range(2000)])
    with pytest.raises(SourceError, match=r"flat_ids\.jsonl.*more than 1024 distinct fields"):
        load_source(str(flat))
    odd = write_lines(tmp_path / "odd_names.jsonl", [{"_json:x": "not json", "": 1, "big": 2**70}, {"big": 1}])
    assert rows_of(load_source(str(odd))) == [{"_json:x": "not json", "": 1, "big": 2**70},
                                              {"_json:x": None, "": None, "big": 1}]


def test_rows_go_to_arrow_in_batches_not_into_python_memory(tmp_path):
    rows = [{"id": f"row-{i}", "messages": chat("question " * 20 + str(i), "answer " * 20)} for i in range(20_000)]
    source = write_lines(tmp_path / "big.jsonl", rows)
    tracemalloc.start()
    try:
        with source.open(encoding="utf-8") as handle:
            as_objects = [json.loads(line) for line in handle]
        _, list_peak = tracemalloc.get_traced_memory()
        del as_objects
        tracemalloc.reset_peak()
        loaded = load_source(str(source))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(loaded.dataset) == 20_000 and loaded.dataset.cache_files
    # Holding the rows as Python objects (what Dataset.from_list needs) takes far more than the one batch
    # at a time the loader holds.
    assert peak < list_peak / 5, (peak, list_peak)
    assert row_dict(loaded.dataset[12_345]) == rows[12_345] and loaded.row_number(12_345) == 12_346


def test_rejects_are_kept_on_disk_not_in_python_memory(tmp_path):
    # A file of mostly bad lines (a wrong export, a truncated dump): every bad line is a reject with its
    # raw text, and they are counted and read back from disk, not held as a list.
    bad = "{not json " + "x" * 400
    source = tmp_path / "mostly_bad.jsonl"
    source.write_text("".join((json.dumps({"id": i}) if i % 1000 == 0 else bad) + "\n" for i in range(20_000)))
    load_source(str(write_lines(tmp_path / "warm.jsonl", [{"id": 1}])))  # the loader's imports, outside the count
    tracemalloc.start()
    try:
        loaded = load_source(str(source))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(loaded.dataset) == 20 and len(loaded.rejects) == 19_980 and not isinstance(loaded.rejects, list)
    # Their raw text alone is ~8 MB (held as rejects, ~60 MB at the peak); the loader holds a batch of rows.
    assert peak < 2_000_000, peak
    first, last = loaded.rejects[0], list(loaded.rejects)[-1]
    assert (first.source, first.row, first.reason) == (str(source), 2, "unparsable_line") and last.row == 20_000
    again = load_source(str(source))  # from the cache: the same rejects
    assert len(again.rejects) == 19_980 and again.rejects[5] == loaded.rejects[5]


def test_a_changed_file_is_read_again_not_taken_from_the_cache(tmp_path):
    source = write_lines(tmp_path / "changing.jsonl", [{"id": 1}])
    assert rows_of(load_source(str(source))) == [{"id": 1}]
    write_lines(source, [{"id": 2}, {"id": 3}])
    assert rows_of(load_source(str(source))) == [{"id": 2}, {"id": 3}]
    assert rows_of(load_source(str(source), max_rows=1)) == [{"id": 2}]


def test_later_rows_that_fit_the_first_rows_types_are_written_in_one_pass(tmp_path, monkeypatch):
    from tulu_cli.data import arrow_rows

    def second_pass(*args):
        raise AssertionError("the file was read twice")

    monkeypatch.setattr(arrow_rows, "_write_with_types", second_pass)
    first = [{"id": i, "messages": chat(f"q{i}"), "note": "n"} for i in range(1000)]
    later = [{"id": 1000, "messages": [], "note": None}, {"id": 1001, "messages": None}]
    source = write_lines(tmp_path / "narrow_later.jsonl", first + later)
    loaded = load_source(str(source))
    assert loaded.dataset.column_names == ["id", "messages", "note"]
    assert rows_of(loaded)[998:] == first[998:] + [later[0], {**later[1], "note": None}]


def _load_in_process(path: str) -> tuple[list[dict], list[tuple[int, str]]]:
    loaded = load_source(path)
    return rows_of(loaded), [(r.row, r.reason) for r in loaded.rejects]


def test_ranks_that_load_one_new_file_at_once_all_get_every_row(tmp_path):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    rows = [{"id": i, "messages": chat(f"q{i}")} for i in range(5000)]
    source = write_lines(tmp_path / "shared.jsonl", rows[:2500] + [b"{bad"] + rows[2500:])
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(pool.map(_load_in_process, [str(source)] * 2))
    assert all(result == (rows, [(2501, "unparsable_line")]) for result in results)


def test_tokenizer_training_files_go_through_the_loader(tmp_path):
    from tulu_cli.modeling import load_tokenizer

    source = write_lines(tmp_path / "tok.jsonl", [{"messages": chat("hello there")}, b'{"messages": "\xff"}'])
    with pytest.raises(ValueError, match=r"tok\.jsonl' row 2: invalid_utf8"):
        load_tokenizer({"train_tokenizer": {"files": [str(source)], "vocab_size": 300}}, tmp_path)
