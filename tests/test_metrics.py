"""Metric functions on known inputs: PSNR, SSIM (against scikit-image), the moving mask, pooling."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import smooth_scene
from scipy.ndimage import correlate1d, gaussian_filter
from skimage.metrics import structural_similarity

from videolm.evaluation.scoring import bits_per_patch, perplexity
from videolm.image_metrics import (
    Blockiness,
    Pool,
    block_differences,
    gaussian_window,
    interior,
    moving_mask,
    psnr,
    psnr_from_mse,
    ssim_map,
)


def pair(seed: int = 0, shape=(48, 64)) -> tuple[np.ndarray, np.ndarray]:
    """A smooth-ish uint8 frame and a shifted, noisy, contrast-changed version of it."""
    rng = np.random.default_rng(seed)
    a = gaussian_filter(rng.uniform(0, 255, shape), 2) * 3 - 255
    a = np.clip(a + rng.normal(0, 8, shape), 0, 255).astype(np.uint8)
    b = np.roll(a, 2, axis=1).astype(np.float64) * 0.9 + 12 + rng.normal(0, 10, shape)
    return a, np.clip(np.rint(b), 0, 255).astype(np.uint8)


def ssim(a, b, mask=None) -> float | None:
    """Mean SSIM as evaluation pools it: over the interior, or over the interior of `mask`."""
    pool = Pool()
    pool.add(a, b, np.zeros(a.shape, bool) if mask is None else mask)
    return pool.result()["ssim" if mask is None else "ssim_moving"]


def reference_ssim(a, b, full=False):
    return structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 data_range=255, full=full)


# ---------------------------------------------------------------- PSNR, bits


def test_psnr_of_identical_frames_is_infinite():
    a, _ = pair()
    assert psnr(a, a) == math.inf
    assert psnr_from_mse(0.0) == math.inf


def test_psnr_known_values():
    a = np.zeros((4, 4))
    assert psnr(a, a + 1) == pytest.approx(10 * math.log10(255 ** 2))  # mse 1: 48.13 dB
    assert psnr(a, a + 255) == pytest.approx(0.0)
    assert psnr_from_mse(255 ** 2 / 100) == pytest.approx(20.0)
    assert psnr(a, a + 1, peak=1.0) == pytest.approx(0.0)


def test_bits_and_perplexity():
    assert bits_per_patch(math.log(2)) == pytest.approx(1.0)
    assert perplexity(math.log(7)) == pytest.approx(7.0)
    assert perplexity(0.0) == 1.0


# ---------------------------------------------------------------- SSIM


def test_gaussian_window_is_the_11_tap_sigma_1_5_kernel():
    w = gaussian_window()
    assert w.shape == (11,) and w.sum() == pytest.approx(1.0)
    impulse = np.zeros(31)
    impulse[15] = 1
    np.testing.assert_allclose(w, gaussian_filter(impulse, 1.5, truncate=3.5)[10:21], atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ssim_matches_scikit_image(seed):
    a, b = pair(seed)
    assert ssim(a, b) == pytest.approx(reference_ssim(a, b), abs=1e-6)
    assert 0.2 < ssim(a, b) < 0.95  # a non-trivial pair


def test_ssim_map_matches_scikit_image_interior():
    a, b = pair(3)
    _, full = reference_ssim(a, b, full=True)
    s = ssim_map(a, b)
    assert s.shape == (a.shape[0] - 10, a.shape[1] - 10)
    np.testing.assert_allclose(s, full[5:-5, 5:-5], atol=1e-9)


def test_ssim_known_values_and_symmetry():
    a, b = pair(4)
    assert ssim(a, a) == pytest.approx(1.0)
    assert ssim(a, b) == pytest.approx(ssim(b, a))
    flat = np.full((20, 20), 128.0)
    assert ssim(flat, flat) == pytest.approx(1.0)
    # two flat frames: only the luminance term is left, (2 m1 m2 + C1) / (m1^2 + m2^2 + C1)
    c1 = (0.01 * 255) ** 2
    assert ssim(flat, flat + 50) == pytest.approx((2 * 128 * 178 + c1) / (128 ** 2 + 178 ** 2 + c1))


def test_ssim_with_mask_averages_the_masked_interior():
    a, b = pair(5)
    mask = np.zeros(a.shape, bool)
    mask[10:30, 20:40] = True
    _, full = reference_ssim(a, b, full=True)
    assert ssim(a, b, mask) == pytest.approx(full[10:30, 20:40].mean(), abs=1e-9)
    assert ssim(a, b, np.ones(a.shape, bool)) == pytest.approx(ssim(a, b))
    border_only = np.zeros(a.shape, bool)
    border_only[:5] = True
    assert ssim(a, b, border_only) is None  # no interior pixel: undefined


def test_ssim_rejects_bad_shapes():
    with pytest.raises(ValueError, match="11x11"):
        ssim_map(np.zeros((10, 40)), np.zeros((10, 40)))
    with pytest.raises(ValueError, match="one shape"):
        ssim_map(np.zeros((20, 20)), np.zeros((20, 21)))


# ---------------------------------------------------------------- moving region


def test_moving_mask_is_strictly_above_threshold():
    last = np.full((3, 3), 100, np.uint8)
    frame = last.astype(np.int64) + np.array([[0, 10, 11], [-11, -10, 0], [200 - 100, 0, -100]])
    expected = np.array([[0, 0, 1], [1, 0, 0], [1, 0, 1]], bool)
    np.testing.assert_array_equal(moving_mask(frame.astype(np.uint8), last, 10), expected)
    assert not moving_mask(last, last, 0).any()


def test_interior_removes_a_five_pixel_border():
    x = np.arange(30 * 40).reshape(30, 40)
    assert interior(x).shape == (20, 30) and interior(x)[0, 0] == x[5, 5]


def test_pool_results():
    truth = smooth_scene(n=1)[0]
    pool = Pool()
    pool.add(truth, truth, np.zeros(truth.shape, bool))
    assert pool.result() == {"psnr": math.inf, "ssim": pytest.approx(1.0), "sharpness": math.inf,
                             "psnr_moving": None, "ssim_moving": None, "sharpness_moving": None,
                             "blockiness": pytest.approx(blockiness(truth))}
    pool = Pool()
    moving = np.zeros(truth.shape, bool)
    moving[10:20, 10:30] = True
    pool.add(truth, truth + 5 * moving, moving)  # errors only where moving
    result = pool.result()
    assert result["psnr_moving"] == pytest.approx(20 * math.log10(255 / 5))
    assert result["psnr"] == pytest.approx(10 * math.log10(255 ** 2 / (25 * moving.mean())))


def test_sharpness_is_the_gradient_difference_of_mathieu_et_al():
    """A line of height d in a flat frame: g differs by d on two columns of the H-1 x W-1 pixels
    with both neighbours, so the mean |g difference| is 2d / (W - 1)."""
    h, w, d = 20, 30, 40.0
    truth, estimate = np.zeros((h, w)), np.zeros((h, w))
    estimate[:, 12] = d
    pool = Pool()
    pool.add(truth, estimate, np.ones((h, w), bool))
    expected = 10 * math.log10(255 ** 2 / (2 * d / (w - 1)))
    assert pool.result()["sharpness"] == pytest.approx(expected)
    assert pool.result()["sharpness_moving"] == pytest.approx(expected)


def test_sharpness_ranks_a_blur_below_a_brightness_shift_that_psnr_prefers():
    """PSNR rewards the blurry mean; sharpness does not: an edge blurred keeps a better PSNR than
    the sharp frame made brighter, and a far worse sharpness (the shift leaves every gradient)."""
    truth = smooth_scene(n=1)[0].astype(np.float64)
    truth[:, 30:] += 60  # a sharp edge
    blurred = correlate1d(correlate1d(truth, np.ones(7) / 7, axis=0), np.ones(7) / 7, axis=1)
    shifted = truth + 20
    every = np.ones(truth.shape, bool)
    blur, shift = Pool(), Pool()
    blur.add(truth, blurred, every)
    shift.add(truth, shifted, every)
    assert blur.result()["psnr"] > shift.result()["psnr"] + 5  # measured 28.3 vs 22.1 dB
    assert shift.result()["sharpness"] > 150 > 45 > blur.result()["sharpness"]  # ~193 (float rounding) vs 41.2


# ---------------------------------------------------------------- blockiness


def blockiness(frame: np.ndarray, block: int = 8) -> float:
    pool = Blockiness(block)
    pool.add(frame)
    return pool.result()


def test_block_differences_split_the_neighbours_at_the_grid():
    """A 16 x 16 frame of two 8-pixel-wide flat halves: the only differences are the 16 across
    column 8 (a boundary), each 10; every other neighbour pair is equal."""
    frame = np.zeros((16, 16))
    frame[:, 8:] = 10
    across, n_across, within, n_within = block_differences(frame, 8)
    assert (across, n_across) == (160, 2 * 16)  # one boundary in the rows' direction, one in the columns'
    assert (within, n_within) == (0, 2 * 14 * 16)
    frame = np.zeros((16, 16))
    frame[:, 5:] = 10  # the same step inside a block
    across, _, within, _ = block_differences(frame, 8)
    assert (across, within) == (0, 160)


def test_a_natural_frame_has_no_grid_and_a_frame_of_blocks_has_one():
    scene = smooth_scene(n=1)[0].astype(np.float64)
    assert blockiness(scene) == pytest.approx(1, abs=0.15)
    blocks = scene.reshape(scene.shape[0] // 8, 8, scene.shape[1] // 8, 8).mean((1, 3))  # one value per 8x8 block
    blocky = np.kron(blocks, np.ones((8, 8))) + 0.3 * (scene - scene.mean()) / scene.std()
    assert blockiness(blocky) > 5
    assert blockiness(np.roll(blocky, 4, 1)) < blockiness(blocky)  # a grid off the codebook's is not counted


def test_blockiness_is_pooled_over_frames():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0, 255, (2, 24, 32))
    pooled = Blockiness(8)
    pooled.add(a)
    pooled.add(b)
    parts = [block_differences(f, 8) for f in (a, b)]
    across, n_across, within, n_within = (sum(p[i] for p in parts) for i in range(4))
    assert pooled.result() == pytest.approx((across / n_across) / (within / n_within))
    assert Blockiness(8).result() is None
