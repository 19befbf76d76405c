"""The benchmark command runs end to end at its smallest size and writes its table (timings are
not asserted: they live in benchmarks/RESULTS.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # about a minute: it starts a dozen processes that import torch
def test_benchmarks_run_at_the_smallest_size(tmp_path):
    out = tmp_path / "RESULTS.md"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks/run.py"), "--smallest", "--repeats", "1",
                          "--out", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    table = out.read_text()
    assert "| decode to gray, 128x96, 8 frames |" in table and "ffmpeg CLI -pix_fmt gray" in table
    assert "frames differ by at most 0 gray levels" in table  # the same frames as ffmpeg's
    assert "| encode, 2,000 patches, k=64, d=64 |" in table and "identical codes: 100.0000%" in table
    for stage in ("extract_frames", "encode"):  # each stage's peak memory, on a video 4x longer than another
        assert f"| {stage} peak RSS, 64x48, 80 frames |" in table
    assert table.count("same stage, the 1x video (20 frames)") == 2
    for method in ("minibatch", "lloyd"):  # each k-means against faiss given the same time
        assert f"| codebook fit ({method}), 5,000 patches, k=64 |" in table
    assert "| train step, k=64, cpu fp32 |" in table and "before: plain F.cross_entropy" in table
    for policy in ("shipped (OMP_WAIT_POLICY=PASSIVE)", "OpenMP default (spinning)"):
        assert f"| train k=64 beside a busy process, {policy} |" in table
        assert f"| two trainings k=64 side by side, {policy} |" in table
    assert "| extract_video (decode + gzip HDF5), 320x240, 8 frames |" in table
    assert "| encode_video, k=64 (patches, search, error, HDF5), 320x240, 8 frames |" in table
    assert "| extract_frames, 2 clips of 8 frames at 320x240, 2 workers |" in table or "1 workers |" in table
    assert "CPU cores (affinity):" in table
