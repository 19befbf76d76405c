"""Running a stage: load and validate `params.yaml` (with command-line overrides), call the
stage's function, print its last line, and turn a user error (a `VideoLMError`, or the file
system refusing a read or write, a full disk among them) into one line on stderr and exit
status 2, and an interruption (Ctrl-C, or SIGTERM from a scheduler) into one line and the
status of a process ended by that signal (`user_errors`, which the `videolm` command uses too).

Every stage ends with one line in one format, `<stage>: <what it did> in <N> s`: the stage's
function returns what it did, and its wall-clock time (from the params loaded to the outputs
written) is printed, never stored, so that identical runs give identical bytes."""

from __future__ import annotations

import errno
import logging
import re
import shutil
import signal
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from videolm.config import Params, load_params
from videolm.errors import VideoLMError


def run_stage(main: Callable[[Params], str | None], argv: list[str] | None = None) -> None:
    """`main(params)` with params from `./params.yaml` and `key=value` overrides in `argv`, then
    its last line (`main` returns what it did; None: a process that reports nothing, a training
    rank other than 0). The stage is named by the file that defines `main`."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    stage = Path(main.__code__.co_filename).stem
    with user_errors(stage):
        params: Params = load_params(".", sys.argv[1:] if argv is None else argv)
        start = time.perf_counter()
        done = main(params)
        if done is not None:
            print(last_line(stage, done, time.perf_counter() - start))


def last_line(stage: str, done: str, seconds: float) -> str:
    return f"{stage}: {done} in {seconds:.0f} s"


NO_SPACE = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
            errno.EFBIG: "file larger than the file-size limit (ulimit -f)"}
KEPT = "nothing half-written was left, and the previous outputs are as they were"


@contextmanager
def user_errors(what: str = "videolm"):
    """Within the block, a user error ends the program with one line `error: ...` on stderr and
    exit status 2; an interruption (`KeyboardInterrupt`: Ctrl-C, or SIGTERM, which the block turns
    into one) with one line naming `what` was interrupted and the exit status of a process that
    the signal ended (130, 143)."""
    terminate = signal.getsignal(signal.SIGTERM)
    main_thread = threading.current_thread() is threading.main_thread()
    if main_thread:
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    except KeyboardInterrupt as err:
        signum = getattr(err, "signum", signal.SIGINT)
        note = str(err) or "run it again to start over"
        print(f"error: {what}: interrupted ({_signal_name(signum)}); {KEPT}; {note}", file=sys.stderr)
        sys.exit(128 + signum)
    except VideoLMError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except OSError as err:  # the file system said no: a read-only folder, a full disk, a file for a folder
        if err.errno in NO_SPACE:
            print(f"error: {what}: {NO_SPACE[err.errno]} writing {_output_path(err.filename)} "
                  f"({_free_space(err.filename)}); {KEPT}: free some space, or point the output elsewhere, and run "
                  f"it again", file=sys.stderr)
        else:
            print(f"error: {err.filename or 'a file'}: {err.strerror or err} (outputs are written only when "
                  f"complete: nothing half-written was left)", file=sys.stderr)
        sys.exit(2)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, terminate)


class Interrupted(KeyboardInterrupt):
    """An interruption by `signum`; its message, if any, says what can be done next."""

    def __init__(self, note: str = "", signum: int = signal.SIGINT):
        super().__init__(note)
        self.signum = signum


def _interrupt(signum, frame):
    raise Interrupted(signum=signum)


def _signal_name(signum: int) -> str:
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


def _output_path(filename) -> str:
    """The output a temporary path is being written for (`io.atomic_path`'s `.<name>.tmp<pid>`)."""
    return re.sub(r"(^|/)\.([^/]+)\.tmp\d+(?=/|$)", r"\1\2", str(filename)) if filename else "an output"


def _free_space(filename) -> str:
    """How much space is left where `filename` is, in words."""
    folder = Path(filename or ".").parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return "free space unknown"
    return f"{free / 2**20:.1f} MiB free in {folder}"
