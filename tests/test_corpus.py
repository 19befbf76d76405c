"""A corpus of good, bad and odd video files, made in tmp_path, through the extract_frames stage.

`CASES` is the table: one file (or folder, or link) that a folder of downloads or UCF-101 may
hold, how it is made, and what must become of it: kept with its frames, skipped with a reason,
or ignored without a word. The whole folder goes through the stage once, as a user runs it;
each row is then checked against the frames written, the warnings and `metrics/frames.json`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import av
import cv2
import numpy as np
import pytest
from conftest import moving_frames, write_video

from videolm.config import DataConfig
from videolm.data.extract import extract_frames
from videolm.data.frames import list_frames
from videolm.data.split import assign_videos
from videolm.data.video import decode_gray, find_videos
from videolm.errors import VideoError

ROOT = Path(__file__).resolve().parents[1]
N = 12  # frames of every corpus video
SCALE = 0.5  # data.scale of the corpus run: the 48x64 frames become 24x32


def encode(path: Path, frames: np.ndarray, codec: str = "mpeg4", pix_fmt: str = "yuv420p", options=None,
           rotation: int = 0, pts: list[int] | None = None) -> None:
    """What conftest's `write_video` leaves fixed: the pixel format, container options (e.g.
    `movflags`), a display-matrix rotation, and timestamps with gaps (`pts`)."""
    with av.open(str(path), "w", options=options or {}) as container:
        stream = container.add_stream(codec, rate=25)
        stream.height, stream.width = frames[0].shape
        stream.pix_fmt = pix_fmt
        if rotation:
            stream.set_display_rotation(rotation)
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="gray")
            frame.pts = index if pts is None else pts[index]
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


# ---------------------------------------------------------------- how each file is made


def good(codec: str = "mpeg4", n: int = N) -> Callable[[Path], None]:
    return lambda path: write_video(path, moving_frames(seed=len(path.name), n_frames=n), codec=codec)


def unusual(**kwargs) -> Callable[[Path], None]:
    return lambda path: encode(path, moving_frames(n_frames=N), **kwargs)


def cut(make: Callable[[Path], None], at: float = 0.5) -> Callable[[Path], None]:
    """A file copied or downloaded only up to `at` of its length."""
    def make_cut(path: Path) -> None:
        make(path)
        data = path.read_bytes()
        path.write_bytes(data[:int(len(data) * at)])
    return make_cut


def damaged(make: Callable[[Path], None]) -> Callable[[Path], None]:
    """300 zero bytes in the middle of the file (a bad sector, a bad copy)."""
    def make_damaged(path: Path) -> None:
        make(path)
        data = bytearray(path.read_bytes())
        data[len(data) // 2:len(data) // 2 + 300] = bytes(300)
        path.write_bytes(bytes(data))
    return make_damaged


def content(data: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(data)


def link(target: str) -> Callable[[Path], None]:
    return lambda path: path.symlink_to(target)


def audio_only(path: Path) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(4):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def size_change(path: Path) -> None:
    """Two MPEG-PS files of different frame sizes joined byte-wise: a stream that changes size."""
    frames = moving_frames(n_frames=N)
    parts = [write_video(path.with_name(f"part{i}.mpg"), part, codec="mpeg2video")
             for i, part in enumerate([frames[:6], frames[6:, :32, :48]])]
    path.write_bytes(b"".join(part.read_bytes() for part in parts))
    for part in parts:
        part.unlink()


# ---------------------------------------------------------------- the table


@dataclass(frozen=True)
class Case:
    path: str  # relative to the corpus folder (data.dir)
    make: Callable[[Path], None]
    frames: int = 0  # kept: this many frames
    shape: tuple[int, int] = (24, 32)  # kept: (H, W) after data.scale
    skipped: str = ""  # skipped: a regex its reason matches
    # neither frames nor skipped: ignored (not a video, not reported)


CASES = [
    # good videos, in the containers and forms a folder of clips holds
    Case("good.mp4", good(), frames=N),
    Case("good.avi", good(), frames=N),
    Case("good.mkv", good("libx264"), frames=N),
    Case("good.webm", good("libvpx-vp9"), frames=N),
    Case("good.mpg", good("mpeg2video"), frames=N),
    Case("UPPER.MP4", good(), frames=N),
    Case("sub/deeper/clip.mov", good(), frames=N),
    Case("folder.mp4/inside.mp4", good(), frames=N),  # a folder named like a video is searched
    Case("link.mp4", link("good.mp4"), frames=N),
    Case("faststart.mp4", unusual(options={"movflags": "+faststart"}), frames=N),
    Case("ten_bit.mkv", unusual(codec="ffv1", pix_fmt="yuv420p10le"), frames=N),
    Case("yuv444.mp4", unusual(codec="libx264", pix_fmt="yuv444p"), frames=N),
    Case("rotated.mp4", unusual(rotation=90), frames=N, shape=(32, 24)),  # turned upright
    # an AVI with 2 dropped frames: its header declares 14 frames, 12 are there (a good file)
    Case("dropped_frames.avi", unusual(pts=[t for t in range(N + 2) if t not in (5, 6)]), frames=N),
    # unusable: skipped, each with its reason
    Case("empty.mp4", content(b""), skipped=r"^an empty file \(0 bytes\)$"),
    Case("random.mp4", content(np.random.default_rng(0).bytes(4096)), skipped=r"^cannot open as a video \("),
    Case("notes.avi", content(b"not a video, just text\n"), skipped=r"^cannot open as a video \("),
    Case("audio_only.mp4", audio_only, skipped=r"^no video stream \(audio only\)$"),
    Case("cut_faststart.mp4", cut(unusual(options={"movflags": "+faststart"})),
         skipped=r"^truncated: its index refers to [\d,]+ bytes, the file has [\d,]+$"),
    Case("cut_moov_at_end.mp4", cut(good()), skipped=r"^cannot open as a video \(Invalid data"),
    Case("cut.mkv", cut(good()), skipped=r"^truncated: the video ends at 0\.\d\d s, its container "
                                                   r"declares 0\.48 s$"),
    Case("cut.avi", cut(good()), skipped=r"^truncated: its index refers to [\d,]+ bytes, the file has [\d,]+$"),
    Case("cut.mpg", cut(good("mpeg2video")), skipped=r"^damaged or truncated: corrupt data at frame \d+$"),
    Case("damaged.mp4", damaged(good("libx264")), skipped=r"^damaged: decoding failed at frame \d+ \("),
    Case("tiny.mkv", lambda path: encode(path, moving_frames(n_frames=N)[:, :17, :33], "ffv1", "gray"),
         skipped=r"^frames 16x8 after data\.scale=0\.5 are smaller than data\.min_size=16$"),
    Case("one_frame.mp4", good(n=1), skipped=r"^a single frame with data\.frame_stride=1, data\.max_frames=0: "
                                              r"at least 2 are needed"),
    Case("size_change.mpg", size_change,
         skipped=r"^the frame size changes mid-stream, from 64x48 to 48x32 at frame \d+$"),
    Case("rotated_45.mp4", unusual(rotation=45), skipped=r"^rotated by 45 degrees \(display matrix\)"),
    Case("broken_link.mp4", link("missing.mp4"), skipped=r"^a broken link \(to missing\.mp4\)$"),
    Case("linked_folder", link("sub"), skipped=r"^a link to a folder \(not followed\)$"),
    Case("fifo.mp4", lambda path: os.mkfifo(path), skipped=r"^not a regular file$"),
    # not videos: ignored without a word
    Case("._good.mp4", content(b"\x00\x05\x16\x07" + bytes(60))),  # macOS AppleDouble resource file
    Case("__MACOSX/._clip.mp4", content(b"\x00\x05\x16\x07" + bytes(60))),  # the same, from a zip
    Case(".hidden.mp4", good()),
    Case(".hidden/clip.mp4", good()),
    Case("download.mp4.part", content(b"\x00\x00\x00\x18ftypmp42" + bytes(100))),  # an unfinished download
    Case("notes.txt", content(b"a note\n")),
]
KEPT = [case for case in CASES if case.frames]
SKIPPED = [case for case in CASES if case.skipped]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("corpus") / "videos"
    for case in CASES:
        path = folder / case.path
        path.parent.mkdir(parents=True, exist_ok=True)
        case.make(path)
    return folder


@dataclass
class Run:
    stdout: list[str]
    warnings: list[str]
    metrics: dict
    metrics_path: Path
    frames: dict  # source -> VideoFrames


@pytest.fixture(scope="module")
def run(corpus, tmp_path_factory) -> Run:
    """The extract_frames stage over the corpus, as a user runs it (the repository's params.yaml)."""
    out = tmp_path_factory.mktemp("out")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "stages/extract_frames.py", f"data.dir='{corpus}'", f"data.scale={SCALE}",
                           f"paths.frames='{out / 'frames'}'", f"paths.metrics='{out / 'metrics'}'"],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    metrics_path = out / "metrics" / "frames.json"
    return Run(done.stdout.splitlines(), [line for line in done.stderr.splitlines() if line.startswith("WARNING")],
               json.loads(metrics_path.read_text()), metrics_path,
               {video.source: video for video in list_frames(out / "frames")})


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.path)
def test_every_file_is_decided(case, corpus, run):
    reasons = {entry["video"]: entry["reason"] for entry in run.metrics["skipped"]}
    warned = [line for line in run.warnings if line.startswith(f"WARNING: skipped {case.path}: ")]
    if case.frames:
        video = run.frames[case.path]
        assert (video.n_frames, video.frame_shape) == (case.frames, case.shape)
        np.testing.assert_array_equal(video.read(), np.stack(list(decode_gray(corpus / case.path, SCALE))))
        assert case.path not in reasons and not warned
    elif case.skipped:
        assert re.search(case.skipped, reasons[case.path]), reasons[case.path]
        assert warned == [f"WARNING: skipped {case.path}: {reasons[case.path]}"]
        assert case.path not in run.frames
    else:
        assert case.path not in run.frames and case.path not in reasons
        assert not [line for line in run.warnings if case.path in line]


def test_summary_lists_exactly_the_skipped(run):
    assert sorted(run.frames) == sorted(case.path for case in KEPT)
    assert run.metrics["skipped"] == sorted(run.metrics["skipped"], key=lambda entry: entry["video"])
    assert [entry["video"] for entry in run.metrics["skipped"]] == sorted(case.path for case in SKIPPED)
    assert run.metrics["videos_skipped"] == len(SKIPPED) == len(run.warnings)
    assert run.metrics["videos"] == len(KEPT)
    assert re.fullmatch(rf"extract_frames: {len(KEPT)} videos kept \({run.metrics['frames']} frames\), "
                        rf"{len(SKIPPED)} skipped \(reasons in {re.escape(str(run.metrics_path))}\) in \d+ s",
                        run.stdout[-1]), run.stdout[-1]


def test_split_counts_only_usable_videos(run, corpus):
    """14 usable videos (>= data.min_videos_for_video_split=10): split by video, over them only."""
    assert run.metrics["split_rule"] == "video"
    usable = [video for video in find_videos(corpus, DataConfig().extensions) if video.source in run.frames]
    parts = assign_videos(usable, DataConfig(split="video"), seed=0)
    for video in usable:
        frames = run.frames[video.source]
        expected = {"train": (frames.n_frames, frames.n_frames), "val": (0, frames.n_frames), "test": (0, 0)}
        assert (frames.train_end, frames.val_end) == expected[parts[video.video_id]], video.source


def load_stage():
    spec = importlib.util.spec_from_file_location("extract_frames_stage", ROOT / "stages" / "extract_frames.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    return stage


def test_on_error_fail_stops_at_the_first_unusable_video(corpus, tmp_path, monkeypatch, capsys):
    from videolm.stage import run_stage

    monkeypatch.chdir(ROOT)
    out = tmp_path / "frames"
    with pytest.raises(SystemExit) as stop:
        run_stage(load_stage().main, [f"data.dir='{corpus}'", f"data.scale={SCALE}", "data.on_error=fail",
                                      f"paths.frames='{out}'", f"paths.metrics='{tmp_path / 'metrics'}'"])
    assert stop.value.code == 2
    first = sorted(SKIPPED, key=lambda case: Path(case.path))[0]  # in the order videos are listed
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert line.startswith(f"error: {first.path}: ") and line.endswith(" (data.on_error=fail)"), line
    assert re.search(first.skipped, line[len(f"error: {first.path}: "):-len(" (data.on_error=fail)")])
    assert not out.exists() and not (tmp_path / "metrics").exists()


def test_no_usable_video_fails_saying_why(tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "notes.avi").write_text("not a video\n")
    good(n=1)(folder / "short.mp4")
    cfg = DataConfig(dir=str(folder))
    with pytest.raises(VideoError, match=r"no usable video, 3 skipped \(empty.mp4: an empty file \(0 bytes\); "
                                         r"notes.avi: cannot open as a video .*; short.mp4: a single frame"):
        extract_frames(find_videos(folder, cfg.extensions), tmp_path / "frames", cfg, seed=0)
    assert not (tmp_path / "frames").exists()


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_rotation_tag_turns_frames_upright(tmp_path, rotation):
    """The same stream without the tag, turned; and turned the way OpenCV's FFmpeg backend turns it."""
    frames = moving_frames(n_frames=3)
    encode(tmp_path / "plain.mp4", frames)
    encode(tmp_path / "tagged.mp4", frames, rotation=rotation)
    plain = np.stack(list(decode_gray(tmp_path / "plain.mp4")))
    tagged = np.stack(list(decode_gray(tmp_path / "tagged.mp4")))
    np.testing.assert_array_equal(tagged, np.rot90(plain, rotation // 90, axes=(1, 2)))
    ok, bgr = cv2.VideoCapture(str(tmp_path / "tagged.mp4")).read()
    assert ok and bgr.shape[:2] == tagged[0].shape
    assert np.abs(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(int) - tagged[0]).mean() < 3
