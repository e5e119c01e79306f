"""The ``meanfield kernel`` command: an NNGP or NTK kernel of a data set, by blocks, into a zarr store.

``meanfield kernel data.npy tanh --depth 10 --out K.zarr`` computes the kernel of the rows of
``data.npy`` with :func:`meanfield.blocked.nngp_blocks` (``--ntk``: :func:`~meanfield.blocked.ntk_blocks`)
on the local cores, or on a Dask cluster with ``--scheduler tcp://host:8786``, and writes it
block by block (complete or not at all), with a progress bar on stderr.
"""

from __future__ import annotations

import sys
import time

__all__ = ["add_parser", "cmd_kernel"]


def add_parser(sub, add_common, activation_of) -> None:
    """Register ``meanfield kernel``."""
    k = sub.add_parser(
        "kernel", help="NNGP or NTK kernel of a data set by blocks (Dask), written to a zarr store",
        description="The NNGP (Lee et al. 2018) or NTK (Jacot et al. 2018) kernel of the rows of a .npy file, "
                    "computed by blocks on the local cores or on a Dask cluster, and written to a zarr store "
                    "without holding it whole in memory.")
    k.add_argument("data", help="inputs: a .npy file with one input per row (n x d)")
    k.add_argument("activation", nargs="?", default="tanh", help="activation (default: tanh)")
    k.add_argument("--depth", type=int, default=1, help="hidden layers (nonlinearities), >= 0 (default 1)")
    k.add_argument("--out", required=True, metavar="K.zarr", help="the zarr store to write")
    k.add_argument("--ntk", action="store_true", help="the neural tangent kernel instead of the NNGP")
    k.add_argument("--sigma-w2", type=float, default=1.76, help="weight variance (default 1.76)")
    k.add_argument("--sigma-b2", type=float, default=0.05, help="bias variance (default 0.05)")
    k.add_argument("--block", type=int, default=2000, help="rows and columns per block (default 2000)")
    k.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT",
                   help="a Dask scheduler address (default: the local cores)")
    k.add_argument("--overwrite", action="store_true", help="replace an existing store")
    add_common(k, json_help="machine-readable summary on stdout")
    k.set_defaults(func=lambda args: cmd_kernel(args, activation_of))


def _bar(stream):
    """``progress(done, total)`` drawing a one-line bar on ``stream``."""
    start = time.perf_counter()

    def progress(done, total):
        width = 30
        filled = int(width * done / max(total, 1))
        end = "\n" if done >= total else ""
        stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} blocks "
                     f"{time.perf_counter() - start:.1f} s{end}")
        stream.flush()

    return progress


def cmd_kernel(args, activation_of) -> int:
    """Compute the kernel into ``args.out``; print where it went and how long it took."""
    import os

    import numpy as np

    from .blocked import nngp_blocks, ntk_blocks

    if not os.path.isfile(args.data):
        raise ValueError(f"data: no such file {args.data!r} (a .npy file with one input per row)")
    try:
        X = np.load(args.data, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as err:
        raise ValueError(f"data: {args.data!r} is not a readable .npy array ({err})") from None
    act = activation_of(args)
    fn = ntk_blocks if args.ntk else nngp_blocks
    start = time.perf_counter()
    z = fn(X, None, act, args.depth, args.sigma_w2, args.sigma_b2, block=args.block, client=args.scheduler,
           out=args.out, overwrite=args.overwrite, progress=_bar(sys.stderr))
    seconds = time.perf_counter() - start
    name = "NTK" if args.ntk else "NNGP"
    summary = {"out": os.path.abspath(args.out), "kernel": name.lower(), "shape": list(z.shape),
               "activation": act.name, "depth": args.depth, "sigma_w2": args.sigma_w2, "sigma_b2": args.sigma_b2,
               "block": args.block, "seconds": seconds}
    if args.json:
        import json

        json.dump(summary, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(f"wrote {args.out}: the {z.shape[0]} x {z.shape[1]} {name} kernel ({act.name}, depth {args.depth}, "
              f"sigma_w2 = {args.sigma_w2:g}, sigma_b2 = {args.sigma_b2:g}) in {seconds:.1f} s")
    return 0
