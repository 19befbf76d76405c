"""A pipeline stage run as `dvc repro` runs it, `python stages/<stage>.py key=value ...` in a
subprocess of its own, and what it cost: what the benchmarks that run whole stages
(`drill.py`, `memory.py`) measure with.

- **Wall time**: from the stage's start to its exit (Python start-up, imports, and its workers'
  start-up included: what a user waits for).
- **CPU time**: user and system seconds of the stage and of the workers it reaped; and the
  CPU time the rest of the machine took over the same wall time (the machine's busy time, from
  /proc/stat, less the stage's): near 0 on an idle machine, otherwise the stage shared the cores.
- **Peak RSS of its largest process**: `os.wait4`'s `ru_maxrss`, exact. The stage is not the
  caller's child but `LAUNCHER`'s, a bare interpreter: Linux counts in a child's `ru_maxrss` the
  memory of the process it was spawned from, as it was then, so a direct child of a benchmark
  that has loaded torch would report at least the benchmark's own size.
- **Peak RSS of all its processes together**: the RSS of the stage and its workers summed from
  /proc every `SAMPLE_S` by a thread of the caller. A sample can miss a short peak, so the
  largest process's exact peak is its floor; and shared pages count once per process, so the
  sum overstates what the processes hold together.
- **Outputs**: their bytes on disk (`disk_bytes`), and a digest that is equal for
  byte-identical outputs (`digest`).
"""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_S = 0.2  # seconds between two samples of a stage's processes' summed RSS
PAGE = os.sysconf("SC_PAGE_SIZE")

# argv[1:] is the command: run it with its stdout and stderr on ours (stderr), then print its
# peak RSS (KiB: the largest of it and its reaped workers) and CPU seconds (user, system; its
# workers included).
LAUNCHER = """
import os, sys
pid = os.posix_spawn(sys.argv[1], sys.argv[1:], os.environ, file_actions=[(os.POSIX_SPAWN_DUP2, 2, 1)])
_, status, usage = os.wait4(pid, 0)
print(usage.ru_maxrss, usage.ru_utime, usage.ru_stime)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def descendants(root: int) -> list[int]:
    """Every living descendant of process `root`, from the parent links in /proc."""
    children = defaultdict(list)
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:  # ended meanwhile
                continue
            children[int(stat.rsplit(")", 1)[1].split()[1])].append(int(entry.name))
    found, todo = [], [root]
    while todo:
        found += (kids := children.get(todo.pop(), []))
        todo += kids
    return found


def rss_bytes(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError):  # ended meanwhile
        return 0


class TreePeak(threading.Thread):
    """The peak of the summed RSS of a process's descendants, sampled every `SAMPLE_S` until `stop`."""

    def __init__(self, root: int):
        super().__init__(daemon=True)
        self.root, self.peak, self.done = root, 0, threading.Event()

    def run(self) -> None:
        while not self.done.wait(SAMPLE_S):
            self.peak = max(self.peak, sum(rss_bytes(pid) for pid in descendants(self.root)))

    def stop(self) -> int:
        self.done.set()
        self.join()
        return self.peak


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (/proc/stat: all but idle and iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    """One run of a stage: wall and CPU seconds, the CPU seconds other processes took meanwhile
    (the machine's busy time less the stage's), peak RSS (MiB) of its largest process and of all
    its processes together (sampled), and what it printed."""

    wall: float
    cpu: float
    others: float
    rss: float
    rss_all: float
    log: str


def run_stage(workspace: Path, stage: str, overrides: list[str], log: Path, env: dict[str, str] | None = None) -> Run:
    """`python stages/<stage>.py <overrides>` with cwd `workspace` and `env` added to ours,
    its output to `log`; an error naming the command and showing the log's end if it fails."""
    env = env or {}
    command = [sys.executable, str(ROOT / "stages" / f"{stage}.py"), *overrides]
    with log.open("w") as err:
        start, busy = time.perf_counter(), busy_cpu_seconds()
        launcher = subprocess.Popen([sys.executable, "-I", "-S", "-c", LAUNCHER, *command], cwd=workspace,
                                    env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=err, text=True)
        sampler = TreePeak(launcher.pid)
        sampler.start()
        out, _ = launcher.communicate()
        wall, busy = time.perf_counter() - start, busy_cpu_seconds() - busy
        rss_all = sampler.stop()
    if launcher.returncode:
        shown = " ".join(f"{k}={v}" for k, v in env.items()) + (" " if env else "")
        raise RuntimeError(f"{shown}{shlex.join(command)} (in {workspace}) exited with {launcher.returncode}:\n"
                           f"{log.read_text()[-3000:]}")
    maxrss, user, system = out.split()
    rss, cpu = int(maxrss) / 1024, float(user) + float(system)  # ru_maxrss is in KiB on Linux
    return Run(wall, cpu, max(0.0, busy - cpu), rss, max(rss, rss_all / 2**20), log.read_text())  # all >= largest


def disk_bytes(paths: list[Path]) -> int:
    """Bytes of the files at `paths` (files, or folders searched recursively)."""
    files = [p for path in paths for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file()]
    return sum(p.stat().st_size for p in files)


def digest(folder: Path) -> str:
    """md5 over the names and bytes of a folder's files: equal for byte-identical outputs."""
    md5 = hashlib.md5()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        md5.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return md5.hexdigest()
