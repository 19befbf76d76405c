"""The codebook: k-means centroids of normalized gray patches, and the `codebook.h5` file.

`Codebook` owns the artifact: `Codebook.fit` (MiniBatchKMeans, or full-batch Lloyd with
`codebook.method=lloyd`: faster at paper scale, benchmarks/RESULTS.md), `save`, `Codebook.load`, and
the operations every later stage needs (nearest-centroid assignment, decoding codes to
pixels). The centroids are in units of gray / std (the training frames' standard deviation,
the paper's only preprocessing), so `std` travels with them.

Two MiniBatchKMeans defaults are wrong for large k and are set deliberately here:
- `init`: k-means++ over 3*k points costs minutes at k=10,000 on a small CPU; random
  init from the data (the default here) costs nothing, and the many mini-batch passes
  plus `reassignment_ratio` (which re-seeds starved centroids) make up the difference.
- `max_no_improvement=10` stops after a dozen noisy mini-batch steps at large k; it is
  turned off so that the fit runs the requested `max_iter` passes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from videolm.codes.patches import PatchSample, reconstruct
from videolm.codes.search import assign_codes
from videolm.config import CodebookConfig
from videolm.image_metrics import psnr
from videolm.io import load_h5, save_h5


@dataclass(eq=False)
class Codebook:
    centroids: np.ndarray  # (k, size*size) float32, in units of gray / std
    std: float  # gray levels per unit
    size: int  # patch side in pixels

    @property
    def k(self) -> int:
        return len(self.centroids)

    @cached_property
    def digest(self) -> str:
        """Short content hash: code grids and checkpoints record it, so a stale pairing fails loudly."""
        return hashlib.sha256(np.ascontiguousarray(self.centroids, np.float32).tobytes()).hexdigest()[:16]

    @classmethod
    def fit(cls, sample: PatchSample, cfg: CodebookConfig, seed: int, device: torch.device | str = "cpu") -> Codebook:
        """k-means over the sample's normalized training patches, by `cfg.method`; Lloyd searches on
        `device` (the same centroids on any device), MiniBatchKMeans runs on the CPU."""
        init_size = cfg.init_size or min(len(sample.train), 3 * cfg.k)
        if cfg.method == "lloyd":
            centroids = lloyd_kmeans(sample.train, cfg.k, cfg.max_iter, cfg.init, init_size, seed, device)
        else:
            from sklearn.cluster import MiniBatchKMeans  # imported where used: the search and scoring never need it

            kmeans = MiniBatchKMeans(n_clusters=cfg.k, init=cfg.init, init_size=init_size, batch_size=cfg.batch_size,
                                     max_iter=cfg.max_iter, max_no_improvement=None, tol=0.0, n_init=1,
                                     random_state=seed)
            centroids = kmeans.fit(sample.train).cluster_centers_
        return cls(centroids.astype(np.float32), sample.std, sample.size)

    def save(self, path: str | Path) -> None:
        save_h5(path, "fit_codebook", {"centroids": self.centroids},
                {"std": self.std, "patch_size": self.size, "digest": self.digest})

    @classmethod
    def load(cls, path: str | Path) -> Codebook:
        data, attrs = load_h5(path, "codebook", "fit_codebook")
        return cls(data["centroids"], float(attrs["std"]), int(attrs["patch_size"]))

    def assign(self, patches: np.ndarray, device: torch.device | str = "cpu") -> np.ndarray:
        """(n, size*size) patches in gray levels -> (n,) int64 index of the nearest centroid
        (searched on `device`: the same codes on any)."""
        return assign_codes(patches / self.std, self.centroids, device)

    def gray_patches(self) -> np.ndarray:
        """(k, size, size) centroids in gray levels."""
        return (self.centroids * self.std).reshape(self.k, self.size, self.size)

    def mirror_map(self) -> np.ndarray:
        """(k,) index of the code nearest to each centroid mirrored left-right."""
        flipped = self.centroids.reshape(self.k, self.size, self.size)[:, :, ::-1].reshape(self.k, -1)
        return assign_codes(flipped, self.centroids)

    def decode(self, codes: np.ndarray, stride: int) -> np.ndarray:
        """(N, rows, cols) codes -> (N, H, W) float gray frames, overlaps averaged."""
        return reconstruct(self.centroids[codes] * self.std, self.size, stride)

    def quality(self, sample: PatchSample) -> dict:
        """Held-out PSNR of patches replaced by their nearest centroid, and unused centroids."""
        used = np.bincount(assign_codes(sample.train, self.centroids), minlength=self.k) > 0
        rebuilt = self.centroids[assign_codes(sample.heldout, self.centroids)]
        return {"k": self.k, "heldout_psnr": psnr(sample.heldout * self.std, rebuilt * self.std),
                "unused_centroids": int((~used).sum())}


def lloyd_kmeans(x: np.ndarray, k: int, iterations: int, init: str, init_size: int, seed: int,
                 device: torch.device | str = "cpu") -> np.ndarray:
    """(k, d) centroids from full-batch Lloyd iterations over x (n, d), as `faiss.Kmeans` runs them.

    Each iteration assigns every point with `assign_codes` (the encoder's search, on `device`,
    the same codes on any) and moves each centroid to the mean of its points (on the CPU, so the
    sums are added in one order). A centroid left without points
    takes half of the largest cluster, as faiss does: it becomes a copy of that cluster's
    centroid, and the two are nudged apart by 1/1024 of their coordinates. The initial
    centroids are `k` random points or k-means++ over `init_size` random points (scikit-learn's).
    """
    rng = np.random.default_rng(seed)
    points = torch.from_numpy(np.ascontiguousarray(x, np.float32))
    if init == "k-means++":
        from sklearn.cluster import kmeans_plusplus

        pool = x[rng.choice(len(x), init_size, replace=False)]
        start, _ = kmeans_plusplus(pool, k, random_state=np.random.RandomState(seed))
    else:
        start = x[rng.choice(len(x), k, replace=False)]
    centroids = torch.from_numpy(np.array(start, np.float32))
    nudge = torch.where(torch.arange(x.shape[1]) % 2 == 0, 1.0, -1.0) / 1024
    for _ in range(iterations):
        codes = torch.from_numpy(assign_codes(points, centroids, device))
        counts = torch.bincount(codes, minlength=k)
        centroids = torch.zeros_like(centroids).index_add_(0, codes, points) / counts.clamp(min=1)[:, None]
        for empty in torch.nonzero(counts == 0)[:, 0].tolist():
            largest = int(counts.argmax())
            centroids[empty] = centroids[largest] * (1 + nudge)
            centroids[largest] *= 1 - nudge
            counts[empty] = counts[largest] // 2
            counts[largest] -= counts[empty]
    return centroids.numpy()
