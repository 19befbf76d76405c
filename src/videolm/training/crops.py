"""Training batches: random spatio-temporal crops of code grids, from every training video.

Item `i` of `CodeGridDataset` is a crop drawn by a generator seeded with `(seed, i)`, so
the sequence of batches is the same in every run and with any number of DataLoader
workers. Videos are drawn in proportion to the number of crops they hold, so videos of
any size and count mix in one batch. A crop is read from its code file when drawn (the
grids of `CodeGrid.load` hold no codes), so memory does not grow with the dataset.

`CropSampler` deals the items out: global batch `s` is items `s * batch .. (s + 1) * batch`,
and each of the training processes takes its own equal slice of it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from videolm.codes.grids import CodeGrid
from videolm.errors import VideoLMError


class CropPositions:
    """Where a random crop of `crop` x `crop` cells (clamped to the grids) starts: a grid, a first
    frame in its range `[first, last)`, and a top-left cell. With `by_area` every (grid, frame,
    cell) position is equally likely; otherwise every (grid, frame), so a large frame counts as
    much as a small one."""

    def __init__(self, ranges: list[tuple[CodeGrid, int, int]], crop: int, by_area: bool):
        self.ranges = ranges  # (grid, first start frame, last start frame + 1)
        self.crop = min([crop] + [min(g.codes.shape[1:]) for g, _, _ in ranges])
        counts = np.array([(last - first) * ((g.codes.shape[1] - self.crop + 1) * (g.codes.shape[2] - self.crop + 1)
                                             if by_area else 1) for g, first, last in ranges], np.float64)
        self.weights = counts / counts.sum()

    def draw(self, rng: np.random.Generator) -> tuple[CodeGrid, int, int, int]:
        """(grid, t, y, x), four draws from `rng` in that order."""
        grid, first, last = self.ranges[rng.choice(len(self.ranges), p=self.weights)]
        t = int(rng.integers(first, last))
        y = int(rng.integers(0, grid.codes.shape[1] - self.crop + 1))
        x = int(rng.integers(0, grid.codes.shape[2] - self.crop + 1))
        return grid, t, y, x


class CodeGridDataset(Dataset):
    def __init__(self, grids: list[CodeGrid], part: str, steps: int, crop: int, length: int, seed: int,
                 reverse_time: bool = False, mirror: np.ndarray | None = None):
        """Crops of `steps` consecutive frames of `part`, `crop` x `crop` cells (clamped to the grids).

        Augmentations, each applied to half the crops: `reverse_time` plays the crop
        backwards (motion reversed is still plausible motion); `mirror` (k,) maps each code
        to the code of its left-right mirrored atom, and mirrors the crop.
        """
        ranges = []
        for grid in grids:
            start, stop = grid.part(part)
            if stop - start >= steps:
                ranges.append((grid, start, stop - steps + 1))
        if not ranges:
            raise VideoLMError(f"no video has {steps} consecutive {part} frames (lower train.bptt)")
        self.positions = CropPositions(ranges, crop, by_area=True)
        self.crop = self.positions.crop
        self.steps, self.length, self.seed = steps, length, seed
        self.reverse_time, self.mirror = reverse_time, mirror

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> torch.Tensor:
        """(steps, crop, crop) int64 codes."""
        rng = np.random.default_rng([self.seed, i])
        grid, t, y, x = self.positions.draw(rng)
        clip = grid.codes[t:t + self.steps, y:y + self.crop, x:x + self.crop].astype(np.int64)
        if self.reverse_time and rng.random() < 0.5:
            clip = clip[::-1]
        if self.mirror is not None and rng.random() < 0.5:
            clip = self.mirror[clip[:, :, ::-1]]
        return torch.from_numpy(np.ascontiguousarray(clip))


class CropSampler(Sampler[int]):
    """Item indices of global batches `start .. stop - 1` of `batch` items, the slice of rank
    `rank` of `world` (batch / world items each): together the ranks take every item of every
    batch once, whatever the number of processes."""

    def __init__(self, start: int, stop: int, batch: int, rank: int = 0, world: int = 1):
        self.start, self.stop, self.rank = start, stop, rank
        self.batch, self.local = batch, batch // world

    def __iter__(self):
        for step in range(self.start, self.stop):
            first = step * self.batch + self.rank * self.local
            yield from range(first, first + self.local)

    def __len__(self) -> int:
        return (self.stop - self.start) * self.local
