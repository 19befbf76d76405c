"""The codebook: k-means centroids of normalized gray patches, and the `codebook.h5` file.

`Codebook` owns the artifact: `Codebook.fit` (MiniBatchKMeans), `save`, `Codebook.load`, and
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
from sklearn.cluster import MiniBatchKMeans

from videolm.config import CodebookConfig
from videolm.io import load_h5, save_h5
from videolm.metrics import psnr
from videolm.patches import PatchSample, reconstruct


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
    def fit(cls, sample: PatchSample, cfg: CodebookConfig, seed: int) -> Codebook:
        """MiniBatchKMeans over the sample's normalized training patches."""
        kmeans = MiniBatchKMeans(
            n_clusters=cfg.k,
            init=cfg.init,
            init_size=cfg.init_size or min(len(sample.train), 3 * cfg.k),
            batch_size=cfg.batch_size,
            max_iter=cfg.max_iter,
            max_no_improvement=None,
            tol=0.0,
            n_init=1,
            random_state=seed,
        )
        kmeans.fit(sample.train)
        return cls(kmeans.cluster_centers_.astype(np.float32), sample.std, sample.size)

    def save(self, path: str | Path) -> None:
        save_h5(path, "fit_codebook", {"centroids": self.centroids},
                {"std": self.std, "patch_size": self.size, "digest": self.digest})

    @classmethod
    def load(cls, path: str | Path) -> Codebook:
        data, attrs = load_h5(path, "codebook", "fit_codebook")
        return cls(data["centroids"], float(attrs["std"]), int(attrs["patch_size"]))

    def assign(self, patches: np.ndarray) -> np.ndarray:
        """(n, size*size) patches in gray levels -> (n,) int64 index of the nearest centroid."""
        return assign_codes(patches / self.std, self.centroids)

    def atoms(self) -> np.ndarray:
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
