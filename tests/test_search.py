"""The nearest-centroid search: the CPU's codes, and the checked search (the GPU's path, run here
on the CPU through the same function) giving exactly those codes on real patches."""

from __future__ import annotations

from itertools import islice

import numpy as np
import pytest
import torch

from videolm.codes.codebook import lloyd_kmeans
from videolm.codes.patches import extract_patches
from videolm.codes.search import assign_codes, assign_codes_checked, pad_centroids, tile_distances, tile_rows
from videolm.data.samples import find_sample_files
from videolm.data.video import decode_gray


@pytest.fixture(scope="module")
def real_patches() -> tuple[np.ndarray, np.ndarray]:
    """(patches, centroids): 8x8 patches of 4 frames of a real street scene (decoded by PyAV), every 4 pixels, in
    units of their std, and a codebook of 512 fitted to them (Lloyd)."""
    [city] = [path for path in find_sample_files() if path.name == "cityCC0.mpg"]
    frames = np.stack(list(islice(decode_gray(city, scale=0.5), 4)))
    x = extract_patches(frames, 8, 4).reshape(-1, 64)
    x = x / np.float32(frames.std())
    return x, lloyd_kmeans(x, 512, 10, "random", 0, seed=0)


@pytest.mark.bits
def test_a_rows_distances_do_not_depend_on_its_tile(real_patches):
    """What the search's identity rests on: in the search's one product (a tile of
    `tile_rows(k)` rows, single-threaded), a row's distances are the same bits whichever rows
    share its tile and wherever it sits in it."""
    x, c = (torch.from_numpy(a) for a in real_patches)
    padded, c_sq = pad_centroids(c)
    tile = tile_rows(len(c))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reference = tile_distances(x[:tile], padded, c_sq, torch.empty(tile, len(padded)))
        rng = np.random.default_rng(1)
        for _ in range(3):
            rows = torch.from_numpy(rng.permutation(len(x))[:tile])
            rows[rng.integers(tile)] = 5  # row 5, somewhere in a tile of other rows
            other = tile_distances(x[rows], padded, c_sq, torch.empty(tile, len(padded)))
            assert torch.equal(other[rows == 5], reference[5:6].expand(int((rows == 5).sum()), -1))
        alone = torch.zeros(tile, x.shape[1])
        alone[tile - 1] = x[5]  # the last row of a tile padded with zeros
        assert torch.equal(tile_distances(alone, padded, c_sq, torch.empty(tile, len(padded)))[tile - 1], reference[5])
    finally:
        torch.set_num_threads(threads)


def test_cpu_codes_are_the_first_nearest(real_patches):
    x, c = real_patches
    c = np.concatenate([c, c[:50]])  # exact ties: the first of equal centroids wins, as argmin's
    distances = (c.astype(np.float64) ** 2).sum(1) - 2 * x[:3000].astype(np.float64) @ c.T.astype(np.float64)
    codes = assign_codes(x[:3000], c)
    assert (codes < 512).all()
    exact = distances.argmin(1)
    assert (codes == exact).mean() > 0.999  # fp32 against float64: only near ties may differ
    assert np.allclose(distances[np.arange(3000), codes], distances[np.arange(3000), exact], rtol=0, atol=1e-3)


@pytest.mark.bits
@pytest.mark.parametrize("k", [5, 64, 300, 562])
def test_cpu_codes_are_the_whole_rows_first_minimum(real_patches, k):
    """The two-level minimum (groups, then within the first group holding the minimum) gives what
    `torch.min` over each whole row of the tile's distances gives, bit for bit: with exact ties
    (centroids repeated), with k below, at and across multiples of the group; and a row's code
    is the same whichever rows are searched with it, over any number of threads."""
    x, c = real_patches
    c = np.concatenate([c, c])[:k]
    padded, c_sq = pad_centroids(torch.from_numpy(c))
    tile = tile_rows(k)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        rows = torch.zeros(-(-len(x) // tile) * tile, x.shape[1])
        rows[:len(x)] = torch.from_numpy(x)
        reference = torch.cat([torch.min(tile_distances(rows[i:i + tile], padded, c_sq, torch.empty(tile, len(padded))),
                                         1).indices for i in range(0, len(rows), tile)])[:len(x)].numpy()
        cuts = [0, 3, 333, 1000, 1001, len(x)]
        for n_threads in (1, 3):
            torch.set_num_threads(n_threads)
            np.testing.assert_array_equal(assign_codes(x, c), reference)
            assert torch.get_num_threads() == n_threads  # the search's threads leave the setting as it was
        torch.set_num_threads(2)
        pieces = [assign_codes(x[a:b], c) for a, b in zip(cuts[:-1], cuts[1:])]
        np.testing.assert_array_equal(np.concatenate(pieces), reference)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.bits
@pytest.mark.parametrize("chunk", [997, 8192])
def test_checked_search_gives_the_cpu_codes_on_real_patches(real_patches, chunk):
    x, c = real_patches
    near = []
    codes = assign_codes_checked(x, c, "cpu", chunk=chunk, near=near)
    np.testing.assert_array_equal(codes, assign_codes(x, c))
    assert 0 < near[0] < len(x) // 2  # the near ties went through the recheck; most rows did not


@pytest.mark.bits
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
