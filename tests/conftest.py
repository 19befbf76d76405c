"""Shared helpers: real video files written with PyAV, tiny synthetic textures."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch

# The tensors in these tests are tiny: one thread is fastest, and spares a small CI machine's
# cores from OpenMP spin-waiting (with 2 threads on a busy 2-core box a step is 20x slower).
torch.set_num_threads(1)

H, W = 48, 64  # frame size of the synthetic clips (mpeg4 needs even sides)
N_FRAMES = 20
SHIFT = 8  # pixels the texture moves per frame: one 8x8 patch


def write_video(path, frames, fps=25, codec="mpeg4"):
    """Write `frames` (uint8 (H, W) gray or (H, W, 3) rgb arrays) to a video file with PyAV.

    The quality is set high (qscale 1, high bit rate) so that decoded pixels are close to
    the written ones. Returns `path`.
    """
    frames = [np.ascontiguousarray(f, dtype=np.uint8) for f in frames]
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = 20_000_000
        stream.options = {"qscale": "1"}
        for frame in frames:
            fmt = "gray" if frame.ndim == 2 else "rgb24"
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format=fmt)):
                container.mux(packet)
        for packet in stream.encode():  # flush the encoder
            container.mux(packet)
    return Path(path)


def texture(seed: int = 0, height: int = H, width: int = 2 * W, block: int = 4) -> np.ndarray:
    """A random texture of `block` x `block` squares (compresses well, so decodes close)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // block, width // block))
    return np.kron(coarse, np.ones((block, block))).astype(np.uint8)


def moving_frames(seed: int = 0, n_frames: int = N_FRAMES, shift: int = SHIFT) -> np.ndarray:
    """(T, H, W) uint8: a texture moving `shift` pixels to the right per frame (wrapping)."""
    tex = texture(seed)
    return np.stack([np.roll(tex, shift * t, axis=1)[:, :W] for t in range(n_frames)])


@pytest.fixture
def moving_video(tmp_path) -> Path:
    """A short mpeg4 clip of a random texture moving one 8-px patch per frame."""
    return write_video(tmp_path / "moving.mp4", moving_frames())


@pytest.fixture(autouse=True)
def _restore_torch_globals():
    """`train_model` switches on deterministic algorithms globally; undo it after each test."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    threads = torch.get_num_threads()
    yield
    if torch.are_deterministic_algorithms_enabled() != deterministic:
        torch.use_deterministic_algorithms(deterministic)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
