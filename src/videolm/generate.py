"""Generation: extrapolate future code grids by feeding the model its own predictions."""

from __future__ import annotations

import numpy as np
import torch


@torch.no_grad()
def extrapolate(model, codes: np.ndarray, t0: int, horizon: int, temperature: float = 0.0,
                seed: int = 0) -> np.ndarray:
    """Predict frames t0 .. t0 + horizon - 1 from the real frames before t0.

    The state is built on the real frames [0, t0); each next frame is the argmax code at
    every location (temperature 0) or a sample at the given temperature, and is fed back.
    Returns (horizon, H, W) int64 codes.
    """
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(codes[:t0].astype(np.int64))[None]  # (1, t0, H, W)
    logits, _, state = model(x)
    last = logits[:, -1:]  # (1, 1, H, W, k): prediction of frame t0
    out = []
    for _ in range(horizon):
        if temperature > 0:
            probs = torch.softmax(last[0, 0] / temperature, -1)  # (H, W, k)
            step = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator)
            step = step.reshape(1, 1, *probs.shape[:2])
        else:
            step = last.argmax(-1)  # (1, 1, H, W)
        out.append(step[0, 0])
        last, _, state = model(step, state)
    return torch.stack(out).numpy()
