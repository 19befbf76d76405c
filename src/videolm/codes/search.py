"""Nearest-centroid search: the code of every patch, on the CPU or on a GPU, the same codes on both.

`assign_codes` is the search of every stage (k-means, encoding, the codebook's checks).

On the CPU, argmin_j ||x - c_j||^2 = argmin_j (||c_j||^2 - 2 x.c_j): one matrix product per
chunk of rows into a reused (chunk, k) buffer, then the first nearest of each row. The rows are
split into one contiguous part per torch thread, and each part is searched by its own Python
thread with torch single-threaded: its buffer stays in its core's cache, and no OpenMP team is
woken per product (threads sleep between parallel regions, `videolm/__init__.py`). A thread's
buffer is about `CPU_BUFFER` floats (8 MB), never n x k; docs/benchmarks.md has the sizes tried.

The first nearest is found in two levels, because a minimum that also returns its index
(`torch.min(dim)`, `argmin`) is not vectorised, and is several times slower than one that
returns values only (`torch.amin`). The centroids are padded to groups of `GROUP` columns
(padding: zero vectors at distance +inf); `amin` gives each group's minimum, `torch.min` the first
group holding the row's minimum, and `torch.min` over that group's `GROUP` values the first index
in it. The first group holding the minimum holds its first index, so the codes are those of
`torch.min` over the whole row, whatever the chunks and threads (a distance does not depend on
what shares its product: below).

On a GPU (`assign_codes_checked`) the same product runs in fp32 (TF32 off), but its sums are
rounded in another order, so where two centroids are nearly equally near, the GPU and the CPU
could pick differently. Every distance computed in floating point is within

    delta = (d + 4) u (max ||c||^2 + 2 ||x|| max ||c||)

of the exact one, u = 2^-24 (Higham's bound on a dot product of d terms, whatever the order of
its sum, with margin for the squared norms and the final addition). Where no other centroid is
within 4 delta of the GPU's nearest, the CPU picks that one too: its own values are within delta
of the exact ones. The other rows (near ties) are recomputed on the CPU against their candidates,
the centroids within 4 delta of the GPU's nearest. The CPU's value of a (row, centroid) pair does
not depend on which other rows and centroids share its product (tests/test_search.py checks it
on real patches), so the codes are the CPU's, bit for bit.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

CPU_BUFFER = 2**21  # floats of each CPU thread's (chunk, k) buffer: its rows are CPU_BUFFER // k (at least 64)
GROUP = 64  # centroids a group of the CPU's two-level minimum
DEVICE_CHUNK = 8192  # rows per product on a GPU: enough to keep it busy, 330 MB at k = 10,000
RECHECK_ROWS = 64  # near-tie rows recomputed on the CPU together, against their candidates' union


def assign_codes(x: np.ndarray | torch.Tensor, centroids: np.ndarray | torch.Tensor,
                 device: torch.device | str = "cpu", chunk: int = 0) -> np.ndarray:
    """(n,) int64 index of the nearest centroid (k, d) of each row of `x` (n, d): the CPU's codes,
    computed on `device` (on a GPU, checked by `assign_codes_checked`); `chunk` rows a product
    (0: CPU_BUFFER // k). The codes do not depend on `chunk` or on torch's thread count."""
    if torch.device(device).type != "cpu":
        return assign_codes_checked(x, centroids, device)
    x = torch.as_tensor(np.asarray(x, np.float32))
    c = torch.as_tensor(np.asarray(centroids, np.float32))
    groups = -(-len(c) // GROUP)
    padded = torch.zeros(groups * GROUP, c.shape[1])
    padded[:len(c)] = c
    c_sq = torch.full((groups * GROUP,), torch.inf)
    c_sq[:len(c)] = (c * c).sum(1)
    chunk = chunk or max(64, CPU_BUFFER // len(padded))
    out = torch.empty(len(x), dtype=torch.int64)
    threads = torch.get_num_threads()
    parts = min(threads, -(-len(x) // chunk))
    if parts <= 1:
        _search_rows(x, padded, c_sq, out, chunk)
        return out.numpy()
    bounds = np.linspace(0, len(x), parts + 1).astype(int).tolist()
    try:
        with ThreadPoolExecutor(parts) as pool:
            list(pool.map(lambda a, b: _search_rows(x[a:b], padded, c_sq, out[a:b], chunk, single_threaded=True),
                          bounds[:-1], bounds[1:]))
    finally:
        torch.set_num_threads(threads)  # the setting is process-wide for MKL
    return out.numpy()


def _search_rows(x: torch.Tensor, padded: torch.Tensor, c_sq: torch.Tensor, out: torch.Tensor, chunk: int,
                 single_threaded: bool = False) -> None:
    """Write into `out` the first nearest of `padded`'s centroids (groups of `GROUP`, padding at
    distance `c_sq` = +inf) to each row of `x`, `chunk` rows a product (module docstring)."""
    if single_threaded:
        torch.set_num_threads(1)
    groups = len(padded) // GROUP
    buffer = torch.empty(min(chunk, len(x)), len(padded))
    for i in range(0, len(x), chunk):
        xb = x[i:i + chunk]
        n = len(xb)
        distances = torch.addmm(c_sq, xb, padded.T, alpha=-2.0, out=buffer[:n]).view(n, groups, GROUP)
        group = torch.min(torch.amin(distances, 2), 1).indices
        within = torch.min(distances[torch.arange(n), group], 1).indices
        out[i:i + n] = group * GROUP + within


def assign_codes_checked(x: np.ndarray | torch.Tensor, centroids: np.ndarray | torch.Tensor,
                         device: torch.device | str, chunk: int = DEVICE_CHUNK,
                         near: list[int] | None = None) -> np.ndarray:
    """`assign_codes`' CPU codes, searched on `device` and near ties rechecked on the CPU (the
    module's docstring). `near`, if given, gets the number of rows rechecked appended."""
    if torch.device(device).type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # the bound is fp32's
    x = torch.as_tensor(np.asarray(x, np.float32))
    c = torch.as_tensor(np.asarray(centroids, np.float32))
    c_fast = c.to(device)
    c_sq = (c_fast * c_fast).sum(1)
    c_sq_cpu = (c * c).sum(1)  # the CPU's, as `assign_codes` computes them
    c_max = float(c.norm(dim=1).max())
    unit = torch.finfo(torch.float32).eps / 2
    out = torch.empty(len(x), dtype=torch.int64)
    rechecked = 0
    for i in range(0, len(x), chunk):
        xb = x[i:i + chunk]
        xf = xb.to(device)
        distances = torch.addmm(c_sq, xf, c_fast.T, alpha=-2.0)
        nearest, codes = torch.min(distances, 1)
        # 1.01: margin for the rounding of the bound itself
        delta = (x.shape[1] + 4) * unit * (c_max ** 2 + 2 * xf.norm(dim=1) * c_max) * 1.01
        candidates = distances <= (nearest + 4 * delta)[:, None]
        tie = candidates.sum(1) > 1
        codes = codes.cpu()
        rows = torch.nonzero(tie)[:, 0]
        if len(rows):
            rows_cpu = rows.cpu()
            codes[rows_cpu] = _recheck(xb[rows_cpu], c, c_sq_cpu, candidates[rows].cpu())
            rechecked += len(rows)
        out[i:i + len(xb)] = codes
    if near is not None:
        near.append(rechecked)
    return out.numpy()


def _recheck(x: torch.Tensor, c: torch.Tensor, c_sq: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """The CPU's nearest centroid of each row of `x`, computed against the union of the
    candidates (rows x k, bool) of `RECHECK_ROWS` rows at a time: every centroid that can be a
    row's CPU nearest is among its own candidates, and the union's ascending order keeps the
    first index among equal values."""
    out = torch.empty(len(x), dtype=torch.int64)
    for i in range(0, len(x), RECHECK_ROWS):
        columns = torch.nonzero(candidates[i:i + RECHECK_ROWS].any(0))[:, 0]
        distances = torch.addmm(c_sq[columns], x[i:i + RECHECK_ROWS], c[columns].T, alpha=-2.0)
        out[i:i + RECHECK_ROWS] = columns[distances.argmin(1)]
    return out
