"""Benchmark: an n x n tanh NNGP at depth 10 by blocks (meanfield.blocked), written to zarr.

Run ``python benchmarks/bench_distributed.py [n] [block] [--cluster-only] [--two-workers]`` (default
5000, 1000).  In one run:

- the in-memory kernel (``meanfield.nngp``, threads on every core) where it fits, as the baseline;
- ``nngp_blocks`` on Dask's threaded scheduler (the default, every local core);
- ``nngp_blocks`` on a ``distributed.LocalCluster`` of 1 and then 2 single-threaded worker
  processes (the scaling from 1 to 2 workers), each worker's peak resident memory read from the
  worker process itself (``VmHWM``) at the end.

Inputs: d = 64, Gaussian rows scaled to one common norm (the common case of normalised data), and
for the threaded scheduler also raw Gaussian rows (every input its own norm).  sigma_w2 = 1.76,
sigma_b2 = 0.05.  Accuracy: rows of the stored kernel against ``meanfield.nngp`` on those rows.
"""

from __future__ import annotations

import os
import platform
import resource
import shutil
import sys
import tempfile
import time

import numpy as np

import meanfield as mf
from meanfield.blocked import nngp_blocks

D, DEPTH, SW, SB = 64, 10, 1.76, 0.05


def inputs(n, common_norm=True):
    X = np.random.default_rng(0).standard_normal((n, D))
    if common_norm:
        X *= np.sqrt(D) / np.linalg.norm(X, axis=1, keepdims=True)
    return X


def _peak_rss_mb():
    """Peak resident memory of this process (VmHWM: unlike ru_maxrss, not inherited from a forking parent)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:  # not Linux
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def check(X, z, K=None):
    """Largest difference from the whole in-memory kernel ``K``, else from ``meanfield.nngp`` on 3 rows."""
    if K is not None and X.shape[0] == K.shape[0]:
        return float(np.max(np.abs(K - z[:])) / np.max(np.abs(K))), "whole kernel"
    rows = np.array([0, X.shape[0] // 2, X.shape[0] - 1])
    ref = mf.nngp(X[rows], X, "tanh", DEPTH, SW, SB)
    got = z.get_orthogonal_selection((rows, slice(None)))
    return float(np.max(np.abs(ref - got)) / np.max(np.abs(ref))), "3 rows"


def _fmt(err):
    return f"{err[0]:.1e} ({err[1]})"


def run_blocks(X, block, client, where):
    path = os.path.join(where, "K.zarr")
    shutil.rmtree(path, ignore_errors=True)
    start = time.perf_counter()
    z = nngp_blocks(X, None, "tanh", DEPTH, SW, SB, block=block, client=client, out=path)
    seconds = time.perf_counter() - start
    return seconds, z


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    n = int(args[0]) if args else 5000
    block = int(args[1]) if len(args) > 1 else 1000
    only_cluster = "--cluster-only" in sys.argv  # only the LocalCluster runs
    n_workers = (2,) if "--two-workers" in sys.argv else (1, 2)
    from distributed import Client, LocalCluster

    print(f"# {n} x {n} tanh NNGP, depth {DEPTH}, d = {D}, block {block}; {platform.machine()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    where = tempfile.mkdtemp(prefix="bench_distributed_", dir=os.environ.get("BENCH_DIR"))
    X = inputs(n)
    print("| run | seconds | entries/s | peak memory | max rel. difference from meanfield.nngp |")
    print("|---|---|---|---|---|")
    K = None
    try:
        if not only_cluster and 8.0 * n * n * 3 < 4 * 2**30:
            start = time.perf_counter()
            K = mf.nngp(X, None, "tanh", DEPTH, SW, SB)
            s = time.perf_counter() - start
            print(f"| in memory, meanfield.nngp | {s:.1f} | {n * n / s:.3g} | {_peak_rss_mb():.0f} MB (process) | - |",
                  flush=True)
        if not only_cluster:
            for label, Y in (("common norm", X), ("raw inputs", inputs(n, common_norm=False))):
                s, z = run_blocks(Y, block, None, where)
                print(f"| threaded scheduler, {label} | {s:.1f} | {n * n / s:.3g} | {_peak_rss_mb():.0f} MB "
                      f"(process) | {_fmt(check(Y, z, K if Y is X else None))} |", flush=True)
        for workers in n_workers:
            with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                              memory_limit="2GB") as cluster, Client(cluster) as client:
                client.run(lambda: __import__("meanfield.blocked"))
                s, z = run_blocks(X, block, client, where)
                peaks = client.run(_peak_rss_mb)
                print(f"| LocalCluster, {workers} worker(s), common norm | {s:.1f} | {n * n / s:.3g} | "
                      f"{max(peaks.values()):.0f} MB per worker | {_fmt(check(X, z, K))} |", flush=True)
    finally:
        shutil.rmtree(where, ignore_errors=True)


if __name__ == "__main__":
    main()
