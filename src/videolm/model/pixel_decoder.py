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
each kept at its own best validation step. Filling reads no flow: on the default data flow
interpolation is below the neighbours' mean on moving pixels, and a decoder that read it
filled worse than that mean (docs/results.md, the ablation).

It predicts per pixel three blend weights and a correction: frame = base + g1 (expected - base)
+ g2 (before - base) + g3 (flowed - base) + c, where base is the flow estimate when extrapolating
with `flow`, else the mean of the two real frames (the copy of the last one when extrapolating,
the neighbours' mean when filling). All four start at zero, so that, untrained, the decoder is
that base; the blends make the obvious first steps, leaning on the model where it expects
change, on the last frame where the flow goes wrong, or on the flow where it goes right, one
product away.
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
    def __init__(self, cfg: DecoderConfig, hidden: int, gray_patches: torch.Tensor, size: int, stride: int):
        """`hidden`: the rCNN's state channels; `gray_patches` (k, size*size) in gray levels."""
        super().__init__()
        self.cfg, self.size, self.stride = cfg, size, stride
        self.register_buffer("gray_patches", gray_patches.float())
        cells = stride * stride  # pixels per cell
        self.motion = {"none": [], "frames": ["earlier"], "flow": ["earlier", "flowed"]}[cfg.motion]
        self.body = _body(3 + len(self.motion), cells, hidden, cfg.width)  # extrapolation
        self.fill_body = _body(3 + len(self.motion[:1]), cells, hidden, cfg.width)  # filling: no flow

    @classmethod
    def for_model(cls, cfg: DecoderConfig, model, codebook, stride: int) -> PixelDecoder:
        """A decoder (untrained) for the rCNN `model` over `codebook`'s codes at patch `stride`."""
        gray_patches = torch.from_numpy(codebook.gray_patches().reshape(codebook.k, -1).astype(np.float32))
        return cls(cfg, model.cfg.hidden, gray_patches, codebook.size, stride)

    def summarize(self, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What the decoder reads of a predicted distribution `probs` (B, H, W, k): the mean of the
        gray_patches, (B, H', W') gray frames (H' = (H-1)s+p), and the entropy (B, H, W) in units of log k."""
        entropy = -(probs * probs.clamp_min(1e-30).log()).sum(-1) / math.log(probs.shape[-1])
        return expected_frame(probs, self.gray_patches, self.size, self.stride), entropy

    def forward(self, expected: torch.Tensor, entropy: torch.Tensor, state: torch.Tensor, before: torch.Tensor,
                after: torch.Tensor, ahead: torch.Tensor, filling: torch.Tensor, earlier: torch.Tensor,
                flowed: torch.Tensor) -> torch.Tensor:
        """Gray frames (B, H', W'), H' = (H-1)s+p, from:

        expected (B, H', W'), entropy (B, H, W): `self.summarize` of the model's predicted code
        distribution of the frame;
        state (B, C, H, W): the recurrent state it was predicted from;
        before, after (B, H', W'): real gray frames (0..255) around it (extrapolation: both the last one);
        ahead (B,): frames between `before` and the predicted frame; filling (B,): 1 where `after` is real;
        earlier (B, H', W'): the real frame before `before` (read with `decoder.motion` = frames and
        flow); flowed (B, H', W'): the optical-flow estimate of an extrapolated frame (flow alone).
        The cells' stride x stride blocks (the top-left (H*s, W*s) pixels) are predicted; pixels beyond
        them (only when patches overlap) keep the base.
        """
        b, _, h, w = state.shape
        s = self.stride
        fills = filling[:, None, None] > 0
        mean = (before + after) / 2
        flowed = torch.where(fills, mean, flowed)  # filling reads no flow
        base = flowed if self.cfg.motion == "flow" else mean
        inputs = {"earlier": earlier, "flowed": flowed}
        frames = torch.stack([expected, before, after, *(inputs[name] for name in self.motion)], 1)  # (B, 3..5, H', W')
        frames = F.pixel_unshuffle((frames[..., :h * s, :w * s] - GRAY_MID) / GRAY_SCALE, s)  # (B, n*s*s, H, W)
        rest = [state, entropy[:, None], torch.stack([ahead / HORIZON_SCALE, filling], 1).float()[:, :, None, None]
                .expand(b, 2, h, w)]
        fill_frames = frames[:, :(4 if self.motion else 3) * s * s]  # without the flow channels
        blends = torch.where(fills[:, None], self.fill_body(torch.cat([fill_frames, *rest], 1)),
                             self.body(torch.cat([frames, *rest], 1)))
        to_expected, to_before, to_flowed, correction = F.pixel_shuffle(blends, s).unbind(1)  # (B, H*s, W*s) each
        inner, crop = base[:, :h * s, :w * s], (slice(None), slice(None, h * s), slice(None, w * s))
        inner = (inner + to_expected * (expected[crop] - inner) + to_before * (before[crop] - inner)
                 + to_flowed * (flowed[crop] - inner) + correction * GRAY_SCALE)
        return torch.cat([torch.cat([inner, base[:, :h * s, w * s:]], 2), base[:, h * s:]], 1)


def _body(frames: int, cells: int, hidden: int, width: int) -> nn.Sequential:
    """The convolutions from `frames` real or expected frames (each `cells` channels a cell), the
    state and 3 flags to three blend weights and a correction per pixel, starting at zero."""
    body = nn.Sequential(
        nn.Conv2d(frames * cells + hidden + 3, width, 3, padding=1), nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
        nn.Conv2d(width, 4 * cells, 1))
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
                      flowed: np.ndarray | None = None) -> np.ndarray:
    """One predicted frame (H', W') float64 from the model's `logits` (1, H, W, k) and `state`
    (1, C, H, W): extrapolated `ahead` frames after the real frame `before` (H', W'), or, given the
    real frame `after` it, the frame between them. `earlier` is the real frame before `before`
    (default: `before`), `flowed` the optical-flow estimate of the frame (default: the copy of
    `before`, or the neighbours' mean when filling)."""
    decoder.eval()
    device = decoder.gray_patches.device
    filling = float(after is not None)
    after = before if after is None else after
    earlier = before if earlier is None else earlier
    flowed = (np.asarray(before, np.float64) + after) / 2 if flowed is None else flowed
    expected, entropy = decoder.summarize(torch.softmax(logits.float(), -1))
    frame = decoder(expected, entropy, state, *(_batch_of_one(f, device) for f in (before, after)),
                    torch.tensor([float(ahead)], device=device),
                    torch.tensor([filling], device=device),
                    *(_batch_of_one(f, device) for f in (earlier, flowed)))
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
    decoder = PixelDecoder.for_model(DecoderConfig(**checkpoint.decoder_config), model, codebook, stride)
    decoder.load_state_dict(checkpoint.decoder)
    return decoder.eval()
