"""Patch grids: cutting frames into patches and putting them back, sampling random patches."""

from __future__ import annotations

import numpy as np
import pytest

from videolm.codes.patches import PatchSample, extract_patches, grid_shape, reconstruct, sample_patches
from videolm.errors import VideoLMError


def random_frames(n=3, h=30, w=44, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w)).astype(np.uint8)


@pytest.mark.parametrize("h, w, size, stride, expected", [
    (48, 64, 8, 8, (6, 8)),
    (50, 67, 8, 8, (6, 8)),  # the remainder is cropped
    (48, 64, 8, 4, (11, 15)),
    (8, 8, 8, 8, (1, 1)),
    (10, 9, 4, 3, (3, 2)),
])
def test_grid_shape(h, w, size, stride, expected):
    assert grid_shape(h, w, size, stride) == expected
    rows, cols = expected
    ch, cw = (rows - 1) * stride + size, (cols - 1) * stride + size  # the pixels the grid covers
    assert ch <= h and cw <= w and h - ch < stride and w - cw < stride  # the remainder is under one stride


@pytest.mark.parametrize("h, w", [(7, 64), (48, 7), (3, 3)])
def test_grid_shape_frame_smaller_than_patch(h, w):
    with pytest.raises(ValueError, match="smaller"):
        grid_shape(h, w, 8, 8)
    with pytest.raises(ValueError):
        extract_patches(np.zeros((1, h, w), np.uint8), 8, 8)


def test_extract_patches_layout():
    frames = random_frames()
    patches = extract_patches(frames, 8, 4)
    assert patches.dtype == np.float32
    assert patches.shape == (3, 6, 10, 64)
    # patch (t, r, c) is the frame region at (r*stride, c*stride), pixels row-major
    for t, r, c in [(0, 0, 0), (1, 2, 3), (2, 5, 9)]:
        region = frames[t, r * 4:r * 4 + 8, c * 4:c * 4 + 8].reshape(-1)
        np.testing.assert_array_equal(patches[t, r, c], region)


@pytest.mark.parametrize("h, w, size, stride", [
    (32, 48, 8, 8),
    (35, 50, 8, 8),  # not a multiple of the patch: the remainder is cropped
    (30, 44, 8, 4),  # overlapping
    (30, 44, 8, 3),  # overlapping, stride not dividing the size
    (17, 21, 4, 1),
])
def test_reconstruct_round_trip(h, w, size, stride):
    frames = random_frames(h=h, w=w)
    patches = extract_patches(frames, size, stride)
    rebuilt = reconstruct(patches, size, stride)
    rows, cols = grid_shape(h, w, size, stride)
    ch, cw = (rows - 1) * stride + size, (cols - 1) * stride + size
    assert rebuilt.shape == (3, ch, cw)
    np.testing.assert_allclose(rebuilt, frames[:, :ch, :cw].astype(np.float32), atol=1e-4)


def test_reconstruct_averages_overlaps():
    # two overlapping 2x2 patches side by side (stride 1): the shared column is averaged
    patches = np.array([[[[1, 1, 1, 1], [3, 3, 3, 3]]]], np.float32)  # (1, 1, 2, 4)
    rebuilt = reconstruct(patches, 2, 1)
    np.testing.assert_allclose(rebuilt[0], [[1, 2, 3], [1, 2, 3]])


def test_sample_patches_are_frame_regions():
    n_frames, h, w, size = 4, 20, 30, 5
    # every pixel value is unique, so a patch's first pixel tells where it was cut from
    frames = np.arange(n_frames * h * w, dtype=np.float64).reshape(n_frames, h, w)
    patches = sample_patches(frames, 200, size, np.random.default_rng(0))
    assert patches.shape == (200, size * size) and patches.dtype == np.float32
    positions = set()
    for patch in patches:
        t, rest = divmod(int(patch[0]), h * w)
        y, x = divmod(rest, w)
        assert y + size <= h and x + size <= w
        np.testing.assert_array_equal(patch, frames[t, y:y + size, x:x + size].reshape(-1))
        positions.add((t, y, x))
    assert len(positions) > 150  # random positions, not a few repeated ones
    assert {t for t, _, _ in positions} == set(range(n_frames))
    # any pixel offset, not only the grid positions
    assert any(y % size or x % size for _, y, x in positions)


def test_sample_patches_seeded():
    frames = random_frames()
    a = sample_patches(frames, 50, 8, np.random.default_rng(7))
    b = sample_patches(frames, 50, 8, np.random.default_rng(7))
    c = sample_patches(frames, 50, 8, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_patch_sample_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    sample = PatchSample(rng.normal(size=(20, 16)).astype(np.float32), rng.normal(size=(5, 16)).astype(np.float32),
                         37.5, 4)
    sample.save(tmp_path / "patches.h5")
    loaded = PatchSample.load(tmp_path / "patches.h5")
    np.testing.assert_array_equal(loaded.train, sample.train)
    np.testing.assert_array_equal(loaded.heldout, sample.heldout)
    assert (loaded.std, loaded.size) == (37.5, 4)
    with pytest.raises(VideoLMError, match="nothing.h5"):
        PatchSample.load(tmp_path / "nothing.h5")
