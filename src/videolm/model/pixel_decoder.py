"""Pixels from the model's prediction: a small convolutional network on top of the rCNN.

Decoding the argmax code (or the mean of the codebook's gray patches under the predicted distribution) gives
pictures that are either a copy of the last frame or a blur: the codebook throws away where
inside its patch an edge lies, and the argmax keeps the last code almost everywhere. The
decoder sees what the model knows and what the codebook forgot:

- the expected frame under the model's predicted distribution (the mean of the codebook's gray patches,
  patches put back with overlaps averaged),
- the model's recurrent state (its features at every cell),
- the real frames on either side of the one predicted: for extrapolation both are the last
  real frame, for filling the frames before and after the gap,
- how many frames ahead of the `before` frame the prediction is, and whether `after` is real,
- what the predicted distribution says at each cell: its entropy (where the model expects
  change), and how surprised it is by the code of the real frame before and by the code of the
  flow's estimate (the nearest centroid to each cell's patch): where the model and the flow
  agree, and where the model expects something neither the copy nor the flow gives,
- and the real frames' own motion, by `decoder.motion`: `frames` adds the real frame before
  `before` (two real frames: a warp can be learned), `flow` adds that and the optical-flow
  estimate of the frame (Farneback's: `evaluation/flow.py`; extrapolated, or interpolated when
  filling); `none` gives it neither.

Extrapolating and filling are two tasks with convolutions of their own (`body`, `fill_body`),
each kept at its own best validation step. With `flow`, filling reads the flow interpolation of
the frame between its two real neighbours where extrapolating reads the flow extrapolation, and
where the interpolation's two warps disagree (where the flow is wrong).

It predicts per pixel a blend weight for each source and a correction: frame = base
+ g1 (expected - base) + g2 (before - base) + g3 (after - base) + g4 (flowed - base) + c, where
base is the flow estimate with `flow` (extrapolated, or interpolated when filling), else the mean
of the two real frames (the copy of the last one when extrapolating, the neighbours' mean when
filling). All start at zero, so that, untrained, the decoder is that base, and it is kept
where no step of training beats it on validation; the blends make the obvious first steps,
leaning on the model where it expects change, on the real frames (or, filling, their mean)
where the flow goes wrong, or on the flow where it goes right, one product away.
A decoder built with `reads_model=False` has the same convolutions without the model's inputs
(and without the blend towards the expected frame): trained the same way, it measures
what the decoder makes of the real frames and their flow alone, so that the difference is the
language model's share of the pixels.
It works at the code grid's resolution: every cell's stride x stride pixels are channels
(pixel unshuffle), mixed with their neighbours' by 3x3 convolutions, and painted back onto the
pixels by a transposed convolution whose cells overlap by half a cell on every side, so that
nothing forces a step at the cells' boundaries. The expected frame, made of the codebook's
blocks, is read blurred (a Gaussian of a quarter cell): its block edges are the codebook's, not
the scene's.

Trained (`training/decoder.py`) with L1 plus the gradient difference loss of Mathieu, Couprie
and LeCun (2016): L1 alone already prefers the median to the blurry mean, and the gradient
term pays for edges that are as sharp as the truth's, where the truth has them.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from videolm.codes.patches import covered_shape
from videolm.config import DecoderConfig
from videolm.errors import VideoLMError
from videolm.model.checkpoint import DecoderCheckpoint, weights_digest

GRAY_MID, GRAY_SCALE = 128.0, 64.0  # inputs enter as (gray - 128) / 64
SCORES = 3  # maps per cell of what the model's distribution says (`PixelDecoder.summarize`)
HORIZON_SCALE = 10.0  # the horizon enters as frames ahead / 10


def expected_frame(probs: torch.Tensor, gray_patches: torch.Tensor, size: int, stride: int) -> torch.Tensor:
    """Mean of the codebook's gray patches under `probs` (B, H, W, k), patches put back -> (B, (H-1)s+p, (W-1)s+p)
    gray frames; `gray_patches` (k, size*size) in gray levels. Overlapping pixels are averaged, as the
    codebook's decoding does."""
    b, h, w, _ = probs.shape
    patches = (probs.reshape(b, h * w, -1) @ gray_patches).transpose(1, 2)  # (B, p*p, H*W)
    out = covered_shape(h, w, size, stride)
    total = F.fold(patches, out, size, stride=stride)  # (B, 1, H', W')
    count = F.fold(torch.ones_like(patches[:1]), out, size, stride=stride)
    return (total / count)[:, 0]


class PixelDecoder(nn.Module):
    def __init__(self, cfg: DecoderConfig, hidden: int, gray_patches: torch.Tensor, size: int, stride: int,
                 reads_model: bool = True):
        """`hidden`: the features at each cell that lead the model's state (`state_features`);
        `gray_patches` (k, size*size) in gray levels.
        `reads_model` False: a decoder of the real frames and their flow alone, which reads nothing
        of the language model (its expected frame, scores and state): what the decoder makes
        without the model, so that the model's share of its frames can be measured."""
        super().__init__()
        self.cfg, self.size, self.stride, self.reads_model, self.hidden = cfg, size, stride, reads_model, hidden
        self.register_buffer("gray_patches", gray_patches.float())
        self.motion = {"none": [], "frames": ["earlier"], "flow": ["earlier", "flowed"]}[cfg.motion]
        self.sources = ["expected"] * reads_model + ["before", "after", "flowed"]  # what the blends lean towards
        frames = len(self.sources) + ("earlier" in self.motion) + ("flowed" in self.motion)  # + the flow's doubt
        features = (hidden + SCORES) * reads_model + 2  # state and the scores; ahead and filling
        self.body = _body(frames, stride, features, len(self.sources) + 1, cfg.width)  # extrapolation
        self.fill_body = _body(frames, stride, features, len(self.sources) + 1, cfg.width)  # filling

    @classmethod
    def for_model(cls, cfg: DecoderConfig, model, codebook, stride: int, reads_model: bool = True) -> PixelDecoder:
        """A decoder (untrained) for the language `model` over `codebook`'s codes at patch `stride`."""
        gray_patches = torch.from_numpy(codebook.gray_patches().reshape(codebook.k, -1).astype(np.float32))
        return cls(cfg, model.state_features, gray_patches, codebook.size, stride, reads_model)

    def summarize(self, probs: torch.Tensor, before: torch.Tensor,
                  flowed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What the decoder reads of a predicted distribution `probs` (B, H, W, k): the mean of the
        gray_patches, (B, H', W') gray frames (H' = (H-1)s+p), and `SCORES` maps (B, 3, H, W) in
        units of log k: the entropy, and the surprise (-log p) of the codes of `before` and of
        `flowed` (B, H', W' gray frames), each cell's patch taken as its nearest centroid."""
        logp = probs.clamp_min(1e-30).log()
        scale = math.log(probs.shape[-1])
        maps = [-(probs * logp).sum(-1)]
        for frame in (before, flowed):
            maps.append(-logp.gather(-1, self.nearest_codes(frame)[..., None])[..., 0])
        return expected_frame(probs, self.gray_patches, self.size, self.stride), torch.stack(maps, 1) / scale

    def nearest_codes(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, H, W) int64: the nearest centroid (in gray levels) to each patch of gray `frames` (B, H', W')."""
        b, height, width = frames.shape
        h, w = (height - self.size) // self.stride + 1, (width - self.size) // self.stride + 1
        patches = F.unfold(frames[:, None], self.size, stride=self.stride).transpose(1, 2)  # (B, H*W, p*p)
        c = self.gray_patches
        distances = (c * c).sum(1) - 2 * patches @ c.T  # + |patch|^2, the same for every code
        return distances.argmin(-1).reshape(b, h, w)

    def forward(self, expected: torch.Tensor | None, scores: torch.Tensor | None, state: torch.Tensor | None,
                before: torch.Tensor, after: torch.Tensor, ahead: torch.Tensor, filling: torch.Tensor,
                earlier: torch.Tensor, flowed: torch.Tensor, doubt: torch.Tensor | None = None) -> torch.Tensor:
        """Gray frames (B, H', W'), H' = (H-1)s+p, from:

        expected (B, H', W'), scores (B, SCORES, H, W): `self.summarize` of the model's predicted
        code distribution of the frame; state (B, C, H, W): the model's state it was predicted
        from, of which the first `hidden` channels are read (all three None, and not read, when the
        decoder does not read the model);
        before, after (B, H', W'): real gray frames (0..255) around it (extrapolation: both the last one);
        ahead (B,): frames between `before` and the predicted frame; filling (B,): 1 where `after` is real;
        earlier (B, H', W'): the real frame before `before` (read with `decoder.motion` = frames and
        flow); flowed (B, H', W'): the optical-flow estimate of the frame, extrapolated from
        `earlier` and `before`, or interpolated between `before` and `after` when filling (read with
        `decoder.motion=flow`; otherwise the mean of `before` and `after`); doubt (B, H', W'): where
        a flow interpolation cannot be trusted, the absolute difference of its two warps
        (`flow.interpolation_with_doubt`; read with `flow`; None: zero, as for an extrapolation).
        The cells' stride x stride blocks (the top-left (H*s, W*s) pixels) are predicted; pixels beyond
        them (only when patches overlap) keep the base.
        """
        s = self.stride
        b, h, w = len(before), (before.shape[1] - self.size) // s + 1, (before.shape[2] - self.size) // s + 1
        fills = filling[:, None, None] > 0
        base = flowed if self.cfg.motion == "flow" else (before + after) / 2
        doubt = torch.zeros_like(before) if doubt is None else doubt
        if expected is not None:
            expected = smoothed(expected, s / 4)  # the codebook's block edges are not the scene's
        given = {"expected": expected, "before": before, "after": after, "earlier": earlier, "flowed": flowed,
                 "doubt": doubt + GRAY_MID}  # enters as doubt / 64, like the frames' differences
        names = self.sources + ["earlier"] * ("earlier" in self.motion) + ["doubt"] * ("flowed" in self.motion)
        frames = torch.stack([given[name] for name in names], 1)  # (B, n, H', W')
        frames = F.pixel_unshuffle((frames[..., :h * s, :w * s] - GRAY_MID) / GRAY_SCALE, s)  # (B, n*s*s, H, W)
        flags = torch.stack([ahead / HORIZON_SCALE, filling], 1).float()[:, :, None, None].expand(b, 2, h, w)
        inputs = torch.cat([frames, *([state[:, :self.hidden], scores] if self.reads_model else []), flags], 1)
        blends = torch.where(fills[:, None], self.fill_body(inputs), self.body(inputs))
        *weights, correction = blends[..., :h * s, :w * s].unbind(1)  # (B, H*s, W*s) each
        crop = (slice(None), slice(None, h * s), slice(None, w * s))
        inner = base[crop]
        inner = inner + sum(weight * (given[name][crop] - inner) for weight, name in zip(weights, self.sources))
        inner = inner + correction * GRAY_SCALE
        return torch.cat([torch.cat([inner, base[:, :h * s, w * s:]], 2), base[:, h * s:]], 1)


def _body(frames: int, stride: int, features: int, outputs: int, width: int) -> nn.Sequential:
    """The convolutions from `frames` real or expected frames (each stride x stride channels a
    cell) and `features` more channels per cell to `outputs` maps per pixel (the blend weights
    and the correction), starting at zero. The last layer paints each cell's features over its
    own pixels and half of each neighbour's (`OverlappingPaint`): the maps can change smoothly
    across cell boundaries, so that the codebook's grid need not show."""
    return nn.Sequential(
        nn.Conv2d(frames * stride * stride + features, width, 3, padding=1), nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
        OverlappingPaint(width, outputs, stride))


class OverlappingPaint(nn.Module):
    """(B, width, H, W) cell features -> (B, outputs, H*s, W*s) pixel maps: each cell paints a
    2s x 2s patch centred on its own s x s pixels, and overlapping patches add up. This is a
    transposed convolution (kernel 2s, stride s, padding s/2) written as a 1x1 convolution and
    `F.fold`, several times faster on the CPU. It starts at zero (the decoder starts as its base)."""

    def __init__(self, width: int, outputs: int, stride: int):
        super().__init__()
        self.stride = stride
        self.paint = nn.Conv2d(width, outputs * (2 * stride) ** 2, 1, bias=False)
        self.bias = nn.Parameter(torch.zeros(outputs))
        nn.init.zeros_(self.paint.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        s = self.stride
        patches = self.paint(x).reshape(b, -1, h * w)
        size = (h * s + s % 2, w * s + s % 2)  # odd s: one more row and column, cropped
        out = F.fold(patches, size, 2 * s, stride=s, padding=s // 2)[..., :h * s, :w * s]
        return out + self.bias[:, None, None]


def smoothed(frames: torch.Tensor, sigma: float) -> torch.Tensor:
    """(B, H, W) frames blurred by a Gaussian of `sigma` pixels (separable, borders reflected)."""
    radius = max(1, round(2 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=frames.dtype, device=frames.device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    out = F.pad(frames[:, None], (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1))
    return F.conv2d(out, kernel.view(1, 1, -1, 1))[:, 0]


def gradient_difference_loss(truth: torch.Tensor, estimate: torch.Tensor) -> torch.Tensor:
    """Mean | |grad truth| - |grad estimate| | over vertical and horizontal neighbour differences
    (Mathieu et al. 2016, alpha = 1) of (B, H, W) frames."""
    loss = 0
    for dim in (1, 2):
        loss = loss + (truth.diff(dim=dim).abs() - estimate.diff(dim=dim).abs()).abs().mean()
    return loss


@torch.no_grad()
def decode_prediction(decoder: PixelDecoder, logits: torch.Tensor, state: torch.Tensor, before: np.ndarray,
                      after: np.ndarray | None = None, ahead: int = 1, earlier: np.ndarray | None = None,
                      flowed: np.ndarray | None = None, doubt: np.ndarray | None = None) -> np.ndarray:
    """One predicted frame (H', W') float64 from the model's `logits` (1, H, W, k) and `state`
    (1, C, H, W): extrapolated `ahead` frames after the real frame `before` (H', W'), or, given the
    real frame `after` it, the frame between them. `earlier` is the real frame before `before`
    (default: `before`), `flowed` the optical-flow estimate of the frame, extrapolated or
    interpolated (default: the copy of `before`, or the neighbours' mean when filling), `doubt`
    where an interpolated one cannot be trusted (default: zero). A decoder that does not read the
    model ignores `logits` and `state`."""
    decoder.eval()
    device = decoder.gray_patches.device
    filling = float(after is not None)
    after = before if after is None else after
    earlier = before if earlier is None else earlier
    flowed = (np.asarray(before, np.float64) + after) / 2 if flowed is None else flowed
    expected = scores = None
    if decoder.reads_model:
        expected, scores = decoder.summarize(torch.softmax(logits.float(), -1), _batch_of_one(before, device),
                                             _batch_of_one(flowed, device))
    frame = decoder(expected, scores, state if decoder.reads_model else None,
                    *(_batch_of_one(f, device) for f in (before, after)),
                    torch.tensor([float(ahead)], device=device),
                    torch.tensor([filling], device=device),
                    *(_batch_of_one(f, device) for f in (earlier, flowed)),
                    None if doubt is None else _batch_of_one(doubt, device))
    return frame[0].double().cpu().numpy()


def _batch_of_one(frame: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.asarray(frame, np.float32))[None].to(device)


def load_decoder(path, model, codebook, stride: int) -> PixelDecoder:
    """Rebuild a trained decoder from its checkpoint, checked against the model, codebook and
    patch stride it is used with (a decoder of another model would read its state wrongly)."""
    checkpoint = DecoderCheckpoint.load(path)
    if checkpoint.model != weights_digest(model) or checkpoint.codebook != codebook.digest:
        raise VideoLMError(f"{path}: trained on top of another model or codebook than the current ones; rerun "
                           f"the train_decoder stage")
    if checkpoint.stride != stride:
        raise VideoLMError(f"{path}: trained with patches.stride={checkpoint.stride}, not {stride}; rerun the "
                           f"train_decoder stage")
    decoder = PixelDecoder.for_model(DecoderConfig(**checkpoint.decoder_config), model, codebook, stride,
                                     checkpoint.reads_model)
    decoder.load_state_dict(checkpoint.decoder)
    return decoder.eval()
