"""The resume state of a training run under way (`paths.resume`): `TrainState`.

Saved with `torch.save` to a file object as a dict of tensors and builtins, and loaded with
`weights_only=True`: loading it never runs code.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from videolm.model.checkpoint import load_fields, save_fields
from videolm.training.distributed import Ranks


@dataclass
class TrainState:
    """Where a training run is, so that a killed run continues from there and ends with the
    same bits as an uninterrupted one.

    The fields are the run's progress; `save` adds the model's, optimizer's and LR scheduler's
    state_dicts and every random generator's state, and `restore` puts them back. The data
    position needs nothing more than `step`: batch `step` is dataset items `step * batch_size`
    on, each seeded by `(seed, index)`. `digest` names the run (`run_digest`: params, the
    codebook, the code grids, the package's sources and the number of processes), so that a
    state of another run is never continued.
    """

    digest: str
    step: int = 0  # optimizer steps done
    epoch: int = 0  # epochs done
    running_loss: float = 0.0  # sum of the training losses of the epoch under way
    best_val_loss: float = math.inf
    best_epoch: int = 0  # 0: no epoch done yet
    best_model: dict[str, torch.Tensor] | None = None  # state_dict of the best epoch
    history: list[dict[str, float]] = field(default_factory=list)  # each done epoch's logged metrics
    saved: dict = field(default_factory=dict)  # model, optimizer, scheduler, rng: as of the last save or load

    def save(self, path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             scheduler: torch.optim.lr_scheduler.LRScheduler, ranks: Ranks = Ranks()) -> None:
        """Write the progress and the training objects' states, atomically. Draws no random numbers.

        Called by every training process: the random generators of each are kept (`rng`, by
        rank); the rest is the same on all of them, and rank 0 writes the file."""
        self.saved = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                      "scheduler": scheduler.state_dict(), "rng": ranks.gather(_rng_states())}
        if ranks.main:
            save_fields(self, path)

    @classmethod
    def load(cls, path: str | Path) -> TrainState | None:
        """The state saved at `path`, or None if there is none."""
        try:
            return load_fields(cls, path)
        except FileNotFoundError:
            return None

    def restore(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                scheduler: torch.optim.lr_scheduler.LRScheduler, rank: int = 0) -> None:
        """Put the saved states back into the training objects and the random generators (those
        of training process `rank`)."""
        model.load_state_dict(self.saved["model"])
        optimizer.load_state_dict(self.saved["optimizer"])
        scheduler.load_state_dict(self.saved["scheduler"])
        _set_rng_states(self.saved["rng"][rank])


def _rng_states() -> dict:
    """Every random generator's state, as tensors and builtins. Training draws only from torch's
    (dropout, the DataLoader's base seed); numpy's and Python's global generators are kept too,
    so that code that starts drawing from them cannot quietly break resuming."""
    kind, key, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
            "numpy": [kind, torch.from_numpy(key.astype(np.int64)), pos, has_gauss, gauss],
            "python": random.getstate()}


def _set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"]:
        torch.cuda.set_rng_state_all(states["cuda"])
    kind, key, *rest = states["numpy"]
    np.random.set_state((kind, key.numpy().astype(np.uint32), *rest))
    random.setstate(states["python"])
