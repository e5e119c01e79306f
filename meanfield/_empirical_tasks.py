"""Monte Carlo over many sampled networks as independent tasks (:func:`meanfield.empirical.simulate`).

The networks are those of one generator drawn one after the other, as in a single process:
network ``i`` takes its parameter seed, output gradient and tangents from ``rng`` after
networks ``0..i-1`` took theirs.  Here the parent walks that stream once, taking only these
draws (no network is evaluated), and records the generator's state where every task's first
network starts; a task restores that state and runs its networks in order.  Every network
therefore sees exactly the random numbers of the one-process run, whatever the number of
tasks, workers or machines, and ``rng`` ends in the same state.
"""

from __future__ import annotations

import math

import numpy as np

from . import _empirical_checks as checks
from . import _network_pass as engine
from . import runner
from ._portable import portable, rebuild

#: Tasks per worker process: enough to balance uneven networks, few enough to keep overheads small.
TASKS_PER_WORKER = 4
#: Tasks submitted to a Dask cluster (its size is not known before connecting).
CLUSTER_TASKS = 64


def draws(spec, rng: np.random.Generator, B: int, d_in: int, gradients: bool, jvp, output_gradient=None):
    """What one network takes from ``rng``, in order: its parameter seed, output gradient and tangents."""
    base = engine.new_base(rng)
    out_grad = checks.output_gradient(output_gradient, gradients, rng, B, spec)
    tangents = checks.tangents(jvp, rng, B, d_in, spec.dtype)
    return base, out_grad, tangents


def _restore(state: dict) -> np.random.Generator:
    bit_gen = getattr(np.random, state["bit_generator"])()
    bit_gen.state = state
    return np.random.Generator(bit_gen)


def _spec_state(spec) -> dict:
    state = dict(vars(spec))
    state["act"] = portable(spec.act)
    return state


def _networks(task):
    """Run ``k`` networks of the stream starting at ``state`` (a task of :func:`simulate_runs`)."""
    from .empirical import NetworkSpec, run

    spec_state, X, state, k, kwargs = task
    spec = NetworkSpec.__new__(NetworkSpec)
    spec.__dict__.update(spec_state, act=rebuild(spec_state["act"]))
    rng = _restore(state)
    out = []
    for _ in range(k):
        r = run(spec, X, rng, **kwargs)
        out.append(r)
    return out


def simulate_runs(spec, X, n_networks: int, rng: np.random.Generator, kwargs: dict, client=None,
                  workers: int | None = None) -> list:
    """The :class:`NetworkRun` of ``n_networks`` consecutive networks of ``rng``, computed as tasks.

    ``kwargs`` are :func:`meanfield.empirical.run`'s options (``gradients``, ``pairs``,
    ``jacobian``, ``jvp``, ``memory_limit``).  Without ``client`` and with ``workers`` None or 1,
    the networks run here, one after the other; otherwise in ``runner.run``'s local processes or
    on the Dask cluster.
    """
    from .empirical import run

    if client is None and (workers is None or workers == 1):
        return [run(spec, X, rng, **kwargs) for _ in range(n_networks)]
    n_tasks = CLUSTER_TASKS if client is not None else TASKS_PER_WORKER * workers
    per_task = max(1, math.ceil(n_networks / n_tasks))
    B, d_in = X.shape
    spec_state = _spec_state(spec)
    tasks = []
    for start in range(0, n_networks, per_task):
        k = min(per_task, n_networks - start)
        tasks.append((spec_state, X, rng.bit_generator.state, k, kwargs))
        for _ in range(k):
            draws(spec, rng, B, d_in, kwargs["gradients"], kwargs["jvp"])
    results = runner.run(_networks, tasks, client=client, workers=workers)
    return [r for chunk in results for r in chunk]
