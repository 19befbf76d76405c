"""The synthetic input clips of the benchmarks (`run.py`, `memory.py`)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def synthetic_video(path: Path, size: tuple[int, int], n_frames: int, loops: int = 1) -> Path:
    """An h264 clip of a smooth moving texture (decodes like camera footage, not like noise),
    its `n_frames` frames played `loops` times over: a longer video with the same content."""
    width, height = size
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (height // 8 + 1, (width + 8 * n_frames) // 8 + 1), dtype=np.uint8)
    texture = texture.repeat(8, 0).repeat(8, 1)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for t in list(range(n_frames)) * loops:
            frame = np.ascontiguousarray(texture[:height, 2 * t:2 * t + width])
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="gray")))
        container.mux(stream.encode())
    return path
