"""`atomic_dir`: a directory output replaced in one step. Real processes race on one path, as two sweep
points filling one cache entry do, while a reader keeps looking: no writer fails, and the reader
never finds the path missing or a directory mixing two writers' files."""

from __future__ import annotations

import multiprocessing
import os

import pytest

from tulu_cli.io import atomic_dir

ROUNDS = 150


def write(path, token: str) -> None:
    with atomic_dir(path) as tmp:
        (tmp / "first").write_text(token)
        (tmp / "second").write_text(token)


def writer(path, name: str, errors) -> None:
    try:
        for round_ in range(ROUNDS):
            write(path, f"{name}-{round_}")
    except BaseException as exc:  # noqa: BLE001 - reported to the test
        errors.put(f"{name}: {type(exc).__name__}: {exc}")


def test_replaces_a_directory_and_leaves_nothing_behind(tmp_path):
    target = tmp_path / "entry"
    write(target, "one")
    (target / "stale").write_text("from the first write")
    write(target, "two")
    assert sorted(p.name for p in target.iterdir()) == ["first", "second"]
    assert (target / "first").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry"]


def test_a_failing_block_leaves_the_old_directory(tmp_path):
    target = tmp_path / "entry"
    write(target, "kept")
    with pytest.raises(ValueError), atomic_dir(target) as tmp:
        (tmp / "first").write_text("half")
        raise ValueError("writer failed")
    assert (target / "first").read_text() == "kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry"]


def test_concurrent_writers_all_succeed_and_a_reader_never_sees_a_gap(tmp_path):
    target = tmp_path / "entry"
    write(target, "start")
    context = multiprocessing.get_context("fork")
    errors = context.Queue()
    writers = [context.Process(target=writer, args=(target, f"w{i}", errors)) for i in range(3)]
    for process in writers:
        process.start()
    looks, problems = 0, []
    while any(process.is_alive() for process in writers):
        try:
            descriptor = os.open(target, os.O_RDONLY)  # this directory, whichever writer's it is
        except FileNotFoundError:
            problems.append("missing")
            continue
        try:
            first = open(f"/proc/self/fd/{descriptor}/first").read()
            second = open(f"/proc/self/fd/{descriptor}/second").read()
        except FileNotFoundError:
            first, second = "", ""  # this directory was replaced and removed while being read
        finally:
            os.close(descriptor)
        if first and first != second:
            problems.append(f"mixed {first} / {second}")
        looks += 1
    for process in writers:
        process.join()
    reported = []
    while not errors.empty():
        reported.append(errors.get())
    assert reported == [] and all(process.exitcode == 0 for process in writers)
    assert problems == [] and looks > 0
    assert (target / "first").read_text() == (target / "second").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry"]
