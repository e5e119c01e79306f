"""The one primitive: Gaussian expectations of an activation, exact where known.

Every map, fixed point, depth scale and kernel in the package is built from
:func:`expectation`.  ``method="auto"`` uses the closed form of :mod:`meanfield.symbolic` when
the activation has one and adaptive quadrature (:mod:`meanfield.quadrature`) otherwise;
``"exact"`` insists on the closed form, ``"quadrature"`` never uses it (for cross-checks).
"""

from __future__ import annotations

import numpy as np

from . import _validate, quadrature, symbolic
from .activations import Activation, activation

__all__ = ["expectation", "KINDS", "METHODS"]

#: kind -> (number of variables, description)
KINDS = {
    "phi2": (1, "E[phi(u)^2], u ~ N(0, q)"),
    "dphi2": (1, "E[phi'(u)^2]"),
    "dphi": (1, "E[phi'(u)] = E[u phi(u)] / q (Stein's lemma)"),
    "slope": (1, "d/dq E[phi(u)^2] = E[phi(u) phi'(u) u] / q = E[phi'^2 + phi phi'']"),
    "cov": (2, "E[phi(u1) phi(u2)], (u1, u2) ~ N(0, [[q1, q12], [q12, q2]])"),
    "dcov": (2, "E[phi'(u1) phi'(u2)]"),
    "half_sq_diff": (2, "E[(phi(u1) - phi(u2))^2] / 2"),
}
METHODS = _validate.METHODS


def expectation(act, kind: str, q1, q2=None, q12=None, method: str = "auto", rtol: float | None = None, c=None):
    """A Gaussian expectation of ``act`` (see :data:`KINDS`), elementwise over broadcast inputs.

    Parameters
    ----------
    act : Activation or str
    kind : str
        One of :data:`KINDS`.  One-variable kinds take ``q1`` only (the variance ``q``).
    q1, q2, q12 : array_like
        Variances (>= 0) and covariance (``|q12| <= sqrt(q1 q2)``) of the pair.
    c : array_like, optional
        The correlation, instead of ``q12`` (more precise as c approaches 1).
    method : {"auto", "exact", "quadrature"}
    rtol : float, optional
        Quadrature tolerance relative to ``E[|integrand|]`` (default
        :data:`meanfield.quadrature.RTOL`).

    Returns
    -------
    numpy.ndarray
    """
    act = activation(act)
    if kind not in KINDS:
        raise ValueError(f"unknown expectation kind {kind!r}; known: {', '.join(KINDS)}")
    _validate.method(method)
    if rtol is not None and not (isinstance(rtol, (int, float)) and 0 < rtol < 1):
        raise ValueError(f"rtol must be a number in (0, 1), got {rtol!r}")
    nvar = KINDS[kind][0]
    q1 = _validate.nonnegative("q1", q1, allow_empty=True)
    if nvar == 2:
        if q2 is None or (q12 is None) == (c is None):
            raise ValueError(f"{kind} needs q1, q2 and one of q12 or c")
        q2 = _validate.nonnegative("q2", q2, allow_empty=True)
        if c is not None:
            c = _validate.correlation("c", c, allow_empty=True)
        else:
            q12 = np.asarray(q12, dtype=float)
            if not np.all(np.isfinite(q12)) or np.any(np.abs(q12) > (np.sqrt(q1) * np.sqrt(q2)) * (1 + 1e-12)):
                raise ValueError("q12 must be finite with |q12| <= sqrt(q1 q2) (a covariance)")
            q12 = np.clip(q12, -(np.sqrt(q1) * np.sqrt(q2)), (np.sqrt(q1) * np.sqrt(q2)))
    if kind in ("dphi2", "dphi", "slope", "dcov"):
        act.derivative(1)
    if nvar == 2 and c is not None:
        if q12 is not None:
            raise ValueError("give q12 or c, not both")
        q1, q2, c = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in (q1, q2, c)))
        q12 = c * (np.sqrt(q1) * np.sqrt(q2))
    if method != "quadrature":
        exact = _exact(act, kind, q1, q2, q12)
        if exact is not None:
            return exact
        if method == "exact":
            raise ValueError(f"no closed form is known for {kind} of {act.name!r}; use method='auto' or 'quadrature'")
    tol = quadrature.RTOL if rtol is None else rtol
    if nvar == 1:
        return _quad_1d(act, kind, np.asarray(q1, dtype=float), tol)
    return _quad_2d(act, kind, q1, q2, q12, c, tol)


def _exact(act: Activation, kind, q1, q2, q12):
    if kind == "dphi":  # no closed-form table entry: quadrature (to 1e-12)
        return None
    if kind == "half_sq_diff":
        v = symbolic.numeric(act, "phi2")
        cv = symbolic.numeric(act, "cov")
        if v is None or cv is None:
            return None
        return 0.5 * (v(q1) + v(q2)) - cv(q1, q2, q12)
    fn = symbolic.numeric(act, kind)
    if fn is None:
        return None
    return fn(q1) if KINDS[kind][0] == 1 else fn(q1, q2, q12)


def _quad_1d(act: Activation, kind, q, rtol):
    phi, kinks, rate = act.phi, act.kinks, act.exp_rate
    if kind == "phi2":
        return quadrature.expect_1d(lambda u: phi(u) ** 2, 0.0, q, kinks, 2 * rate, rtol, jumps=not act.continuous)
    dphi = act.dphi
    if kind == "dphi2":
        return quadrature.expect_1d(lambda u: dphi(u) ** 2, 0.0, q, kinks, 2 * rate, rtol)
    if kind == "dphi":
        return quadrature.expect_1d(dphi, 0.0, q, kinks, rate, rtol)
    # slope: E[phi phi' u] / q for q > 0; the pointwise limit phi'(0)^2 + phi(0) phi''(0) at q = 0
    q = np.asarray(q, dtype=float)
    out = np.empty(q.shape)
    pos = q > 0
    if pos.any():
        qp = q[pos]
        out[pos] = quadrature.expect_1d(lambda u: phi(u) * dphi(u) * u, 0.0, qp, kinks, 2 * rate + 0.1, rtol) / qp
    if (~pos).any():
        d2 = act.derivative(2)
        zero = np.zeros(1)
        if 0.0 in kinks:
            h = np.array([-1e-150, 1e-150])
            val = np.mean(dphi(h) ** 2 + phi(h) * d2(h))
        else:
            val = (dphi(zero) ** 2 + phi(zero) * d2(zero))[0]
        out[~pos] = val
    return out


def _quad_2d(act: Activation, kind, q1, q2, q12, c, rtol):
    if kind == "cov":
        phi = act.phi

        def h(a, b):
            return phi(a) * phi(b)
    elif kind == "dcov":
        dphi = act.dphi

        def h(a, b):
            return dphi(a) * dphi(b)
    else:
        phi = act.phi

        def h(a, b):
            d = phi(a) - phi(b)
            return 0.5 * d * d
    if c is not None:
        return quadrature.expect_2d(h, q1, q2, None, act.kinks, act.kinks, 2 * act.exp_rate, rtol, corr=c)
    return quadrature.expect_2d(h, q1, q2, q12, act.kinks, act.kinks, 2 * act.exp_rate, rtol)
