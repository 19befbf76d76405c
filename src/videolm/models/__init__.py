"""Models, chosen by `model.name`."""

from __future__ import annotations

import torch

from videolm.checkpoint import Checkpoint
from videolm.codebook import Codebook
from videolm.config import ModelConfig
from videolm.errors import VideoLMError
from videolm.models.rcnn import RCNN
from videolm.models.rnn import RNN

MODELS = {"rcnn": RCNN, "rnn": RNN}


def build_model(cfg: ModelConfig, codebook: Codebook) -> RCNN:
    atoms = torch.from_numpy(codebook.centroids)
    return MODELS[cfg.name](cfg, codebook.k, atoms)


def load_model(path, codebook: Codebook) -> RCNN:
    """Rebuild a trained model from its checkpoint, checked against the current codebook."""
    checkpoint = Checkpoint.load(path)
    if checkpoint.codebook != codebook.digest:
        raise VideoLMError(f"{path}: trained with codebook {checkpoint.codebook}, not the current "
                           f"one ({codebook.digest}); rerun the train stage")
    model = build_model(ModelConfig(**checkpoint.model_config), codebook)
    model.load_state_dict(checkpoint.model)
    return model.eval()
