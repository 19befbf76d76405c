"""Models, chosen by `model.name`."""

from __future__ import annotations

import torch

from videolm.codes.codebook import Codebook
from videolm.config import ModelConfig
from videolm.errors import VideoLMError
from videolm.model.checkpoint import Checkpoint
from videolm.model.rcnn import RCNN
from videolm.model.rnn import RNN
from videolm.model.transformer import SpaceTimeTransformer

MODELS = {"rcnn": RCNN, "rnn": RNN, "transformer": SpaceTimeTransformer}


def build_model(cfg: ModelConfig, codebook: Codebook) -> torch.nn.Module:
    return MODELS[cfg.name](cfg, codebook.k, torch.from_numpy(codebook.centroids))


def load_model(path, codebook: Codebook) -> torch.nn.Module:
    """Rebuild a trained model from its checkpoint, checked against the current codebook."""
    checkpoint = Checkpoint.load(path)
    if checkpoint.codebook != codebook.digest:
        raise VideoLMError(f"{path}: trained with codebook {checkpoint.codebook}, not the current "
                           f"one ({codebook.digest}); rerun the train stage")
    model = build_model(ModelConfig(**checkpoint.model_config), codebook)
    model.load_state_dict(checkpoint.model)
    return model.eval()
