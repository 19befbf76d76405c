"""Finding videos, and checked streaming gray decode with PyAV.

Every listed video is decided by name: it is decoded completely and correctly, or refused with
an `UnusableVideo` whose `reason` says why (extraction then skips it or stops: `data.on_error`).
Hidden and resource files (`.x.mp4`, macOS's `._x.mp4`) and anything in a `.`-folder are not
videos and are ignored. A truncated or damaged stream is refused, never kept silently short:
`decode_gray` says how that is detected, and what it costs.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from contextlib import closing
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Iterator

import av
import cv2
import numpy as np

from videolm.config import DataConfig
from videolm.errors import UnusableVideo, VideoError


@dataclass(frozen=True)
class Video:
    path: Path  # absolute or relative to the working directory
    source: str  # path relative to data.dir, with forward slashes
    video_id: str  # file-name safe, unique within data.dir
    problem: str = ""  # why it cannot even be searched, found while listing (an unreadable folder, a link to one)


def find_videos(folder: str | Path, extensions: list[str]) -> list[Video]:
    """All files under `folder` (recursively) whose extension is in `extensions`, sorted.

    Names starting with '.' are skipped, files and folders alike: macOS's `._clip.mp4` resource
    forks and `.DS_Store`, `.git`, `.dvc`. What cannot be searched is listed with its `problem`,
    so that it is reported by name rather than silently missing: a folder that cannot be read,
    a link to a folder (not followed: a link back up would loop). Broken links and other odd
    files are listed as videos: decoding says what is wrong with them.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise VideoError(f"data.dir={str(folder)!r}: no such folder (expected a folder of videos)")
    exts = {"." + e.lower().lstrip(".") for e in extensions}
    found: dict[Path, str] = {}  # path -> problem, "" for a file to decode

    def unreadable(err: OSError) -> None:
        if Path(err.filename) == folder:
            raise VideoError(f"data.dir={str(folder)!r}: cannot read the folder ({err.strerror})")
        found[Path(err.filename)] = f"cannot read the folder ({err.strerror})"

    for root, dirs, files in os.walk(folder, onerror=unreadable):
        root = Path(root)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found.update({root / d: "a link to a folder (not followed)" for d in dirs if (root / d).is_symlink()})
        found.update({root / f: "" for f in files if not f.startswith(".") and Path(f).suffix.lower() in exts})
    if not found:
        raise VideoError(f"data.dir={str(folder)!r}: no video files with extensions {sorted(exts)}")
    paths = sorted(found)
    sources = [p.relative_to(folder).as_posix() for p in paths]
    ids = [video_id_of(s) for s in sources]
    clashes = {i for i in ids if ids.count(i) > 1}
    return [Video(p, s, f"{i}-{hashlib.sha1(s.encode()).hexdigest()[:8]}" if i in clashes else i, found[p])
            for p, s, i in zip(paths, sources, ids)]


def video_id_of(source: str) -> str:
    """A file-name safe id: the relative path without extension, '/' replaced by '__'.

    Where two sources give the same id (`clip.mp4` and `clip.avi`), `find_videos` appends a
    hash of each source to keep them apart.
    """
    stem = source.rsplit(".", 1)[0]
    return re.sub(r"[^\w.-]+", "_", stem.replace("/", "__"))


def output_size(width: int, height: int, scale: float) -> tuple[int, int]:
    return max(1, round(width * scale)), max(1, round(height * scale))


def decode_gray(path: str | Path, scale: float = 1.0, frame_stride: int = 1,
                max_frames: int = 0) -> Iterator[np.ndarray]:
    """Yield the frames of a video one at a time as upright uint8 gray (H, W) arrays.

    Streaming: memory does not grow with the video's length. Scaling happens inside
    libswscale while converting to gray, so full-size frames are never held in numpy.
    A rotation tag (the display matrix of phone videos) is applied, as players do; a frame
    size that changes mid-stream is refused, not squeezed to the first size.

    Raises `UnusableVideo` for a video that cannot be decoded completely and correctly, possibly
    after yielding the frames before the problem: a consumer must drop what it got. FFmpeg often
    returns a truncated file's first part without a word. Measured on tiny files cut at half
    their size, these checks catch every kind (tests/test_corpus.py):
    - the container's index points past the end of the file (an mp4/mov with its moov atom at
      the front, `movflags=+faststart`: its whole sample table survives the cut); checked
      before decoding;
    - a packet the demuxer flags corrupt (the partial last packet of a cut mp4, mov or AVI), a
      frame the decoder flags corrupt (errors it concealed: a cut MPEG-PS or TS), or an error
      the decoder raises;
    - a Matroska/WebM track ends before the DURATION its tags declare (a cut mkv or webm ends
      on a whole block: neither flag is set).
    Frame threading is off (slice threading only): with `thread_type = "AUTO"` the h264 decoder
    swallows its errors (an h264 faststart mp4 cut at half gave 12 of its 50 frames and no
    error; without frame threading the error is raised). The checks above catch the whole
    corpus either way, but the decoder's own errors are the broadest signal, so they are kept.
    Frame threading would speed up one long video on many cores; extraction decodes several
    videos at once instead.
    The declared frame count (`stream.frames`) is not compared: an AVI's header counts the
    empty chunks of dropped frames, so a good AVI that declares 14 frames holds 12 (the corpus
    has one), and the index check already covers the mp4/mov whose count is exact.
    """
    path = Path(path)
    first = None
    kept = 0
    for index, frame in enumerate(_checked_frames(path)):
        shape = (frame.width, frame.height, _quarter_turns(path, frame.rotation))
        if first is None:
            first = shape
        elif shape != first:
            raise UnusableVideo(path, f"the frame size changes mid-stream, from {_describe(*first)} to "
                                      f"{_describe(*shape)} at frame {index}")
        if index % frame_stride:
            continue
        width, height = output_size(frame.width, frame.height, scale)
        yield np.rot90(to_gray(frame, width, height), shape[2])
        kept += 1
        if max_frames and kept >= max_frames:
            return


# 8-bit pixel formats whose first plane is the luma (Y) plane, one byte per pixel.
LUMA_FIRST = {"gray", "nv12", "nv21", "yuv410p", "yuv411p", "yuv420p", "yuv422p", "yuv440p", "yuv444p",
              "yuvj411p", "yuvj420p", "yuvj422p", "yuvj440p", "yuvj444p"}


def decode_usable(path: str | Path, cfg: DataConfig, min_size: int, size_rule: str) -> Iterator[np.ndarray]:
    """`decode_gray` with the `data` params, refusing with `UnusableVideo`, at the first frame
    asked for, a video of fewer than 2 frames (the model predicts each next frame) or of frames
    smaller than `min_size` (`size_rule` names that limit in the message)."""
    with closing(decode_gray(path, cfg.scale, cfg.frame_stride, cfg.max_frames)) as frames:
        head = list(islice(frames, 2))
        if len(head) < 2:
            raise UnusableVideo(path, f"{'a single frame' if head else 'no frame'} with data.frame_stride="
                                      f"{cfg.frame_stride}, data.max_frames={cfg.max_frames}: at least 2 are needed "
                                      f"(the model predicts each next frame)")
        height, width = head[0].shape
        if min(height, width) < min_size:
            raise UnusableVideo(path, f"frames {width}x{height} after data.scale={cfg.scale} are smaller than "
                                      f"{size_rule}")
        yield from head
        yield from frames


def to_gray(frame: av.VideoFrame, width: int, height: int) -> np.ndarray:
    """The (height, width) uint8 gray picture of a frame, exactly as libswscale converts it.

    At the frame's own size the luma plane is read directly and mapped through `luma_table`
    (swscale's own gray conversion, which stretches limited-range "MPEG" luma, 16..235, to
    0..255) with OpenCV's vectorized `LUT`; the result is identical to
    `to_ndarray(format="gray")` and several times faster than swscale's unscaled YUV-to-gray
    path (`python benchmarks/run.py --only decode` measures it against ffmpeg). Scaled frames, and formats whose
    first plane is not 8-bit luma, go through swscale, whose scaled path is fast.
    """
    if (width, height) != (frame.width, frame.height) or frame.format.name not in LUMA_FIRST:
        return frame.to_ndarray(format="gray", width=width, height=height)
    plane = frame.planes[0]
    luma = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, :plane.width]
    return cv2.LUT(luma, luma_table(frame.format.name, frame.color_range))  # 7x numpy's table[luma]


@functools.cache
def luma_table(pixel_format: str, color_range: int) -> np.ndarray:
    """(256,) uint8: the gray value swscale gives each luma value of this format and range.

    Made by swscale itself from a frame holding every luma value once: at the same size its
    gray conversion is a per-pixel map of luma, so the table reproduces it exactly (a test
    compares the two on real video)."""
    frame = av.VideoFrame(256, 2, pixel_format)
    frame.color_range = color_range
    for plane in frame.planes:
        np.frombuffer(plane, np.uint8)[:] = 128  # neutral chroma
    np.frombuffer(frame.planes[0], np.uint8).reshape(2, -1)[:, :256] = np.arange(256)
    return frame.to_ndarray(format="gray")[0].copy()


def _checked_frames(path: Path) -> Iterator[av.VideoFrame]:
    """Every frame of the first video stream; `UnusableVideo` where it is truncated or damaged."""
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "SLICE"  # not frame threading: it hides decoding errors
        needed = max((entry.pos + entry.size for entry in stream.index_entries), default=0)
        if needed > (size := path.stat().st_size):
            raise UnusableVideo(path, f"truncated: its index refers to {needed:,} bytes, the file has {size:,}")
        decoded, end, step = 0, None, 0.0  # frames; the latest frame end and the longest step between ends, s
        try:
            for packet in container.demux(stream):
                frames = packet.decode()
                if packet.is_corrupt or any(frame.is_corrupt for frame in frames):
                    raise UnusableVideo(path, f"damaged or truncated: corrupt data at frame {decoded}")
                for frame in frames:
                    yield frame
                    decoded += 1
                    if frame.time is not None:
                        frame_end = frame.time + float(frame.duration * frame.time_base)
                        if end is not None:
                            step = max(step, frame_end - end)
                        end = frame_end if end is None else max(end, frame_end)
        except av.error.FFmpegError as err:
            raise UnusableVideo(path, f"damaged: decoding failed at frame {decoded} ({_why(err)})") from None
        # One step of slack: a last frame whose duration the container did not store ends one step early.
        declared, end = _tagged_duration(stream), end or 0.0
        if declared is not None and end < declared - step - 1e-3:
            raise UnusableVideo(path, f"truncated: the video ends at {end:.2f} s, its container declares "
                                      f"{declared:.2f} s")


def _open(path: Path) -> av.container.InputContainer:
    """The opened file, or `UnusableVideo` saying why not."""
    if not path.is_file():
        raise UnusableVideo(path, f"a broken link (to {os.readlink(path)})" if path.is_symlink() else
                                  "no such file" if not path.exists() else "not a regular file")
    if path.stat().st_size == 0:
        raise UnusableVideo(path, "an empty file (0 bytes)")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as err:
        raise UnusableVideo(path, f"cannot open as a video ({_why(err)})") from None
    if not container.streams.video:
        reason = "no video stream" + (" (audio only)" if container.streams.audio else "")
        container.close()
        raise UnusableVideo(path, reason)
    return container


def _why(err: Exception) -> str:
    """FFmpeg's or the OS's own words, without the file name they repeat."""
    return getattr(err, "strerror", None) or str(err)


def _quarter_turns(path: Path, rotation: float) -> int:
    """Counter-clockwise quarter turns (`np.rot90`) that make a frame with this display rotation upright.

    FFmpeg's rotation is the angle to turn the picture counter-clockwise for display, as
    OpenCV's FFmpeg backend does (checked: both give the same upright frames).
    """
    degrees = round(rotation)
    if degrees % 90:
        raise UnusableVideo(path, f"rotated by {degrees} degrees (display matrix): only multiples of 90 are handled")
    return degrees // 90 % 4


def _describe(width: int, height: int, turns: int) -> str:
    return f"{width}x{height}" + (f" rotated {90 * turns} degrees" if turns else "")


def _tagged_duration(stream) -> float | None:
    """Seconds in the track's DURATION tag: Matroska/WebM files from ffmpeg or mkvmerge carry one."""
    for key, value in stream.metadata.items():
        if key.split("-")[0].upper() == "DURATION":
            try:
                hours, minutes, seconds = value.split(":")
                return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
            except ValueError:
                return None
    return None


def video_fps(path: str | Path) -> float:
    with av.open(str(path)) as container:
        rate = container.streams.video[0].average_rate
        return float(rate) if rate else 0.0
