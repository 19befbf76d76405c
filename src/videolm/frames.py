"""Frame extraction: videos -> one HDF5 file of gray uint8 frames per video.

`VideoFrames` owns the frames file: dataset `frames` uint8 (T, H, W), chunked by frame, and
as attributes the video's source, fps, split rule, part and split bounds (`video.py`).
`write_frames` is the only writer, `VideoFrames.open` / `list_frames` the only readers.
A folder of per-video files (rather than one big file) lets a changed video redo only its
own file, and lets DVC track the folder as one output. Extraction runs serially today.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import h5py
import numpy as np
from tqdm import tqdm

from videolm.config import DataConfig
from videolm.io import COMPRESSION, atomic_path, create_h5, h5_dataset, h5_files, write_attrs, write_json
from videolm.video import Video, VideoError, assign_videos, decode_gray, split_bounds, split_rule, video_fps

log = logging.getLogger(__name__)

BLOCK = 32  # frames appended to the HDF5 dataset at a time


@dataclass
class VideoFrames:
    """One video's frames file, opened lazily: `read` loads only the frames asked for."""

    path: Path
    video_id: str
    source: str
    n_frames: int
    frame_shape: tuple[int, int]
    train_end: int
    val_end: int
    fps: float = 0.0  # 0 where unknown

    @classmethod
    def open(cls, path: str | Path) -> VideoFrames:
        path = Path(path)
        with h5py.File(path, "r") as f:
            a = f.attrs
            n, height, width = f["frames"].shape
            return cls(path, path.stem, str(a["source"]), n, (height, width), int(a["train_end"]), int(a["val_end"]),
                       float(a.get("fps", 0.0)))

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """(n, H, W) uint8 frames [start, stop)."""
        with h5py.File(self.path, "r") as f:
            return f["frames"][start:stop]


def write_frames(path: Path, frames: Iterator[np.ndarray], split: Callable[[int], tuple[int, int]],
                 attrs: dict) -> VideoFrames:
    """Stream gray (H, W) uint8 frames into a new frames file, `BLOCK` at a time.

    `split(n)` gives (train_end, val_end) once the number of frames n is known; `attrs`
    (source, fps, split rule, part) are stored beside them.
    """
    first = next(frames, None)
    if first is None:
        raise VideoError(f"{attrs['source']}: no frames could be decoded")
    height, width = first.shape
    with create_h5(path) as f:
        dset = h5_dataset(f, "frames", shape=(0, height, width), maxshape=(None, height, width),
                          dtype=np.uint8, chunks=(1, height, width), **COMPRESSION)
        block = [first]
        n = 0
        for frame in frames:
            block.append(frame)
            if len(block) == BLOCK:
                n = _append(dset, block, n)
                block = []
        n = _append(dset, block, n)
        train_end, val_end = split(n)
        write_attrs(f, {**attrs, "train_end": train_end, "val_end": val_end})
    return VideoFrames.open(path)


def extract_frames(videos: list[Video], out_dir: str | Path, cfg: DataConfig, seed: int) -> list[VideoFrames]:
    """Decode `videos` to `out_dir/<video_id>.h5`, one after the other; return what was written."""
    rule = split_rule(cfg, len(videos))
    parts = assign_videos(videos, cfg, seed) if rule in ("video", "ucf101") else {}
    written = []
    with atomic_path(out_dir, "extract_frames") as tmp_dir:
        tmp_dir.mkdir()
        for video in tqdm(videos, desc="extract_frames", unit="video"):
            part = "time" if rule == "time" else parts.get(video.video_id)
            if part is None:
                log.warning("%s: not in the UCF-101 split lists, skipped", video.source)
                continue
            frames = decode_gray(video.path, cfg.scale, cfg.frame_stride, cfg.max_frames)
            attrs = {"source": video.source, "fps": video_fps(video.path), "split_rule": rule, "part": part}
            written.append(write_frames(tmp_dir / f"{video.video_id}.h5", frames,
                                        lambda n: split_bounds(part, n, cfg), attrs))
        write_json(tmp_dir / "videos.json", [{"video": v.source, "frames": v.n_frames, "train_end": v.train_end,
                                              "val_end": v.val_end} for v in written], "extract_frames")
    return written


def _append(dset: h5py.Dataset, block: list[np.ndarray], n: int) -> int:
    if block:
        dset.resize(n + len(block), axis=0)
        dset[n:n + len(block)] = np.stack(block)
    return n + len(block)


def list_frames(frames_dir: str | Path) -> list[VideoFrames]:
    """The frames files of an `extract_frames` output folder, sorted by video id."""
    return [VideoFrames.open(path) for path in h5_files(frames_dir, "frames files", "extract_frames")]


def check_patch_fits(videos: list[VideoFrames], size: int) -> None:
    """Fail before any work if a video's frames are smaller than one patch."""
    for video in videos:
        if min(video.frame_shape) < size:
            height, width = video.frame_shape
            raise VideoError(f"patches.size={size} is larger than the {height}x{width} frames of "
                             f"{video.source} (after data.scale): lower patches.size or raise data.scale")
