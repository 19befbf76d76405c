"""Stage `extract_frames`: decode every video of `data.dir` to gray uint8 frames (HDF5)."""

from pathlib import Path

from videolm.cli import run_stage
from videolm.frames import extract_frames
from videolm.io import guard_outputs, write_json
from videolm.video import find_videos, split_rule


def main(params) -> None:
    metrics = Path(params.paths.metrics) / "frames.json"
    guard_outputs("extract_frames", {"data.dir": params.data.dir},
                  {"paths.frames": params.paths.frames, "paths.metrics": metrics})
    videos = find_videos(params.data.dir, params.data.extensions)
    written = extract_frames(videos, params.paths.frames, params.data, params.seed)
    frames = sum(v.n_frames for v in written)
    train = sum(v.train_end for v in written)
    val = sum(v.val_end - v.train_end for v in written)
    write_json(metrics, {
        "videos": len(written), "frames": frames, "train_frames": train, "val_frames": val,
        "test_frames": frames - train - val, "split_rule": split_rule(params.data, len(videos))}, "extract_frames")


if __name__ == "__main__":
    run_stage(main)
