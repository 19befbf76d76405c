"""Running a stage: load and validate `params.yaml` (with command-line overrides), call the
stage's function, print its last line, and turn a user error (a `VideoLMError`, or the file
system refusing a read or write) into one line on stderr and exit status 2 (`user_errors`,
which the `videolm` command uses too).

Every stage ends with one line in one format, `<stage>: <what it did> in <N> s`: the stage's
function returns what it did, and its wall-clock time (from the params loaded to the outputs
written) is printed, never stored, so that identical runs give identical bytes."""

from __future__ import annotations

import logging
import sys
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
    with user_errors():
        params: Params = load_params(".", sys.argv[1:] if argv is None else argv)
        start = time.perf_counter()
        done = main(params)
        if done is not None:
            print(last_line(Path(sys.modules[main.__module__].__file__).stem, done, time.perf_counter() - start))


def last_line(stage: str, done: str, seconds: float) -> str:
    return f"{stage}: {done} in {seconds:.0f} s"


@contextmanager
def user_errors():
    """Within the block, a user error ends the program: one line `error: ...` on stderr, exit status 2."""
    try:
        yield
    except VideoLMError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except OSError as err:  # the file system said no: a read-only folder, a full disk, a file for a folder
        print(f"error: {err.filename or 'a file'}: {err.strerror or err} (outputs are written only when "
              f"complete: nothing half-written was left)", file=sys.stderr)
        sys.exit(2)
