"""Benchmarks: each stage's hot path timed beside a reference tool, pair by pair, in one run.

    python benchmarks/run.py            # small sizes
    python benchmarks/run.py --full     # paper-scale sizes (k=10,000): the sizes RESULTS.md reports
    python benchmarks/run.py --smallest # what the smoke test runs
    python benchmarks/run.py --full --only stages --out /tmp/stages.md   # some pairs only (printed; --out: kept)

Every timing is the median (and min..max) of `--repeats` runs of the project's code and of its
reference on the same input, taken one after the other (in this process, or in processes of
their own where the setting compared is fixed per process), so the ratio compares like with
like on whatever machine runs it. Timings are not tests: nothing here asserts a speed.
Peak memory is taken the same way, each run a stage subprocess (`memory.py`).
Results go to `benchmarks/RESULTS.md` (or `--out`), with the machine's facts; the scale drill's
section of that file (`drill.py`: the whole pipeline on 200 clips, per stage) is kept. A run of
some pairs (`--only`) prints its table and writes a file only where `--out` names one, so it
never replaces the table of every pair.

Pairs (`--only` picks some):
- decode: `videolm.data.video.decode_gray` (PyAV, gray, scaled) against the ffmpeg CLI (the binary
  `imageio-ffmpeg` ships) writing the same gray frames to a pipe (`-pix_fmt gray`).
- encode: `videolm.codes.search.assign_codes` (torch, chunked) against faiss `IndexFlatL2.search`
  on the same normalized patches, with the share of identical codes (and on CUDA if present).
- codebook: `Codebook.fit`, MiniBatchKMeans and Lloyd, against `faiss.Kmeans` given the same
  time, on real patches of the sample videos: MSE ratio (`kmeans.py`).
- train: a training step with the chunked loss, as shipped, against the plain loss with
  OpenMP's default spinning threads, in processes of their own; GFLOP/s
  against a large matmul's (`training.py`).
- shared: training beside a busy process, and two trainings side by side, against one alone,
  with passive and with spinning OpenMP threads (`training.py`).
- memory: the `extract_frames` and `encode` stages, each run as a subprocess, on a video 4x
  longer against the same video (`memory.py`): a stage that streams has a ratio near 1.00x, within
  the spread of its repeats.
- stages: `extract_video` and `encode_video` at UCF-101's 320x240 against their hot paths
  alone (`stage_costs.py`): the per-frame rates the README's paper-scale estimate uses.
- workers: `extract_frames` over several clips with one worker per core against one worker
  (`stage_costs.py`).
- scoring: evaluation's scoring pass with 16 test videos in one forward pass against one video
  at a time, on UCF-101's grid (`scoring.py`).
"""

from __future__ import annotations

import videolm  # noqa: F401 (first: it sets how OpenMP threads wait, before torch loads)

# isort: split

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import faiss
import imageio_ffmpeg
import numpy as np
import torch
from kmeans import bench_codebook
from memory import bench_memory
from report import kept_section, machine, num, table
from scoring import bench_scoring
from stage_costs import bench_stages, bench_workers
from synthetic import synthetic_video
from training import bench_shared, bench_train

from videolm.codes.search import assign_codes, assign_codes_checked
from videolm.data.video import decode_gray

SIZES = {  # what each pair runs at each size (see the functions for the meaning of each number)
    "smallest": {"decode": ((128, 96), 8), "encode": (2_000, 64, 64), "codebook": (5_000, 64, 5),
                 "train": ([64], 2), "shared": (64, 2), "stages": (8, 64), "workers": (2, 8),
                 "scoring": (3, 6, 64, 3)},
    "small": {"decode": ((384, 288), 100), "encode": (100_000, 1_024, 64), "codebook": (100_000, 1_024, 10),
              "train": ([1_024], 10), "shared": (1_024, 20), "stages": (100, 1_024), "workers": (8, 100),
              "scoring": (16, 17, 1_024, 16)},
    "full": {"decode": ((768, 576), 200), "encode": (200_000, 10_000, 64), "codebook": (1_000_000, 10_000, 10),
             "train": ([10_000, 1_024], 10), "shared": (1_024, 25), "stages": (250, 10_000),
             "workers": (16, 250), "scoring": (16, 9, 10_000, 16)},
}


def timed(fn, repeats: int) -> tuple[float, float, float, object]:
    """(median, min, max) seconds of `repeats` calls of `fn`, and its last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times), max(times), result


def ffmpeg_gray(path: Path, size: tuple[int, int]) -> np.ndarray:
    """(T, H, W) uint8 frames from the ffmpeg CLI: decode, scale, convert to gray, pipe out."""
    width, height = size
    out = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "rawvideo",
                          "-pix_fmt", "gray", "-s", f"{width}x{height}", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(out, np.uint8).reshape(-1, height, width)


def bench_decode(size: tuple[int, int], n_frames: int, repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        video = synthetic_video(Path(tmp) / "clip.mp4", size, n_frames)
        ours = timed(lambda: np.stack(list(decode_gray(video))), repeats)
        ref = timed(lambda: ffmpeg_gray(video, size), repeats)
    a, b = ours[3].astype(np.int16), ref[3].astype(np.int16)
    agree = a.shape == b.shape
    return {"name": f"decode to gray, {size[0]}x{size[1]}, {n_frames} frames", "unit": "frames/s",
            "ours": n_frames / ours[0], "ours_range": (n_frames / ours[2], n_frames / ours[1]),
            "ref_name": "ffmpeg CLI -pix_fmt gray", "ref": n_frames / ref[0], "ref_range": (n_frames / ref[2], n_frames / ref[1]),
            "note": (f"frames differ by at most {int(np.abs(a - b).max())} gray levels, mean {np.abs(a - b).mean():.3f}"
                     if agree else f"frame counts differ: {a.shape} vs {b.shape}")}


def encode_problem(n: int, k: int, dim: int):
    """(patches (n, dim), centroids (k, dim), a faiss IndexFlatL2 holding the centroids): patches
    scattered around random centroids, as real patches lie around their codes."""
    rng = np.random.default_rng(0)
    centroids = rng.normal(size=(k, dim)).astype(np.float32)
    patches = (centroids[rng.integers(0, k, n)] + rng.normal(scale=0.5, size=(n, dim))).astype(np.float32)
    index = faiss.IndexFlatL2(dim)
    index.add(centroids)
    return patches, centroids, index


def bench_encode(n: int, k: int, dim: int, repeats: int) -> dict:
    patches, centroids, index = encode_problem(n, k, dim)
    ours = timed(lambda: assign_codes(patches, centroids), repeats)
    ref = timed(lambda: index.search(patches, 1)[1][:, 0], repeats)
    same = float((ours[3] == ref[3]).mean())
    gflop = 2 * n * k * dim / 1e9
    return {"name": f"encode, {n:,} patches, k={k:,}, d={dim}", "unit": "patches/s",
            "ours": n / ours[0], "ours_range": (n / ours[2], n / ours[1]),
            "ref_name": "faiss IndexFlatL2", "ref": n / ref[0], "ref_range": (n / ref[2], n / ref[1]),
            "note": f"identical codes: {same:.4%}; ours {gflop / ours[0]:.0f} GFLOP/s, faiss {gflop / ref[0]:.0f} GFLOP/s"}


def bench_encode_cuda(n: int, k: int, dim: int, repeats: int) -> list[dict]:
    """The encode pair on a GPU, when there is one: the checked search on CUDA (the CPU's codes)
    against faiss on the CPU."""
    if not torch.cuda.is_available():
        return []
    patches, centroids, index = encode_problem(n, k, dim)
    ours = timed(lambda: assign_codes_checked(patches, centroids, "cuda", chunk=16_384), repeats)
    ref = timed(lambda: index.search(patches, 1)[1][:, 0], repeats)
    return [{"name": f"encode on {torch.cuda.get_device_name()}, {n:,} patches, k={k:,}", "unit": "patches/s",
             "ours": n / ours[0], "ours_range": (n / ours[2], n / ours[1]), "ref_name": "faiss IndexFlatL2 (CPU)",
             "ref": n / ref[0], "ref_range": (n / ref[2], n / ref[1]),
             "note": f"identical codes: {float((ours[3] == ref[3]).mean()):.4%}"}]


def report(rows: list[dict], size: str, repeats: int, load_at_start: tuple[float, float, float]) -> str:
    lines = [f"# Benchmarks ({size} sizes, median of {repeats} runs; min..max in brackets)", ""]
    lines += table(["stage", "ours", "reference", "ratio (ours / reference; codebook: MSE)", "notes"],
                   [[r["name"], f"{num(r['ours'])} {r['unit']} [{num(r['ours_range'][0])}..{num(r['ours_range'][1])}]",
                     f"{r['ref_name']}: {num(r['ref'])} [{num(r['ref_range'][0])}..{num(r['ref_range'][1])}]",
                     f"{r.get('ratio', r['ours'] / r['ref']):.2f}x", r["note"]] for r in rows])
    libraries = [f"faiss {faiss.__version__}", f"PyAV {av.__version__}",
                 f"ffmpeg {imageio_ffmpeg.get_ffmpeg_version()}"]
    return "\n".join(lines + ["", "Machine:", ""] + [f"- {m}" for m in machine(libraries, load_at_start)]) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--full", action="store_const", const="full", dest="size")
    group.add_argument("--smallest", action="store_const", const="smallest", dest="size")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", help="comma-separated pairs to run (default: all): decode, encode, codebook, "
                                       "train, shared, memory, stages, workers, scoring")
    parser.add_argument("--out", type=Path, help="the table's file (default: RESULTS.md beside this script for a run "
                                                  "of every pair; a run with --only prints its table and writes "
                                                  "no file unless --out names one)")
    args = parser.parse_args(argv)
    load_at_start = os.getloadavg()
    size = args.size or "small"
    sizes, repeats = SIZES[size], args.repeats
    n_patches, k, passes = sizes["codebook"]
    pairs = {
        "decode": lambda: [bench_decode(*sizes["decode"], repeats)],
        "encode": lambda: [bench_encode(*sizes["encode"], repeats), *bench_encode_cuda(*sizes["encode"], repeats)],
        "codebook": lambda: [bench_codebook(n_patches, k, method, passes) for method in ("minibatch", "lloyd")],
        "train": lambda: bench_train(*sizes["train"]),
        "shared": lambda: bench_shared(*sizes["shared"]),
        "memory": lambda: bench_memory(size, repeats),
        "stages": lambda: bench_stages(*sizes["stages"], repeats, timed),
        "workers": lambda: bench_workers(*sizes["workers"], repeats, timed),
        "scoring": lambda: [bench_scoring(*sizes["scoring"], repeats, timed)],
    }
    chosen = args.only.split(",") if args.only else list(pairs)
    unknown = sorted(set(chosen) - set(pairs))
    if unknown:
        parser.error(f"--only: no pair named {', '.join(unknown)} (pairs: {', '.join(pairs)})")
    rows = [row for name in chosen for row in pairs[name]()]
    text = report(rows, size, args.repeats, load_at_start)
    out = args.out or (None if args.only else Path(__file__).with_name("RESULTS.md"))
    if out is not None:  # a partial run never replaces the committed table of every pair
        out.write_text(text + kept_section(out))
    print(text)


if __name__ == "__main__":
    main(sys.argv[1:])
