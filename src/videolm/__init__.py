"""videolm: video (language) modeling over k-means patch codes.

Importing the package sets, in the environment, how the math libraries run, before any of
them loads (each setting only where the environment does not choose already):

- OpenMP's threads sleep rather than spin while they wait (`OMP_WAIT_POLICY=PASSIVE`). Torch's
  CPU threads otherwise spin between parallel regions, and on a shared machine a spinning
  thread takes the core that another process, or this one's own other thread, needs
  (benchmarks/RESULTS.md has training's speed beside a busy process with both policies).
- Portable math: every library takes the same code path on every x86-64 CPU with AVX2, so that
  the same params give the same bytes on an Intel or an AMD machine, with any number of cores.
  The libraries otherwise pick their kernels by the CPU they find (AVX-512 or not, Intel or
  not), and kernels of different vector widths add in different orders. Pinned: ATen's kernels
  (`ATEN_CPU_CAPABILITY=avx2`); MKL's, with conditional numerical reproducibility that also
  makes its results independent of the thread count (`MKL_CBWR=AVX2,STRICT`); oneDNN's
  convolutions (`ONEDNN_MAX_CPU_ISA=AVX2`); OpenBLAS's, under NumPy and SciPy
  (`OPENBLAS_CORETYPE=Haswell`); NumPy's own dispatch (`NPY_DISABLE_CPU_FEATURES`) and
  OpenCV's (`OPENCV_CPU_DISABLE`), both without their AVX-512 paths. `VIDEOLM_NATIVE_MATH=1`
  turns this off (each library then takes its fastest path on this CPU); docs/reliability.md
  says what holds either way, and what it costs.

The settings are read when each library loads or first computes, so the package must be
imported before torch, NumPy, SciPy or OpenCV: the stage scripts and the `videolm` command
import it first.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

PORTABLE_MATH = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "AVX2,STRICT",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "OPENBLAS_CORETYPE": "Haswell",
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
    "OPENCV_CPU_DISABLE": "AVX512_SKX,AVX512_CLX",
}

if os.environ.get("VIDEOLM_NATIVE_MATH", "0") in ("", "0"):
    for _name, _value in PORTABLE_MATH.items():
        os.environ.setdefault(_name, _value)
