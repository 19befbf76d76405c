"""Filling a missing frame with the forward model: the codes of frame t given the frames
before it and frame t + 1.

The model is a forward language model, so it gives p(c_t | past) and, for any guess of
c_t, p(c_{t+1} | c_t, past); both factor over locations. The filled grid maximizes their
product, log p(c_t | past) + log p(c_{t+1} | c_t, past), i.e. the joint likelihood of the
missing frame and the frame after it, over a few candidate codes per location:

- candidates at each location: the `candidates` most likely codes under p(c_t | past),
  plus the code frame t + 1 has there;
- start from the forward model's argmax and improve by iterated conditional modes: the
  code at one location only changes the prediction of t + 1 within the model's
  `context_radius` r, so locations on a lattice of period 2r + 1 do not
  interact and are all re-chosen exactly at once, one batched forward step per lattice
  offset. Every such update can only raise the joint likelihood; a sweep visits every
  offset once, and sweeps stop early when nothing changes.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


@torch.no_grad()
def fill_codes(model, before: np.ndarray, after: np.ndarray, candidates: int = 4,
               sweeps: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Codes of the missing frame between the real grids `before` (C, H, W: the frames up
    to t - 1) and `after` (H, W: frame t + 1).

    Returns (filled (H, W) int64, forward (H, W) int64): the joint-likelihood fill and the
    forward model's argmax alone (what it predicts without seeing t + 1).
    """
    model.eval()
    logits, _, state = model(torch.from_numpy(np.asarray(before, np.int64))[None])
    prior = F.log_softmax(logits[0, -1].float(), -1)  # (H, W, k): log p(c_t | past)
    target = torch.from_numpy(np.asarray(after, np.int64))  # (H, W)
    h, w = target.shape
    options = torch.cat([prior.topk(min(candidates, model.k), -1).indices, target[..., None]], -1)  # (H, W, n)
    option_prior = prior.gather(-1, options)  # (H, W, n)
    forward = options[..., 0].clone()
    grid = forward.clone()
    r = model.context_radius
    period = 2 * r + 1
    box = torch.ones(1, 1, period, period)
    n = options.shape[-1]
    states = state.expand(n, *state.shape[1:])
    for _ in range(sweeps):
        before_sweep = grid.clone()
        for oy in range(min(period, h)):
            for ox in range(min(period, w)):
                mask = torch.zeros(h, w, dtype=torch.bool)
                mask[oy::period, ox::period] = True
                batch = grid.expand(n, h, w).clone()
                batch[:, mask] = options[mask].T  # option j at every lattice location of batch j
                out, _, _ = model(batch[:, None], states)
                ll = F.log_softmax(out[:, 0].float(), -1).gather(-1, target.expand(n, h, w)[..., None])[..., 0]
                local = F.conv2d(ll[:, None], box, padding=r)[:, 0]  # (n, H, W): log p(t+1) around each cell
                score = option_prior[mask].T + local[:, mask]  # (n, cells)
                grid[mask] = options[mask].gather(-1, score.argmax(0)[:, None])[:, 0]
        if torch.equal(grid, before_sweep):
            break
    return grid.numpy(), forward.numpy()


@torch.no_grad()
def joint_log_likelihood(model, before: np.ndarray, middle: np.ndarray, after: np.ndarray) -> float:
    """log p(c_t = middle, c_{t+1} = after | before) under the model, in nats (for tests)."""
    model.eval()
    codes = np.concatenate([before, middle[None], after[None]]).astype(np.int64)
    logits, _, _ = model(torch.from_numpy(codes[:-1])[None])
    logp = F.log_softmax(logits[0, -2:].float(), -1)  # predictions of middle and after
    target = torch.from_numpy(codes[-2:])[..., None]
    return float(logp.gather(-1, target).sum())
