"""Code grids: encoding frames with a codebook, storing them in HDF5 and reading them back."""

from __future__ import annotations

import pickle

import h5py
import numpy as np
import pytest
from conftest import N_FRAMES, H, W, save_grid

import videolm.codes.grids as codes_module
from videolm.codes.codebook import Codebook
from videolm.codes.grids import CodeGrid, CodesError, H5Codes, encode_video, load_code_grids
from videolm.codes.patches import PatchSample, extract_patches
from videolm.codes.search import assign_codes
from videolm.config import CodebookConfig, DataConfig
from videolm.data.extract import extract_frames
from videolm.data.frames import list_frames
from videolm.data.video import find_videos
from videolm.errors import VideoLMError
from videolm.io import COMPRESSION, h5_dataset, h5_writer, write_attrs

K = 16
SIZE = 8


@pytest.fixture
def frames_video(moving_video, tmp_path):
    """The moving clip, extracted to a frames file (split by time)."""
    cfg = DataConfig(dir=str(moving_video.parent), scale=1.0, split="time")
    extract_frames(find_videos(moving_video.parent, ["mp4"]), tmp_path / "frames", cfg, seed=0)
    (video,) = list_frames(tmp_path / "frames")
    return video


def make_codebook(frames: np.ndarray, k: int = K, size: int = SIZE, seed: int = 0) -> Codebook:
    patches = extract_patches(frames, size, size).reshape(-1, size * size)
    std = float(frames.astype(np.float64).std())
    cfg = CodebookConfig(k=k, batch_size=len(patches), max_iter=5, init="k-means++")
    return Codebook.fit(PatchSample(patches / std, patches[:1] / std, std, size), cfg, seed)


@pytest.mark.parametrize("stride, chunk", [(8, 7), (4, 32)])
def test_encode_video(frames_video, tmp_path, stride, chunk):
    frames = frames_video.read()
    assert frames.shape == (N_FRAMES, H, W)
    codebook = make_codebook(frames)
    out = tmp_path / "codes.h5"
    sq_all, n_all, sq_test, n_test = encode_video(frames_video, codebook, stride, chunk, out)

    patches = extract_patches(frames, SIZE, stride)  # (T, rows, cols, 64)
    t, rows, cols, dim = patches.shape
    expected = assign_codes(patches.reshape(-1, dim) / codebook.std, codebook.centroids).reshape(t, rows, cols)
    grid = CodeGrid.load(out, codebook)  # refuses codes of another codebook
    codes = grid.codes[:]
    assert codes.dtype == np.uint16
    assert codes.shape == (N_FRAMES, rows, cols) == (N_FRAMES, (H - SIZE) // stride + 1, (W - SIZE) // stride + 1)
    np.testing.assert_array_equal(codes, expected)
    assert len(np.unique(codes)) > 1
    assert (grid.train_end, grid.val_end) == (frames_video.train_end, frames_video.val_end)

    # the returned error sums are those of the frames rebuilt from the codes
    rebuilt = codebook.decode(codes.astype(np.int64), stride)
    err = (frames[:, :rebuilt.shape[1], :rebuilt.shape[2]].astype(np.float64) - rebuilt) ** 2
    assert n_all == err.size
    assert sq_all == pytest.approx(err.sum(), rel=1e-4)
    assert n_test == err[frames_video.val_end:].size > 0
    assert sq_test == pytest.approx(err[frames_video.val_end:].sum(), rel=1e-4)
    assert sq_all > 0  # 16 codes cannot describe a random texture exactly

    grids = load_code_grids(tmp_path, codebook)
    assert [g.video_id for g in grids] == ["codes"]
    np.testing.assert_array_equal(grids[0].codes[:], codes)
    assert (grids[0].train_end, grids[0].val_end) == (frames_video.train_end, frames_video.val_end)


def test_encode_video_is_deterministic(frames_video, tmp_path):
    codebook = make_codebook(frames_video.read())
    encode_video(frames_video, codebook, 8, 5, tmp_path / "a.h5")
    encode_video(frames_video, codebook, 8, 5, tmp_path / "b.h5")
    assert (tmp_path / "a.h5").read_bytes() == (tmp_path / "b.h5").read_bytes()


def test_streamed_codes_are_the_bytes_of_codes_written_whole(frames_video, tmp_path):
    """`encode_video` writes its file chunk by chunk, and `CodeGrid.save` from a whole grid; both give
    the bytes of a dataset written whole (and closed) before the attributes, as the code files of
    earlier runs were, so that existing outputs keep their hashes."""
    codebook = make_codebook(frames_video.read())
    encode_video(frames_video, codebook, 8, 3, tmp_path / "streamed.h5")
    grid = CodeGrid.load(tmp_path / "streamed.h5")
    save_grid(grid, tmp_path / "saved.h5", codebook, 8, frames_video.source)
    with h5py.File(tmp_path / "streamed.h5", "r") as f, h5_writer(tmp_path / "whole.h5") as g:
        h5_dataset(g, "codes", f["codes"][:], chunks=(1, *grid.codes.shape[1:]), **COMPRESSION)
        write_attrs(g, dict(f.attrs))
    whole = (tmp_path / "whole.h5").read_bytes()
    assert (tmp_path / "streamed.h5").read_bytes() == whole
    assert (tmp_path / "saved.h5").read_bytes() == whole


def test_load_code_grids_refuses_other_codebook(frames_video, tmp_path):
    codebook = make_codebook(frames_video.read())
    codes_dir = tmp_path / "codes"
    codes_dir.mkdir()
    encode_video(frames_video, codebook, 8, 32, codes_dir / "clip_one.h5")
    other = codebook.centroids.copy()
    other[0] += 0.5
    stale = Codebook(other, codebook.std, SIZE)
    with pytest.raises(CodesError, match="clip_one.h5"):
        load_code_grids(codes_dir, stale)
    assert len(load_code_grids(codes_dir, codebook)) == 1
    assert len(load_code_grids(codes_dir)) == 1  # no codebook given: no check


def test_load_code_grids_refuses_code_out_of_range(tmp_path):
    codebook = Codebook(np.zeros((K, SIZE * SIZE), np.float32), 1.0, SIZE)
    codes = np.random.default_rng(0).integers(0, K, (4, 3, 3)).astype(np.uint16)
    save_grid(CodeGrid("good", codes, 2, 3), tmp_path / "good.h5", codebook, SIZE, "good.mp4")
    assert len(load_code_grids(tmp_path)) == 1
    codes[2, 1, 1] = K
    save_grid(CodeGrid("bad_one", codes, 2, 3), tmp_path / "bad_one.h5", codebook, SIZE, "bad_one.mp4")
    bad, good = load_code_grids(tmp_path)  # codes are checked as they are read
    good.codes[:]
    bad.codes[:2]  # the frames read are fine
    with pytest.raises(CodesError, match=r"bad_one\.h5.*16"):
        bad.codes[1:3, 1]


def test_loaded_grids_read_only_what_is_asked(tmp_path, monkeypatch):
    """A loaded grid holds no codes: each read goes to the file, for the frames and cells asked,
    through at most `OPEN_FILES` open files; and it survives being sent to another process."""
    codebook = Codebook(np.zeros((K, SIZE * SIZE), np.float32), 1.0, SIZE)
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, K, (5, 4, 6)).astype(np.uint16) for _ in range(5)]
    for i, codes in enumerate(arrays):
        save_grid(CodeGrid(f"v{i}", codes, 3, 4), tmp_path / f"v{i}.h5", codebook, SIZE, f"v{i}.mp4")
    monkeypatch.setattr(codes_module, "OPEN_FILES", 2)
    monkeypatch.setattr(codes_module, "_open", type(codes_module._open)())
    grids = load_code_grids(tmp_path)
    assert all(isinstance(g.codes, H5Codes) and g.codes.shape == (5, 4, 6) for g in grids)
    for grid, codes in zip(grids * 2, arrays * 2):
        np.testing.assert_array_equal(grid.codes[1:4, 2:, :3], codes[1:4, 2:, :3])
        assert len(codes_module._open) <= 2
    sent = pickle.loads(pickle.dumps(grids[3]))
    np.testing.assert_array_equal(sent.codes[4], arrays[3][4])
    save_grid(CodeGrid("v0", arrays[1], 3, 4), tmp_path / "v0.h5", codebook, SIZE, "v0.mp4")  # replaced since loaded
    with pytest.raises(CodesError, match=r"v0\.h5: the file changed after it was loaded"):
        grids[0].codes[0]


def test_load_code_grids_refuses_malformed(tmp_path):
    with h5py.File(tmp_path / "floats.h5", "w") as f:  # not written by videolm: raw h5py on purpose
        f["codes"] = np.zeros((4, 3, 3), np.float32)
    with pytest.raises(CodesError, match="floats.h5"):
        load_code_grids(tmp_path)


def test_load_code_grids_empty(tmp_path):
    with pytest.raises(VideoLMError, match="no code grids .run the encode stage"):
        load_code_grids(tmp_path)


def test_code_grid_parts():
    grid = CodeGrid("v", np.zeros((10, 2, 2), np.uint16), 6, 8)
    assert grid.part("train") == (0, 6)
    assert grid.part("val") == (6, 8)
    assert grid.part("test") == (8, 10)
