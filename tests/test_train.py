"""Training on code grids: crops, baselines, whole-frame scoring, and a tiny model that learns motion."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from conftest import K, moving_grid, save_grid, tiny_model

from videolm.codes.grids import CodeGrid, load_code_grids
from videolm.config import ModelConfig, Params, TrainConfig
from videolm.errors import VideoLMError
from videolm.evaluation.baselines import fit_baselines
from videolm.evaluation.scoring import predict_videos, score_part
from videolm.model.build import build_model
from videolm.model.linear_ce import IGNORE
from videolm.training.crops import CodeGridDataset
from videolm.training.distributed import Ranks
from videolm.training.train import (TrainingError, make_optimizer, train_model, validation_loss, validation_videos,
                                    without_border)

GH, GW = 6, 8  # moving_grid's code grid
TRAIN_END, VAL_END = 18, 22


def tiny_params(seed=0, epochs=3, steps=100, **train) -> Params:
    return Params(
        seed=seed,
        model=ModelConfig(name="rcnn", embed_dim=16, hidden=16, kernel_size=3, head="independent"),
        train=TrainConfig(epochs=epochs, steps_per_epoch=steps, batch_size=4, crop=8, bptt=4,
                          lr=0.01, schedule="cosine", grad_clip=1.0, threads=1, **train),
    )


# ---------------------------------------------------------------- crops


def test_dataset_crops_stay_in_their_part():
    rng = np.random.default_rng(0)
    codes = np.concatenate([rng.integers(0, 5, (12, 6, 9)),  # training frames: codes 0..4
                            rng.integers(5, 10, (4, 6, 9)),  # validation: 5..9
                            rng.integers(10, 16, (4, 6, 9))]).astype(np.uint16)  # test: 10..15
    grid = CodeGrid("v", codes, 12, 16)
    data = CodeGridDataset([grid], "train", steps=5, crop=4, length=200, seed=3)
    items = [data[i] for i in range(len(data))]
    assert all(item.shape == (5, 4, 4) and item.dtype == torch.int64 for item in items)
    assert max(int(item.max()) for item in items) <= 4
    val = CodeGridDataset([grid], "val", steps=3, crop=4, length=50, seed=3)
    values = torch.stack([val[i] for i in range(50)])
    assert values.min() >= 5 and values.max() <= 9
    # item i is the same crop in every run; different items differ
    assert torch.equal(data[7], CodeGridDataset([grid], "train", 5, 4, 200, seed=3)[7])
    assert any(not torch.equal(items[0], item) for item in items[1:])
    # each crop is a real window of the grid
    found = [(t, y, x) for t in range(12 - 4) for y in range(3) for x in range(6)
             if np.array_equal(codes[t:t + 5, y:y + 4, x:x + 4], items[0].numpy())]
    assert found


def test_dataset_clamps_crop_and_refuses_short_parts():
    grid = CodeGrid("v", np.zeros((10, 3, 5), np.uint16), 6, 8)
    data = CodeGridDataset([grid], "train", steps=4, crop=8, length=3, seed=0)
    assert data[0].shape == (4, 3, 3)
    with pytest.raises(VideoLMError, match="bptt"):
        CodeGridDataset([grid], "val", steps=4, crop=2, length=3, seed=0)


# ---------------------------------------------------------------- baselines and scoring


def test_baselines_are_distributions():
    grid = moving_grid()
    base = fit_baselines([grid], K)
    assert base.unigram.shape == (K,) and base.unigram.sum() == pytest.approx(1.0)
    train = grid.codes[:TRAIN_END].astype(np.int64)
    expected_alpha = ((train[1:] == train[:-1]).sum() + 1) / (train[1:].size + 2)
    assert base.alpha == pytest.approx(expected_alpha)
    targets = np.arange(K)
    for previous in (0, 5, 15):
        p = np.exp(-base.copy_nll(np.full(K, previous), targets))
        assert p.sum() == pytest.approx(1.0)
        assert p[previous] == pytest.approx(base.alpha)
    assert np.exp(-base.unigram_nll(targets)).sum() == pytest.approx(1.0)


@pytest.mark.parametrize("name", ["rcnn", "transformer"])
def test_predict_videos_matches_one_pass(codebook, name):
    torch.manual_seed(0)
    model = build_model(ModelConfig(name=name, embed_dim=8, hidden=8, head="tied", context_frames=3), codebook).eval()
    grid = moving_grid()
    out = list(predict_videos(model, [grid], "val", chunk=3))
    assert [t for _, t, _, _, _, _ in out] == list(range(TRAIN_END, VAL_END))
    with torch.no_grad():
        logits, _, _ = model(torch.from_numpy(grid.codes.astype(np.int64))[None])
        states = model.head_inputs(torch.from_numpy(grid.codes.astype(np.int64))[None])[3].permute(0, 1, 4, 2, 3)
        _, _, last = model(torch.from_numpy(grid.codes[:VAL_END - 1].astype(np.int64))[None])
    logp = torch.log_softmax(logits[0], -1)
    for _, t, nll, _, state, _ in out:
        expected = -logp[t - 1].gather(-1, torch.from_numpy(grid.codes[t].astype(np.int64))[..., None])[..., 0]
        np.testing.assert_allclose(nll, expected.numpy(), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(state, states[:, t - 1], rtol=1e-4, atol=1e-5)  # the state t was predicted from
    torch.testing.assert_close(state, last, rtol=1e-4, atol=1e-5)  # = the plain forward's last state
    # the first frame has no past: scoring 'train' starts at frame 1
    short = CodeGrid("v", grid.codes[:4], 4, 4)
    assert [t for _, t, _, _, _, _ in predict_videos(model, [short], "train")] == [1, 2, 3]


@pytest.mark.bits
@pytest.mark.parametrize("name", ["rcnn", "transformer"])
def test_scores_do_not_depend_on_the_batch(codebook, name):
    """Videos scored together give the same bits as one at a time: videos of two grid sizes and
    several lengths (so batches refill, and last chunks are padded), parts that start late, a
    video with nothing to score, and `on_frame`'s terms summed in the videos' order."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(name=name, embed_dim=8, hidden=8, head="tied", context_frames=3), codebook).eval()
    grids = [moving_grid(seed, f"v{seed}", n=n, train_end=train_end, val_end=val_end)
             for seed, (n, train_end, val_end) in enumerate(((30, 18, 22), (25, 15, 20), (14, 8, 11), (1, 1, 1)))]
    grids.insert(2, moving_grid(9, "other size", n=12, shape=(GH + 1, GW), train_end=5, val_end=9))
    base = fit_baselines(grids, K)
    seen = []

    def terms(grid, t, logp, state):
        seen.append((grid.video_id, t))
        return float(logp.max()), float(state.sum()), 1.0

    for part in ("train", "val", "test"):
        one = score_part(model, grids, part, base, terms, batch=1)
        order = list(seen)
        for batch in (2, 3, 8):
            seen.clear()
            together = score_part(model, grids, part, base, terms, batch=batch)
            assert (together.nll, together.count, together.extra) == (one.nll, one.count, one.extra)
            assert sorted(seen) == sorted(order) and len(set(order)) == len(order)
        seen.clear()
        assert one.count > 0 and one.extra[2] == len(order)
    val = [g for g in grids if g.part("val")[1] > g.part("val")[0]]
    assert validation_loss(model, val, Ranks(), batch=3) == validation_loss(model, val, Ranks())


def test_score_part_counts(codebook):
    model = build_model(ModelConfig(name="rnn", embed_dim=8, hidden=8, head="atom"), codebook)
    grids = [moving_grid(0, "a"), moving_grid(1, "b")]
    base = fit_baselines(grids, K)
    scores = score_part(model, grids, "val", base)
    assert scores.count == 2 * (VAL_END - TRAIN_END) * GH * GW
    for name in ("model", "unigram", "copy_previous"):
        assert 0 < scores.mean(name) < 10
    assert score_part(model, grids, "train").count == 2 * (TRAIN_END - 1) * GH * GW


# ---------------------------------------------------------------- training


def test_tiny_model_learns_motion(codebook):
    grids = [moving_grid()]
    logged = []
    # one direction of motion only: time-reversed crops would show the opposite one
    model, summary = train_model(grids, codebook, tiny_params(reverse_time=False), lambda e, m: logged.append((e, m)))

    assert set(summary) == {"best_epoch", "epochs_run", "val_perplexity", "parameters"}  # no wall-clock figures
    assert summary["epochs_run"] == 3 and 1 <= summary["best_epoch"] <= 3
    assert summary["parameters"] == sum(p.numel() for p in model.parameters())
    assert [e for e, _ in logged] == [1, 2, 3]
    assert set(logged[0][1]) == {"train_loss", "train_perplexity", "val_loss", "val_perplexity"}
    assert logged[-1][1]["train_loss"] < logged[0][1]["train_loss"]
    assert summary["val_perplexity"] == pytest.approx(min(m["val_perplexity"] for _, m in logged))

    base = fit_baselines(grids, K)
    train = score_part(model, grids, "train", base)
    train_ppl = math.exp(train.mean("model"))
    copy_ppl = math.exp(train.mean("copy_previous"))
    assert copy_ppl > 5  # the content moves: copying the previous frame is wrong almost everywhere
    assert train_ppl < copy_ppl / 2, (train_ppl, copy_ppl)
    assert train_ppl < 2.0
    # and it generalizes to the held-out frames of the same motion
    val = score_part(model, grids, "val", base)
    assert math.exp(val.mean("model")) < math.exp(val.mean("copy_previous")) / 2
    assert math.exp(val.mean("model")) == pytest.approx(summary["val_perplexity"], rel=1e-4)


def test_training_is_reproducible(codebook):
    grids = [moving_grid()]
    a, summary_a = train_model(grids, codebook, tiny_params(epochs=1, steps=15))
    b, _ = train_model(grids, codebook, tiny_params(epochs=1, steps=15))
    c, _ = train_model(grids, codebook, tiny_params(seed=1, epochs=1, steps=15))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name
    assert any(not torch.equal(sa[name], sc[name]) for name in sa)
    assert summary_a["epochs_run"] == 1


def test_grids_read_from_files_in_loader_workers_train_the_same(codebook, tmp_path):
    """Loaded grids hold no codes: crops are read from the files, in DataLoader worker processes
    if asked, and training takes the same steps as on grids held in memory."""
    grids = [moving_grid(seed, f"v{seed}") for seed in range(3)]
    for grid in grids:
        save_grid(grid, tmp_path / f"{grid.video_id}.h5", codebook, codebook.size, "v.mp4")
    loaded = load_code_grids(tmp_path, codebook)
    held, _ = train_model(grids, codebook, tiny_params(epochs=2, steps=5))
    for workers in [0, 2]:
        model, _ = train_model(loaded, codebook, with_train(tiny_params(epochs=2, steps=5), loader_workers=workers))
        for name, value in held.state_dict().items():
            assert torch.equal(model.state_dict()[name], value), (workers, name)


def test_validation_videos_subset():
    grids = [moving_grid(seed, f"v{seed}") for seed in range(6)]
    grids[2] = CodeGrid("no_val", grids[2].codes, TRAIN_END, TRAIN_END)
    assert [g.video_id for g in validation_videos(grids, 0, 0)] == ["v0", "v1", "v3", "v4", "v5"]
    some = validation_videos(grids, 3, 0)
    assert len(some) == 3 and some == validation_videos(grids, 3, 0)  # fixed by the seed, in order
    assert [g.video_id for g in some] == sorted(g.video_id for g in some) and "no_val" not in [g.video_id for g in some]
    assert {g.video_id for s in range(5) for g in validation_videos(grids, 3, s)} == {"v0", "v1", "v3", "v4", "v5"}


def test_training_without_validation_frames(codebook):
    # a split with no validation frames: the training loss picks the epoch
    grid = moving_grid()
    grid = CodeGrid(grid.video_id, grid.codes, TRAIN_END, TRAIN_END)
    model, summary = train_model([grid], codebook, tiny_params(epochs=2, steps=10))
    assert summary["epochs_run"] == 2
    assert math.isfinite(summary["val_perplexity"]) and summary["val_perplexity"] < K * 2


# ---------------------------------------------------------------- training options


def with_train(params: Params, **train) -> Params:
    """`params` with these `train` keys replaced (validated), for keys `tiny_params` fixes."""
    return params.model_copy(update={"train": TrainConfig(**{**params.train.model_dump(), **train})})


@pytest.mark.parametrize("patience, epochs_run", [(0, 5), (1, 2), (2, 3)])
def test_patience_stops_when_validation_stops_improving(codebook, patience, epochs_run):
    """Training shows codes 0..7 only and validation codes 8..15 only, so the validation
    loss rises every epoch: the best epoch is the first, and patience p stops after 1 + p."""
    codes = moving_grid().codes % 8
    codes[TRAIN_END:VAL_END] += 8
    grid = CodeGrid("v", codes, TRAIN_END, VAL_END)
    val = []
    model, summary = train_model([grid], codebook, tiny_params(epochs=5, steps=5, patience=patience),
                                 lambda e, m: val.append(m["val_loss"]))
    assert summary["epochs_run"] == len(val) == epochs_run
    assert summary["best_epoch"] == 1 + int(np.argmin(val)) == 1
    # the weights kept are the best epoch's, not the last one's
    assert score_part(model, [grid], "val").mean("model") == pytest.approx(min(val), rel=1e-5)


def test_dataset_mirrors_half_the_crops(codebook):
    mirror = codebook.mirror_map()
    assert (mirror != np.arange(K)).any()  # else remapping would go unnoticed
    codes = np.random.default_rng(0).integers(0, K, (10, 6, 9)).astype(np.uint16)
    data = CodeGridDataset([CodeGrid("v", codes, 10, 10)], "train", steps=3, crop=4, length=40, seed=0, mirror=mirror)
    windows = [codes[t:t + 3, y:y + 4, x:x + 4].astype(np.int64) for t in range(8) for y in range(3) for x in range(6)]
    mirrored = []
    for i in range(len(data)):
        item = data[i].numpy()
        is_real = any(np.array_equal(item, w) for w in windows)
        is_mirror = any(np.array_equal(item, mirror[w[:, :, ::-1]]) for w in windows)
        assert is_real != is_mirror, i
        mirrored.append(is_mirror)
    assert 0 < sum(mirrored) < len(mirrored)


@pytest.mark.parametrize("margin", [0, 1, 2])
def test_without_border(margin):
    targets = torch.arange(2 * 3 * 6 * 7).reshape(2, 3, 6, 7)
    out = without_border(targets, margin)
    inside = (..., slice(margin, 6 - margin), slice(margin, 7 - margin))
    assert torch.equal(out[inside], targets[inside])
    assert (out == IGNORE).sum() == 2 * 3 * (6 * 7 - (6 - 2 * margin) * (7 - 2 * margin))
    assert torch.equal(targets, torch.arange(2 * 3 * 6 * 7).reshape(2, 3, 6, 7))  # input untouched


@pytest.mark.parametrize("flag", ["mirror", "full_context"])
def test_training_with_option(codebook, flag):
    grids = [moving_grid()]
    losses = []
    model, _ = train_model(grids, codebook, tiny_params(epochs=2, steps=15, **{flag: True}),
                           lambda e, m: losses.append(m["train_loss"]))
    plain, _ = train_model(grids, codebook, tiny_params(epochs=2, steps=15))
    assert all(map(math.isfinite, losses)) and losses[-1] < losses[0]
    assert any(not torch.equal(a, b) for a, b in zip(model.state_dict().values(), plain.state_dict().values()))


@pytest.mark.parametrize("kernel_size", [3, 5])
def test_full_context_grows_the_crop(codebook, kernel_size):
    """A 1-cell crop keeps a scored cell only if it grows by (at least) 2 * radius: with every target
    ignored the cross-entropy is NaN."""
    params = with_train(tiny_params(epochs=1, steps=3, full_context=True), crop=1)
    params = params.model_copy(update={"model": params.model.model_copy(update={"kernel_size": kernel_size})})
    losses = []
    train_model([moving_grid()], codebook, params, lambda e, m: losses.append(m["train_loss"]))
    assert math.isfinite(losses[0])


@pytest.mark.parametrize("name, cls", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW),
                                       ("sgd", torch.optim.SGD)])
def test_make_optimizer(codebook, name, cls):
    model = tiny_model(codebook)
    optimizer = make_optimizer(model, with_train(tiny_params(), optimizer=name, lr=0.003, weight_decay=0.01))
    [group] = optimizer.param_groups
    assert type(optimizer) is cls  # AdamW subclasses Adam: isinstance would not tell them apart
    assert group["lr"] == 0.003 and group["weight_decay"] == 0.01
    assert len(group["params"]) == len(list(model.parameters()))
    if name == "sgd":
        assert group["momentum"] == 0.9


@pytest.mark.parametrize("name, lr", [("adam", 0.01), ("adamw", 0.01), ("sgd", 0.1)])
def test_each_optimizer_trains(codebook, name, lr):
    losses = []
    train_model([moving_grid()], codebook, with_train(tiny_params(epochs=2, steps=15), optimizer=name, lr=lr),
                lambda e, m: losses.append(m["train_loss"]))
    assert losses[1] < losses[0]


@pytest.mark.parametrize("schedule", ["cosine", "constant"])
def test_schedule(codebook, schedule):
    """With a constant rate the first epoch does not depend on how many epochs follow; the
    cosine rate decays over the whole run, so a longer run's first epoch differs."""
    first = []
    for epochs in (1, 3):
        losses = []
        train_model([moving_grid()], codebook, with_train(tiny_params(epochs=epochs, steps=10), schedule=schedule),
                    lambda e, m: losses.append(m["train_loss"]))
        first.append(losses[0])
    assert (first[0] == first[1]) == (schedule == "constant"), first


@pytest.mark.parametrize("nonlinearity, lr, loss", [
    ("relu", 1e20, "nan"),  # the activations overflow: nan at the second step
    ("tanh", 1e3, "[0-9]{4}"),  # tanh saturates: a finite loss, but one whose perplexity overflows a float
])
def test_diverging_training_stops_with_an_error(codebook, nonlinearity, lr, loss):
    params = tiny_params(epochs=2, steps=5)
    params.model.nonlinearity, params.train.lr, params.train.grad_clip = nonlinearity, lr, 0.0
    logged = []
    with pytest.raises(TrainingError) as err:
        train_model([moving_grid()], codebook, params, lambda e, m: logged.append(e))
    advice = re.escape(f"; lower train.lr (now {lr:g}) or clip gradients with train.grad_clip (now 0; 0 = off)")
    expected = f"training diverged: the training loss is {loss} at epoch 1, step 2 of 5{advice}"
    assert re.fullmatch(expected, str(err.value)), str(err.value)
    assert logged == []  # stopped at once: no epoch was finished


def test_full_context_on_grids_too_small_is_an_error(codebook):
    """A crop clamped to 2 rows cannot hold a cell with its whole 3x3 neighbourhood: refused, not NaN."""
    grid = moving_grid(shape=(2, 8))
    with pytest.raises(VideoLMError, match="train.full_context=true: the crop of 2 cells"):
        train_model([grid], codebook, tiny_params(epochs=1, steps=2, full_context=True))
