"""Core theory: accuracy and speed of Gaussian expectations and fixed points, and start-up time.

Run: ``python benchmarks/bench_core.py``.  Side by side in one run:

1. ``E[erf(sqrt(q) z)^2]`` (closed form known) and ``E[tanh(sqrt(q) z)^2]`` (mpmath reference)
   by meanfield's adaptive quadrature and by plain fixed-order Gauss-Hermite (64 and 256
   nodes), over q from 0.1 to 1e4: max relative error and time for 10,000 values of q.
2. ``q_star`` for tanh on 10,000 (sigma_w2, sigma_b2) points: time, and the fixed-point residual.
3. A new process: wall time of ``meanfield point`` (import, sympy derivation, answer).
"""

from __future__ import annotations

import subprocess
import sys
import time

import mpmath as mp
import numpy as np
from _timing import best  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
from scipy import special

import meanfield as mf
from meanfield.quadrature import expect_1d


def gauss_hermite(f, q, n):
    z, w = np.polynomial.hermite_e.hermegauss(n)
    w = w / w.sum()
    return f(np.sqrt(np.asarray(q))[..., None] * z) @ w


def main():
    mp.mp.dps = 30
    q_check = np.array([0.1, 1.0, 10.0, 30.0, 100.0, 1e3, 1e4])
    tanh_ref = np.array([float(mp.quad(lambda u: mp.tanh(u) ** 2 * mp.exp(-u * u / (2 * q)),
                                       [-mp.inf, -3 * mp.sqrt(q), -1, 0, 1, 3 * mp.sqrt(q), mp.inf])
                               / mp.sqrt(2 * mp.pi * q)) for q in q_check])
    erf_ref = 2 / np.pi * np.arcsin(2 * q_check / (1 + 2 * q_check))
    q_many = np.geomspace(0.1, 1e4, 10_000)
    print("1. E[phi(sqrt(q) z)^2], q in [0.1, 1e4]: max relative error (7 values of q); time for 10,000 q")
    for label, f, ref in (("erf", special.erf, erf_ref), ("tanh", np.tanh, tanh_ref)):
        F = lambda u, f=f: f(u) ** 2  # noqa: E731
        ours = expect_1d(F, 0.0, q_check)
        t_ours, _ = best(lambda F=F: expect_1d(F, 0.0, q_many))
        err = np.max(np.abs(ours / ref - 1))
        print(f"   {label:5s} meanfield adaptive      err {err:.1e}   time {t_ours:.3f} s")
        for n in (64, 256):
            gh = gauss_hermite(F, q_check, n)
            t_gh, _ = best(lambda F=F, n=n: gauss_hermite(F, q_many, n))
            err = np.max(np.abs(gh / ref - 1))
            print(f"   {label:5s} Gauss-Hermite n={n:<4d}    err {err:.1e}   time {t_gh:.3f} s")

    print("2. q_star, tanh, 100 x 100 grid of sigma_w2 in [0.1, 25], sigma_b2 in [0, 4]")
    sw, sb = np.meshgrid(np.linspace(0.1, 25, 100), np.linspace(0.0, 4.0, 100))
    t, qs = best(lambda: mf.q_star("tanh", sw, sb), repeat=1)
    resid = np.max(np.abs(mf.q_map(qs, "tanh", sw, sb) / np.where(qs > 0, qs, 1) - np.where(qs > 0, 1, 0)))
    print(f"   time {t:.2f} s for 10,000 points; max relative fixed-point residual {resid:.1e}")

    print("3. a new process: `meanfield point` (tanh), wall time, best of 3")
    t_new, _ = best(lambda: subprocess.run([sys.executable, "-m", "meanfield.cli", "point"], check=True,
                                           capture_output=True))
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import numpy, scipy.special, sympy"], check=True)
    base = time.perf_counter() - t
    print(f"   {t_new:.2f} s (of which importing numpy, scipy, sympy alone: {base:.2f} s)")


if __name__ == "__main__":
    main()
