"""Training steps per second with and without `torch.compile` (`train.compile`): the default model
on random codes, k=1,024 (or the k given), batches of 16 crops of 8 frames x 8x8 cells; eager and
compiled alternate twice, each a fresh model, median of 5 x 10 steps after 3 warm-up steps.

    python benchmarks/compile_step.py [k]
"""
import videolm  # noqa: F401 (first: it sets how OpenMP threads wait, before torch loads)

# isort: split

import statistics
import sys
import time

import numpy as np
import torch

from videolm.codes.codebook import Codebook
from videolm.config import ModelConfig
from videolm.model.build import build_model


def bench(codebook: Codebook, codes: torch.Tensor, compiled: bool) -> tuple[float, float]:
    """(seconds of the first step, median seconds per step) of a fresh model, eager or compiled."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(), codebook).train()
    optimizer = torch.optim.Adam(model.parameters(), 2e-3)
    net = torch.compile(model) if compiled else model

    def step() -> None:
        _, loss, _ = net(codes[:, :-1], targets=codes[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    start = time.perf_counter()
    step()  # compiles, if compiled
    first = time.perf_counter() - start
    for _ in range(3):
        step()
    times = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(10):
            step()
        times.append((time.perf_counter() - start) / 10)
    return first, statistics.median(times)


def main() -> None:
    k = int(sys.argv[1]) if len(sys.argv) > 1 else 1024
    codebook = Codebook(np.random.default_rng(0).normal(size=(k, 64)).astype(np.float32), 1.0, 8)
    codes = torch.randint(0, k, (16, 9, 8, 8), generator=torch.Generator().manual_seed(0))  # (B, T + 1, H, W)
    positions = codes[:, 1:].numel()
    for compiled in [False, True, False, True]:
        first, step = bench(codebook, codes, compiled)
        print(f"compile={compiled}: first step {first:.1f} s, median step {step * 1000:.1f} ms, "
              f"{positions / step:,.0f} positions/s", flush=True)


if __name__ == "__main__":
    main()
