"""Running a stage: load and validate `params.yaml` (with command-line overrides), call the
stage's function, and turn a user error (a `VideoLMError`, or the file system refusing a read
or write) into one line on stderr and exit status 2 (`user_errors`, which the `videolm`
command uses too)."""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager

from videolm.config import Params, load_params
from videolm.errors import VideoLMError


def run_stage(main, argv: list[str] | None = None) -> None:
    """`main(params)` with params from `./params.yaml` and `key=value` overrides in `argv`."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    with user_errors():
        params: Params = load_params(".", sys.argv[1:] if argv is None else argv)
        main(params)


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
