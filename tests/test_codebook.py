"""The codebook: nearest-centroid assignment, k-means fit, content digest."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from videolm.codebook import assign_codes, codebook_digest, fit_codebook
from videolm.config import CodebookConfig


def brute_force(x, c):
    d = ((x[:, None, :].astype(np.float64) - c[None, :, :].astype(np.float64)) ** 2).sum(-1)
    return d.argmin(1)


@pytest.mark.parametrize("n, d, k, chunk", [(1000, 16, 16, 77), (257, 64, 40, 256), (5, 3, 2, 1)])
def test_assign_codes_equals_brute_force(n, d, k, chunk):
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, d)).astype(np.float32)
    c = rng.normal(size=(k, d)).astype(np.float32)
    codes = assign_codes(x, c, chunk=chunk)
    assert codes.shape == (n,) and codes.dtype == np.int64
    np.testing.assert_array_equal(codes, brute_force(x, c))
    assert len(np.unique(codes)) > 1


def test_assign_codes_accepts_tensors_and_exact_centroids():
    rng = np.random.default_rng(1)
    c = rng.normal(size=(10, 8)).astype(np.float32)
    order = rng.permutation(10)
    codes = assign_codes(torch.from_numpy(c[order]), torch.from_numpy(c), chunk=3)
    np.testing.assert_array_equal(codes, order)


def clusters(k=4, d=16, per=200, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=10.0, size=(k, d)).astype(np.float32)
    labels = np.repeat(np.arange(k), per)
    points = centers[labels] + rng.normal(scale=0.1, size=(k * per, d)).astype(np.float32)
    perm = rng.permutation(len(points))
    return points[perm], labels[perm], centers


def test_fit_codebook_recovers_clusters():
    points, labels, centers = clusters()
    cfg = CodebookConfig(k=4, batch_size=400, max_iter=10, init="k-means++", init_size=0)
    centroids, seconds = fit_codebook(points, cfg, seed=0)
    assert centroids.shape == (4, 16) and centroids.dtype == np.float32
    assert seconds >= 0
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
    cfg = CodebookConfig(k=8, batch_size=400, max_iter=10, init="random", init_size=0)
    centroids, _ = fit_codebook(points, cfg, seed=0)
    assert centroids.shape == (8, 16)
    dist = np.sqrt(((centers[:, None] - centroids[None]) ** 2).sum(-1))
    assert dist.min(1).max() < 0.5, dist.min(1)
    # each point's code is a centroid of its own cluster
    codes = assign_codes(points, centroids)
    owner = dist.argmin(0)  # cluster of each centroid
    np.testing.assert_array_equal(owner[codes], labels)


def test_fit_codebook_seeded():
    points, _, _ = clusters(k=6, d=8, per=50, seed=3)
    cfg = CodebookConfig(k=6, batch_size=150, max_iter=5)
    a, _ = fit_codebook(points, cfg, seed=1)
    b, _ = fit_codebook(points, cfg, seed=1)
    np.testing.assert_array_equal(a, b)


def test_codebook_digest():
    c = np.random.default_rng(0).normal(size=(16, 64)).astype(np.float32)
    digest = codebook_digest(c)
    assert isinstance(digest, str) and len(digest) == 16
    assert codebook_digest(c.copy()) == digest
    assert codebook_digest(c.astype(np.float64)) == digest  # same values, same digest
    changed = c.copy()
    changed[3, 5] += 1e-3
    assert codebook_digest(changed) != digest
    assert codebook_digest(c[::-1]) != digest  # order matters: codes index the rows
