"""Child processes that end with the process that started them."""

from __future__ import annotations

import ctypes
import os
import sys

PR_SET_PDEATHSIG = 1  # prctl option: the signal a process gets when its parent dies (linux/prctl.h)


def die_with_parent(sig: int, parent_pid: int | None) -> None:
    """On Linux, have the kernel send this process `sig` when the process that started it
    (`parent_pid`) dies (killed, say): otherwise a worker would go on writing into the stage's
    temporary output folder, which the next run removes as a dead run's."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, sig)
    if parent_pid is not None and os.getppid() != parent_pid:  # it died before the line above
        os._exit(1)
