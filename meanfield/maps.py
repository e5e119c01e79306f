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

import warnings

import numpy as np

from . import _validate
from .activations import activation
from .expectations import expectation
from .fixed_points import _c_star_flat, _q_star_flat, asymptotic_activation, local_activation

__all__ = ["q_map", "q_map_slope", "cov_map", "c_map", "chi_1", "chi_c"]


def _common(act, sigma_w2, sigma_b2, rho):
    act = activation(act)
    rho = _validate.keep_probability(rho)
    sw = _validate.nonnegative("sigma_w2", sigma_w2)
    sb = _validate.nonnegative("sigma_b2", sigma_b2)
    return act, sw, sb, rho


def q_map(q, act, sigma_w2, sigma_b2, rho=1.0, method="auto"):
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
    return _validate.finish(sw / rho * expectation(act, "phi2", q, method=method) + sb, shape)


def q_map_slope(q, act, sigma_w2, sigma_b2, rho=1.0, method="auto"):
    """Slope of the variance map, ``sigma_w2/rho E[phi'(u)^2 + phi(u) phi''(u)]`` at ``u ~ N(0, q)``.

    At q* this is ``exp(-1/xi_q)`` (Schoenholz et al. 2017, eq. 5).  It is computed as
    ``sigma_w2/rho E[phi(u) phi'(u) u] / q`` (Gaussian integration by parts), which needs no
    second derivative and is exact for activations with kinks (hard tanh, relu, elu).
    """
    act, sw, sb, rho = _common(act, sigma_w2, sigma_b2, rho)
    q = _validate.nonnegative("q", q)
    shape, (q, sw, sb) = _validate.broadcast(q, sw, sb)
    return _validate.finish(sw / rho * expectation(act, "slope", q, method=method), shape)


def cov_map(q1, q2, q12, act, sigma_w2, sigma_b2, rho=1.0, method="auto"):
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
    if not np.all(np.isfinite(q12)) or np.any(np.abs(q12) > np.sqrt(q1 * q2) * (1 + 1e-12)):
        raise ValueError("q12 must satisfy |q12| <= sqrt(q1 q2) (a covariance)")
    q12 = np.clip(q12, -np.sqrt(q1 * q2), np.sqrt(q1 * q2))
    n1 = sw / rho * expectation(act, "phi2", q1, method=method) + sb
    n2 = sw / rho * expectation(act, "phi2", q2, method=method) + sb
    n12 = sw * expectation(act, "cov", q1, q2, q12, method=method) + sb
    return tuple(_validate.finish(a, shape) for a in (n1, n2, n12))


def _q_default(act, q, sw, sb, rho, method):
    if q is None:
        return _q_star_flat(act, sw / rho, sb, np.ones_like(sw), method)[0]
    return q


def c_map(c, act, sigma_w2, sigma_b2, q=None, rho=1.0, method="auto"):
    """Correlation map ``c -> (sigma_w2 E[phi(u1) phi(u2)] + sigma_b2) / q'`` (Poole et al. 2016, eq. 5).

    ``u1, u2`` have variance ``q`` and correlation ``c``; ``q' = q_map(q)`` is the next layer's
    variance (equal to q at the fixed point).  ``q`` defaults to q_star.  Where q is infinite the
    map is its limit (see :func:`meanfield.fixed_points.c_star`); at ``q = 0`` with
    ``sigma_b2 = 0`` and ``phi(0) = 0`` it is the ``sigma_b2 -> 0`` limit at q* = 0,
    ``c -> sigma_w2 E[psi psi] + 1 - sigma_w2/rho E[psi^2]`` for the local piecewise-linear form
    psi of phi at 0 (unit variances).
    """
    act, sw, sb, rho = _common(act, sigma_w2, sigma_b2, rho)
    c = _validate.correlation("c", c)
    if q is not None:
        q = _validate.nonnegative("q", q)
        shape, (c, sw, sb, q) = _validate.broadcast(c, sw, sb, q)
    else:
        shape, (c, sw, sb) = _validate.broadcast(c, sw, sb)
        q = _q_default(act, None, sw, sb, rho, method)
    out = np.empty(c.size)
    inf = np.isinf(q)
    if inf.any():
        lim = asymptotic_activation(act)
        if lim is None:
            warnings.warn(f"{act.name!r} grows faster than linearly: no limiting correlation map at q = inf",
                          RuntimeWarning, stacklevel=2)
            out[inf] = np.nan
        else:
            v = expectation(lim, "phi2", 1.0)
            out[inf] = rho * expectation(lim, "cov", 1.0, 1.0, c=c[inf]) / v
    fin = ~inf
    if fin.any():
        qf, cf, swf, sbf = q[fin], c[fin], sw[fin], sb[fin]
        num = swf * expectation(act, "cov", qf, qf, c=cf, method=method) + sbf
        den = swf / rho * expectation(act, "phi2", qf, method=method) + sbf
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = num / np.where(den > 0, den, 1.0)
        zero = den <= 0
        if zero.any():
            psi = local_activation(act)
            ratio[zero] = (swf[zero] * expectation(psi, "cov", 1.0, 1.0, c=cf[zero])
                           + 1.0 - swf[zero] / rho * expectation(psi, "phi2", 1.0))
        out[fin] = ratio
    return _validate.finish(out, shape)


def chi_1(act, sigma_w2, sigma_b2, q=None, rho=1.0, method="auto"):
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
    return _validate.finish(_chi_1_flat(act, sw, q, method), shape)


def _chi_1_flat(act, sw, q, method):
    out = np.empty(q.size)
    inf = np.isinf(q)
    if inf.any():
        if act.slopes is None:
            out[inf] = np.inf
        else:
            out[inf] = sw[inf] * (act.slopes[0] ** 2 + act.slopes[1] ** 2) / 2
    if (~inf).any():
        out[~inf] = sw[~inf] * expectation(act, "dphi2", q[~inf], method=method)
    return out


def chi_c(act, sigma_w2, sigma_b2, c=None, q=None, rho=1.0, method="auto"):
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
        return _validate.finish(_c_star_flat(act, sw, sb, qs, rho, method)[1], shape)
    c = _validate.correlation("c", c)
    if q is None:
        shape, (c, sw, sb) = _validate.broadcast(c, sw, sb)
        q = _q_default(act, None, sw, sb, rho, method)
    else:
        q = _validate.nonnegative("q", q)
        shape, (c, sw, sb, q) = _validate.broadcast(c, sw, sb, q)
    if np.isinf(q).any():
        raise ValueError("chi_c at a given c needs a finite q; q* is infinite here (use c=None for the limit)")
    return _validate.finish(sw * expectation(act, "dcov", q, q, c=c, method=method), shape)
