"""Finding videos, gray decoding with PyAV, the split rules, and frame extraction to HDF5."""

from __future__ import annotations

import os
import re
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import N_FRAMES, H, W, moving_frames, write_video

from videolm.codes.grids import CodeGrid
from videolm.config import DataConfig
from videolm.data.extract import extract_frames
from videolm.data.frames import VideoFrames, check_patch_fits, list_frames
from videolm.data.split import assign_videos, split_bounds, split_rule, time_split, ucf101_assignment
from videolm.data.video import LUMA_FIRST, decode_gray, find_videos, to_gray, video_fps, video_id_of
from videolm.errors import VideoError, VideoLMError

EXTS = DataConfig().extensions


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


# ---------------------------------------------------------------- find_videos


def test_find_videos_recursive_sorted_filtered(tmp_path):
    for name in ["b.mp4", "a.AVI", "sub/c.mkv", "sub/deeper/d.webm", "notes.txt", "sub/e.jpg", "sub/deeper/f"]:
        touch(tmp_path / name)
    videos = find_videos(tmp_path, ["mp4", "avi", "mkv", "webm"])
    sources = [v.source for v in videos]
    assert sources == ["a.AVI", "b.mp4", "sub/c.mkv", "sub/deeper/d.webm"]
    assert [v.video_id for v in videos] == ["a", "b", "sub__c", "sub__deeper__d"]
    assert all(v.path.is_file() for v in videos)
    assert videos[3].path == tmp_path / "sub" / "deeper" / "d.webm"


def test_find_videos_extension_filter(tmp_path):
    for name in ["a.mp4", "b.avi", "c.mkv"]:
        touch(tmp_path / name)
    assert [v.source for v in find_videos(tmp_path, [".avi"])] == ["b.avi"]
    assert [v.source for v in find_videos(tmp_path, ["MP4", "mkv"])] == ["a.mp4", "c.mkv"]


def test_video_ids_are_file_name_safe():
    vid = video_id_of("My Class/clip (1).v2.mp4")
    assert re.fullmatch(r"[\w.-]+", vid), vid
    assert "/" not in vid and " " not in vid


def test_find_videos_reports_unreadable_folders(tmp_path, monkeypatch):
    """Listed with the reason, not dropped. Simulated: tests run as root, where chmod does not
    stop reading."""
    touch(tmp_path / "ok.mp4")
    touch(tmp_path / "locked" / "x.mp4")
    scandir = os.scandir

    def refuse_locked(path):
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refuse_locked)
    videos = find_videos(tmp_path, EXTS)
    assert [(v.source, v.problem) for v in videos] == [("locked", "cannot read the folder (Permission denied)"),
                                                       ("ok.mp4", "")]


def test_find_videos_missing_folder(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(VideoError, match="nowhere"):
        find_videos(missing, EXTS)


def test_find_videos_empty_folder(tmp_path):
    empty = tmp_path / "empty_videos"
    empty.mkdir()
    touch(empty / "readme.txt")
    with pytest.raises(VideoError, match="empty_videos"):
        find_videos(empty, EXTS)


def test_video_ids_unique(tmp_path):
    for name in ["clip.mp4", "clip.avi", "a b.mp4", "a_b.mp4"]:
        touch(tmp_path / name)
    ids = [v.video_id for v in find_videos(tmp_path, EXTS)]
    assert len(set(ids)) == len(ids), ids


# ---------------------------------------------------------------- decode_gray


def test_decode_gray_matches_written(moving_video):
    written = moving_frames()
    decoded = np.stack(list(decode_gray(moving_video)))
    assert decoded.dtype == np.uint8
    assert decoded.shape == (N_FRAMES, H, W)
    err = np.abs(decoded.astype(np.int16) - written.astype(np.int16))
    assert err.mean() < 4, err.mean()
    # the motion survives: frame t+1 is frame t shifted by 8 px (compare away from the wrap)
    assert np.abs(decoded[5, :, 8:].astype(int) - decoded[4, :, :-8]).mean() < 6
    assert np.abs(decoded[5].astype(int) - decoded[4]).mean() > 20
    assert video_fps(moving_video) == pytest.approx(25)


def test_decode_gray_rgb_input(tmp_path):
    gray = moving_frames(seed=3, n_frames=4)
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    path = write_video(tmp_path / "rgb.mp4", rgb)
    decoded = np.stack(list(decode_gray(path)))
    assert decoded.shape == (4, H, W)
    assert np.abs(decoded.astype(int) - gray).mean() < 4


def test_decode_gray_scale(moving_video):
    frames = list(decode_gray(moving_video, scale=0.5))
    assert len(frames) == N_FRAMES
    assert frames[0].shape == (H // 2, W // 2) and frames[0].dtype == np.uint8
    big = next(decode_gray(moving_video, scale=1.5))
    assert big.shape == (72, 96)


def test_decode_gray_stride_and_max_frames(moving_video):
    full = np.stack(list(decode_gray(moving_video)))
    every3 = np.stack(list(decode_gray(moving_video, frame_stride=3)))
    assert len(every3) == len(range(0, N_FRAMES, 3))
    np.testing.assert_array_equal(every3, full[::3])
    first5 = np.stack(list(decode_gray(moving_video, frame_stride=2, max_frames=5)))
    assert len(first5) == 5
    np.testing.assert_array_equal(first5, full[0:10:2])


@pytest.mark.parametrize("pixel_format", sorted(LUMA_FIRST))
def test_luma_table_gives_swscales_gray_exactly(pixel_format):
    """The fast path (luma plane through a table) equals swscale's gray conversion byte for
    byte, for every format and color range it is used for; scaled frames go through swscale."""
    rng = np.random.default_rng(0)
    for color_range in (0, 1, 2):  # unspecified (treated as limited), limited ("MPEG"), full ("JPEG")
        frame = av.VideoFrame(48, 32, pixel_format)
        frame.color_range = color_range
        for plane in frame.planes:
            data = np.frombuffer(plane, np.uint8)
            data[:] = rng.integers(0, 256, data.size)
        np.testing.assert_array_equal(to_gray(frame, 48, 32), frame.to_ndarray(format="gray"))
        np.testing.assert_array_equal(to_gray(frame, 24, 16), frame.to_ndarray(format="gray", width=24, height=16))


def test_decode_gray_is_swscales_gray_on_real_video(moving_video):
    with av.open(str(moving_video)) as container:
        reference = np.stack([f.to_ndarray(format="gray") for f in container.decode(video=0)])
    np.testing.assert_array_equal(np.stack(list(decode_gray(moving_video))), reference)


def test_decode_gray_garbage_file(tmp_path):
    bad = tmp_path / "garbage.mp4"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(VideoError, match="garbage.mp4"):
        list(decode_gray(bad))


def test_decode_gray_missing_file(tmp_path):
    with pytest.raises(VideoError, match="absent.mp4"):
        list(decode_gray(tmp_path / "absent.mp4"))


# ---------------------------------------------------------------- split rules


@pytest.mark.parametrize("n", [1, 2, 3, 7, 10, 11, 100, 1001])
def test_time_split_bounds(n):
    train_end, val_end = time_split(n, 0.1, 0.2)
    assert 0 <= train_end <= val_end <= n


def test_time_split_fractions():
    assert time_split(100, 0.1, 0.2) == (70, 80)
    assert time_split(10, 0.1, 0.2) == (7, 8)
    assert time_split(1000, 0.25, 0.25) == (500, 750)


def test_split_rule_auto():
    cfg = DataConfig(split="auto", min_videos_for_video_split=10)
    assert split_rule(cfg, 9) == "time"
    assert split_rule(cfg, 10) == "video"
    assert split_rule(DataConfig(split="time"), 100) == "time"
    assert split_rule(DataConfig(split="ucf101"), 1) == "ucf101"


def make_videos(tmp_path, n):
    for i in range(n):
        touch(tmp_path / f"v{i:02d}.mp4")
    return find_videos(tmp_path, EXTS)


def test_assign_videos_by_video(tmp_path):
    videos = make_videos(tmp_path, 10)
    cfg = DataConfig(dir=str(tmp_path), split="video", val_fraction=0.1, test_fraction=0.2)
    parts = assign_videos(videos, cfg, seed=0)
    assert sorted(parts) == sorted(v.video_id for v in videos)
    assert set(parts.values()) == {"train", "val", "test"}
    counts = {p: list(parts.values()).count(p) for p in ("train", "val", "test")}
    assert counts == {"train": 7, "val": 1, "test": 2}
    assert assign_videos(videos, cfg, seed=0) == parts  # deterministic
    others = [assign_videos(videos, cfg, seed=s) for s in range(1, 6)]
    assert any(o != parts for o in others)  # the seed matters


def test_assign_videos_too_few(tmp_path):
    videos = make_videos(tmp_path, 2)
    cfg = DataConfig(dir=str(tmp_path), split="video")
    with pytest.raises(VideoError, match="leave no training video among the 2"):
        assign_videos(videos, cfg, seed=0)


CLASSES = ["ApplyEyeMakeup", "Archery"]
TEST_GROUPS = range(1, 4)
TRAIN_GROUPS = range(4, 11)


@pytest.fixture
def ucf_root(tmp_path):
    root = tmp_path / "UCF-101"
    train_lines, test_lines = [], []
    for label, cls in enumerate(CLASSES, 1):
        for g in range(1, 11):
            for c in (1, 2):
                rel = f"{cls}/v_{cls}_g{g:02d}_c{c:02d}.avi"
                touch(root / rel)
                if g in TEST_GROUPS:
                    test_lines.append(rel)
                else:
                    train_lines.append(f"{rel} {label}")
    touch(root / "Extra" / "v_Extra_g01_c01.avi")  # in no list
    lists = root / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "trainlist01.txt").write_text("\n".join(train_lines) + "\n")
    (lists / "testlist01.txt").write_text("\n".join(test_lines) + "\n")
    return root


def group_of(video_id: str) -> int:
    return int(re.search(r"_g(\d+)_c", video_id).group(1))


def test_ucf101_assignment(ucf_root):
    videos = find_videos(ucf_root, ["avi"])
    cfg = DataConfig(dir=str(ucf_root), split="ucf101", ucf101_list=1, val_fraction=0.3)
    parts = ucf101_assignment(videos, cfg)
    assert assign_videos(videos, cfg, seed=0) == parts
    assert "Extra__v_Extra_g01_c01" not in parts
    assert len(parts) == 40
    for vid, part in parts.items():
        if group_of(vid) in TEST_GROUPS:
            assert part == "test", vid
        else:
            assert part in ("train", "val"), vid
    groups = {p: {group_of(v) for v, q in parts.items() if q == p} for p in ("train", "val", "test")}
    assert groups["val"], "no validation videos"
    assert groups["train"], "no training videos"
    assert not groups["train"] & groups["val"]
    assert not groups["train"] & groups["test"] and not groups["val"] & groups["test"]
    assert groups["val"] == {9, 10}  # round(7 * 0.3) = 2 highest training groups


def test_ucf101_missing_lists(tmp_path):
    touch(tmp_path / "A" / "v_A_g01_c01.avi")
    cfg = DataConfig(dir=str(tmp_path), split="ucf101")
    with pytest.raises(VideoError, match="list01.txt"):
        ucf101_assignment(find_videos(tmp_path, ["avi"]), cfg)


def test_ucf101_lists_name_videos_by_their_path(ucf_root):
    """A video whose file name is listed but whose folder is not is not in the split."""
    cls = CLASSES[0]
    touch(ucf_root / "Copies" / f"v_{cls}_g01_c01.avi")
    cfg = DataConfig(dir=str(ucf_root), split="ucf101", val_fraction=0.3)
    parts = ucf101_assignment(find_videos(ucf_root, ["avi"]), cfg)
    assert len(parts) == 40 and not any(vid.startswith("Copies") for vid in parts)


def test_ucf101_refuses_two_lists_of_one_name(ucf_root):
    (ucf_root / "old").mkdir()
    (ucf_root / "old" / "testlist01.txt").write_text("")
    cfg = DataConfig(dir=str(ucf_root), split="ucf101")
    with pytest.raises(VideoError, match=r"2 files named testlist01.txt under .*old/testlist01.txt.*keep one"):
        ucf101_assignment(find_videos(ucf_root, ["avi"]), cfg)


def check_disjoint(n: int, train_end: int, val_end: int) -> None:
    grid = CodeGrid("v", np.zeros((n, 1, 1), np.uint16), train_end, val_end)
    ranges = [grid.part(p) for p in ("train", "val", "test")]
    assert ranges[0][0] == 0 and ranges[-1][1] == n
    for (a0, a1), (b0, b1) in zip(ranges, ranges[1:]):
        assert a0 <= a1 == b0 <= b1  # contiguous, ordered, so disjoint
    frames = {p: set(range(*grid.part(p))) for p in ("train", "val", "test")}
    assert not frames["test"] & (frames["train"] | frames["val"])
    assert not frames["train"] & frames["val"]
    assert len(frames["train"]) + len(frames["val"]) + len(frames["test"]) == n


@pytest.mark.parametrize("n", [1, 2, 5, 20, 37])
def test_split_bounds_disjoint_all_rules(ucf_root, tmp_path, n):
    cfg = DataConfig(dir=str(ucf_root), val_fraction=0.1, test_fraction=0.2)
    # time rule
    check_disjoint(n, *split_bounds("time", n, cfg))
    # video rule
    videos = make_videos(tmp_path / "flat", 10)
    parts = assign_videos(videos, DataConfig(dir=str(tmp_path / "flat"), split="video"), seed=1)
    # ucf101 rule
    ucf_parts = ucf101_assignment(find_videos(ucf_root, ["avi"]),
                                  DataConfig(dir=str(ucf_root), split="ucf101", val_fraction=0.3))
    for part in list(parts.values()) + list(ucf_parts.values()):
        train_end, val_end = split_bounds(part, n, cfg)
        check_disjoint(n, train_end, val_end)
        grid = CodeGrid("v", np.zeros((n, 1, 1), np.uint16), train_end, val_end)
        length = {p: grid.part(p)[1] - grid.part(p)[0] for p in ("train", "val", "test")}
        assert length[part] == n  # a whole video goes to its part only


# ---------------------------------------------------------------- extract_frames


def test_extract_frames_and_list(tmp_path):
    src = tmp_path / "videos"
    (src / "sub").mkdir(parents=True)
    write_video(src / "b.mp4", moving_frames(seed=1, n_frames=12))
    write_video(src / "sub" / "a.mp4", moving_frames(seed=2, n_frames=20), fps=10)
    out = tmp_path / "frames"
    cfg = DataConfig(dir=str(src), scale=0.5, split="auto", val_fraction=0.1, test_fraction=0.2)
    written = extract_frames(find_videos(src, EXTS), out, cfg, seed=0).kept
    assert sorted(p.name for p in out.iterdir()) == [".videolm", "b.h5", "sub__a.h5", "videos.json"]
    assert {v.source: v.n_frames for v in written} == {"b.mp4": 12, "sub/a.mp4": 20}

    a = VideoFrames.open(out / "sub__a.h5")
    frames = a.read()
    assert frames.dtype == np.uint8 and frames.shape == (20, H // 2, W // 2)
    assert a.source == "sub/a.mp4" and a.video_id == "sub__a"
    assert a.fps == pytest.approx(10)
    assert (a.train_end, a.val_end) == time_split(20, 0.1, 0.2) == (14, 16)
    direct = np.stack(list(decode_gray(src / "sub" / "a.mp4", scale=0.5)))
    np.testing.assert_array_equal(frames, direct)

    listed = list_frames(out)
    assert [v.video_id for v in listed] == ["b", "sub__a"]
    b, a = listed
    assert (b.n_frames, b.frame_shape, b.source) == (12, (H // 2, W // 2), "b.mp4")
    assert (a.train_end, a.val_end) == (14, 16)
    np.testing.assert_array_equal(a.read(3, 7), frames[3:7])
    assert a.read().shape == (20, H // 2, W // 2)


def test_extract_frames_max_frames_and_video_split(tmp_path):
    src = tmp_path / "videos"
    src.mkdir()
    for i in range(3):
        write_video(src / f"v{i}.mp4", moving_frames(seed=i, n_frames=6))
    cfg = DataConfig(dir=str(src), scale=1.0, split="video", max_frames=4, frame_stride=1,
                     val_fraction=0.2, test_fraction=0.2)
    out = tmp_path / "frames"
    extract_frames(find_videos(src, EXTS), out, cfg, seed=0)
    listed = list_frames(out)
    assert [v.n_frames for v in listed] == [4, 4, 4]
    bounds = sorted((v.train_end, v.val_end) for v in listed)
    assert bounds == [(0, 0), (0, 4), (4, 4)]  # one test, one val, one train video


@pytest.mark.parametrize("min_videos", [10, 11])
def test_split_ignores_unusable_files(tmp_path, min_videos):
    """Broken files beside the videos change neither the rule (`auto` counts usable videos)
    nor any video's part: the split is the one the folder gets without them."""
    bounds = {}
    for name, broken in [("clean", []), ("mixed", ["a_empty.mp4", "v5_one_frame.mp4"])]:
        src = tmp_path / name
        src.mkdir()
        for i in range(10):
            write_video(src / f"v{i}.mp4", moving_frames(seed=i, n_frames=3))
        if broken:
            (src / "a_empty.mp4").write_bytes(b"")
            write_video(src / "v5_one_frame.mp4", moving_frames(n_frames=1))
        cfg = DataConfig(dir=str(src), scale=0.5, split="auto", min_videos_for_video_split=min_videos)
        result = extract_frames(find_videos(src, EXTS), tmp_path / f"{name}_frames", cfg, seed=0)
        assert [s.video for s in result.skipped] == broken
        assert result.split_rule == ("video" if min_videos == 10 else "time")
        bounds[name] = {v.source: (v.train_end, v.val_end) for v in result.kept}
    assert bounds["clean"] == bounds["mixed"]


def test_extract_ucf101_skips_videos_not_in_the_lists(tmp_path):
    root = tmp_path / "UCF-101"
    (root / "A").mkdir(parents=True)
    for g in (1, 2, 3):
        write_video(root / "A" / f"v_A_g0{g}_c01.avi", moving_frames(seed=g, n_frames=4))
    write_video(root / "v_Extra_g01_c01.avi", moving_frames(n_frames=4))
    (root / "trainlist01.txt").write_text("A/v_A_g02_c01.avi 1\nA/v_A_g03_c01.avi 1\n")
    (root / "testlist01.txt").write_text("A/v_A_g01_c01.avi\n")
    cfg = DataConfig(dir=str(root), split="ucf101", scale=0.5)
    result = extract_frames(find_videos(root, EXTS), tmp_path / "frames", cfg, seed=0)
    assert [(s.video, s.reason) for s in result.skipped] == [
        ("v_Extra_g01_c01.avi", "not in the UCF-101 split lists of data.ucf101_list=1")]
    assert result.split_rule == "ucf101"
    bounds = {v.source: (v.train_end, v.val_end) for v in list_frames(tmp_path / "frames")}
    assert bounds == {"A/v_A_g01_c01.avi": (0, 0), "A/v_A_g02_c01.avi": (4, 4), "A/v_A_g03_c01.avi": (0, 4)}


def test_list_frames_empty(tmp_path):
    with pytest.raises(VideoLMError, match=str(tmp_path.name)):
        list_frames(tmp_path)


def test_patch_larger_than_frames_is_named(tmp_path):
    video = VideoFrames(tmp_path / "x.h5", "x", "tiny.mp4", 3, (6, 10), 2, 2)
    check_patch_fits([video], 6)
    with pytest.raises(VideoError, match=r"patches.size=8 is larger than the 6x10 frames of tiny.mp4"):
        check_patch_fits([video], 8)
