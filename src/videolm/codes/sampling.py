"""Drawing the patches the codebook is fitted on: `sample_training_patches`, the work of the
sample_patches stage.

`n_train` patches come from training frames and `n_heldout` from validation frames (or, where
no video has any, from training frames too), each video giving patches in proportion to its
pixel count in that part. Every position is drawn first, in the main process, from one seeded
generator, without reading a frame: they depend only on the videos' lengths and frame sizes.
Then each video is read once, in `workers` processes (`parallel.map_in_order`), which cut its
patches and add up its training pixels for the std. The results come back in the videos' order
and the sums are integers, so the sample is the same bytes whatever the worker count.
"""

from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass

import numpy as np

from videolm.codes.patches import PatchSample, patches_at
from videolm.data.frames import VideoFrames
from videolm.data.parallel import map_in_order
from videolm.errors import VideoLMError


@dataclass
class Positions:
    """Patch corners (frame, row, column) drawn in one part of one video, frames counted from
    the part's first frame `start`."""

    start: int
    t: np.ndarray
    y: np.ndarray
    x: np.ndarray


@dataclass
class VideoDraw:
    """What one video gives: the std's training pixels, and patches at the drawn positions."""

    video: VideoFrames
    size: int
    train: Positions | None
    heldout: Positions | None


@dataclass
class VideoPatches:
    """One video's patches (float32 gray levels) and the integer sums of its training pixels."""

    train: np.ndarray
    heldout: np.ndarray
    total: int
    total_sq: int
    count: int


def sample_training_patches(videos: list[VideoFrames], n_train: int, n_heldout: int, size: int, seed: int,
                            workers: int = 1) -> PatchSample:
    """The codebook's `PatchSample`: patches of training and validation frames, divided by the
    std of every training pixel (both from one read of each video, in `workers` processes)."""
    if sum(v.train_end for v in videos) == 0:
        raise VideoLMError("no training frames to sample patches from (check the split)")
    rng = np.random.default_rng(seed)
    has_val = any(v.val_end > v.train_end for v in videos)
    train = _draw(videos, [(0, v.train_end) for v in videos], n_train, size, rng)
    heldout_parts = [(v.train_end, v.val_end) if has_val else (0, v.train_end) for v in videos]
    heldout = _draw(videos, heldout_parts, n_heldout, size, rng)
    draws = [VideoDraw(v, size, a, b) for v, a, b in zip(videos, train, heldout)]
    parts = []
    with closing(map_in_order(cut_patches, draws, workers, "sample_patches")) as results:
        for result in results:
            parts.append(result.result())
    total, total_sq, count = (sum(getattr(p, name) for p in parts) for name in ("total", "total_sq", "count"))
    std = float(np.sqrt(float(total_sq) / count - (float(total) / count) ** 2)) or 1.0
    return PatchSample(np.concatenate([p.train for p in parts]) / std, np.concatenate([p.heldout for p in parts]) / std,
                       std, size)


def _draw(videos: list[VideoFrames], parts: list[tuple[int, int]], n: int, size: int,
          rng: np.random.Generator) -> list[Positions | None]:
    """`n` patch positions over the videos' `parts` ([start, stop) frames each), shared out in
    proportion to each part's pixels; None for a video that gives none."""
    weights = np.array([(stop - start) * np.prod(v.frame_shape) for v, (start, stop) in zip(videos, parts)],
                       np.float64)
    per_video = rng.multinomial(n, weights / weights.sum())
    positions = []
    for v, (start, stop), m in zip(videos, parts, per_video):
        if not m:
            positions.append(None)
            continue
        height, width = v.frame_shape
        t = rng.integers(0, stop - start, m)
        y = rng.integers(0, height - size + 1, m)
        x = rng.integers(0, width - size + 1, m)
        positions.append(Positions(start, t, y, x))
    return positions


def cut_patches(draw: VideoDraw) -> VideoPatches:
    """Read `draw`'s video once (up to the last frame it needs), cut its patches and add up its
    training pixels (exact integers, from the gray levels' counts): the unit of work of the
    worker processes."""
    video = draw.video
    parts = [p for p in (draw.train, draw.heldout) if p is not None]
    stop = max([video.train_end] + [p.start + int(p.t.max()) + 1 for p in parts])
    frames = video.read(0, stop) if stop else np.zeros((0, *video.frame_shape), np.uint8)
    levels = np.arange(256, dtype=np.int64)
    counts = np.bincount(frames[:video.train_end].ravel(), minlength=256).astype(np.int64)
    return VideoPatches(_cut(frames, draw.train, draw.size), _cut(frames, draw.heldout, draw.size),
                        int(counts @ levels), int(counts @ levels ** 2), int(counts.sum()))


def _cut(frames: np.ndarray, at: Positions | None, size: int) -> np.ndarray:
    """(n, size*size) float32 patches of `frames` at the positions `at` (none: an empty array)."""
    if at is None:
        return np.zeros((0, size * size), np.float32)
    return patches_at(frames, at.start + at.t, at.y, at.x, size)
