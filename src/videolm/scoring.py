"""Scoring whole frames: the model's and the baselines' log-likelihood of each frame of a part
given all earlier frames.

The model runs over each video from its first frame with the recurrent state carried
through, and is scored on the frames of one part (validation or test) given everything
before them: the same conditioning as a language model scored on a held-out text. Training
uses it for validation, evaluation for the test metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from videolm.baselines import Baselines
from videolm.codes import CodeGrid


@dataclass
class Scores:
    """Running sums over the scored frames of one part."""

    nll: dict[str, float] = field(default_factory=lambda: {"model": 0.0, "unigram": 0.0, "copy_previous": 0.0})
    count: int = 0

    def mean(self, name: str) -> float:
        return self.nll[name] / max(self.count, 1)


@torch.no_grad()
def predict_video(model, codes: np.ndarray, start: int, stop: int, chunk: int = 8):
    """Run the model over frames [0, stop - 1); for targets t in [max(start, 1), stop) yield
    (t, nll (H, W) of the true code, log-probabilities (H, W, k) tensor) in order."""
    model.eval()
    first = max(start, 1)
    state = None
    x = torch.from_numpy(codes.astype(np.int64))[None]  # (1, T, H, W)
    for i in range(0, stop - 1, chunk):
        j = min(i + chunk, stop - 1)
        logits, _, state = model(x[:, i:j], state)  # predicts frames i+1 .. j
        for s in range(max(first - 1 - i, 0), j - i):
            t = i + s + 1
            logp = F.log_softmax(logits[0, s].float(), -1)  # (H, W, k)
            nll = -logp.gather(-1, x[0, t][..., None]).squeeze(-1)
            yield t, nll.numpy(), logp


def score_part(model, grids: list[CodeGrid], part: str, baselines: Baselines | None = None,
               on_frame=None) -> Scores:
    """Mean NLL (nats per code) of every `part` frame given its past, for the model and baselines.

    `on_frame(grid, t, logp)` is called for each scored frame (e.g. to rebuild predictions).
    """
    scores = Scores()
    for grid in grids:
        start, stop = grid.part(part)
        for t, nll, logp in predict_video(model, grid.codes, start, stop):
            target, previous = grid.codes[t].astype(np.int64), grid.codes[t - 1].astype(np.int64)
            scores.nll["model"] += float(nll.sum())
            if baselines is not None:
                scores.nll["unigram"] += float(baselines.unigram_nll(target).sum())
                scores.nll["copy_previous"] += float(baselines.copy_nll(previous, target).sum())
            scores.count += target.size
            if on_frame is not None:
                on_frame(grid, t, logp)
    return scores
