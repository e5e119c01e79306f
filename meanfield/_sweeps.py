"""Phase diagrams as independent tasks: blocks of rows of the grid, for one or many activations.

A row of a phase diagram (one ``sigma_b2``, every ``sigma_w2``) depends on nothing outside it:
every field and the critical line are computed point by point (or row by row) from the
activation's tables, which each process builds for itself (each table patch alone, so that its
values do not depend on what was built before).  So a grid split into blocks of rows, computed
anywhere, and put back together is the diagram computed in one piece, up to the rounding of the
Mehler sums of ``c*`` (matrix products over a batch of points, ~1e-14).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from . import runner
from ._portable import portable, rebuild

#: Row blocks per local worker process, per activation.
TASKS_PER_WORKER = 4
#: Row blocks per activation on a Dask cluster (its size is not known before connecting).
CLUSTER_TASKS = 32


def _rows(task):
    """One block of rows: ``phase_diagram`` on ``sigma_b2[rows]``."""
    from .diagram import phase_diagram

    desc, sw, sb, rho, options = task
    return phase_diagram(rebuild(desc), sw, sb, rho, **options)


def diagrams(acts: list, sw: np.ndarray, sb: np.ndarray, rho: float, options: dict, client=None,
             workers: int | None = None, progress=None) -> list:
    """The phase diagram of each activation in ``acts`` (validated Activations) on the grid ``sw`` x ``sb``.

    ``options`` are the remaining keywords of :func:`meanfield.phase_diagram` (``norm``,
    ``batch_size``, ``memory_limit``).  The grid of every activation is cut into blocks of rows;
    all blocks go to ``runner.run`` at once (local processes, or the Dask cluster of ``client``).
    ``progress(done, total)`` counts grid points over all the diagrams.
    """
    n_tasks = CLUSTER_TASKS if client is not None else TASKS_PER_WORKER * (workers or 1)
    per_task = max(1, math.ceil(sb.size / n_tasks))
    blocks = [slice(i, min(sb.size, i + per_task)) for i in range(0, sb.size, per_task)]
    tasks = [(portable(act), sw, sb[rows], rho, options) for act in acts for rows in blocks]
    total = len(acts) * sb.size * sw.size
    report = None
    if progress is not None:
        def report(done, n):  # blocks are equal but for the last: an estimate that ends at the total
            progress(total if done == n else min(total, done * per_task * sw.size), total)
    parts = runner.run(_rows, tasks, client=client, workers=workers, progress=report)
    out = []
    for k, act in enumerate(acts):
        mine = parts[k * len(blocks):(k + 1) * len(blocks)]
        stacked = {f.name: np.concatenate([getattr(p, f.name) for p in mine], axis=0)
                   for f in dataclasses.fields(mine[0])
                   if isinstance(getattr(mine[0], f.name), np.ndarray) and getattr(mine[0], f.name).ndim == 2}
        out.append(dataclasses.replace(
            mine[0], activation=act.name, sigma_b2=sb,
            critical_line=np.concatenate([p.critical_line for p in mine]),
            n_reference=sum(p.n_reference for p in mine), **stacked))
    return out
