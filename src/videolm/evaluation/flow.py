"""Optical-flow baselines (OpenCV's Farneback dense flow), as in the paper's comparisons.

- Extrapolation assumes constant flow: the motion between the last two context frames
  repeats, and the last frame is warped forward by it once per generated step.
- Interpolation is linear in flow space: the frame between two others is each of them
  warped part of the way along the flow to the other, the two warps averaged.

Warps are backward (every output pixel samples its source, bilinear, borders repeated),
with the flow read at the output pixel instead of at its source: the usual approximation,
good where the flow is smooth.
"""

from __future__ import annotations

import cv2
import numpy as np

# OpenCV's sample settings for calcOpticalFlowFarneback.
FARNEBACK = dict(pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0)


def _gray8(frame: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.clip(np.rint(frame), 0, 255).astype(np.uint8))


def farneback(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """(H, W, 2) float32 flow (dx, dy) with first(y, x) ~ second(y + dy, x + dx)."""
    return cv2.calcOpticalFlowFarneback(_gray8(first), _gray8(second), None, **FARNEBACK)


def warp(frame: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """(H, W) float32: out(y, x) = frame(y + flow_y(y, x), x + flow_x(y, x)), bilinear."""
    h, w = frame.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return cv2.remap(np.asarray(frame, np.float32), xs + flow[..., 0], ys + flow[..., 1],
                     interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def extrapolate_flow(previous: np.ndarray, last: np.ndarray, steps: int) -> np.ndarray:
    """(steps, H, W) float32: `last` moved on by 1 .. steps times the flow previous -> last."""
    back = farneback(last, previous)  # last(x) ~ previous(x + back(x)): motion per frame is -back
    return np.stack([warp(last, s * back) for s in range(1, steps + 1)])


def interpolate_flow(before: np.ndarray, after: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """(H, W) float32: the frame at fraction `alpha` of the way from `before` to `after`."""
    from_before, from_after = flow_warps(before, after, alpha)
    return (1 - alpha) * from_before + alpha * from_after


def flow_warps(before: np.ndarray, after: np.ndarray, alpha: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """The two (H, W) float32 estimates `interpolate_flow` averages: `before` and `after` each
    warped to fraction `alpha` of the way. Where they disagree, the flow is wrong."""
    return warp(before, alpha * farneback(after, before)), warp(after, (1 - alpha) * farneback(before, after))


def interpolation_with_doubt(before: np.ndarray, after: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the flow interpolation of the frame halfway between `before` and `after`, |the difference
    of its two warps|): the estimate and where it cannot be trusted, both (H, W) float32."""
    from_before, from_after = flow_warps(before, after)
    return (from_before + from_after) / 2, np.abs(from_before - from_after)
