"""Training on the model's own predictions (`train.own_predictions`, parallel scheduled sampling): the
chunked sampler, the mixing of inputs, and tiny runs that are exact: the same bytes twice, after a
resume, and, with the option off, the same weights as training that never heard of it."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from conftest import moving_grid
from test_resume import Stop, run, tiny_params  # dropout on: a draw from torch's generator shows in the weights

from videolm.config import TrainConfig
from videolm.models.linear_ce import sample_linear
from videolm.train import mix_codes, run_digest, step_generator


def weights(codebook, params, resume=None, stop_at=None) -> dict[str, torch.Tensor]:
    return run(codebook, params, resume, stop_at)[0]


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


# ---------------------------------------------------------------- sampling and mixing


def test_sampler_draws_the_softmax_frequencies():
    """20,000 draws from one row's softmax over k=5, taken 7 rows a chunk: each code's frequency is within
    0.02 of its probability (a standard error of at most 0.0035: 5.7 of them; and the draws are seeded)."""
    k, n = 5, 20_000
    bias = torch.tensor([1.0, 0.0, -1.0, 2.0, 0.5])
    x = torch.ones(n, 2)
    weight = torch.tensor([[0.5, 0.0], [0.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, 0.0]])  # scores = bias + x W^T
    codes = sample_linear(x, weight, bias, torch.Generator().manual_seed(0), chunk=7 * k)
    probs = torch.softmax(bias + weight.sum(1), 0)
    freqs = torch.bincount(codes, minlength=k) / n
    assert codes.shape == (n,) and codes.dtype == torch.int64
    assert (freqs - probs).abs().max() < 0.02, (freqs, probs)


def test_sampler_keeps_each_row_its_own_code():
    """Rows whose scores put all the mass on one code, in (B, T, H, W, E) and chunks that do not divide
    the rows: every row gets its own code back, in place."""
    k = 6
    wanted = torch.randint(0, k, (2, 3, 4, 5), generator=torch.Generator().manual_seed(1))
    x = 100 * torch.nn.functional.one_hot(wanted, k).float()  # (2, 3, 4, 5, k)
    drawn = sample_linear(x, torch.eye(k), torch.zeros(k), torch.Generator().manual_seed(0), chunk=7 * k)
    assert torch.equal(drawn, wanted)


def test_mix_codes_replaces_about_the_fraction():
    """Frame 0 is kept; each cell of the later frames takes its drawn code (frame t's draw is drawn[:, t - 1])
    with probability 0.3: over 20,480 cells the share is within 0.02 of it (6 standard errors)."""
    inputs = torch.zeros(4, 6, 32, 32, dtype=torch.int64)
    drawn = torch.arange(1, 6)[None, :, None, None].expand(4, 5, 32, 32)  # frame t's draw is t
    mixed = mix_codes(inputs, drawn, 0.3, torch.Generator().manual_seed(0))
    assert mixed.shape == inputs.shape and torch.equal(mixed[:, 0], inputs[:, 0])
    replaced = mixed[:, 1:] != 0
    assert torch.equal(mixed[:, 1:][replaced], drawn[replaced])
    assert abs(replaced.float().mean().item() - 0.3) < 0.02
    assert torch.equal(mix_codes(inputs, drawn, 0.3, torch.Generator().manual_seed(0)), mixed)  # seeded
    assert torch.equal(mix_codes(inputs, drawn, 0.0, torch.Generator().manual_seed(0)), inputs)


def test_step_generators_differ_by_step_and_rank():
    def draw(*key):
        return torch.rand(4, generator=step_generator(*key, torch.device("cpu")))

    assert torch.equal(draw(0, 5, 0), draw(0, 5, 0))
    assert len({tuple(draw(*key).tolist()) for key in [(0, 5, 0), (0, 6, 0), (0, 5, 1), (1, 5, 0)]}) == 4


# ---------------------------------------------------------------- training


def test_off_trains_exactly_as_without_it(codebook, monkeypatch):
    """With the option off the sampling pass never runs; with it on but every draw put back by the true
    code, the run is bit for bit the same as with it off: the pass without gradients draws from its
    own generator only, and leaves the model in training mode."""
    plain = weights(codebook, tiny_params())
    monkeypatch.setattr("videolm.train.mix_codes", lambda inputs, drawn, fraction, generator: inputs)
    assert same(weights(codebook, tiny_params(own_predictions=0.5, own_passes=2)), plain)
    monkeypatch.setattr("videolm.train.with_own_predictions", None)  # called, it would fail
    assert same(weights(codebook, tiny_params()), plain)


def test_training_on_own_predictions_is_exact_and_resumes(codebook, tmp_path):
    params = tiny_params(own_predictions=0.5)
    once = weights(codebook, params)
    assert same(weights(codebook, params), once)
    assert not same(once, weights(codebook, tiny_params()))
    assert not same(once, weights(codebook, tiny_params(own_predictions=0.5, own_passes=2)))
    resume = tmp_path / "resume.pt"
    with pytest.raises(Stop):
        weights(codebook, params, resume, stop_at=2)  # saved at steps 4, 6 and 8: resumed within epoch 2
    assert same(weights(codebook, params, resume), once)


def test_the_option_is_in_the_run_digest_and_checked(codebook):
    grids = [moving_grid()]
    digest = run_digest(grids, codebook, tiny_params())
    assert run_digest(grids, codebook, tiny_params(own_predictions=0.25)) != digest
    assert run_digest(grids, codebook, tiny_params(own_predictions=0.25, own_passes=2)) != \
        run_digest(grids, codebook, tiny_params(own_predictions=0.25))
    for bad in [{"own_predictions": 1.0}, {"own_predictions": -0.1}, {"own_passes": 0},
                {"own_predictions": 0.5, "bptt": 1}]:
        with pytest.raises(ValidationError):
            TrainConfig(**bad)
