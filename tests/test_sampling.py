"""Sampling the codebook's patches: from the right parts, one read per video, the same bytes
whatever the number of worker processes."""

from __future__ import annotations

import numpy as np
import pytest

from videolm.codes.patches import sample_patches
from videolm.codes.sampling import sample_training_patches
from videolm.data.frames import VideoFrames, write_frames
from videolm.errors import VideoLMError


def test_sample_training_patches_uses_only_its_parts(tmp_path):
    # training frames are dark (0..99), validation bright (150..199), test white (255)
    rng = np.random.default_rng(0)
    frames = np.concatenate([rng.integers(0, 100, (6, 16, 16)), rng.integers(150, 200, (2, 16, 16)),
                             np.full((2, 16, 16), 255)]).astype(np.uint8)
    video = write_frames(tmp_path / "v.h5", iter(frames), lambda n: (6, 8), {"source": "v.mp4"})
    sample = sample_training_patches([video], 300, 40, 4, seed=0)
    train, heldout, std = sample.train, sample.heldout, sample.std
    assert train.shape == (300, 16) and heldout.shape == (40, 16)
    assert std == pytest.approx(frames[:6].astype(np.float64).std(), rel=1e-6)
    assert (train * std).max() < 100 + 1e-3
    assert (heldout * std).min() > 150 - 1e-3 and (heldout * std).max() < 200 + 1e-3


def _videos(tmp_path, n=5):
    """Videos of different lengths, sizes and splits (the last two whole validation / test videos)."""
    rng = np.random.default_rng(3)
    videos = []
    for i in range(n):
        t, h, w = 6 + i, 12 + 2 * i, 16 + i
        frames = rng.integers(0, 256, (t, h, w)).astype(np.uint8)
        split = (t - 3, t - 1) if i < n - 2 else ((0, t) if i == n - 2 else (0, 0))
        videos.append(write_frames(tmp_path / f"v{i}.h5", iter(frames), lambda _, s=split: s, {"source": f"v{i}.mp4"}))
    return videos


def test_std_is_that_of_every_training_pixel(tmp_path):
    videos = _videos(tmp_path)
    pixels = np.concatenate([v.read(0, v.train_end).ravel() for v in videos]).astype(np.float64)
    assert sample_training_patches(videos, 100, 20, 4, seed=0).std == pytest.approx(pixels.std(), rel=1e-12)


def test_same_bytes_with_one_or_two_workers(tmp_path):
    videos = _videos(tmp_path)
    one = sample_training_patches(videos, 400, 60, 4, seed=5, workers=1)
    two = sample_training_patches(videos, 400, 60, 4, seed=5, workers=2)
    assert one.std == two.std
    np.testing.assert_array_equal(one.train, two.train)
    np.testing.assert_array_equal(one.heldout, two.heldout)
    assert not np.array_equal(one.train, sample_training_patches(videos, 400, 60, 4, seed=6).train)


def test_each_video_is_read_once(tmp_path, monkeypatch):
    videos = _videos(tmp_path)
    reads = []
    original = VideoFrames.read
    monkeypatch.setattr(VideoFrames, "read", lambda self, *a: reads.append(self.video_id) or original(self, *a))
    sample_training_patches(videos, 400, 60, 4, seed=0)
    assert sorted(reads) == sorted(set(reads))  # no video twice
    assert set(reads) <= {v.video_id for v in videos[:-1]}  # the test-only video has nothing to give


def test_draws_match_sampling_each_part_in_turn(tmp_path):
    """The positions are drawn as `sample_patches` draws them, part after part, video after video:
    so the sample does not depend on how the reads are grouped."""
    videos = _videos(tmp_path)
    rng = np.random.default_rng(9)
    expected = []
    for bounds in ((lambda v: (0, v.train_end)), (lambda v: (v.train_end, v.val_end))):
        weights = np.array([(bounds(v)[1] - bounds(v)[0]) * np.prod(v.frame_shape) for v in videos], np.float64)
        counts = rng.multinomial(100, weights / weights.sum())
        expected.append(np.concatenate([sample_patches(v.read(*bounds(v)), m, 4, rng)
                                        for v, m in zip(videos, counts) if m]))
    sample = sample_training_patches(videos, 100, 100, 4, seed=9)
    np.testing.assert_allclose(sample.train * sample.std, expected[0], atol=1e-3)
    np.testing.assert_allclose(sample.heldout * sample.std, expected[1], atol=1e-3)


def test_no_training_frames_is_one_line(tmp_path):
    videos = _videos(tmp_path)[-2:]  # a validation video and a test video
    with pytest.raises(VideoLMError, match="no training frames"):
        sample_training_patches(videos, 10, 10, 4, seed=0)
