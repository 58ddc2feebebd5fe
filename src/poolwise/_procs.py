"""Worker processes that never outlive their parent.

:func:`process_pool` is a spawn-context ``ProcessPoolExecutor`` whose workers each run a watcher
thread: when the parent dies (any signal, ``SIGKILL`` included, which no handler can see), the
worker's parent pid changes and the worker exits within ``PARENT_POLL_S`` seconds instead of
blocking on its task queue forever. The multiprocessing resource tracker then sees its last
client go and exits too.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

from poolwise._logs import hide_cuda_home_notice

PARENT_POLL_S = 0.5


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(PARENT_POLL_S)
        if os.getppid() != parent:
            os._exit(70)  # the parent is gone: nobody is left to take the result


def _init_worker(parent: int, initializer: Callable | None, initargs: tuple) -> None:
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
