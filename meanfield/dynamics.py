"""Signal and gradient propagation layer by layer: q^l, c^l and the squared-gradient norm.

* :func:`propagate`: the variance and correlation maps iterated from the input
  (Poole et al. 2016, eqs. 3 and 5): ``q^l = sigma_w2/rho E[phi(sqrt(q^{l-1}) z)^2] + sigma_b2``,
  ``q12^l = sigma_w2 E[phi(u1) phi(u2)] + sigma_b2``, ``c^l = q12^l / sqrt(q1^l q2^l)``.
* :func:`gradient_growth`: the mean squared gradient norm, layer by layer
  (Schoenholz et al. 2017, Sec. 4, eq. 16): ``||d E / d h^l||^2`` is multiplied by
  ``chi_1 / rho`` per layer going backwards, ``chi_1 = sigma_w2 E[phi'(sqrt(q^l) z)^2]``;
  for residual networks ``x^l = x^{l-1} + V phi(W x^{l-1} + b) + a`` (Yang & Schoenholz
  2017) by ``1 + sigma_v2 sigma_w2 E[phi'(sqrt(q^l) z)^2]`` along the layer-dependent
  ``q^l = sigma_w2 p^{l-1} + sigma_b2``, ``p^l = p^{l-1} + sigma_v2 E[phi(sqrt(q^l) z)^2] +
  sigma_a2`` -- sub-exponential for tanh, because ``q^l`` grows linearly and
  ``E[phi'^2]`` falls like ``q^{-1/2}``.

Every layer goes through the layer rule, :class:`meanfield.layers.Dense` (residual networks:
the residual rule above, until it gets its own layer type).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from . import _bounded, _validate
from .activations import ActivationLike, activation
from .architecture import network
from .fixed_points import solve_q_star
from .gradients import gradient_scales
from .layers import Q_TINY, Dense, Residual, core_expectations
from .layers import rule as layer_rule

__all__ = ["propagate", "Propagation", "gradient_growth", "GradientGrowth", "describe_factor", "format_factor"]


@dataclass(frozen=True)
class Propagation:
    """Variances and correlation of two inputs, layer by layer.

    Arrays have shape ``(depth + 1, *shape)``; index ``l`` is layer ``l``, the pre-activation after
    ``l`` nonlinear layers (0 is the layer whose variance is ``q0``, e.g. ``h^0 = W^0 x + b^0``
    with ``q^0 = sigma_w2 |x|^2/d_in + sigma_b2``: the package's one layer numbering).

    Attributes
    ----------
    layers : int array ``0..depth``
    q1, q2 : variances of the two pre-activations
    q12 : their covariance
    c : correlation ``q12 / sqrt(q1 q2)``
    q : ``q1`` (the variance, when both inputs have the same length)
    """

    layers: np.ndarray
    q1: np.ndarray
    q2: np.ndarray
    q12: np.ndarray
    c: np.ndarray

    @property
    def q(self):
        """``q1``: the variance, when both inputs have the same length."""
        return self.q1


def _check_size(n_floats, memory_limit, what):
    """Refuse, before allocating, per-layer arrays larger than ``memory_limit`` bytes."""
    limit = _validate.memory_limit(memory_limit)
    if 8.0 * n_floats > limit:
        raise ValueError(f"{what} would need {_validate.format_bytes(8.0 * n_floats)} for its per-layer arrays, more "
                         f"than memory_limit = {_validate.format_bytes(limit)}: use fewer layers or raise memory_limit")


def _settled(arrays, layer: int) -> bool:
    """Whether layer ``layer`` repeats layer ``layer - 1`` or ``layer - 2`` bitwise; if so, fill the rest.

    The layer maps do not depend on the layer, so a state met before repeats with the same period
    (a fixed point, or a two-cycle in the last bit) for ever.
    """
    for period in (1, 2):
        if all(np.array_equal(a[layer], a[layer - period], equal_nan=True) for a in arrays):
            for a in arrays:
                for k in range(period):
                    a[layer + 1 + k::period] = a[layer + 1 + k - period]
            return True
    return False


def propagate(act: ActivationLike, q0: ArrayLike | tuple = 1.0, c0: ArrayLike = 0.5, depth: int = 50,
              sigma_w2: ArrayLike = 1.76, sigma_b2: ArrayLike = 0.05, rho: float = 1.0,
              method: str = "auto", memory_limit: float | None = None) -> Propagation:
    """Iterate the variance and correlation maps through ``depth`` layers (Poole et al. 2016).

    ``q^l = sigma_w2/rho E[phi(sqrt(q^{l-1}) z)^2] + sigma_b2`` (eq. 3) for each input and
    ``q12^l = sigma_w2 E[phi(u1) phi(u2)] + sigma_b2`` (eq. 5), ``(u1, u2)`` with covariance
    ``[[q1, q12], [q12, q2]]`` of layer ``l - 1``; ``c^l = q12^l / sqrt(q1^l q2^l)``.

    Parameters
    ----------
    act : Activation or str
    q0 : float or (float, float) or array_like
        Pre-activation variance of layer 0 for both inputs, or a pair (q1, q2).
    c0 : array_like
        Correlation of the two inputs at layer 0, in [-1, 1].
    depth : int
        Number of layers.
    sigma_w2, sigma_b2 : array_like
        Weight and bias variances.
    rho : float
        Dropout keep probability (Schoenholz et al. 2017, Sec. 5).
    method : {"auto", "exact", "quadrature"}
    memory_limit : float, optional
        Bytes the per-layer arrays may take (default :data:`meanfield._validate.DEFAULT_MEMORY_LIMIT`);
        a larger request is refused, with its size, before anything is computed.

    Returns
    -------
    Propagation
        Arrays of shape ``(depth + 1, *broadcast shape)``.
    """
    act = activation(act)
    depth = _validate.positive_int("depth", depth)
    rho = _validate.keep_probability(rho)
    if isinstance(q0, tuple):
        if len(q0) != 2:
            raise ValueError("q0 must be a variance or a pair of variances (q1, q2)")
        qa = _validate.nonnegative("q0", q0[0])
        qb = _validate.nonnegative("q0", q0[1])
    else:
        qa = qb = _validate.nonnegative("q0", q0)
    c0 = _validate.correlation("c0", c0)
    sw = _validate.nonnegative("sigma_w2", sigma_w2)
    sb = _validate.nonnegative("sigma_b2", sigma_b2)
    shape, (qa, qb, c0, sw, sb) = _validate.broadcast(qa, qb, c0, sw, sb)
    _check_size(4 * (depth + 1) * qa.size, memory_limit, "propagate")
    q1 = np.empty((depth + 1, qa.size))
    q2 = np.empty_like(q1)
    q12 = np.empty_like(q1)
    c = np.empty_like(q1)
    q1[0], q2[0], c[0] = qa, qb, c0
    q12[0] = c0 * (np.sqrt(qa) * np.sqrt(qb))  # the product of two variances above 1e154 would overflow
    rule, E = Dense(act, sw, sb, rho), core_expectations(act, method)
    clock = _bounded.LayerClock("propagate", depth)
    arrays = (q1, q2, q12, c)
    for layer in range(1, depth + 1):
        if layer >= 3 and _settled(arrays, layer - 1):  # the map is autonomous: the rest repeats
            break
        clock.tick(layer - 1)
        a, b, cc = q1[layer - 1], q2[layer - 1], c[layer - 1]
        # a variance past float64's range (a divergent network, e.g. relu with sigma_w2 > 2 after
        # ~1750 layers) stays inf, and its correlation follows the map's q = inf limit
        fin = np.isfinite(a) & np.isfinite(b)
        q1[layer, ~fin] = q2[layer, ~fin] = np.inf
        if (~fin).any():
            c[layer, ~fin] = rule.select(~fin).c_map(np.inf, cc[~fin], E)
            with np.errstate(invalid="ignore"):
                q12[layer, ~fin] = c[layer, ~fin] * np.inf
        if not fin.any():
            continue
        f = rule.select(fin)
        a, b, cc = a[fin], b[fin], cc[fin]
        with np.errstate(over="ignore"):
            n1, n2, n12 = f.q_map(a, E), f.q_map(b, E), f.covariance(E("cov", a, b, c=cc))
        q1[layer, fin], q2[layer, fin], q12[layer, fin] = n1, n2, n12
        # both variances collapsed (below Q_TINY) with zero bias: the map's q = 0 limit, exact for
        # the relu family and O(q) off for a smooth phi, where the direct integrals underflow
        same = (np.maximum(a, b) <= Q_TINY) & (f.sigma_b2 == 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            den = np.sqrt(n1) * np.sqrt(n2)  # no underflow or overflow of the product
            cn = np.where(den > 0, n12 / np.where(den > 0, den, 1.0), 1.0)
        if same.any():  # both variances collapsed to 0 with zero bias: the map's limit
            cn[same] = f.select(same).c_map(0.0, cc[same], E)
        over = ~(np.isfinite(n1) & np.isfinite(n2) & np.isfinite(n12))
        if over.any():  # the new variance or covariance overflowed: the map's q = inf limit
            cn[over] = f.select(over).c_map(np.inf, cc[over], E)
        c[layer, fin] = np.clip(cn, -1.0, 1.0)
    out_shape = (depth + 1, *shape)
    return Propagation(layers=np.arange(depth + 1), q1=q1.reshape(out_shape), q2=q2.reshape(out_shape),
                       q12=q12.reshape(out_shape), c=c.reshape(out_shape))


@dataclass(frozen=True)
class GradientGrowth:
    """How the mean squared gradient norm changes through a deep random network.

    Attributes
    ----------
    activation : str
    sigma_w2, sigma_b2, rho : float
    residual : bool
    sigma_v2, sigma_a2 : float or None (residual networks only)
    norm : None, "batch" or "layer": normalisation before phi
    batch_size : int or None (batch norm only)
    layers : int array ``1..depth``: the number of layers the gradient has gone back through
        (a count; entry ``k - 1`` is the step back from layer ``k`` to layer ``k - 1`` when the
        network starts at layer 0 with variance ``q0``)
    per_layer : per-layer factor of ``||dE/dh||^2`` (chi_1/rho, or ``1 + sigma_v2 chi``)
    total : cumulative ratio over the first l layers, ``prod_{k <= l} per_layer[k]``
    q : the pre-activation variance at each layer (q* for plain networks started at q*)
    factor : the asymptotic per-layer factor (chi_1/rho at q*; for residual networks the last
        layer's factor)
    """

    activation: str
    sigma_w2: float
    sigma_b2: float
    rho: float
    residual: bool
    sigma_v2: float | None
    sigma_a2: float | None
    layers: np.ndarray
    per_layer: np.ndarray
    total: np.ndarray
    q: np.ndarray
    factor: float
    norm: str | None = None
    batch_size: int | None = None

    @property
    def depth(self) -> int:
        """Number of layers."""
        return int(self.layers[-1])

    @property
    def overall(self) -> float:
        """Ratio of the squared gradient norm across all layers."""
        return float(self.total[-1])

    @property
    def regime(self) -> str:
        """``"exploding"``, ``"vanishing"`` or ``"stable"`` (overall change within a factor 2)."""
        if self.overall > 2.0:
            return "exploding"
        if self.overall < 0.5:
            return "vanishing"
        return "stable"

    def depth_for(self, factor=1e3):
        """The first layer at which the squared gradient norm has changed by ``factor`` (or more).

        Growth if ``factor > 1``, shrinkage by ``1/factor`` if ``factor < 1``.  Beyond the computed
        depth, plain networks extrapolate with the constant per-layer factor
        (``ln factor / ln chi``, Schoenholz et al. 2017: ``xi = -1/ln chi_1``); residual networks
        return ``inf`` if the factor is not reached within ``depth`` layers.
        """
        factor = float(factor)
        if not (factor > 0 and math.isfinite(factor)) or factor == 1.0:
            raise ValueError(f"factor must be a positive number other than 1, got {factor!r}")
        tot = self.total
        hit = np.flatnonzero(tot >= factor) if factor > 1 else np.flatnonzero(tot <= factor)
        if hit.size:
            return int(self.layers[hit[0]])
        if self.residual:
            return math.inf
        g = self.factor
        if (factor > 1 and g <= 1) or (factor < 1 and g >= 1):
            return math.inf
        return int(math.ceil(math.log(factor) / math.log(g)))

    def summary(self) -> str:
        """Plain words, e.g. ``"the squared gradient norm grows x1.13 per layer: x5.2e3 over 70 layers"``."""
        return describe_factor(self.factor, self.depth, self.overall, residual=self.residual)


def format_factor(x: float) -> str:
    """A multiplicative factor: three digits, or how far from 1 if it is within 0.5% of 1."""
    if not math.isfinite(x):
        return "inf" if x > 0 else "nan"
    if 0.995 <= x < 1.005 and x != 1.0:  # show how far from 1, not a rounded "x1"
        digits = max(3, 1 - int(math.floor(math.log10(abs(x - 1.0)))))
        return f"{x:.{digits}f}"
    if 0.01 <= x < 100:
        return f"{x:.3g}"
    return f"{x:.1e}".replace("e+0", "e").replace("e-0", "e-").replace("e+", "e")


def describe_factor(per_layer: float, depth: int, overall: float | None = None, residual=False) -> str:
    """Words for a per-layer factor of the squared gradient norm over ``depth`` layers.

    >>> describe_factor(1.13, 70)
    'the squared gradient norm grows x1.13 per layer: x5.2e3 over 70 layers'
    """
    if overall is None:
        overall = per_layer ** depth
    g = "the squared gradient norm"
    if abs(per_layer - 1.0) < 1e-9 and not residual:
        return f"{g} keeps its size (x1 per layer, on the critical line) over {depth} layers"
    if residual:
        with np.errstate(divide="ignore", over="ignore"):
            steady = (math.isfinite(overall) and per_layer > 1 and overall > 1
                      and abs(math.log(overall) - depth * math.log(per_layer)) <= 0.05 * math.log(overall))
        if steady:  # the same factor at every layer (e.g. relu: q grows geometrically): exponential
            return (f"{g} grows exponentially: x{format_factor(per_layer)} per layer, x{format_factor(overall)} "
                    f"over {depth} layers")
        if overall >= 1:
            return (f"{g} grows sub-exponentially: x{format_factor(overall)} over {depth} layers "
                    f"(x{format_factor(per_layer)} per layer at the last)")
        return f"{g} shrinks: x{format_factor(overall)} over {depth} layers"
    if per_layer > 1:
        return f"{g} grows x{format_factor(per_layer)} per layer: x{format_factor(overall)} over {depth} layers"
    if per_layer < 1:
        return f"{g} shrinks x{format_factor(per_layer)} per layer: x{format_factor(overall)} over {depth} layers"
    return f"{g} keeps its size (x1 per layer) over {depth} layers"  # pragma: no cover


def gradient_growth(act: ActivationLike, depth: int = 100, sigma_w2: float = 1.76, sigma_b2: float = 0.05,
                    rho: float = 1.0, residual: bool = False, sigma_v2: float = 1.0,
                    sigma_a2: float = 0.0, q0: float | None = None, method: str = "auto",
                    memory_limit: float | None = None, norm: str | None = None,
                    batch_size: int | None = None) -> GradientGrowth:
    """Growth of the mean squared gradient norm over depth (Schoenholz et al. 2017, Sec. 4).

    Plain networks: going back one layer multiplies ``E||dE/dh^l||^2`` by
    ``chi_1 / rho``, ``chi_1 = sigma_w2 E[phi'(sqrt(q^l) z)^2]`` (eq. 16; dropout with keep
    probability rho, Sec. 5).  With ``q0=None`` the network is at its fixed point q*, so the
    factor is the same at every layer and the ratio over L layers is ``(chi_1/rho)^L``; with a
    given input variance ``q0``, ``q^l`` follows the variance map.

    Residual networks (Yang & Schoenholz 2017), ``x^l = x^{l-1} + V phi(W x^{l-1} + b) + a``,
    ``V ~ N(0, sigma_v2/N)``, ``a ~ N(0, sigma_a2)``: ``q^l = sigma_w2 p^{l-1} + sigma_b2``,
    ``p^l = p^{l-1} + sigma_v2 E[phi(sqrt(q^l) z)^2] + sigma_a2`` (``p^0 = q0``, default 1),
    and the factor of layer l is ``1 + sigma_v2 sigma_w2 E[phi'(sqrt(q^l) z)^2]``.

    Normalised networks (``norm="layer"`` or ``"batch"``): the factors of the layer rules
    :class:`meanfield.layers.LayerNorm` (``sigma_w2 E[phi'(z)^2] / q``; Philipp et al. 2018) and
    :class:`meanfield.layers.BatchNorm` (``lambda_G(phi, B)`` at the fixed point, which no choice
    of sigma_w2, sigma_b2 or phi removes; Yang et al. 2019), for a batch of i.i.d. inputs.  Both
    reach their fixed point after one layer; with ``q0=None`` the network starts there.

    Parameters
    ----------
    act : Activation or str
    depth : int
    sigma_w2, sigma_b2 : float
    rho : float
        Dropout keep probability (plain networks).
    residual : bool
    sigma_v2, sigma_a2 : float
        Variances of the residual branch's output weights and biases.
    q0 : float, optional
        Input variance (``p^0`` for residual networks).
    method : {"auto", "exact", "quadrature"}
    memory_limit : float, optional
        Bytes the per-layer arrays may take (default :data:`meanfield._validate.DEFAULT_MEMORY_LIMIT`).
    norm : {None, "layer", "batch"}
        Normalisation before phi in every layer (not with residual blocks or dropout).
    batch_size : int
        Batch size B > 3 for ``norm="batch"``.

    Returns
    -------
    GradientGrowth

    See Also
    --------
    meanfield.gradients.gradient_scales : the same for any sequence of layers, with the gradient
        scale coefficient, sign diversity and pseudo-linearity.
    """
    act = activation(act)
    act.derivative(1)
    depth = _validate.positive_int("depth", depth)
    rho = _validate.keep_probability(rho)
    sw = _validate.scalar("sigma_w2", _validate.nonnegative("sigma_w2", sigma_w2))
    sb = _validate.scalar("sigma_b2", _validate.nonnegative("sigma_b2", sigma_b2))
    for name, v in (("sigma_w2", sigma_w2), ("sigma_b2", sigma_b2)):
        if np.ndim(v) != 0:
            raise ValueError(f"{name} must be a single number here")
    _check_size(4 * depth, memory_limit, "gradient_growth")
    layers = np.arange(1, depth + 1)
    if norm is not None or batch_size is not None:
        net = network(act, depth, sigma_w2=sw, sigma_b2=sb, norm=norm,
                      batch_size=batch_size, residual=residual, rho=rho)
        one = layer_rule(net[0])
        fixed = one.forward(1.0, 0.0)  # the fixed point, reached after one layer from any batch of i.i.d. inputs
        start = fixed if q0 is None else (_validate.scalar("q0", _validate.nonnegative("q0", q0)), 0.0)
        walk = gradient_scales(net, *start)
        per, q = walk.factor, walk.q[:-1]
        total = np.cumprod(per)
        # the factor inside the network (batch norm: lambda_G; its last layer, fed an i.i.d. output
        # gradient, and a first layer off the fixed point differ)
        return GradientGrowth(act.name, sw, sb, rho, False, None, None, layers, per, total, q,
                              float(one.gradient(*fixed)), norm, net[0].batch_size)
    if residual:
        if rho != 1.0:
            raise ValueError("dropout (rho < 1) is not part of the residual-network theory here")
        sv = _validate.scalar("sigma_v2", _validate.nonnegative("sigma_v2", sigma_v2))
        sa = _validate.scalar("sigma_a2", _validate.nonnegative("sigma_a2", sigma_a2))
        p = 1.0 if q0 is None else _validate.scalar("q0", _validate.nonnegative("q0", q0))
        block, E = Residual(act, sw, sb, sv, sa), core_expectations(act, method)
        q = np.full(depth, np.inf)
        per = np.empty(depth)
        clock = _bounded.LayerClock("gradient_growth (residual)", depth)
        for i in range(depth):
            clock.tick(i)
            with np.errstate(over="ignore"):
                q[i] = sw * p + sb
            if not math.isfinite(q[i]):  # the variance has left float range: the limits from here on
                per[i:] = block.gradient(np.inf, E=E)
                break
            per[i] = block.gradient(p, E=E)
            with np.errstate(over="ignore"):
                p = p + block.branch_power(p, E)
        total = np.cumprod(per)
        return GradientGrowth(act.name, sw, sb, rho, True, sv, sa, layers, per, total, q, float(per[-1]))
    rule, E = Dense(act, sw, sb, rho), core_expectations(act, method)
    if q0 is None:
        qs = float(solve_q_star(Dense(act, np.array([sw]), np.array([sb]), rho), np.ones(1), E)[0][0])
        if not math.isfinite(qs):
            raise ValueError(f"the variance of {act.name!r} diverges at sigma_w2 = {sw}, sigma_b2 = {sb} "
                             "(no fixed point q*): give q0 to follow the layers explicitly")
        q = np.full(depth, qs)
        per = np.full(depth, float(rule.backward(qs, E)))
    else:
        qcur = _validate.scalar("q0", _validate.nonnegative("q0", q0))
        q = np.full(depth, np.inf)  # a variance that leaves float range stays inf (a divergent network)
        clock = _bounded.LayerClock("gradient_growth", depth)
        for i in range(depth):
            clock.tick(i)
            q[i] = qcur
            with np.errstate(over="ignore"):
                qcur = float(rule.q_map(qcur, E))
            if not math.isfinite(qcur):
                break
            if qcur == q[i]:  # the fixed point, to the last bit: every later layer repeats it
                q[i + 1:] = qcur
                break
        values, where = np.unique(q, return_inverse=True)
        per = rule.backward(values, E)[where]
    with np.errstate(over="ignore", under="ignore"):
        total = np.exp(np.cumsum(np.log(per))) if np.all(per > 0) else np.cumprod(per)
    return GradientGrowth(act.name, sw, sb, rho, False, None, None, layers, per, total, q, float(per[-1]))
