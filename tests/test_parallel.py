"""Worker processes: `map_in_order` itself, and the data stages giving the same bytes with 2
workers as with 1 (in this process) on real videos, an unusable file among them."""

from __future__ import annotations

import hashlib
import operator
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import moving_frames, write_video

from videolm.codes.encoding import encode_videos
from videolm.config import DataConfig
from videolm.data.extract import extract_frames
from videolm.data.frames import list_frames
from videolm.data.parallel import map_in_order, worker_count
from videolm.data.video import find_videos
from videolm.errors import UnusableVideo


def digests(folder: Path) -> dict[str, str]:
    """md5 of every file under `folder`, by relative path."""
    return {path.relative_to(folder).as_posix(): hashlib.md5(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


class TwoArgs(Exception):
    """An exception pickle cannot rebuild (its constructor wants two arguments, args holds one)."""

    def __init__(self, a, b):
        super().__init__(f"{a} and {b}")


def probe(item):
    """Sleeps `item` seconds (later items can finish first) or raises what the item names."""
    if item == "unusable":
        raise UnusableVideo("videos/x.mp4", "an empty file (0 bytes)")
    if item == "two args":
        raise TwoArgs(1, 2)
    time.sleep(item)
    return item, os.getpid()


def test_map_in_order_results_errors_and_threads():
    items = [0.4, "unusable", 0.0, "two args", 0.1]
    results = list(map_in_order(probe, items, 2, "probe"))
    values = [r.result() for r in results[0::2]]
    assert [item for item, _ in values] == [0.4, 0.0, 0.1]  # in order, though 0.4 finished last
    assert {pid for _, pid in values} & {os.getpid()} == set()  # in worker processes
    with pytest.raises(UnusableVideo) as err:  # the same type, rebuilt from its path and reason
        results[1].result()
    assert (err.value.path, err.value.reason, str(err.value)) == (
        "videos/x.mp4", "an empty file (0 bytes)", "videos/x.mp4: an empty file (0 bytes)")
    with pytest.raises(RuntimeError, match=r"(?s)Traceback.*TwoArgs: 1 and 2"):
        results[3].result()

    # torch loaded in a worker after it started (by the item) has one thread
    threads = [r.result() for r in map_in_order(operator.call, [torch.get_num_threads] * 2, 2, "threads")]
    assert threads == [1, 1]


def test_one_worker_runs_here():
    results = list(map_in_order(probe, [0.0, "unusable"], 1, "probe"))
    assert results[0].result() == (0.0, os.getpid())
    with pytest.raises(UnusableVideo, match="an empty file"):
        results[1].result()
    assert worker_count(0) == len(os.sched_getaffinity(0)) and worker_count(3) == 3


def test_a_dead_worker_is_named_in_words():
    (first, _) = map_in_order(os._exit, [1, 1], 2, "exits")
    with pytest.raises(RuntimeError, match=r"^exits: a worker process died .* workers=1 runs without"):
        first.result()


@pytest.fixture
def folder(tmp_path) -> Path:
    """Three tiny videos, an empty file and a video of one frame (both skipped)."""
    src = tmp_path / "videos"
    src.mkdir()
    for i in range(3):
        write_video(src / f"v{i}.mp4", moving_frames(seed=i, n_frames=5 + i))
    (src / "a_empty.mp4").write_bytes(b"")
    write_video(src / "v1_one_frame.mp4", moving_frames(n_frames=1))
    return src


def test_extract_and_encode_give_the_same_bytes_with_workers(folder, tmp_path, codebook, caplog):
    cfg = DataConfig(dir=str(folder), scale=0.5, split="video")
    videos = find_videos(folder, cfg.extensions)
    runs, warnings = {}, {}
    for workers in (1, 2):
        caplog.clear()
        runs[workers] = extract_frames(videos, tmp_path / f"frames{workers}", cfg, seed=0, workers=workers)
        warnings[workers] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped")]
    assert digests(tmp_path / "frames1") == digests(tmp_path / "frames2")
    one, two = runs[1], runs[2]
    assert [replace(v, path=v.path.name) for v in one.kept] == [replace(v, path=v.path.name) for v in two.kept]
    assert (one.skipped, one.split_rule) == (two.skipped, two.split_rule)
    assert [s.video for s in one.skipped] == ["a_empty.mp4", "v1_one_frame.mp4"]
    assert warnings[1] == warnings[2] and len(warnings[1]) == 2

    frames = list_frames(tmp_path / "frames1")
    sums = {}
    for workers in (1, 2):
        (tmp_path / f"codes{workers}").mkdir()
        sums[workers] = encode_videos(frames, codebook, 4, 3, tmp_path / f"codes{workers}", workers)
    assert sums[1] == sums[2]  # the same floats: added in the videos' order
    assert digests(tmp_path / "codes1") == digests(tmp_path / "codes2")
    assert len(digests(tmp_path / "codes1")) == 3


KILLED = """
import functools, os, sys, time
from videolm.data.parallel import map_in_order
items = [os.getpid, os.getpid, functools.partial(time.sleep, 60), functools.partial(time.sleep, 60)]
for result in map_in_order(__import__("operator").call, items, 2, "sleeps"):
    print(result.result(), flush=True)
"""


def test_workers_end_with_a_killed_stage(tmp_path):
    """A killed stage leaves no worker writing into its temporary output (which the next run removes)."""
    stage = subprocess.Popen([sys.executable, "-c", KILLED], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True)
    workers = {int(stage.stdout.readline()), int(stage.stdout.readline())}
    assert stage.pid not in workers
    stage.kill()
    stage.wait()
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in workers)


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting to be reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
