"""The codebook: k-means over normalized gray patches, and nearest-centroid assignment.

Two MiniBatchKMeans defaults are wrong for large k and are set deliberately here:
- `init`: k-means++ over 3*k points costs minutes at k=10,000 on a small CPU; random
  init from the data (the default here) costs nothing, and the many mini-batch passes
  plus `reassignment_ratio` (which re-seeds starved centroids) make up the difference.
- `max_no_improvement=10` stops after a dozen noisy mini-batch steps at large k; it is
  turned off so that the fit runs the requested `max_iter` passes.
"""

from __future__ import annotations

import hashlib
import time

import numpy as np
import torch
from sklearn.cluster import MiniBatchKMeans

from videolm.config import CodebookConfig


def fit_codebook(patches: np.ndarray, cfg: CodebookConfig, seed: int) -> tuple[np.ndarray, float]:
    """(n, d) normalized patches -> ((k, d) float32 centroids, fit seconds)."""
    kmeans = MiniBatchKMeans(
        n_clusters=cfg.k,
        init=cfg.init,
        init_size=cfg.init_size or min(len(patches), 3 * cfg.k),
        batch_size=cfg.batch_size,
        max_iter=cfg.max_iter,
        max_no_improvement=None,
        tol=0.0,
        n_init=1,
        random_state=seed,
    )
    start = time.perf_counter()
    kmeans.fit(patches)
    return kmeans.cluster_centers_.astype(np.float32), time.perf_counter() - start


def assign_codes(x: np.ndarray | torch.Tensor, centroids: np.ndarray | torch.Tensor,
                 chunk: int = 16384) -> np.ndarray:
    """Index of the nearest centroid of each row of `x` (n, d), computed in bounded chunks.

    argmin ||x - c||^2 = argmin (||c||^2 - 2 x.c): one matrix product per chunk, so peak
    memory is chunk x k floats, never n x k.
    """
    x = torch.as_tensor(np.asarray(x, np.float32))
    c = torch.as_tensor(np.asarray(centroids, np.float32))
    c_sq = (c * c).sum(1)  # (k,)
    out = torch.empty(len(x), dtype=torch.int64)
    for i in range(0, len(x), chunk):
        xb = x[i:i + chunk]  # (n, d)
        out[i:i + chunk] = torch.addmm(c_sq, xb, c.T, alpha=-2.0).argmin(1)
    return out.numpy()


def codebook_digest(centroids: np.ndarray) -> str:
    """Short content hash: code grids record it so a stale codebook pairing fails loudly."""
    return hashlib.sha256(np.ascontiguousarray(centroids, np.float32).tobytes()).hexdigest()[:16]
