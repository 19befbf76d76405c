"""Faults injected into every stage, in the manner of SQLite's I/O-error tests: a write refused
part-way through the stage's largest output (a file-size limit, `RLIMIT_FSIZE`, with SIGXFSZ
ignored, so the write fails with EFBIG as a full disk fails it with ENOSPC), and a full disk
(a 16 KiB tmpfs, where this machine lets the tests mount one). Each time: one line naming the
stage, the output and the cause, exit status 2, no temporary left, the previous outputs
untouched; then the stage run again with room gives the same bytes as before."""

from __future__ import annotations

import os
import re
import resource
import runpy
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_pipeline import TINY, deep_update, write_clip

ROOT = Path(__file__).resolve().parents[1]
# Every stage, in order, with its outputs (relative to the workspace) under TINY's params.
STAGES = {
    "samples": ["data/samples"],
    "extract_frames": ["data/frames", "metrics/frames.json"],
    "sample_patches": ["data/patches.h5"],
    "fit_codebook": ["data/codebook.h5", "metrics/codebook.json"],
    "encode": ["data/codes", "metrics/encode.json"],
    "train": ["models/model.pt", "metrics/train.json"],
    "train_decoder": ["models/decoder.pt", "metrics/decoder.json"],
    "evaluate": ["metrics/eval.json", "plots"],
}
ONE_PROCESS = {"workers": 1, "train": {"threads": 1}, "decoder": {"threads": 1}, "eval": {"threads": 1}}


def files(workspace: Path, outputs: list[str]) -> dict[str, bytes]:
    """Every file of the outputs, by path."""
    found = {}
    for out in outputs:
        path = workspace / out
        for file in ([path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())):
            found[file.relative_to(workspace).as_posix()] = file.read_bytes()
    return found


def temporaries(workspace: Path) -> list[str]:
    return sorted(p.name for p in workspace.rglob("*") if re.search(r"\.tmp\d+$", p.name))


def run_here(workspace: Path, stage: str, *overrides: str) -> None:
    """The stage in this process (torch is loaded already): fast, for the runs that must succeed."""
    main = runpy.run_path(str(ROOT / f"stages/{stage}.py"))["main"]
    from videolm.config import load_params

    cwd = Path.cwd()
    os.chdir(workspace)
    try:
        main(load_params(".", list(overrides)))
    finally:
        os.chdir(cwd)


def run_limited(workspace: Path, stage: str, limit: int, *overrides: str) -> subprocess.CompletedProcess:
    """The stage in a process of its own whose files may not grow past `limit` bytes."""

    def limit_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run([sys.executable, str(ROOT / f"stages/{stage}.py"), *overrides], cwd=workspace,
                          capture_output=True, text=True, preexec_fn=limit_files, timeout=300)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """Two short clips and the tiny params, every stage run once (in this process)."""
    path = tmp_path_factory.mktemp("faults")
    params = deep_update(deep_update(yaml.safe_load((ROOT / "params.yaml").read_text()), TINY), ONE_PROCESS)
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (path / "data/synth").mkdir(parents=True)
    write_clip(path / "data/synth/slide.mp4")
    write_clip(path / "data/synth/slow.mp4", n_frames=30, shift=1, seed=1)
    for stage in STAGES:
        run_here(path, stage)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("stage", list(STAGES))
def test_a_write_refused_midway_is_one_line_and_loses_nothing(workspace, stage):
    before = files(workspace, STAGES[stage])
    largest = max(len(data) for data in before.values()) if before else 0
    limit = max(largest // 2, 1)  # part-way through the largest file; the first byte where all are empty
    result = run_limited(workspace, stage, limit)
    assert result.returncode == 2, result.stderr[-2000:]
    line = result.stderr.strip().splitlines()[-1]
    assert re.fullmatch(rf"error: {stage}: file larger than the file-size limit \(ulimit -f\) writing \S+ \(.* free in "
                        r"\S+\); nothing half-written was left, and the previous outputs are as they were: free some "
                        r"space, or point the output elsewhere, and run it again", line), line
    assert ".tmp" not in line  # the output's own path, not its temporary's
    assert temporaries(workspace) == []
    assert files(workspace, STAGES[stage]) == before
    run_here(workspace, stage)  # with room: the same bytes
    assert files(workspace, STAGES[stage]) == before


@pytest.mark.slow
def test_a_refused_write_in_a_worker_process_is_that_error(workspace):
    before = files(workspace, STAGES["extract_frames"])
    result = run_limited(workspace, "extract_frames", 20_000, "workers=2")
    assert result.returncode == 2, result.stderr[-2000:]
    assert re.match(r"error: extract_frames: file larger than the file-size limit \(ulimit -f\) writing \S*data/frames/"
                    r"\w+\.h5 ", result.stderr.strip().splitlines()[-1]), result.stderr[-2000:]
    assert "worker process died" not in result.stderr and "Traceback" not in result.stderr
    assert temporaries(workspace) == [] and files(workspace, STAGES["extract_frames"]) == before


@pytest.fixture
def full_disk(tmp_path):
    """A 16 KiB tmpfs, where the tests may mount one (root, a mount namespace that allows it)."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("no tmpfs can be mounted here (the file-size limit tests stand in for it)")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_a_full_disk_is_one_line_and_leaves_nothing(workspace, full_disk, workers):
    result = subprocess.run([sys.executable, str(ROOT / "stages/extract_frames.py"), f"workers={workers}",
                             f"paths.frames={full_disk}/frames", f"paths.metrics={full_disk}/metrics"],
                            cwd=workspace, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: extract_frames: no space left on device writing {full_disk}/frames/"), line
    assert "MiB free in" in line and "Traceback" not in result.stderr
    assert list(full_disk.iterdir()) == []  # nothing partial
