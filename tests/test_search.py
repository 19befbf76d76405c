"""The nearest-centroid search: the CPU's codes, and the checked search (the GPU's path, run here
on the CPU through the same function) giving exactly those codes on real patches."""

from __future__ import annotations

from itertools import islice

import numpy as np
import pytest
import torch

from videolm.codes.codebook import lloyd_kmeans
from videolm.codes.patches import extract_patches
from videolm.codes.search import assign_codes, assign_codes_checked
from videolm.data.samples import find_sample_files
from videolm.data.video import decode_gray


@pytest.fixture(scope="module")
def real_patches() -> tuple[np.ndarray, np.ndarray]:
    """(patches, centroids): 8x8 patches of a real street scene (decoded by PyAV), every 4 pixels, in
    units of their std, and a codebook of 512 fitted to them (Lloyd)."""
    [city] = [path for path in find_sample_files() if path.name == "cityCC0.mpg"]
    frames = np.stack(list(islice(decode_gray(city, scale=0.5), 12)))
    x = extract_patches(frames, 8, 4).reshape(-1, 64)
    x = x / np.float32(frames.std())
    return x, lloyd_kmeans(x, 512, 10, "random", 0, seed=0)


def test_cpu_values_do_not_depend_on_what_shares_the_product(real_patches):
    """What the recheck relies on: the CPU's distance of a (row, centroid) pair is the same bits
    whichever other rows and centroids are in its matrix product."""
    x, c = (torch.from_numpy(a) for a in real_patches)
    c_sq = (c * c).sum(1)
    full = torch.addmm(c_sq, x[:512], c.T, alpha=-2.0)
    rng = np.random.default_rng(1)
    for n_rows, n_cols in ((1, 1), (3, 2), (64, 17), (200, 300)):
        rows = torch.from_numpy(np.sort(rng.choice(512, n_rows, replace=False)))
        cols = torch.from_numpy(np.sort(rng.choice(512, n_cols, replace=False)))
        part = torch.addmm(c_sq[cols], x[rows], c[cols].T, alpha=-2.0)
        assert torch.equal(part, full[rows][:, cols])


def test_cpu_codes_are_the_first_nearest(real_patches):
    x, c = real_patches
    c = np.concatenate([c, c[:50]])  # exact ties: the first of equal centroids wins, as argmin's
    distances = (c.astype(np.float64) ** 2).sum(1) - 2 * x[:3000].astype(np.float64) @ c.T.astype(np.float64)
    codes = assign_codes(x[:3000], c)
    assert (codes < 512).all()
    exact = distances.argmin(1)
    assert (codes == exact).mean() > 0.999  # fp32 against float64: only near ties may differ
    assert np.allclose(distances[np.arange(3000), codes], distances[np.arange(3000), exact], rtol=0, atol=1e-3)


@pytest.mark.parametrize("k", [5, 64, 300, 562])
def test_cpu_codes_are_the_whole_rows_first_minimum(real_patches, k):
    """The two-level minimum (groups, then within the first group holding the minimum) gives what
    `torch.min` over each whole row of distances gives, bit for bit: with exact ties (centroids
    repeated), with k below, at and across multiples of the group, in chunks of any size and over
    any number of threads."""
    x, c = real_patches
    c = np.concatenate([c, c])[:k]
    reference = torch.min(torch.addmm(torch.from_numpy((c * c).sum(1)), torch.from_numpy(x),
                                      torch.from_numpy(c).T, alpha=-2.0), 1).indices.numpy()
    threads = torch.get_num_threads()
    try:
        for n_threads, chunk in ((1, 0), (2, 0), (2, 333), (3, 97)):
            torch.set_num_threads(n_threads)
            np.testing.assert_array_equal(assign_codes(x, c, chunk=chunk), reference)
            assert torch.get_num_threads() == n_threads  # the search's threads leave the setting as it was
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("chunk", [997, 8192])
def test_checked_search_gives_the_cpu_codes_on_real_patches(real_patches, chunk):
    x, c = real_patches
    near = []
    codes = assign_codes_checked(x, c, "cpu", chunk=chunk, near=near)
    np.testing.assert_array_equal(codes, assign_codes(x, c))
    assert 0 < near[0] < len(x) // 2  # the near ties went through the recheck; most rows did not


def test_checked_search_recheck_fixes_a_wrong_fast_pass(real_patches):
    """Near ties are recomputed: with centroids that differ by less than the bound, every row is a
    near tie, and the recheck alone must give the CPU's first nearest."""
    x, c = real_patches
    twins = np.repeat(c[:200], 2, 0)
    twins[1::2] += np.float32(1e-7)
    near = []
    codes = assign_codes_checked(x[:4000], twins, "cpu", near=near)
    assert near[0] == 4000
    np.testing.assert_array_equal(codes, assign_codes(x[:4000], twins))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (benchmarks/device_check.py runs it)")
def test_cuda_search_gives_the_cpu_codes(real_patches):
    x, c = real_patches
    np.testing.assert_array_equal(assign_codes(x, c, "cuda"), assign_codes(x, c))
