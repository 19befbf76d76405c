"""`videolm predict VIDEO`: the trained model's 1-step predictions of one video it has not seen.

Why: the pipeline scores the model only on its own test split, and in aggregate. This command
shows what the model makes of any one video, seen exactly as the training videos were: decoded
with the workspace's `data` params and encoded with its codebook. Every frame t >= 1 is predicted
from all the real frames before it (the model's state carried through, as in evaluation), and
written next to the truth, the optical-flow extrapolation and the entropy of the predicted code
distribution at each cell, with the model's bits per patch against the copy-previous baseline's.
The prediction shown is the workspace's pixel decoder's frame (`paths.decoder`; from the predicted
distribution, the model's state and the frames before), or where there is none the most likely
codes decoded by the codebook; the JSON scores both, beside copying the frame before and optical
flow, and gives every method's blockiness and the truth's (`image_metrics`). Into --out go:

- `<stem>.mp4` (or `.gif`): truth | prediction | flow | entropy, one frame per predicted frame,
  the entropy on a fixed scale, 0 to log2(k) bits (the most a distribution over k codes has);
- `<stem>.png`: up to 8 evenly spaced predicted frames, rows truth, prediction, flow, entropy;
- `<stem>.json`: the numbers (sorted keys, nothing that changes from run to run).

Each file is written atomically and carries the `predict` mark (`videolm.io`): a file in the way
that the command did not make is refused, never replaced. Memory does not grow with the video's
length: the video is decoded twice, once to encode its codes (kept: 2 bytes a cell, 1/32 of
its pixels' bytes) and once beside the model, a few frames at a time, and the MP4 is written as
the frames are predicted. A GIF is held whole until it is written (Pillow's writer needs every
frame): for clips, not films. The copy-previous baseline is fit on the workspace's training
codes, read one video at a time (seconds here; minutes for a UCF-101-sized workspace).
"""

from __future__ import annotations

import argparse
import hashlib
import math
from collections import deque
from contextlib import closing
from itertools import islice
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from tqdm import tqdm

from videolm.cli.workspace import load_workspace_params
from videolm.codes.codebook import Codebook
from videolm.codes.grids import CodeGrid, encode_frames, load_code_grids
from videolm.codes.patches import covered_shape
from videolm.data.video import decode_usable, video_fps
from videolm.device import resolve_device
from videolm.errors import VideoLMError
from videolm.evaluation.baselines import Baselines, fit_baselines
from videolm.evaluation.flow import extrapolate_flow
from videolm.evaluation.pictures import (
    gif_writer,
    mp4_writer,
    prediction_animation,
    prediction_panels,
    prediction_strip,
    save_png,
)
from videolm.evaluation.scoring import entropy_bits, score_part
from videolm.image_metrics import Blockiness, Pool, as_db, moving_mask
from videolm.io import guard_outputs, write_json
from videolm.model.build import load_model
from videolm.model.pixel_decoder import PixelDecoder, decode_prediction, load_decoder

STAGE = "predict"  # the mark on the files it writes
STRIP_FRAMES = 8  # predicted frames shown in the PNG
ENCODE_FRAMES = 32  # frames decoded and encoded at a time (the first pass)
DEFAULT_FPS = 10  # of the animation, where the video does not say its frame rate


def encode_stream(frames: Iterator[np.ndarray], codebook: Codebook, stride: int, device) -> np.ndarray:
    """(T, H', W') codes of every frame, encoded `ENCODE_FRAMES` frames at a time: the video's
    pixels are never held whole."""
    parts = []
    while chunk := list(islice(frames, ENCODE_FRAMES)):
        parts.append(encode_frames(np.stack(chunk), codebook, stride, device))
    return np.concatenate(parts)


def predict_frames(model, frames: Iterator[np.ndarray], codes: np.ndarray, codebook: Codebook, stride: int,
                   baselines: Baselines, name: str, decoder: PixelDecoder | None, motion_threshold: float,
                   outputs: dict[str, Path], fps: int) -> dict:
    """Every frame t >= 1 of one video predicted from all the frames before it and scored, as the
    evaluation scores a test video (`score_part`), and drawn as it is predicted: the animation
    frame by frame, the strip's frames kept. `frames` gives the video's frames again, in order
    (the codes are `codes`); three are held at a time. Returns the metrics.

    The prediction shown is the pixel decoder's frame (from the predicted distribution, its state
    and frame t - 1) or, without a decoder, the most likely code at every cell decoded by the
    codebook. Both are scored (PSNR / SSIM / sharpness, full and moving: pixels more than
    `motion_threshold` gray levels from frame t - 1; blockiness), beside copying frame t - 1 and
    the optical flow of frames t - 2 and t - 1 carried on one frame."""
    n = len(codes)
    top = math.log2(codebook.k)  # the entropy colour scale's top, in bits: the same for every frame and video
    strip_at = set((1 + np.linspace(0, n - 2, min(STRIP_FRAMES, n - 1))).round().astype(int).tolist())
    strip: dict[int, list[np.ndarray]] = {}  # t -> panels, for the strip
    pools = {method: Pool(stride) for method in ("model", "model_pixels", "copy_last", "flow")
             if decoder is not None or method != "model_pixels"}
    truth_blocks = Blockiness(stride)
    shown = "model_pixels" if decoder is not None else "model"
    names = ["truth", "model's pixels" if decoder is not None else "model's codes", "flow", "entropy"]
    window: deque[np.ndarray] = deque(maxlen=3)  # frames t - 2, t - 1, t
    entropy = [0.0, 0]  # bits summed over the scored cells, cells
    h, w = covered_shape(*codes.shape[1:], codebook.size, stride)  # the part the patch grid covers
    animation = outputs["animation"]
    writer = (mp4_writer(animation, STAGE, fps) if animation.suffix == ".mp4"
              else gif_writer(animation, STAGE, round(1000 / fps)))

    with tqdm(total=n - 1, desc=f"predicting {name}", unit="frame") as bar, writer as add:
        window.append(next(frames))

        def keep(grid: CodeGrid, t: int, logp: torch.Tensor, state: torch.Tensor) -> None:
            window.append(next(frames))  # frame t: the callback comes for t = 1, 2, ... in order
            truth, previous = window[-1][:h, :w].astype(np.float64), window[-2][:h, :w].astype(np.float64)
            earlier = window[0][:h, :w].astype(np.float64)  # frame t - 2 (t = 1: frame 0)
            flowed = extrapolate_flow(earlier, previous, 1)[0] if t >= 2 else previous
            estimates = {"model": codebook.decode(logp.argmax(-1).cpu().numpy()[None], stride)[0],
                         "copy_last": previous, "flow": flowed}
            if decoder is not None:
                estimates["model_pixels"] = decode_prediction(decoder, logp[None], state, previous, earlier=earlier,
                                                              flowed=flowed)
            moving = moving_mask(truth, previous, motion_threshold)
            for method, estimate in estimates.items():
                pools[method].add(truth, estimate, moving)
            truth_blocks.add(truth)
            bits = entropy_bits(logp).cpu().numpy()
            entropy[0] += float(bits.sum())
            entropy[1] += bits.size
            panels = prediction_panels([window[-1][:h, :w], estimates[shown], flowed], bits, codebook.size, stride,
                                       top)
            add(prediction_animation([panels], [t], n, top, names)[0])
            if t in strip_at:
                strip[t] = panels
            bar.update()

        scores = score_part(model, [CodeGrid(name, codes, train_end=0, val_end=0)], "test", baselines, keep)
    title = f"{outputs['strip'].stem}: each frame predicted from the frames before it; entropy 0-{top:.1f} bits"
    save_png(outputs["strip"], prediction_strip(list(strip.values()), list(strip), title, names), STAGE)
    metrics = {"frames": n, "frame_size": list(window[-1].shape), "grid": list(codes.shape[1:]),
               "patches_scored": scores.count, **scores.summary(),
               "model_entropy_bits_per_patch": entropy[0] / entropy[1],
               "shown": shown, "blockiness_1step_truth": truth_blocks.result()}
    for method, pool in pools.items():
        metrics.update({f"{measure}_1step_{method}": value for measure, value in pool.result().items()})
    metrics["model_vs_copy_previous_bits"] = metrics["model_bits_per_patch"] / metrics["copy_previous_bits_per_patch"]
    return metrics


def predict(video: Path, workspace: Path, out: Path, animation_format: str = "mp4", device: str | None = None) -> dict:
    """Predict every frame of `video` with the model of `workspace` and write the outputs into `out`
    (see the module docstring), on `device` (default: the workspace's `device` param); returns the
    metrics written to `<stem>.json`."""
    if out.exists() and not out.is_dir():
        raise VideoLMError(f"--out {out}: a file, not a folder")
    params = load_workspace_params(workspace)
    paths = {key: workspace / getattr(params.paths, key) for key in ("codebook", "model", "decoder", "codes")}
    outputs = {name: out / f"{video.stem}.{suffix}"
               for name, suffix in (("animation", animation_format), ("strip", "png"), ("metrics", "json"))}
    guard_outputs(STAGE, {"VIDEO": video, **{f"paths.{key}": path for key, path in paths.items()}},
                  {"--out": list(outputs.values())})
    if params.eval.threads:
        torch.set_num_threads(params.eval.threads)
    codebook = Codebook.load(paths["codebook"])
    if codebook.size != params.patches.size:
        raise VideoLMError(f"{paths['codebook']}: a codebook of {codebook.size}x{codebook.size} patches, but "
                           f"{workspace / 'params.yaml'} has patches.size={params.patches.size}: rerun the "
                           f"pipeline (dvc repro)")
    on = resolve_device(device or params.device)
    model = load_model(paths["model"], codebook)
    decoder = load_decoder(paths["decoder"], model, codebook, params.patches.stride) if paths["decoder"].exists() else None
    model.to(on)
    if decoder is not None:
        decoder.to(on)
    if decoder is None:
        print(f"{paths['decoder']}: no pixel decoder (the train_decoder stage makes it); the predictions shown are "
              f"the most likely codes, decoded by the codebook")
    def decoded():
        return decode_usable(video, params.data, params.data.min_size,
                             f"data.min_size={params.data.min_size} (the pipeline's limit)")

    stride = params.patches.stride
    codes = encode_stream(decoded(), codebook, stride, on)
    baselines = fit_baselines(load_code_grids(paths["codes"], codebook), codebook.k)
    rate = video_fps(video) / params.data.frame_stride  # of the frames kept; 0 where unknown
    fps = max(1, round(rate)) if rate else DEFAULT_FPS
    with closing(decoded()) as frames:
        metrics = predict_frames(model, frames, codes, codebook, stride, baselines, video.stem, decoder,
                                 params.eval.motion_threshold, outputs, fps)
    metrics.update({"video": str(video), "codebook_digest": codebook.digest,
                    "model_md5": hashlib.md5(paths["model"].read_bytes()).hexdigest()})  # as dvc.lock records it
    write_json(outputs["metrics"], metrics, STAGE)
    return metrics


def add_parser(commands) -> None:
    """`videolm predict VIDEO [--workspace DIR] [--out DIR] [--format gif|mp4]`."""
    parser = commands.add_parser("predict", help="the trained model's 1-step predictions of a video",
                                 description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", type=Path, help="the video file")
    parser.add_argument("--workspace", type=Path, default=Path("."),
                        help="the trained pipeline's folder: params.yaml and its outputs (default: .)")
    parser.add_argument("--out", type=Path, help="folder of the outputs (default: predictions/<video stem>)")
    parser.add_argument("--format", choices=("mp4", "gif"), default="mp4",
                        help="of the animation (default mp4, written as it goes; a gif is held whole until written)")
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"),
                        help="where the model runs (default: the workspace's `device` param)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    if args.video.is_dir():
        raise VideoLMError(f"{args.video}: a folder, not a video file")
    out = args.out or Path("predictions") / args.video.stem
    metrics = predict(args.video, args.workspace, out, args.format, args.device)
    shown = metrics["shown"]
    print(f"{out}: model {metrics['model_bits_per_patch']:.3f} bits per patch, copy-previous "
          f"{metrics['copy_previous_bits_per_patch']:.3f}; 1-step PSNR on moving pixels: {shown} "
          f"{as_db(metrics[f'psnr_moving_1step_{shown}'])}, copy-last {as_db(metrics['psnr_moving_1step_copy_last'])}")
