"""Mapping a function over items in worker processes, in order, with a progress bar.

`map_in_order` is how the data stages spread their videos over the cores (`workers`): each
video is one call of a top-level function, and the results come back in the videos' order
whatever order the workers finish in, so the stages' outputs are the same bytes whatever the
number of workers. With one worker it runs in this process, without a pool: the serial path.

Workers are started with `spawn`, not `fork`: forking a process that has loaded torch (its
OpenMP threads, its locks) is unsafe. Each worker uses one torch thread, so that N workers
keep to N cores instead of N times torch's default. `fn` (with the arguments a
`functools.partial` binds, a codebook say) is sent to each worker once, when it starts, not
with every item. At most two items per worker are under way at a time, so what is held does
not grow with the number of items beyond their small results. A worker ends with the process
that started it, even killed (on Linux), so nothing goes on writing after a stage is stopped.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import sys
import traceback
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from itertools import islice
from typing import Callable, Iterator, Sequence, TypeVar

from tqdm import tqdm

from videolm.lifetime import die_with_parent

T = TypeVar("T")
R = TypeVar("R")

QUEUED_PER_WORKER = 2  # items handed to the pool per worker at a time: one running, one waiting

_fn: Callable | None = None  # the function a worker process maps, set once by `_start_worker`


def worker_count(workers: int) -> int:
    """`workers`, or with 0 one per core this process may run on."""
    if workers:
        return workers
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def map_in_order(fn: Callable[[T], R], items: Sequence[T], workers: int, desc: str,
                 unit: str = "video") -> Iterator[Future[R]]:
    """`fn(item)` for every item, in `workers` processes (0 = one per core), yielded in the
    items' order as done futures: `.result()` gives the value or raises what `fn` raised.

    An exception raised in a worker arrives as the same type with the same arguments (a type
    that cannot be sent back arrives as a `RuntimeError` holding its traceback). With one worker,
    or one item, `fn` runs here. The progress bar counts items as they finish. Closing the
    generator early (`contextlib.closing`) cancels the items not yet started and waits for the
    running ones, so nothing is left writing.
    """
    workers = min(worker_count(workers), len(items))
    with tqdm(total=len(items), desc=desc, unit=unit) as progress:
        if workers <= 1:
            for item in items:
                yield _called_here(fn, item)
                progress.update()
            return
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_start_worker, initargs=(fn,))
        try:
            todo = iter(items)
            queued: deque[Future] = deque()  # submitted, not yet yielded, in the items' order
            running: set[Future] = set()  # submitted, not yet seen finished
            while True:
                for item in islice(todo, QUEUED_PER_WORKER * workers - len(running)):
                    future = pool.submit(_call, item)
                    queued.append(future)
                    running.add(future)
                if not queued:
                    return
                if queued[0] in running:
                    finished, running = wait(running, return_when=FIRST_COMPLETED)
                    progress.update(len(finished))
                    continue
                yield _explained(queued.popleft(), desc)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _called_here(fn: Callable[[T], R], item: T) -> Future[R]:
    done: Future[R] = Future()
    try:
        done.set_result(fn(item))
    except Exception as err:  # noqa: BLE001 (handed to the caller through the future)
        done.set_exception(err)
    return done


def _explained(future: Future, desc: str) -> Future:
    """The future, or for a worker that died (the system killed it, or native code crashed) one
    whose error says so in words rather than as `BrokenProcessPool`'s."""
    if not isinstance(future.exception(), BrokenProcessPool):
        return future
    died: Future = Future()
    died.set_exception(RuntimeError(
        f"{desc}: a worker process died (killed by the system, out of memory say, or crashed in native code) "
        f"while working on this item or one beside it; workers=1 runs without worker processes"))
    return died


def _start_worker(fn: Callable) -> None:
    """Initializer of each worker process: keep `fn`, use one thread for torch and OpenMP, leave
    Ctrl-C to the stage's process, and end with it."""
    global _fn
    _fn = fn
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the stage's to handle: it waits for the items under way
    parent = multiprocessing.parent_process()
    die_with_parent(signal.SIGKILL, parent.pid if parent else None)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"  # for libraries loaded after this
    if "torch" in sys.modules:  # loaded already (by `fn`'s module, or the main script's): too late for the above
        sys.modules["torch"].set_num_threads(1)


def _call(item):
    """Run the worker's `fn` on one item; an exception that could not be sent back is sent as text."""
    try:
        return _fn(item)
    except Exception as err:
        try:
            pickle.loads(pickle.dumps(err))
        except Exception:  # noqa: BLE001 (any failure to rebuild it in the parent)
            raise RuntimeError("".join(traceback.format_exception(err)).rstrip()) from None
        raise
