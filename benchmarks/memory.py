"""Peak memory of the `extract_frames` and `encode` stages on a video and on the same video 4x longer.

Both stages stream (frames are decoded, written, read and encoded a block at a time), so their
peak resident set size should not grow with a video's length: the 4x video's peak over the 1x
video's is the check, 1.00x when flat. Each stage runs as the pipeline runs it, as
`python stages/<stage>.py key=value ...` in a subprocess of its own, from the project root
(stages read `./params.yaml`) with every path pointed into a temporary folder; the peak is that
of its largest process, exact (`measure.py`: `run_stage` and why it launches stages as it does).

`encode`'s peak varies from run to run, and tends higher on a longer video: glibc's heap, whose
mmap threshold adapts as the large per-chunk temporaries are freed, fragments differently each
run and over more chunks. With the threshold fixed (`MALLOC_MMAP_THRESHOLD_=1000000`) the same
runs peak alike whatever the length: what the stage holds is flat. Hence the median and
min..max of repeats, to read the ratio by.

The codebook `encode` needs is fitted once in this process with the project's own API, small
(`K`, otherwise `params.yaml`'s patch size and seed): its size sets a fixed part of encode's
peak, not one that grows with the video.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from measure import ROOT, run_stage
from synthetic import synthetic_video

from videolm.codes.codebook import Codebook
from videolm.codes.sampling import sample_training_patches
from videolm.config import CodebookConfig, load_params
from videolm.data.frames import list_frames

SIZES = {"smallest": ((64, 48), 20), "small": ((320, 240), 100), "full": ((768, 576), 200)}  # frame size, frames
LONGER = 4  # the longer video plays the same frames this many times over
K = 256  # codebook size


def peak_rss_mib(stage: str, overrides: dict[str, Path | float], log: Path) -> float:
    """Run `stages/<stage>.py` with `overrides` (its output to `log`) and return its peak RSS in MiB."""
    args = [f"{key}='{value}'" if isinstance(value, Path) else f"{key}={value}" for key, value in overrides.items()]
    return run_stage(ROOT, stage, args, log).rss


def bench_memory(size: str, repeats: int = 1) -> list[dict]:
    """Rows for `run.report`: each stage's peak RSS on the 4x longer video against the 1x video,
    the median and min..max of `repeats` runs of each."""
    (width, height), n_frames = SIZES[size]
    lengths = {"1x": n_frames, "4x": LONGER * n_frames}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)

        def peaks_of(stage: str, overrides) -> dict[str, list[float]]:
            """Peaks of `stage` on each video; `overrides(name)` gives its paths for video `name`."""
            return {name: [peak_rss_mib(stage, {**overrides(name), "paths.metrics": tmp / "metrics"},
                                        tmp / "stage.log") for _ in range(repeats)] for name in lengths}

        for name, frames in lengths.items():
            (tmp / f"videos_{name}").mkdir()
            synthetic_video(tmp / f"videos_{name}" / "clip.mp4", (width, height), n_frames, loops=frames // n_frames)
        peaks = {"extract_frames": peaks_of("extract_frames", lambda name: {
            "data.dir": tmp / f"videos_{name}", "data.scale": 1.0, "paths.frames": tmp / f"frames_{name}"})}
        params = load_params(ROOT)
        sample = sample_training_patches(list_frames(tmp / "frames_1x"), 4 * K, K, params.patches.size, params.seed)
        Codebook.fit(sample, CodebookConfig(k=K), params.seed).save(tmp / "codebook.h5")
        peaks["encode"] = peaks_of("encode", lambda name: {
            "paths.frames": tmp / f"frames_{name}", "paths.codebook": tmp / "codebook.h5",
            "paths.codes": tmp / f"codes_{name}"})
    raw_mib = lengths["4x"] * width * height / 2**20
    return [{"name": f"{stage} peak RSS, {width}x{height}, {lengths['4x']} frames", "unit": "MiB",
             "ours": statistics.median(peak["4x"]), "ours_range": (min(peak["4x"]), max(peak["4x"])),
             "ref_name": f"same stage, the 1x video ({n_frames} frames)", "ref": statistics.median(peak["1x"]),
             "ref_range": (min(peak["1x"]), max(peak["1x"])),
             "note": f"{n_frames} and {lengths['4x']} frames; the 4x video's gray frames are {raw_mib:.1f} MiB "
                     f"(what holding them whole would add); 1.00x = flat, within the runs' spread"}
            for stage, peak in peaks.items()]
