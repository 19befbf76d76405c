"""The rCNN and rNN: shapes, loss, gradients, spatial context, and the carried state."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import K

from videolm.codes.codebook import Codebook
from videolm.config import ModelConfig
from videolm.errors import VideoLMError
from videolm.evaluation.generate import rollout
from videolm.model.build import RCNN, RNN, build_model, load_model
from videolm.model.checkpoint import Checkpoint
from videolm.model.linear_ce import IGNORE, linear_cross_entropy

B, T, GH, GW = 2, 5, 6, 7


def tiny(name="rcnn", head="atom", **kw) -> ModelConfig:
    return ModelConfig(name=name, head=head, embed_dim=8, hidden=12, kernel_size=3, input_layers=kw.pop("layers", 1),
                       nonlinearity=kw.pop("nonlinearity", "tanh"), dropout=0.0, **kw)


def codes(seed=0, shape=(B, T, GH, GW)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, K, shape, generator=g)


@pytest.mark.parametrize("name", ["rcnn", "rnn"])
@pytest.mark.parametrize("head", ["independent", "tied", "atom"])
def test_forward_loss_backward(codebook, name, head):
    torch.manual_seed(0)
    model = build_model(tiny(name, head), codebook)
    assert isinstance(model, RNN if name == "rnn" else RCNN)
    x = codes()
    no_logits, loss, state = model(x[:, :-1], targets=x[:, 1:])  # the loss without the logits
    assert no_logits is None
    assert state.shape == (B, 12, GH, GW)
    assert loss.ndim == 0 and torch.isfinite(loss)
    # an untrained model is close to uniform over the k codes
    assert abs(loss.item() - np.log(K)) < 1.0
    logits, _, _ = model(x[:, :-1])
    assert logits.shape == (B, T - 1, GH, GW, K)
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, K), x[:, 1:].reshape(-1))
    assert torch.allclose(loss, expected)
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname
    # without targets: no loss
    _, no_loss, _ = model(x)
    assert no_loss is None


@pytest.mark.parametrize("head", ["independent", "tied", "atom"])
def test_heads_have_their_parameters(codebook, head):
    model = build_model(tiny("rcnn", head), codebook)
    names = {n for n, _ in model.named_parameters()}
    assert ("embed.centroid_map.weight" in names) == (head == "atom")
    assert ("out_bias" in names) == (head != "independent")
    if head == "atom":
        # the atom head's code vectors are built from the codebook's centroids
        assert torch.equal(model.embed.centroids, torch.from_numpy(codebook.centroids))


def test_rnn_is_all_1x1(codebook):
    model = build_model(tiny("rnn", "atom", layers=3), codebook)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.kernel_size == (1, 1) for c in convs)
    assert len(convs) == 3 + 1  # model.input_layers is honoured (per location), then the recurrence
    rcnn = build_model(tiny("rcnn", "atom", layers=2), codebook)
    assert sum(c.kernel_size == (3, 3) for c in rcnn.modules() if isinstance(c, torch.nn.Conv2d)) == 2


@pytest.mark.parametrize("head", ["independent", "atom"])
def test_spatial_context(codebook, head):
    torch.manual_seed(0)
    rnn = build_model(tiny("rnn", head), codebook).eval()
    torch.manual_seed(0)
    rcnn = build_model(tiny("rcnn", head), codebook).eval()
    x = codes(seed=1)
    y, xx, t = 3, 3, 2
    changed = x.clone()
    changed[:, t, y, xx] = (x[:, t, y, xx] + 1) % K

    with torch.no_grad():
        diff_rnn = (rnn(x)[0] - rnn(changed)[0]).abs().amax(-1)  # (B, T, H, W)
        diff_rcnn = (rcnn(x)[0] - rcnn(changed)[0]).abs().amax(-1)

    # the rNN: only the changed location, from the changed step on
    assert diff_rnn[:, t:, y, xx].min() > 1e-4
    mask = torch.zeros_like(diff_rnn, dtype=torch.bool)
    mask[:, t:, y, xx] = True
    assert diff_rnn[~mask].max() < 1e-6
    # the rCNN: the neighbours too (one kernel radius at step t), never the past
    assert diff_rcnn[:, :t].max() < 1e-6
    for dy, dx in [(0, 1), (1, 0), (-1, -1), (1, 1)]:
        assert diff_rcnn[:, t, y + dy, xx + dx].min() > 1e-4, (dy, dx)
    assert diff_rcnn[:, t:, y + 1, xx + 1].min() > 1e-4  # carried by the state afterwards
    # the recurrence is 1x1: the change never spreads beyond one kernel radius, at any later step
    assert diff_rcnn[:, t:, y + 2, xx].max() < 1e-6
    assert diff_rcnn[:, t:, y, xx - 2].max() < 1e-6


@pytest.mark.parametrize("name", ["rcnn", "rnn"])
def test_state_carries_over(codebook, name):
    torch.manual_seed(0)
    model = build_model(tiny(name, "atom", layers=2, nonlinearity="relu"), codebook).eval()
    x = codes(seed=2, shape=(B, 9, GH, GW))
    with torch.no_grad():
        full, _, state_full = model(x)
        first, _, state = model(x[:, :4])
        second, _, state_two = model(x[:, 4:], state)
    torch.testing.assert_close(torch.cat([first, second], 1), full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(state_two, state_full, rtol=1e-5, atol=1e-5)
    # and the state does matter: starting the second half fresh gives other logits
    with torch.no_grad():
        fresh, _, _ = model(x[:, 4:])
    assert (fresh - second).abs().max() > 1e-3


def test_load_model_round_trip(codebook, tmp_path):
    torch.manual_seed(0)
    cfg = tiny("rnn", "tied")
    model = build_model(cfg, codebook)
    path = tmp_path / "model.pt"
    Checkpoint(model.state_dict(), cfg.model_dump(), codebook.digest).save(path)
    loaded = load_model(path, codebook)
    x = codes(seed=3)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)[0], model.eval()(x)[0])
    other = Codebook(codebook.centroids + 1, 1.0, 4)
    with pytest.raises(VideoLMError, match="model.pt"):
        load_model(path, other)
    with pytest.raises(VideoLMError, match="nothing.pt"):
        load_model(tmp_path / "nothing.pt", codebook)


def test_rollout_feeds_back_argmax(codebook):
    torch.manual_seed(0)
    model = build_model(tiny("rcnn", "atom"), codebook).eval()
    grid = codes(seed=4, shape=(1, 6, GH, GW))[0].numpy()
    out, entropy, pixels = rollout(model, grid[:3], horizon=3)
    assert pixels is None
    assert out.shape == entropy.shape == (3, GH, GW) and out.dtype == np.int64
    assert out.min() >= 0 and out.max() < K
    assert (entropy >= 0).all() and (entropy <= np.log2(K) + 1e-4).all()
    with torch.no_grad():
        logits, _, _ = model(torch.from_numpy(grid[:3])[None])
        np.testing.assert_array_equal(out[0], logits[0, -1].argmax(-1).numpy())
        fed = np.concatenate([grid[:3], out[:2]])
        logits, _, _ = model(torch.from_numpy(fed)[None])
        np.testing.assert_array_equal(out[1:], logits[0, -2:].argmax(-1).numpy())
    sampled, _, _ = rollout(model, grid[:3], horizon=2, temperature=1.0, seed=5)
    np.testing.assert_array_equal(sampled, rollout(model, grid[:3], horizon=2, temperature=1.0, seed=5)[0])


@pytest.mark.parametrize("chunk", [1, 7_000, 64_000, 10_000_000])
def test_chunked_linear_cross_entropy_equals_the_plain_one(chunk):
    """Loss and gradients of x, W and b equal those of F.cross_entropy over the full logits,
    ignored rows included, whatever the chunk size (the sums only run in another order)."""
    g = torch.Generator().manual_seed(0)
    n, e, k = 300, 16, 1000
    x = torch.randn(n, e, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(k, e, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(k, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, k, (n,), generator=g)
    t[::5] = IGNORE
    plain = torch.nn.functional.cross_entropy(x @ w.T + b, t, ignore_index=IGNORE)
    expected = torch.autograd.grad(plain * 3, (x, w, b))  # an upstream gradient other than 1 is applied too
    loss = linear_cross_entropy(x, w, b, t, chunk)
    got = torch.autograd.grad(loss * 3, (x, w, b))
    torch.testing.assert_close(loss, plain, rtol=1e-12, atol=0)
    for a, e_ in zip(got, expected):
        torch.testing.assert_close(a, e_, rtol=1e-10, atol=1e-14)
    # in fp32, as training runs: equal within fp32 rounding
    x32, w32, b32 = (v.detach().float().requires_grad_() for v in (x, w, b))
    plain32 = torch.nn.functional.cross_entropy(x32 @ w32.T + b32, t, ignore_index=IGNORE)
    loss32 = linear_cross_entropy(x32, w32, b32, t, chunk)
    torch.testing.assert_close(loss32, plain32, rtol=1e-6, atol=0)
    for a, e_ in zip(torch.autograd.grad(loss32, (x32, w32, b32)), torch.autograd.grad(plain32, (x32, w32, b32))):
        torch.testing.assert_close(a, e_, rtol=1e-4, atol=1e-7)
