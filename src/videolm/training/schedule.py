"""The learning-rate schedule shared by the model's and the pixel decoder's training."""

from __future__ import annotations

import math

import torch


def lr_schedule(optimizer: torch.optim.Optimizer, total_steps: int, cosine: bool = True) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning rate times 0.5 (1 + cos(pi step / total_steps)) (cosine decay to 0), or constant."""
    if not cosine:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total_steps)))
