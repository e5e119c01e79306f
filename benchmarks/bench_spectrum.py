"""Jacobian spectra: speed of the theory against sampling matrices, and the density's accuracy.

Run: ``python benchmarks/bench_spectrum.py``.  Side by side in one run:

1. ``jacobian_spectrum`` at depth 100 (build: q*, moments, edge) and ``.density`` on a grid of
   200 lambdas (geometric, 1e-6 edge to the edge), warm (one call before timing), best of 3;
   relu at (2, 0) and tanh on its critical line at q* = 1/64, Gaussian and orthogonal weights.
2. The baseline: one sampled network of width 500 and depth 100 (``prod D^l W^l`` with
   ``D = diag(phi'(h))``, ``h ~ N(0, q*)``, then ``eigvalsh(J J^T)``), which gives one noisy
   histogram of 500 eigenvalues.
3. Accuracy of the density at depth 4: ``1 - atoms - int rho`` and the relative errors of the
   density's mean and variance against the exact m1 and variance (tanh-sinh rule in log lambda).
"""

from __future__ import annotations

import os
import sys
import warnings

import numpy as np
from _timing import best  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

from meanfield.quadrature import expect_1d
from meanfield.spectrum import jacobian_spectrum

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from test_spectrum import sample_jacobian_eigs as sample  # noqa: E402  (the tests' sampler)


def tanh_critical(q):
    """(sigma_w2, sigma_b2) on tanh's critical line at q*."""
    sw = 1.0 / expect_1d(lambda u: 1 / np.cosh(u) ** 4, 0.0, q)[()]
    return sw, q - sw * expect_1d(lambda u: np.tanh(u) ** 2, 0.0, q)[()]


def density_errors(spec, floor):
    tau = np.arange(-3.2, 3.2 + 1 / 64, 1 / 32)
    x = np.tanh(0.5 * np.pi * np.sinh(tau))
    wgt = 0.5 * np.pi * np.cosh(tau) / np.cosh(0.5 * np.pi * np.sinh(tau)) ** 2 / 32
    a = np.log(floor)
    u = a - a * 0.5 * (1 + x)
    keep = (u > a) & (u < 0)
    lam = spec.bulk_edge * np.exp(u[keep])
    rho = spec.density(lam)
    mass, m1, m2 = -0.5 * a * (np.stack([lam, lam ** 2, lam ** 3]) * rho * wgt[keep]).sum(axis=1)
    m1 += sum(loc * m for loc, m in spec.atoms)
    m2 += sum(loc ** 2 * m for loc, m in spec.atoms)
    return (abs(mass - spec.continuous_mass), abs(m1 / spec.mean - 1),
            abs((m2 - spec.mean ** 2) / spec.variance - 1))


def main():
    rng = np.random.default_rng(0)
    relu_d = lambda h: (h > 0).astype(float)  # noqa: E731
    tanh_d = lambda h: 1 / np.cosh(h) ** 2  # noqa: E731
    sw_t, sb_t = tanh_critical(1 / 64)
    cases = [("relu", 2.0, 0.0, relu_d), ("tanh", sw_t, sb_t, tanh_d)]
    print("| activation | weights | build | density, 200 lambdas | sampled width 500 | edge | variance |")
    print("|---|---|---|---|---|---|---|")
    for name, sw, sb, dphi in cases:
        for weights in ("gaussian", "orthogonal"):
            jacobian_spectrum(name, 100, sw, sb, weights)
            t_build, spec = best(lambda: jacobian_spectrum(name, 100, sw, sb, weights))
            lam = np.geomspace(1e-6 * spec.edge, spec.edge, 200)
            spec.density(lam)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t_dens, rho = best(lambda: spec.density(lam))
            t_samp, _ = best(lambda: sample(dphi, spec.q_star, 100, sw, weights, 500, rng), repeat=1)
            print(f"| {name} | {weights} | {t_build:.3f} s | {t_dens:.3f} s ({np.isnan(rho).sum()} NaN) | "
                  f"{t_samp:.2f} s | {spec.edge:.6g} | {spec.variance:.6g} |")
    print()
    print("| case (depth 4) | 1 - atoms - int rho | rel. error of mean | rel. error of variance |")
    print("|---|---|---|---|")
    for name, w, sw, sb, floor in [("linear", "gaussian", 1.0, 0.0, 1e-40), ("relu", "gaussian", 2.0, 0.0, 1e-40),
                                   ("relu", "orthogonal", 2.0, 0.0, 1e-40),
                                   ("tanh", "gaussian", 1.05, 0.01, 1e-40),
                                   ("tanh", "orthogonal", 1.05, 0.01, 5e-3)]:
        errs = density_errors(jacobian_spectrum(name, 4, sw, sb, w), floor)
        print(f"| {name} {w} | " + " | ".join(f"{e:.1e}" for e in errs) + " |")


if __name__ == "__main__":
    main()
