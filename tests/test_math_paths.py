"""Other CPUs' code paths, seen on this one: the bit-identity tests (marked `bits`) run again in a
fresh process under each math library setting this machine offers, each setting read when the
libraries load. A property that held on one library's code path alone fails here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
# Every variable a setting below sets; each run starts with none of them, then its own.
VARIABLES = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA",
             "OPENBLAS_CORETYPE", "NPY_DISABLE_CPU_FEATURES", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
AVX512 = {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"}


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            return next((set(line.split(":", 1)[1].split()) for line in f if line.startswith("flags")), set())
    except OSError:
        return set()


def settings() -> dict[str, dict[str, str]]:
    """name -> environment of each run: every library setting this machine offers appears in one
    (ATen's dispatch; MKL's instructions and its conditional numerical reproducibility; oneDNN's
    ISA; one thread; the AVX-512 pins together), AVX2's and AVX-512's where the CPU has them.
    Settings of different libraries share a run where each library reads only its own."""
    flags = cpu_flags()
    out = {"libraries' own choice": {}, "ATen default (no vectors)": {"ATEN_CPU_CAPABILITY": "default"},
           "MKL CBWR COMPATIBLE": {"MKL_CBWR": "COMPATIBLE"},
           "MKL CBWR SSE4_2, oneDNN SSE41": {"MKL_CBWR": "SSE4_2", "ONEDNN_MAX_CPU_ISA": "SSE41"},
           "one OpenMP thread": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}}
    if {"avx2", "fma"} <= flags:
        out |= {"ATen avx2, MKL AVX2, oneDNN AVX2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
                                                     "ONEDNN_MAX_CPU_ISA": "AVX2"},
                "MKL CBWR AVX2,STRICT": {"MKL_CBWR": "AVX2,STRICT"}}
    if AVX512 <= flags:
        out |= {"ATen avx512, MKL AVX512": {"ATEN_CPU_CAPABILITY": "avx512", "MKL_ENABLE_INSTRUCTIONS": "AVX512"},
                "MKL CBWR AVX512,STRICT": {"MKL_CBWR": "AVX512,STRICT"},
                "all pinned to AVX-512": {"ATEN_CPU_CAPABILITY": "avx512", "MKL_CBWR": "AVX512,STRICT",
                                          "ONEDNN_MAX_CPU_ISA": "AVX512_CORE", "OPENBLAS_CORETYPE": "SkylakeX",
                                          "NPY_DISABLE_CPU_FEATURES": "AVX512_ICL AVX512_SPR"}}
    return out


SETTINGS = settings()


@pytest.mark.parametrize("name", list(SETTINGS))
def test_bit_identity_under(name):
    env = {key: value for key, value in os.environ.items() if key not in VARIABLES} | SETTINGS[name]
    capability = "import torch; print('ATen capability:', torch.backends.cpu.get_cpu_capability())"
    run = subprocess.run(
        [sys.executable, "-c", f"{capability}; import pytest; raise SystemExit(pytest.main())",
         "-m", "bits", "-o", "addopts=", "-p", "no:cacheprovider", "-q", str(TESTS / "test_framewise.py"),
         str(TESTS / "test_search.py"), str(TESTS / "test_train.py")],
        env=env, capture_output=True, text=True, timeout=600)
    tail = run.stdout[-3000:] + run.stderr[-2000:]
    assert run.returncode == 0, f"under {SETTINGS[name]}:\n{tail}"
    if "ATEN_CPU_CAPABILITY" in SETTINGS[name]:  # the setting took: ATen runs the kernels it names
        assert f"ATen capability: {SETTINGS[name]['ATEN_CPU_CAPABILITY'].upper()}" in run.stdout, tail
    assert " passed" in run.stdout and " failed" not in run.stdout, tail
