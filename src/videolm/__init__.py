"""videolm: video (language) modeling over k-means patch codes.

Importing the package sets, in the environment, how the math libraries run, before any of
them loads (each setting only where the environment does not choose already):

- OpenMP's threads sleep rather than spin while they wait (`OMP_WAIT_POLICY=PASSIVE`). Torch's
  CPU threads otherwise spin between parallel regions, and on a shared machine a spinning
  thread takes the core that another process, or this one's own other thread, needs
  (benchmarks/RESULTS.md has training's speed beside a busy process with both policies).
- Portable math: every library takes the code path of the CPU's vector class, AVX-512 or
  AVX2, rather than the fastest it finds, so that the same params give the same bytes on
  Intel's and AMD's CPUs of one class. Left to themselves the libraries pick kernels by
  vendor and model (MKL takes other paths on AMD than on Intel, NumPy uses the
  newest AVX-512 extensions a CPU has), and kernels of different widths add in different
  orders. Pinned: ATen's kernels (`ATEN_CPU_CAPABILITY`); MKL's, with its conditional
  numerical reproducibility (`MKL_CBWR`, STRICT); oneDNN's convolutions (`ONEDNN_MAX_CPU_ISA`);
  OpenBLAS's under NumPy and SciPy (`OPENBLAS_CORETYPE`); NumPy's own dispatch, without the
  extensions beyond the class (`NPY_DISABLE_CPU_FEATURES`). OpenCV's optical flow gives the
  same bytes with its AVX-512 paths on or off, so its dispatch is left alone. The class is read from /proc/cpuinfo (x86-64 Linux; elsewhere
  nothing is pinned). `VIDEOLM_NATIVE_MATH=1` turns this off; docs/reliability.md says what
  holds either way, and what it costs.

The settings are read when each library loads or first computes, so the package must be
imported before torch, NumPy, SciPy or OpenCV: the stage scripts and the `videolm` command
import it first.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# The AVX-512 class: F, CD, BW, DQ and VL (Intel since Skylake-SP, AMD since Zen 4).
AVX512 = {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"}
PORTABLE_MATH = {
    "avx512": {"ATEN_CPU_CAPABILITY": "avx512", "MKL_CBWR": "AVX512,STRICT", "ONEDNN_MAX_CPU_ISA": "AVX512_CORE",
               "OPENBLAS_CORETYPE": "SkylakeX", "NPY_DISABLE_CPU_FEATURES": "AVX512_ICL AVX512_SPR"},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2,STRICT", "ONEDNN_MAX_CPU_ISA": "AVX2",
             "OPENBLAS_CORETYPE": "Haswell", "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR"},
}


def vector_class() -> str | None:
    """'avx512' or 'avx2', the widest class all of whose features the CPU has; None where that
    cannot be read (not Linux) or the CPU has neither (not x86-64, or older than AVX2)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((set(line.split(":", 1)[1].split()) for line in f if line.startswith("flags")), set())
    except OSError:
        return None
    if AVX512 <= flags:
        return "avx512"
    return "avx2" if {"avx2", "fma"} <= flags else None


if os.environ.get("VIDEOLM_NATIVE_MATH", "0") in ("", "0") and (_class := vector_class()):
    for _name, _value in PORTABLE_MATH[_class].items():
        os.environ.setdefault(_name, _value)
