"""The codebook fit: `Codebook.fit` (MiniBatchKMeans, the pipeline's params) against
`faiss.Kmeans` (full-batch Lloyd) given the same time, on real patches.

The patches are 8x8 gray patches at random positions of the sample videos (the installed
clips of `videolm.data.samples`, decoded at the pipeline's scale), normalized as the pipeline does. faiss gets as many Lloyd
iterations as fit in the time our fit took (timed from runs of 1 and 3 iterations), so
the comparison is quality at equal time: the mean squared distance of the patches to their
nearest centroid (training MSE) and of held-out patches from other random positions.
"""

from __future__ import annotations

import time

import faiss
import numpy as np

from videolm.codes.codebook import Codebook
from videolm.codes.patches import PatchSample, sample_patches
from videolm.codes.search import assign_codes
from videolm.config import CodebookConfig, DataConfig
from videolm.data.samples import find_sample_files
from videolm.data.video import decode_gray

SIZE = 8


def real_patches(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, 64) training and (n // 10, 64) held-out patches of the sample videos, in gray / std."""
    cfg = DataConfig()
    rng = np.random.default_rng(seed)
    videos = [np.stack(list(decode_gray(path, cfg.scale))) for path in find_sample_files()]
    share = rng.multinomial(n + n // 10, [v.size / sum(v.size for v in videos) for v in videos])
    patches = np.concatenate([sample_patches(v, m, SIZE, rng) for v, m in zip(videos, share)])
    patches = patches[rng.permutation(len(patches))] / np.concatenate(videos, axis=None).std()
    return patches[:n], patches[n:]


def describe(cfg: CodebookConfig) -> str:
    if cfg.method == "lloyd":
        return f"Lloyd, {cfg.max_iter} iterations, init {cfg.init}"
    return f"MiniBatchKMeans, {cfg.max_iter} passes of batch {cfg.batch_size}, init {cfg.init}"


def mse(x: np.ndarray, centroids: np.ndarray) -> float:
    return float(((x - centroids[assign_codes(x, centroids)]) ** 2).sum(1).mean())


def bench_codebook(n: int, k: int, method: str, passes: int) -> dict:
    train, heldout = real_patches(n)
    cfg = CodebookConfig(k=k, method=method, max_iter=passes)
    start = time.perf_counter()
    ours = Codebook.fit(PatchSample(train, heldout, 1.0, SIZE), cfg, seed=0).centroids
    ours_s = time.perf_counter() - start

    def faiss_fit(iterations: int) -> tuple[np.ndarray, float]:
        kmeans = faiss.Kmeans(train.shape[1], k, niter=iterations, seed=0, max_points_per_centroid=n)
        start = time.perf_counter()
        kmeans.train(train)
        return kmeans.centroids, time.perf_counter() - start

    (_, one), (_, three) = faiss_fit(1), faiss_fit(3)
    per_iteration = max((three - one) / 2, 1e-9)
    iterations = max(1, round((ours_s - (one - per_iteration)) / per_iteration))
    theirs, theirs_s = faiss_fit(iterations)
    ratio, heldout_ratio = mse(train, ours) / mse(train, theirs), mse(heldout, ours) / mse(heldout, theirs)
    return {"name": f"codebook fit ({method}), {n:,} patches, k={k:,}", "unit": "s",
            "ours": ours_s, "ours_range": (ours_s, ours_s),
            "ref_name": f"faiss.Kmeans, {iterations} iterations", "ref": theirs_s, "ref_range": (theirs_s, theirs_s),
            "note": f"{describe(cfg)}: MSE "
                    f"{ratio:.4f}x faiss's on the patches, {heldout_ratio:.4f}x on {len(heldout):,} held-out ones "
                    f"(floor: <= 1.01x, in the ratio column)",
            "ratio": ratio}
