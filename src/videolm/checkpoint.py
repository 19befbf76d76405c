"""The trained model's checkpoint file (`models/model.pt`).

`Checkpoint` owns the file: the model's weights, the model config to rebuild it with, the
codebook it was trained on (size and digest, so a stale pairing fails loudly) and the
training summary. It is a plain dict of tensors and builtins, saved with `torch.save` and
loaded with `weights_only=True`: loading a checkpoint never runs code.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

from videolm.errors import VideoLMError
from videolm.io import MARK, atomic_path


@dataclass
class Checkpoint:
    model: dict[str, torch.Tensor]  # state_dict
    model_config: dict  # `ModelConfig.model_dump()`
    k: int  # codebook size
    codebook: str  # codebook digest
    summary: dict = field(default_factory=dict)  # what training reported

    def save(self, path: str | Path) -> None:
        # a file object: the archive's inner name does not take the temp name
        with atomic_path(path, "train") as tmp, open(tmp, "wb") as f:
            torch.save({**{f.name: getattr(self, f.name) for f in fields(self)}, MARK: "train"}, f)

    @classmethod
    def load(cls, path: str | Path) -> Checkpoint:
        try:
            stored = torch.load(path, map_location="cpu", weights_only=True)
            return cls(**{f.name: stored[f.name] for f in fields(cls)})
        except FileNotFoundError:
            raise VideoLMError(f"{path}: no model checkpoint (run the train stage first)") from None
