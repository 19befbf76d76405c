"""Metrics: bits per patch, perplexity, PSNR."""

from __future__ import annotations

import math

import numpy as np


def psnr(reference: np.ndarray, estimate: np.ndarray, peak: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB. Identical inputs give +inf (reported as such)."""
    mse = float(np.mean((np.asarray(reference, np.float64) - np.asarray(estimate, np.float64)) ** 2))
    return psnr_from_mse(mse, peak)


def psnr_from_mse(mse: float, peak: float = 255.0) -> float:
    """PSNR in dB of a mean squared error (pooled over many frames); 0 gives +inf."""
    return math.inf if mse == 0 else 10.0 * math.log10(peak ** 2 / mse)


def bits_per_patch(nll_nats: float) -> float:
    """Mean negative log-likelihood in nats -> bits per code (entropy rate estimate)."""
    return nll_nats / math.log(2)


def perplexity(nll_nats: float) -> float:
    return math.exp(nll_nats)
