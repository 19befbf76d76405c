"""Code grids: encoding frames with a codebook, storing them in HDF5 and reading them back."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from conftest import N_FRAMES, H, W

from videolm.codebook import assign_codes, codebook_digest, fit_codebook
from videolm.codes import (
    Codebook,
    CodeGrid,
    CodesError,
    encode_video,
    load_code_grids,
    load_codebook,
)
from videolm.config import CodebookConfig, DataConfig
from videolm.errors import VideoLMError
from videolm.frames import extract_frames, list_frames
from videolm.io import create_h5, h5_dataset, write_attrs
from videolm.patches import extract_patches
from videolm.video import find_videos

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
    centroids, _ = fit_codebook(patches / std, cfg, seed)
    return Codebook(centroids, std, size, codebook_digest(centroids))


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
    with h5py.File(out, "r") as f:
        codes = f["codes"][:]
        attrs = dict(f.attrs)
    assert codes.dtype == np.uint16
    assert codes.shape == (N_FRAMES, rows, cols) == (N_FRAMES, (H - SIZE) // stride + 1, (W - SIZE) // stride + 1)
    np.testing.assert_array_equal(codes, expected)
    assert len(np.unique(codes)) > 1
    assert attrs["codebook"] == codebook.digest
    assert (int(attrs["k"]), int(attrs["patch_size"]), int(attrs["stride"])) == (K, SIZE, stride)
    assert (int(attrs["train_end"]), int(attrs["val_end"])) == (frames_video.train_end, frames_video.val_end)

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
    np.testing.assert_array_equal(grids[0].codes, codes)
    assert (grids[0].train_end, grids[0].val_end) == (frames_video.train_end, frames_video.val_end)


def test_encode_video_is_deterministic(frames_video, tmp_path):
    codebook = make_codebook(frames_video.read())
    encode_video(frames_video, codebook, 8, 5, tmp_path / "a.h5")
    encode_video(frames_video, codebook, 8, 5, tmp_path / "b.h5")
    assert (tmp_path / "a.h5").read_bytes() == (tmp_path / "b.h5").read_bytes()


def test_codebook_round_trip_and_decode(tmp_path):
    rng = np.random.default_rng(0)
    centroids = rng.normal(size=(K, SIZE * SIZE)).astype(np.float32)
    path = tmp_path / "codebook.h5"
    with create_h5(path) as f:
        h5_dataset(f, "centroids", data=centroids)
        write_attrs(f, {"std": 2.0, "patch_size": SIZE, "digest": codebook_digest(centroids)})
    cb = load_codebook(path)
    assert cb.k == K and cb.size == SIZE and cb.std == 2.0
    np.testing.assert_array_equal(cb.centroids, centroids)
    np.testing.assert_allclose(cb.atoms()[3], centroids[3].reshape(SIZE, SIZE) * 2.0)
    codes = np.array([[[3, 5]]])  # one frame, one row, two patches
    frame = cb.decode(codes, SIZE)[0]
    assert frame.shape == (SIZE, 2 * SIZE)
    np.testing.assert_allclose(frame[:, SIZE:], centroids[5].reshape(SIZE, SIZE) * 2.0, rtol=1e-6)
    with pytest.raises(CodesError, match="missing.h5"):
        load_codebook(tmp_path / "missing.h5")


def test_load_code_grids_refuses_other_codebook(frames_video, tmp_path):
    codebook = make_codebook(frames_video.read())
    codes_dir = tmp_path / "codes"
    codes_dir.mkdir()
    encode_video(frames_video, codebook, 8, 32, codes_dir / "clip_one.h5")
    other = codebook.centroids.copy()
    other[0] += 0.5
    stale = Codebook(other, codebook.std, SIZE, codebook_digest(other))
    with pytest.raises(CodesError, match="clip_one.h5"):
        load_code_grids(codes_dir, stale)
    assert len(load_code_grids(codes_dir, codebook)) == 1
    assert len(load_code_grids(codes_dir)) == 1  # no codebook given: no check


def write_codes(path, codes, k=K, digest="0" * 16, dtype=np.uint16):
    with create_h5(path) as f:
        h5_dataset(f, "codes", data=np.asarray(codes, dtype))
        write_attrs(f, {"source": path.name, "train_end": 2, "val_end": 3, "k": k, "patch_size": SIZE,
                        "stride": SIZE, "codebook": digest})


def test_load_code_grids_refuses_code_out_of_range(tmp_path):
    codes = np.random.default_rng(0).integers(0, K, (4, 3, 3))
    write_codes(tmp_path / "good.h5", codes)
    assert len(load_code_grids(tmp_path)) == 1
    codes[2, 1, 1] = K
    write_codes(tmp_path / "bad_one.h5", codes)
    with pytest.raises(CodesError, match=r"bad_one\.h5.*16"):
        load_code_grids(tmp_path)


def test_load_code_grids_refuses_malformed(tmp_path):
    write_codes(tmp_path / "floats.h5", np.zeros((4, 3, 3)), dtype=np.float32)
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
