"""Atomic outputs: a destination is replaced whole on success and left as it was on an error."""

from __future__ import annotations

import os

import pytest

from videolm.io import atomic_path, write_json


def write(path, text, folder):
    """`text` in the file `path`, or in the file `f` of the folder `path`."""
    if folder:
        path.mkdir()
        path = path / "f"
    path.write_text(text)


def read(path):
    return (path / "f").read_text() if path.is_dir() else path.read_text()


@pytest.mark.parametrize("folder", [False, True], ids=["file", "folder"])
def test_atomic_path_replaces_on_success(tmp_path, folder):
    dest = tmp_path / "sub" / "out"  # the parent is created
    for text in ("old", "new"):
        with atomic_path(dest) as tmp:
            assert tmp == dest.with_name(f".out.tmp{os.getpid()}") and not tmp.exists()
            write(tmp, text, folder)
            assert read(dest) == "old" if text == "new" else not dest.exists()
        assert read(dest) == text and dest.is_dir() == folder
    assert os.listdir(dest.parent) == ["out"]


@pytest.mark.parametrize("folder", [False, True], ids=["file", "folder"])
def test_atomic_path_keeps_old_content_on_error(tmp_path, folder):
    dest = tmp_path / "out"
    write(dest, "old", folder)
    with pytest.raises(RuntimeError), atomic_path(dest) as tmp:
        write(tmp, "half", folder)
        raise RuntimeError("interrupted")
    assert read(dest) == "old"
    assert os.listdir(tmp_path) == ["out"]


def test_atomic_path_clears_a_stale_temporary(tmp_path):
    """A temporary left by a killed run with the same pid must not leak into the output."""
    stale = tmp_path / f".out.tmp{os.getpid()}"
    write(stale, "junk", folder=True)
    with atomic_path(tmp_path / "out") as tmp:
        tmp.mkdir()
        (tmp / "new").write_text("new")
    assert os.listdir(tmp_path / "out") == ["new"]


def test_write_json_is_deterministic(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    write_json(a, {"b": 1, "a": {"y": [1, 2], "x": None}})
    write_json(b, {"a": {"x": None, "y": [1, 2]}, "b": 1})
    expected = '{\n  "a": {\n    "x": null,\n    "y": [\n      1,\n      2\n    ]\n  },\n  "b": 1\n}\n'
    assert a.read_text() == b.read_text() == expected
