"""Training throughput: the chunked linear + cross-entropy against the plain formulation, and
training on a shared machine (beside a busy process, two trainings side by side).

One training step is what `train.train_model` does per batch (forward, loss, backward, clip,
Adam) on the default model and batch (16 crops of 8 frames x 8 x 8 cells = 8,192 positions),
with a codebook of k random atoms. Positions/s = 8,192 / median seconds per step.
"""

from __future__ import annotations

import functools
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from videolm.codes.codebook import Codebook
from videolm.config import ModelConfig, TrainConfig
from videolm.model.build import build_model

TRAIN = TrainConfig()
POSITIONS = TRAIN.batch_size * TRAIN.bptt * TRAIN.crop * TRAIN.crop


def step_timer(k: int, plain: bool, device: str = "cpu", bf16: bool = False):
    """A function that runs one training step and returns its seconds; `plain` scores the full
    logits with `F.cross_entropy` (the formulation before the chunked loss)."""
    torch.manual_seed(0)
    atoms = np.random.default_rng(0).normal(size=(k, 64)).astype(np.float32)
    model = build_model(ModelConfig(), Codebook(atoms, 40.0, 8)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), TRAIN.lr)
    clip = torch.randint(0, k, (TRAIN.batch_size, TRAIN.bptt + 1, TRAIN.crop, TRAIN.crop), device=device)

    def step() -> float:
        start = time.perf_counter()
        with torch.autocast(device, torch.bfloat16, enabled=bf16):
            if plain:
                logits, _, _ = model(clip[:, :-1])
                loss = F.cross_entropy(logits.reshape(-1, k).float(), clip[:, 1:].reshape(-1))
            else:
                _, loss, _ = model(clip[:, :-1], targets=clip[:, 1:])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), TRAIN.grad_clip)
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    return step


def step_flops(k: int) -> float:
    """FLOPs of one step (forward + backward = 3x the forward's multiply-adds x 2): the atom
    embedding of all k codes, the input convolution, the recurrence and the head."""
    m = ModelConfig()
    cells = TRAIN.batch_size * TRAIN.bptt * TRAIN.crop * TRAIN.crop
    forward = (k * 64 * m.embed_dim  # atom map
               + cells * m.embed_dim * m.hidden * m.kernel_size ** 2  # input convolution
               + cells * m.hidden * m.hidden  # recurrence
               + cells * m.hidden * m.embed_dim  # head projection
               + cells * m.embed_dim * k)  # scores against the k code vectors
    return 3 * 2 * forward


def median_rate(step, steps: int) -> tuple[float, float, float]:
    """(median, min, max) positions/s over `steps` steps, after one warm-up step."""
    step()
    rates = [POSITIONS / step() for _ in range(steps)]
    return statistics.median(rates), min(rates), max(rates)


def matmul_peak(device: str = "cpu") -> float:
    """GFLOP/s of a large fp32 matmul: the practical peak the training figures are set against."""
    a = torch.randn(2048, 2048, device=device)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        a @ a
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return 2 * 2048 ** 3 / min(times) / 1e9


def bench_train(ks: list[int], steps: int) -> list[dict]:
    """At each k, the chunked loss as shipped against the plain loss with OpenMP's default
    spinning threads, each in a process of its own; on CUDA, when present, chunked against
    plain in this process, fp32 and bf16 autocast."""
    peak = matmul_peak("cpu")
    rows = []
    for k in ks:
        ours = alone(k, steps, spinning=False)
        ref = rates_in_processes(1, False, k, steps, plain=True, spinning=True)[0]
        spinning = alone(k, steps, spinning=True)
        gflops = step_flops(k) / POSITIONS * ours[0] / 1e9
        rows.append({"name": f"train step, k={k:,}, cpu fp32", "unit": "positions/s", "ours": ours[0],
                     "ours_range": ours[1:], "ref_name": "before: plain F.cross_entropy, OpenMP spinning",
                     "ref": ref[0], "ref_range": ref[1:],
                     "note": f"ours {gflops:.0f} GFLOP/s = {gflops / peak:.0%} of a 2048^2 fp32 matmul's {peak:.0f} "
                             f"GFLOP/s; ours with spinning OpenMP threads: {spinning[0]:,.0f}"})
    if torch.cuda.is_available():
        peak = matmul_peak("cuda")
        for k in ks:
            for bf16 in (False, True):
                ours = median_rate(step_timer(k, False, "cuda", bf16), steps)
                ref = median_rate(step_timer(k, True, "cuda", bf16), steps)
                gflops = step_flops(k) / POSITIONS * ours[0] / 1e9
                rows.append({"name": f"train step, k={k:,}, cuda {'bf16 autocast' if bf16 else 'fp32'}",
                             "unit": "positions/s", "ours": ours[0], "ours_range": ours[1:],
                             "ref_name": "plain F.cross_entropy", "ref": ref[0], "ref_range": ref[1:],
                             "note": f"ours {gflops:.0f} GFLOP/s; fp32 matmul {peak:.0f} GFLOP/s"})
    return rows


# ---------------------------------------------------------------- a shared machine

RATE_SCRIPT = """
import sys
{preload}
sys.path.insert(0, {here!r})
from training import median_rate, step_timer
print(*median_rate(step_timer({k}, {plain}), {steps}))
"""


def rates_in_processes(n: int, busy: bool, k: int, steps: int, plain: bool = False,
                       spinning: bool = False) -> list[tuple[float, float, float]]:
    """(median, min, max) positions/s of `n` trainings run side by side, each in a process of its
    own, beside one CPU-bound busy process if `busy`. `spinning`: OpenMP's default waiting
    (torch is imported before videolm can choose the passive policy)."""
    preload = ("import torch  # OpenMP reads OMP_WAIT_POLICY now, before videolm sets it" if spinning else
               "import videolm  # sets OMP_WAIT_POLICY=PASSIVE before torch loads OpenMP, as in the stages")
    script = RATE_SCRIPT.format(preload=preload, here=str(Path(__file__).parent), k=k, plain=plain, steps=steps)
    env = {key: value for key, value in os.environ.items() if key not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        runs = [subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True)
                for _ in range(n)]
        return [tuple(float(v) for v in run.communicate()[0].split()) for run in runs]
    finally:
        if spinner:
            spinner.kill()
            spinner.wait()


@functools.cache
def alone(k: int, steps: int, spinning: bool) -> tuple[float, float, float]:
    """One training alone on the idle machine, measured once per process: the train
    and shared pairs both compare against it (at `--smallest` they ask for the same k and steps)."""
    return rates_in_processes(1, False, k, steps, spinning=spinning)[0]


def bench_shared(k: int, steps: int) -> list[dict]:
    """Training beside a busy process and two trainings side by side, against one training
    alone on the idle machine, with the shipped passive OpenMP waiting (`videolm/__init__.py`)
    and with OpenMP's default spinning."""
    rows = []
    for spinning in (False, True):
        idle = alone(k, steps, spinning)[0]
        busy = rates_in_processes(1, True, k, steps, spinning=spinning)[0][0]
        pair = sum(rate[0] for rate in rates_in_processes(2, False, k, steps, spinning=spinning))
        policy = "OpenMP default (spinning)" if spinning else "shipped (OMP_WAIT_POLICY=PASSIVE)"
        rows += [{"name": f"train k={k:,} beside a busy process, {policy}", "unit": "positions/s",
                  "ours": busy, "ours_range": (busy, busy), "ref_name": "alone, idle", "ref": idle,
                  "ref_range": (idle, idle), "note": "floor 0.55x"},
                 {"name": f"two trainings k={k:,} side by side, {policy}", "unit": "positions/s, both",
                  "ours": pair, "ours_range": (pair, pair), "ref_name": "one alone, idle", "ref": idle,
                  "ref_range": (idle, idle), "note": "floor 1.0x"}]
    return rows
