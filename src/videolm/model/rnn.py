"""The rNN baseline: a recurrent language model at each patch location on its own.

It is the rCNN with every convolution 1x1 (`model.kernel_size` is ignored), so a location
never sees its neighbours: what it predicts comes from the history of its own code only.
`model.input_layers` still sets the depth of its per-location input layers.
"""

from __future__ import annotations

import torch

from videolm.config import ModelConfig
from videolm.model.rcnn import RCNN


class RNN(RCNN):
    def __init__(self, cfg: ModelConfig, k: int, centroids: torch.Tensor | None = None):
        super().__init__(cfg.model_copy(update={"kernel_size": 1}), k, centroids)
