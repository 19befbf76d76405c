"""Scoring whole frames: the model's and the baselines' log-likelihood of each frame of a part
given all earlier frames.

The model runs over each video from its first frame with the recurrent state carried
through, and is scored on the frames of one part (validation or test) given everything
before them: the same conditioning as a language model scored on a held-out text. Training
uses it for validation, evaluation for the test metrics (`score_test`).
"""

from __future__ import annotations

import math
from collections import deque
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
from videolm.model import framewise


@dataclass
class Scores:
    """Running sums over the scored frames of one part, and of the terms `score_part`'s
    `on_frame` returned for them."""

    nll: dict[str, float] = field(default_factory=lambda: {"model": 0.0, "unigram": 0.0, "copy_previous": 0.0})
    count: int = 0
    extra: list[float] = field(default_factory=list)

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


def target_frames(grid: CodeGrid, part: str) -> range:
    """The frames of `part` that are scored: all but a video's first, which has no past."""
    start, stop = grid.part(part)
    return range(max(start, 1), stop)


@dataclass
class _Slot:
    """One video in a batch of `predict_videos`: its codes up to the part's end and where it is."""

    index: int
    codes: np.ndarray  # (stop, H, W) uint16
    x: torch.Tensor  # the same, int64 on the model's device
    first: int  # the first target frame
    position: int = 0  # the next frame fed to the model
    state: torch.Tensor | None = None  # (hidden, H, W), None before the first frame


@torch.no_grad()
def predict_videos(model, grids: list[CodeGrid], part: str, batch: int = 1, chunk: int = 8):
    """Run the model over each video of `grids` from its first frame to the end of its `part`, and
    for every target frame t of the part (from frame 1) yield (the video's index in `grids`, t,
    nll (H, W) of the true code, log-probabilities (H, W, k) tensor, the state (1, C, H, W) the
    prediction came from, the video's codes (stop, H, W) array).

    Up to `batch` videos of one grid size run together, `chunk` frames at a time: when a video
    ends, the next one of that size takes its place with a fresh state, and a video's last chunk
    is padded with code 0 whose predictions are dropped. Each video's frames come in order; the
    videos interleave. A video's codes are read when it starts, so at most `batch` are held; the
    scores (logits) are made one frame at a time, as they are used. The model runs on its own
    device; nll comes back as a numpy array.
    """
    model.eval()
    device = next(model.parameters()).device
    by_size: dict[tuple[int, ...], deque] = {}
    for index, grid in enumerate(grids):
        if targets := target_frames(grid, part):
            by_size.setdefault(tuple(grid.codes.shape[1:]), deque()).append((index, grid, targets.start, targets.stop))
    for waiting in by_size.values():
        running: list[_Slot] = []
        while waiting or running:
            while waiting and len(running) < batch:
                index, grid, first, stop = waiting.popleft()
                codes = np.asarray(grid.codes[:stop])  # this video's frames up to the part's end, read once
                running.append(_Slot(index, codes, torch.from_numpy(codes.astype(np.int64)).to(device), first))
            lengths = [min(chunk, len(slot.codes) - 1 - slot.position) for slot in running]
            x = torch.zeros(len(running), max(lengths), *running[0].x.shape[1:], dtype=torch.int64, device=device)
            for row, (slot, n) in enumerate(zip(running, lengths)):
                x[row, :n] = slot.x[slot.position:slot.position + n]
            state = None
            if any(slot.state is not None for slot in running):
                fresh = next(slot.state for slot in running if slot.state is not None)
                state = torch.stack([torch.zeros_like(fresh) if slot.state is None else slot.state for slot in running])
            feats, weight, bias, states = model.head_inputs(x, state)  # predicts frames position+1 .. position+n
            states = states.permute(0, 1, 4, 2, 3)  # (B, T, hidden, H, W)
            for row, (slot, n) in enumerate(zip(running, lengths)):
                for step in range(max(slot.first - 1 - slot.position, 0), n):
                    t = slot.position + step + 1
                    logits = framewise.linear(feats[row, step], weight, bias)  # (H, W, k): one frame's scores
                    logp = F.log_softmax(logits.float(), -1)
                    nll = -logp.gather(-1, slot.x[t][..., None]).squeeze(-1)
                    yield slot.index, t, nll.cpu().numpy(), logp, states[row:row + 1, step], slot.codes
                slot.state, slot.position = states[row, n - 1], slot.position + n
            running = [slot for slot in running if slot.position < len(slot.codes) - 1]


def score_part(model, grids: list[CodeGrid], part: str, baselines: Baselines | None = None,
               on_frame=None, progress: bool = False, batch: int = 1) -> Scores:
    """Mean NLL (nats per code) of every `part` frame given its past, for the model and baselines.

    `on_frame(grid, t, logp, state)` is called for each scored frame (e.g. to rebuild predictions);
    what it returns (a sequence of floats, or None) is summed into `Scores.extra`. `batch` videos
    of one grid size run through the model together (`predict_videos`); every frame's terms are
    kept and summed in the videos' and frames' order, so the scores do not depend on `batch`
    (on the CPU, to the bit: the model's products cover one frame each, `model/framewise.py`).
    `progress` shows a bar over the videos.
    """
    terms: list[list[list[float]]] = [[] for _ in grids]  # per video, per scored frame
    stops = [target_frames(grid, part).stop for grid in grids]
    scored = sum(bool(target_frames(grid, part)) for grid in grids)
    with tqdm(total=scored, desc=f"scoring {part} frames", unit="video", disable=not progress) as bar:
        for index, t, nll, logp, state, codes in predict_videos(model, grids, part, batch):
            target, previous = codes[t].astype(np.int64), codes[t - 1].astype(np.int64)
            row = [float(nll.sum()), 0.0, 0.0, target.size]
            if baselines is not None:
                row[1:3] = float(baselines.unigram_nll(target).sum()), float(baselines.copy_nll(previous, target).sum())
            if on_frame is not None:
                row.extend(on_frame(grids[index], t, logp, state) or ())
            terms[index].append(row)
            bar.update(t == stops[index] - 1)
    scores = Scores()
    for row in (row for rows in terms for row in rows):
        scores.nll["model"] += row[0]
        if baselines is not None:
            scores.nll["unigram"] += row[1]
            scores.nll["copy_previous"] += row[2]
        scores.count += row[3]
        scores.extra = [a + b for a, b in zip(scores.extra, row[4:])] if scores.extra else row[4:]
    return scores


def score_test(model, grids: list[CodeGrid], read_frames, codebook: Codebook,
             baselines: Baselines, stride: int, batch: int = 1) -> dict:
    """Test metrics: bits per patch and perplexity (model and baselines), and 1-step PSNR.

    `read_frames(video_id)` gives the video's true gray frames (T, H, W) (`batch` videos are
    scored together, their frames interleaved: it should keep that many); PSNR is computed on the
    part of the frame covered by the patch grid, pooled over all test frames (mean squared error
    first, then dB).
    """

    def psnr_terms(grid: CodeGrid, t: int, logp: torch.Tensor, state: torch.Tensor) -> tuple[float, ...]:
        """Squared errors of the model's argmax codes, copy-last and the true codes, and pixels."""
        video = read_frames(grid.video_id)
        predicted = codebook.decode(logp.argmax(-1).cpu().numpy()[None], stride)[0]
        h, w = predicted.shape
        truth = video[t, :h, :w].astype(np.float64)
        return (float(((truth - predicted) ** 2).sum()), float(((truth - video[t - 1, :h, :w]) ** 2).sum()),
                float(((truth - codebook.decode(grid.codes[t][None].astype(np.int64), stride)[0]) ** 2).sum()),
                truth.size)

    scores = score_part(model, grids, "test", baselines, psnr_terms, progress=True, batch=batch)
    if scores.count == 0:
        raise VideoLMError("no test frames to evaluate (check data.test_fraction and the split)")
    metrics = {"test_patches": scores.count, **scores.summary()}
    *sq, pixels = scores.extra
    for name, total in zip(("model", "copy_last", "codebook"), sq):
        metrics[f"psnr_1step_{name}"] = psnr_from_mse(total / pixels)
    return metrics


def entropy_bits(logp: torch.Tensor) -> torch.Tensor:
    """Entropy in bits of each distribution given by log-probabilities `logp` (..., k) -> (...)."""
    return -(logp.exp() * logp).sum(-1) / math.log(2)


def bits_per_patch(nll_nats: float) -> float:
    """Mean negative log-likelihood in nats -> bits per code (entropy rate estimate)."""
    return nll_nats / math.log(2)


def perplexity(nll_nats: float) -> float:
    return math.exp(nll_nats)
