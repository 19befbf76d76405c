"""Encoding every video of a frames folder: `encode_videos`, the work of the encode stage.

It maps `codes.encode_video` over the frames files in `workers` processes
(`parallel.map_in_order`; 1 = serially, in this process), one code file per video, and adds up
their squared errors in the videos' order, so the sums are the same floats whatever `workers`.
`shard_videos` picks the videos of one shard (docs/scale-out.md: "Across machines").
A module of its own, not part of `codes.py`: training and evaluation read code grids through
`codes.py` and need none of this.
"""

from __future__ import annotations

import hashlib
from contextlib import closing
from functools import partial
from pathlib import Path

from videolm.codes.codebook import Codebook
from videolm.codes.grids import encode_video
from videolm.config import ShardConfig
from videolm.data.frames import VideoFrames
from videolm.data.parallel import map_in_order
from videolm.errors import VideoLMError
from videolm.io import ShardRecord, read_shard_record


def encode_videos(videos: list[VideoFrames], codebook: Codebook, stride: int, chunk_frames: int,
                  out_dir: str | Path, workers: int = 1, device: str = "cpu") -> tuple[float, int, float, int]:
    """Encode `videos` to `out_dir/<video_id>.h5` in `workers` processes (0 = one per core), each
    searching on `device` (on a GPU: the processes read and cut patches while others search);
    returns the sums of `encode_video` (squared error and pixels, all frames and test frames)."""
    totals = [0.0, 0, 0.0, 0]
    encode = partial(_encode_into, Path(out_dir), codebook, stride, chunk_frames, device)
    with closing(map_in_order(encode, videos, workers, "encode")) as results:
        for result in results:
            totals = [a + b for a, b in zip(totals, result.result())]
    sq_all, n_all, sq_test, n_test = totals
    return sq_all, n_all, sq_test, n_test


def _encode_into(out_dir: Path, codebook: Codebook, stride: int, chunk_frames: int, device: str,
                 video: VideoFrames) -> tuple[float, int, float, int]:
    """`encode_video` to `out_dir/<video_id>.h5`: the unit of work handed to the worker processes
    (a top-level function, so that they can be sent it)."""
    return encode_video(video, codebook, stride, chunk_frames, out_dir / f"{video.video_id}.h5", device)


def shard_videos(videos: list[VideoFrames], frames_dir: str | Path,
                 shard: ShardConfig) -> tuple[list[VideoFrames], ShardRecord | None]:
    """The videos of `frames_dir` (`videos`, all of them) that an encode run with `shard` takes,
    and the shard record of its output (None: not a shard).

    Reading one shard folder of `extract_frames`, encode is that shard: it takes all of its
    videos and its record (`shard` may name the same shard, or be left at count 1). With
    `shard.count` > 1 over any other frames folder (unsharded, or the folder of every shard) it
    takes the videos of that shard by the hash `extract_frames` uses, so both agree on them.
    """
    record = read_shard_record(frames_dir)
    if record is not None:
        if shard.count > 1 and (shard.index, shard.count) != (record.index, record.count):
            raise VideoLMError(f"shard.index={shard.index}, shard.count={shard.count}: paths.frames="
                               f"{str(frames_dir)!r} is shard {record.index} of {record.count} of extract_frames "
                               f"already: leave shard at its default, or name the same shard")
        return videos, record
    if shard.count == 1:
        return videos, None
    mine = [video for video in videos if shard.takes(video.source)]
    if not mine:
        raise VideoLMError(f"shard.index={shard.index}: none of the {len(videos)} videos of paths.frames="
                           f"{str(frames_dir)!r} is in this shard of shard.count={shard.count} (a video's shard is a "
                           f"hash of its path): use fewer shards")
    of = hashlib.sha1("\n".join(video.source for video in videos).encode()).hexdigest()
    return mine, ShardRecord(shard.index, shard.count, of)
