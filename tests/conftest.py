"""Shared fixtures and helpers: real video files written with PyAV, tiny synthetic textures, a tiny
codebook, tiny code grids and tiny models."""

from __future__ import annotations

import videolm  # noqa: F401 (first: it sets how OpenMP threads wait, before torch loads)

# isort: split

from pathlib import Path

import av
import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from videolm.codes.codebook import Codebook
from videolm.codes.grids import CodeGrid, create_codes_file
from videolm.config import ModelConfig
from videolm.model.build import build_model

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


K, PATCH = 16, 4  # the tiny codebook: 16 codes of 4x4 pixels


@pytest.fixture(scope="session")
def codebook() -> Codebook:
    """16 random 4x4 atoms, gray levels 0..200."""
    centroids = np.random.default_rng(1).uniform(0, 4, (K, PATCH * PATCH)).astype(np.float32)
    return Codebook(centroids, 50.0, PATCH)


def moving_grid(seed: int = 0, video_id: str = "clip", n: int = 30, shape=(6, 8), train_end: int = 18,
                val_end: int = 22) -> CodeGrid:
    """(n, rows, cols) random codes moving one cell to the right per frame (wrapping)."""
    base = np.random.default_rng(seed).integers(0, K, shape)
    codes = np.stack([np.roll(base, t, axis=1) for t in range(n)]).astype(np.uint16)
    return CodeGrid(video_id, codes, train_end, val_end)


def tiny_model(codebook: Codebook, name: str = "rcnn", head: str = "atom", seed: int = 0, **cfg):
    """An untrained model with 8 embedding dims and 8 feature maps (other `ModelConfig` keys in `cfg`)."""
    torch.manual_seed(seed)
    cfg = {"embed_dim": 8, "hidden": 8, "kernel_size": 3, "dropout": 0.0, **cfg}
    return build_model(ModelConfig(name=name, head=head, **cfg), codebook).eval()


def frames_of(codebook, grids):
    """True frames: the codebook's rendering of the codes plus a little seeded noise."""
    rng = np.random.default_rng(7)
    out = {}
    for g in grids:
        clean = codebook.decode(g.codes.astype(np.int64), codebook.size)
        out[g.video_id] = np.clip(np.rint(clean + rng.normal(0, 2, clean.shape)), 0, 255).astype(np.uint8)
    return out


def smooth_scene(seed=0, shape=(40, 56), shift=(1.0, 2.0), n=4) -> np.ndarray:
    """(n, H, W) float frames of a smooth random texture translating by `shift` (dy, dx) per frame."""
    big = gaussian_filter(np.random.default_rng(seed).uniform(0, 255, (shape[0] + 40, shape[1] + 40)), 3)
    big = (big - big.min()) / (big.max() - big.min()) * 200 + 20
    frames = []
    for t in range(n):
        y, x = 20 - round(shift[0] * t), 20 - round(shift[1] * t)
        frames.append(big[y:y + shape[0], x:x + shape[1]])
    return np.stack(frames)


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


def save_grid(grid, path, codebook, stride: int, source: str) -> None:
    """Write `grid` as a code file (what the encode stage writes), for tests that make their own grids."""
    with create_codes_file(path, grid.codes.shape, codebook, stride, source, grid.train_end, grid.val_end) as codes:
        codes[...] = grid.codes[:]
