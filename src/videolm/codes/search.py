"""Nearest-centroid search: the code of every patch, on the CPU or on a GPU, the same codes on both.

`assign_codes` is the search of every stage (k-means, encoding, the codebook's checks).

On the CPU, argmin_j ||x - c_j||^2 = argmin_j (||c_j||^2 - 2 x.c_j): one matrix product per
tile of rows, then the first nearest of each row.

**A row's distances do not depend on what shares its product, by construction.** A matrix
product's bits depend on its shape, its operands' layout and its thread count: BLAS libraries
pick kernels (and their order of summation) by all three, and by vendor. So every product
here has one shape for a given codebook: a tile of exactly `tile_rows(k)` contiguous rows
(the last tile padded with zero rows) against all the centroids, padded to groups of `GROUP`
columns; and it runs single-threaded. What varies from call to call (how many rows there
are, how they are split across threads and calls, which rows sit beside a row in its tile)
changes no shape, layout or thread count. The rows are split into one contiguous part of whole
tiles per torch thread, each part searched by its own Python thread with torch
single-threaded, its buffer kept in its core's cache (threads sleep between parallel regions,
`videolm/__init__.py`). A thread's buffer is about `CPU_BUFFER` floats (8 MB), never n x k;
docs/benchmarks.md has the sizes tried. tests/test_math_paths.py checks it under every math
library setting this machine offers.

The first nearest is found in two levels, because a minimum that also returns its index
(`torch.min(dim)`, `argmin`) is not vectorised, and is several times slower than one that
returns values only (`torch.amin`). The centroids are padded to groups of `GROUP` columns
(padding: zero vectors at distance +inf); `amin` gives each group's minimum, `torch.min` the first
group holding the row's minimum, and `torch.min` over that group's `GROUP` values the first index
in it. The first group holding the minimum holds its first index, so the codes are those of
`torch.min` over the whole row.

On a GPU (`assign_codes_checked`) the same product runs in fp32 (TF32 off), but its sums are
rounded in another order, so where two centroids are nearly equally near, the GPU and the CPU
could pick differently. Every distance computed in floating point is within

    delta = (d + 4) u (max ||c||^2 + 2 ||x|| max ||c||)

of the exact one, u = 2^-24 (Higham's bound on a dot product of d terms, whatever the order of
its sum, with margin for the squared norms and the final addition). Where no other centroid is
within 4 delta of the GPU's nearest, the CPU picks that one too: its own values are within delta
of the exact ones. The other rows (near ties) are searched again on the CPU by the CPU's own
search, the same tiles against the same centroids, so the codes are the CPU's, bit for bit.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

CPU_BUFFER = 2**21  # floats of each CPU thread's (tile, k) buffer: a tile is CPU_BUFFER // k rows (at least 64)
GROUP = 64  # centroids a group of the CPU's two-level minimum
DEVICE_CHUNK = 8192  # rows per product on a GPU: enough to keep it busy, 330 MB at k = 10,000


def tile_rows(k: int) -> int:
    """Rows of every CPU product against `k` centroids: a function of k alone."""
    return max(64, CPU_BUFFER // (-(-k // GROUP) * GROUP))


def assign_codes(x: np.ndarray | torch.Tensor, centroids: np.ndarray | torch.Tensor,
                 device: torch.device | str = "cpu") -> np.ndarray:
    """(n,) int64 index of the nearest centroid (k, d) of each row of `x` (n, d): the CPU's codes,
    computed on `device` (on a GPU, checked by `assign_codes_checked`). A row's code depends on
    the row and the centroids alone: not on the other rows, nor on torch's thread count."""
    if torch.device(device).type != "cpu":
        return assign_codes_checked(x, centroids, device)
    x = torch.as_tensor(np.asarray(x, np.float32))
    c = torch.as_tensor(np.asarray(centroids, np.float32))
    padded, c_sq = pad_centroids(c)
    tile = tile_rows(len(c))
    out = torch.empty(len(x), dtype=torch.int64)
    threads = torch.get_num_threads()
    tiles = -(-len(x) // tile)
    parts = max(1, min(threads, tiles))
    bounds = [tile * (tiles * p // parts) for p in range(parts)] + [len(x)]  # whole tiles per part
    try:
        if parts == 1:
            _search_rows(x, padded, c_sq, out, tile)
        else:
            with ThreadPoolExecutor(parts) as pool:
                list(pool.map(lambda a, b: _search_rows(x[a:b], padded, c_sq, out[a:b], tile), bounds[:-1], bounds[1:]))
    finally:
        torch.set_num_threads(threads)  # the setting is process-wide for MKL
    return out.numpy()


def pad_centroids(c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The centroids (k, d) padded with zero vectors to whole groups of `GROUP`, and their squared
    norms, +inf for the padding (never nearest)."""
    groups = -(-len(c) // GROUP)
    padded = torch.zeros(groups * GROUP, c.shape[1])
    padded[:len(c)] = c
    c_sq = torch.full((groups * GROUP,), torch.inf)
    c_sq[:len(c)] = (c * c).sum(1)
    return padded, c_sq


def _search_rows(x: torch.Tensor, padded: torch.Tensor, c_sq: torch.Tensor, out: torch.Tensor, tile: int) -> None:
    """Write into `out` the first nearest of `padded`'s centroids (groups of `GROUP`, padding at
    distance `c_sq` = +inf) to each row of `x`: single-threaded products of `tile` rows, the last
    tile padded with zero rows (module docstring)."""
    torch.set_num_threads(1)
    groups = len(padded) // GROUP
    rows = torch.zeros(tile, padded.shape[1])
    buffer = torch.empty(tile, len(padded))
    index = torch.arange(tile)
    for i in range(0, len(x), tile):
        n = min(tile, len(x) - i)
        rows[:n] = x[i:i + n]
        rows[n:] = 0
        distances = tile_distances(rows, padded, c_sq, buffer).view(tile, groups, GROUP)
        group = torch.min(torch.amin(distances, 2), 1).indices
        within = torch.min(distances[index, group], 1).indices
        out[i:i + n] = (group * GROUP + within)[:n]


def tile_distances(rows: torch.Tensor, padded: torch.Tensor, c_sq: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """||c_j||^2 - 2 x.c_j of every row of a tile (tile_rows(k), d) and centroid (padded to groups),
    into `out` (tile_rows(k), padded k): the search's one product."""
    return torch.addmm(c_sq, rows, padded.T, alpha=-2.0, out=out)


def assign_codes_checked(x: np.ndarray | torch.Tensor, centroids: np.ndarray | torch.Tensor,
                         device: torch.device | str, chunk: int = DEVICE_CHUNK,
                         near: list[int] | None = None) -> np.ndarray:
    """`assign_codes`' CPU codes, searched on `device` `chunk` rows a product, and near ties
    searched again on the CPU (the module's docstring). `near`, if given, gets the number of rows
    searched again appended."""
    if torch.device(device).type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # the bound is fp32's
    x = torch.as_tensor(np.asarray(x, np.float32))
    c = torch.as_tensor(np.asarray(centroids, np.float32))
    c_fast = c.to(device)
    c_sq = (c_fast * c_fast).sum(1)
    c_max = float(c.norm(dim=1).max())
    unit = torch.finfo(torch.float32).eps / 2
    out = torch.empty(len(x), dtype=torch.int64)
    ties = []
    for i in range(0, len(x), chunk):
        xf = x[i:i + chunk].to(device)
        distances = torch.addmm(c_sq, xf, c_fast.T, alpha=-2.0)
        nearest, codes = torch.min(distances, 1)
        # 1.01: margin for the rounding of the bound itself
        delta = (x.shape[1] + 4) * unit * (c_max ** 2 + 2 * xf.norm(dim=1) * c_max) * 1.01
        tie = (distances <= (nearest + 4 * delta)[:, None]).sum(1) > 1
        out[i:i + len(xf)] = codes.cpu()
        ties.append(torch.nonzero(tie)[:, 0].cpu() + i)
    rows = torch.cat(ties) if ties else torch.empty(0, dtype=torch.int64)
    if len(rows):
        out[rows] = torch.from_numpy(assign_codes(x[rows], c))
    if near is not None:
        near.append(len(rows))
    return out.numpy()
