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
    return patches_at(frames, t, y, x, size)


def patches_at(frames: np.ndarray, t: np.ndarray, y: np.ndarray, x: np.ndarray, size: int) -> np.ndarray:
    """(n, size*size) float32 patches of `frames` (T, H, W) with top-left corners (y, x) in frames t."""
    offsets = np.arange(size)
    rows = (y[:, None] + offsets)[:, :, None]  # (n, size, 1)
    cols = (x[:, None] + offsets)[:, None, :]  # (n, 1, size)
    return frames[t[:, None, None], rows, cols].reshape(len(t), size * size).astype(np.float32)


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
