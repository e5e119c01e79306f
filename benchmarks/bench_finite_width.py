"""Finite-width theory: time of a depth-1000 recursion, warm, against a naive per-layer baseline.

Run: ``python benchmarks/bench_finite_width.py [--depth 1000] [--width 512]``.  Side by side in one
run (best of 3, after a warm-up call): :func:`meanfield.finite_width.finite_width` for tanh at
criticality (sigma_w2 = 1, sigma_b2 = 0), erf off criticality and relu, and a naive baseline that
evaluates the same recursions layer by layer with ``scipy.integrate.quad`` (four integrals per
layer: <phi^2>, <phi^4>, d<phi^2>/dK and the fourth derivative, each as a Gaussian integral over
z ~ N(0, 1)), with the largest relative difference between the two for K, V and G1; and the time of
:func:`meanfield.finite_width.jacobian_norm` (||J u||^2) at the same size.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
from _timing import best  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
from scipy import integrate, special

from meanfield.finite_width import finite_width, jacobian_norm

PHI = {"tanh": np.tanh, "erf": special.erf, "relu": lambda t: max(t, 0.0)}


def naive(phi, depth, width, sw, sb, q0):
    """The recursions of meanfield.finite_width, one scipy.quad call per expectation and layer."""

    def gauss(f, K):
        s = math.sqrt(K)
        return integrate.quad(lambda z: f(s * z) * math.exp(-z * z / 2), -np.inf, np.inf,
                              epsabs=0, epsrel=1e-12, limit=200)[0] / math.sqrt(2 * math.pi)

    K, S, D = [q0], [0.0], [0.0]
    for _ in range(depth - 1):
        k = K[-1]
        p2 = gauss(lambda u: phi(u) ** 2, k)
        p4 = gauss(lambda u: phi(u) ** 4, k)
        chi = sw * gauss(lambda u: phi(u) ** 2 * (u * u / k - 1), k) / (2 * k)
        d4 = gauss(lambda u: phi(u) ** 2 * ((u * u / k - 6) * u * u / k + 3), k) / k ** 2
        S.append(sw * sw * (p4 - p2 * p2) / width + chi * chi * S[-1])
        D.append(chi * D[-1] + sw / 8 * d4 * S[-2])
        K.append(sb + sw * p2)
    K, S, D = map(np.array, (K, S, D))
    return K, S * width, D * width


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--depth", type=int, default=1000)
    ap.add_argument("--width", type=int, default=512)
    a = ap.parse_args()
    print(f"depth {a.depth}, width {a.width}: best of 3, warm")
    for act, sw, sb in (("tanh", 1.0, 0.0), ("erf", 1.5, 0.1), ("relu", 2.0, 0.1)):
        t_ours, r = best(lambda act=act, sw=sw, sb=sb: finite_width(act, a.depth, a.width, sw, sb, 1.0), warm=True)
        t_naive, (K, V, G1) = best(lambda act=act, sw=sw, sb=sb: naive(PHI[act], a.depth, a.width, sw, sb, 1.0),
                                   1, warm=True)
        dK = np.max(np.abs(r.K / K - 1))
        dV = np.max(np.abs(r.V[1:] / V[1:] - 1))
        scale = np.maximum(np.abs(G1), 1e-3 * r.K * a.width / a.depth)
        dG = np.max(np.abs(r.G1 - G1)[1:] / scale[1:])
        print(f"  {act:5s} sw={sw} sb={sb}: finite_width {t_ours:.3f} s   naive quad {t_naive:.2f} s"
              f"   ratio {t_naive / t_ours:.0f}x   max rel diff K {dK:.1e} V {dV:.1e} G1 {dG:.1e}")
    for act, sw, sb in (("tanh", 1.0, 0.0), ("gelu", 2.0, 0.1)):
        t_jac, _ = best(lambda act=act, sw=sw, sb=sb: jacobian_norm(act, a.depth, a.width, sw, sb, 1.0), warm=True)
        print(f"  jacobian_norm {act} sw={sw} sb={sb}: {t_jac:.3f} s")


if __name__ == "__main__":
    main()
