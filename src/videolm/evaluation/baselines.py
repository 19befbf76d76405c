"""Baselines fit on training codes: unigram, and copy-previous.

- unigram: p(c) = count(c) + 1 over training codes (add-one smoothing over all k).
- copy-previous: the previous frame's code at the same place gets probability `alpha`
  (the fraction of training positions whose code did not change); the other codes share
  1 - alpha in proportion to their unigram probability.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from videolm.codes.grids import CodeGrid


@dataclass
class Baselines:
    unigram: np.ndarray  # (k,) probabilities
    alpha: float  # P(code == previous code)

    def unigram_nll(self, targets: np.ndarray) -> np.ndarray:
        return -np.log(self.unigram[targets])

    def copy_nll(self, previous: np.ndarray, targets: np.ndarray) -> np.ndarray:
        rest = (1 - self.alpha) * self.unigram[targets] / (1 - self.unigram[previous])
        return -np.log(np.where(previous == targets, self.alpha, rest))


def fit_baselines(grids: list[CodeGrid], k: int) -> Baselines:
    counts = np.ones(k, np.float64)
    same = total = 0
    for grid in grids:
        start, stop = grid.part("train")
        codes = grid.codes[start:stop].astype(np.int64)
        counts += np.bincount(codes.ravel(), minlength=k)
        if len(codes) > 1:
            same += int((codes[1:] == codes[:-1]).sum())
            total += codes[1:].size
    alpha = (same + 1) / (total + 2)
    return Baselines(counts / counts.sum(), alpha)
