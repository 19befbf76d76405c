"""Training the pixel decoder on the trained model's own rollouts.

The model is frozen. Each training example is a random crop of a training video: the model
sees `decoder.context` real code grids, then rolls out `decoder.horizon` grids feeding back
its argmax codes (what `evaluate` does), and at every step the decoder turns the predicted
distribution and state, with the last real frame, into pixels, scored against the true
frames. The same crop also gives `decoder.fills` filled frames: the first predicted frame and
the ones after it, each predicted by the model from the `decoder.context` real frames before it
and given the real frames on either side (what `evaluate` fills), so that filling, which
`evaluate` measures once a clip, learns from as many frames as the crops hold. With
`decoder.motion=flow` each example also carries the optical-flow estimates of its extrapolated
frames (Farneback on the crop's two last real frames) and of its filled ones (each interpolated
between its two real neighbours).
A decoder that does not read the model (`reads_model=False`) is trained on the same crops in
the same order, with the same loss and selection; no rollout is made for it.
Loss: L1, the moving pixels weighted `motion_weight` times more than still ones (so that copying
the background is not the easy optimum), + `gdl_weight` x gradient difference (in gray / 255).

Before training and every `val_every` steps the decoder is scored the same way on whole
validation frames (clips of the validation part, one starting every `VAL_CLIP_STRIDE` frames),
and each task's convolutions (extrapolating, filling) are kept from the step best for that task
by `decoder.select`, by default the PSNR of its frames on moving pixels; the untrained decoder
(its base: the flow estimate with `decoder.motion=flow`) competes too.
When the kept weights are no better there than copying the last frame (or, filling, than the
neighbours' mean), the stage says so, and so does `metrics/decoder.json`.
Crops are drawn as the model's are (`CodeGridDataset`): item i from a generator seeded with
(seed, i), so runs are the same bits, with the crops (and their flow) made in the training
process or in `decoder.loader_workers` DataLoader workers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from videolm.codes.codebook import Codebook
from videolm.codes.grids import CodeGrid
from videolm.config import DecoderConfig
from videolm.data.frames import VideoFrames
from videolm.errors import VideoLMError
from videolm.evaluation.flow import extrapolate_flow, interpolation_with_doubt
from videolm.evaluation.generate import rollout_steps
from videolm.image_metrics import Pool, as_db, moving_mask
from videolm.model.pixel_decoder import PixelDecoder, gradient_difference_loss
from videolm.training.crops import CropPositions
from videolm.training.schedule import lr_schedule

log = logging.getLogger(__name__)

BEATS_BY_DB = 0.01  # a decoder within this of a baseline's PSNR is no better than it
VAL_CLIP_STRIDE = 4  # frames between validation clips' starts (the default eval.clip_stride)


@dataclass
class DecoderClip:
    """Codes (context + fills - 1, H, W): the real grids before the first prediction, and those after
    it that the later filled frames are predicted from; the true frames (2 + span, H', W'): the two
    last real frames before the prediction, then the `span` frames after them; and, with
    `decoder.motion=flow`, the flow estimates (horizon + fills, H', W'): the `horizon` frames after
    them extrapolated, then the first `fills` of them each interpolated between its real
    neighbours, and those interpolations' doubt (fills, H', W') (else None)."""

    codes: torch.Tensor
    frames: torch.Tensor
    flowed: torch.Tensor | None
    doubt: torch.Tensor | None


def frames_needed(cfg: DecoderConfig) -> int:
    """Frames after the last real one that an example reads: the horizon, and the filled frames
    with the real frame after the last of them."""
    return max(cfg.horizon, cfg.fills + 1)


class DecoderCrops:
    """Random crops (`crop` x `crop` cells and their pixels) of the training part of every video."""

    def __init__(self, grids: list[CodeGrid], videos: dict[str, VideoFrames], cfg: DecoderConfig, size: int,
                 stride: int, seed: int):
        span = frames_needed(cfg)
        first = max(cfg.context, 2)  # two real frames before the prediction
        ranges = [(g, first, g.train_end - span + 1) for g in grids if g.train_end - span + 1 > first]
        if not ranges:
            raise VideoLMError(f"no video has max(decoder.context, 2) + max(decoder.horizon, decoder.fills + 1) = "
                               f"{first + span} training frames (lower decoder.context, decoder.horizon or "
                               f"decoder.fills)")
        self.positions = CropPositions(ranges, cfg.crop, by_area=False)
        self.crop = self.positions.crop
        self.videos, self.cfg, self.size, self.stride, self.seed = videos, cfg, size, stride, seed

    def __getitem__(self, i: int) -> DecoderClip:
        rng = np.random.default_rng([self.seed, 2, i])  # 2: not the model's crops
        grid, t, y, x = self.positions.draw(rng)  # t: the first predicted frame
        return clip_at(grid, self.videos[grid.video_id], t, self.cfg, self.size, self.stride,
                       (slice(y, y + self.crop), slice(x, x + self.crop)))


def stack_clips(clips: list[DecoderClip]) -> DecoderClip:
    """A batch of examples: each field stacked along a new first dimension."""
    flowed, doubt = (None if clips[0].flowed is None else torch.stack([getattr(c, name) for c in clips])
                     for name in ("flowed", "doubt"))
    return DecoderClip(torch.stack([c.codes for c in clips]), torch.stack([c.frames for c in clips]), flowed, doubt)


def clip_at(grid: CodeGrid, video: VideoFrames, t: int, cfg: DecoderConfig, size: int, stride: int,
            cells: tuple[slice, slice] = (slice(None), slice(None))) -> DecoderClip:
    """The example whose first predicted frame is `t`, over the code cells `cells` (all by default)."""
    ys, xs = (range(grid.codes.shape[1 + d])[c] for d, c in enumerate(cells))
    codes = grid.codes[t - cfg.context:t + cfg.fills - 1, ys.start:ys.stop, xs.start:xs.stop].astype(np.int64)
    pixels = (slice(ys.start * stride, (ys.stop - 1) * stride + size),
              slice(xs.start * stride, (xs.stop - 1) * stride + size))
    start = max(t - 2, 0)  # the frame before the last real one (the last itself at a video's start)
    frames = video.read(start, t + frames_needed(cfg))[:, pixels[0], pixels[1]].astype(np.float32)
    if start == t - 1:
        frames = np.concatenate([frames[:1], frames])
    flowed = doubt = None
    if cfg.motion == "flow":
        between, doubt = zip(*(interpolation_with_doubt(frames[1 + j], frames[3 + j]) for j in range(cfg.fills)))
        flowed = torch.from_numpy(np.concatenate([extrapolate_flow(frames[0], frames[1], cfg.horizon), between]))
        doubt = torch.from_numpy(np.stack(doubt))
    return DecoderClip(torch.from_numpy(codes), torch.from_numpy(frames), flowed, doubt)


def decoded_examples(model, decoder: PixelDecoder, codes: torch.Tensor, frames: torch.Tensor,
                     flowed: torch.Tensor | None, horizon: int, fills: int,
                     doubt: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(estimates, truths, befores), each ((horizon + fills) * B, H', W'), step by step: the
    decoder's frames for the `horizon` rolled-out predictions after the first context frames of
    `codes` (B, context + fills - 1, H, W), then for filling the first `fills` predicted frames,
    each predicted from the context frames before it; against the true `frames` (B, 2 + span, H',
    W'), and the real frame before each. `flowed` (B, horizon + fills, H', W') are the frames'
    flow estimates and `doubt` (B, fills, H', W') the filled frames' flow doubt (None: not read)."""
    b, device, context = len(frames), frames.device, codes.shape[1] - fills + 1
    by_step = lambda x: x.transpose(0, 1).reshape(-1, *x.shape[2:])  # (B, n, ...) -> (n * B, ...)
    last = frames[:, 1]
    before = torch.cat([last.repeat(horizon, 1, 1), by_step(frames[:, 1:1 + fills])])
    after = torch.cat([last.repeat(horizon, 1, 1), by_step(frames[:, 3:3 + fills])])
    earlier = torch.cat([frames[:, 0].repeat(horizon, 1, 1), by_step(frames[:, :fills])])
    ahead = torch.cat([torch.arange(1, horizon + 1, device=device).float().repeat_interleave(b),
                       torch.ones(b * fills, device=device)])
    filling = torch.cat([torch.zeros(b * horizon, device=device), torch.ones(b * fills, device=device)])
    truth = torch.cat([by_step(frames[:, 2:horizon + 2]), by_step(frames[:, 2:2 + fills])])
    flowed = (before + after) / 2 if flowed is None else by_step(flowed)
    if doubt is not None:
        doubt = torch.cat([torch.zeros_like(before[:b * horizon]), by_step(doubt)])
    expected = scores = state = None
    if decoder.reads_model:
        probs, states = [], []  # per step ahead, then the filled frames
        with torch.no_grad():
            for logits, state, _ in rollout_steps(model, codes[:, :context], horizon):
                probs.append(torch.softmax(logits.float(), -1))
                states.append(state)
            # filling: each filled frame predicted from the real frames before it
            logits, _, state = model(torch.cat([codes[:, j:j + context] for j in range(fills)]))
            probs, state = torch.cat([*probs, torch.softmax(logits[:, -1].float(), -1)]), torch.cat([*states, state])
            expected, scores = decoder.summarize(probs, before, flowed)
    estimates = decoder(expected, scores, state, before, after, ahead, filling, earlier, flowed, doubt)
    return estimates, truth, before


def decoder_loss(estimate: torch.Tensor, truth: torch.Tensor, last: torch.Tensor, cfg: DecoderConfig,
                 motion_threshold: float) -> torch.Tensor:
    """L1 with moving pixels (more than `motion_threshold` from the `last` real frame) weighted
    `cfg.motion_weight` times, + `cfg.gdl_weight` x gradient difference, in gray levels / 255."""
    weight = 1 + cfg.motion_weight * ((truth - last).abs() > motion_threshold).float()
    l1 = (weight * (estimate - truth).abs()).sum() / weight.sum() / 255
    return l1 + cfg.gdl_weight * gradient_difference_loss(truth / 255, estimate / 255)


def validation_clips(grids: list[CodeGrid], videos: dict[str, VideoFrames], cfg: DecoderConfig, size: int,
                     stride: int) -> list[DecoderClip]:
    """Whole-frame examples of the validation part of every video, one starting every
    `VAL_CLIP_STRIDE` frames (overlapping, as evaluation's test clips do)."""
    span = frames_needed(cfg)
    clips = []
    for grid in grids:
        start, stop = grid.part("val")
        for t in range(start + max(cfg.context, 2), stop - span + 1, VAL_CLIP_STRIDE):
            clips.append(clip_at(grid, videos[grid.video_id], t, cfg, size, stride))
    return clips


@torch.no_grad()
def validate(model, decoder: PixelDecoder, clips: list[DecoderClip], cfg: DecoderConfig,
             motion_threshold: float) -> dict[str, float | None]:
    """Mean loss over the validation clips, and PSNR / SSIM on moving pixels (as `evaluate`
    measures them) of the decoder, of copying the last frame (filling: the neighbours' mean) and
    of optical flow (when the clips carry it), for extrapolation (all horizons pooled) and filling."""
    decoder.eval()
    loss = 0.0
    baseline = {"extrapolate": "copy_last", "fill": "average"}
    flows = bool(clips) and clips[0].flowed is not None
    pools = {(what, method): Pool(decoder.stride) for what in baseline
             for method in ("decoder", baseline[what], *["flow"] * flows)}
    device = decoder.gray_patches.device
    for clip in clips:
        flowed, doubt = (None if t is None else t[None].to(device) for t in (clip.flowed, clip.doubt))
        estimates, truths, befores = decoded_examples(model, decoder, clip.codes[None].to(device),
                                                      clip.frames[None].to(device), flowed, cfg.horizon, cfg.fills,
                                                      doubt)
        loss += float(decoder_loss(estimates, truths, befores, cfg, motion_threshold))
        for i, (estimate, truth, before) in enumerate(zip(*(t.cpu().numpy() for t in (estimates, truths, befores)))):
            what = "fill" if i >= cfg.horizon else "extrapolate"
            moving = moving_mask(truth, before, motion_threshold)
            pools[what, "decoder"].add(truth, estimate, moving)
            after = clip.frames[3 + i - cfg.horizon].numpy() if what == "fill" else before
            pools[what, baseline[what]].add(truth, (before + after) / 2, moving)
            if flows:
                pools[what, "flow"].add(truth, clip.flowed[i].numpy(), moving)
    metrics: dict[str, float | None] = {"val_loss": loss / len(clips)}
    for (what, method), pool in pools.items():
        for measure in ("psnr_moving", "ssim_moving"):
            metrics[f"val_{what}_{measure}_{method}"] = pool.result()[measure]
    return metrics


def train_decoder(model, grids: list[CodeGrid], videos: dict[str, VideoFrames], codebook: Codebook, stride: int,
                  cfg: DecoderConfig, seed: int, motion_threshold: float,
                  device: torch.device = torch.device("cpu"), reads_model: bool = True) -> tuple[PixelDecoder, dict]:
    """Train a `PixelDecoder` on `model` (frozen) on `device`; return it (on the CPU) with each
    task's best validation weights, and a summary (each task's best step and its validation
    metrics, and whether it beats its baseline). Without validation frames long enough for one
    clip, the last weights are kept (and the summary says val_clips 0). `reads_model` False: the
    decoder without the model's inputs, trained the same way."""
    torch.manual_seed(seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model.eval().requires_grad_(False).to(device)
    decoder = PixelDecoder.for_model(cfg, model, codebook, stride, reads_model).to(device)
    crops = DecoderCrops(grids, videos, cfg, codebook.size, stride, seed)
    val = validation_clips(grids, videos, cfg, codebook.size, stride)
    if not val:
        log.warning(f"no validation stretch has decoder.context + max(decoder.horizon, decoder.fills + 1) = "
                    f"{cfg.context + frames_needed(cfg)} frames: the last weights are kept, unvalidated")
    optimizer = torch.optim.Adam(decoder.parameters(), lr=cfg.lr)
    scheduler = lr_schedule(optimizer, cfg.steps)
    best = {task: Best() for task in TASKS}  # each body's best weights, by its own task's validation
    # Crop i is drawn from its own seeded generator, so the batches are the same in any worker.
    batches = iter(DataLoader(crops, batch_size=cfg.batch_size, sampler=range(cfg.steps * cfg.batch_size),
                              num_workers=cfg.loader_workers, collate_fn=stack_clips,
                              pin_memory=device.type == "cuda"))
    if val:  # the untrained decoder (its base) is kept unless a step beats it
        untrained = validate(model, decoder, val, cfg, motion_threshold)
        for task, body in TASKS.items():
            best[task].offer(untrained, task, cfg.select, 0, getattr(decoder, body))
    bar = tqdm(range(cfg.steps), desc="train_decoder" + ("" if reads_model else " (without the model)"))
    for step in bar:
        decoder.train()
        batch = next(batches)
        flowed, doubt = (None if t is None else t.to(device) for t in (batch.flowed, batch.doubt))
        examples = decoded_examples(model, decoder, batch.codes.to(device), batch.frames.to(device), flowed,
                                    cfg.horizon, cfg.fills, doubt)
        loss = decoder_loss(*examples, cfg, motion_threshold)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if val and ((step + 1) % cfg.val_every == 0 or step + 1 == cfg.steps):
            metrics = validate(model, decoder, val, cfg, motion_threshold)
            tqdm.write(f"step {step + 1}: val loss {metrics['val_loss']:.4f}; moving PSNR, extrapolated "
                       f"{as_db(metrics['val_extrapolate_psnr_moving_decoder'])} (copy last "
                       f"{as_db(metrics['val_extrapolate_psnr_moving_copy_last'])}), filled "
                       f"{as_db(metrics['val_fill_psnr_moving_decoder'])}")
            for task, body in TASKS.items():
                best[task].offer(metrics, task, cfg.select, step + 1, getattr(decoder, body))
    summary = {"val_clips": len(val)}
    for task, body in TASKS.items():
        if best[task].weights is not None:
            getattr(decoder, body).load_state_dict(best[task].weights)
        summary[f"best_step_{task}"] = best[task].step if best[task].weights is not None else cfg.steps
        summary.update({k: v for k, v in (best[task].metrics or {}).items()
                        if k.startswith(f"val_{task}_") or (task == "extrapolate" and k == "val_loss")})
    if all(best[task].metrics for task in TASKS):
        summary.update(_against_baselines(summary))
    return decoder.cpu().eval(), summary


TASKS = {"extrapolate": "body", "fill": "fill_body"}  # each task's convolutions in the decoder


@dataclass
class Best:
    """One body's best weights so far, the step and the validation metrics they had."""

    weights: dict | None = None
    step: int = 0
    metrics: dict | None = None

    def offer(self, metrics: dict, task: str, select: str, step: int, body: torch.nn.Module) -> None:
        """Keep `body`'s weights if `metrics` beat the best by `decoder.select`: the validation
        loss, or the moving-pixel PSNR of `task`'s frames by more than `BEATS_BY_DB` (a later
        step no better than that keeps the earlier, less fitted weights)."""
        if self.metrics is not None:
            if select == "loss":
                if metrics["val_loss"] >= self.metrics["val_loss"]:
                    return
            else:
                ours, theirs = (m[f"val_{task}_psnr_moving_decoder"] for m in (metrics, self.metrics))
                if ours is None or (theirs is not None and ours <= theirs + BEATS_BY_DB):
                    return
        self.weights = {k: v.clone() for k, v in body.state_dict().items()}
        self.step, self.metrics = step, metrics


def _against_baselines(metrics: dict) -> dict:
    """Whether the kept decoder beats copying the last frame (extrapolating) and the neighbours'
    mean (filling) on validation's moving pixels, by more than `BEATS_BY_DB`; a warning names
    each it does not beat."""
    verdicts = {}
    for what, method, baseline in (("extrapolate", "copy_last", "copying the last frame"),
                                   ("fill", "average", "the neighbours' mean")):
        ours, theirs = metrics[f"val_{what}_psnr_moving_decoder"], metrics[f"val_{what}_psnr_moving_{method}"]
        beats = None if ours is None or theirs is None else bool(ours > theirs + BEATS_BY_DB)
        verdicts[f"val_{what}_beats_baseline"] = beats
        if beats is False:
            log.warning(f"train_decoder: the kept decoder is no better than {baseline} on validation's moving pixels "
                        f"({what}: {as_db(ours)} against {as_db(theirs)})")
    return verdicts
