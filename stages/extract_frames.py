"""Stage `extract_frames`: decode every video of `data.dir` to gray uint8 frames (HDF5).

`metrics/frames.json` lists the skipped videos with their reasons; the last line printed says
how many were kept and skipped. With `shard.count` > 1 only the videos of shard `shard.index`
are decoded, and the metrics count that shard (docs/scale-out.md: "Across machines").
"""

import videolm  # noqa: F401 (first: it sets how OpenMP threads wait, before torch loads)

# isort: split

from pathlib import Path

from videolm.data.extract import extract_frames
from videolm.data.video import find_videos
from videolm.io import guard_outputs, write_json
from videolm.stage import run_stage


def main(params) -> str:
    data = params.data
    metrics = Path(params.paths.metrics) / "frames.json"
    guard_outputs("extract_frames", {"data.dir": data.dir}, {"paths.frames": params.paths.frames, "paths.metrics": metrics})
    result = extract_frames(find_videos(data.dir, data.extensions), params.paths.frames, data, params.seed,
                            params.workers, params.shard)
    kept, skipped = result.kept, result.skipped
    frames = sum(v.n_frames for v in kept)
    train = sum(v.train_end for v in kept)
    val = sum(v.val_end - v.train_end for v in kept)
    write_json(metrics, {
        "videos": len(kept), "frames": frames, "train_frames": train, "val_frames": val,
        "test_frames": frames - train - val, "split_rule": result.split_rule, "videos_skipped": len(skipped),
        "skipped": [{"video": s.video, "reason": s.reason} for s in sorted(skipped, key=lambda s: s.video)],
        **({"shard": params.shard.model_dump()} if params.shard.count > 1 else {})}, "extract_frames")
    return (f"{len(kept)} videos kept ({frames} frames), {len(skipped)} skipped"
            + (f" (reasons in {metrics})" if skipped else "")
            + (f", shard {params.shard.index} of {params.shard.count}" if params.shard.count > 1 else ""))


if __name__ == "__main__":
    run_stage(main)
