"""Worker processes that never outlive their parent.

:func:`process_pool` is a spawn-context ``ProcessPoolExecutor`` whose workers each run a watcher
thread: when the parent dies (any signal, ``SIGKILL`` included, which no handler can see), the
worker's parent pid changes and the worker exits within ``PARENT_POLL_S`` seconds instead of
blocking on its task queue forever. The multiprocessing resource tracker then sees its last
client go and exits too.

Workers ignore ``SIGINT``: Ctrl-C in a terminal reaches the whole process group, and the parent
alone decides what it means; it then stops the workers at once (:func:`stop_workers`) instead
of waiting for the cells in flight, whose partial files the next run removes. Workers are
started with ``SIGINT`` blocked (:func:`sigint_blocked` around the submissions that spawn
them), so that a Ctrl-C while they are still importing cannot reach them either.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from multiprocessing import get_context

from poolwise._logs import hide_cuda_home_notice

PARENT_POLL_S = 0.5


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(PARENT_POLL_S)
        if os.getppid() != parent:
            os._exit(70)  # the parent is gone: nobody is left to take the result


def _init_worker(parent: int, initializer: Callable | None, initargs: tuple) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True,
                     name="poolwise-parent-watch").start()
    hide_cuda_home_notice()
    if initializer is not None:
        initializer(*initargs)


def process_pool(jobs: int, initializer: Callable | None = None,
                 initargs: tuple = ()) -> ProcessPoolExecutor:
    """``jobs`` spawned worker processes that exit when this process dies.

    Raises:
        ValueError: for ``jobs < 1``.
    """
    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive number of processes, got {jobs!r}")
    return ProcessPoolExecutor(
        jobs, mp_context=get_context("spawn"), initializer=_init_worker,
        initargs=(os.getpid(), initializer, initargs),
    )


@contextmanager
def sigint_blocked() -> Iterator[None]:
    """``SIGINT`` held back in this thread for the block: processes started in it inherit the
    block; a Ctrl-C meanwhile is delivered here when the block ends, not lost."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def stop_workers(pool: ProcessPoolExecutor) -> None:
    """Ends the pool now: pending cells are cancelled and running workers killed (``SIGKILL``;
    what they were writing is a temporary file that the next run removes)."""
    terminate = getattr(pool, "kill_workers", None)  # Python >= 3.14
    if terminate is not None:
        terminate()
        return
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        process.kill()
    pool.shutdown(wait=True, cancel_futures=True)
