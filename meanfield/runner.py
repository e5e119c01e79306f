"""Independent tasks run in parallel: local processes by default, a Dask cluster when given one.

Sweeps (phase diagrams over many activations, Monte Carlo over sampled networks, training grids)
are embarrassingly parallel: a list of tasks, one function, results in task order.  `run` is the
one place they are dispatched.  Without a client the tasks run in a local process pool (all cores
by default, in this process when ``workers=1``); with a ``dask.distributed.Client`` or a scheduler
address they are submitted to that cluster, which schedules, retries and recomputes lost work.

Results do not depend on where a task ran: every random draw comes from the task itself (give each
task its own seed from `task_seeds`), never from process state.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["run", "task_seeds", "connect"]

CONNECT_TIMEOUT = 10.0  # seconds to reach a scheduler before giving up


def task_seeds(rng, n: int) -> list:
    """``n`` independent seeds (``numpy.random.SeedSequence``) spawned from ``rng`` (a Generator or an int seed).

    A task makes its generator with ``numpy.random.default_rng(seed)``.  Seeds, unlike generators,
    carry no state that a run consumes: task ``i`` draws the same numbers whether it runs here, in a
    local pool or on a remote worker, and again if it is recomputed.
    """
    import numpy as np

    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    if isinstance(rng, bool) or not isinstance(rng, (np.random.Generator, int, np.integer)):
        raise TypeError(f"rng must be a numpy Generator or an int seed, got {type(rng).__name__}")
    if isinstance(rng, np.random.Generator):
        return list(rng.bit_generator.seed_seq.spawn(int(n)))
    if int(rng) < 0:
        raise ValueError(f"rng seed must be >= 0, got {int(rng)}")
    return list(np.random.SeedSequence(int(rng)).spawn(int(n)))


def connect(scheduler):
    """A ``dask.distributed.Client`` for ``scheduler`` (an address such as ``"tcp://host:8786"``).

    Raises a ValueError saying so when the scheduler cannot be reached within ``CONNECT_TIMEOUT``
    seconds, and an ImportError naming the extra to install when Dask is missing.
    """
    if not isinstance(scheduler, str) or not scheduler.strip():
        raise TypeError(f"scheduler must be an address string such as 'tcp://host:8786', got {scheduler!r}")
    try:
        from distributed import Client
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("a Dask scheduler needs dask.distributed: pip install 'meanfield[distributed]'") from err
    try:
        return Client(scheduler, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as err:
        raise ValueError(f"could not reach the Dask scheduler at {scheduler!r} within {CONNECT_TIMEOUT:g} s "
                         f"({type(err).__name__}: {err})") from None


def run(fn: Callable[[Any], Any], tasks: Sequence, *, client=None, workers: int | None = None,
        progress: Callable[[int, int], None] | None = None) -> list:
    """``[fn(task) for task in tasks]``, computed in parallel, in task order.

    Parameters
    ----------
    fn : callable
        A module-level function (it is pickled to reach other processes) of one task.
    tasks : sequence
        The tasks; each must be picklable and carry everything the task needs (its seed included).
    client : dask.distributed.Client, str or None
        A Dask client, or a scheduler address to connect to (the connection is closed afterwards).
        None runs on this machine.
    workers : int, optional
        Local processes when ``client`` is None (default: every core; 1 runs in this process).
    progress : callable, optional
        Called as ``progress(done, total)`` after each finished task.

    Returns
    -------
    list
        The results, ``results[i] = fn(tasks[i])``.  A task's exception is raised here.
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    tasks = list(tasks)
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be callable as progress(done, total), got {type(progress).__name__}")
    if workers is not None:
        from ._validate import positive_int

        workers = positive_int("workers", workers)
    if client is not None:
        return _run_dask(fn, tasks, client, progress)
    n_workers = min(workers or os.cpu_count() or 1, len(tasks))
    if n_workers <= 1:
        return _run_serial(fn, tasks, progress)
    return _run_pool(fn, tasks, n_workers, progress)


def _picklable(fn):
    try:
        pickle.dumps(fn)
    except Exception as err:  # noqa: BLE001 - any pickling failure means the same thing here
        raise TypeError(f"fn must be a module-level function to run in other processes ({err})") from None


def _run_serial(fn, tasks, progress):
    results = []
    for i, task in enumerate(tasks):
        results.append(fn(task))
        if progress is not None:
            progress(i + 1, len(tasks))
    return results


def _run_pool(fn, tasks, n_workers, progress):
    import concurrent.futures as cf
    import multiprocessing

    _picklable(fn)
    # spawn: a fresh interpreter per worker, safe beside numba's and BLAS's threads
    ctx = multiprocessing.get_context("spawn")
    results = [None] * len(tasks)
    with cf.ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx) as pool:
        futures = {pool.submit(fn, task): i for i, task in enumerate(tasks)}
        try:
            for done, fut in enumerate(cf.as_completed(futures), start=1):
                results[futures[fut]] = fut.result()
                if progress is not None:
                    progress(done, len(tasks))
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
    return results


def _run_dask(fn, tasks, client, progress):
    own = isinstance(client, str)
    if own:
        client = connect(client)
    elif not hasattr(client, "map") or not hasattr(client, "gather"):
        raise TypeError(f"client must be a dask.distributed.Client or a scheduler address, got {type(client).__name__}")
    try:
        from distributed import as_completed

        _picklable(fn)
        futures = client.map(fn, tasks, pure=False)
        index = {f.key: i for i, f in enumerate(futures)}
        results = [None] * len(tasks)
        for done, fut in enumerate(as_completed(futures), start=1):
            results[index[fut.key]] = fut.result()
            if progress is not None:
                progress(done, len(tasks))
        return results
    finally:
        if own:
            client.close()
