"""Benchmark: GP posterior mean by conjugate gradients against Cholesky, on an NNGP of digits.

Run ``python benchmarks/bench_gp_cg.py``.  Inputs: scikit-learn's 8x8 digits (1797 images), and
beyond that as many again per pass made from them by a one-pixel shift and pixel noise (so that
n = 10,000 is still digits-like), scaled to a common norm.  Kernel: the relu NNGP at depth 5
(sigma_w2 = 2, sigma_b2 = 0.05); target: one class against the rest (0.9 / -0.1), one right-hand
side (CG's cost grows with the number of right-hand sides, Cholesky's hardly); noise variance
1e-3.  Times are for the solve and the mean at 1000 test points, the kernels
given (``meanfield.gp.predict_from_kernel``); CG to a relative residual of 1e-8, both in the
same run, best of ``REPEAT``.  The error column is the largest difference of the CG mean from
the Cholesky mean, relative to its largest entry.
"""

from __future__ import annotations

import os
import platform

import numpy as np
from _timing import best  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

import meanfield as mf

SIZES = (2000, 5000, 10000)
N_TEST, NOISE, TOL, REPEAT = 1000, 1e-3, 1e-8, 1
NET = dict(depth=5, sigma_w2=2.0, sigma_b2=0.05)


def digits(n, rng):
    from sklearn.datasets import load_digits

    X0, y0 = load_digits(return_X_y=True)
    X, y = [X0], [y0]
    while sum(len(a) for a in X) < n:
        img = X0.reshape(-1, 8, 8)
        shifted = np.roll(img, rng.choice([-1, 1]), axis=rng.choice([1, 2])).reshape(len(X0), 64)
        X.append(np.clip(shifted + rng.normal(0, 1.0, shifted.shape), 0, 16))
        y.append(y0)
    X, y = np.concatenate(X)[:n], np.concatenate(y)[:n]
    X = X / np.linalg.norm(X, axis=1, keepdims=True) * np.sqrt(X.shape[1])
    return X, np.where(y == 3, 0.9, -0.1)


def main():
    rng = np.random.default_rng(0)
    X, Y = digits(max(SIZES) + N_TEST, rng)
    perm = rng.permutation(len(X))
    X, Y = X[perm], Y[perm]
    Xt = X[-N_TEST:]
    print(f"# {platform.machine()}, {os.cpu_count()} CPUs, {platform.processor() or platform.platform()}, "
          f"numpy {np.__version__}")
    print("| n | Cholesky | CG, pivoted Cholesky (rank 100) | CG, Jacobi | CG error |")
    print("|---|---|---|---|---|")
    for n in SIZES:
        K = mf.nngp(X[:n], None, "relu", **NET)
        Kt = mf.nngp(Xt, X[:n], "relu", **NET)
        y = Y[:n]
        t_chol, ref = best(lambda: mf.gp.predict_from_kernel(K, y, Kt, noise=NOISE, solver="cholesky"), REPEAT)
        cells = []
        err = None
        for pre in ("pivoted-cholesky", "jacobi"):
            if pre == "jacobi" and n > 2000:
                cells.append("-")
                continue
            t, (mean, info) = best(lambda: mf.gp.predict_from_kernel(  # noqa: B023
                K, y, Kt, noise=NOISE, tol=TOL, preconditioner=pre, return_info=True), REPEAT)
            cells.append(f"{t:.2f} s, {info.iterations} it, residual {info.residual:.1e}")
            if err is None:
                err = np.max(np.abs(mean - ref)) / np.max(np.abs(ref))
        print(f"| {n} | {t_chol:.2f} s | {cells[0]} | {cells[1]} | {err:.1e} |", flush=True)


if __name__ == "__main__":
    main()
