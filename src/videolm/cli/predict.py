"""`videolm predict VIDEO`: the trained model's 1-step predictions of one video it has not seen.

Why: the pipeline scores the model only on its own test split, and in aggregate. This command
shows what the model makes of any one video, seen exactly as the training videos were: decoded
with the workspace's `data` params and encoded with its codebook. Every frame t >= 1 is predicted
from all the real frames before it (the model's state carried through, as in evaluation), and
written next to the truth and the entropy of the predicted code distribution at each cell, with
the model's bits per patch against the copy-previous baseline's. The prediction shown is the
workspace's pixel decoder's frame (`paths.decoder`; from the predicted distribution, the model's
state and the frame before), or where there is none the most likely codes decoded by the
codebook; the JSON scores both against copying the frame before. Into --out go:

- `<stem>.gif` (or `.mp4`): truth | prediction | entropy, one frame per predicted frame;
- `<stem>.png`: up to 8 evenly spaced predicted frames, rows truth, prediction, entropy;
- `<stem>.json`: the numbers (sorted keys, nothing that changes from run to run).

Each file is written atomically and carries the `predict` mark (`videolm.io`): a file in the way
that the command did not make is refused, never replaced. The video is held in memory (its gray
frames, codes and predictions): this is for clips, not films. The copy-previous baseline is fit
on the workspace's training codes, read one video at a time (seconds here; minutes for a
UCF-101-sized workspace).
"""

from __future__ import annotations

import argparse
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

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
    prediction_animation,
    prediction_panels,
    prediction_strip,
    save_gif,
    save_mp4,
    save_png,
)
from videolm.evaluation.scoring import entropy_bits, score_part
from videolm.image_metrics import Pool, as_db, moving_mask
from videolm.io import guard_outputs, write_json
from videolm.model.build import load_model
from videolm.model.pixel_decoder import PixelDecoder, decode_prediction, load_decoder

STAGE = "predict"  # the mark on the files it writes
STRIP_FRAMES = 8  # predicted frames shown in the PNG
DEFAULT_FPS = 10  # of the animation, where the video does not say its frame rate


@dataclass
class Prediction:
    """A video's 1-step predictions: for each predicted frame t (>= 1), the truth and the
    prediction cropped to the patch grid (H', W'), and the entropy (bits) at each cell."""

    indices: list[int] = field(default_factory=list)  # of the predicted frames in the video, from 0
    truth: list[np.ndarray] = field(default_factory=list)
    predicted: list[np.ndarray] = field(default_factory=list)
    entropy: list[np.ndarray] = field(default_factory=list)


def predict_frames(model, frames: np.ndarray, codes: np.ndarray, codebook: Codebook, stride: int,
                   baselines: Baselines, name: str, decoder: PixelDecoder | None,
                   motion_threshold: float) -> tuple[dict, Prediction]:
    """Every frame t >= 1 of one video predicted from all the frames before it and scored, as the
    evaluation scores a test video (`score_part`). Returns the metrics and the `Prediction`.

    The prediction shown is the pixel decoder's frame (from the predicted distribution, its state
    and frame t - 1) or, without a decoder, the most likely code at every cell decoded by the
    codebook. Both are scored (PSNR / SSIM / sharpness, full and moving: pixels more than
    `motion_threshold` gray levels from frame t - 1), beside copying frame t - 1."""
    prediction = Prediction()
    pools = {method: Pool() for method in ("model", "model_pixels", "copy_last")
             if decoder is not None or method != "model_pixels"}
    bar = tqdm(total=len(codes) - 1, desc=f"predicting {name}", unit="frame")
    h, w = covered_shape(*codes.shape[1:], codebook.size, stride)  # the part the patch grid covers

    def keep(grid: CodeGrid, t: int, logp: torch.Tensor, state: torch.Tensor) -> None:
        truth, previous = frames[t, :h, :w].astype(np.float64), frames[t - 1, :h, :w].astype(np.float64)
        estimates = {"model": codebook.decode(logp.argmax(-1).cpu().numpy()[None], stride)[0],
                     "copy_last": previous}
        if decoder is not None:
            earlier = frames[max(t - 2, 0), :h, :w].astype(np.float64)
            flowed = extrapolate_flow(earlier, previous, 1)[0] if t >= 2 else previous
            estimates["model_pixels"] = decode_prediction(decoder, logp[None], state, previous, earlier=earlier,
                                                          flowed=flowed)
        moving = moving_mask(truth, previous, motion_threshold)
        for method, estimate in estimates.items():
            pools[method].add(truth, estimate, moving)
        prediction.indices.append(t)
        prediction.truth.append(frames[t, :h, :w])
        prediction.predicted.append(estimates["model_pixels" if decoder is not None else "model"])
        prediction.entropy.append(entropy_bits(logp).cpu().numpy())
        bar.update()

    with bar:
        scores = score_part(model, [CodeGrid(name, codes, train_end=0, val_end=0)], "test", baselines, keep)
    metrics = {"frames": len(frames), "frame_size": list(frames.shape[1:]), "grid": list(codes.shape[1:]),
               "patches_scored": scores.count, **scores.summary(),
               "model_entropy_bits_per_patch": float(np.mean(prediction.entropy)),
               "shown": "model_pixels" if decoder is not None else "model"}
    for method, pool in pools.items():
        metrics.update({f"{measure}_1step_{method}": value for measure, value in pool.result().items()})
    metrics["model_vs_copy_previous_bits"] = metrics["model_bits_per_patch"] / metrics["copy_previous_bits_per_patch"]
    return metrics, prediction


def write_outputs(outputs: dict[str, Path], prediction: Prediction, metrics: dict, codebook: Codebook, stride: int,
                  fps: int) -> None:
    """The animation (GIF or MP4, by its suffix), the PNG strip and the JSON metrics of a video's predictions."""
    top = max(max(float(e.max()) for e in prediction.entropy), 1e-9)  # bits: the colour scale's top
    panels = [prediction_panels(truth, predicted, entropy, codebook.size, stride, top)
              for truth, predicted, entropy in zip(prediction.truth, prediction.predicted, prediction.entropy)]
    animation = prediction_animation(panels, prediction.indices, metrics["frames"], top)
    if outputs["animation"].suffix == ".gif":
        save_gif(outputs["animation"], animation, STAGE, duration_ms=round(1000 / fps))
    else:
        save_mp4(outputs["animation"], animation, STAGE, fps)
    shown = sorted(set(np.linspace(0, len(panels) - 1, min(STRIP_FRAMES, len(panels))).round().astype(int)))
    title = f"{outputs['strip'].stem}: each frame predicted from the frames before it; entropy 0-{top:.1f} bits"
    save_png(outputs["strip"], prediction_strip([panels[i] for i in shown], [prediction.indices[i] for i in shown],
                                                title), STAGE)
    write_json(outputs["metrics"], metrics, STAGE)


def predict(video: Path, workspace: Path, out: Path, animation_format: str = "gif", device: str | None = None) -> dict:
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
    frames = np.stack(list(decode_usable(video, params.data, params.data.min_size,
                                         f"data.min_size={params.data.min_size} (the pipeline's limit)")))
    baselines = fit_baselines(load_code_grids(paths["codes"], codebook), codebook.k)

    stride = params.patches.stride
    codes = encode_frames(frames, codebook, stride, on)
    metrics, prediction = predict_frames(model, frames, codes, codebook, stride, baselines, video.stem, decoder,
                                         params.eval.motion_threshold)
    metrics.update({"video": str(video), "codebook_digest": codebook.digest,
                    "model_md5": hashlib.md5(paths["model"].read_bytes()).hexdigest()})  # as dvc.lock records it
    rate = video_fps(video) / params.data.frame_stride  # of the frames kept; 0 where unknown
    fps = max(1, round(rate)) if rate else DEFAULT_FPS
    write_outputs(outputs, prediction, metrics, codebook, stride, fps)
    return metrics


def add_parser(commands) -> None:
    """`videolm predict VIDEO [--workspace DIR] [--out DIR] [--format gif|mp4]`."""
    parser = commands.add_parser("predict", help="the trained model's 1-step predictions of a video",
                                 description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", type=Path, help="the video file")
    parser.add_argument("--workspace", type=Path, default=Path("."),
                        help="the trained pipeline's folder: params.yaml and its outputs (default: .)")
    parser.add_argument("--out", type=Path, help="folder of the outputs (default: predictions/<video stem>)")
    parser.add_argument("--format", choices=("gif", "mp4"), default="gif", help="of the animation")
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
