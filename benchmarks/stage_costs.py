"""Whole per-video stage functions at UCF-101's frame size, against their hot path alone: what
the paper-scale estimate in the README is built from.

- `extract_video` (decode, checks, gzip HDF5 writing) against `decode_gray` alone;
- `encode_video` (read frames, cut patches, nearest-centroid search, the rebuilt frames'
  error, HDF5 writing) against `assign_codes` alone on the same patches;
- `extract_frames` over several clips with one worker process per core against one worker.

The clip is the synthetic h264 texture of `synthetic.py` at 320x240; the codebook is k patches
of its frames (so the search sees patch-like centroids), in the pipeline's units.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from synthetic import synthetic_video

from videolm.codes.codebook import Codebook
from videolm.codes.grids import encode_video
from videolm.codes.patches import extract_patches, sample_patches
from videolm.codes.search import assign_codes
from videolm.config import DataConfig
from videolm.data.extract import extract_frames, extract_video
from videolm.data.parallel import worker_count
from videolm.data.video import Video, decode_gray

UCF101_SIZE = (320, 240)


def bench_stages(n_frames: int, k: int, repeats: int, timed) -> list[dict]:
    """Rows for `run.report`: frames/s of each stage function and of its hot path alone."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = synthetic_video(tmp / "clip.mp4", UCF101_SIZE, n_frames)
        video = Video(path, path.name, "clip")
        cfg = DataConfig(scale=1.0)
        out = tmp / "clip.h5"
        extract = timed(lambda: extract_video(video, out, cfg), repeats)
        decode = timed(lambda: list(decode_gray(path)), repeats)
        frames = extract[3]
        pixels = frames.read()
        std = float(pixels.std())
        atoms = sample_patches(pixels, k, 8, np.random.default_rng(0)) / std
        codebook = Codebook(atoms, std, 8)
        encode = timed(lambda: encode_video(frames, codebook, 8, 32, tmp / "codes.h5"), repeats)
        patches = extract_patches(pixels, 8, 8).reshape(-1, 64)
        search = timed(lambda: assign_codes(patches / std, codebook.centroids), repeats)
    width, height = UCF101_SIZE

    def row(name: str, ours, ref_name: str, ref) -> dict:
        return {"name": f"{name}, {width}x{height}, {n_frames} frames", "unit": "frames/s",
                "ours": n_frames / ours[0], "ours_range": (n_frames / ours[2], n_frames / ours[1]),
                "ref_name": ref_name, "ref": n_frames / ref[0], "ref_range": (n_frames / ref[2], n_frames / ref[1]),
                "note": "the whole per-video function against its hot path alone (ratio < 1: the rest's cost)"}

    return [row("extract_video (decode + gzip HDF5)", extract, "decode_gray alone", decode),
            row(f"encode_video, k={k:,} (patches, search, error, HDF5)", encode,
                f"assign_codes alone, {patches.shape[0] // n_frames:,} patches per frame", search)]


def bench_workers(n_videos: int, n_frames: int, repeats: int, timed) -> list[dict]:
    """`extract_frames` over `n_videos` clips at 320x240 with `workers=0` (one per core) against
    `workers=1` (in this process): the data stages' speed-up from their worker processes."""
    cores = worker_count(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "videos").mkdir()
        videos = [Video(synthetic_video(tmp / "videos" / f"clip{i}.mp4", UCF101_SIZE, n_frames), f"clip{i}.mp4",
                        f"clip{i}") for i in range(n_videos)]
        cfg = DataConfig(dir=str(tmp / "videos"), scale=1.0)
        ours = timed(lambda: extract_frames(videos, tmp / "frames_n", cfg, 0, workers=0), repeats)
        ref = timed(lambda: extract_frames(videos, tmp / "frames_1", cfg, 0, workers=1), repeats)
    total = n_videos * n_frames
    return [{"name": f"extract_frames, {n_videos} clips of {n_frames} frames at 320x240, {cores} workers",
             "unit": "frames/s", "ours": total / ours[0], "ours_range": (total / ours[2], total / ours[1]),
             "ref_name": "1 worker (in-process)", "ref": total / ref[0], "ref_range": (total / ref[2], total / ref[1]),
             "note": "worker start-up (spawn, imports) included"}]
