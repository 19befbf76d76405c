"""Test clips, multi-step generation against the baselines, and the pictures drawn from it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import frames_of, moving_grid, tiny_model

from videolm.config import DecoderConfig
from videolm.evaluation.clips import evaluation_clips, picture_clips
from videolm.evaluation.generate import DECODED, METHODS, evaluate_generation, rollout_steps
from videolm.evaluation.pictures import animation, comparison_grid, entropy_picture, magnified, upsample_cells
from videolm.image_metrics import MEASURES
from videolm.model.pixel_decoder import PixelDecoder

SIZE = 4  # the tiny codebook's patch side, used as the stride
GH, GW = 6, 8  # moving_grid's code grid
VAL_END = 22


def test_test_clips_stay_in_the_test_part():
    grids = [moving_grid(0, "a"), moving_grid(1, "b", n=26)]  # test frames 22..29 and 22..25
    clips = evaluation_clips(grids, context=2, horizon=2)
    assert [(c.grid.video_id, c.start, c.t0) for c in clips] == [("a", 22, 24), ("a", 26, 28), ("b", 22, 24)]
    overlapping = evaluation_clips(grids, context=2, horizon=2, stride=1)
    assert len(overlapping) == 5 + 1
    assert all(c.start >= VAL_END and c.t0 + 2 <= len(c.grid.codes) for c in overlapping)
    assert evaluation_clips(grids, context=5, horizon=5) == []
    assert picture_clips(overlapping, 3) == [0, 5, 1]  # first clip of each video first


def test_generation_metrics_and_curves(codebook):
    grids = [moving_grid(0, "a"), moving_grid(1, "b")]
    frames = frames_of(codebook, grids)
    model = tiny_model(codebook)
    decoders = {"model_pixels": PixelDecoder.for_model(DecoderConfig(width=4), model, codebook, SIZE),
                "pixels_without_model": PixelDecoder.for_model(DecoderConfig(width=4), model, codebook, SIZE, False)}
    clips = evaluation_clips(grids, 2, 3, stride=2)
    gen = evaluate_generation(model, clips, frames.__getitem__, codebook, SIZE, horizon=3, temperature=0.0,
                              motion_threshold=10, seed=0, pictures=[2, 0], decoders=decoders)
    names = {"gen_clips", "gen_moving_fraction"} | {f"gen_{m}_{method}_{when}" for m in MEASURES
                                                     for method in METHODS for when in ("h1", "mean")}
    names |= {f"gen_{m}_{when}" for m in ("blockiness_truth", "model_share_psnr_moving") for when in ("h1", "mean")}
    assert set(gen.metrics) == names
    assert gen.metrics["gen_clips"] == len(clips) == 4
    assert set(gen.curves) == set(METHODS)
    for rows in gen.curves.values():
        assert [r["horizon"] for r in rows] == [1, 2, 3]
        assert all(set(r) == {"horizon", *MEASURES} for r in rows)
    # the codebook rendering of the true codes is close to the (noisy) truth; copying is not
    assert gen.metrics["gen_psnr_codebook_mean"] > 40 > gen.metrics["gen_psnr_copy_last_mean"]
    assert 0 < gen.metrics["gen_moving_fraction"] < 1
    # untrained decoders are the flow estimate they are given; so the model's share is nothing
    assert gen.curves["model_pixels"] == gen.curves["flow"] == gen.curves["pixels_without_model"]
    assert gen.metrics["gen_model_share_psnr_moving_mean"] == 0
    # the frames here are the codebook's rendering of their codes, noise added: as blocky as it
    assert gen.metrics["gen_blockiness_codebook_mean"] == pytest.approx(gen.metrics["gen_blockiness_truth_mean"],
                                                                        rel=0.1)
    assert [clips.index(e.clip) for e in gen.examples] == [2, 0]
    assert gen.examples[0].entropy.shape == (GH, GW) and (gen.examples[0].entropy >= 0).all()
    again = evaluate_generation(model, clips, frames.__getitem__, codebook, SIZE, 3, 0.0, 10, 0, decoders=decoders)
    assert again.metrics == gen.metrics
    plain = evaluate_generation(model, clips, frames.__getitem__, codebook, SIZE, 3, 0.0, 10, 0)
    assert set(plain.curves) == set(METHODS) - set(DECODED)  # without decoders: the codes alone
    assert "gen_model_share_psnr_moving_mean" not in plain.metrics


def test_sampling_is_seeded(codebook):
    grids = [moving_grid(0, "a")]
    frames = frames_of(codebook, grids)
    model = tiny_model(codebook)
    clips = evaluation_clips(grids, 2, 3)
    runs = [evaluate_generation(model, clips, frames.__getitem__, codebook, SIZE, 3, 1.0, 10, seed).metrics
            for seed in (0, 0, 1)]
    assert runs[0] == runs[1] != runs[2]


def test_top_k_sampling_draws_only_the_most_likely_codes(codebook):
    model = tiny_model(codebook)
    context = torch.from_numpy(moving_grid(0, "a").codes[:2].astype(np.int64))[None]
    for top_k in (1, 3):
        generator = torch.Generator().manual_seed(0)
        for logits, _, codes in rollout_steps(model, context, 3, temperature=5.0, generator=generator, top_k=top_k):
            allowed = logits.topk(top_k, -1).indices
            assert (allowed == codes[..., None]).any(-1).all()
            if top_k == 1:
                assert torch.equal(codes, logits.argmax(-1))  # one candidate: the argmax


def test_several_draws_are_averaged(codebook):
    grids = [moving_grid(0, "a")]
    frames = frames_of(codebook, grids)
    model = tiny_model(codebook)
    decoder = PixelDecoder.for_model(DecoderConfig(width=4, motion="none"), model, codebook, SIZE)
    clips = evaluation_clips(grids, 2, 3)[:1]
    run = lambda draws, seed: evaluate_generation(model, clips, frames.__getitem__, codebook, SIZE, 3, 1.0, 10, seed,
                                                  [0], {"model_pixels": decoder}, draws=draws).examples[0].predictions
    single = [run(1, seed) for seed in (0, 1)]  # draw j of clip 0 is seeded seed + j * len(clips)
    both = run(2, 0)
    for method in ("model", "model_pixels"):
        np.testing.assert_allclose(both[method], (single[0][method] + single[1][method]) / 2, rtol=1e-6)


def test_pictures(codebook):
    grids = [moving_grid(0, "a"), moving_grid(1, "b")]
    frames = frames_of(codebook, grids)
    gen = evaluate_generation(tiny_model(codebook), evaluation_clips(grids, 2, 3), frames.__getitem__, codebook, SIZE,
                              3, 0.0, 10, 0, pictures=[0, 1])
    grid = comparison_grid(gen.examples)
    h, w = frames["a"].shape[1:]
    assert grid.dtype == np.uint8 and grid.ndim == 2
    assert grid.shape[0] > 2 * 4 * h and grid.shape[1] > 5 * w  # 2 clips x 4 rows, 5 columns
    gif = animation(gen.examples)
    assert len(gif) == 5 and len({f.shape for f in gif}) == 1
    heat = entropy_picture(frames["a"][24], gen.examples[0].entropy, SIZE, SIZE)
    assert heat.dtype == np.uint8 and heat.ndim == 3 and heat.shape[2] == 3 and heat.shape[1] >= 3 * w
    cells = np.arange(6).reshape(2, 3)
    np.testing.assert_array_equal(upsample_cells(cells, 4, 4, (8, 12)), np.kron(cells, np.ones((4, 4), int)))
    assert upsample_cells(cells, 8, 4, (12, 16)).shape == (12, 16)


def test_small_clips_are_shown_at_about_the_width_of_large_ones():
    rng = np.random.default_rng(0)
    small = rng.uniform(0, 255, (3, 12, 40))
    big = magnified(small, 320)
    assert big.shape == (3, 96, 320)  # every pixel 8 x 8 times: nothing smoothed, nothing invented
    np.testing.assert_array_equal(big[:, ::8, ::8], small)
    assert magnified(small, 60).shape == small.shape[:1] + (24, 80)  # the nearest whole factor, 2
    assert magnified(rng.uniform(0, 255, (1, 200, 400)), 320).shape == (1, 200, 400)  # never shrunk
