"""Finding videos, streaming gray decode with PyAV, and the train/val/test split rules.

Every video's split is one pair of frame indices, `(train_end, val_end)`: frames
`[0, train_end)` are training, `[train_end, val_end)` validation, `[val_end, T)` test.
A split by time gives each video all three parts; a split by video (or by the UCF-101
lists) gives a training video `(T, T)`, a validation video `(0, T)` and a test video
`(0, 0)`. Downstream stages only ever read these two numbers.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import av
import numpy as np

from videolm.config import DataConfig
from videolm.errors import VideoLMError


class VideoError(VideoLMError):
    """A video or folder of videos cannot be used; the message names it."""


@dataclass(frozen=True)
class Video:
    path: Path  # absolute or relative to the working directory
    source: str  # path relative to data.dir, with forward slashes
    video_id: str  # file-name safe, unique within data.dir


def find_videos(folder: str | Path, extensions: list[str]) -> list[Video]:
    """All files under `folder` (recursively) whose extension is in `extensions`, sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise VideoError(f"data.dir={str(folder)!r}: no such folder (expected a folder of videos)")
    exts = {"." + e.lower().lstrip(".") for e in extensions}
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in exts)
    if not paths:
        raise VideoError(f"data.dir={str(folder)!r}: no video files with extensions {sorted(exts)}")
    sources = [p.relative_to(folder).as_posix() for p in paths]
    ids = [video_id_of(s) for s in sources]
    clashes = {i for i in ids if ids.count(i) > 1}
    return [Video(p, s, f"{i}-{hashlib.sha1(s.encode()).hexdigest()[:8]}" if i in clashes else i)
            for p, s, i in zip(paths, sources, ids)]


def video_id_of(source: str) -> str:
    """A file-name safe id: the relative path without extension, '/' replaced by '__'.

    Where two sources give the same id (`clip.mp4` and `clip.avi`), `find_videos` appends a
    hash of each source to keep them apart.
    """
    stem = source.rsplit(".", 1)[0]
    return re.sub(r"[^\w.-]+", "_", stem.replace("/", "__"))


def output_size(width: int, height: int, scale: float) -> tuple[int, int]:
    return max(1, round(width * scale)), max(1, round(height * scale))


def decode_gray(path: str | Path, scale: float = 1.0, frame_stride: int = 1,
                max_frames: int = 0) -> Iterator[np.ndarray]:
    """Yield the frames of a video one at a time as uint8 gray (H, W) arrays.

    Streaming: memory does not grow with the video's length. Scaling happens inside
    libswscale while converting to gray, so full-size frames are never held in numpy.
    """
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as err:
        raise VideoError(f"{path}: cannot open as a video ({err})") from None
    with container:
        if not container.streams.video:
            raise VideoError(f"{path}: has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        width, height = output_size(stream.codec_context.width, stream.codec_context.height, scale)
        kept = 0
        try:
            for index, frame in enumerate(container.decode(stream)):
                if index % frame_stride:
                    continue
                yield frame.to_ndarray(format="gray", width=width, height=height)
                kept += 1
                if max_frames and kept >= max_frames:
                    return
        except av.error.FFmpegError as err:
            raise VideoError(f"{path}: decoding failed after {kept} frames ({err})") from None


def video_fps(path: str | Path) -> float:
    with av.open(str(path)) as container:
        rate = container.streams.video[0].average_rate
        return float(rate) if rate else 0.0


# ---------------------------------------------------------------- split rules


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
    """Map video_id -> 'train' | 'val' | 'test' for a split by whole videos."""
    if cfg.split == "ucf101":
        return ucf101_assignment(videos, cfg)
    order = np.random.default_rng(seed).permutation(len(videos))
    n_test = max(1, int(round(len(videos) * cfg.test_fraction)))
    n_val = max(1, int(round(len(videos) * cfg.val_fraction)))
    if n_test + n_val >= len(videos):
        raise VideoError(f"data.split=video: {n_test} test + {n_val} validation videos (data.test_fraction, "
                         f"data.val_fraction) leave no training video among the {len(videos)} in {cfg.dir!r}")
    parts = {}
    for rank, i in enumerate(order):
        parts[videos[i].video_id] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return parts


_UCF_GROUP = re.compile(r"_g(\d+)_c\d+")


def ucf101_assignment(videos: list[Video], cfg: DataConfig) -> dict[str, str]:
    """Train/test from UCF-101's official lists; validation = the last training groups.

    UCF-101 clips of one group (gXX) come from the same long video, so validation takes
    whole groups (the highest-numbered training groups, `val_fraction` of them) to keep
    near-duplicate clips out of both sides.
    """
    root = Path(cfg.dir)
    n = cfg.ucf101_list
    lists = {name: next(iter(sorted(root.rglob(f"{name}list0{n}.txt"))), None) for name in ("train", "test")}
    for name, found in lists.items():
        if found is None:
            raise VideoError(f"data.split=ucf101: {name}list0{n}.txt not found under {cfg.dir!r}")
    names = {name: {Path(line.split()[0]).name for line in found.read_text().splitlines() if line.strip()}
             for name, found in lists.items()}
    groups = sorted({int(m.group(1)) for v in names["train"] if (m := _UCF_GROUP.search(v))})
    n_val_groups = max(1, int(round(len(groups) * cfg.val_fraction)))
    val_groups = set(groups[-n_val_groups:])
    parts = {}
    for video in videos:
        base = Path(video.source).name
        if base in names["test"]:
            parts[video.video_id] = "test"
        elif base in names["train"]:
            m = _UCF_GROUP.search(base)
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
