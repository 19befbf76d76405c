"""Patch grids: cutting frames into patches, putting patches back, and normalization.

The paper's only preprocessing is dividing gray values by the standard deviation of
the training data; `std` is computed once from training frames and stored with the
patches and the codebook so that every later stage undoes it the same way. `PatchSample`
owns the `patches.h5` file (the sample the codebook is fitted on).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from videolm.errors import VideoLMError
from videolm.io import load_h5, save_h5


def grid_shape(height: int, width: int, size: int, stride: int) -> tuple[int, int]:
    """Number of patch positions (rows, cols) of a frame; the remainder is cropped."""
    if height < size or width < size:
        raise ValueError(f"frame {height}x{width} is smaller than one {size}x{size} patch")
    return (height - size) // stride + 1, (width - size) // stride + 1


def covered_shape(rows: int, cols: int, size: int, stride: int) -> tuple[int, int]:
    """(height, width) in pixels that a grid of rows x cols patches covers (`grid_shape` undone,
    without the cropped remainder)."""
    return (rows - 1) * stride + size, (cols - 1) * stride + size


def extract_patches(frames: np.ndarray, size: int, stride: int) -> np.ndarray:
    """(N, H, W) frames -> (N, rows, cols, size*size) float32 patches (row-major pixels)."""
    rows, cols = grid_shape(frames.shape[1], frames.shape[2], size, stride)
    windows = np.lib.stride_tricks.sliding_window_view(frames, (size, size), axis=(1, 2))
    windows = windows[:, ::stride, ::stride][:, :rows, :cols]  # (N, rows, cols, size, size)
    return windows.reshape(frames.shape[0], rows, cols, size * size).astype(np.float32)


def reconstruct(patches: np.ndarray, size: int, stride: int) -> np.ndarray:
    """(N, rows, cols, size*size) patches -> (N, H, W) frames, overlapping pixels averaged."""
    n, rows, cols, _ = patches.shape
    height, width = covered_shape(rows, cols, size, stride)
    blocks = patches.reshape(n, rows, cols, size, size)
    if stride == size:  # no overlap: a reshape
        return blocks.transpose(0, 1, 3, 2, 4).reshape(n, height, width)
    total = np.zeros((n, height, width), np.float32)
    count = np.zeros((height, width), np.float32)
    for dy in range(size):
        for dx in range(size):
            ys = slice(dy, dy + (rows - 1) * stride + 1, stride)
            xs = slice(dx, dx + (cols - 1) * stride + 1, stride)
            total[:, ys, xs] += blocks[:, :, :, dy, dx]
            count[ys, xs] += 1
    return total / count


def sample_patches(frames: np.ndarray, n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """`n` random (size*size,) float32 patches at any pixel position of random frames."""
    t = rng.integers(0, frames.shape[0], n)
    y = rng.integers(0, frames.shape[1] - size + 1, n)
    x = rng.integers(0, frames.shape[2] - size + 1, n)
    offsets = np.arange(size)
    rows = (y[:, None] + offsets)[:, :, None]  # (n, size, 1)
    cols = (x[:, None] + offsets)[:, None, :]  # (n, 1, size)
    return frames[t[:, None, None], rows, cols].reshape(n, size * size).astype(np.float32)


@dataclass(eq=False)
class PatchSample:
    """Random patches for fitting and checking the codebook, in units of gray / std."""

    train: np.ndarray  # (n_train, size*size) float32, from training frames
    heldout: np.ndarray  # (n_heldout, size*size) float32, from validation frames
    std: float  # of the training frames' gray values
    size: int  # patch side in pixels

    def save(self, path: str | Path) -> None:
        save_h5(path, "sample_patches", {"train": self.train, "heldout": self.heldout},
                {"std": self.std, "patch_size": self.size})

    @classmethod
    def load(cls, path: str | Path) -> PatchSample:
        data, attrs = load_h5(path, "patch sample", "sample_patches")
        return cls(data["train"], data["heldout"], float(attrs["std"]), int(attrs["patch_size"]))


def training_std(videos, chunk_frames: int = 64) -> float:
    """Standard deviation of the gray values of every training frame, read `chunk_frames` at a
    time. The sums are integers (exact), so the result does not depend on the chunking."""
    total = total_sq = count = 0
    for v in videos:
        for start in range(0, v.train_end, chunk_frames):
            frames = v.read(start, min(start + chunk_frames, v.train_end)).astype(np.int64)
            total, total_sq, count = total + int(frames.sum()), total_sq + int((frames ** 2).sum()), count + frames.size
    if count == 0:
        raise VideoLMError("no training frames to sample patches from (check the split)")
    return float(np.sqrt(float(total_sq) / count - (float(total) / count) ** 2)) or 1.0


def sample_training_patches(videos, n_train: int, n_heldout: int, size: int, seed: int) -> PatchSample:
    """Random patches for the codebook: `n_train` from training frames, `n_heldout` from
    validation frames (or, where no video has any, from training frames too).

    `videos` are `VideoFrames`. Each video gives patches in proportion to its pixel count
    in that part; one video's part is read at a time.
    """
    rng = np.random.default_rng(seed)
    has_val = any(v.val_end > v.train_end for v in videos)
    std = training_std(videos)
    train = _sample_part(videos, lambda v: (0, v.train_end), n_train, size, rng)
    heldout_part = (lambda v: (v.train_end, v.val_end)) if has_val else (lambda v: (0, v.train_end))
    heldout = _sample_part(videos, heldout_part, n_heldout, size, rng)
    return PatchSample(train / std, heldout / std, std, size)


def _sample_part(videos, bounds, n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    ranges = [(v, *bounds(v)) for v in videos]
    weights = np.array([(stop - start) * np.prod(v.frame_shape) for v, start, stop in ranges], np.float64)
    per_video = rng.multinomial(n, weights / weights.sum())
    chunks = [sample_patches(v.read(start, stop), m, size, rng)
              for (v, start, stop), m in zip(ranges, per_video) if m]
    return np.concatenate(chunks)
