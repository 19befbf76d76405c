"""The scoring pass (`score_part`) with several test videos in one forward pass against one
video at a time, on the same videos and model: the `scoring` pair of `run.py`."""

from __future__ import annotations

import numpy as np
import torch

from videolm.codes.codebook import Codebook
from videolm.codes.grids import CodeGrid
from videolm.config import ModelConfig
from videolm.evaluation.scoring import score_part
from videolm.model.build import build_model

GRID = (30, 40)  # UCF-101's 320x240 at patch stride 8


def bench_scoring(videos: int, frames: int, k: int, batch: int, repeats: int, timed) -> dict:
    """`videos` videos of `frames` random codes on UCF-101's grid, every frame a test frame, scored
    by an untrained model of the default size over a codebook of `k`: `batch` at a time against 1."""
    rng = np.random.default_rng(0)
    codebook = Codebook(rng.normal(size=(k, 64)).astype(np.float32), size=8, std=1.0)
    torch.manual_seed(0)
    model = build_model(ModelConfig(), codebook).eval()
    grids = [CodeGrid(f"v{i}", rng.integers(0, k, (frames, *GRID), dtype=np.uint16), 0, 0) for i in range(videos)]
    ours = timed(lambda: score_part(model, grids, "test", batch=batch), repeats)
    ref = timed(lambda: score_part(model, grids, "test", batch=1), repeats)
    cells = videos * (frames - 1) * GRID[0] * GRID[1]
    same = (ours[3].nll, ours[3].count) == (ref[3].nll, ref[3].count)
    return {"name": f"scoring, {videos} videos of {frames} frames, grid {GRID[0]}x{GRID[1]}, k={k:,}",
            "unit": "cells/s", "ours": cells / ours[0], "ours_range": (cells / ours[2], cells / ours[1]),
            "ref_name": "one video at a time", "ref": cells / ref[0], "ref_range": (cells / ref[2], cells / ref[1]),
            "note": f"{batch} videos a forward pass, {torch.get_num_threads()} threads; "
                    f"the same scores to the bit: {'yes' if same else 'NO'}"}
