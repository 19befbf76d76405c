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
- the entropy of the predicted distribution at each cell (where the model expects change),
- and the real frames' own motion, by `decoder.motion`: `frames` adds the real frame before
  `before` (two real frames: a warp can be learned), `flow` adds that and, extrapolating, the
  optical-flow estimate of the frame (Farneback's: `evaluation/flow.py`); `none` gives it
  neither.

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
A decoder built with `reads_model=False` has the same convolutions without the model's three
inputs (and without the blend towards the expected frame): trained the same way, it measures
what the decoder makes of the real frames and their flow alone, so that the difference is the
language model's share of the pixels.
It works at the code grid's resolution: every cell's stride x stride pixels are channels
(pixel unshuffle), mixed with their neighbours' by 3x3 convolutions.

Trained (`decoder_training.py`) with L1 plus the gradient difference loss of Mathieu, Couprie
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
        """`hidden`: the rCNN's state channels; `gray_patches` (k, size*size) in gray levels.
        `reads_model` False: a decoder of the real frames and their flow alone, which reads nothing
        of the language model (its expected frame, entropy and state): what the decoder makes
        without the model, so that the model's share of its frames can be measured."""
        super().__init__()
        self.cfg, self.size, self.stride, self.reads_model = cfg, size, stride, reads_model
        self.register_buffer("gray_patches", gray_patches.float())
        cells = stride * stride  # pixels per cell
        self.motion = {"none": [], "frames": ["earlier"], "flow": ["earlier", "flowed"]}[cfg.motion]
        self.sources = ["expected"] * reads_model + ["before", "after", "flowed"]  # what the blends lean towards
        frames = len(self.sources) + ("earlier" in self.motion) + ("flowed" in self.motion)  # + the flow's doubt
        features = (hidden + 1) * reads_model + 2  # state and entropy; ahead and filling
        self.body = _body(frames, cells, features, len(self.sources) + 1, cfg.width)  # extrapolation
        self.fill_body = _body(frames, cells, features, len(self.sources) + 1, cfg.width)  # filling

    @classmethod
    def for_model(cls, cfg: DecoderConfig, model, codebook, stride: int, reads_model: bool = True) -> PixelDecoder:
        """A decoder (untrained) for the rCNN `model` over `codebook`'s codes at patch `stride`."""
        gray_patches = torch.from_numpy(codebook.gray_patches().reshape(codebook.k, -1).astype(np.float32))
        return cls(cfg, model.cfg.hidden, gray_patches, codebook.size, stride, reads_model)

    def summarize(self, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What the decoder reads of a predicted distribution `probs` (B, H, W, k): the mean of the
        gray_patches, (B, H', W') gray frames (H' = (H-1)s+p), and the entropy (B, H, W) in units of log k."""
        entropy = -(probs * probs.clamp_min(1e-30).log()).sum(-1) / math.log(probs.shape[-1])
        return expected_frame(probs, self.gray_patches, self.size, self.stride), entropy

    def forward(self, expected: torch.Tensor | None, entropy: torch.Tensor | None, state: torch.Tensor | None,
                before: torch.Tensor, after: torch.Tensor, ahead: torch.Tensor, filling: torch.Tensor,
                earlier: torch.Tensor, flowed: torch.Tensor, doubt: torch.Tensor | None = None) -> torch.Tensor:
        """Gray frames (B, H', W'), H' = (H-1)s+p, from:

        expected (B, H', W'), entropy (B, H, W): `self.summarize` of the model's predicted code
        distribution of the frame; state (B, C, H, W): the recurrent state it was predicted from
        (all three None, and not read, when the decoder does not read the model);
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
        given = {"expected": expected, "before": before, "after": after, "earlier": earlier, "flowed": flowed,
                 "doubt": doubt + GRAY_MID}  # enters as doubt / 64, like the frames' differences
        names = self.sources + ["earlier"] * ("earlier" in self.motion) + ["doubt"] * ("flowed" in self.motion)
        frames = torch.stack([given[name] for name in names], 1)  # (B, n, H', W')
        frames = F.pixel_unshuffle((frames[..., :h * s, :w * s] - GRAY_MID) / GRAY_SCALE, s)  # (B, n*s*s, H, W)
        flags = torch.stack([ahead / HORIZON_SCALE, filling], 1).float()[:, :, None, None].expand(b, 2, h, w)
        inputs = torch.cat([frames, *([state, entropy[:, None]] if self.reads_model else []), flags], 1)
        blends = torch.where(fills[:, None], self.fill_body(inputs), self.body(inputs))
        *weights, correction = F.pixel_shuffle(blends, s).unbind(1)  # (B, H*s, W*s) each
        crop = (slice(None), slice(None, h * s), slice(None, w * s))
        inner = base[crop]
        inner = inner + sum(weight * (given[name][crop] - inner) for weight, name in zip(weights, self.sources))
        inner = inner + correction * GRAY_SCALE
        return torch.cat([torch.cat([inner, base[:, :h * s, w * s:]], 2), base[:, h * s:]], 1)


def _body(frames: int, cells: int, features: int, outputs: int, width: int) -> nn.Sequential:
    """The convolutions from `frames` real or expected frames (each `cells` channels a cell) and
    `features` more channels per cell to `outputs` maps per pixel (the blend weights and the
    correction), starting at zero."""
    body = nn.Sequential(
        nn.Conv2d(frames * cells + features, width, 3, padding=1), nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
        nn.Conv2d(width, outputs * cells, 1))
    nn.init.zeros_(body[-1].weight)  # the decoder starts as its base
    nn.init.zeros_(body[-1].bias)
    return body


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
    expected, entropy = decoder.summarize(torch.softmax(logits.float(), -1)) if decoder.reads_model else (None, None)
    frame = decoder(expected, entropy, state if decoder.reads_model else None, *(_batch_of_one(f, device) for f in (before, after)),
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
