"""Bounds on the symbolic work done for an expression a user typed, and the numeric fallbacks.

The cost of sympy's steps grows with the size of the expression tree, often much faster than
linearly (the second derivative of a product of n factors has about 2 n^3 nodes and takes seconds
to build for n = 15, minutes for n = 30).  Every costly step is therefore taken only on a tree
below a fixed node count, and within a time budget for the whole activation; past either, the
derivative is taken numerically (fourth-order central differences, relative accuracy about 1e-12
for phi' and 1e-10 for phi'') with a :class:`DerivativeWarning`, and closed-form matching is
skipped (the quadrature path is used).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable

import numpy as np
import sympy as sp

__all__ = ["DerivativeWarning", "Budget", "nodes", "small", "numeric_derivative", "closed_form_affordable",
           "is_relu_pair", "LayerClock", "MAX_NODES_DERIVE", "MAX_NODES_DERIVE2", "MAX_NODES_REWRITE"]


class DerivativeWarning(UserWarning):
    """A derivative of an activation was taken numerically: sympy's would have been too costly."""

    __module__ = "meanfield.activations"  # its public home


#: Largest phi (in tree nodes) that is differentiated symbolically (a product of 37 factors).
MAX_NODES_DERIVE = 150
#: Largest phi' (in tree nodes) that is differentiated symbolically.
MAX_NODES_DERIVE2 = 600
#: Largest expression rewritten for precision (expm1, log1p) before it is compiled.
MAX_NODES_REWRITE = 400
#: Largest expression matched against the closed-form table.
MAX_NODES_CLOSED_FORM = 60
#: Largest number of terms of the Isserlis sum of a polynomial's bivariate moments done symbolically.
MAX_POLY_TERMS = 250
#: Seconds of symbolic work on one activation after which the remaining derivatives are numeric.
SECONDS = 5.0


class Budget:
    """Wall-clock budget of the symbolic work on one expression."""

    def __init__(self, seconds: float = SECONDS):
        self.end = time.monotonic() + seconds

    def left(self) -> bool:
        return time.monotonic() < self.end


def nodes(expr, limit: int = 10**6) -> int:
    """Number of nodes of ``expr``'s tree, counted up to ``limit + 1``."""
    n = 0
    for _ in sp.preorder_traversal(expr):
        n += 1
        if n > limit:
            break
    return n


def small(expr, limit: int) -> bool:
    """Whether ``expr`` has at most ``limit`` nodes."""
    return nodes(expr, limit) <= limit


def numeric_derivative(f: Callable, kinks=(), order: int = 1) -> Callable:
    """Phi' (``order`` 1) or phi'' (2) of the vectorised ``f`` by fourth-order central differences.

    Steps ``h = eps^(1/5)`` for phi' and ``eps^(1/6)`` for phi'' (truncation and rounding balanced
    on the activation's scale 1; longer where x is so large that x + h would round), shortened near a
    kink so that no stencil crosses it.
    """
    base = np.finfo(float).eps ** (0.2 if order == 1 else 1.0 / 6.0)
    ks = np.asarray(sorted(kinks), dtype=float)

    def d(xs):
        xs = np.asarray(xs, dtype=float)
        # features of an activation sit on its own scale (1), not on the scale of x
        h = np.maximum(base, 1e4 * np.finfo(float).eps * np.abs(xs))
        if ks.size:
            dist = np.min(np.abs(xs[..., None] - ks), axis=-1)
            h = np.minimum(h, np.maximum(0.4 * dist, 1e-9 * np.maximum(1.0, np.abs(xs))))
        with np.errstate(all="ignore"):
            h = (xs + h) - xs  # a step that is exact in floating point
            f1, fm1 = f(xs + h), f(xs - h)
            f2, fm2 = f(xs + 2 * h), f(xs - 2 * h)
            if order == 1:
                out = (8.0 * (f1 - fm1) - (f2 - fm2)) / (12.0 * h)
            else:
                out = (16.0 * (f1 + fm1) - (f2 + fm2) - 30.0 * f(xs)) / (12.0 * h * h)
        return np.broadcast_to(np.asarray(out, dtype=float), xs.shape)

    return d


def warn_numeric(name: str, what: str, why: str) -> None:
    """Say that ``what`` (phi', phi'') of ``name`` is taken numerically, and why."""
    accuracy = "1e-12" if what == "phi'" else "1e-10 for phi''"
    warnings.warn(f"activation {name[:60]!r}: {what} is taken by numerical differentiation (relative accuracy "
                  f"about {accuracy}), as {why}",
                  DerivativeWarning, stacklevel=5)


def closed_form_affordable(act) -> bool:
    """Whether matching ``act`` against the closed-form table, and building its entry, is cheap."""
    expr = act.expr
    if expr is None or not small(expr, MAX_NODES_CLOSED_FORM):
        return False
    if expr.is_polynomial(act_symbol(expr)):
        try:
            degrees = [m[0] for m in sp.Poly(expr, act_symbol(expr)).monoms()]
        except sp.PolynomialError:
            return False
        terms = sum(min(i, j) // 2 + 1 for i in degrees for j in degrees)
        return terms <= MAX_POLY_TERMS
    return True


def act_symbol(expr):
    """The symbol of an activation expression (x, or any single free symbol)."""
    free = expr.free_symbols
    return next(iter(free)) if free else sp.Symbol("x", real=True)


def is_relu_pair(act, a: float, b: float) -> bool:
    """Whether phi(t) = a t and phi(-t) = b t at a few t > 0, numerically: a cheap test before sympy's."""
    t = np.array([0.37, 1.3, 2.9, 7.1])
    with np.errstate(all="ignore"):
        right, left = act.phi(t), act.phi(-t)
    return bool(np.allclose(right, a * t, rtol=1e-9, atol=1e-12) and np.allclose(left, b * t, rtol=1e-9, atol=1e-12))


#: Longest a layer-by-layer recursion may be projected to run before it is refused with its cost.
MAX_RECURSION_SECONDS = 600.0


#: Seconds a recursion runs (and may settle in) before its projected cost is judged.
REFUSE_AFTER = 10.0


class LayerClock:
    """Refuses a layer recursion whose projected run time exceeds :data:`MAX_RECURSION_SECONDS`.

    ``tick(done)`` after each layer: after :data:`REFUSE_AFTER` seconds (a recursion that settles
    sooner is never refused), the time per layer since the first second (compilation and other
    warm-up left out) times the layers left is the projection; past the bound a ValueError gives
    it, with what to do.
    """

    def __init__(self, what: str, depth: int, seconds: float | None = None, horizon: int | None = None):
        self.what, self.depth = what, depth
        self.seconds = MAX_RECURSION_SECONDS if seconds is None else seconds
        self.horizon = depth if horizon is None else min(depth, horizon)  # the last layer it could run to
        self.start = time.monotonic()
        self.base = None  # (time, layers done) at the first tick after one second

    def tick(self, done: int) -> None:
        now = time.monotonic()
        if self.base is None:
            if now - self.start >= min(1.0, REFUSE_AFTER):
                self.base = (now, done)
            return
        if now - self.start < REFUSE_AFTER or done <= self.base[1]:
            return
        per = (now - self.base[0]) / (done - self.base[1])
        left = (self.horizon - done) * per
        if left > self.seconds:
            raise ValueError(
                f"{self.what} has not settled after {done} of {self.depth} layers (no fixed point reached to the "
                f"last bit) and the next {self.horizon - done} would take about {_duration(left)} at "
                f"{per * 1e3:.2g} ms per layer: use fewer layers (depth)")


def _duration(seconds: float) -> str:
    for unit, size in (("days", 86400.0), ("hours", 3600.0), ("minutes", 60.0)):
        if seconds >= 2 * size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} s"
