"""Outputs: replaced whole on success, left as they were on an error, never replacing what the
stage did not make, never overlapping an input; killed runs' temporaries cleaned."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from videolm.codes.codebook import Codebook
from videolm.evaluation.pictures import save_gif, save_png
from videolm.io import FOLDER_MARK, OutputError, atomic_path, guard_outputs, mark_of, write_json
from videolm.model.checkpoint import Checkpoint


def write_folder(tmp, text):
    tmp.mkdir()
    (tmp / "f").write_text(text)


def test_folder_output_is_replaced_whole_and_marked(tmp_path):
    dest = tmp_path / "sub" / "out"  # the parent is created
    for text in ("old", "new"):
        with atomic_path(dest, "stage_a") as tmp:
            assert tmp == dest.with_name(f".out.tmp{os.getpid()}") and not tmp.exists()
            write_folder(tmp, text)
        assert (dest / "f").read_text() == text
    assert sorted(os.listdir(dest)) == [FOLDER_MARK, "f"] and mark_of(dest) == "stage_a"
    assert os.listdir(dest.parent) == ["out"]


def test_an_error_keeps_the_old_output_and_leaves_no_temporary(tmp_path):
    dest = tmp_path / "out"
    with atomic_path(dest, "stage_a") as tmp:
        write_folder(tmp, "old")
    with pytest.raises(RuntimeError), atomic_path(dest, "stage_a") as tmp:
        write_folder(tmp, "half")
        raise RuntimeError("interrupted")
    assert (dest / "f").read_text() == "old"
    assert os.listdir(tmp_path) == ["out"]


@pytest.mark.parametrize("make", ["folder", "file", "other_stage", "symlink"])
def test_what_the_stage_did_not_make_is_refused_and_kept(tmp_path, make):
    dest = tmp_path / "out"
    if make == "folder":
        write_folder(dest, "the user's")
    elif make == "file":
        dest.write_text("the user's")
    elif make == "other_stage":
        with atomic_path(dest, "stage_b") as tmp:
            write_folder(tmp, "the user's")
    else:
        dest.symlink_to(tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(OutputError, match=r"out: this (folder|file) is in the way of the stage_a stage's output"):
        with atomic_path(dest, "stage_a") as tmp:
            write_folder(tmp, "new")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_each_format_carries_its_stage_mark(tmp_path, codebook):
    codebook.save(tmp_path / "codebook.h5")
    Checkpoint({}, {}, codebook.digest).save(tmp_path / "model.pt")
    save_png(tmp_path / "a.png", np.zeros((4, 4), np.uint8), "evaluate")
    save_gif(tmp_path / "a.gif", [np.zeros((4, 4), np.uint8)] * 2, "evaluate")
    marks = {name: mark_of(tmp_path / name) for name in ("codebook.h5", "model.pt", "a.png", "a.gif")}
    assert marks == {"codebook.h5": "fit_codebook", "model.pt": "train", "a.png": "evaluate", "a.gif": "evaluate"}
    Codebook.load(tmp_path / "codebook.h5").save(tmp_path / "codebook.h5")  # its own output: replaced
    with pytest.raises(OutputError, match="made by the fit_codebook stage"):
        save_png(tmp_path / "codebook.h5", np.zeros((4, 4), np.uint8), "evaluate")


def test_json_files_may_be_replaced_other_files_not(tmp_path):
    write_json(tmp_path / "m.json", {"a": 1}, "train")
    write_json(tmp_path / "m.json", {"a": 2}, "evaluate")  # JSON metrics: the documented exception
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": 2}
    (tmp_path / "notes.json").write_text("not json")
    with pytest.raises(OutputError, match="notes.json"):
        write_json(tmp_path / "notes.json", {}, "train")


@pytest.mark.parametrize("output, source", [("videos", "videos"), ("videos/frames", "videos"), (".", "videos")])
def test_outputs_overlapping_inputs_are_refused(tmp_path, output, source):
    (tmp_path / "videos").mkdir()
    with pytest.raises(OutputError, match=r"paths.frames: .* overlaps the input data.dir="):
        guard_outputs("extract_frames", {"data.dir": tmp_path / source}, {"paths.frames": tmp_path / output})
    guard_outputs("extract_frames", {"data.dir": tmp_path / "videos"}, {"paths.frames": tmp_path / "frames"})


def test_temporaries_of_killed_runs_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()  # a pid that has exited
    write_folder(tmp_path / f".out.tmp{dead}", "junk of a killed run")
    live = tmp_path / f".out.tmp{os.getppid()}"  # a running process: maybe a concurrent run, kept
    write_folder(live, "busy")
    (tmp_path / ".other.tmp1").write_text("another output's: kept")
    with atomic_path(tmp_path / "out", "stage_a") as tmp:
        write_folder(tmp, "new")
    assert sorted(os.listdir(tmp_path)) == sorted([".other.tmp1", live.name, "out"])


def test_write_json_is_deterministic(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    write_json(a, {"b": 1, "a": {"y": [1, 2], "x": None}}, "s")
    write_json(b, {"a": {"x": None, "y": [1, 2]}, "b": 1}, "s")
    expected = '{\n  "a": {\n    "x": null,\n    "y": [\n      1,\n      2\n    ]\n  },\n  "b": 1\n}\n'
    assert a.read_text() == b.read_text() == expected
