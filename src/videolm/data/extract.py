"""Frame extraction: videos -> the frames files (`data/frames.py`), one per video.

`extract_frames` maps `extract_video` over the listed videos in `workers` processes
(`map_in_order`; 1 = serially, in this process), taking their results in the videos'
order: each is kept (its frames file) or skipped with its reason (`Skipped`), so one bad file
among thousands costs only itself. The split is decided once every video is. With a `shard`
(docs/scale-out.md) only that shard's videos are decoded, into a folder of their own,
with the split an unsharded run gives them; `list_frames` reads a folder of shard folders as one.
"""

from __future__ import annotations

import hashlib
import json
import logging
from contextlib import closing
from dataclasses import dataclass, replace
from functools import partial
from itertools import chain
from pathlib import Path

from tqdm.contrib.logging import logging_redirect_tqdm

from videolm.config import DataConfig, ShardConfig
from videolm.data.frames import VideoFrames, write_frames
from videolm.data.parallel import map_in_order
from videolm.data.split import assign_videos, split_bounds, split_rule, ucf101_assignment
from videolm.data.video import Video, decode_usable, video_fps
from videolm.errors import UnusableVideo, VideoError
from videolm.io import ShardRecord, atomic_path, h5_writer, write_attrs, write_json, write_shard_record

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Skipped:
    """A listed video that was not extracted, and why: one entry of the stage's summary."""

    video: str  # path relative to data.dir
    reason: str


@dataclass(frozen=True)
class Extraction:
    """What `extract_frames` decided for every listed video, and the split rule it used."""

    kept: list[VideoFrames]
    skipped: list[Skipped]
    split_rule: str


def extract_video(video: Video, out_file: Path, cfg: DataConfig) -> VideoFrames:
    """Decode one video to its frames file, split by time; `UnusableVideo` if it cannot be used.

    The unit of work of `extract_frames`: it reads one video and depends on nothing else. Too
    small videos (`data.min_size`) are refused after their first frame, videos with fewer than
    2 frames before writing anything; a video that fails later leaves no file behind.
    """
    if video.problem:
        raise UnusableVideo(video.path, video.problem)
    try:
        frames = decode_usable(video.path, cfg, cfg.min_size, f"data.min_size={cfg.min_size}")
        with closing(frames):
            first = next(frames)  # refuses an unusable video before anything is read of it or written
            attrs = {"source": video.source, "fps": video_fps(video.path), "split_rule": "time", "part": "time"}
            return write_frames(out_file, chain([first], frames), lambda n: split_bounds("time", n, cfg), attrs)
    except BaseException:
        out_file.unlink(missing_ok=True)
        raise


def extract_frames(videos: list[Video], out_dir: str | Path, cfg: DataConfig, seed: int,
                   workers: int = 1, shard: ShardConfig | None = None) -> Extraction:
    """Decode `videos` to `out_dir/<video_id>.h5` in `workers` processes (0 = one per core, 1 =
    here, one after the other), skipping the unusable ones; the same files whatever `workers`.

    An unusable video (`UnusableVideo`) gets one warning line and a `Skipped` entry, or with
    `data.on_error=fail` stops everything with its name and reason; the others are unaffected.
    Every video is written split by time; the split rule and a split by video are decided
    once all videos are, from the usable ones only (`auto` counts them, `video` permutes them),
    so that a broken file beside them changes nothing: the split is the one the folder would
    get without it. Assigning over all listed videos instead would let a skipped video take a
    test or validation slot, or leave a part empty. The UCF-101 lists name each video's part,
    so videos not in them are skipped before decoding.

    With `shard` (count > 1), `videos` is still every listed video, but only those of the
    shard are decoded (`ShardConfig.takes`), and `out_dir` gets a shard record. Each video's
    file is then the one an unsharded run writes: the split is decided before decoding, from
    what every shard knows alike, the listed videos less those refused while listing or left
    out of the UCF-101 lists. That is the unsharded split exactly when no other video turns out
    unusable while decoding, which no shard can know of another's videos. It matters only to
    the split by video (`video`, or `auto` with enough videos): a video of its own that turns
    out unusable then stops the shard, naming it, even with `data.on_error=skip`, rather than
    leave the shards with another split than an unsharded run's. With `time` and `ucf101` each
    video's part depends on itself only, and an unusable video is skipped as unsharded.
    """
    shard = shard or ShardConfig()
    listed = {video.video_id: video for video in videos}
    unlisted = set(listed) - set(ucf101_assignment(videos, cfg)) if cfg.split == "ucf101" else set()
    mine = [video for video in videos if shard.takes(video.source)]
    if not mine:
        raise VideoError(f"shard.index={shard.index}: none of the {len(videos)} videos of data.dir={cfg.dir!r} is in "
                         f"this shard of shard.count={shard.count} (a video's shard is a hash of its path): use "
                         f"fewer shards")
    basis = [video for video in videos if not video.problem and video.video_id not in unlisted]
    rule = split_rule(cfg, len(basis)) if shard.count > 1 else None
    kept, skipped = [], []
    with atomic_path(out_dir, "extract_frames") as tmp_dir, logging_redirect_tqdm():
        tmp_dir.mkdir()
        extract = partial(_extract_listed, tmp_dir, cfg, frozenset(unlisted))
        with closing(map_in_order(extract, mine, workers, "extract_frames")) as results:
            for video, result in zip(mine, results):
                try:
                    kept.append(result.result())
                except UnusableVideo as err:
                    if cfg.on_error == "fail":
                        raise VideoError(f"{video.source}: {err.reason} (data.on_error=fail)") from None
                    if rule == "video" and not video.problem and video.video_id not in unlisted:
                        raise VideoError(f"{video.source}: {err.reason}; every shard of shard.count={shard.count} "
                                         f"counted it in the split by video (data.split={cfg.split}), so skipping "
                                         f"it would not give an unsharded run's split: move it out of data.dir (or "
                                         f"give it a leading '.'), then rerun every shard") from None
                    log.warning("skipped %s: %s", video.source, err.reason)
                    skipped.append(Skipped(video.source, err.reason))
        if not kept:
            shown = "; ".join(f"{s.video}: {s.reason}" for s in skipped[:3]) + ("; ..." if len(skipped) > 3 else "")
            where = f" in shard.index={shard.index} of shard.count={shard.count}" if shard.count > 1 else ""
            raise VideoError(f"data.dir={cfg.dir!r}: no usable video{where}, {len(skipped)} skipped ({shown})")
        if shard.count == 1:
            rule = split_rule(cfg, len(kept))
            basis = [listed[v.video_id] for v in kept]
        if rule != "time":
            parts = assign_videos(basis, cfg, seed)
            kept = [_relabel(v, rule, parts[v.video_id], cfg) for v in kept]
        write_json(tmp_dir / "videos.json", [{"video": v.source, "frames": v.n_frames, "train_end": v.train_end,
                                              "val_end": v.val_end} for v in kept], "extract_frames")
        if shard.count > 1:
            write_shard_record(tmp_dir, ShardRecord(shard.index, shard.count, listing_digest(videos, cfg, seed)),
                               "extract_frames")
    return Extraction([replace(v, path=Path(out_dir) / v.path.name) for v in kept], skipped, rule)


def listing_digest(videos: list[Video], cfg: DataConfig, seed: int) -> str:
    """What the shards of one run share: every listed video, the data params (but the folder's
    name) and the seed; a shard record's `of`, so that shards of different runs are not mixed."""
    listing = {"videos": [v.source for v in videos], "data": cfg.model_dump(exclude={"dir"}), "seed": seed}
    return hashlib.sha1(json.dumps(listing, sort_keys=True).encode()).hexdigest()


def _extract_listed(out_dir: Path, cfg: DataConfig, unlisted: frozenset[str], video: Video) -> VideoFrames:
    """`extract_video` to `out_dir/<video_id>.h5`, refusing the videos the UCF-101 lists leave out:
    the unit of work `extract_frames` hands to its worker processes (a top-level function, so
    that they can be sent it)."""
    if video.video_id in unlisted:
        raise UnusableVideo(video.path, f"not in the UCF-101 split lists of data.ucf101_list={cfg.ucf101_list}")
    return extract_video(video, out_dir / f"{video.video_id}.h5", cfg)


def _relabel(video: VideoFrames, rule: str, part: str, cfg: DataConfig) -> VideoFrames:
    """Give a frames file written split by time its part of a split by whole videos."""
    train_end, val_end = split_bounds(part, video.n_frames, cfg)
    with h5_writer(video.path, "r+") as f:
        write_attrs(f, {"split_rule": rule, "part": part, "train_end": train_end, "val_end": val_end})
    return replace(video, train_end=train_end, val_end=val_end)


