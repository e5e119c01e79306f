"""Fixed points of the variance and correlation maps: q_star and c_star.

Both are found by bracketed root-finding, not by iterating the maps: near the critical line
the iteration converges only polynomially.  ``q_star`` is the fixed point that the iteration
``q^{l+1} = sigma_w2/rho E[phi(sqrt(q^l) z)^2] + sigma_b2`` reaches from ``q0``; if the
variance grows without bound it is ``inf``.  ``c_star`` is the attracting fixed point of the
correlation map at ``q_star``: 1 in the ordered phase (chi_1 < 1, no dropout), the largest
attracting root below 1 otherwise.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from . import _validate
from ._solvers import Q_MAX, c_star_point, q_ceiling, q_star_search
from .activations import ActivationLike, activation
from .layers import Dense, NoLimitError, core_expectations

__all__ = ["q_star", "c_star", "FixedPointInfo", "ConvergenceWarning", "Q_MAX", "solve_q_star", "solve_c_star"]


class ConvergenceWarning(UserWarning):
    """A fixed-point search did not meet its tolerance."""


@dataclass(frozen=True)
class FixedPointInfo:
    """Diagnostics of a fixed-point search (arrays shaped like the broadcast inputs).

    Attributes
    ----------
    converged : bool array
        The bracket closed to the tolerance (1e-14 relative).
    iterations : int array
        Map evaluations spent.
    diverged : bool array
        The variance grows without bound (q_star is inf).
    slope : float array
        Slope of the map at the fixed point; ``|slope| < 1`` means attracting.
    """

    converged: np.ndarray
    iterations: np.ndarray
    diverged: np.ndarray
    slope: np.ndarray


def q_star(act: ActivationLike, sigma_w2: ArrayLike, sigma_b2: ArrayLike, rho: float = 1.0, q0: ArrayLike = 1.0,
           method: str = "auto", full_output: bool = False):
    """Fixed point of the variance map (Poole et al. 2016, eq. 3; Schoenholz et al. 2017, eq. 3).

    ``q* = sigma_w2/rho * E[phi(sqrt(q*) z)^2] + sigma_b2``, ``z ~ N(0, 1)``; with dropout
    (keep probability ``rho``, inverted masks) the weight variance is divided by rho on the
    diagonal (Schoenholz et al. 2017, Sec. 5).

    Parameters
    ----------
    act : Activation or str
    sigma_w2, sigma_b2 : array_like
        Weight and bias variances (broadcast together with ``q0``).
    rho : float
        Dropout keep probability in (0, 1].
    q0 : array_like
        Input variance the iteration starts from (default 1).  For activations with a single
        attracting fixed point (tanh, erf, relu, ...) the result does not depend on it.
    method : {"auto", "exact", "quadrature"}
    full_output : bool
        Also return a :class:`FixedPointInfo`.

    Returns
    -------
    float or ndarray (and FixedPointInfo)
        ``inf`` where the variance grows without bound (e.g. relu with sigma_w2 > 2): a result,
        not an error.  Values above :data:`Q_MAX` count as divergent for activations that grow at
        least linearly; bounded and sublinear ones cannot diverge and are followed much further.
    """
    act = activation(act)
    rho = _validate.keep_probability(rho)
    sw = _validate.nonnegative("sigma_w2", sigma_w2)
    sb = _validate.nonnegative("sigma_b2", sigma_b2)
    q0 = _validate.nonnegative("q0", q0)
    shape, (sw, sb, q0) = _validate.broadcast(sw, sb, q0)
    value, info = solve_q_star(Dense(act, sw, sb, rho), q0, method=method)
    if not info.converged.all():
        warnings.warn(f"q_star did not converge for {np.count_nonzero(~info.converged)} point(s)",
                      ConvergenceWarning, stacklevel=2)
    out = _validate.finish(value, shape)
    if full_output:
        return out, FixedPointInfo(*(np.reshape(a, shape) for a in
                                     (info.converged, info.iterations, info.diverged, info.slope)))
    return out


def solve_q_star(layer: Dense, q0, E=None, method: str = "auto"):
    """q* of each point of a layer with flat array variances, reached from ``q0``.

    The engine behind :func:`q_star` (also used by :mod:`meanfield.phase`, :mod:`meanfield.dynamics`
    and the phase diagram with its own expectation provider ``E``).  Returns ``(q_star,
    FixedPointInfo)`` with flat arrays; ``slope`` is the variance map's slope at q*.
    """
    E = layer.provider(E) if E is not None else _core(layer, method)
    value, converged, iters, diverged = q_star_search(
        lambda q, idx: layer.select(idx).variance(E("phi2", q)), np.broadcast_to(np.asarray(q0, float),
                                                                                 np.shape(layer.sigma_w2)),
        q_ceiling(layer.act))
    slope = np.full(value.size, np.nan)
    fin = np.isfinite(value)
    act = layer.act
    if act.dphi is not None and act.continuous and fin.any():
        slope[fin] = layer.select(fin).q_slope(value[fin], E)
    return value, FixedPointInfo(converged, iters, diverged, slope)


def _core(layer, method):
    return core_expectations(layer.act, method)


def c_star(act: ActivationLike, sigma_w2: ArrayLike, sigma_b2: ArrayLike, rho: float = 1.0, method: str = "auto",
           full_output: bool = False):
    """Attracting fixed point of the correlation map (Poole et al. 2016, eq. 5; Schoenholz et al. 2017).

    ``c* = (sigma_w2 E[phi(u1) phi(u2)] + sigma_b2) / q*`` with ``u1, u2`` of variance q* and
    correlation c*.  Without dropout ``c* = 1`` in the ordered phase (chi_1 <= 1); in the chaotic
    phase, and always with dropout, it is the largest root below 1 of
    ``G(c) = 1 - sigma_w2 (E[phi(u)^2] (1/rho - 1) + E[(phi(u1) - phi(u2))^2]/2) / (q* (1 - c))``,
    a form that stays well conditioned as c* approaches 1 near the critical line.
    Where q* is infinite, or zero with zero bias (sigma_b2 = 0, phi(0) = 0), the map is that of
    the equivalent homogeneous layer (:meth:`meanfield.layers.Dense.limit`): what the network
    with exactly these parameters does as its variance diverges or collapses.  For the relu family
    at sigma_b2 = 0 that is the exact map at every layer (``c' = rho E[relu relu](c) / E[relu^2]``);
    for a smooth phi with phi(0) = 0 it is linear, ``c' = rho c``: the network becomes
    pseudo-linear, and without dropout every c is a fixed point, so c* is NaN (correlations freeze
    at their input values) with chi_c = 1.  This is not the ``sigma_b2 -> 0+`` limit (a different
    network; see :meth:`meanfield.layers.Dense.small_bias_limit`).  If phi grows faster than
    linearly and q* is infinite there is no limit: NaN, with a warning.

    Returns
    -------
    float or ndarray (and FixedPointInfo, whose ``slope`` is chi_c at c*)
    """
    act = activation(act)
    rho = _validate.keep_probability(rho)
    sw = _validate.nonnegative("sigma_w2", sigma_w2)
    sb = _validate.nonnegative("sigma_b2", sigma_b2)
    shape, (sw, sb) = _validate.broadcast(sw, sb)
    layer = Dense(act, sw, sb, rho)
    qs, _ = solve_q_star(layer, np.ones_like(sw), method=method)
    cs, slopes, conv, evals = solve_c_star(layer, qs, method=method)
    out = _validate.finish(cs, shape)
    if full_output:
        info = FixedPointInfo(conv.reshape(shape), evals.reshape(shape), np.isinf(qs).reshape(shape),
                              slopes.reshape(shape))
        return out, info
    return out


def solve_c_star(layer: Dense, qs, E=None, method: str = "auto"):
    """c*, chi_c at it, convergence flags and map evaluations, for each point of a layer given q*.

    The engine behind :func:`c_star` (flat arrays; see :func:`meanfield._solvers.c_star_point`).
    """
    E = layer.provider(E) if E is not None else _core(layer, method)
    n = np.size(qs)
    cs = np.empty(n)
    chi_c = np.empty(n)
    conv = np.ones(n, dtype=bool)
    evals = np.zeros(n, dtype=int)
    for i in range(n):
        stats = {}
        one = layer.select(i)
        try:
            cs[i], chi_c[i] = c_star_point(one, qs[i], E, stats)
        except NoLimitError as err:
            warnings.warn(f"{err}: c* and chi_c are NaN", RuntimeWarning, stacklevel=3)
            cs[i], chi_c[i] = np.nan, np.nan
        conv[i] = stats.get("converged", True)
        evals[i] = stats.get("evaluations", 0)
    if not conv.all():
        warnings.warn(f"c_star did not converge for {np.count_nonzero(~conv)} point(s)", ConvergenceWarning,
                      stacklevel=3)
    return cs, chi_c, conv, evals
