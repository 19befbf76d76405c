"""The codebook: nearest-centroid assignment, k-means fit, content digest, the codebook file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from videolm.codes.codebook import Codebook, lloyd_kmeans
from videolm.codes.patches import PatchSample
from videolm.codes.search import assign_codes
from videolm.config import CodebookConfig
from videolm.errors import VideoLMError


def brute_force(x, c):
    d = ((x[:, None, :].astype(np.float64) - c[None, :, :].astype(np.float64)) ** 2).sum(-1)
    return d.argmin(1)


@pytest.mark.parametrize("n, d, k", [(5000, 16, 16), (257, 64, 40), (5, 3, 2)])
def test_assign_codes_equals_brute_force(n, d, k):
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, d)).astype(np.float32)
    c = rng.normal(size=(k, d)).astype(np.float32)
    codes = assign_codes(x, c)
    assert codes.shape == (n,) and codes.dtype == np.int64
    np.testing.assert_array_equal(codes, brute_force(x, c))
    assert len(np.unique(codes)) > 1


def test_assign_codes_accepts_tensors_and_exact_centroids():
    rng = np.random.default_rng(1)
    c = rng.normal(size=(10, 8)).astype(np.float32)
    order = rng.permutation(10)
    codes = assign_codes(torch.from_numpy(c[order]), torch.from_numpy(c))
    np.testing.assert_array_equal(codes, order)


def clusters(k=4, d=16, per=200, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=10.0, size=(k, d)).astype(np.float32)
    labels = np.repeat(np.arange(k), per)
    points = centers[labels] + rng.normal(scale=0.1, size=(k * per, d)).astype(np.float32)
    perm = rng.permutation(len(points))
    return points[perm], labels[perm], centers


def fit(points: np.ndarray, seed: int = 0, **cfg) -> Codebook:
    """A codebook fitted on `points` (n, size*size) as the training patches."""
    size = int(round(np.sqrt(points.shape[1])))
    return Codebook.fit(PatchSample(points, points[:10], 1.0, size), CodebookConfig(**cfg), seed)


@pytest.mark.parametrize("method", ["minibatch", "lloyd"])
def test_fit_codebook_recovers_clusters(method):
    points, labels, centers = clusters()
    codebook = fit(points, k=4, batch_size=400, max_iter=10, init="k-means++", init_size=0, method=method)
    centroids = codebook.centroids
    assert centroids.shape == (4, 16) and centroids.dtype == np.float32
    assert codebook.k == 4 and codebook.size == 4 and codebook.std == 1.0
    # every true center has a centroid close to it, and they are distinct centroids
    dist = np.sqrt(((centers[:, None] - centroids[None]) ** 2).sum(-1))
    match = dist.argmin(1)
    assert sorted(match) == [0, 1, 2, 3]
    assert dist.min(1).max() < 0.5, dist.min(1)
    # the codes are the labels up to a permutation
    codes = assign_codes(points, centroids)
    np.testing.assert_array_equal(codes, match[labels])


def test_fit_codebook_random_init_covers_clusters():
    # random init (the default) with more centroids than clusters: no cluster is left without one
    points, labels, centers = clusters()
    centroids = fit(points, k=8, batch_size=400, max_iter=10, init="random", init_size=0).centroids
    assert centroids.shape == (8, 16)
    dist = np.sqrt(((centers[:, None] - centroids[None]) ** 2).sum(-1))
    assert dist.min(1).max() < 0.5, dist.min(1)
    # each point's code is a centroid of its own cluster
    codes = assign_codes(points, centroids)
    owner = dist.argmin(0)  # cluster of each centroid
    np.testing.assert_array_equal(owner[codes], labels)


@pytest.mark.parametrize("method", ["minibatch", "lloyd"])
def test_fit_codebook_seeded(method):
    points, _, _ = clusters(k=6, d=9, per=50, seed=3)
    a, b, c = (fit(points, seed, k=6, batch_size=150, max_iter=5, method=method).centroids for seed in (1, 1, 2))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_lloyd_matches_a_plain_lloyd_and_splits_empty_clusters():
    """Each Lloyd iteration moves every centroid to the mean of its points; a centroid that
    gets none takes half of the largest cluster instead of staying where it was (or nan)."""
    points, _, _ = clusters(k=3, d=4, per=30, seed=1)
    init = points[np.random.default_rng(0).choice(len(points), 5, replace=False)]
    got = lloyd_kmeans(points, 5, 1, "random", 5, seed=0)
    codes = brute_force(points, init)
    for j in set(codes):  # one plain Lloyd step from the same start
        np.testing.assert_allclose(got[j], points[codes == j].mean(0), rtol=1e-5, atol=1e-5)
    # three distinct points, five centroids: two clusters are empty at every step and are split off
    few = np.repeat(np.eye(3, 4, dtype=np.float32) * 10, 20, axis=0)
    centroids = lloyd_kmeans(few, 5, 3, "random", 5, seed=0)
    assert np.isfinite(centroids).all()
    assert len({tuple(c) for c in centroids.round(6)}) == 5  # none duplicated, none stuck at zero
    np.testing.assert_allclose(np.sort(np.linalg.norm(centroids, axis=1)), 10, rtol=0.01)


def test_codebook_digest():
    c = np.random.default_rng(0).normal(size=(16, 64)).astype(np.float32)
    digest = Codebook(c, 1.0, 8).digest
    assert isinstance(digest, str) and len(digest) == 16
    assert Codebook(c.copy(), 2.0, 8).digest == digest
    assert Codebook(c.astype(np.float64), 1.0, 8).digest == digest  # same values, same digest
    changed = c.copy()
    changed[3, 5] += 1e-3
    assert Codebook(changed, 1.0, 8).digest != digest
    assert Codebook(c[::-1], 1.0, 8).digest != digest  # order matters: codes index the rows


def test_codebook_file_round_trip_and_decode(tmp_path):
    centroids = np.random.default_rng(0).normal(size=(16, 16)).astype(np.float32)
    Codebook(centroids, 2.0, 4).save(tmp_path / "codebook.h5")
    cb = Codebook.load(tmp_path / "codebook.h5")
    assert cb.k == 16 and cb.size == 4 and cb.std == 2.0
    np.testing.assert_array_equal(cb.centroids, centroids)
    np.testing.assert_allclose(cb.gray_patches()[3], centroids[3].reshape(4, 4) * 2.0)
    frame = cb.decode(np.array([[[3, 5]]]), 4)[0]  # one frame, one row, two patches
    assert frame.shape == (4, 8)
    np.testing.assert_allclose(frame[:, 4:], centroids[5].reshape(4, 4) * 2.0, rtol=1e-6)
    np.testing.assert_array_equal(cb.assign(cb.gray_patches().reshape(16, -1)), np.arange(16))
    with pytest.raises(VideoLMError, match="missing.h5"):
        Codebook.load(tmp_path / "missing.h5")


def test_codebook_quality():
    points, _, _ = clusters(k=4, d=16, per=20)
    exact = Codebook(points[:5].copy(), 1.0, 4)
    quality = exact.quality(PatchSample(points[:5], points[:3], 1.0, 4))
    assert quality == {"k": 5, "heldout_psnr": float("inf"), "unused_centroids": 0}
    spare = Codebook(np.concatenate([points[:5], points[:1] + 1000]), 1.0, 4)
    assert spare.quality(PatchSample(points[:5], points[:3] + 0.5, 1.0, 4))["unused_centroids"] == 1


def test_mirror_map_pairs_mirrored_atoms():
    atom = np.arange(16, dtype=np.float32).reshape(4, 4)
    cb = Codebook(np.stack([atom.ravel(), atom[:, ::-1].ravel(), np.full(16, 7.5, np.float32)]), 1.0, 4)
    np.testing.assert_array_equal(cb.mirror_map(), [1, 0, 2])
