"""Independent references for the tests: mpmath (1-D, 30 digits) and nested scipy quad (2-D).

Nothing here calls meanfield's integrators; activations are written out by hand so that a
mistake in the sympy derivation or the quadrature cannot cancel against itself.
"""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np
from scipy import integrate, optimize, special

mp.mp.dps = 24

# phi, phi' written by hand (mpmath versions for 1-D references)
SELU_L = mp.mpf("1.0507009873554804934193349852946")
SELU_A = mp.mpf("1.6732632423543772848170429916717")

MP = {
    "tanh": (mp.tanh, lambda x: 1 - mp.tanh(x) ** 2, ()),
    "erf": (mp.erf, lambda x: 2 / mp.sqrt(mp.pi) * mp.exp(-x * x), ()),
    "relu": (lambda x: x if x > 0 else mp.mpf(0), lambda x: mp.mpf(1) if x > 0 else mp.mpf(0), (0,)),
    "hard_tanh": (lambda x: max(mp.mpf(-1), min(mp.mpf(1), x)), lambda x: mp.mpf(1) if abs(x) < 1 else mp.mpf(0),
                  (-1, 1)),
    "elu": (lambda x: x if x > 0 else mp.exp(x) - 1, lambda x: mp.mpf(1) if x > 0 else mp.exp(x), (0,)),
    "selu": (lambda x: SELU_L * (x if x > 0 else SELU_A * (mp.exp(x) - 1)),
             lambda x: SELU_L * (1 if x > 0 else SELU_A * mp.exp(x)), (0,)),
    "softplus": (lambda x: mp.log1p(mp.exp(x)), lambda x: 1 / (1 + mp.exp(-x)), ()),
    "sigmoid": (lambda x: 1 / (1 + mp.exp(-x)), lambda x: mp.exp(-x) / (1 + mp.exp(-x)) ** 2, ()),
    "swish": (lambda x: x / (1 + mp.exp(-x)),
              lambda x: 1 / (1 + mp.exp(-x)) + x * mp.exp(-x) / (1 + mp.exp(-x)) ** 2, ()),
    "gelu": (lambda x: x * (1 + mp.erf(x / mp.sqrt(2))) / 2,
             lambda x: (1 + mp.erf(x / mp.sqrt(2))) / 2 + x * mp.exp(-x * x / 2) / mp.sqrt(2 * mp.pi), ()),
    "mish": (lambda x: x * mp.tanh(mp.log1p(mp.exp(x))),
             lambda x: mp.tanh(mp.log1p(mp.exp(x)))
             + x * (1 - mp.tanh(mp.log1p(mp.exp(x))) ** 2) / (1 + mp.exp(-x)), ()),
    "sin": (mp.sin, mp.cos, ()),
}

# float versions for the 2-D references
NP = {
    "tanh": (math.tanh, lambda x: 1 - math.tanh(x) ** 2, ()),
    "erf": (math.erf, lambda x: 2 / math.sqrt(math.pi) * math.exp(-x * x), ()),
    "relu": (lambda x: max(x, 0.0), lambda x: 1.0 if x > 0 else 0.0, (0.0,)),
    "hard_tanh": (lambda x: min(1.0, max(-1.0, x)), lambda x: 1.0 if abs(x) < 1 else 0.0, (-1.0, 1.0)),
    "elu": (lambda x: x if x > 0 else math.expm1(x), lambda x: 1.0 if x > 0 else math.exp(x), (0.0,)),
    "softplus": (lambda x: np.logaddexp(0.0, x), lambda x: special.expit(x), ()),
    "gelu": (lambda x: x * (1 + math.erf(x / math.sqrt(2))) / 2,
             lambda x: (1 + math.erf(x / math.sqrt(2))) / 2 + x * math.exp(-x * x / 2) / math.sqrt(2 * math.pi), ()),
    "swish": (lambda x: x * special.expit(x), lambda x: special.expit(x) * (1 + x * (1 - special.expit(x))), ()),
    "sin": (math.sin, math.cos, ()),
}


def _mp_gauss(f, q, kinks):
    q = mp.mpf(q)
    if q == 0:  # the q -> 0 limit: the mean of the one-sided values at a kink
        t = mp.mpf(10) ** -30
        return (f(t) + f(-t)) / 2 if 0 in kinks else f(mp.mpf(0))
    s = mp.sqrt(q)
    pts = sorted({-mp.inf, mp.inf, mp.mpf(0), *(mp.mpf(k) for k in kinks), *(s * t for t in (-6, -3, -1, 1, 3, 6)),
                  *(mp.mpf(t) for t in (-3, -1, 1, 3))})
    return mp.quad(lambda u: f(u) * mp.exp(-u * u / (2 * q)), pts) / mp.sqrt(2 * mp.pi * q)


def V(name, q):
    """E[phi(sqrt(q) z)^2]."""
    phi, _, kinks = MP[name]
    return _mp_gauss(lambda u: phi(u) ** 2, q, kinks)


def D(name, q):
    """E[phi'(sqrt(q) z)^2]."""
    _, dphi, kinks = MP[name]
    return _mp_gauss(lambda u: dphi(u) ** 2, q, kinks)


def slope(name, q):
    """d/dq E[phi(sqrt(q) z)^2] = E[phi(u) phi'(u) u] / q (Stein's lemma).

    At q = 0 (reached only where phi(0) = 0) the limit is the mean of phi'(0+)^2 and phi'(0-)^2.
    """
    if q == 0:
        _, dphi, _ = MP[name]
        t = mp.mpf(10) ** -30
        assert abs(MP[name][0](mp.mpf(0))) == 0
        return (dphi(t) ** 2 + dphi(-t) ** 2) / 2
    q = mp.mpf(q)
    phi, dphi, kinks = MP[name]
    return _mp_gauss(lambda u: phi(u) * dphi(u) * u, q, kinks) / q


def q_star(name, sigma_w2, sigma_b2):
    """Root of sigma_w2 V(q) + sigma_b2 - q by mpmath's solver from a float start."""
    f = lambda t: sigma_w2 * V(name, t) + sigma_b2 - t  # noqa: E731
    lo, hi = mp.mpf(0), mp.mpf(1)
    while f(hi) > 0:
        lo, hi = hi, hi * 4
    return mp.findroot(f, (lo, hi), solver="anderson", tol=mp.mpf(10) ** -25)


def E2(name, q, c, deriv=False, epsrel=1e-12):
    """E[g(u1) g(u2)] for u1, u2 of variance q and correlation c, g = phi or phi'; nested scipy quad."""
    phi, dphi, kinks = NP[name]
    g = dphi if deriv else phi
    s = math.sqrt(q)
    cs = math.sqrt(max(1 - c * c, 0.0))

    def inner(z1):
        m = c * z1
        pts = sorted(((k / s) - m) / cs for k in kinks) if cs > 0 else []
        val = 0.0
        edges = [-12.0] + [p for p in pts if -12 < p < 12] + [12.0]
        for a, b in zip(edges[:-1], edges[1:]):
            val += integrate.quad(lambda z2: g(s * (m + cs * z2)) * math.exp(-z2 * z2 / 2), a, b,
                                  epsabs=0, epsrel=epsrel, limit=200)[0]
        return val / math.sqrt(2 * math.pi)

    edges = sorted({-12.0, 12.0, *(k / s for k in kinks if abs(k / s) < 12)})
    total = 0.0
    for a, b in zip(edges[:-1], edges[1:]):
        total += integrate.quad(lambda z1: g(s * z1) * inner(z1) * math.exp(-z1 * z1 / 2), a, b,
                                epsabs=1e-15, epsrel=epsrel, limit=200)[0]
    return total / math.sqrt(2 * math.pi)


def c_star_residual(name, sigma_w2, sigma_b2, q, c):
    """c_map(c) - c at variance q, computed with :func:`E2`."""
    return (sigma_w2 * E2(name, q, c) + sigma_b2) / q - c


def brentq(f, a, b):
    return optimize.brentq(f, a, b, xtol=1e-15)
