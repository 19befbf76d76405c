"""Image metrics, pooled over many frames: PSNR, SSIM, sharpness, the moving-region mask, and `Pool`.

Every PSNR is pooled over the pixels it covers (squared errors summed first, then dB), and
every SSIM is the mean of the SSIM map over the same pixels (minus a 5-pixel border).

SSIM is the standard form of Wang, Bovik, Sheikh and Simoncelli (2004): local means,
variances and covariance weighted by an 11x11 Gaussian window (sigma 1.5, population
covariance), K1 = 0.01, K2 = 0.03, L = 255, averaged over the pixels whose window lies
inside the frame (a border of 5 pixels is left out, as Wang et al.'s 'valid' filtering
and scikit-image's `structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=255)` do).

Sharpness is the sharpness difference of Mathieu, Couprie and LeCun (2016), in dB: with the
gradient magnitude g(Y) = |Y[i, j] - Y[i - 1, j]| + |Y[i, j] - Y[i, j - 1]| (pixels with both
neighbours), 10 log10(255^2 / mean |g(truth) - g(estimate)|). PSNR rewards a blurry mean; this
does not: a blur loses the truth's gradients and scores low, as does a copy whose edges are in
the wrong place. Higher is better, like PSNR; pooled the same way (differences summed first).

Blockiness is the codebook grid's visibility: the mean absolute difference between neighbouring
pixels across the boundaries of the `block` x `block` cells (a pixel at a multiple of `block`
and the one before it, in rows and in columns), divided by the mean absolute difference
between all other neighbours. A natural frame has about 1 (the grid means nothing to it);
a frame made of independent blocks has more, however sharp it is. It is the ratio of the
generalized block-edge impairment metric (Wu and Yuen 1997) without its weighting by local
brightness, pooled as PSNR is (differences summed over frames first, then the ratio).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import correlate1d

SSIM_SIGMA = 1.5
SSIM_RADIUS = 5  # window 11 x 11 = 2 * radius + 1
SSIM_K1, SSIM_K2 = 0.01, 0.03


def psnr(reference: np.ndarray, estimate: np.ndarray, peak: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB. Identical inputs give +inf (reported as such)."""
    mse = float(np.mean((np.asarray(reference, np.float64) - np.asarray(estimate, np.float64)) ** 2))
    return psnr_from_mse(mse, peak)


def psnr_from_mse(mse: float, peak: float = 255.0) -> float:
    """PSNR in dB of a mean squared error (pooled over many frames); 0 gives +inf."""
    return math.inf if mse == 0 else 10.0 * math.log10(peak ** 2 / mse)


def as_db(value: float | None) -> str:
    """A PSNR-like figure for people: "12.34 dB", or "n/a" where nothing was pooled (None)."""
    return "n/a" if value is None else f"{value:.2f} dB"


def gaussian_window(radius: int = SSIM_RADIUS, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """(2 * radius + 1,) 1-D Gaussian weights summing to 1 (the 2-D window is its outer product)."""
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def _blur(image: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Separable weighted local mean; values within `radius` of the border are not used later."""
    return correlate1d(correlate1d(image, window, axis=0, mode="reflect"), window, axis=1, mode="reflect")


def ssim_map(reference: np.ndarray, estimate: np.ndarray, data_range: float = 255.0) -> np.ndarray:
    """Per-pixel SSIM of two gray (H, W) frames, on the interior only: (H - 10, W - 10).

    Pixel (i, j) of the result is the SSIM of the 11x11 windows centred on pixel
    (i + 5, j + 5) of the inputs. Frames smaller than 11x11 raise ValueError.
    """
    x = np.asarray(reference, np.float64)
    y = np.asarray(estimate, np.float64)
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"SSIM needs two gray frames of one shape, got {x.shape} and {y.shape}")
    r = SSIM_RADIUS
    if min(x.shape) < 2 * r + 1:
        raise ValueError(f"SSIM needs frames of at least {2 * r + 1}x{2 * r + 1} pixels, got {x.shape}")
    w = gaussian_window()
    mx, my = _blur(x, w), _blur(y, w)
    vx = _blur(x * x, w) - mx * mx
    vy = _blur(y * y, w) - my * my
    cxy = _blur(x * y, w) - mx * my
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s[r:-r, r:-r]


def interior(image: np.ndarray) -> np.ndarray:
    """The part of an (H, W) array that `ssim_map` covers (a border of 5 pixels removed)."""
    r = SSIM_RADIUS
    return image[r:-r, r:-r]


def gradient_magnitude(image: np.ndarray) -> np.ndarray:
    """(H - 1, W - 1): |Y[i, j] - Y[i - 1, j]| + |Y[i, j] - Y[i, j - 1]| for i, j >= 1."""
    y = np.asarray(image, np.float64)
    return np.abs(y[1:, 1:] - y[:-1, 1:]) + np.abs(y[1:, 1:] - y[1:, :-1])


def moving_mask(frame: np.ndarray, reference: np.ndarray, threshold: float) -> np.ndarray:
    """(H, W) bool: where `frame` differs from `reference` (e.g. the last context frame) by
    more than `threshold` gray levels."""
    return np.abs(np.asarray(frame, np.float64) - np.asarray(reference, np.float64)) > threshold


def block_differences(image: np.ndarray, block: int) -> tuple[float, int, float, int]:
    """(sum, count) of the absolute neighbour differences across `block`-pixel boundaries, then
    (sum, count) of all the others, rows and columns together, of a gray (H, W) frame."""
    y = np.asarray(image, np.float64)
    across, within, n_across, n_within = 0.0, 0.0, 0, 0
    for d in (y[1:] - y[:-1], (y[:, 1:] - y[:, :-1]).T):  # d[i] = pixel i + 1 minus pixel i
        boundary = (np.arange(1, len(d) + 1) % block) == 0
        a = np.abs(d)
        across += float(a[boundary].sum())
        within += float(a[~boundary].sum())
        n_across += int(boundary.sum()) * a.shape[1]
        n_within += int((~boundary).sum()) * a.shape[1]
    return across, n_across, within, n_within


@dataclass
class Blockiness:
    """Pooled blockiness of many frames (`block_differences` summed, then the ratio)."""

    block: int
    across: float = 0.0
    n_across: int = 0
    within: float = 0.0
    n_within: int = 0

    def add(self, frame: np.ndarray) -> None:
        a, na, w, nw = block_differences(frame, self.block)
        self.across, self.n_across, self.within, self.n_within = (
            self.across + a, self.n_across + na, self.within + w, self.n_within + nw)

    def result(self) -> float | None:
        """Mean difference across block boundaries over the mean elsewhere; None without both."""
        if not (self.n_across and self.n_within and self.within):
            return None
        return (self.across / self.n_across) / (self.within / self.n_within)


MEASURES = ("psnr", "ssim", "sharpness", "psnr_moving", "ssim_moving", "sharpness_moving",
            "blockiness")  # what a `Pool` reports


@dataclass
class Pool:
    """Pooled PSNR, SSIM and sharpness terms of one method (at one horizon), full frame and moving
    region, and the blockiness of its frames on the codebook's grid of `block`-pixel cells."""

    block: int = 8  # the patch stride of the codes (the paper's 8)
    sq: float = 0.0
    pixels: int = 0
    sq_moving: float = 0.0
    pixels_moving: int = 0
    ssim: float = 0.0
    ssim_pixels: int = 0
    ssim_moving: float = 0.0
    ssim_pixels_moving: int = 0
    grad: float = 0.0  # sum of |g(truth) - g(estimate)|
    grad_pixels: int = 0
    grad_moving: float = 0.0
    grad_pixels_moving: int = 0
    blocks: Blockiness | None = None

    def __post_init__(self):
        self.blocks = Blockiness(self.block)

    def add(self, truth: np.ndarray, estimate: np.ndarray, moving: np.ndarray) -> None:
        err = (np.asarray(truth, np.float64) - np.asarray(estimate, np.float64)) ** 2
        self.sq += float(err.sum())
        self.pixels += err.size
        self.sq_moving += float(err[moving].sum())
        self.pixels_moving += int(moving.sum())
        s, inner = ssim_map(truth, estimate), interior(moving)
        self.ssim += float(s.sum())
        self.ssim_pixels += s.size
        self.ssim_moving += float(s[inner].sum())
        self.ssim_pixels_moving += int(inner.sum())
        g, inner = np.abs(gradient_magnitude(truth) - gradient_magnitude(estimate)), moving[1:, 1:]
        self.grad += float(g.sum())
        self.grad_pixels += g.size
        self.grad_moving += float(g[inner].sum())
        self.grad_pixels_moving += int(inner.sum())
        self.blocks.add(estimate)

    def result(self) -> dict[str, float | None]:
        """The `MEASURES`; None where no pixel was pooled."""
        return {"psnr": _ratio_psnr(self.sq, self.pixels), "ssim": _ratio(self.ssim, self.ssim_pixels),
                "sharpness": _ratio_sharpness(self.grad, self.grad_pixels),
                "psnr_moving": _ratio_psnr(self.sq_moving, self.pixels_moving),
                "ssim_moving": _ratio(self.ssim_moving, self.ssim_pixels_moving),
                "sharpness_moving": _ratio_sharpness(self.grad_moving, self.grad_pixels_moving),
                "blockiness": self.blocks.result()}


def _ratio(total: float, count: int) -> float | None:
    return total / count if count else None


def _ratio_psnr(sq: float, count: int) -> float | None:
    return psnr_from_mse(sq / count) if count else None


def _ratio_sharpness(total: float, count: int) -> float | None:
    """Sharpness difference in dB of a pooled mean absolute gradient difference (the formula of
    PSNR with the mean absolute difference for the mean squared error)."""
    return psnr_from_mse(total / count) if count else None
