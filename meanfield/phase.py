"""Depth scales, trainable depth, the order-to-chaos critical line, and every quantity at a point.

* ``xi_q = -1 / ln(q_map_slope(q*))`` (Schoenholz et al. 2017, eq. 5)
* ``xi_c = -1 / ln(chi_c)`` (Schoenholz et al. 2017, eq. 9); infinite on the critical line
* trainable depth ``~ 6 xi_c`` (Schoenholz et al. 2017, Sec. 6 and Fig. 6)
* critical line ``chi_1 = 1``, parametrised by q*: ``sigma_w2 = 1 / E[phi'(sqrt(q*) z)^2]``,
  ``sigma_b2 = q* - sigma_w2 E[phi(sqrt(q*) z)^2]`` (Hayou et al. 2019, Sec. 2)
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, fields

import numpy as np

from . import _validate
from .activations import activation
from .expectations import expectation
from .fixed_points import _bracketed_roots, _c_star_flat, _q_star_flat, _q_star_search
from .maps import _chi_1_flat

__all__ = [
    "xi_q",
    "xi_c",
    "trainable_depth",
    "critical_sigma_w2",
    "critical_line",
    "analyze",
    "MeanFieldPoint",
    "TRAINABLE_DEPTH_FACTOR",
]

#: Networks train up to about this many correlation depth scales (Schoenholz et al. 2017, Fig. 6).
TRAINABLE_DEPTH_FACTOR = 6.0


def _depth_scale(slope):
    """-1 / ln|slope|: 0 for slope 0, inf for |slope| >= 1."""
    s = np.abs(np.asarray(slope, dtype=float))
    with np.errstate(divide="ignore"):
        out = np.where(s >= 1.0, np.inf, -1.0 / np.log(np.where(s > 0, s, 1.0)))
    out = np.where(s == 0, 0.0, out)
    return np.where(np.isnan(s), np.nan, out)


@dataclass(frozen=True)
class MeanFieldPoint:
    """Every mean-field quantity at (sigma_w2, sigma_b2); arrays shaped like the broadcast inputs.

    Attributes
    ----------
    q_star, c_star : fixed points of the variance and correlation maps
    chi_1 : sigma_w2 E[phi'(sqrt(q*) z)^2]
    chi_c : slope of the correlation map at c*
    q_slope : slope of the variance map at q*
    xi_q, xi_c : depth scales -1/ln(q_slope), -1/ln(chi_c)
    trainable_depth : 6 xi_c
    gradient_factor : per-layer factor of the mean squared gradient, chi_1 / rho
    phase : "ordered" (chi_1 < 1), "chaotic" (chi_1 > 1), "critical" (|chi_1 - 1| < 1e-9), or
        "divergent" (q* = inf: the variance grows without bound)
    """

    activation: str
    sigma_w2: np.ndarray
    sigma_b2: np.ndarray
    rho: float
    q_star: np.ndarray
    c_star: np.ndarray
    chi_1: np.ndarray
    chi_c: np.ndarray
    q_slope: np.ndarray
    xi_q: np.ndarray
    xi_c: np.ndarray
    trainable_depth: np.ndarray
    gradient_factor: np.ndarray
    phase: np.ndarray

    def as_dict(self):
        """Plain Python values (floats or lists), for JSON."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.tolist() if isinstance(v, np.ndarray) else v
        return out


def analyze(act, sigma_w2, sigma_b2, rho=1.0, method="auto") -> MeanFieldPoint:
    """All mean-field quantities at once, computing q* and c* only once.

    Parameters
    ----------
    act : Activation or str
    sigma_w2, sigma_b2 : array_like
        Weight and bias variances, broadcast together.
    rho : float
        Dropout keep probability.
    method : {"auto", "exact", "quadrature"}

    Returns
    -------
    MeanFieldPoint
    """
    act = activation(act)
    rho = _validate.keep_probability(rho)
    sw = _validate.nonnegative("sigma_w2", sigma_w2)
    sb = _validate.nonnegative("sigma_b2", sigma_b2)
    shape, (sw, sb) = _validate.broadcast(sw, sb)
    qs, info = _q_star_flat(act, sw / rho, sb, np.ones_like(sw), method)
    cs, chic, _, _ = _c_star_flat(act, sw, sb, qs, rho, method)
    chi1 = _chi_1_flat(act, sw, qs, method)
    q_slope = np.where(np.isinf(qs), np.inf, info.slope)
    xiq = np.where(np.isinf(qs), np.inf, _depth_scale(q_slope))
    xic = _depth_scale(chic)
    phase = np.where(chi1 > 1.0, "chaotic", "ordered").astype(object)
    phase[np.abs(chi1 - 1.0) < 1e-9] = "critical"
    phase[np.isinf(qs)] = "divergent"

    def r(a):
        a = np.asarray(a).reshape(shape)
        return a.item() if a.ndim == 0 else a

    return MeanFieldPoint(
        activation=act.name, sigma_w2=r(sw), sigma_b2=r(sb), rho=rho, q_star=r(qs), c_star=r(cs),
        chi_1=r(chi1), chi_c=r(chic), q_slope=r(q_slope), xi_q=r(xiq), xi_c=r(xic),
        trainable_depth=r(TRAINABLE_DEPTH_FACTOR * xic), gradient_factor=r(chi1 / rho), phase=r(phase),
    )


def xi_q(act, sigma_w2, sigma_b2, rho=1.0, method="auto"):
    """Depth scale of the variance, ``xi_q = -1 / ln(sigma_w2/rho E[phi'^2 + phi phi''])`` at q*.

    Schoenholz et al. 2017, eq. 5: ``|q^l - q*| ~ exp(-l / xi_q)``.  Infinite where q* is
    infinite (q never settles) or the slope is 1.
    """
    return analyze(act, sigma_w2, sigma_b2, rho, method).xi_q


def xi_c(act, sigma_w2, sigma_b2, rho=1.0, method="auto"):
    """Depth scale of correlations, ``xi_c = -1 / ln(chi_c)`` (Schoenholz et al. 2017, eq. 9).

    ``|c^l - c*| ~ exp(-l / xi_c)``; diverges on the critical line chi_1 = 1.  With dropout it
    stays finite (Schoenholz et al. 2017, Sec. 5).
    """
    return analyze(act, sigma_w2, sigma_b2, rho, method).xi_c


def trainable_depth(act, sigma_w2, sigma_b2, rho=1.0, method="auto"):
    """Depth to which a random network can be trained, ``6 xi_c`` (Schoenholz et al. 2017, Fig. 6)."""
    return analyze(act, sigma_w2, sigma_b2, rho, method).trainable_depth


def critical_line(act, q_star, method="auto"):
    """The critical line chi_1 = 1 parametrised by the fixed point q* (Hayou et al. 2019).

    ``sigma_w2 = 1 / E[phi'(sqrt(q*) z)^2]``, ``sigma_b2 = q* - sigma_w2 E[phi(sqrt(q*) z)^2]``.
    Points with ``sigma_b2 < 0`` are not realisable and are returned as they are (check them).

    Returns
    -------
    (sigma_w2, sigma_b2) : arrays shaped like ``q_star``
    """
    act = activation(act)
    q = _validate.nonnegative("q_star", q_star)
    shape = q.shape
    q = q.ravel()
    d = expectation(act, "dphi2", q, method=method)
    with np.errstate(divide="ignore"):
        sw = np.where(d > 0, 1.0 / np.where(d > 0, d, 1.0), np.inf)
    sb = q - sw * expectation(act, "phi2", q, method=method)
    return _validate.finish(sw, shape), _validate.finish(sb, shape)


def critical_sigma_w2(act, sigma_b2, rho=1.0, method="auto"):
    """The weight variance on the order-to-chaos line chi_1 = 1 for each bias variance.

    Solves ``q - E[phi^2] / (rho E[phi'^2]) = sigma_b2`` for q* along :func:`critical_line`,
    then ``sigma_w2 = 1 / E[phi'(sqrt(q*) z)^2]`` (Schoenholz et al. 2017, Fig. 1; tanh at
    sigma_b2 = 0.05 gives 1.76).  With dropout (``rho < 1``) the line is where chi_1 = 1 at the
    dropout fixed point q*; the backward factor there is 1/rho.  NaN, with a warning, where no
    critical point exists (relu for sigma_b2 > 0: its edge of chaos is the single point
    (sigma_b2, sigma_w2) = (0, 2)).
    """
    act = activation(act)
    rho = _validate.keep_probability(rho)
    sb = _validate.nonnegative("sigma_b2", sigma_b2)
    shape = sb.shape
    sb = sb.ravel()
    out = _critical_search(lambda q: (expectation(act, "phi2", q, method=method),
                                      expectation(act, "dphi2", q, method=method)), sb, rho)
    ok = np.isfinite(out)
    if not ok.all():
        warnings.warn(f"no critical point (chi_1 = 1) of {act.name!r} for sigma_b2 = "
                      f"{sb[~ok][:3].tolist()}{'...' if (~ok).sum() > 3 else ''}", RuntimeWarning, stacklevel=2)
    return _validate.finish(out, shape)


def _critical_search(one_dim, sb, rho, q0=1.0):
    """sigma_w2 with chi_1 = 1 for each sigma_b2 in a flat array; NaN where there is none.

    ``one_dim(q)`` returns ``(E[phi(sqrt(q) z)^2], E[phi'(sqrt(q) z)^2])``.  On the line
    ``q* = sigma_w2/rho V(q*) + sigma_b2`` and ``sigma_w2 D(q*) = 1``, so q* solves
    ``h(q) = q - V(q) / (rho D(q)) = sigma_b2``.  Every sign change of ``h - sigma_b2`` on a
    geometric grid of q is a candidate, taken in increasing q; a candidate is accepted only if it
    is the fixed point the variance iteration reaches from ``q0`` at that sigma_w2 (for gelu,
    swish, mish some roots are unstable fixed points, or are not reached from q0).
    """
    n = sb.size
    grid = np.concatenate([[0.0], 1e-3 * 8.0 ** np.arange(18)])

    def h(q):
        v, d = one_dim(q)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(d > 0, q - v / (rho * np.where(d > 0, d, 1.0)), -np.inf)

    g = h(grid)[None, :] - sb[:, None]  # (n, grid)
    out = np.full(n, np.nan)
    open_ = np.ones(n, dtype=bool)
    for k in range(grid.size - 1):
        at_node = open_ & (g[:, k] == 0)
        crossing = open_ & ~at_node & (np.sign(g[:, k]) * np.sign(g[:, k + 1]) < 0)
        rows = np.flatnonzero(at_node | crossing)
        if rows.size == 0:
            continue
        q_c = np.where(at_node[rows], grid[k], np.nan)
        solve = np.flatnonzero(crossing[rows])
        if solve.size:
            r = rows[solve]
            q_c[solve] = _bracketed_roots(lambda q, idx, r=r: h(q) - sb[r[idx]], np.full(r.size, grid[k]),
                                          np.full(r.size, grid[k + 1]), g[r, k], g[r, k + 1])[0]
        d = one_dim(q_c)[1]
        with np.errstate(divide="ignore"):
            sw = np.where(d > 0, 1.0 / np.where(d > 0, d, 1.0), np.nan)
        ok = np.isfinite(sw)
        reached = np.full(rows.size, np.nan)
        if ok.any():
            reached[ok] = _q_star_search(lambda q: one_dim(q)[0], sw[ok] / rho, sb[rows[ok]],
                                         np.full(np.count_nonzero(ok), float(q0)))[0]
        # accepted if chi_1 = 1 at the fixed point actually reached (for relu every q is fixed)
        chi_reached = np.full(rows.size, np.nan)
        fin = ok & np.isfinite(reached)
        if fin.any():
            chi_reached[fin] = sw[fin] * one_dim(reached[fin])[1]
        good = fin & (np.abs(chi_reached - 1.0) <= 1e-9)
        out[rows[good]] = sw[good]
        open_[rows[good]] = False
    return out
