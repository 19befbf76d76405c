"""Test clips: the stretches of test video that generation and filling are measured on.

A clip is `eval.context` real frames the model may see, then the frames it must predict.
Clips lie wholly inside each video's test part, one every `eval.clip_stride` frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from videolm.codes.grids import CodeGrid


@dataclass(eq=False)
class Clip:
    """`context` real frames [start, t0) of a test video, then the frames to predict from t0."""

    grid: CodeGrid
    start: int
    t0: int


def evaluation_clips(grids: list[CodeGrid], context: int, horizon: int, stride: int = 0) -> list[Clip]:
    """Clips of context + horizon frames inside the test part of each video, every `stride`
    frames (0: one after the other, not overlapping), in video order."""
    length = context + horizon
    clips = []
    for grid in grids:
        first, stop = grid.part("test")
        clips += [Clip(grid, s, s + context) for s in range(first, stop - length + 1, stride or length)]
    return clips


def subset_clips(clips: list[Clip], n: int, seed: int) -> list[Clip]:
    """`n` of `clips` drawn with `seed`, in their order (all of them when n is 0 or covers them):
    the same clips for every run of a seed, whatever the model, so runs compare on equal footing."""
    if n == 0 or n >= len(clips):
        return clips
    chosen = np.random.default_rng([seed, 4]).choice(len(clips), n, replace=False)  # 4: not the crops' streams
    return [clips[i] for i in sorted(chosen)]


def picture_clips(clips: list[Clip], n: int) -> list[int]:
    """Indices of `n` fixed clips to show: the first clip of each video, then the second..."""
    rank = {}
    order = []
    for i, clip in enumerate(clips):
        rank[clip.grid.video_id] = rank.get(clip.grid.video_id, -1) + 1
        order.append((rank[clip.grid.video_id], i))
    return [i for _, i in sorted(order)[:n]]


def clip_frames(read_frames, clip: Clip, stop: int, shape: tuple[int, int]) -> np.ndarray:
    """(stop - start, h, w) float64 true frames of a clip, cropped to the patch grid."""
    h, w = shape
    return read_frames(clip.grid.video_id)[clip.start:stop, :h, :w].astype(np.float64)
