"""Generation: extrapolate future code grids by feeding the model its own predictions."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


@torch.no_grad()
def rollout(model, context: np.ndarray, horizon: int, temperature: float = 0.0,
            seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Generate `horizon` code grids after the real `context` grids (C, H, W).

    The state is built on the context; each next grid is the argmax code at every location
    (temperature 0) or a sample at the given temperature (seeded), and is fed back.
    Returns (codes (horizon, H, W) int64, entropy (horizon, H, W) float32): the entropy in
    bits of the model's predicted distribution (at temperature 1) at every location.
    """
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    logits, _, state = model(torch.from_numpy(np.asarray(context, np.int64))[None])
    last = logits[0, -1]  # (H, W, k): prediction of the first generated grid
    codes, entropy = [], []
    for _ in range(horizon):
        logp = F.log_softmax(last.float(), -1)
        entropy.append(-(logp.exp() * logp).sum(-1) / math.log(2))
        if temperature > 0:
            probs = torch.softmax(last.float() / temperature, -1)
            step = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator)
            step = step.reshape(probs.shape[:2])
        else:
            step = last.argmax(-1)  # (H, W)
        codes.append(step)
        logits, _, state = model(step[None, None], state)
        last = logits[0, 0]
    return torch.stack(codes).numpy(), torch.stack(entropy).numpy()


def extrapolate(model, codes: np.ndarray, t0: int, horizon: int, temperature: float = 0.0,
                seed: int = 0, context: int | None = None) -> np.ndarray:
    """Predict frames t0 .. t0 + horizon - 1 from the real frames before t0: all of them
    [0, t0), or the last `context` of them. Returns (horizon, H, W) int64 codes."""
    start = 0 if context is None else max(t0 - context, 0)
    return rollout(model, codes[start:t0], horizon, temperature, seed)[0]
