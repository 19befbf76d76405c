"""Evaluation: scoring whole frames, multi-step extrapolation and frame filling.

Scoring (`score_part`, `evaluate`): the model runs over each video from its first frame
with the recurrent state carried through, and is scored on the frames of one part
(validation or test) given everything before them: the same conditioning as a language
model scored on a held-out text.

Generation (`evaluate_generation`), the paper's protocol: test clips of `eval.context`
real frames then `eval.horizon` frames; the model sees only the clip's context and feeds
its own predictions back. At every horizon it is compared, in PSNR and SSIM on the full
frame and on the moving region (pixels where the true frame differs from the last context
frame by more than `eval.motion_threshold` gray levels), with copying the last context
frame (its pixels, and its codes: the same copy seen through the codebook), constant
optical flow, and the codebook's reconstruction of the true codes (the best any
prediction of codes can do, up to choosing codes for pixels instead of patches).

Filling (`evaluate_filling`): the first frame after each clip's context is left out and
filled from the context and the frame after it (see `filling.py`), compared with the
average of its two neighbours and with interpolation in flow space.

Every PSNR is pooled over the pixels it covers (squared errors summed first, then dB), and
every SSIM is the mean of the SSIM map over the same pixels (minus a 5-pixel border).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from videolm.baselines import Baselines
from videolm.codes import Codebook, CodeGrid
from videolm.errors import VideoLMError
from videolm.filling import fill_codes
from videolm.flow import extrapolate_flow, interpolate_flow
from videolm.generate import rollout
from videolm.metrics import bits_per_patch, interior, moving_mask, perplexity, psnr_from_mse, ssim_map
from videolm.scoring import score_part


def evaluate(model, grids: list[CodeGrid], read_frames, codebook: Codebook,
             baselines: Baselines, stride: int) -> dict:
    """Test metrics: bits per patch and perplexity (model and baselines), and 1-step PSNR.

    `read_frames(video_id)` gives the video's true gray frames (T, H, W); PSNR is computed on the part of
    the frame covered by the patch grid, pooled over all test frames (mean squared error
    first, then dB).
    """
    sq = {"model": 0.0, "copy_last": 0.0, "codebook": 0.0}
    pixels = [0]

    def add_psnr_terms(grid: CodeGrid, t: int, logp: torch.Tensor) -> None:
        video = read_frames(grid.video_id)
        predicted = codebook.decode(logp.argmax(-1).numpy()[None], stride)[0]
        h, w = predicted.shape
        truth = video[t, :h, :w].astype(np.float64)
        sq["model"] += float(((truth - predicted) ** 2).sum())
        sq["copy_last"] += float(((truth - video[t - 1, :h, :w]) ** 2).sum())
        sq["codebook"] += float(((truth - codebook.decode(grid.codes[t][None].astype(np.int64), stride)[0]) ** 2).sum())
        pixels[0] += truth.size

    scores = score_part(model, grids, "test", baselines, add_psnr_terms)
    if scores.count == 0:
        raise VideoLMError("no test frames to evaluate (check data.test_fraction and the split)")
    metrics = {"test_patches": scores.count}
    for name in scores.nll:
        metrics[f"{name}_bits_per_patch"] = bits_per_patch(scores.mean(name))
        metrics[f"{name}_perplexity"] = perplexity(scores.mean(name))
    metrics["model_vs_copy_previous_perplexity"] = metrics["model_perplexity"] / metrics["copy_previous_perplexity"]
    for name, total in sq.items():
        metrics[f"psnr_1step_{name}"] = psnr_from_mse(total / pixels[0])
    return metrics


# ---------------------------------------------------------------- clips

GEN_METHODS = ("model", "copy_last", "copy_last_codes", "flow", "codebook")
FILL_METHODS = ("model", "model_forward", "average", "flow", "codebook")
MEASURES = ("psnr", "ssim", "psnr_moving", "ssim_moving")


@dataclass(eq=False)
class Clip:
    """`context` real frames [start, t0) of a test video, then the frames to predict from t0."""

    grid: CodeGrid
    start: int
    t0: int


def evaluation_clips(grids: list[CodeGrid], context: int, horizon: int, stride: int = 0) -> list[Clip]:
    """Clips of context + horizon frames inside the test part of each video, every `stride`
    frames (0: one after the other, not overlapping), in video order."""
    length = context + horizon
    clips = []
    for grid in grids:
        first, stop = grid.part("test")
        clips += [Clip(grid, s, s + context) for s in range(first, stop - length + 1, stride or length)]
    return clips


def picture_clips(clips: list[Clip], n: int) -> list[int]:
    """Indices of `n` fixed clips to show: the first clip of each video, then the second..."""
    rank = {}
    order = []
    for i, clip in enumerate(clips):
        rank[clip.grid.video_id] = rank.get(clip.grid.video_id, -1) + 1
        order.append((rank[clip.grid.video_id], i))
    return [i for _, i in sorted(order)[:n]]


# ---------------------------------------------------------------- pooled PSNR / SSIM


@dataclass
class Pool:
    """Pooled PSNR and SSIM terms of one method (at one horizon), full frame and moving region."""

    sq: float = 0.0
    pixels: int = 0
    sq_moving: float = 0.0
    pixels_moving: int = 0
    ssim: float = 0.0
    ssim_pixels: int = 0
    ssim_moving: float = 0.0
    ssim_pixels_moving: int = 0

    def add(self, truth: np.ndarray, estimate: np.ndarray, moving: np.ndarray) -> None:
        err = (np.asarray(truth, np.float64) - np.asarray(estimate, np.float64)) ** 2
        self.sq += float(err.sum())
        self.pixels += err.size
        self.sq_moving += float(err[moving].sum())
        self.pixels_moving += int(moving.sum())
        s, inner = ssim_map(truth, estimate), interior(moving)
        self.ssim += float(s.sum())
        self.ssim_pixels += s.size
        self.ssim_moving += float(s[inner].sum())
        self.ssim_pixels_moving += int(inner.sum())

    def result(self) -> dict[str, float | None]:
        """psnr, ssim, psnr_moving, ssim_moving; None where no pixel was pooled."""
        return {"psnr": _ratio_psnr(self.sq, self.pixels), "ssim": _ratio(self.ssim, self.ssim_pixels),
                "psnr_moving": _ratio_psnr(self.sq_moving, self.pixels_moving),
                "ssim_moving": _ratio(self.ssim_moving, self.ssim_pixels_moving)}


def _ratio(total: float, count: int) -> float | None:
    return total / count if count else None


def _ratio_psnr(sq: float, count: int) -> float | None:
    return psnr_from_mse(sq / count) if count else None


def _mean(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


# ---------------------------------------------------------------- generation


@dataclass
class Example:
    """One clip's frames for the pictures: truth (context + horizon), each method's
    predictions (horizon), and the entropy (bits) of the model's first predicted grid."""

    clip: Clip
    truth: np.ndarray
    predictions: dict[str, np.ndarray]
    entropy: np.ndarray


@dataclass
class Generation:
    curves: dict[str, list[dict]]  # method -> one row per horizon (plots)
    metrics: dict[str, float | int | None]
    examples: list[Example]


def clip_frames(read_frames, clip: Clip, stop: int, shape: tuple[int, int]) -> np.ndarray:
    """(stop - start, h, w) float64 true frames of a clip, cropped to the patch grid."""
    h, w = shape
    return read_frames(clip.grid.video_id)[clip.start:stop, :h, :w].astype(np.float64)


def evaluate_generation(model, clips: list[Clip], read_frames, codebook: Codebook, stride: int,
                        horizon: int, temperature: float, motion_threshold: float, seed: int,
                        pictures: list[int] = ()) -> Generation:
    """Per-horizon PSNR / SSIM (full and moving) of the model and the baselines over `clips`.

    Metrics: `gen_<measure>_<method>_h1` (first generated frame) and `..._mean` (mean over
    the horizons of the per-horizon values), plus `gen_clips` and `gen_moving_fraction`.
    """
    if not clips:
        raise VideoLMError("no test clips to generate from")
    pools = {(m, h): Pool() for m in GEN_METHODS for h in range(horizon)}
    examples = {}
    for i, clip in enumerate(clips):
        codes = clip.grid.codes
        context = clip.t0 - clip.start
        generated, entropy = rollout(model, codes[clip.start:clip.t0], horizon, temperature, seed + i)
        model_frames = codebook.decode(generated, stride)
        truth = clip_frames(read_frames, clip, clip.t0 + horizon, model_frames.shape[1:])
        last = truth[context - 1]
        copy = np.repeat(last[None], horizon, 0)
        last_codes = codebook.decode(codes[clip.t0 - 1][None].astype(np.int64), stride)
        predictions = {
            "model": model_frames,
            "copy_last": copy,
            "copy_last_codes": np.repeat(last_codes, horizon, 0),
            # with one context frame there is no motion to extrapolate: flow = copy_last
            "flow": extrapolate_flow(truth[context - 2], last, horizon) if context >= 2 else copy,
            "codebook": codebook.decode(codes[clip.t0:clip.t0 + horizon].astype(np.int64), stride),
        }
        for h in range(horizon):
            target = truth[context + h]
            moving = moving_mask(target, last, motion_threshold)
            for method in GEN_METHODS:
                pools[method, h].add(target, predictions[method][h], moving)
        if i in pictures:
            examples[i] = Example(clip, truth, predictions, entropy[0])
    curves = {m: [{"horizon": h + 1, **pools[m, h].result()} for h in range(horizon)] for m in GEN_METHODS}
    metrics: dict[str, float | int | None] = {"gen_clips": len(clips)}
    moving = [pools["model", h] for h in range(horizon)]
    metrics["gen_moving_fraction"] = sum(p.pixels_moving for p in moving) / sum(p.pixels for p in moving)
    for method in GEN_METHODS:
        for measure in MEASURES:
            values = [row[measure] for row in curves[method]]
            metrics[f"gen_{measure}_{method}_h1"] = values[0]
            metrics[f"gen_{measure}_{method}_mean"] = _mean(values)
    return Generation(curves, metrics, [examples[i] for i in pictures])


# ---------------------------------------------------------------- filling


def evaluate_filling(model, clips: list[Clip], read_frames, codebook: Codebook, stride: int,
                     motion_threshold: float, candidates: int, sweeps: int) -> dict[str, float | int | None]:
    """Fill frame t0 of every clip (with a frame after it) from the context frames and
    frame t0 + 1; PSNR / SSIM (full and moving: differs from frame t0 - 1) per method.

    Metrics: `fill_<measure>_<method>` and `fill_frames`.
    """
    pools = {m: Pool() for m in FILL_METHODS}
    frames = 0
    for clip in clips:
        codes = clip.grid.codes
        t = clip.t0
        if t + 1 >= len(codes):
            continue
        filled, forward = fill_codes(model, codes[clip.start:t], codes[t + 1], candidates, sweeps)
        decoded = codebook.decode(np.stack([filled, forward, codes[t].astype(np.int64)]), stride)
        truth = clip_frames(read_frames, clip, t + 2, decoded.shape[1:])
        before, target, after = truth[-3], truth[-2], truth[-1]
        estimates = {"model": decoded[0], "model_forward": decoded[1], "average": (before + after) / 2,
                     "flow": interpolate_flow(before, after), "codebook": decoded[2]}
        moving = moving_mask(target, before, motion_threshold)
        for method in FILL_METHODS:
            pools[method].add(target, estimates[method], moving)
        frames += 1
    metrics: dict[str, float | int | None] = {"fill_frames": frames}
    for method in FILL_METHODS:
        for measure, value in pools[method].result().items():
            metrics[f"fill_{measure}_{method}"] = value
    return metrics

