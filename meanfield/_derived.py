"""Closed forms derived per expression, verified against quadrature, compiled to numpy.

:func:`derive` takes an activation given by an expression, derives one Gaussian expectation by the
rules of :mod:`meanfield._gaussian_rules`, tidies it, compiles it with ``sympy.lambdify`` (common
subexpressions eliminated) and checks it against the adaptive quadrature of
:mod:`meanfield.quadrature` at a few fixed points.  A derivation that disagrees is never used: it is
dropped with a :class:`ClosedFormWarning`, as is one that runs past its time bound; the caller then
integrates numerically.  Results are cached per expression and kind.

Kinds (``u ~ N(0, q)``; ``(u1, u2)`` of variances ``q1``, ``q2`` and correlation ``c``):
``phi2`` ``E[phi(u)^2]``, ``dphi2`` ``E[phi'(u)^2]``, ``dphi`` ``E[phi'(u)]``,
``slope`` ``d/dq E[phi(u)^2] = E[phi'(u)^2 + phi(u) phi''(u)]``, ``cov`` ``E[phi(u1) phi(u2)]``,
``dcov`` ``E[phi'(u1) phi'(u2)]``.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import warnings
from dataclasses import dataclass

import numba
import numpy as np
import sympy as sp
from scipy import special

from . import _gaussian_rules as rules
from . import quadrature
from ._threads import run, workers
from .activations import Activation

__all__ = ["ClosedFormWarning", "Derived", "derive", "bvn", "compile_bivariate", "SECONDS", "KINDS"]

q, q1, q2 = sp.symbols("q q1 q2", positive=True)
c = sp.Symbol("c", real=True)

KINDS = ("phi2", "dphi2", "dphi", "slope", "cov", "dcov")
#: Time bound of one derivation (seconds); past it, quadrature is used and a warning says so.
SECONDS = 20.0
#: A derived form must agree with quadrature to this, relative to the scale of the integrand.
VERIFY_RTOL = 1e-9
_POINTS_1D = np.array([0.23, 1.1, 3.7])
_POINTS_2D = (np.array([0.37, 1.3, 2.2]), np.array([1.6, 0.6, 2.9]), np.array([0.45, -0.7, 0.93]))


class ClosedFormWarning(UserWarning):
    """A derived closed form was not used (it disagreed with quadrature, or took too long)."""

    __module__ = "meanfield.symbolic"  # its public home


@dataclass(frozen=True)
class Derived:
    """One derived expectation: the formula, its numpy function, and how it was obtained."""

    expr: sp.Expr | None
    fn: object | None
    note: str


_CACHE: dict = {}
_LOCK = threading.Lock()


def derive(act: Activation, kind: str) -> Derived:
    """The verified closed form of ``kind`` for ``act`` (``expr`` None where there is none)."""
    if act.expr is None:
        return Derived(None, None, "a callable: no expression to derive from")
    key = (act.expr, kind)
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
    result = _derive(act, kind)
    with _LOCK:
        _CACHE[key] = result
    return result


def _derive(act: Activation, kind: str) -> Derived:
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}")
    if kind in ("dphi2", "dphi", "slope", "dcov") and not act.continuous:
        return Derived(None, None, "discontinuous: phi' has a Dirac mass")
    try:
        if kind == "slope":
            base = derive(act, "phi2")
            if base.expr is None:
                return Derived(None, None, base.note)
            expr = _tidy(sp.diff(base.expr, q))
        else:
            ts = rules.terms(act.expr)
            if kind in ("dphi2", "dphi", "dcov"):
                ts = rules.derivative_terms(ts)
            if kind == "cov" or kind == "dcov":
                s12 = c * sp.sqrt(q1) * sp.sqrt(q2)
                raw = rules.expect([ts, ts], sp.Matrix([[q1, s12], [s12, q2]]), SECONDS)
            elif kind == "dphi":
                raw = rules.expect([ts], sp.Matrix([[q]]), SECONDS)
            else:
                raw = rules.expect([rules.product(ts, ts)], sp.Matrix([[q]]), SECONDS)
            expr = _tidy(raw)
    except rules.Unsupported as err:
        return Derived(None, None, f"outside the class of the rules ({err})")
    except rules.Budget as err:
        _warn(f"the closed form of {kind} for {act.name!r} was not derived ({err}; bounds: {SECONDS:g} s, "
              f"{rules.MAX_STEPS} steps, {rules.MAX_TERMS} terms): "
              "quadrature is used")
        return Derived(None, None, f"not derived: {err}")
    if expr.has(sp.I, sp.nan, sp.zoo, sp.oo):
        return Derived(None, None, "the derivation left a complex or infinite expression")
    fn = _compile(expr, kind)
    dev = _check(act, kind, fn)
    if not dev <= VERIFY_RTOL:
        _warn(f"the derived closed form of {kind} for {act.name!r} disagrees with quadrature (relative "
              f"deviation {dev:.1e}): it is not used, quadrature is")
        return Derived(None, None, f"rejected: deviates from quadrature by {dev:.1e}")
    return Derived(expr, fn, f"derived; agrees with quadrature to {dev:.1e} at {_POINTS_1D.size} points")


def _warn(message: str) -> None:
    """A :class:`ClosedFormWarning` attributed to the first caller outside the package."""
    frame, level = sys._getframe(1), 2
    while frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == _PACKAGE_DIR:
        frame, level = frame.f_back, level + 1
    warnings.warn(message, ClosedFormWarning, stacklevel=level)


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _tidy(e: sp.Expr) -> sp.Expr:
    """Exponents collected and, for small expressions, ``sympy.simplify``."""
    e = sp.powsimp(e, combine="exp")
    e = e.replace(lambda n: isinstance(n, sp.exp) and sp.count_ops(n.args[0]) < 40,
                  lambda n: sp.exp(sp.cancel(n.args[0])))
    if sp.count_ops(e) < 50:  # sympy.simplify is slow (and not bounded) on larger ones
        e = sp.simplify(e)
    return e


def _compile(expr: sp.Expr, kind: str):
    """A numpy function of ``q`` or ``(q1, q2, c)``; large bivariate calls go to a compiled loop."""
    args = (q,) if kind in ("phi2", "dphi2", "dphi", "slope") else (q1, q2, c)
    mods = [{"bvn_cdf": bvn, "norm_cdf": special.ndtr, "erf": special.erf, "erfc": special.erfc}, "scipy", "numpy"]
    raw = sp.lambdify(args, expr, modules=mods, cse=True)
    loop = [] if len(args) == 3 and not expr.has(rules.bvn_cdf) else None

    def fn(*xs):
        xs = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in xs))
        if loop is not None and xs[0].size >= (COMPILE_SIZE if not loop else 2048):
            if not loop:
                loop.append(_compiled_loop(expr, args))
            flat = [np.ascontiguousarray(v).ravel() for v in xs]
            out = np.empty(flat[0].size)
            step = -(-out.size // workers())
            run(lambda i: loop[0](flat[0][i:i + step], flat[1][i:i + step], flat[2][i:i + step],
                                  out[i:i + step]), range(0, out.size, step))
            return out.reshape(xs[0].shape)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            out = raw(*xs)
        return np.broadcast_to(np.asarray(out, dtype=float), xs[0].shape).copy()

    return fn


def compile_bivariate(expr: sp.Expr):
    """``expr`` in ``(q1, q2, c)`` as a numpy function; large calls go to a compiled loop."""
    return _compile(expr, "cov")


#: Bivariate calls with at least this many entries use a compiled loop (compiled once per expression
#: and process, about 1-3 s; a lambdified function cannot be cached on disk); once it is compiled,
#: calls from 2048 entries on use it too.
COMPILE_SIZE = 1 << 16


@numba.njit(nogil=True, cache=False)
def _nb_norm_cdf(t):  # pragma: no cover - compiled
    return 0.5 * math.erfc(-t / math.sqrt(2.0))


def _compiled_loop(expr: sp.Expr, args):
    """``out[i] = expr(a[i], b[i], c[i])`` compiled by numba (nogil: blocks run on the thread pool)."""
    s1, s2 = sp.symbols("s1 s2", positive=True)  # sqrt(q1), sqrt(q2): half-integer powers become products
    scalar = numba.njit(nogil=True, error_model="numpy")(
        sp.lambdify((s1, s2, c), expr.subs({q1: s1**2, q2: s2**2}), modules=[{"norm_cdf": _nb_norm_cdf}, "math"],
                    cse=True))

    @numba.njit(nogil=True, error_model="numpy")
    def loop(a, b, cc, out):  # pragma: no cover - compiled
        for i in range(a.size):
            out[i] = scalar(math.sqrt(a[i]), math.sqrt(b[i]), cc[i])

    return loop


def _check(act: Activation, kind: str, fn) -> float:
    """Largest deviation of ``fn`` from quadrature at the check points, relative to the scale."""
    phi, kinks, rate, tol = act.phi, act.kinks, act.exp_rate, 1e-12
    if kind in ("cov", "dcov"):
        f = phi if kind == "cov" else act.dphi
        a, b, cc = _POINTS_2D
        quad = quadrature.expect_2d(lambda u, v: f(u) * f(v), a, b, None, kinks, kinks, 2 * rate, tol, corr=cc)
        v1 = quadrature.expect_1d(lambda u: f(u) ** 2, 0.0, a, kinks, 2 * rate, tol)
        v2 = quadrature.expect_1d(lambda u: f(u) ** 2, 0.0, b, kinks, 2 * rate, tol)
        got, scale = fn(a, b, cc), np.sqrt(v1 * v2)
    else:
        qs = _POINTS_1D
        if kind == "phi2":
            g = lambda u: phi(u) ** 2  # noqa: E731
        elif kind == "dphi2":
            g = lambda u: act.dphi(u) ** 2  # noqa: E731
        elif kind == "dphi":
            g = act.dphi
        else:
            g = lambda u: phi(u) * act.dphi(u) * u  # noqa: E731
        jumps = not act.continuous
        er = 2 * rate + (0.1 if kind == "slope" else 0.0)
        quad = quadrature.expect_1d(g, 0.0, qs, kinks, er, tol, jumps=jumps)
        scale = quadrature.expect_1d(lambda u: np.abs(g(u)), 0.0, qs, kinks, er, tol, jumps=jumps)
        if kind == "slope":
            quad, scale = quad / qs, scale / qs
        got = fn(qs)
    with np.errstate(divide="ignore", invalid="ignore"):
        dev = np.abs(got - quad) / np.maximum(scale, 1e-300)
    return float(np.max(dev)) if np.all(np.isfinite(got)) else float("inf")


def bvn(h, k, rho):
    """``Phi2(h, k; rho) = P(z1 < h, z2 < k)`` for standard normals of correlation rho (Owen 1956).

    ``Phi2 = (Phi(h) + Phi(k))/2 - T(h, a_h) - T(k, a_k) - beta`` with Owen's T,
    ``a_h = (k - rho h) / (h sqrt(1 - rho^2))``, ``a_k`` likewise and ``beta = 1/2`` when
    ``h k < 0`` (or ``h k = 0`` with ``h + k < 0``), else 0; ``1/4 + asin(rho)/(2 pi)`` at
    ``h = k = 0``, and the limits at ``rho = +-1``.
    """
    h, k, r = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (h, k, rho)))
    r = np.clip(r, -1.0, 1.0)
    s = np.sqrt(np.maximum(1.0 - r * r, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        ah = np.where(h != 0, (k - r * h) / (h * s), np.copysign(np.inf, k - r * h))
        ak = np.where(k != 0, (h - r * k) / (k * s), np.copysign(np.inf, h - r * k))
        beta = np.where((h * k < 0) | ((h * k == 0) & (h + k < 0)), 0.5, 0.0)
        out = 0.5 * (special.ndtr(h) + special.ndtr(k)) - special.owens_t(h, ah) - special.owens_t(k, ak) - beta
    both0 = (h == 0) & (k == 0)
    out = np.where(both0, 0.25 + np.arcsin(r) / (2 * np.pi), out)
    out = np.where(r >= 1.0, special.ndtr(np.minimum(h, k)), out)
    out = np.where(r <= -1.0, np.maximum(special.ndtr(h) - special.ndtr(-k), 0.0), out)
    return out
