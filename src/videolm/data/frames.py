"""The frames files: one HDF5 file of gray uint8 frames per video.

`VideoFrames` owns the frames file: dataset `frames` uint8 (T, H, W), chunked by frame, and
as attributes the video's source, fps, split rule, part and split bounds (`data/split.py`).
`write_frames` is the only writer, `VideoFrames.open` / `list_frames` the only readers.
A folder of per-video files (rather than one big file) lets a changed video redo only its
own file, and lets DVC track the folder as one output.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import h5py
import numpy as np

from videolm.errors import VideoError
from videolm.io import COMPRESSION, h5_dataset, h5_files, h5_writer, write_attrs

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
    with h5_writer(path) as f:
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
