"""Training on the model's own predictions (`train.own_predictions`, parallel scheduled sampling): the
chunked sampler, the mixing of inputs, and tiny runs that are exact: the same bytes twice, after a
resume, and, with the option off, the same weights as training that never heard of it."""

from __future__ import annotations

import pytest
import torch
from conftest import moving_grid
from pydantic import ValidationError
from test_resume import Stop, run, tiny_params  # dropout on: a draw from torch's generator shows in the weights

from videolm.config import TrainConfig
from videolm.model.linear_ce import sample_linear
from videolm.training.train import run_digest, step_generator, with_own_predictions


def weights(codebook, params, resume=None, stop_at=None) -> dict[str, torch.Tensor]:
    return run(codebook, params, resume, stop_at)[0]


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


# ---------------------------------------------------------------- sampling and mixing


def test_sampler_draws_the_softmax_frequencies():
    """20,000 draws from one row's softmax over k=5, taken 7 rows a chunk: each code's frequency is within
    0.02 of its probability (a standard error of at most 0.0035: 5.7 of them; and the draws are seeded).
    They come from the generator given, not from torch's."""
    k, n = 5, 20_000
    bias = torch.tensor([1.0, 0.0, -1.0, 2.0, 0.5])
    x = torch.ones(n, 2)
    weight = torch.tensor([[0.5, 0.0], [0.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, 0.0]])  # scores = bias + x W^T
    torch_state = torch.get_rng_state()
    codes = sample_linear(x, weight, bias, torch.Generator().manual_seed(0), chunk=7 * k)
    assert torch.equal(torch.get_rng_state(), torch_state)
    probs = torch.softmax(bias + weight.sum(1), 0)
    freqs = torch.bincount(codes, minlength=k) / n
    assert codes.shape == (n,) and codes.dtype == torch.int64
    assert (freqs - probs).abs().max() < 0.02, (freqs, probs)


def test_sampler_keeps_each_row_its_own_code():
    """Rows whose scores put all the mass on one code, in (B, T, H, W, E) and chunks that do not divide
    the rows: every row gets its own code back, in place; a code of probability 0 is never drawn."""
    k = 6
    wanted = torch.randint(0, k, (2, 3, 4, 5), generator=torch.Generator().manual_seed(1))
    x = 100 * torch.nn.functional.one_hot(wanted, k).float()  # (2, 3, 4, 5, k)
    drawn = sample_linear(x, torch.eye(k), torch.zeros(k), torch.Generator().manual_seed(0), chunk=7 * k)
    assert torch.equal(drawn, wanted)
    never = torch.tensor([-torch.inf, 0.0, -torch.inf, 0.0, 0.0, -torch.inf])  # codes 0, 2, 5 impossible
    drawn = sample_linear(torch.zeros(2000, 1), torch.zeros(k, 1), never, torch.Generator().manual_seed(0))
    assert set(drawn.tolist()) == {1, 3, 4}


class NextCode(torch.nn.Module):
    """A stand-in model sure that each cell's next code is its code + 1."""
    k = 8

    def head_inputs(self, codes):
        feats = 100 * torch.nn.functional.one_hot((codes + 1) % self.k, self.k).float()  # (B, T, H, W, k)
        return feats, torch.eye(self.k), torch.zeros(self.k), None


def test_own_predictions_replace_about_the_fraction():
    """Frame 0 is kept; each cell of the later frames takes the drawn code with probability 0.3: over
    20,480 cells the share is within 0.02 of it (6 standard errors). A second pass predicts from the
    mixed inputs: codes 2, predictions of predictions, appear."""
    inputs = torch.zeros(4, 6, 32, 32, dtype=torch.int64)
    model = NextCode().train()
    mixed = with_own_predictions(model, inputs, 0.3, 1, torch.Generator().manual_seed(0))
    assert model.training and mixed.shape == inputs.shape and not mixed[:, 0].any()
    assert set(mixed.unique().tolist()) == {0, 1}
    assert abs((mixed[:, 1:] == 1).float().mean().item() - 0.3) < 0.02
    assert torch.equal(with_own_predictions(model, inputs, 0.3, 1, torch.Generator().manual_seed(0)), mixed)
    twice = with_own_predictions(model, inputs, 0.3, 2, torch.Generator().manual_seed(0))
    assert set(twice.unique().tolist()) == {0, 1, 2} and not twice[:, :2].eq(2).any()  # frame 1 sees true frame 0
    assert abs((twice[:, 1:] != 0).float().mean().item() - 0.3) < 0.02


def test_step_generators_differ_by_step_and_rank():
    def draw(*key):
        return torch.rand(4, generator=step_generator(*key, torch.device("cpu")))

    assert torch.equal(draw(0, 5, 0), draw(0, 5, 0))
    assert len({tuple(draw(*key).tolist()) for key in [(0, 5, 0), (0, 6, 0), (0, 5, 1), (1, 5, 0)]}) == 4


# ---------------------------------------------------------------- training


def test_off_trains_exactly_as_without_it(codebook, monkeypatch):
    """With the option off the sampling pass never runs; with it on at a fraction that replaces no cell,
    the run is bit for bit the same as with it off: the pass draws from its own generator only, and
    leaves the model in training mode."""
    plain = weights(codebook, tiny_params())
    assert same(weights(codebook, tiny_params(own_predictions=1e-12, own_passes=2)), plain)
    monkeypatch.setattr("videolm.training.train.with_own_predictions", None)  # called, it would fail
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
