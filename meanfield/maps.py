"""Layer-to-layer maps of the mean-field theory and their slopes.

For ``h^l = W^l phi(h^{l-1}) + b^l`` with ``W_ij ~ N(0, sigma_w2/N)``, ``b_i ~ N(0, sigma_b2)``
and dropout keep probability ``rho`` (inverted masks, applied to phi(h^{l-1})):

* variance map  ``q^l = sigma_w2/rho E[phi(sqrt(q^{l-1}) z)^2] + sigma_b2`` (Poole et al. 2016, eq. 3)
* covariance map ``q12^l = sigma_w2 E[phi(u1) phi(u2)] + sigma_b2`` (Poole et al. 2016, eq. 5)
* correlation map ``c^l = q12^l / sqrt(q11^l q22^l)``
* ``chi_1 = sigma_w2 E[phi'(sqrt(q*) z)^2]`` (Poole et al. 2016, eq. 7; Schoenholz et al. 2017, eq. 6)
* ``chi_c = sigma_w2 E[phi'(u1) phi'(u2)]`` at (q*, c*) (Schoenholz et al. 2017, eq. 8)

Every function takes an :class:`~meanfield.activations.Activation` or a name, broadcasts over
array arguments, and takes variances, never standard deviations.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from . import _validate
from .activations import ActivationLike, activation
from .fixed_points import solve_c_star, solve_q_star
from .layers import Dense, core_expectations

__all__ = ["q_map", "q_map_slope", "cov_map", "c_map", "chi_1", "chi_c"]


def _common(act, sigma_w2, sigma_b2, rho):
    act = activation(act)
    rho = _validate.keep_probability(rho)
    sw = _validate.nonnegative("sigma_w2", sigma_w2)
    sb = _validate.nonnegative("sigma_b2", sigma_b2)
    return act, sw, sb, rho


def _layer(act, sw, sb, rho, method):
    """The layer rule and the core provider for flat arrays of points."""
    return Dense(act, sw, sb, rho), core_expectations(act, method)


def q_map(q: ArrayLike, act: ActivationLike, sigma_w2: ArrayLike, sigma_b2: ArrayLike, rho: float = 1.0,
          method: str = "auto") -> float | np.ndarray:
    """Variance map ``q -> sigma_w2/rho E[phi(sqrt(q) z)^2] + sigma_b2`` (Poole et al. 2016, eq. 3).

    Parameters
    ----------
    q : array_like
        Pre-activation variance of the previous layer (>= 0).
    act : Activation or str
    sigma_w2, sigma_b2 : array_like
        Weight and bias variances.
    rho : float
        Dropout keep probability (Schoenholz et al. 2017, Sec. 5).
    method : {"auto", "exact", "quadrature"}

    Returns
    -------
    float or ndarray
    """
    act, sw, sb, rho = _common(act, sigma_w2, sigma_b2, rho)
    q = _validate.nonnegative("q", q)
    shape, (q, sw, sb) = _validate.broadcast(q, sw, sb)
    layer, E = _layer(act, sw, sb, rho, method)
    return _validate.finish(layer.q_map(q, E), shape)


def q_map_slope(q: ArrayLike, act: ActivationLike, sigma_w2: ArrayLike, sigma_b2: ArrayLike, rho: float = 1.0,
                method: str = "auto") -> float | np.ndarray:
    """Slope of the variance map, ``sigma_w2/rho E[phi'(u)^2 + phi(u) phi''(u)]`` at ``u ~ N(0, q)``.

    At q* this is ``exp(-1/xi_q)`` (Schoenholz et al. 2017, eq. 5).  It is computed as
    ``sigma_w2/rho E[phi(u) phi'(u) u] / q`` (Gaussian integration by parts), which needs no
    second derivative and is exact for activations with kinks (hard tanh, relu, elu).
    """
    act, sw, sb, rho = _common(act, sigma_w2, sigma_b2, rho)
    q = _validate.nonnegative("q", q)
    shape, (q, sw, sb) = _validate.broadcast(q, sw, sb)
    layer, E = _layer(act, sw, sb, rho, method)
    return _validate.finish(layer.q_slope(q, E), shape)


def cov_map(q1: ArrayLike, q2: ArrayLike, q12: ArrayLike, act: ActivationLike, sigma_w2: ArrayLike, sigma_b2: ArrayLike,
            rho: float = 1.0, method: str = "auto") -> tuple:
    """One layer of the covariance map for two inputs of any variances (Poole et al. 2016, eqs. 3, 5).

    Returns
    -------
    (q1_next, q2_next, q12_next)
        ``q_a' = sigma_w2/rho E[phi(u_a)^2] + sigma_b2`` and
        ``q12' = sigma_w2 E[phi(u1) phi(u2)] + sigma_b2`` with ``(u1, u2) ~ N(0, [[q1, q12], [q12, q2]])``.
    """
    act, sw, sb, rho = _common(act, sigma_w2, sigma_b2, rho)
    q1 = _validate.nonnegative("q1", q1)
    q2 = _validate.nonnegative("q2", q2)
    q12 = np.asarray(q12, dtype=float)
    shape, (q1, q2, q12, sw, sb) = _validate.broadcast(q1, q2, q12, sw, sb)
    if not np.all(np.isfinite(q12)) or np.any(np.abs(q12) > (np.sqrt(q1) * np.sqrt(q2)) * (1 + 1e-12)):
        raise ValueError("q12 must satisfy |q12| <= sqrt(q1 q2) (a covariance)")
    q12 = np.clip(q12, -(np.sqrt(q1) * np.sqrt(q2)), (np.sqrt(q1) * np.sqrt(q2)))
    layer, E = _layer(act, sw, sb, rho, method)
    with np.errstate(divide="ignore", invalid="ignore"):
        c = np.where(q1 * q2 > 0, q12 / np.sqrt(np.where(q1 * q2 > 0, q1 * q2, 1.0)), 0.0)
    n1, n2 = layer.q_map(q1, E), layer.q_map(q2, E)
    n12 = layer.covariance(E("cov", q1, q2, c=np.clip(c, -1.0, 1.0)))
    return tuple(_validate.finish(a, shape) for a in (n1, n2, n12))


def _q_default(act, q, sw, sb, rho, method):
    if q is None:
        return solve_q_star(Dense(act, sw, sb, rho), np.ones_like(sw), method=method)[0]
    return q


def c_map(c: ArrayLike, act: ActivationLike, sigma_w2: ArrayLike, sigma_b2: ArrayLike, q: ArrayLike | None = None,
          rho: float = 1.0, method: str = "auto") -> float | np.ndarray:
    """Correlation map ``c -> (sigma_w2 E[phi(u1) phi(u2)] + sigma_b2) / q'`` (Poole et al. 2016, eq. 5).

    ``u1, u2`` have variance ``q`` and correlation ``c``; ``q' = q_map(q)`` is the next layer's
    variance (equal to q at the fixed point).  ``q`` defaults to q_star.  Where q is infinite,
    or zero with ``sigma_b2 = 0`` and ``phi(0) = 0``, it is the map of the zero-bias network as
    its variance diverges or collapses, ``c -> rho E[psi(z1) psi(z2)] / E[psi(z)^2]`` for the
    piecewise-linear form psi of phi at infinity or at 0 (:meth:`meanfield.layers.Dense.limit`;
    for a smooth phi at 0 that is ``c -> rho c``: pseudo-linear).
    """
    act, sw, sb, rho = _common(act, sigma_w2, sigma_b2, rho)
    c = _validate.correlation("c", c)
    if q is not None:
        q = _validate.nonnegative("q", q)
        shape, (c, sw, sb, q) = _validate.broadcast(c, sw, sb, q)
    else:
        shape, (c, sw, sb) = _validate.broadcast(c, sw, sb)
        q = _q_default(act, None, sw, sb, rho, method)
    layer, E = _layer(act, sw, sb, rho, method)
    return _validate.finish(layer.c_map(q, c, E), shape)


def chi_1(act: ActivationLike, sigma_w2: ArrayLike, sigma_b2: ArrayLike, q: ArrayLike | None = None, rho: float = 1.0,
          method: str = "auto") -> float | np.ndarray:
    """``chi_1 = sigma_w2 E[phi'(sqrt(q) z)^2]`` at q = q* by default (Poole et al. 2016, eq. 7).

    The slope of the correlation map at c = 1 (no dropout) and the per-layer factor of the mean
    squared gradient (Schoenholz et al. 2017, eq. 16); with dropout that factor is chi_1 / rho.
    ``chi_1 < 1``: ordered (vanishing gradients); ``chi_1 > 1``: chaotic (exploding).
    Where q* is infinite it is the limit ``sigma_w2 (phi'(+inf)^2 + phi'(-inf)^2) / 2``, or inf
    if phi grows faster than linearly.
    """
    act, sw, sb, rho = _common(act, sigma_w2, sigma_b2, rho)
    if q is not None:
        q = _validate.nonnegative("q", q)
        shape, (sw, sb, q) = _validate.broadcast(sw, sb, q)
    else:
        shape, (sw, sb) = _validate.broadcast(sw, sb)
        q = _q_default(act, None, sw, sb, rho, method)
    layer, E = _layer(act, sw, sb, rho, method)
    return _validate.finish(layer.chi_1(q, E), shape)


def chi_c(act: ActivationLike, sigma_w2: ArrayLike, sigma_b2: ArrayLike, c: ArrayLike | None = None,
          q: ArrayLike | None = None, rho: float = 1.0, method: str = "auto") -> float | np.ndarray:
    """``chi_c = sigma_w2 E[phi'(u1) phi'(u2)]``, slope of the correlation map (Schoenholz et al. 2017, eq. 8).

    At (q*, c*) by default; ``xi_c = -1 / ln chi_c``.  Give ``c`` (and ``q``) for the slope of the
    map at other points.  Where q* is infinite it is the slope of the limiting map.
    """
    act, sw, sb, rho = _common(act, sigma_w2, sigma_b2, rho)
    if c is None:
        if q is not None:
            raise ValueError("give c together with q, or neither (for the fixed point)")
        shape, (sw, sb) = _validate.broadcast(sw, sb)
        qs = _q_default(act, None, sw, sb, rho, method)
        return _validate.finish(solve_c_star(Dense(act, sw, sb, rho), qs, method=method)[1], shape)
    c = _validate.correlation("c", c)
    if q is None:
        shape, (c, sw, sb) = _validate.broadcast(c, sw, sb)
        q = _q_default(act, None, sw, sb, rho, method)
    else:
        q = _validate.nonnegative("q", q)
        shape, (c, sw, sb, q) = _validate.broadcast(c, sw, sb, q)
    layer, E = _layer(act, sw, sb, rho, method)
    return _validate.finish(layer.chi_c(q, c, E), shape)
