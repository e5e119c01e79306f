"""NNGP and NTK kernels larger than memory: computed by blocks on Dask, kept as a dask array or in zarr.

A kernel of ``n`` inputs has ``n^2`` entries: 60,000 inputs make 29 GB in float64.  Every entry of
the recursion of :mod:`meanfield.kernels` (Lee et al. 2018, eqs. 5-6; Jacot et al. 2018, Thm. 1)

    K^l(x, x') = sigma_b2 + sigma_w2 E[phi(u) phi(u')],  (u, u') ~ N(0, [[K^{l-1}(x, x), K^{l-1}(x, x')],
                                                                        [K^{l-1}(x, x'), K^{l-1}(x', x')]])

needs, besides its own previous value, only the two variances ``K^{l-1}(x, x)`` and
``K^{l-1}(x', x')``.  So the per-input variances of every layer are computed first (one-dimensional
integrals, ``O(n depth)``), with the per-layer tables of an activation without a closed form
(built once, shipped to the workers); then every block of rows and columns is an independent task
that runs the whole recursion on its entries from its rows' and columns' inputs.  When ``X2`` is
``X1`` only the blocks on and above the diagonal are computed; the others are their transposes.
The last block of rows or columns may be smaller (any ``n``).

Blocks are Dask tasks: on the local cores by default (Dask's threaded scheduler), or on a Dask
cluster given a ``distributed.Client`` or a scheduler address.  The result is a dask array, or,
with ``out``, a zarr array on disk written block by block, never whole in memory; on a cluster
``out`` must be on a file system the workers share.  The values equal
:func:`meanfield.kernels.nngp` / :func:`~meanfield.kernels.ntk` bit for bit for closed forms and to
the tables' tolerance (about 1e-14 relative) otherwise (their tables cover every angle, not only
the angles that occur).

Needs the ``distributed`` extra: ``pip install 'meanfield[distributed]'`` (dask, distributed, zarr).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike

from . import _validate
from ._blocked_engine import block as _block_task
from ._blocked_engine import prepare, store_block
from ._kernel_args import check
from .activations import ActivationLike
from .layers import Dense

__all__ = ["nngp_blocks", "ntk_blocks", "DEFAULT_BLOCK"]

#: Rows and columns per block: 2000 x 2000 float64 is 32 MB per array.
DEFAULT_BLOCK = 2000


def nngp_blocks(X1: ArrayLike, X2: ArrayLike | None = None, act: ActivationLike = "relu", depth: int = 1,
                sigma_w2: float = 2.0, sigma_b2: float = 0.0, *, method: str = "auto", block: int = DEFAULT_BLOCK,
                client=None, out: str | os.PathLike | None = None, overwrite: bool = False,
                memory_limit: float | None = None, progress: Callable[[int, int], None] | None = None):
    """The NNGP kernel ``K^L`` of :func:`meanfield.kernels.nngp` (Lee et al. 2018, eqs. 5-6), by blocks.

    Parameters
    ----------
    X1, X2, act, depth, sigma_w2, sigma_b2, method
        As in :func:`meanfield.kernels.nngp`.
    block : int
        Rows and columns per block (the last block of each may be smaller).  A block's task holds
        about 5 (NNGP) or 7 (NTK) ``block x block`` float64 arrays.
    client : distributed.Client, str or None
        A Dask client, or a scheduler address such as ``"tcp://host:8786"`` (connected to and
        closed afterwards; ValueError if it cannot be reached).  None: the local cores (Dask's
        threaded scheduler).  It runs the blocks written to ``out``; a lazy dask array (no ``out``)
        runs wherever it is computed (``.compute(scheduler=client)``), so an address without
        ``out`` is refused.
    out : path, optional
        Write the kernel to this zarr store (chunks = blocks) and return it opened read-only.
        The store is written beside the target under a temporary name and renamed when complete:
        an error or interruption leaves no partial store.  Without ``out`` a lazy dask array is
        returned (compute it, or store it, with any Dask scheduler).
    overwrite : bool
        Replace an existing ``out`` (else FileExistsError before any work).
    memory_limit : float, optional
        Bytes one block's arrays may use (None: 4 GiB); a larger ``block`` raises ValueError.
    progress : callable, optional
        Called as ``progress(done, total)`` after each block written (with ``out`` only).

    Returns
    -------
    dask.array.Array (n1, n2), or zarr.Array with ``out``

    Raises
    ------
    ValueError
        As :func:`meanfield.kernels.nngp` (the variances are checked for every layer before any
        block runs); a block size that is not a positive integer or too large for
        ``memory_limit``; a scheduler that cannot be reached.
    FileExistsError
        ``out`` exists and ``overwrite`` is False.
    """
    return _blocked(X1, X2, act, depth, sigma_w2, sigma_b2, method, block, client, out, overwrite, memory_limit,
                    progress, want_ntk=False)


def ntk_blocks(X1: ArrayLike, X2: ArrayLike | None = None, act: ActivationLike = "relu", depth: int = 1,
               sigma_w2: float = 2.0, sigma_b2: float = 0.0, *, method: str = "auto", block: int = DEFAULT_BLOCK,
               client=None, out: str | os.PathLike | None = None, overwrite: bool = False,
               memory_limit: float | None = None, progress: Callable[[int, int], None] | None = None):
    """The neural tangent kernel ``Theta^L`` of :func:`meanfield.kernels.ntk` (Jacot et al. 2018, Thm. 1), by blocks.

    ``Theta^0 = K^0``, ``Theta^l = K^l + sigma_w2 E[phi'(u) phi'(u')] Theta^{l-1}`` (Arora et al.
    2019, eq. 9).  Parameters, returns and errors as :func:`nngp_blocks`.
    """
    return _blocked(X1, X2, act, depth, sigma_w2, sigma_b2, method, block, client, out, overwrite, memory_limit,
                    progress, want_ntk=True)


def _dask():
    try:
        import dask
        import dask.array as da
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("kernels by blocks need Dask: pip install 'meanfield[distributed]'") from err
    return dask, da


def _check_out(out, overwrite):
    if out is None:
        return None
    if not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"out must be a path to a zarr store, got {type(out).__name__}")
    path = os.path.abspath(os.fspath(out))
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"the output store {path!r} exists; pass overwrite=True (--overwrite) to replace it")
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        raise ValueError(f"out: the directory {parent!r} does not exist")
    return path


def _blocked(X1, X2, act, depth, sigma_w2, sigma_b2, method, block, client, out, overwrite, memory_limit,
             progress, want_ntk):
    n_arrays = 7 if want_ntk else 5
    block = _validate.positive_int("block", block)
    limit = _validate.memory_limit(memory_limit)
    if 8.0 * block * block * n_arrays > limit:
        raise ValueError(f"block = {block} needs {_validate.format_bytes(8.0 * block * block * n_arrays)} per task, "
                         f"more than memory_limit = {_validate.format_bytes(limit)}: use a smaller block")
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be callable as progress(done, total), got {type(progress).__name__}")
    if not isinstance(overwrite, (bool, np.bool_)):
        raise TypeError(f"overwrite must be True or False, got {overwrite!r}")
    a1 = _validate.inputs("X1", X1)
    a2 = None if X2 is None else _validate.inputs("X2", X2)
    whole = 8.0 * a1.shape[0] * (a1 if a2 is None else a2).shape[0] * n_arrays  # checked by blocks instead
    X1, X2, same, act, depth, sw, sb = check(a1, a2, act, depth, sigma_w2, sigma_b2, method, max(whole, 1.0),
                                             n_arrays)
    path = _check_out(out, overwrite)
    if isinstance(client, str) and path is None:
        raise ValueError("a scheduler address is used to write the kernel (give out='K.zarr'); a lazy dask array does "
                         "not keep the connection: connect a distributed.Client yourself and compute the array with it")
    dask, da = _dask()
    own_client = isinstance(client, str)
    if own_client:
        from .runner import connect

        client = connect(client)
    elif client is not None and not hasattr(client, "compute"):
        raise TypeError(f"client must be a distributed.Client, a scheduler address or None, "
                        f"got {type(client).__name__}")
    try:
        state = prepare(X1, X2, same, Dense(act, sw, sb), depth, method, want_ntk)
        tasks = _tasks(dask, state, X1, X2, same, block)
        if path is None:
            return _array(dask, da, tasks, X1.shape[0], X2.shape[0], same)
        return _write(dask, tasks, state, X1.shape[0], X2.shape[0], block, path, overwrite, client, progress,
                      {"kernel": "ntk" if want_ntk else "nngp", "activation": act.name, "depth": depth,
                       "sigma_w2": sw, "sigma_b2": sb, "method": method})
    finally:
        if own_client:
            client.close()


def _tasks(dask, state, X1, X2, same, block):
    """``[(i, j, r0, c0, shape, delayed_inputs...)]`` for the blocks computed (upper triangle when same)."""
    token = uuid.uuid4().hex
    st = dask.delayed(state, name=f"meanfield-kernel-state-{token}", traverse=False)
    starts1 = range(0, X1.shape[0], block)
    starts2 = range(0, X2.shape[0], block)
    rows = [dask.delayed(X1[r:r + block], name=f"meanfield-rows-{token}-{k}", traverse=False)
            for k, r in enumerate(starts1)]
    cols = rows if same else [dask.delayed(X2[c:c + block], name=f"meanfield-cols-{token}-{k}", traverse=False)
                              for k, c in enumerate(starts2)]
    out = []
    for i, r0 in enumerate(starts1):
        for j, c0 in enumerate(starts2):
            if same and j < i:
                continue
            shape = (min(block, X1.shape[0] - r0), min(block, X2.shape[0] - c0))
            out.append((i, j, r0, c0, shape, st, rows[i], cols[j]))
    return out


def _array(dask, da, tasks, n1, n2, same):
    """The kernel as a dask array of the block tasks (lower blocks transposed when same)."""
    grid: dict = {}
    for i, j, r0, c0, shape, st, xr, xc in tasks:
        task = dask.delayed(_block_task, pure=True)(st, xr, xc, r0, c0, dask_key_name=f"meanfield-block-{i}-{j}-"
                                                    f"{st.key[-32:]}")
        grid[i, j] = da.from_delayed(task, shape=shape, dtype=float)
        if same and i != j:
            grid[j, i] = grid[i, j].T
    ni = 1 + max(i for i, _ in grid)
    nj = 1 + max(j for _, j in grid)
    return da.block([[grid[i, j] for j in range(nj)] for i in range(ni)])


def _write(dask, tasks, state, n1, n2, block, path, overwrite, client, progress, attrs):
    """Write every block into a temporary zarr store beside ``path``, then rename it to ``path``."""
    try:
        import zarr
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("writing a kernel to a zarr store needs zarr: pip install 'meanfield[distributed]'") from err

    parent, name = os.path.split(path)
    tmp = os.path.join(parent, f".{name}.partial-{uuid.uuid4().hex[:12]}")
    try:
        # uncompressed: kernel entries barely compress, and a block is written at disk speed
        z = zarr.create_array(tmp, shape=(n1, n2), chunks=(min(block, n1), min(block, n2)), dtype="f8",
                              fill_value=np.nan, compressors=None)
        z.attrs.update(attrs)
        jobs = [dask.delayed(store_block, pure=True)(st, xr, xc, r0, c0, tmp,
                                                     dask_key_name=f"meanfield-store-{i}-{j}-{st.key[-32:]}")
                for i, j, r0, c0, shape, st, xr, xc in tasks]
        if client is None:
            _compute_local(dask, jobs, progress)
        else:
            _compute_client(client, jobs, progress)
        if os.path.exists(path):  # overwrite was checked; replace the old store only now
            old = os.path.join(parent, f".{name}.old-{uuid.uuid4().hex[:12]}")
            os.rename(path, old)
            os.rename(tmp, path)
            _remove(old)
        else:
            os.rename(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    return zarr.open_array(path, mode="r")


def _remove(path):
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.exists(path):
        os.remove(path)


def _compute_local(dask, jobs, progress):
    """The jobs on Dask's threaded scheduler (every local core), ``progress`` after each."""
    from dask.callbacks import Callback

    total, done = len(jobs), [0]

    class _Progress(Callback):
        def _posttask(self, key, result, dsk, state, worker_id):
            if isinstance(key, str) and key.startswith("meanfield-store-"):
                done[0] += 1
                progress(done[0], total)

    if progress is None:
        dask.compute(*jobs, scheduler="threads")
    else:
        with _Progress():
            dask.compute(*jobs, scheduler="threads")


def _compute_client(client, jobs, progress):
    """The jobs on a Dask cluster (its scheduler retries lost work), ``progress`` after each."""
    from distributed import as_completed

    futures = client.compute(jobs)
    try:
        for done, future in enumerate(as_completed(futures), start=1):
            future.result()  # a task's exception is raised here
            if progress is not None:
                progress(done, len(futures))
    except BaseException:
        client.cancel(futures)
        raise
