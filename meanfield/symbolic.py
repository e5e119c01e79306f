"""Closed-form Gaussian expectations, as sympy expressions and fast numpy functions.

For a jointly Gaussian pair ``u1 = sqrt(q1) z1``, ``u2 = sqrt(q2) (c z1 + sqrt(1 - c^2) z2)``
the table gives ``E[phi(u1) phi(u2)]`` and ``E[phi'(u1) phi'(u2)]`` where they are known:

* the ReLU family ``phi = a relu(x) + b relu(-x)`` (relu, leaky relu, abs, linear): the arc-cosine
  kernels of Cho & Saul (2009), ``J1(c) = (sqrt(1 - c^2) + (pi - arccos c) c) / (2 pi)`` and
  ``J0(c) = (pi - arccos c) / (2 pi)``;
* erf: Williams (1997), ``(2/pi) asin(2 q12 / sqrt((1 + 2 q1)(1 + 2 q2)))``, and
  ``E[erf'(u1) erf'(u2)] = (4/pi) / sqrt((1 + 2 q1)(1 + 2 q2) - 4 q12^2)``;
* sin, cos: ``exp(-(q1 + q2)/2) sinh(q12)`` and ``... cosh(q12)``; exp: ``exp((q1 + q2)/2 + q12)``;
* polynomials, exactly, from the bivariate moments (Isserlis):
  ``E[u1^i u2^j] = sum_k k! C(i,k) C(j,k) q12^k (i-k-1)!! q1^((i-k)/2) (j-k-1)!! q2^((j-k)/2)``.

One-dimensional expectations follow by setting ``q1 = q2 = q12 = q``; the slope of the q-map,
``d/dq E[phi(sqrt(q) z)^2]``, by differentiating that with sympy.

Every other activation given by an expression is tried against the rules of
:mod:`meanfield._gaussian_rules`: sums of ``x^p exp(a x + b x^2)`` times normal distribution
functions of affine maps (``erf``, ``norm_cdf``: gelu), ``sin``, ``cos``, ``sinh``, ``cosh`` of
affine maps (gabor, Gaussians), and pieces on the half-lines split at 0 (``relu(x)**n``, the
arc-cosine kernels of any order of Cho & Saul 2009; ``sign``, ``Heaviside``, leaky variants).
What they derive is checked against quadrature before it is used (:mod:`meanfield._derived`), and
:func:`derivation` says for each expectation how it was obtained.
"""

from __future__ import annotations

import functools

import numpy as np
import sympy as sp
from sympy.codegen.cfunctions import expm1

from . import _bounded, _derived
from ._derived import ClosedFormWarning
from .activations import Activation, activation, x

__all__ = ["closed_form", "bivariate_expr", "numeric", "QUANTITIES", "derivation", "ClosedFormWarning"]

q, q1, q2 = sp.symbols("q q1 q2", positive=True)
q12, c = sp.symbols("q12 c", real=True)
sigma_w2, sigma_b2 = sp.symbols("sigma_w2 sigma_b2", positive=True)

#: Quantities :func:`closed_form` knows.
QUANTITIES = ("q_map", "q_map_slope", "cov_map", "c_map", "chi_1", "chi_c")


def _J1(cc):
    return (sp.sqrt(1 - cc**2) + (sp.pi - sp.acos(cc)) * cc) / (2 * sp.pi)


def _J0(cc):
    return (sp.pi - sp.acos(cc)) / (2 * sp.pi)


def _relu_coeffs(act: Activation):
    """(a, b) with phi = a relu(x) + b relu(-x), if phi is exactly of that form."""
    if act.expr is None or act.slopes is None:
        return None
    t = sp.Symbol("t", positive=True)
    a, b = sp.nsimplify(act.slopes[0]), -sp.nsimplify(act.slopes[1])
    if not _bounded.is_relu_pair(act, float(a), float(b)):
        return None
    try:
        if sp.simplify(act.expr.subs(x, t) - a * t) == 0 and sp.simplify(act.expr.subs(x, -t) - b * t) == 0:
            return a, b
    except (TypeError, ValueError):
        return None
    return None


def _moment(i: int, j: int) -> sp.Expr:
    total = sp.Integer(0)
    for k in range(min(i, j) + 1):
        if (i - k) % 2 or (j - k) % 2:
            continue
        total += (
            sp.factorial(k) * sp.binomial(i, k) * sp.binomial(j, k) * q12**k
            * sp.factorial2(i - k - 1) * q1 ** ((i - k) // 2)
            * sp.factorial2(j - k - 1) * q2 ** ((j - k) // 2)
        )
    return total


def _poly_expectation(p: sp.Expr) -> sp.Expr:
    coeffs = sp.Poly(p, x).all_coeffs()[::-1]
    total = sp.Integer(0)
    for i, ai in enumerate(coeffs):
        for j, aj in enumerate(coeffs):
            if ai != 0 and aj != 0:
                total += ai * aj * _moment(i, j)
    return sp.expand(total)


@functools.lru_cache(maxsize=128)
def _bivariate_c(act: Activation, order: int):
    """The closed form in the symbols q1, q2 and c (q12 = c sqrt(q1 q2)): the table's, else derived, else None."""
    e = _table(act, order)
    return e if e is not None else _derived.derive(act, "cov" if order == 0 else "dcov").expr


def _table(act: Activation, order: int):
    """The table entry in the symbols q1, q2 and c, or None."""
    expr = act.expr
    if expr is None or not _bounded.closed_form_affordable(act):
        return None
    s12 = c * sp.sqrt(q1) * sp.sqrt(q2)
    if expr.is_polynomial(x):
        return _poly_expectation(sp.diff(expr, x, order)).subs(q12, s12)
    relu = _relu_coeffs(act)
    if relu is not None:
        a, b = relu
        if order == 0:
            return sp.sqrt(q1) * sp.sqrt(q2) * ((a**2 + b**2) * _J1(c) + 2 * a * b * _J1(-c))
        return (a**2 + b**2) * _J0(c) - 2 * a * b * _J0(-c)
    if expr == sp.erf(x):
        if order == 0:
            return 2 / sp.pi * sp.asin(2 * s12 / sp.sqrt((1 + 2 * q1) * (1 + 2 * q2)))
        return 4 / sp.pi / sp.sqrt((1 + 2 * q1) * (1 + 2 * q2) - 4 * s12**2)
    # exp(-(q1 + q2)/2) sinh(q12) and cosh(q12), written with exponents <= 0 (|q12| <= (q1 + q2)/2) so
    # that large variances neither overflow nor give inf * 0, and sinh through expm1 so that small
    # variances keep their relative precision: exp(-h) sinh(s) = sign(s) exp(|s| - h) (1 - exp(-2|s|)) / 2
    h = (q1 + q2) / 2
    a12 = sp.Abs(c) * sp.sqrt(q1) * sp.sqrt(q2)
    sinh_pre = -sp.sign(c) * sp.exp(a12 - h) * expm1(-2 * a12) / 2
    cosh_pre = (sp.exp(s12 - h) + sp.exp(-s12 - h)) / 2
    if expr == sp.sin(x):
        return sinh_pre if order == 0 else cosh_pre
    if expr == sp.cos(x):
        return cosh_pre if order == 0 else sinh_pre
    if expr == sp.exp(x):
        return sp.exp((q1 + q2) / 2 + s12)
    return None


def bivariate_expr(act, order: int = 0) -> sp.Expr | None:
    """``E[phi^(order)(u1) phi^(order)(u2)]`` in the symbols q1, q2, q12, or None if unknown."""
    e = _bivariate_c(activation(act), int(order))
    return None if e is None else e.subs(c, q12 / (sp.sqrt(q1) * sp.sqrt(q2)))


def _one_dim(act: Activation, order: int):
    e = _table(act, order)
    if e is None:
        return _derived.derive(act, "phi2" if order == 0 else "dphi2").expr
    qp = sp.Symbol("qp", positive=True)
    return sp.simplify(e.subs({c: 1, q1: qp, q2: qp})).subs(qp, q)


def closed_form(act, quantity: str) -> sp.Expr | None:
    """The closed form of a mean-field quantity, or None where none is known.

    Parameters
    ----------
    act : Activation or str
    quantity : {"q_map", "q_map_slope", "cov_map", "c_map", "chi_1", "chi_c"}
        ``q_map``: ``sigma_w2 E[phi(sqrt(q) z)^2] + sigma_b2`` (Poole et al. 2016, eq. 3);
        ``q_map_slope``: its derivative in q (Schoenholz et al. 2017, eq. 5);
        ``cov_map``: ``sigma_w2 E[phi(u1) phi(u2)] + sigma_b2`` in q1, q2, q12 (Poole eq. 5);
        ``c_map``: the correlation map at equal variance q, ``cov_map / q_map``;
        ``chi_1``: ``sigma_w2 E[phi'(sqrt(q) z)^2]`` (Poole eq. 7);
        ``chi_c``: ``sigma_w2 E[phi'(u1) phi'(u2)]`` at variance q and correlation c
        (Schoenholz eq. 8).

    Returns
    -------
    sympy.Expr or None
        In the symbols ``q`` (or ``q1, q2, q12``), ``c``, ``sigma_w2``, ``sigma_b2``.
    """
    act = activation(act)
    if quantity not in QUANTITIES:
        raise ValueError(f"unknown quantity {quantity!r}; known: {', '.join(QUANTITIES)}")
    if quantity == "q_map":
        v = _one_dim(act, 0)
        return None if v is None else sigma_w2 * v + sigma_b2
    if quantity == "q_map_slope":
        if _table(act, 0) is None:
            v = _derived.derive(act, "slope").expr
            return None if v is None else sigma_w2 * v
        v = _one_dim(act, 0)
        return None if v is None else sp.simplify(sigma_w2 * sp.diff(v, q))
    if quantity == "chi_1":
        d = _one_dim(act, 1)
        return None if d is None else sigma_w2 * d
    if quantity == "cov_map":
        e = bivariate_expr(act, 0)
        return None if e is None else sigma_w2 * e + sigma_b2
    order = 0 if quantity == "c_map" else 1
    e = _bivariate_c(act, order)
    if e is None:
        return None
    qp = sp.Symbol("qp", positive=True)
    e = sp.simplify(e.subs({q1: qp, q2: qp})).subs(qp, q)
    if quantity == "chi_c":
        return sigma_w2 * e
    return (sigma_w2 * e + sigma_b2) / (sigma_w2 * _one_dim(act, 0) + sigma_b2)


@functools.lru_cache(maxsize=256)
def numeric(act: Activation, kind: str):
    """A numpy function for a closed-form expectation, or None.

    ``kind`` is one of ``"phi2"``, ``"dphi2"``, ``"slope"`` (functions of q) or ``"cov"``,
    ``"dcov"`` (functions of q1, q2, q12).  Correlations are clipped to [-1, 1] against
    rounding before they enter arccos or arcsin.
    """
    if _table(act, 0) is None:  # derived (and verified) closed forms, compiled once per expression
        fn = _derived.derive(act, kind).fn if kind in _derived.KINDS else None
        if fn is None or kind in ("phi2", "dphi2", "slope", "dphi"):
            return fn
        return _bivariate_numeric(fn)
    if kind == "dphi":
        return None
    if kind in ("phi2", "dphi2", "slope"):
        v = _one_dim(act, 0 if kind != "dphi2" else 1)
        if v is None:
            return None
        if kind == "slope":
            v = sp.diff(v, q)
            if sp.count_ops(v) < 200:  # e.g. erf: the raw derivative cancels to 1e-8 at q = 1e8
                v = sp.simplify(v)
        f = sp.lambdify(q, v, modules=["scipy", "numpy"])

        def fn1(qq):
            with np.errstate(over="ignore", under="ignore"):  # products of variances near 1e300: their limits
                return np.broadcast_to(np.asarray(f(np.asarray(qq, dtype=float)), dtype=float), np.shape(qq)).copy()

        return fn1
    e = _bivariate_c(act, 0 if kind == "cov" else 1)
    if e is None:
        return None
    if act.expr.is_polynomial(x):  # many powers of sqrt(q1), sqrt(q2): compiled for large kernels
        return _bivariate_numeric(_derived.compile_bivariate(e))
    return _bivariate_numeric(sp.lambdify((q1, q2, c), e, modules=["scipy", "numpy"]))


def _bivariate_numeric(f):
    """``f(q1, q2, c)`` as a function of ``(q1, q2, q12)``."""

    def fn(a, b, ab):
        a, b, ab = np.broadcast_arrays(*(np.asarray(t, dtype=float) for t in (a, b, ab)))
        s = np.sqrt(a) * np.sqrt(b)  # the product of two variances above 1e154 would overflow
        with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
            cc = np.clip(np.where(s > 0, ab / np.where(s > 0, s, 1.0), 0.0), -1.0, 1.0)
            out = f(a, b, cc)
        return np.broadcast_to(np.asarray(out, dtype=float), a.shape).copy()

    return fn


def has_closed_form(act: Activation) -> bool:
    """Whether ``E[phi(u1) phi(u2)]`` has a closed form (in the table, or derived and verified)."""
    return _bivariate_c(act, 0) is not None


def derivation(act) -> dict:
    """How each expectation of ``act`` is obtained: ``{kind: note}``.

    ``"table"`` for the listed families; otherwise the derivation's note: derived and verified
    against quadrature (with the deviation), outside the class of the rules, rejected, or over
    its time bound (:data:`meanfield._derived.SECONDS`).
    """
    act = activation(act)
    if _table(act, 0) is not None:
        return {k: "table" for k in _derived.KINDS}
    return {k: _derived.derive(act, k).note for k in _derived.KINDS}

