"""The rNN baseline: a recurrent language model at each patch location on its own.

It is the rCNN with every convolution 1x1, so a location never sees its neighbours:
what it predicts comes from the history of its own code only.
"""

from __future__ import annotations

import dataclasses

import torch

from videolm.config import ModelConfig
from videolm.models.rcnn import RCNN


class RNN(RCNN):
    def __init__(self, cfg: ModelConfig, k: int, atoms: torch.Tensor | None = None):
        super().__init__(dataclasses.replace(cfg, kernel_size=1, input_layers=1), k, atoms)
