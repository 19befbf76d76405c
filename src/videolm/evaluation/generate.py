"""Generation, the paper's protocol: extrapolate future code grids by feeding the model its
own predictions, and measure them in pixels against the baselines.

Test clips of `eval.context` real frames then `eval.horizon` frames; the model sees only the
clip's context and feeds its own predictions back. Its predictions become pixels two ways: the
chosen codes decoded by the codebook ("model"), and the pixel decoder's frames made of each
predicted distribution, the state and the last context frame ("model_pixels"). Beside them, the
decoder trained the same way without the model's inputs ("pixels_without_model") gives the
model's share of the decoder's frames: the difference of the two. At every
horizon they are compared, in PSNR, SSIM and sharpness on the full frame and on the moving
region (pixels where the true frame differs from the last context frame by more than
`eval.motion_threshold` gray levels), with copying
the last context frame (its pixels, and its codes: the same copy seen through the
codebook), constant optical flow, and the codebook's reconstruction of the true codes (the
best any prediction of codes can do, up to choosing codes for pixels instead of patches).
Every method's frames, and the true ones, are also measured for blockiness (`image_metrics`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from videolm.codes.codebook import Codebook
from videolm.codes.patches import covered_shape
from videolm.errors import VideoLMError
from videolm.evaluation.clips import Clip, clip_frames
from videolm.evaluation.flow import extrapolate_flow
from videolm.evaluation.scoring import entropy_bits
from videolm.image_metrics import MEASURES, Blockiness, Pool, moving_mask
from videolm.model.pixel_decoder import PixelDecoder, decode_prediction

METHODS = ("model", "model_pixels", "pixels_without_model", "copy_last", "copy_last_codes", "flow", "codebook")
DECODED = ("model_pixels", "pixels_without_model")  # the methods of a pixel decoder, with and without the model


@torch.no_grad()
def rollout_steps(model, context: torch.Tensor, horizon: int, temperature: float = 0.0,
                  generator: torch.Generator | None = None, top_k: int = 0):
    """Yield (logits (B, H, W, k), state (B, C, H, W), codes (B, H, W)) for each of `horizon`
    generated grids after the real `context` grids (B, T, H, W): the prediction of the grid, the
    state it came from, and the codes chosen and fed back.

    The state is built on the context; each next grid is the argmax code at every location
    (temperature 0) or a sample at the given temperature (drawn with `generator`), from the
    `top_k` most likely codes at each location if `top_k` > 0.
    """
    model.eval()
    logits, _, state = model(context)
    last = logits[:, -1]  # (B, H, W, k): prediction of the first generated grid
    for step in range(horizon):
        if temperature > 0:
            # drawn on the CPU: the same draws on any device
            scaled = last.float().cpu() / temperature
            top = scaled.topk(min(top_k, scaled.shape[-1]), -1) if top_k else None
            probs = torch.softmax(scaled if top is None else top.values, -1)
            codes = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator)
            codes = codes.reshape(probs.shape[:-1])
            if top is not None:
                codes = top.indices.gather(-1, codes[..., None])[..., 0]
            codes = codes.to(last.device)
        else:
            codes = last.argmax(-1)  # (B, H, W)
        yield last, state, codes
        if step + 1 < horizon:
            logits, _, state = model(codes[:, None], state)
            last = logits[:, 0]


@torch.no_grad()
def rollout(model, context: np.ndarray, horizon: int, temperature: float = 0.0, seed: int = 0,
            decode=None, top_k: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Generate `horizon` code grids after the real `context` grids (C, H, W), as `rollout_steps`
    (samples seeded with `seed`).

    Returns (codes (horizon, H, W) int64, entropy (horizon, H, W) float32, pixels): the entropy in
    bits of the model's predicted distribution (at temperature 1) at every location, and the
    frames (n, H', W') `decode(logits (1, H, W, k), state, ahead)` makes of each prediction,
    stacked (horizon, n, H', W'), if given (else None).
    """
    generator = torch.Generator().manual_seed(seed)
    codes, entropy, pixels = [], [], []
    device = next(model.parameters()).device
    steps = rollout_steps(model, torch.from_numpy(np.asarray(context, np.int64))[None].to(device), horizon,
                          temperature, generator, top_k)
    for ahead, (logits, state, chosen) in enumerate(steps, 1):
        entropy.append(entropy_bits(F.log_softmax(logits[0].float(), -1)))
        codes.append(chosen[0])
        if decode is not None:
            pixels.append(decode(logits, state, ahead))
    return torch.stack(codes).cpu().numpy(), torch.stack(entropy).cpu().numpy(), np.stack(pixels) if pixels else None


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
    curves: dict[str, list[dict]]  # method -> one row per horizon (plots); "truth": its blockiness
    metrics: dict[str, float | int | None]
    examples: list[Example]


def evaluate_generation(model, clips: list[Clip], read_frames, codebook: Codebook, stride: int,
                        horizon: int, temperature: float, motion_threshold: float, seed: int,
                        pictures: list[int] = (), decoders: dict[str, PixelDecoder] | None = None, top_k: int = 0,
                        draws: int = 1) -> Generation:
    """Per-horizon PSNR / SSIM / sharpness (full and moving) and blockiness of the model and the
    baselines over `clips`: the model's codes decoded by the codebook ("model") and the frames of
    each of `decoders` (by method: "model_pixels", the pixel decoder; "pixels_without_model", the
    one trained without the model's inputs). Sampling (`temperature` > 0, `top_k`), `draws`
    rollouts of each clip are made and their frames averaged, method by method.

    Metrics: `gen_<measure>_<method>_h1` (first generated frame) and `..._mean` (mean over
    the horizons of the per-horizon values), `gen_blockiness_truth_h1` and `_mean` (the true
    frames'), `gen_model_share_psnr_moving_h1` and `_mean` (model_pixels minus
    pixels_without_model, given both), plus `gen_clips` and `gen_moving_fraction`.
    """
    if not clips:
        raise VideoLMError("no test clips to generate from")
    decoders = decoders or {}
    methods = [m for m in METHODS if m in decoders or m not in DECODED]
    pools = {(m, h): Pool(stride) for m in methods for h in range(horizon)}
    truth_blocks = [Blockiness(stride) for _ in range(horizon)]
    examples = {}
    for i, clip in enumerate(tqdm(clips, desc="evaluate: generation", unit="clip")):
        codes = clip.grid.codes
        context = clip.t0 - clip.start
        shape = covered_shape(*codes.shape[1:], codebook.size, stride)
        truth = clip_frames(read_frames, clip, clip.t0 + horizon, shape)
        last = truth[context - 1]
        earlier = truth[context - 2] if context >= 2 else last
        copy = np.repeat(last[None], horizon, 0)
        # with one context frame there is no motion to extrapolate: flow = copy_last
        flow = extrapolate_flow(earlier, last, horizon) if context >= 2 else copy
        decode = None if not decoders else (
            lambda logits, state, ahead: np.stack([decode_prediction(d, logits, state, last, ahead=ahead,
                                                                     earlier=earlier, flowed=flow[ahead - 1])
                                                   for d in decoders.values()]))
        runs = [rollout(model, codes[clip.start:clip.t0], horizon, temperature, seed + i + j * len(clips), decode,
                        top_k) for j in range(draws)]
        _, entropy, _ = runs[0]
        decoded = [codebook.decode(generated, stride) for generated, _, _ in runs]
        pixels = [frames for _, _, frames in runs]
        last_codes = codebook.decode(codes[clip.t0 - 1][None].astype(np.int64), stride)
        predictions = {
            "model": decoded[0] if draws == 1 else np.mean(decoded, 0),
            **{name: (pixels[0] if draws == 1 else np.mean(pixels, 0))[:, j] for j, name in enumerate(decoders)},
            "copy_last": copy,
            "copy_last_codes": np.repeat(last_codes, horizon, 0),
            "flow": flow,
            "codebook": codebook.decode(codes[clip.t0:clip.t0 + horizon].astype(np.int64), stride),
        }
        predictions = {m: predictions[m] for m in methods}
        for h in range(horizon):
            target = truth[context + h]
            moving = moving_mask(target, last, motion_threshold)
            truth_blocks[h].add(target)
            for method in methods:
                pools[method, h].add(target, predictions[method][h], moving)
        if i in pictures:
            examples[i] = Example(clip, truth, predictions, entropy[0])
    curves = {m: [{"horizon": h + 1, **pools[m, h].result()} for h in range(horizon)] for m in methods}
    metrics: dict[str, float | int | None] = {"gen_clips": len(clips)}
    moving = [pools["model", h] for h in range(horizon)]
    metrics["gen_moving_fraction"] = sum(p.pixels_moving for p in moving) / sum(p.pixels for p in moving)
    for method in methods:
        for measure in MEASURES:
            values = [row[measure] for row in curves[method]]
            metrics[f"gen_{measure}_{method}_h1"] = values[0]
            metrics[f"gen_{measure}_{method}_mean"] = _mean(values)
    truth = [b.result() for b in truth_blocks]
    metrics["gen_blockiness_truth_h1"], metrics["gen_blockiness_truth_mean"] = truth[0], _mean(truth)
    if set(DECODED) <= set(methods):
        for when in ("h1", "mean"):
            metrics[f"gen_model_share_psnr_moving_{when}"] = _difference(
                metrics[f"gen_psnr_moving_model_pixels_{when}"], metrics[f"gen_psnr_moving_pixels_without_model_{when}"])
    return Generation(curves, metrics, [examples[i] for i in pictures])


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _mean(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None
