"""The cost of `train.own_predictions`: a default training step (k=1,024, 16 crops of 8 frames of
8x8 cells, one thread) against the sampling pass at p=0.25, p=0.5 and p=0.25 with two passes, and
`sample_linear` alone on all of a batch's 7,168 rows (medians of 15 calls after 3 warm-up ones).
Run from a workspace where `dvc repro` has made data/codebook.h5:

    python benchmarks/own_predictions.py
"""
import videolm  # noqa: F401 (first: it sets how OpenMP threads wait, before torch loads)

# isort: split

import statistics
import time

import torch

from videolm.codes.codebook import Codebook
from videolm.config import ModelConfig
from videolm.model.build import build_model
from videolm.model.linear_ce import sample_linear
from videolm.training.train import with_own_predictions


def median_ms(f) -> float:
    for _ in range(3):
        f()
    times = []
    for _ in range(15):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    torch.set_num_threads(1)
    codebook = Codebook.load("data/codebook.h5")
    model = build_model(ModelConfig(), codebook).train()
    clip = torch.randint(0, codebook.k, (16, 9, 8, 8), generator=torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(0)

    def step():
        _, loss, _ = model(clip[:, :-1], targets=clip[:, 1:])
        loss.backward()

    print(f"training step: {median_ms(step):.0f} ms")
    for fraction, passes in [(0.25, 1), (0.5, 1), (0.25, 2)]:
        ms = median_ms(lambda: with_own_predictions(model, clip[:, :-1], fraction, passes, generator))
        print(f"sampling pass, own_predictions={fraction}, own_passes={passes}: {ms:.0f} ms")
    feats, weight, bias, _ = model.head_inputs(clip[:, 1:-1])
    feats, weight, bias = feats.detach(), weight.detach(), bias.detach()
    ms = median_ms(lambda: sample_linear(feats, weight, bias, generator))
    print(f"sample_linear on {feats[..., 0].numel()} rows: {ms:.0f} ms")


if __name__ == "__main__":
    main()
