"""The device check's CPU smoke run: every stage through the same code a GPU run takes, with
`device=cpu` and the smallest sizes, and its report written into its own section."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("sample_patches", "fit_codebook", "encode", "train", "train_decoder", "evaluate")


@pytest.mark.slow  # ~30 s: worker processes and a torchrun launch, each importing torch
def test_device_check_smoke_run_on_the_cpu(tmp_path):
    out = tmp_path / "RESULTS-gpu.md"
    out.write_text("# kept\n\n<!-- device-check:cuda:start -->\nthe GPU section\n<!-- device-check:cuda:end -->\n")
    # as on a bare GPU machine: no PyAV, Hydra, DVC or DVCLive to import (in the check's own process)
    bare = ("import runpy, sys; sys.modules.update(dict.fromkeys(['av', 'hydra', 'dvc', 'dvclive'])); "
            "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", bare, "benchmarks/device_check.py", "--device", "cpu", "--smallest",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    assert "the GPU section" in text  # another device's section is kept as it was
    cpu = text[text.index("<!-- device-check:cpu:start -->"):text.index("<!-- device-check:cpu:end -->")]
    rows = {line.split(" | ")[0].strip("| "): line for line in cpu.splitlines() if line.startswith("| ")}
    for stage in STAGES:
        assert stage in rows, stage
        assert float(rows[stage].split(" | ")[2]) >= 0  # its seconds
    assert "**total**" in rows
    identical = next(line for line in cpu.splitlines() if "codes against the CPU's" in line)
    compared = identical.split(" of ")[1].split()[0]
    assert identical.split(": ")[1].startswith(compared)  # n of n identical
    assert "train under torchrun" in cpu
    stepping = next(line for line in cpu.splitlines() if "model.name=transformer" in line)
    assert float(stepping.rsplit(" ", 1)[1]) < 1e-4  # stepping on the kept keys and values = the full forward
