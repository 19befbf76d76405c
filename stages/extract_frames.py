"""Stage `extract_frames`: decode every video of `data.dir` to gray uint8 frames (HDF5)."""

from pathlib import Path

from videolm.cli import run_stage
from videolm.frames import extract_frames
from videolm.io import write_json
from videolm.video import find_videos, split_rule


def main(params) -> None:
    videos = find_videos(params.data.dir, params.data.extensions)
    rows = extract_frames(videos, params.paths.frames, params.data, params.seed)
    frames = sum(r["frames"] for r in rows)
    train = sum(r["train_end"] for r in rows)
    val = sum(r["val_end"] - r["train_end"] for r in rows)
    write_json(Path(params.paths.metrics) / "frames.json", {
        "videos": len(rows), "frames": frames, "train_frames": train, "val_frames": val,
        "test_frames": frames - train - val, "split_rule": split_rule(params.data, len(videos))})


if __name__ == "__main__":
    run_stage(main)
