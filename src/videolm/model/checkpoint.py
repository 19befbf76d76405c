"""The trained models' files: `Checkpoint` (the model, `models/model.pt`) and
`DecoderCheckpoint` (the pixel decoder, `models/decoder.pt`).

`Checkpoint` holds the model's weights, the model config to rebuild it with and the digest of
the codebook it was trained on (so that a stale pairing fails loudly). Both are plain dicts of
tensors and builtins, saved with `torch.save` to a file object (so the same contents give the
same bytes) and loaded with `weights_only=True`: loading either never runs code.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from videolm.errors import VideoLMError
from videolm.io import MARK, atomic_path


def save_fields(obj, path: str | Path, stage: str = "train") -> None:
    """`obj`'s dataclass fields as a dict with `stage`'s mark, written atomically."""
    # a file object: the archive's inner name does not take the temp name; built in memory and
    # written with one plain write, so that a full disk is an ordinary OSError
    buffer = io.BytesIO()
    torch.save({**{f.name: getattr(obj, f.name) for f in fields(obj)}, MARK: stage}, buffer)
    with atomic_path(path, stage) as tmp:
        tmp.write_bytes(buffer.getvalue())


def load_fields(cls, path: str | Path):
    """An instance of the dataclass `cls` from a file `_save` wrote (raises FileNotFoundError)."""
    stored = torch.load(path, map_location="cpu", weights_only=True)
    return cls(**{f.name: stored[f.name] for f in fields(cls) if f.name in stored})  # else the field's default


def _load_made_by(cls, path: str | Path, what: str, stage: str):
    """`load_fields`, with a missing file one line naming it, what it is and the stage that makes it."""
    try:
        return load_fields(cls, path)
    except FileNotFoundError:
        raise VideoLMError(f"{path}: no {what} (run the {stage} stage first)") from None


@dataclass
class Checkpoint:
    model: dict[str, torch.Tensor]  # state_dict
    model_config: dict  # `ModelConfig.model_dump()`
    codebook: str  # codebook digest

    def save(self, path: str | Path) -> None:
        save_fields(self, path)

    @classmethod
    def load(cls, path: str | Path) -> Checkpoint:
        return _load_made_by(cls, path, "model checkpoint", "train")


@dataclass
class DecoderCheckpoint:
    """The train_decoder stage's file: the pixel decoder's weights and config, and what it was
    trained on top of (the model's weights digest, the codebook's digest, the patch stride), and
    whether it reads the model's predictions (`PixelDecoder.reads_model`)."""

    decoder: dict[str, torch.Tensor]  # state_dict
    decoder_config: dict  # `DecoderConfig.model_dump()`
    model: str  # `weights_digest` of the model
    codebook: str  # codebook digest
    stride: int
    reads_model: bool = True

    def save(self, path: str | Path) -> None:
        save_fields(self, path, "train_decoder")

    @classmethod
    def load(cls, path: str | Path) -> DecoderCheckpoint:
        return _load_made_by(cls, path, "pixel decoder", "train_decoder")


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 (16 hex digits) of a model's weights, in state_dict order: names a trained model."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


