"""Filling a missing frame with the forward model: the codes of frame t given the frames
before it and frame t + 1.

The model is a forward language model, so it gives p(c_t | past) and, for any guess of
c_t, p(c_{t+1} | c_t, past); both factor over locations. The filled grid maximizes their
product, log p(c_t | past) + log p(c_{t+1} | c_t, past), i.e. the joint likelihood of the
missing frame and the frame after it, over a few candidate codes per location:

- candidates at each location: the `candidates` most likely codes under p(c_t | past),
  plus the code frame t + 1 has there;
- start from the forward model's argmax and improve by iterated conditional modes: the
  code at one location only changes the prediction of t + 1 within the model's
  `context_radius` r, so locations on a lattice of period 2r + 1 do not
  interact and are all re-chosen exactly at once, one batched forward step per lattice
  offset. Every such update can only raise the joint likelihood; a sweep visits every
  offset once, and sweeps stop early when nothing changes.

`evaluate_filling` leaves out the first frame after each test clip's context, fills it from
the context and the frame after it, and compares it (PSNR / SSIM / sharpness, full and moving)
with the average of its two neighbours and with interpolation in flow space, and measures every
method's blockiness and the true frames'. Given the pixel decoder, it also fills in pixels: the
decoder's frame from the forward prediction, its state, both real neighbours and the flow
interpolation between them ("model_pixels"); given the decoder trained without the model, that
one's frame too ("pixels_without_model").
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from videolm.codes.codebook import Codebook
from videolm.evaluation.clips import Clip, clip_frames
from videolm.evaluation.flow import interpolation_with_doubt
from videolm.image_metrics import Blockiness, Pool, moving_mask
from videolm.model.pixel_decoder import PixelDecoder, decode_prediction

METHODS = ("model", "model_forward", "model_pixels", "pixels_without_model", "average", "flow", "codebook")
DECODED = ("model_pixels", "pixels_without_model")


@torch.no_grad()
def fill_codes(model, before: np.ndarray, after: np.ndarray, candidates: int = 4,
               sweeps: int = 2) -> tuple[np.ndarray, np.ndarray, tuple[torch.Tensor, torch.Tensor]]:
    """Codes of the missing frame between the real grids `before` (C, H, W: the frames up
    to t - 1) and `after` (H, W: frame t + 1).

    Returns (filled (H, W) int64, forward (H, W) int64, (logits (1, H, W, k), state)): the
    joint-likelihood fill, the forward model's argmax alone (what it predicts without seeing
    t + 1), and that forward prediction with the state it came from.
    """
    model.eval()
    device = next(model.parameters()).device
    logits, _, state = model(torch.from_numpy(np.asarray(before, np.int64))[None].to(device))
    prior = F.log_softmax(logits[0, -1].float(), -1)  # (H, W, k): log p(c_t | past)
    target = torch.from_numpy(np.asarray(after, np.int64)).to(device)  # (H, W)
    h, w = target.shape
    options = torch.cat([prior.topk(min(candidates, model.k), -1).indices, target[..., None]], -1)  # (H, W, n)
    option_prior = prior.gather(-1, options)  # (H, W, n)
    forward = options[..., 0].clone()
    grid = forward.clone()
    r = model.context_radius
    period = 2 * r + 1
    box = torch.ones(1, 1, period, period, device=device)
    n = options.shape[-1]
    states = state.expand(n, *state.shape[1:])
    for _ in range(sweeps):
        before_sweep = grid.clone()
        for oy in range(min(period, h)):
            for ox in range(min(period, w)):
                mask = torch.zeros(h, w, dtype=torch.bool, device=device)
                mask[oy::period, ox::period] = True
                batch = grid.expand(n, h, w).clone()
                batch[:, mask] = options[mask].T  # option j at every lattice location of batch j
                out, _, _ = model(batch[:, None], states)
                ll = F.log_softmax(out[:, 0].float(), -1).gather(-1, target.expand(n, h, w)[..., None])[..., 0]
                local = F.conv2d(ll[:, None], box, padding=r)[:, 0]  # (n, H, W): log p(t+1) around each cell
                score = option_prior[mask].T + local[:, mask]  # (n, cells)
                grid[mask] = options[mask].gather(-1, score.argmax(0)[:, None])[:, 0]
        if torch.equal(grid, before_sweep):
            break
    return grid.cpu().numpy(), forward.cpu().numpy(), (logits[:, -1], state)


def evaluate_filling(model, clips: list[Clip], read_frames, codebook: Codebook, stride: int,
                     motion_threshold: float, candidates: int, sweeps: int,
                     decoders: dict[str, PixelDecoder] | None = None) -> dict[str, float | int | None]:
    """Fill frame t0 of every clip (with a frame after it) from the context frames and
    frame t0 + 1; PSNR / SSIM / sharpness (full and moving: differs from frame t0 - 1) and
    blockiness per method. Also the frames of each of `decoders` (by method, as in
    `evaluate_generation`), made of the forward prediction, both real neighbours and the flow
    interpolation between them.

    Metrics: `fill_<measure>_<method>`, `fill_blockiness_truth`, `fill_model_share_psnr_moving`
    (given both decoders) and `fill_frames`.
    """
    decoders = decoders or {}
    methods = [m for m in METHODS if m in decoders or m not in DECODED]
    pools = {m: Pool(stride) for m in methods}
    truth_blocks = Blockiness(stride)
    frames = 0
    for clip in tqdm(clips, desc="evaluate: filling", unit="clip"):
        codes = clip.grid.codes
        t = clip.t0
        if t + 1 >= len(codes):
            continue
        filled, forward, (logits, state) = fill_codes(model, codes[clip.start:t], codes[t + 1], candidates, sweeps)
        decoded = codebook.decode(np.stack([filled, forward, codes[t].astype(np.int64)]), stride)
        truth = clip_frames(read_frames, clip, t + 2, decoded.shape[1:])
        before, target, after = truth[-3], truth[-2], truth[-1]
        estimates = {"model": decoded[0], "model_forward": decoded[1], "average": (before + after) / 2,
                     "codebook": decoded[2]}
        estimates["flow"], doubt = interpolation_with_doubt(before, after)
        earlier = truth[-4] if len(truth) >= 4 else before
        for name, decoder in decoders.items():
            flowed = estimates["flow"] if decoder.cfg.motion == "flow" else None
            estimates[name] = decode_prediction(decoder, logits, state, before, after, earlier=earlier, flowed=flowed,
                                                doubt=doubt)
        moving = moving_mask(target, before, motion_threshold)
        truth_blocks.add(target)
        for method in methods:
            pools[method].add(target, estimates[method], moving)
        frames += 1
    metrics: dict[str, float | int | None] = {"fill_frames": frames}
    for method in methods:
        for measure, value in pools[method].result().items():
            metrics[f"fill_{measure}_{method}"] = value
    metrics["fill_blockiness_truth"] = truth_blocks.result()
    if set(DECODED) <= set(methods):
        ours, without = metrics["fill_psnr_moving_model_pixels"], metrics["fill_psnr_moving_pixels_without_model"]
        metrics["fill_model_share_psnr_moving"] = None if ours is None or without is None else ours - without
    return metrics
