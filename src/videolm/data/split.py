"""The train/val/test split rules.

Every video's split is one pair of frame indices, `(train_end, val_end)`: frames
`[0, train_end)` are training, `[train_end, val_end)` validation, `[val_end, T)` test.
A split by time gives each video all three parts; a split by video (or by the UCF-101
lists) gives a training video `(T, T)`, a validation video `(0, T)` and a test video
`(0, 0)`. Downstream stages only ever read these two numbers.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

import numpy as np

from videolm.config import DataConfig
from videolm.data.video import Video
from videolm.errors import VideoError


def split_rule(cfg: DataConfig, n_videos: int) -> str:
    """The rule actually used: `auto` becomes `video` with enough videos, else `time`."""
    if cfg.split != "auto":
        return cfg.split
    return "video" if n_videos >= cfg.min_videos_for_video_split else "time"


def time_split(n_frames: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """(train_end, val_end) for a split by time within one video."""
    val_end = int(round(n_frames * (1 - test_fraction)))
    train_end = int(round(n_frames * (1 - test_fraction - val_fraction)))
    return train_end, val_end


def assign_videos(videos: list[Video], cfg: DataConfig, seed: int) -> dict[str, str]:
    """Map video_id -> 'train' | 'val' | 'test' for a split by whole videos (`videos`: the usable ones)."""
    if cfg.split == "ucf101":
        return ucf101_assignment(videos, cfg)
    order = np.random.default_rng(seed).permutation(len(videos))
    n_test = max(1, int(round(len(videos) * cfg.test_fraction)))
    n_val = max(1, int(round(len(videos) * cfg.val_fraction)))
    if n_test + n_val >= len(videos):
        raise VideoError(f"data.split=video: {n_test} test + {n_val} validation videos (data.test_fraction, "
                         f"data.val_fraction) leave no training video among the {len(videos)} usable in {cfg.dir!r}")
    parts = {}
    for rank, i in enumerate(order):
        parts[videos[i].video_id] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return parts


_UCF_GROUP = re.compile(r"_g(\d+)_c\d+")


def ucf101_assignment(videos: list[Video], cfg: DataConfig) -> dict[str, str]:
    """Train/test from UCF-101's official lists; validation = the last training groups.

    A list names a video by its path under the dataset's root (`Class/v_Class_gNN_cNN.avi`): a
    video is listed when its path ends with that entry, so videos of one file name in two
    folders are told apart. UCF-101 clips of one group (gXX) come from the same long video, so
    validation takes whole groups (the highest-numbered training groups, `val_fraction` of them)
    to keep near-duplicate clips out of both sides.
    """
    root = Path(cfg.dir)
    n = cfg.ucf101_list
    entries = {}
    for name in ("train", "test"):
        found = sorted(root.rglob(f"{name}list0{n}.txt"))
        if len(found) != 1:
            where = f": {', '.join(str(f) for f in found)}; keep one" if found else ""
            raise VideoError(f"data.split=ucf101: {len(found)} files named {name}list0{n}.txt under {cfg.dir!r} "
                             f"(expected one){where}")
        entries[name] = {PurePosixPath(line.split()[0].replace("\\", "/")).parts
                         for line in found[0].read_text().splitlines() if line.strip()}
    groups = sorted({int(m.group(1)) for entry in entries["train"] if (m := _UCF_GROUP.search(entry[-1]))})
    n_val_groups = max(1, int(round(len(groups) * cfg.val_fraction)))
    val_groups = set(groups[-n_val_groups:])
    depths = {len(entry) for listed in entries.values() for entry in listed}
    parts = {}
    for video in videos:
        path = Path(video.source).parts
        tails = {path[-depth:] for depth in depths}
        if tails & entries["test"]:
            parts[video.video_id] = "test"
        elif tails & entries["train"]:
            m = _UCF_GROUP.search(path[-1])
            parts[video.video_id] = "val" if m and int(m.group(1)) in val_groups else "train"
    if not parts:
        raise VideoError(f"data.split=ucf101: no video under {cfg.dir!r} is named in the split lists")
    return parts


def split_bounds(part: str, n_frames: int, cfg: DataConfig) -> tuple[int, int]:
    """(train_end, val_end) of one video: from its assigned part, or by time."""
    if part == "train":
        return n_frames, n_frames
    if part == "val":
        return 0, n_frames
    if part == "test":
        return 0, 0
    return time_split(n_frames, cfg.val_fraction, cfg.test_fraction)
