"""The ``meanfield trainability`` command: train over a (sigma_w2, depth) grid, set the boundary against 6 xi_c."""

from __future__ import annotations

import functools
import math


def _depths(text: str):
    """Depths from ``START:STOP:N`` (N geometrically spaced, rounded, distinct) or a comma list."""
    import numpy as np

    from .cli import parse_grid

    text = str(text).strip()
    if ":" in text:
        lin = parse_grid(text, "--depths")
        if lin[0] < 1:
            raise ValueError(f"--depths {text!r}: depths start at 1")
        values = np.unique(np.geomspace(lin[0], lin[-1], lin.size).round())
    else:
        values = parse_grid(text, "--depths")
    if np.any(values < 1) or np.any(values != np.round(values)):
        raise ValueError(f"--depths {text!r} must be whole numbers of layers >= 1")
    values = np.unique(values).astype(int)
    return values


def cmd_trainability(args, helpers) -> int:
    """Run the grid (with a progress bar on stderr), write the data and the figure, print the verdict."""
    from .cli import output_paths, parse_grid
    from .trained_depth import plot_trainability, trainability

    act = helpers["activation"](args)
    sw = parse_grid(args.sigma_w2, "--sigma-w2")
    ds = _depths(args.depths)
    default = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in act.name) + "_trainability"
    data_path, fig_path, kind = output_paths(args.output, default, not args.no_figure)
    for p in (data_path, fig_path):
        if p is not None:
            helpers["check_writable"](p)
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be a positive number of processes, got {args.workers}")
    act_arg = args.activation if not args.param else act
    result = trainability(act_arg, sw, ds, sigma_b2=args.sigma_b2, width=args.width, steps=args.steps,
                          batch_size=args.batch_size, lr=args.lr, momentum=args.momentum, dtype=args.dtype,
                          threshold=args.threshold, rng=args.seed, client=args.scheduler, workers=args.workers,
                          progress=helpers["progress"](f"{act.name} trainability, {sw.size * ds.size} networks"))
    result.save(data_path)
    if fig_path is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        ax = plot_trainability(result)
        helpers["save_figure"](ax.figure, fig_path, kind)
        plt.close(ax.figure)
    if args.json:
        helpers["dump_json"]({
            "activation": result.activation, "sigma_b2": result.sigma_b2, "sigma_w2": result.sigma_w2,
            "depths": result.depths, "accuracy": result.accuracy, "diverged": result.diverged,
            "chance": result.chance, "threshold": result.threshold, "xi_c": result.xi_c,
            "critical_sigma_w2": result.critical_sigma_w2, "boundary": result.boundary, "k": result.k,
            "agreement_6_xi_c": result.agreement, "agreement_fitted": result.agreement_fitted,
            "settings": result.settings, "data": data_path, "figure": fig_path, "summary": result.summary(),
        })
        return 0
    s = result.settings
    print(f"{result.activation}, sigma_b2 = {result.sigma_b2:g}: {result.accuracy.size} networks of width {s['width']} "
          f"trained for {s['steps']} SGD steps (batch {s['batch_size']}, lr {s['lr']:g}, momentum {s['momentum']:g}, "
          f"{s['dtype']}) on the digits ({s['n_train']} training, {s['n_test']} test images)")
    print(f"  critical line chi_1 = 1 at sigma_w2 = {result.critical_sigma_w2:.4g}")
    print("  sigma_w2     xi_c   6 xi_c  measured boundary  test accuracy by depth " + " ".join(
        f"{d:>5d}" for d in result.depths))
    for j, w in enumerate(result.sigma_w2):
        b = result.boundary[j]
        if math.isfinite(b):
            btxt = f"{b:9.3g}"
        else:
            btxt = "  > grid" if result.trained[-1, j] else ("  < grid" if not result.trained[0, j] else "      -")
        accs = " ".join("  div" if result.diverged[i, j] else f"{result.accuracy[i, j]:5.2f}"
                        for i in range(result.depths.size))
        print(f"  {w:8.4g} {result.xi_c[j]:8.3g} {6 * result.xi_c[j]:8.3g}  {btxt:>17}  {'':22} {accs}")
    print(f"  {result.summary()}")
    print(f"  wrote {data_path}" + (f" and {fig_path}" if fig_path else ""))
    return 0


def add_parser(sub, add_common, helpers) -> None:
    """Register ``meanfield trainability``; ``helpers`` are the command line's shared helpers."""
    g = sub.add_parser(
        "trainability", help="train networks over a (sigma_w2, depth) grid: is the trainable depth 6 xi_c?",
        description="Train a fully connected network at every (sigma_w2, depth) of a grid on scikit-learn's digits "
                    "(standardised, held-out split) and compare where it trains with 6 xi_c from the theory, like "
                    "Schoenholz et al. 2017, Figs. 5-6: fit the constant k of boundary = k xi_c and count the grid "
                    "cells where 'trained above chance' agrees with 'depth < 6 xi_c'. Writes the data (.npz) and a "
                    "heat map. Needs scikit-learn (pip install 'meanfield[train]').")
    g.add_argument("activation", nargs="?", default="tanh", help="activation (default: tanh)")
    g.add_argument("--sigma-b2", type=float, default=0.05, help="bias variance (default 0.05, as in the paper)")
    g.add_argument("--sigma-w2", default="1:4:12", metavar="GRID",
                   help="weight variances: START:STOP:N or a comma list (default 1:4:12)")
    g.add_argument("--depths", default="4:100:10", metavar="GRID",
                   help="depths: START:STOP:N (N geometrically spaced, rounded) or a comma list (default 4:100:10)")
    g.add_argument("--width", type=int, default=100, help="units per hidden layer (default 100)")
    g.add_argument("--steps", type=int, default=300, help="SGD steps per network (default 300)")
    g.add_argument("--batch-size", type=int, default=64, help="mini-batch size (default 64)")
    g.add_argument("--lr", type=float, default=0.003, help="learning rate (default 0.003)")
    g.add_argument("--momentum", type=float, default=0.9, help="momentum in [0, 1) (default 0.9)")
    g.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="precision (default float32)")
    g.add_argument("--threshold", type=float, default=None,
                   help="test accuracy above which a network counts as trained (default: twice chance)")
    g.add_argument("--seed", type=int, default=0, help="seed of the split and of every network (default 0)")
    g.add_argument("--workers", type=int, default=None, help="local processes (default: every core)")
    g.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="run on a Dask cluster, e.g. tcp://host:8786 (needs meanfield[distributed])")
    g.add_argument("--output", default=None, metavar="PREFIX[.png|.pdf|.svg]",
                   help="write PREFIX.npz and the figure PREFIX.png (default: <activation>_trainability)")
    g.add_argument("--no-figure", action="store_true", help="write only the data")
    add_common(g, json_help="machine-readable summary on stdout")
    g.set_defaults(func=functools.partial(cmd_trainability, helpers=helpers))
