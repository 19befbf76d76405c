"""Optical-flow baselines: constant-flow extrapolation and flow interpolation on smooth moving scenes."""

from __future__ import annotations

import numpy as np
from conftest import smooth_scene

from videolm.evaluation.flow import extrapolate_flow, interpolate_flow
from videolm.image_metrics import psnr


def test_flow_extrapolation_follows_constant_motion():
    frames = smooth_scene(n=5)
    predicted = extrapolate_flow(frames[0], frames[1], 3)
    assert predicted.shape == (3, *frames.shape[1:]) and predicted.dtype == np.float32
    inner = (slice(8, -8), slice(8, -8))  # away from borders the warp cannot fill
    for s in range(3):
        truth = frames[2 + s][inner]
        assert psnr(truth, predicted[s][inner]) > psnr(truth, frames[1][inner]) + 8


def test_flow_interpolation_beats_the_pixel_average_on_motion():
    frames = smooth_scene(shift=(0.0, 3.0), n=3)
    middle = interpolate_flow(frames[0], frames[2])
    inner = (slice(8, -8), slice(8, -8))
    assert psnr(frames[1][inner], middle[inner]) > psnr(frames[1][inner], ((frames[0] + frames[2]) / 2)[inner]) + 5
    still = frames[:1].repeat(2, 0)
    np.testing.assert_allclose(interpolate_flow(still[0], still[1]), still[0], atol=0.5)
