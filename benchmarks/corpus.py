"""A corpus of many clips of real footage at UCF-101's frame size and rate, for the scale drill
(`drill.py`): h264 clips of 320x240 at 25 fps written with PyAV, each a camera moving over one
of the sample videos (`videolm.data.samples`) as it plays: a crop window that pans, zooms or
both, with its own start frame, path, speed and zoom drawn from a seed.

Why real footage moving under a camera: it decodes, compresses and quantizes like UCF-101's
clips, which a synthetic texture (`synthetic.py`) does not. The corpus is the same bytes on every
run for the same arguments (for one x264 version): `write_clip` says what that takes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from videolm.data.samples import find_sample_files
from videolm.errors import VideoLMError

WIDTH, HEIGHT, FPS = 320, 240, 25  # UCF-101's frame size and rate


def load_sources() -> list[tuple[str, np.ndarray]]:
    """(name, (T, H, W, 3) uint8 RGB frames) of every installed sample video, in order."""
    import av  # here: the device check (`device_check.py`) uses `camera` on machines without PyAV

    sources = []
    for path in find_sample_files():
        with av.open(str(path)) as container:
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
        sources.append((path.name, np.stack(frames)))
    return sources


@dataclass(frozen=True)
class Camera:
    """One clip's camera over a source video: at each frame a 320x240 window of `scale` source
    pixels per output pixel, whose top-left corner lies at `place` (0..1, x and y) of the room
    the window leaves in the source frame. Scale and place move from their first to their last
    value with an ease-in, ease-out curve (a camera starts and stops smoothly). The source plays
    from `start`, forward then backward at its ends, so that no frame jumps."""

    kind: str  # pan, zoom or pan+zoom
    start: int
    scale: tuple[float, float]
    place: tuple[tuple[float, float], tuple[float, float]]

    def window(self, t: int, n_frames: int, width: int, height: int) -> np.ndarray:
        """The (2, 3) affine map from output pixels to source pixels at frame t of n_frames."""
        ease = 0.5 - 0.5 * math.cos(math.pi * t / max(n_frames - 1, 1))
        scale = self.scale[0] + (self.scale[1] - self.scale[0]) * ease
        (x0, y0), (x1, y1) = self.place
        x = (x0 + (x1 - x0) * ease) * (width - WIDTH * scale)
        y = (y0 + (y1 - y0) * ease) * (height - HEIGHT * scale)
        return np.array([[scale, 0, x], [0, scale, y]], np.float64)

    def source_frame(self, t: int, n_source: int) -> int:
        period = 2 * (n_source - 1)
        i = (self.start + t) % period
        return i if i < n_source else period - i


def camera(kind: str, n_source: int, width: int, height: int, rng: np.random.Generator) -> Camera:
    """A random camera of `kind` over a width x height source: the window keeps within the
    frame, between half and 95% of the largest 4:3 window, so that it always has room to move."""
    largest = 0.95 * min(width / WIDTH, height / HEIGHT)
    low, high = largest / 2, largest
    if kind == "pan":  # a fixed zoom with room to pan: in the lower half of the range
        scale = (rng.uniform(low, (low + high) / 2),) * 2
    else:  # zoom in or out across most of the range
        scale = (low + (high - low) * rng.uniform(0, 0.3), high - (high - low) * rng.uniform(0, 0.3))
        scale = scale if rng.random() < 0.5 else scale[::-1]
    first = tuple(rng.uniform(0, 1, 2))
    last = tuple(rng.uniform(0, 1, 2)) if kind != "zoom" else first  # zoom alone: about a fixed point
    return Camera(kind, int(rng.integers(n_source)), scale, (first, last))


def write_clip(path: Path, source: np.ndarray, cam: Camera, n_frames: int) -> None:
    """An h264 clip of the camera's view of `source` (T, H, W, 3), x264's default settings but two,
    so that the same frames give the same bytes:
    - one thread: x264's output depends on its thread count, which follows the machine's cores
      by default (one thread is also the fastest at this frame size);
    - no macroblock-tree rate control (`mbtree=0`): with it, the same frames gave other bytes
      from one encoding to the next within one process, even on one thread (PyAV 18's x264;
      `tests/test_benchmarks.py` makes a corpus twice and compares the bytes)."""
    import av

    n_source, height, width = source.shape[:3]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS, options={"threads": "1", "x264-params": "mbtree=0"})
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for t in range(n_frames):
            view = cv2.warpAffine(source[cam.source_frame(t, n_source)], cam.window(t, n_frames, width, height),
                                  (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                  borderMode=cv2.BORDER_REPLICATE)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(view, format="rgb24")))
        container.mux(stream.encode())


def make_corpus(folder: Path, clips: int, seconds: float, seed: int) -> dict:
    """`clips` clips `folder/clipNNN.mp4` of `seconds` each, the same bytes for the same
    arguments: clip i films source i mod 3 with the camera kind (i // 3) mod 3, so every
    source and kind is used evenly, and draws the rest from the seed (seed, i). Returns the
    corpus's facts: clips, frames, frames per clip, bytes, seconds taken, source names."""
    folder.mkdir(parents=True)
    n_frames = round(seconds * FPS)
    if n_frames < 2:
        raise VideoLMError(f"--seconds {seconds}: at least 2 frames are needed ({2 / FPS} s at {FPS} fps)")
    start = time.perf_counter()
    sources = load_sources()
    kinds = ["pan", "zoom", "pan+zoom"]
    for i in range(clips):
        name, frames = sources[i % len(sources)]
        rng = np.random.default_rng([seed, i])
        cam = camera(kinds[i // len(sources) % len(kinds)], len(frames), frames.shape[2], frames.shape[1], rng)
        write_clip(folder / f"clip{i:03d}.mp4", frames, cam, n_frames)
    return {"clips": clips, "frames": clips * n_frames, "frames_per_clip": n_frames,
            "bytes": sum(clip.stat().st_size for clip in folder.iterdir()),
            "seconds": time.perf_counter() - start, "sources": [name for name, _ in sources]}
