"""Encoding every video of a frames folder: `encode_videos`, the work of the encode stage.

It maps `codes.encode_video` over the frames files in `workers` processes
(`parallel.map_in_order`; 1 = serially, in this process), one code file per video, and adds up
their squared errors in the videos' order, so the sums are the same floats whatever `workers`.
A module of its own, not part of `codes.py`: training and evaluation read code grids through
`codes.py` and need none of this.
"""

from __future__ import annotations

from contextlib import closing
from functools import partial
from pathlib import Path

from videolm.codebook import Codebook
from videolm.codes import encode_video
from videolm.frames import VideoFrames
from videolm.parallel import map_in_order


def encode_videos(videos: list[VideoFrames], codebook: Codebook, stride: int, chunk_frames: int,
                  out_dir: str | Path, workers: int = 1) -> tuple[float, int, float, int]:
    """Encode `videos` to `out_dir/<video_id>.h5` in `workers` processes (0 = one per core);
    returns the sums of `encode_video` (squared error and pixels, all frames and test frames)."""
    totals = [0.0, 0, 0.0, 0]
    encode = partial(_encode_into, Path(out_dir), codebook, stride, chunk_frames)
    with closing(map_in_order(encode, videos, workers, "encode")) as results:
        for result in results:
            totals = [a + b for a, b in zip(totals, result.result())]
    sq_all, n_all, sq_test, n_test = totals
    return sq_all, n_all, sq_test, n_test


def _encode_into(out_dir: Path, codebook: Codebook, stride: int, chunk_frames: int,
                 video: VideoFrames) -> tuple[float, int, float, int]:
    """`encode_video` to `out_dir/<video_id>.h5`: the unit of work handed to the worker processes
    (a top-level function, so that they can be sent it)."""
    return encode_video(video, codebook, stride, chunk_frames, out_dir / f"{video.video_id}.h5")
