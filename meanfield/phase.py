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
from numpy.typing import ArrayLike

from . import _validate
from ._solvers import critical_candidates, critical_search, q_ceiling
from .activations import ActivationLike, activation
from .architecture import NORMS, Layer
from .expectations import expectation
from .fixed_points import solve_c_star, solve_q_star
from .layers import Dense, core_expectations

__all__ = [
    "xi_q",
    "xi_c",
    "trainable_depth",
    "critical_sigma_w2",
    "critical_line",
    "analyze",
    "MeanFieldPoint",
    "TRAINABLE_DEPTH_FACTOR",
    "PHASES",
    "classify",
    "depth_scale",
    "critical_points",
    "CriticalPoint",
]

#: Phase labels (their index is the integer code stored in files).
#: ordered: chi_1 < 1; chaotic: chi_1 > 1; critical: |chi_1 - 1| < 1e-9; divergent: q* = inf, the
#: variance grows without bound; pseudo-linear: sigma_b2 = 0 and q* = 0 with phi smooth at 0 and
#: phi(0) = 0, so the layers act as linear maps on ever smaller signals.
PHASES = ("ordered", "chaotic", "critical", "divergent", "pseudo-linear")

#: Networks train up to about this many correlation depth scales (Schoenholz et al. 2017, Fig. 6).
TRAINABLE_DEPTH_FACTOR = 6.0


def depth_scale(slope):
    """``-1 / ln|slope|``: 0 for slope 0, inf for ``|slope| >= 1`` (Schoenholz et al. 2017, eqs. 5, 9)."""
    s = np.abs(np.asarray(slope, dtype=float))
    with np.errstate(divide="ignore"):
        out = np.where(s >= 1.0, np.inf, -1.0 / np.log(np.where(s > 0, s, 1.0)))
    out = np.where(s == 0, 0.0, out)
    return np.where(np.isnan(s), np.nan, out)


def classify(chi_1, q_star, pseudo_linear):
    """Integer phase codes into :data:`PHASES` from chi_1, q* and the pseudo-linear mask.

    Divergent (q* = inf) first, then critical (``|chi_1 - 1| < 1e-9``), then pseudo-linear,
    then ordered / chaotic by chi_1.
    """
    chi_1 = np.asarray(chi_1, dtype=float)
    code = np.where(chi_1 > 1.0, 1, 0).astype(np.int8)
    code[np.asarray(pseudo_linear, dtype=bool)] = 4
    code[np.abs(chi_1 - 1.0) < 1e-9] = 2
    code[np.isinf(q_star)] = 3
    return code


def fields_at(layer: Dense, qs, info_slope, cs, chic, chi1):
    """Depth scales, trainable depth, gradient factor and phase codes from the fixed-point values.

    Shared by :func:`analyze` and :func:`meanfield.phase_diagram` (flat arrays).  Where the
    network is pseudo-linear without dropout (every correlation a fixed point), the trainable
    depth is NaN: the ``6 xi_c`` rule does not describe a network whose correlations freeze.
    """
    inf = np.isinf(qs)
    q_slope = np.where(inf, np.inf, info_slope)
    xiq = np.where(inf, np.inf, depth_scale(q_slope))
    xic = depth_scale(chic)
    pseudo = layer.pseudo_linear(qs)
    code = classify(chi1, qs, pseudo)
    depth = TRAINABLE_DEPTH_FACTOR * xic
    depth = np.where((code == 4) & np.isnan(cs), np.nan, depth)
    return dict(q_slope=q_slope, xi_q=xiq, xi_c=xic, trainable_depth=depth,
                gradient_factor=layer.gradient_factor(chi1)), code


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
    phase : one of :data:`PHASES`: "ordered" (chi_1 < 1), "chaotic" (chi_1 > 1), "critical"
        (|chi_1 - 1| < 1e-9), "divergent" (q* = inf: the variance grows without bound), or
        "pseudo-linear" (sigma_b2 = 0 and q* = 0 with phi smooth at 0: the layers act as linear
        maps on a vanishing signal; correlations freeze, c* is NaN without dropout, and the
        trainable depth is NaN because 6 xi_c does not describe such a network)
    c_star_small_bias : where sigma_b2 = 0 and q* = 0, the c* that *any* positive bias, however
        small, would give (the sigma_b2 -> 0+ limit, a different network: the answer is
        discontinuous at sigma_b2 = 0); NaN elsewhere
    norm, batch_size : the normalisation before phi (None, "layer" or "batch") and the batch size
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
    c_star_small_bias: np.ndarray
    norm: str | None = None
    batch_size: int | None = None

    def as_dict(self):
        """Plain Python values (floats or lists), for JSON."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.tolist() if isinstance(v, np.ndarray) else v
        return out


def analyze(act: ActivationLike, sigma_w2: ArrayLike, sigma_b2: ArrayLike, rho: float = 1.0,
            method: str = "auto", norm: str | None = None, batch_size: int | None = None) -> MeanFieldPoint:
    """All mean-field quantities at once, computing q* and c* only once.

    Normalised networks (``norm``): layer norm before phi is the dense layer
    ``Dense(phi, sigma_w2/q*, sigma_b2/q*)`` at its fixed point ``q = 1`` (the normalised
    pre-activations have unit variance), with ``q* = sigma_w2 E[phi(z)^2] + sigma_b2`` reached
    after one layer (``xi_q = 0``) and ``chi_1 = sigma_w2 E[phi'(z)^2] / q*`` the gradient factor
    (Philipp et al. 2018).  Batch norm: q* and c* of the permutation-symmetric fixed point and
    ``chi_1 = lambda_G(phi, B)``, whatever sigma_w2 and sigma_b2 (Yang et al. 2019); how
    non-symmetric batches approach that fixed point is not computed, so chi_c, xi_c and the
    trainable depth are NaN there.

    Parameters
    ----------
    act : Activation or str
    sigma_w2, sigma_b2 : array_like
        Weight and bias variances, broadcast together.
    rho : float
        Dropout keep probability.
    method : {"auto", "exact", "quadrature"}
    norm : {None, "layer", "batch"}
        Normalisation before phi (not with dropout).
    batch_size : int
        Batch size B > 3 for ``norm="batch"``.

    Returns
    -------
    MeanFieldPoint
    """
    act = activation(act)
    rho = _validate.keep_probability(rho)
    sw = _validate.nonnegative("sigma_w2", sigma_w2)
    sb = _validate.nonnegative("sigma_b2", sigma_b2)
    shape, (sw, sb) = _validate.broadcast(sw, sb)
    if norm is not None or batch_size is not None:
        return _analyze_normalised(act, sw, sb, shape, rho, method, norm, batch_size)
    layer = Dense(act, sw, sb, rho)
    E = core_expectations(act, method)
    qs, info = solve_q_star(layer, np.ones_like(sw), E)
    cs, chic, _, _ = solve_c_star(layer, qs, E)
    chi1 = layer.chi_1(qs, E)
    derived, code = fields_at(layer, qs, info.slope, cs, chic, chi1)
    small = np.full(sw.size, np.nan)
    for i in np.flatnonzero((qs == 0) & (sb == 0) & (sw > 0)):
        lim = layer.select(i).small_bias_limit()
        if lim is not None:
            small[i] = solve_c_star(lim, np.ones(1))[0][0]

    return _point(act, sw, sb, shape, rho, dict(q_star=qs, c_star=cs, chi_1=chi1, chi_c=chic, **derived),
                  code, small)


def _point(act, sw, sb, shape, rho, values, code, small, norm=None, batch_size=None) -> MeanFieldPoint:
    """A :class:`MeanFieldPoint` from flat arrays, shaped like the broadcast inputs (scalars for scalars)."""

    def r(a):
        a = np.asarray(a).reshape(shape)
        return a.item() if a.ndim == 0 else a

    return MeanFieldPoint(
        activation=act.name, sigma_w2=r(sw), sigma_b2=r(sb), rho=rho,
        phase=r(np.array(PHASES, dtype=object)[code]), c_star_small_bias=r(small), norm=norm,
        batch_size=batch_size, **{k: r(v) for k, v in values.items()},
    )


def _analyze_normalised(act, sw, sb, shape, rho, method, norm, batch_size) -> MeanFieldPoint:
    """:func:`analyze` for ``norm="layer"`` or ``"batch"`` (flat sw, sb)."""
    if norm is None:
        raise ValueError("batch_size applies to norm='batch' only")
    if norm not in NORMS[1:]:
        raise ValueError(f"norm must be None, 'layer' or 'batch', got {norm!r}")
    if rho != 1.0:
        raise ValueError("dropout (rho < 1) with normalisation is not covered: use rho=1")
    if np.any(sw <= 0):
        raise ValueError("sigma_w2 must be positive with normalisation (at sigma_w2 = 0 every input gives the "
                         "same pre-activations and the normalisation divides by zero)")
    kind = {"layer": "layer_norm", "batch": "batch_norm"}[norm]
    Layer(kind, act, 1.0, 0.0, batch_size=batch_size)  # validates batch_size against norm
    E = core_expectations(act, method)
    zero = np.zeros(sw.size)
    if norm == "layer":
        qs = sw * float(E("phi2", 1.0)) + sb
        unit = Dense(act, sw / qs, sb / qs)  # the same network, seen at unit variance
        cs, chic, _, _ = solve_c_star(unit, np.ones(sw.size), E)
        chi1 = unit.chi_1(np.ones(sw.size), E)
        derived, code = fields_at(unit, np.ones(sw.size), zero, cs, chic, chi1)
    else:
        from .batchnorm import batch_norm_fixed_point, lambda_G

        if batch_size <= 3:
            raise ValueError(f"the batch-norm gradient theory needs batch_size > 3, got {batch_size}")
        qs, cs = (np.broadcast_to(np.asarray(a, dtype=float), sw.shape)
                  for a in batch_norm_fixed_point(act, batch_size, sw, sb))
        chi1 = np.full(sw.size, float(lambda_G(act, batch_size)))
        chic = np.full(sw.size, np.nan)
        code = classify(chi1, qs, np.zeros(sw.size, dtype=bool))
        derived = dict(q_slope=zero, xi_q=zero, xi_c=chic, trainable_depth=chic, gradient_factor=chi1)

    return _point(act, sw, sb, shape, rho, dict(q_star=qs, c_star=cs, chi_1=chi1, chi_c=chic, **derived),
                  code, np.full(sw.size, np.nan), norm, batch_size)


def xi_q(act: ActivationLike, sigma_w2: ArrayLike, sigma_b2: ArrayLike, rho: float = 1.0,
         method: str = "auto") -> float | np.ndarray:
    """Depth scale of the variance, ``xi_q = -1 / ln(sigma_w2/rho E[phi'^2 + phi phi''])`` at q*.

    Schoenholz et al. 2017, eq. 5: ``|q^l - q*| ~ exp(-l / xi_q)``.  Infinite where q* is
    infinite (q never settles) or the slope is 1.
    """
    return analyze(act, sigma_w2, sigma_b2, rho, method).xi_q


def xi_c(act: ActivationLike, sigma_w2: ArrayLike, sigma_b2: ArrayLike, rho: float = 1.0,
         method: str = "auto") -> float | np.ndarray:
    """Depth scale of correlations, ``xi_c = -1 / ln(chi_c)`` (Schoenholz et al. 2017, eq. 9).

    ``|c^l - c*| ~ exp(-l / xi_c)``; diverges on the critical line chi_1 = 1.  With dropout it
    stays finite (Schoenholz et al. 2017, Sec. 5).
    """
    return analyze(act, sigma_w2, sigma_b2, rho, method).xi_c


def trainable_depth(act: ActivationLike, sigma_w2: ArrayLike, sigma_b2: ArrayLike, rho: float = 1.0,
                    method: str = "auto") -> float | np.ndarray:
    """Depth to which a random network can be trained, ``6 xi_c`` (Schoenholz et al. 2017, Fig. 6)."""
    return analyze(act, sigma_w2, sigma_b2, rho, method).trainable_depth


def critical_line(act: ActivationLike, q_star: ArrayLike, rho: float = 1.0, method: str = "auto") -> tuple:
    """The critical line chi_1 = 1 parametrised by the fixed point q* (Hayou et al. 2019).

    ``sigma_w2 = 1 / E[phi'(sqrt(q*) z)^2]``, ``sigma_b2 = q* - sigma_w2/rho E[phi(sqrt(q*) z)^2]``
    (:meth:`meanfield.layers.Dense.on_critical_line`).  Points with ``sigma_b2 < 0`` are not
    realisable and are returned as they are (check them).

    Returns
    -------
    (sigma_w2, sigma_b2) : arrays shaped like ``q_star``
    """
    act = activation(act)
    rho = _validate.keep_probability(rho)
    q = _validate.nonnegative("q_star", q_star)
    shape = q.shape
    q = q.ravel()
    d = expectation(act, "dphi2", q, method=method)
    with np.errstate(divide="ignore"):
        sw, sb = Dense.on_critical_line(q, expectation(act, "phi2", q, method=method),
                                        np.where(d > 0, d, 0.0), rho)
    return _validate.finish(sw, shape), _validate.finish(sb, shape)


def _one_dim(act, method):
    E = core_expectations(act, method)
    return lambda q: (E("phi2", q), E("dphi2", q))


def critical_sigma_w2(act: ActivationLike, sigma_b2: ArrayLike, rho: float = 1.0,
                      method: str = "auto") -> float | np.ndarray:
    """The weight variance on the order-to-chaos line chi_1 = 1 for each bias variance.

    Solves ``q - E[phi^2] / (rho E[phi'^2]) = sigma_b2`` for q* along :func:`critical_line`,
    then ``sigma_w2 = 1 / E[phi'(sqrt(q*) z)^2]`` (Schoenholz et al. 2017, Fig. 1; tanh at
    sigma_b2 = 0.05 gives 1.76).  With dropout (``rho < 1``) the line is where chi_1 = 1 at the
    dropout fixed point q*; the backward factor there is 1/rho.  Only a critical point on the
    branch of fixed points that the variance iteration reaches from q0 = 1 counts; NaN, with a
    warning, where there is none (relu for sigma_b2 > 0: its edge of chaos is the single point
    (sigma_b2, sigma_w2) = (0, 2); gelu and swish at small sigma_b2, whose chi_1 = 1 points are
    unstable fixed points: see :func:`critical_points`).
    """
    act = activation(act)
    rho = _validate.keep_probability(rho)
    sb = _validate.nonnegative("sigma_b2", sigma_b2)
    shape = sb.shape
    sb = sb.ravel()
    out = critical_search(act, _one_dim(act, method), sb, rho)
    ok = np.isfinite(out)
    if not ok.all():
        warnings.warn(f"no critical point (chi_1 = 1) of {act.name!r} reached from q0 = 1 for sigma_b2 = "
                      f"{sb[~ok][:3].tolist()}{'...' if (~ok).sum() > 3 else ''} (see critical_points)",
                      RuntimeWarning, stacklevel=2)
    return _validate.finish(out, shape)


@dataclass(frozen=True)
class CriticalPoint:
    """A point with chi_1 = 1 at a fixed point of the variance map.

    Attributes
    ----------
    sigma_w2, sigma_b2 : the variances
    q_star : the fixed point of the variance map at which chi_1 = 1
    q_slope : slope of the variance map there; below 1 the fixed point attracts, above 1 it repels
    stable : ``q_slope < 1``
    reached : the iteration from q0 = 1 converges to this fixed point (what
        :func:`critical_sigma_w2` reports)
    q_reached : the fixed point the iteration from q0 = 1 reaches at this sigma_w2 (inf: diverges)
    """

    sigma_w2: float
    sigma_b2: float
    q_star: float
    q_slope: float
    stable: bool
    reached: bool
    q_reached: float


def critical_points(act: ActivationLike, sigma_b2: float, rho: float = 1.0,
                    method: str = "auto") -> list[CriticalPoint]:
    """Every point on the line chi_1 = 1 at one ``sigma_b2``, stable or not (Schoenholz et al. 2017).

    For gelu, swish and mish at small sigma_b2 the only chi_1 = 1 points are *unstable* fixed
    points of the variance map (slope > 1): a network started with a smaller variance falls to
    the lower, ordered fixed point, one started above it diverges.  :func:`critical_sigma_w2`
    reports only the point the iteration from q0 = 1 reaches; this lists them all, in increasing q*.
    """
    act = activation(act)
    rho = _validate.keep_probability(rho)
    sb = _validate.scalar("sigma_b2", _validate.nonnegative("sigma_b2", sigma_b2))
    one_dim = _one_dim(act, method)
    out = []
    for _, q_c in critical_candidates(one_dim, np.array([sb]), rho, q_ceiling(act)):
        q = float(q_c[0])
        d = float(one_dim(np.array([q]))[1][0])
        if not d > 0:
            continue
        layer = Dense(act, 1.0 / d, sb, rho)
        slope = float(layer.q_slope(q)) if q > 0 else float(layer.q_slope(0.0))
        reached = float(solve_q_star(Dense(act, np.array([1.0 / d]), np.array([sb]), rho), np.ones(1),
                                     method=method)[0][0])
        same = np.isfinite(reached) and abs(reached - q) <= 1e-8 * max(q, 1e-12)
        out.append(CriticalPoint(1.0 / d, sb, q, slope, slope < 1.0, bool(same), reached))
    return out
