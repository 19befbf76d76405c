"""Filling a missing frame with the forward model, and the filling metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import K, frames_of, moving_grid, tiny_model

from videolm.config import DecoderConfig
from videolm.evaluation.clips import evaluation_clips
from videolm.evaluation.filling import METHODS, evaluate_filling, fill_codes
from videolm.image_metrics import MEASURES
from videolm.model.pixel_decoder import PixelDecoder

SIZE = 4  # the tiny codebook's patch side, used as the stride
GH, GW = 6, 8  # moving_grid's code grid


@torch.no_grad()
def measured_radius(model, state: torch.Tensor, grid: torch.Tensor) -> int:
    """How far (in code cells, Chebyshev distance) a change of one code at time t reaches
    in the model's prediction for t + 1, measured at the centre of `grid` (H, W)."""
    h, w = grid.shape
    cy, cx = h // 2, w // 2
    changed = grid.clone()
    changed[cy, cx] = (grid[cy, cx] + 1) % model.k
    logits, _, _ = model(torch.stack([grid, changed])[:, None], state.expand(2, *state.shape[1:]))
    moved = (logits[0, 0] != logits[1, 0]).any(-1).nonzero()
    if len(moved) == 0:
        return 0
    return int(torch.maximum((moved[:, 0] - cy).abs(), (moved[:, 1] - cx).abs()).max())


@pytest.mark.parametrize("name,cfg,radius", [("rcnn", {"input_layers": 1}, 1), ("rcnn", {"input_layers": 2}, 2),
                                             ("rnn", {}, 0), ("transformer", {"layers": 2, "heads": 2}, 2)])
def test_context_radius_is_how_far_a_code_reaches(codebook, name, cfg, radius):
    """Filling relies on `context_radius`: check it against a measurement."""
    model = tiny_model(codebook, name, **cfg)
    codes = torch.from_numpy(moving_grid().codes[:2].astype(np.int64))
    assert model.context_radius == radius
    with torch.no_grad():
        state = model(codes[None, :1])[2]  # after one frame: the transformer's kept keys and values are not zero
    assert measured_radius(model, state, codes[1]) == radius


@torch.no_grad()
def joint_log_likelihood(model, before: np.ndarray, middle: np.ndarray, after: np.ndarray) -> float:
    """log p(c_t = middle, c_{t+1} = after | before) under the model, in nats."""
    codes = np.concatenate([before, middle[None], after[None]]).astype(np.int64)
    logits, _, _ = model(torch.from_numpy(codes[:-1])[None])
    logp = torch.log_softmax(logits[0, -2:].float(), -1)  # predictions of middle and after
    return float(logp.gather(-1, torch.from_numpy(codes[-2:])[..., None]).sum())


def test_filling_raises_the_joint_likelihood(codebook):
    model = tiny_model(codebook, seed=3)
    codes = moving_grid(2).codes.astype(np.int64)
    before, after = codes[:3], codes[4]
    filled, forward, _ = fill_codes(model, before, after, candidates=4, sweeps=3)
    assert filled.shape == forward.shape == (GH, GW)
    assert joint_log_likelihood(model, before, filled, after) >= joint_log_likelihood(model, before, forward, after)
    same, _, _ = fill_codes(model, before, after, candidates=4, sweeps=0)
    np.testing.assert_array_equal(same, forward)


def test_filling_is_exact_without_spatial_context(codebook):
    """With 1x1 convolutions every location is on its own: one sweep over all k codes is the
    exact maximizer of log p(c_t) + log p(c_t+1 | c_t), location by location."""
    model = tiny_model(codebook, "rnn", seed=4)
    codes = moving_grid(5).codes.astype(np.int64)
    before, after = codes[:2], codes[3]
    filled, _, _ = fill_codes(model, before, after, candidates=K, sweeps=1)
    with torch.no_grad():
        logits, _, state = model(torch.from_numpy(before)[None])
        prior = torch.log_softmax(logits[0, -1], -1)  # (H, W, K)
        every = torch.arange(K)[:, None, None].expand(K, GH, GW)  # code c everywhere
        nxt, _, _ = model(every[:, None], state.expand(K, -1, -1, -1))
        ll = torch.log_softmax(nxt[:, 0], -1).gather(-1, torch.from_numpy(after).expand(K, GH, GW)[..., None])[..., 0]
        best = (prior.permute(2, 0, 1) + ll).argmax(0).numpy()
    np.testing.assert_array_equal(filled, best)


def test_filling_metrics(codebook):
    grids = [moving_grid(0, "a")]
    frames = frames_of(codebook, grids)
    clips = evaluation_clips(grids, 2, 2)
    model = tiny_model(codebook)
    decoders = {"model_pixels": PixelDecoder.for_model(DecoderConfig(width=4), model, codebook, SIZE),
                "pixels_without_model": PixelDecoder.for_model(DecoderConfig(width=4), model, codebook, SIZE, False)}
    metrics = evaluate_filling(model, clips, frames.__getitem__, codebook, SIZE, 10, 2, 1, decoders)
    assert set(metrics) == {"fill_frames", "fill_blockiness_truth", "fill_model_share_psnr_moving"} | {
        f"fill_{m}_{method}" for m in MEASURES for method in METHODS}
    for measure in MEASURES:  # an untrained decoder is the flow interpolation it is given
        for method in ("model_pixels", "pixels_without_model"):
            assert metrics[f"fill_{measure}_{method}"] == pytest.approx(metrics[f"fill_{measure}_flow"], rel=1e-6)
    assert metrics["fill_model_share_psnr_moving"] == pytest.approx(0, abs=1e-6)
    assert metrics["fill_blockiness_codebook"] == pytest.approx(metrics["fill_blockiness_truth"], rel=0.1)
    assert metrics["fill_frames"] == len(clips) == 2
    assert metrics["fill_psnr_codebook"] > 40
