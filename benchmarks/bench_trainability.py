"""The full trainability grid (Schoenholz et al. 2017, Figs. 5-6) on the digits; figure and numbers for the README.

Trains tanh networks at sigma_b2 = 0.05 over a (sigma_w2, depth) grid (every core, through
meanfield.runner), fits the constant k of the measured boundary L = k xi_c and reports the
fraction of cells where "trained above chance" agrees with "L < 6 xi_c".  Writes
docs/trainability_tanh.png and docs/trainability_tanh.npz.

    python benchmarks/bench_trainability.py                 # 12 x 10 grid, depths 4..100
    python benchmarks/bench_trainability.py --depths 4,6,9,14,20,30,45,67,100 --width 64 --batch-size 32  # mid-size
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import sys
import time

import numpy as np

import meanfield as mf
from meanfield.trained_depth import plot_trainability


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-sigma", type=int, default=12, help="values of sigma_w2 in [1, 4] (default 12)")
    ap.add_argument("--depths", default=None, help="comma list (default: 10 geometric values 4..100)")
    ap.add_argument("--width", type=int, default=100)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=None)
    docs = pathlib.Path(__file__).resolve().parent.parent / "docs"
    ap.add_argument("--output", default=str(docs / "trainability_tanh"))
    args = ap.parse_args()
    sw = np.linspace(1.0, 4.0, args.n_sigma)
    depths = (np.unique(np.geomspace(4, 100, 10).round()).astype(int) if args.depths is None
              else [int(d) for d in args.depths.split(",")])
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}, "
          f"numpy {np.__version__}; load average {os.getloadavg()[0]:.1f}")
    t0, c0 = time.perf_counter(), time.process_time()

    def progress(done, total):
        print(f"\r{done}/{total} networks, {time.perf_counter() - t0:.0f} s", end="", file=sys.stderr, flush=True)

    result = mf.trainability("tanh", sw, depths, sigma_b2=0.05, width=args.width, steps=args.steps,
                             batch_size=args.batch_size,
                             lr=0.003, momentum=0.9, rng=0, workers=args.workers, progress=progress)
    wall = time.perf_counter() - t0
    print(file=sys.stderr)
    result.save(args.output + ".npz")
    import matplotlib

    matplotlib.use("Agg")
    ax = plot_trainability(result)
    ax.figure.savefig(args.output + ".png", dpi=110)
    s = result.settings
    print(f"{result.accuracy.size} networks (width {s['width']}, {s['steps']} steps, batch {s['batch_size']}, "
          f"lr {s['lr']}, momentum {s['momentum']}, {s['dtype']}) in {wall:.0f} s wall "
          f"(parent CPU {time.process_time() - c0:.0f} s); load average {os.getloadavg()[0]:.1f}")
    print(result.summary())
    print("| sigma_w2 | xi_c | 6 xi_c | measured boundary | boundary / xi_c |")
    print("|---|---|---|---|---|")
    for w, x, b in zip(result.sigma_w2, result.xi_c, result.boundary, strict=True):
        print(f"| {w:.3g} | {x:.3g} | {6 * x:.3g} | {b:.3g} | {b / x:.3g} |")
    print("test accuracy, rows depth", list(result.depths), "columns sigma_w2")
    print(np.array2string(result.accuracy, precision=2, max_line_width=200))


if __name__ == "__main__":
    main()
