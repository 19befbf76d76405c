"""`videolm info`: what a workspace holds, in a few lines: its params digest, its data, codebook,
model and pixel decoder (or which stage makes each one missing), and its headline metrics."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from videolm.cli.workspace import load_workspace_params
from videolm.codes.codebook import Codebook
from videolm.data.frames import list_frames
from videolm.model.checkpoint import Checkpoint, DecoderCheckpoint

HEADLINE = {"eval.json": ["model_perplexity", "model_bits_per_patch", "copy_previous_perplexity",
                          "gen_psnr_moving_model_pixels_h1", "gen_psnr_moving_copy_last_h1", "gen_psnr_moving_flow_h1"],
            "train.json": ["best_epoch", "val_perplexity", "parameters"]}


def add_parser(commands) -> None:
    parser = commands.add_parser("info", help="what a workspace holds: params, codebook, model, metrics",
                                 description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", type=Path, default=Path("."),
                        help="the pipeline's folder: params.yaml and its outputs (default: .)")
    parser.set_defaults(run=lambda args: print("\n".join(describe(args.workspace))))


def describe(workspace: Path) -> list[str]:
    """One line per part of the workspace."""
    params = load_workspace_params(workspace)
    digest = hashlib.sha256(json.dumps(params.model_dump(), sort_keys=True).encode()).hexdigest()[:16]
    lines = [f"workspace  {workspace.resolve()}", f"params     {digest} (sha256 of the validated params.yaml)"]
    paths = params.paths
    frames_dir = workspace / paths.frames
    if frames_dir.is_dir():
        videos = list_frames(frames_dir)
        lines.append(f"frames     {len(videos)} videos, {sum(v.n_frames for v in videos)} frames in {paths.frames}")
    else:
        lines.append(f"frames     missing: {paths.frames} (the extract_frames stage makes it)")
    codebook_path = workspace / paths.codebook
    if codebook_path.is_file():
        codebook = Codebook.load(codebook_path)
        lines.append(f"codebook   k={codebook.k}, {codebook.size}x{codebook.size} patches, digest {codebook.digest}")
    else:
        lines.append(f"codebook   missing: {paths.codebook} (the fit_codebook stage makes it)")
    for name, path, kind, stage in (("model", paths.model, Checkpoint, "train"),
                                    ("decoder", paths.decoder, DecoderCheckpoint, "train_decoder")):
        if (workspace / path).is_file():
            weights = getattr(kind.load(workspace / path), name)
            size = sum(tensor.numel() for tensor in weights.values())
            lines.append(f"{name:<10} {path}: {size} weights, md5 {_md5(workspace / path)}")
        else:
            lines.append(f"{name:<10} missing: {path} (the {stage} stage makes it)")
    for file, keys in HEADLINE.items():
        path = workspace / paths.metrics / file
        if path.is_file():
            metrics = json.loads(path.read_text())
            shown = ", ".join(f"{key} {metrics[key]:.6g}" for key in keys if key in metrics)
            lines.append(f"{file:<10} {shown}")
    return lines


def _md5(path: Path) -> str:
    """As dvc.lock records it."""
    return hashlib.md5(path.read_bytes()).hexdigest()
