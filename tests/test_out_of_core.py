"""Out-of-core training data: a training run's peak memory does not grow with the number of videos,
because crops and validation videos are read from the code files as they are used.

Each run is its own process, so that its peak RSS is its own (`os.wait4`). The control run holds
the same grids in memory, as training did before, and shows the test can see the growth."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import K, save_grid

from videolm.codes.grids import CodeGrid

ROOT = Path(__file__).resolve().parents[1]
FRAMES, ROWS, COLS = 200, 60, 80  # 1.9 MB of uint16 codes per video
MIB = 2**20

TRAIN = """
import sys
from videolm.codes.codebook import Codebook
from videolm.codes.grids import CodeGrid, load_code_grids
from videolm.config import ModelConfig, Params, TrainConfig
from videolm.training.train import train_model

folder, in_memory = sys.argv[1], sys.argv[2] == "1"
codebook = Codebook.load(f"{folder}/codebook.h5")
grids = load_code_grids(f"{folder}/codes", codebook)
if in_memory:  # the control: every grid read whole, as training did before
    grids = [CodeGrid(g.video_id, g.codes[:], g.train_end, g.val_end) for g in grids]
params = Params(model=ModelConfig(embed_dim=8, hidden=8, head="independent", dropout=0.0),
                train=TrainConfig(epochs=2, steps_per_epoch=3, batch_size=4, crop=6, bptt=4, threads=1))
train_model(grids, codebook, params)
"""


def write_videos(folder: Path, codebook, n: int) -> Path:
    (folder / "codes").mkdir(parents=True)
    codebook.save(folder / "codebook.h5")
    rng = np.random.default_rng(0)
    for i in range(n):
        codes = rng.integers(0, K, (FRAMES, ROWS, COLS)).astype(np.uint16)
        val_end = 190 if i == 0 else 180  # one validation video: scoring time does not grow with n
        save_grid(CodeGrid(f"v{i:03d}", codes, 180, val_end), folder / f"codes/v{i:03d}.h5", codebook, codebook.size, "v.mp4")
    return folder


# Runs argv[1:] and prints its peak RSS. A process's ru_maxrss starts from the size of the process
# it was forked from (the count survives exec), and pytest's process grows to GBs over the suite:
# the run is started from this bare interpreter instead, so its peak is its own.
LAUNCHER = """
import os, sys
pid = os.posix_spawn(sys.argv[1], sys.argv[1:], os.environ)
_, status, usage = os.wait4(pid, 0)
print(usage.ru_maxrss)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def peak_rss(folder: Path, in_memory: bool) -> float:
    """Peak resident memory (MiB) of one training run in a fresh process. Large blocks are given back
    to the system when freed (glibc's mmap threshold fixed), so that the peak measures what the run
    holds, not where glibc's heap happened to fragment (otherwise +-5 MiB from run to run)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "MALLOC_MMAP_THRESHOLD_": "65536"}
    run = subprocess.run([sys.executable, "-c", LAUNCHER, sys.executable, "-c", TRAIN, str(folder),
                          str(int(in_memory))], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    return int(run.stdout.split()[-1]) * 1024 / MIB  # ru_maxrss is in KiB on Linux


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss in KiB, /proc: Linux")
def test_peak_memory_is_flat_when_videos_grow_tenfold(codebook, tmp_path):
    few = write_videos(tmp_path / "few", codebook, 4)
    many = write_videos(tmp_path / "many", codebook, 40)
    codes_growth = 36 * FRAMES * ROWS * COLS * 2 / MIB  # 66 MiB more codes
    lazy = peak_rss(many, False) - peak_rss(few, False)
    held = peak_rss(many, True) - peak_rss(few, True)
    assert held > 0.8 * codes_growth, (held, codes_growth)  # holding them shows: the test can see growth
    # reading them as used: flat, but for the 4 more open files (OPEN_FILES = 8) at ~0.6 MiB each
    # (measured: +4.7 MiB lazy, +68 MiB held)
    assert lazy < 0.15 * codes_growth, (lazy, held)
