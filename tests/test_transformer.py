"""The space-time transformer: causal in time, bounded in its window, local and stationary in
space, stepping with its kept keys and values as the full forward, and usable wherever the rCNN is
(the decoder reads its state; generation and filling run on it)."""

from __future__ import annotations

import pytest
import torch
from conftest import K

from videolm.config import ModelConfig
from videolm.evaluation.filling import fill_codes
from videolm.evaluation.generate import rollout
from videolm.model.build import build_model
from videolm.model.linear_ce import IGNORE
from videolm.model.transformer import SpaceTimeTransformer

LAYERS, FRAMES, SIZE = 2, 3, 3  # blocks, context_frames, kernel_size


def tiny(**kw) -> ModelConfig:
    return ModelConfig(**{"name": "transformer", "embed_dim": 8, "hidden": 16, "heads": 2, "layers": LAYERS,
                          "context_frames": FRAMES, "kernel_size": SIZE, "dropout": 0.0, **kw})


def model_of(codebook, **kw) -> SpaceTimeTransformer:
    torch.manual_seed(0)
    return build_model(tiny(**kw), codebook).eval()


def codes(shape, seed=0) -> torch.Tensor:
    return torch.randint(0, K, shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("grad", [False, True])
def test_changing_a_frame_changes_no_earlier_scores(codebook, grad):
    """Scores of frame t + 1 (logits index t) come from frames <= t: changing frames from t + 1
    on leaves them as they were, on both the CPU's fixed path and the training path."""
    model, x = model_of(codebook), codes((2, 8, 5, 6))
    t = 4
    changed = x.clone()
    changed[:, t + 1:] = (x[:, t + 1:] + 1) % K
    with torch.set_grad_enabled(grad):
        a, b = model(x)[0], model(changed)[0]
    assert torch.equal(a[:, :t + 1], b[:, :t + 1])
    assert (a[:, t + 1] - b[:, t + 1]).abs().max() > 1e-3  # and the changed frame is read at once


def test_the_window_bounds_how_far_back_a_score_sees(codebook):
    """Each block reads `context_frames` frames, so frame 0 reaches the scores of logits index
    layers * (context_frames - 1) and no later one."""
    model, x = model_of(codebook), codes((1, 9, 5, 5))
    changed = x.clone()
    changed[:, 0] = (x[:, 0] + 1) % K
    with torch.no_grad():
        diff = (model(x)[0] - model(changed)[0]).abs().amax((0, 2, 3, 4))  # per frame
    reach = LAYERS * (FRAMES - 1)
    assert diff[reach] > 1e-4 and diff[reach + 1:].max() == 0


@pytest.mark.parametrize("chunks", [[1] * 9, [4, 5], [2, 1, 6]])
def test_stepping_with_the_kept_keys_and_values_gives_the_full_forward(codebook, chunks):
    """Any split of a clip into calls, each continuing from the state the last returned (its
    kept keys and values), scores as one call on the whole clip: the window slides across calls."""
    model, x = model_of(codebook), codes((2, 9, 5, 7), seed=1)
    with torch.no_grad():
        full, _, full_state = model(x)
        parts, state, start = [], None, 0
        for n in chunks:
            logits, _, state = model(x[:, start:start + n], state)
            parts.append(logits)
            start += n
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(state, full_state, rtol=1e-5, atol=1e-5)
    # the state matters: starting the last chunk afresh scores otherwise
    with torch.no_grad():
        fresh = model(x[:, start - chunks[-1]:])[0]
    assert (fresh - parts[-1]).abs().max() > 1e-3


@pytest.mark.parametrize("shape", [(5, 7), (1, 1), (2, 9), (11, 3)])
def test_any_frame_size_and_the_same_weights_everywhere(codebook, shape):
    """Frames that are not a multiple of the attention window (or smaller than it) run; a clip
    shifted by one cell scores the same, shifted, wherever the window stays inside the frame."""
    model = model_of(codebook, kernel_size=5)
    h, w = shape
    x = codes((1, 4, h + 1, w), seed=2)
    with torch.no_grad():
        logits = model(x[:, :, :h])[0]
        shifted = model(x[:, :, 1:])[0]
    assert logits.shape == (1, 4, h, w, K) and torch.isfinite(logits).all()
    r = model.context_radius  # 2 blocks of radius 2
    if h > 2 * r + 1:
        torch.testing.assert_close(shifted[:, :, r:h - r - 1], logits[:, :, r + 1:h - r], rtol=1e-5, atol=1e-5)


def test_loss_matches_the_logits_and_every_parameter_learns(codebook):
    model = model_of(codebook, head="atom").train()
    x = codes((2, 5, 4, 6), seed=3)
    targets = x[:, 1:].clone()
    targets[0, 0, 0, 0] = IGNORE
    _, loss, state = model(x[:, :-1], targets=targets)
    assert state.shape == (2, model.state_channels, 4, 6)
    logits = model(x[:, :-1])[0]
    keep = targets != IGNORE
    expected = torch.nn.functional.cross_entropy(logits[keep], targets[keep])
    torch.testing.assert_close(loss, expected)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_generation_and_filling_run_on_it(codebook):
    """Generation steps frame by frame on the kept keys and values: its codes are the argmax of
    one full forward over the context and the generated frames. Filling runs on the state too."""
    model, x = model_of(codebook), codes((1, 6, 5, 6), seed=4)
    generated, _, _ = rollout(model, x[0, :2].numpy(), 5)
    with torch.no_grad():
        logits = model(torch.cat([x[:, :2], torch.from_numpy(generated[None, :-1])], 1))[0]
    assert torch.equal(logits[0, 1:].argmax(-1), torch.from_numpy(generated))
    filled, forward, (logits, state) = fill_codes(model, x[0, :3].numpy(), x[0, 4].numpy(), candidates=3, sweeps=1)
    assert filled.shape == forward.shape == (5, 6) and state.shape[1] == model.state_channels
