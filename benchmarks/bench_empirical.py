"""Throughput of meanfield.empirical: forward + backward through sampled networks.

Compares, side by side in one run, ``run`` (sample each layer's weights, forward pass with
q^l records, backpropagation of a random output gradient with per-layer gradient norms) with the
raw numpy matrix products of the same shapes (the floor: one forward and one backward product per
layer with a fixed, pre-sampled weight matrix), and with that floor plus the cost of drawing the
Gaussian weights once per layer.

    python benchmarks/bench_empirical.py            # width 2048, depth 100, 512 inputs
    python benchmarks/bench_empirical.py --depth 20 # quicker
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import time

import numpy as np

import meanfield.empirical as emp
from meanfield._validate import DEFAULT_MEMORY_LIMIT


def best_of(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=2048)
    ap.add_argument("--depth", type=int, default=100)
    ap.add_argument("--inputs", type=int, default=512)
    ap.add_argument("--act", default="tanh")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--dtypes", default="float64,float32")
    args = ap.parse_args()
    N, L, B = args.width, args.depth, args.inputs

    try:
        from threadpoolctl import threadpool_info

        blas = "; ".join(f"{i.get('internal_api')} {i.get('version')} threads={i.get('num_threads')}"
                         for i in threadpool_info())
    except ImportError:
        blas = "threadpoolctl not installed"
    try:
        cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()[:10]
    except OSError:
        cpu = [platform.processor()]
    print("machine:")
    for line in cpu:
        print("   ", line)
    print(f"python {platform.python_version()}, numpy {np.__version__}, BLAS: {blas}")
    print(f"width {N}, depth {L}, inputs {B}, activation {args.act}, best of {args.repeat} (interleaved)")
    print(f"load average at start: {os.getloadavg()}\n")

    flops = 2 * 2 * L * N * N * B  # one forward and one backward product per layer
    rows = []
    for dt in args.dtypes.split(","):
        dtype = np.dtype(dt)
        rng = np.random.default_rng(0)
        W = rng.standard_normal((N, N)).astype(dtype)
        A = rng.standard_normal((B, N)).astype(dtype)

        def raw_matmul(A=A, W=W):
            for _ in range(L):
                H = A @ W
                H @ W.T

        def raw_matmul_and_sampling(A=A, dtype=dtype):
            g = np.random.default_rng(1)
            for _ in range(L):
                Z = g.standard_normal((N, N), dtype=dtype)
                H = A @ Z
                H @ Z.T

        spec = emp.NetworkSpec(args.act, sigma_w2=1.5, sigma_b2=0.05, width=N, depth=L, dtype=dt)
        X = np.random.default_rng(2).standard_normal((B, N))
        # when the weights (L N^2) do not fit in memory_limit the backward pass regenerates them
        # from per-layer seeds; the tape (phi' of every layer, L N B) must fit
        seeds = iter(range(1000))

        # run keeps the weights when they fit in memory_limit next to the tape and one layer of the batch
        weight_bytes = L * N * N * dtype.itemsize
        rest = L * N * B * dtype.itemsize + 8 * N * B * dtype.itemsize + 64 * L * B
        kept = rest + weight_bytes <= DEFAULT_MEMORY_LIMIT
        modes = [(f"default memory_limit ({DEFAULT_MEMORY_LIMIT / 2**30:g} GiB), weights "
                  f"{'kept' if kept else 'regenerated'}", None)]
        if kept:  # also time the regenerating mode, with a limit that holds the tape but not the weights
            limit = 2**30 if rest <= 2**30 < rest + weight_bytes else rest + weight_bytes // 2
            modes.append((f"memory_limit {limit / 2**30:.3g} GiB, weights regenerated", limit))
        elif available_memory() > 2.5 * weight_bytes:
            modes.append((f"memory_limit {2 * weight_bytes / 2**30:.0f} GiB, weights kept", 2 * weight_bytes))

        # interleave the measurements so that baseline and run see the same machine load
        times = {"raw": [], "raw_s": [], **{label: [] for label, _ in modes}}
        for _ in range(args.repeat):
            times["raw"].append(best_of(raw_matmul, 1))
            times["raw_s"].append(best_of(raw_matmul_and_sampling, 1))
            for label, limit in modes:
                times[label].append(best_of(
                    lambda limit=limit, spec=spec, X=X, seeds=seeds: emp.run(
                        spec, X, next(seeds), gradients=True, pairs=None, memory_limit=limit), 1))
        t_raw, t_raw_s = min(times["raw"]), min(times["raw_s"])
        for label, _ in modes:
            t_ours = min(times[label])
            rows.append((dt, label, t_raw, t_raw_s, t_ours))
            print(f"{dt}, {label}: raw matmul {t_raw:.2f} s ({flops / t_raw / 1e9:.1f} GFLOP/s); "
                  f"+ sampling {t_raw_s:.2f} s; run {t_ours:.2f} s; ratio run / raw matmul = "
                  f"{t_ours / t_raw:.2f}, / (matmul + sampling) = {t_ours / t_raw_s:.2f}", flush=True)

    print("\n| dtype | mode | raw matmul (s) | matmul + sampling (s) | run fwd+bwd (s) | ratio vs matmul "
          "| ratio vs matmul+sampling |")
    print("|---|---|---|---|---|---|---|")
    for dt, label, a, b, c in rows:
        print(f"| {dt} | {label} | {a:.2f} | {b:.2f} | {c:.2f} | {c / a:.2f} | {c / b:.2f} |")


def available_memory():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    main()
