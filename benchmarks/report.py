"""What the benchmark commands' reports share: how a figure is written (`num`, `spread`), a
markdown table (`table`), the facts of the machine the timings were taken on (`machine`: a
timing means little without them), and the scale drill's section of the results file.

`run.py` rewrites `benchmarks/RESULTS.md` whole, and `drill.py` writes its section of the same
file between `MARK_START` and `MARK_END` (`write_section`): `run.py` appends the section it
finds there (`kept_section`), so that each command keeps the other's results.
"""

from __future__ import annotations

import os
import platform
import statistics
from pathlib import Path

import numpy as np

MARK_START, MARK_END = "<!-- drill:start -->", "<!-- drill:end -->"
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile")  # vector and matrix units the kernels can use


def num(value: float) -> str:
    """A figure to 3 significant digits below 100, else a whole number with thousands separated."""
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def spread(values: list[float]) -> str:
    """median [min..max]"""
    return f"{num(statistics.median(values))} [{num(min(values))}..{num(max(values))}]"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table's lines: the header, its rule, then a line a row."""
    return [f"| {' | '.join(header)} |", "|" + "---|" * len(header), *(f"| {' | '.join(row)} |" for row in rows)]


def cpuinfo(field: str) -> str:
    """The first value of `field` ("model name", "flags") in /proc/cpuinfo; "" where there is none."""
    info = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    return next((l.split(":", 1)[1].strip() for l in info if l.startswith(field)), "")


def machine(libraries: list[str], load_at_start: tuple[float, float, float]) -> list[str]:
    """The machine's facts, a line each: the CPU (model, the flags of `CPU_FLAGS` it has, the
    cores this process may use) and memory; torch (its default threads), numpy and `libraries`
    (a "name version" each); OpenMP's wait policy, this process's niceness and the load average
    at `load_at_start` and now (how idle the machine was); the GPU; Python and the OS."""
    import torch  # here, not at the top: the drill's own process has no use for it otherwise

    flags = " ".join(f for f in CPU_FLAGS if f in cpuinfo("flags").split())
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    load = lambda values: ", ".join(f"{x:.2f}" for x in values)
    return [f"CPU: {cpuinfo('model name') or 'unknown'}; CPU cores (affinity): {len(os.sched_getaffinity(0))}; "
            f"flags: {flags or 'unknown'}; memory {memory:.1f} GiB",
            "; ".join([f"torch {torch.__version__}, {torch.get_num_threads()} threads by default",
                       f"numpy {np.__version__}", *libraries]),
            f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}; niceness {os.nice(0)}; load average "
            f"(1, 5, 15 min) at the start {load(load_at_start)}, at the end {load(os.getloadavg())}",
            f"GPU: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}",
            f"Python {platform.python_version()} on {platform.platform()}"]


def write_section(path: Path, body: str) -> None:
    """Put `body` between the drill's markers in `path`: in place of the section there, else at
    the end; the rest of the file is kept as it is."""
    section = f"{MARK_START}\n{body.rstrip()}\n{MARK_END}\n"
    text = path.read_text() if path.exists() else ""
    start, end = text.find(MARK_START), text.find(MARK_END)
    if start >= 0 and end > start:
        text = text[:start] + section + text[end + len(MARK_END):].lstrip("\n")
    else:
        text = text.rstrip("\n") + ("\n\n" if text.strip() else "") + section
    path.write_text(text)


def kept_section(path: Path) -> str:
    """The drill's section of `path` with its markers, after a blank line; "" if it has none
    (what `run.py` appends to the table it writes, so that rewriting the file keeps it)."""
    text = path.read_text() if path.exists() else ""
    start, end = text.find(MARK_START), text.find(MARK_END)
    return "\n" + text[start:end + len(MARK_END)] + "\n" if start >= 0 and end > start else ""
