"""The pixel decoder: its inputs, its start as the copy / average, its loss, its training on
the model's rollouts (real frames files), and its checkpoint checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import frames_of, moving_grid, tiny_model

from videolm.codes.codebook import Codebook
from videolm.codes.grids import encode_frames
from videolm.config import DecoderConfig
from videolm.data.frames import write_frames
from videolm.errors import VideoLMError
from videolm.evaluation.flow import extrapolate_flow, interpolate_flow, interpolation_with_doubt
from videolm.model.checkpoint import DecoderCheckpoint, weights_digest
from videolm.model.pixel_decoder import (
    OverlappingPaint,
    PixelDecoder,
    decode_prediction,
    expected_frame,
    gradient_difference_loss,
    load_decoder,
)
from videolm.training.decoder import BEATS_BY_DB, Best, DecoderCrops, decoded_examples, decoder_loss, train_decoder

SIZE = 4  # the tiny codebook's patch side


@pytest.mark.parametrize("stride", [SIZE, 2])
def test_expected_frame_of_a_certain_distribution_is_the_codebook_decoding(codebook, stride):
    codes = np.random.default_rng(0).integers(0, codebook.k, (2, 3, 5))
    probs = torch.nn.functional.one_hot(torch.from_numpy(codes), codebook.k).float()
    gray_patches = torch.from_numpy(codebook.gray_patches().reshape(codebook.k, -1))
    np.testing.assert_allclose(expected_frame(probs, gray_patches, SIZE, stride).numpy(), codebook.decode(codes, stride),
                               rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("motion", ["none", "frames"])
def test_an_untrained_decoder_copies_the_last_frame_and_averages_the_neighbours(codebook, motion):
    model = tiny_model(codebook)
    decoder = PixelDecoder.for_model(DecoderConfig(width=4, motion=motion), model, codebook, SIZE)
    grid = moving_grid().codes[:3].astype(np.int64)
    logits, _, state = model(torch.from_numpy(grid)[None])
    rng = np.random.default_rng(1)
    earlier, before, after, flowed = rng.uniform(0, 255, (4, 6 * SIZE, 8 * SIZE))
    np.testing.assert_allclose(decode_prediction(decoder, logits[:, -1], state, before, ahead=3, earlier=earlier,
                                                 flowed=flowed), before, atol=1e-4)
    np.testing.assert_allclose(decode_prediction(decoder, logits[:, -1], state, before, after, earlier=earlier,
                                                 flowed=flowed), (before + after) / 2, atol=1e-4)


@pytest.mark.parametrize("reads_model", [True, False])
def test_an_untrained_flow_decoder_is_the_flow_it_is_given(codebook, reads_model):
    model = tiny_model(codebook)
    decoder = PixelDecoder.for_model(DecoderConfig(width=4, motion="flow"), model, codebook, SIZE, reads_model)
    logits, _, state = model(torch.from_numpy(moving_grid().codes[:3].astype(np.int64))[None])
    earlier, before, after, flowed, doubt = np.random.default_rng(2).uniform(0, 255, (5, 6 * SIZE, 8 * SIZE))
    np.testing.assert_allclose(decode_prediction(decoder, logits[:, -1], state, before, earlier=earlier,
                                                 flowed=flowed), flowed, atol=1e-4)
    np.testing.assert_allclose(decode_prediction(decoder, logits[:, -1], state, before, after, earlier=earlier,
                                                 flowed=flowed, doubt=doubt), flowed, atol=1e-4)


def test_the_loss_weighs_moving_pixels():
    cfg = DecoderConfig(motion_weight=4.0, gdl_weight=0.0)
    last, truth = torch.zeros(1, 4, 4), torch.zeros(1, 4, 4)
    truth[0, 0, 0] = 100  # one moving pixel of 16
    wrong_moving, wrong_still = truth.clone(), truth.clone()
    wrong_moving[0, 0, 0] = 0
    wrong_still[0, 3, 3] = 100
    moving, still = (decoder_loss(e, truth, last, cfg, 10.0).item() for e in (wrong_moving, wrong_still))
    assert moving == pytest.approx(5 * 100 / (15 + 5) / 255) and still == pytest.approx(100 / 20 / 255)
    plain = DecoderConfig(motion_weight=0.0, gdl_weight=0.0)
    assert decoder_loss(wrong_moving, truth, last, plain, 10.0).item() == pytest.approx(100 / 16 / 255)


def test_gradient_difference_loss():
    truth = torch.zeros(1, 5, 6)
    truth[0, :, 3:] = 100  # a vertical edge: 5 of the 5 x 5 horizontal differences are 100
    assert gradient_difference_loss(truth, truth + 7).item() == 0  # the same edges, brighter
    assert gradient_difference_loss(truth, torch.zeros(1, 5, 6)).item() == pytest.approx(100 * 5 / 25)


def frames_files(tmp_path, codebook, grids):
    """Real frames files (HDF5) of the codebook's rendering of the grids, as extraction writes them."""
    videos = {}
    for grid, (video_id, frames) in zip(grids, frames_of(codebook, grids).items()):
        videos[video_id] = write_frames(tmp_path / f"{video_id}.h5", iter(np.clip(frames, 0, 255).astype(np.uint8)),
                                        lambda n, g=grid: (g.train_end, g.val_end), {"source": video_id})
    return videos


CFG = DecoderConfig(width=8, steps=30, batch_size=4, crop=4, context=2, horizon=2, fills=1, lr=3e-3, val_every=10,
                    motion="frames")


def test_decoder_training_learns_and_is_repeatable(tmp_path, codebook):
    grids = [moving_grid(0, "a"), moving_grid(1, "b")]
    videos = frames_files(tmp_path, codebook, grids)
    model = tiny_model(codebook)
    crops = DecoderCrops(grids, videos, CFG, SIZE, SIZE, seed=0)
    clip = crops[0]
    assert clip.codes.shape == (2, 4, 4) and clip.frames.shape == (2 + 2, 16, 16) and clip.flowed is None
    decoder, summary = train_decoder(model, grids, videos, codebook, SIZE, CFG, seed=0, motion_threshold=10)
    assert 10 <= summary["best_step_extrapolate"] <= 30 and 10 <= summary["best_step_fill"] <= 30
    assert summary["val_clips"] >= 1
    assert summary["val_extrapolate_beats_baseline"] is True  # it moves the texture: better than copying
    batch = [crops[i] for i in range(100, 108)]  # crops the training never drew
    codes, frames = torch.stack([c.codes for c in batch]), torch.stack([c.frames for c in batch])
    untrained = PixelDecoder.for_model(CFG, model, codebook, SIZE)
    with torch.no_grad():
        before = decoder_loss(*decoded_examples(model, untrained, codes, frames, None, CFG.horizon, CFG.fills), CFG, 10)
        after = decoder_loss(*decoded_examples(model, decoder, codes, frames, None, CFG.horizon, CFG.fills), CFG, 10)
    assert after < 0.9 * before  # the texture moves one cell per frame: a decoder that reads the model learns it
    again, _ = train_decoder(model, grids, videos, codebook, SIZE, CFG, seed=0, motion_threshold=10)
    assert all(torch.equal(a, b) for a, b in zip(decoder.state_dict().values(), again.state_dict().values()))


def test_decoder_is_the_same_with_crops_and_flow_made_in_loader_workers(tmp_path, codebook):
    grids = [moving_grid(0, "a"), moving_grid(1, "b")]
    videos = frames_files(tmp_path, codebook, grids)
    cfg = CFG.model_copy(update={"motion": "flow", "steps": 6, "val_every": 3})
    here, summary = train_decoder(tiny_model(codebook), grids, videos, codebook, SIZE, cfg, seed=0, motion_threshold=10)
    cfg = cfg.model_copy(update={"loader_workers": 2})
    workers, again = train_decoder(tiny_model(codebook), grids, videos, codebook, SIZE, cfg, seed=0,
                                   motion_threshold=10)
    assert all(torch.equal(a, b) for a, b in zip(here.state_dict().values(), workers.state_dict().values()))
    assert summary == again


def test_flow_crops_carry_the_flow_estimates(tmp_path, codebook):
    grids = [moving_grid(0, "a")]
    videos = frames_files(tmp_path, codebook, grids)
    cfg = CFG.model_copy(update={"motion": "flow", "fills": 2})
    clip = DecoderCrops(grids, videos, cfg, SIZE, SIZE, seed=0)[3]
    frames = clip.frames.numpy()
    assert clip.flowed.shape == (cfg.horizon + cfg.fills, 16, 16) and clip.doubt.shape == (cfg.fills, 16, 16)
    np.testing.assert_allclose(clip.flowed[:cfg.horizon].numpy(), extrapolate_flow(frames[0], frames[1], cfg.horizon))
    for j in range(cfg.fills):  # predicted frame j, filled between its real neighbours
        between, doubt = interpolation_with_doubt(frames[1 + j], frames[3 + j])
        np.testing.assert_allclose(clip.flowed[cfg.horizon + j].numpy(), interpolate_flow(frames[1 + j], frames[3 + j]),
                                   rtol=1e-6)
        np.testing.assert_allclose(clip.doubt[j].numpy(), doubt)


def test_every_filled_frame_is_read_between_its_own_neighbours_and_from_the_frames_before_it(tmp_path, codebook):
    """An untrained decoder without motion fills with the neighbours' mean: filled frame j is
    scored against true frame j between real frames j - 1 and j + 1, and the model's prediction
    of it is the one from the context frames just before it."""
    grids = [moving_grid(0, "a")]
    videos = frames_files(tmp_path, codebook, grids)
    cfg = CFG.model_copy(update={"motion": "none", "fills": 3})
    clips = [DecoderCrops(grids, videos, cfg, SIZE, SIZE, seed=0)[i] for i in range(2)]
    codes, frames = torch.stack([c.codes for c in clips]), torch.stack([c.frames for c in clips])
    model, seen = tiny_model(codebook), []
    model.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    with torch.no_grad():
        estimates, truths, befores = decoded_examples(model, PixelDecoder.for_model(cfg, model, codebook, SIZE), codes,
                                                      frames, None, cfg.horizon, cfg.fills)
    assert estimates.shape[0] == (cfg.horizon + cfg.fills) * 2
    for j in range(cfg.fills):
        rows = slice((cfg.horizon + j) * 2, (cfg.horizon + j + 1) * 2)
        torch.testing.assert_close(truths[rows], frames[:, 2 + j])
        torch.testing.assert_close(befores[rows], frames[:, 1 + j])
        torch.testing.assert_close(estimates[rows], (frames[:, 1 + j] + frames[:, 3 + j]) / 2)
    windows = seen[-1]  # the filled frames' predictions: every crop's window j, window after window
    assert torch.equal(windows, torch.cat([codes[:, j:j + cfg.context] for j in range(cfg.fills)]))


def test_a_decoder_that_only_copies_is_reported(tmp_path, codebook, caplog):
    grids = [moving_grid(0, "a"), moving_grid(1, "b")]
    videos = frames_files(tmp_path, codebook, grids)
    cfg = CFG.model_copy(update={"steps": 2, "val_every": 2, "lr": 1e-9, "motion": "none"})  # stays the copy
    _, summary = train_decoder(tiny_model(codebook), grids, videos, codebook, SIZE, cfg, seed=0, motion_threshold=10)
    assert summary["val_extrapolate_beats_baseline"] is False
    assert "no better than copying the last frame" in caplog.text


def test_a_decoder_is_used_only_with_its_model_codebook_and_stride(tmp_path, codebook):
    model = tiny_model(codebook)
    decoder = PixelDecoder.for_model(CFG, model, codebook, SIZE)
    path = tmp_path / "decoder.pt"
    DecoderCheckpoint(decoder.state_dict(), CFG.model_dump(), weights_digest(model), codebook.digest, SIZE).save(path)
    assert isinstance(load_decoder(path, model, codebook, SIZE), PixelDecoder)
    with pytest.raises(VideoLMError, match="another model or codebook"):
        load_decoder(path, tiny_model(codebook, seed=1), codebook, SIZE)
    other = Codebook(codebook.centroids + 1, codebook.std, codebook.size)
    with pytest.raises(VideoLMError, match="another model or codebook"):
        load_decoder(path, model, other, SIZE)
    with pytest.raises(VideoLMError, match="patches.stride=4, not 2"):
        load_decoder(path, model, codebook, 2)
    with pytest.raises(VideoLMError, match="no pixel decoder"):
        load_decoder(tmp_path / "missing.pt", model, codebook, SIZE)


def reading_decoder(codebook, model, reads_model: bool) -> PixelDecoder:
    """A flow decoder whose last layers are not zero: one that reads its inputs."""
    decoder = PixelDecoder.for_model(DecoderConfig(width=4, motion="flow"), model, codebook, SIZE, reads_model)
    torch.manual_seed(0)
    for body in (decoder.body, decoder.fill_body):
        torch.nn.init.normal_(body[-1].paint.weight, std=0.1)
    return decoder


def test_filling_reads_the_flow_interpolation_and_its_doubt(codebook):
    model = tiny_model(codebook)
    decoder = reading_decoder(codebook, model, True)
    logits, _, state = model(torch.from_numpy(moving_grid().codes[:3].astype(np.int64))[None])
    earlier, before, after, flow_a, flow_b = np.random.default_rng(3).uniform(0, 255, (5, 6 * SIZE, 8 * SIZE))
    fill = lambda flowed, doubt: decode_prediction(decoder, logits[:, -1], state, before, after, earlier=earlier,
                                                   flowed=flowed, doubt=doubt)
    assert not np.allclose(fill(flow_a, None), fill(flow_b, None))
    assert not np.allclose(fill(flow_a, None), fill(flow_a, flow_b))


def test_the_decoder_without_the_model_reads_nothing_of_it(codebook):
    model, other = tiny_model(codebook), tiny_model(codebook, seed=1)
    grid = torch.from_numpy(moving_grid().codes[:3].astype(np.int64))[None]
    earlier, before, after, flowed = np.random.default_rng(4).uniform(0, 255, (4, 6 * SIZE, 8 * SIZE))
    for reads_model in (True, False):
        decoder = reading_decoder(codebook, model, reads_model)
        frames = []
        for m in (model, other):  # two models: other predictions and states
            logits, _, state = m(grid)
            frames.append(decode_prediction(decoder, logits[:, -1], state, before, ahead=2, earlier=earlier,
                                            flowed=flowed))
        assert np.array_equal(frames[0], frames[1]) != reads_model
    assert sum(p.numel() for p in decoder.parameters()) < sum(
        p.numel() for p in reading_decoder(codebook, model, True).parameters())


def test_each_task_keeps_the_weights_of_its_own_best_step():
    body = torch.nn.Linear(1, 1)
    metrics = lambda ahead, fill, loss: {"val_extrapolate_psnr_moving_decoder": ahead,
                                         "val_fill_psnr_moving_decoder": fill, "val_loss": loss}
    fill = Best()
    fill.offer(metrics(10, 20, 1.0), "fill", "moving_psnr", 1, body)
    kept = body.weight.item()
    torch.nn.init.constant_(body.weight, kept + 1)
    fill.offer(metrics(12, 19, 0.5), "fill", "moving_psnr", 2, body)  # better extrapolation, worse filling
    assert fill.step == 1 and fill.weights["weight"].item() == kept
    fill.offer(metrics(9, 21, 2.0), "fill", "moving_psnr", 3, body)
    assert fill.step == 3 and fill.weights["weight"].item() == kept + 1
    fill.offer(metrics(9, 21 + BEATS_BY_DB / 2, 2.0), "fill", "moving_psnr", 4, body)  # no better: kept
    assert fill.step == 3
    by_loss = Best()
    for step, loss in enumerate((1.0, 0.5, 0.7), 1):
        by_loss.offer(metrics(10, 20, loss), "extrapolate", "loss", step, body)
    assert by_loss.step == 2


def test_the_scores_are_the_surprise_of_the_copy_and_the_flow(codebook):
    """The decoder's nearest codes are the encoder's (ties aside: random frames have none), and
    a distribution certain of a frame's codes has surprise 0 for that frame and entropy 0."""
    decoder = PixelDecoder.for_model(DecoderConfig(width=4), tiny_model(codebook), codebook, SIZE)
    frames = np.random.default_rng(5).uniform(0, 255, (2, 6 * SIZE, 8 * SIZE)).astype(np.float32)
    codes = encode_frames(frames, codebook, SIZE).astype(np.int64)
    np.testing.assert_array_equal(decoder.nearest_codes(torch.from_numpy(frames)).numpy(), codes)
    certain = torch.nn.functional.one_hot(torch.from_numpy(codes[:1]), codebook.k).float()  # sure of frame 0
    _, scores = decoder.summarize(certain, *(torch.from_numpy(f[None]) for f in frames))
    entropy, surprise_before, surprise_flowed = scores[0]
    assert torch.all(entropy.abs() < 1e-6) and torch.all(surprise_before.abs() < 1e-6)
    changed = torch.from_numpy(codes[0] != codes[1])
    assert changed.any() and torch.all(surprise_flowed[changed] > 5)  # -log(1e-30) / log k


@pytest.mark.parametrize("stride", [4, 3])
def test_the_paint_is_a_transposed_convolution_whose_cells_overlap(stride):
    torch.manual_seed(0)
    paint = OverlappingPaint(5, 2, stride)
    torch.nn.init.normal_(paint.paint.weight)
    torch.nn.init.normal_(paint.bias)
    reference = torch.nn.ConvTranspose2d(5, 2, 2 * stride, stride=stride, padding=stride // 2)
    with torch.no_grad():  # the same weights: (width, outputs * k * k, 1, 1) -> (width, outputs, k, k)
        reference.weight.copy_(paint.paint.weight.reshape(2, 2 * stride, 2 * stride, 5).permute(3, 0, 1, 2))
        reference.bias.copy_(paint.bias)
    x = torch.randn(2, 5, 3, 4)
    out = paint(x)
    assert out.shape == (2, 2, 3 * stride, 4 * stride)
    torch.testing.assert_close(out, reference(x)[..., :3 * stride, :4 * stride], rtol=1e-5, atol=1e-5)
    moved = x.clone()
    moved[:, :, 1, 1] += 1  # one cell's features: its own pixels and half a cell of each neighbour's change
    changed = (paint(moved) - out).abs().sum((0, 1)) > 0
    rows, cols = changed.any(1).nonzero()[:, 0], changed.any(0).nonzero()[:, 0]
    half = stride // 2
    assert (rows.min(), rows.max()) == (stride - half, 2 * stride - 1 + (2 * stride - half - stride))
    assert (cols.min(), cols.max()) == (stride - half, 2 * stride - 1 + (2 * stride - half - stride))
