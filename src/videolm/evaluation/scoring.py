"""Scoring whole frames: the model's and the baselines' log-likelihood of each frame of a part
given all earlier frames.

The model runs over each video from its first frame with the recurrent state carried
through, and is scored on the frames of one part (validation or test) given everything
before them: the same conditioning as a language model scored on a held-out text. Training
uses it for validation, evaluation for the test metrics (`score_test`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from videolm.codes.codebook import Codebook
from videolm.codes.grids import CodeGrid
from videolm.errors import VideoLMError
from videolm.evaluation.baselines import Baselines
from videolm.image_metrics import psnr_from_mse


@dataclass
class Scores:
    """Running sums over the scored frames of one part."""

    nll: dict[str, float] = field(default_factory=lambda: {"model": 0.0, "unigram": 0.0, "copy_previous": 0.0})
    count: int = 0

    def mean(self, name: str) -> float:
        return self.nll[name] / max(self.count, 1)

    def summary(self) -> dict:
        """Bits per patch and perplexity of the model and each baseline, and the model's perplexity
        relative to copy-previous."""
        out = {}
        for name in self.nll:
            out[f"{name}_bits_per_patch"] = bits_per_patch(self.mean(name))
            out[f"{name}_perplexity"] = perplexity(self.mean(name))
        out["model_vs_copy_previous_perplexity"] = out["model_perplexity"] / out["copy_previous_perplexity"]
        return out


@torch.no_grad()
def predict_video(model, codes: np.ndarray, start: int, stop: int, chunk: int = 8):
    """Run the model over frames [0, stop - 1); for targets t in [max(start, 1), stop) yield
    (t, nll (H, W) of the true code, log-probabilities (H, W, k) tensor, the state (1, C, H, W) the
    prediction came from) in order.

    `codes` (T, H, W) is an array or a grid's `H5Codes`: frames [0, stop) are read once, one
    video at a time. The model runs on its own device; nll comes back as a numpy array.
    """
    model.eval()
    first = max(start, 1)
    state = None
    device = next(model.parameters()).device
    x = torch.from_numpy(codes[:stop].astype(np.int64))[None].to(device)  # (1, T, H, W)
    for i in range(0, stop - 1, chunk):
        j = min(i + chunk, stop - 1)
        logits, _, states = model(x[:, i:j], state, every_state=True)  # predicts frames i+1 .. j
        state = states[:, -1]
        for s in range(max(first - 1 - i, 0), j - i):
            t = i + s + 1
            logp = F.log_softmax(logits[0, s].float(), -1)  # (H, W, k)
            nll = -logp.gather(-1, x[0, t][..., None]).squeeze(-1)
            yield t, nll.cpu().numpy(), logp, states[:, s]


def score_part(model, grids: list[CodeGrid], part: str, baselines: Baselines | None = None,
               on_frame=None, progress: bool = False) -> Scores:
    """Mean NLL (nats per code) of every `part` frame given its past, for the model and baselines.

    `on_frame(grid, t, logp, state)` is called for each scored frame (e.g. to rebuild predictions);
    `progress` shows a bar over the videos.
    """
    scores = Scores()
    for grid in tqdm(grids, desc=f"scoring {part} frames", unit="video", disable=not progress):
        start, stop = grid.part(part)
        codes = grid.codes[:stop]  # this video's frames up to the part's end, read once
        for t, nll, logp, state in predict_video(model, codes, start, stop):
            target, previous = codes[t].astype(np.int64), codes[t - 1].astype(np.int64)
            scores.nll["model"] += float(nll.sum())
            if baselines is not None:
                scores.nll["unigram"] += float(baselines.unigram_nll(target).sum())
                scores.nll["copy_previous"] += float(baselines.copy_nll(previous, target).sum())
            scores.count += target.size
            if on_frame is not None:
                on_frame(grid, t, logp, state)
    return scores


def score_test(model, grids: list[CodeGrid], read_frames, codebook: Codebook,
             baselines: Baselines, stride: int) -> dict:
    """Test metrics: bits per patch and perplexity (model and baselines), and 1-step PSNR.

    `read_frames(video_id)` gives the video's true gray frames (T, H, W); PSNR is computed on the part of
    the frame covered by the patch grid, pooled over all test frames (mean squared error
    first, then dB).
    """
    sq = {"model": 0.0, "copy_last": 0.0, "codebook": 0.0}
    pixels = [0]

    def add_psnr_terms(grid: CodeGrid, t: int, logp: torch.Tensor, state: torch.Tensor) -> None:
        video = read_frames(grid.video_id)
        predicted = codebook.decode(logp.argmax(-1).cpu().numpy()[None], stride)[0]
        h, w = predicted.shape
        truth = video[t, :h, :w].astype(np.float64)
        sq["model"] += float(((truth - predicted) ** 2).sum())
        sq["copy_last"] += float(((truth - video[t - 1, :h, :w]) ** 2).sum())
        sq["codebook"] += float(((truth - codebook.decode(grid.codes[t][None].astype(np.int64), stride)[0]) ** 2).sum())
        pixels[0] += truth.size

    scores = score_part(model, grids, "test", baselines, add_psnr_terms, progress=True)
    if scores.count == 0:
        raise VideoLMError("no test frames to evaluate (check data.test_fraction and the split)")
    metrics = {"test_patches": scores.count, **scores.summary()}
    for name, total in sq.items():
        metrics[f"psnr_1step_{name}"] = psnr_from_mse(total / pixels[0])
    return metrics


def entropy_bits(logp: torch.Tensor) -> torch.Tensor:
    """Entropy in bits of each distribution given by log-probabilities `logp` (..., k) -> (...)."""
    return -(logp.exp() * logp).sum(-1) / math.log(2)


def bits_per_patch(nll_nats: float) -> float:
    """Mean negative log-likelihood in nats -> bits per code (entropy rate estimate)."""
    return nll_nats / math.log(2)


def perplexity(nll_nats: float) -> float:
    return math.exp(nll_nats)
