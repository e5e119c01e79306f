"""The thread pool of the kernel engine: table nodes and blocks of rows spread over the CPUs.

The compiled kernels release the GIL and numpy releases it in its loops, so threads run in
parallel.  There is no OpenMP: the pool is safe from several user threads and under fork (a
forked child has the pool object but not its threads, so the child forgets it and starts a new
one when needed).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

__all__ = ["workers", "run"]

#: Most threads the engine uses.
MAX_WORKERS = 8

_POOL: ThreadPoolExecutor | None = None


def workers() -> int:
    """Threads for the table work: the CPUs this process may use (at most :data:`MAX_WORKERS`)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        n = os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, n))


def run(task: Callable, items: Iterable, threads: bool = True) -> list:
    """``[task(x) for x in items]``, on the thread pool when there are several items and CPUs."""
    items = list(items)
    if not threads or len(items) < 2 or workers() < 2:
        return [task(x) for x in items]
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=workers())
    return list(_POOL.map(task, items))


def _forget_pool():
    """After fork the child has the pool object but not its threads: start a new one when needed."""
    global _POOL
    _POOL = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)
