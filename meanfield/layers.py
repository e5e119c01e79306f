"""The layer rule: one home for what one layer does to variances, correlations and gradients.

A *layer type* states, in one object, its forward maps (variance and covariance), its backward
factor (the per-layer factor of the mean squared gradient), its kernel step (NNGP and NTK) and
its limits (``q = 0`` with zero bias, ``q = inf``).  Fixed points, analyses, phase diagrams,
propagation, gradient growth and kernels call these methods; none writes the rule out again.

Every method takes the Gaussian expectations it needs from an *expectation provider*
``E(kind, q1, q2=None, c=None)`` (kinds as in :data:`meanfield.expectations.KINDS`), by default
the core :func:`meanfield.expectations.expectation`; fast paths pass their tables instead.

:class:`LayerNorm`, :class:`BatchNorm` and :class:`Residual` are the other layer types of
:mod:`meanfield.architecture` (:func:`rule` maps a plain-data layer to its rule); every type
answers ``forward(q, c)``, ``gradient(q, c)``, ``gradient_share(q, c, s)``, ``argument(q, c)`` and
``nonlinearity(q, c)`` for a batch of per-unit variance q and pairwise correlation c, which is all
:func:`meanfield.gradients.gradient_scales` needs to follow signals and gradients through a
network of mixed layers.

:class:`Dense` is the fully connected layer with dropout,
``h^l = W^l (m^l * phi(h^{l-1})) / rho + b^l``, ``W_ij ~ N(0, sigma_w2/N)``,
``b_i ~ N(0, sigma_b2)``, ``m_j ~ Bernoulli(rho)`` (inverted dropout; Poole et al. 2016, eqs. 3
and 5; Schoenholz et al. 2017, Sec. 5):

* variance   ``q' = sigma_w2/rho E[phi(u)^2] + sigma_b2``,  ``u ~ N(0, q)``
* covariance ``q12' = sigma_w2 E[phi(u1) phi(u2)] + sigma_b2``
* backward   ``E||dE/dh^{l-1}||^2 = (chi_1/rho) E||dE/dh^l||^2``, ``chi_1 = sigma_w2 E[phi'(u)^2]``
* NTK step   ``Theta' = K' + sigma_w2 E[phi'(u1) phi'(u2)] Theta`` (Jacot et al. 2018)

**Limits.**  Where the variance is infinite, or zero with zero bias (``q = 0``, ``sigma_b2 = 0``,
``phi(0) = 0``), the correlation map is that of a positively homogeneous activation ``psi``: the
asymptotic form ``s+ relu(x) - s- relu(-x)`` of phi at large ``|x|``
(:func:`asymptotic_activation`), or its local form at 0 (:func:`local_activation`).  A
homogeneous layer does not see the scale of its input, so the map is that of the equivalent
layer ``Dense(psi, rho / E[psi(z)^2], 0, rho)`` at unit variance: ``c' = rho E[psi(z1) psi(z2)] /
E[psi(z)^2]`` (:meth:`Dense.limit`).  This is exactly what a zero-bias network does as its
variance collapses: for the relu family it holds at every layer (relu is scale invariant); for
a smooth phi with ``phi(0) = 0`` the limit is linear, ``c' = rho c``, and the network becomes
*pseudo-linear*: without dropout every correlation is a fixed point and correlations freeze at
their input values.  It is not the ``sigma_b2 -> 0+`` limit, which is a different network: with
any positive bias, however small, ``b/q*`` stays finite as ``q* -> 0`` and the map is
``c' = sigma_w2 E[psi psi] + 1 - sigma_w2/rho E[psi^2]`` (:meth:`Dense.small_bias_limit`).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import sympy as sp

from .activations import Activation, activation, x
from .expectations import expectation

__all__ = ["Dense", "LayerNorm", "BatchNorm", "Residual", "rule", "core_expectations",
           "asymptotic_activation", "local_activation", "is_linear", "NoLimitError", "Q_TINY"]

#: Below this variance a zero-bias layer is at its q = 0 limit (see :meth:`Dense.limit`).
Q_TINY = 1e-100

#: An expectation provider: ``E(kind, q1, q2=None, c=None) -> array``.
Expectations = Callable[..., np.ndarray]


def core_expectations(act: Activation, method: str = "auto") -> Expectations:
    """The provider backed by :func:`meanfield.expectations.expectation` (closed form or quadrature)."""

    def E(kind, q1, q2=None, c=None):
        if q2 is None:
            return np.asarray(expectation(act, kind, q1, method=method), dtype=float)
        return np.asarray(expectation(act, kind, q1, q2, c=c, method=method), dtype=float)

    return E


# ----------------------------------------------------------------------------------------
# Homogeneous forms of phi: at large |x| and near 0
# ----------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _two_slopes(s_plus: float, s_minus: float) -> Activation:
    """``s+ relu(x) - s- relu(-x)``: slope s+ for x > 0 and s- for x < 0."""
    a, b = (sp.nsimplify(s, rational=True, tolerance=1e-12) for s in (s_plus, s_minus))
    relu_x = sp.Piecewise((x, x > 0), (0, True))
    relu_mx = sp.Piecewise((-x, x < 0), (0, True))
    return activation(a * relu_x - b * relu_mx)


@functools.lru_cache(maxsize=32)
def asymptotic_activation(act: Activation) -> Activation | None:
    """The piecewise-linear activation phi approaches at large ``|x|``, or None.

    With slopes ``s+ = phi'(+inf)`` and ``s- = phi'(-inf)``: ``s+ relu(x) - s- relu(-x)``.  It
    governs the correlation map where the variance is infinite (degree-1 homogeneity).  None if
    phi grows faster than linearly or is bounded (slopes 0).
    """
    if act.slopes is None or act.slopes == (0.0, 0.0):
        return None
    return _two_slopes(*act.slopes)


@functools.lru_cache(maxsize=32)
def local_activation(act: Activation) -> Activation | None:
    """The piecewise-linear activation phi looks like near 0: slopes ``phi'(0+)``, ``phi'(0-)``.

    It governs the correlation map of a zero-bias layer as the variance collapses to 0 (for
    ``phi(0) = 0``).  None where both slopes are 0 (then the limit depends on higher orders).
    """
    dphi = act.derivative(1)
    # a slope that vanishes with its argument (phi = x^2: phi'(1e-150) = 2e-150) is 0
    s_plus, s_minus = (float(v) if abs(v) > 1e-100 else 0.0 for v in dphi(np.array([1e-150, -1e-150])))
    if s_plus == 0.0 and s_minus == 0.0:
        return None
    return _two_slopes(s_plus, s_minus)


def is_linear(act: Activation | None) -> bool:
    """True for a homogeneous form ``s+ relu(x) - s- relu(-x)`` with ``s+ == s-`` (a linear map)."""
    if act is None:
        return False
    s = act.derivative(1)(np.array([1.0, -1.0]))
    return bool(s[0] == s[1])


# ----------------------------------------------------------------------------------------
# The fully connected layer
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dense:
    """Fully connected layer with dropout: ``h' = W (m * phi(h)) / rho + b`` (see the module docstring).

    ``sigma_w2`` and ``sigma_b2`` may be arrays (one layer per point of a grid); every method
    broadcasts over them and over its own arguments.

    Parameters
    ----------
    act : Activation
    sigma_w2, sigma_b2 : float or ndarray
        Weight and bias variances.
    rho : float
        Dropout keep probability in (0, 1] (inverted masks).
    """

    act: Activation
    sigma_w2: float | np.ndarray
    sigma_b2: float | np.ndarray
    rho: float = 1.0

    # ---- the rule, given expectation values ----
    def variance(self, V):
        """``q' = sigma_w2/rho V + sigma_b2`` from ``V = E[phi(u)^2]`` (Poole et al. 2016, eq. 3)."""
        return self.sigma_w2 / self.rho * V + self.sigma_b2

    def covariance(self, C):
        """``q12' = sigma_w2 C + sigma_b2`` from ``C = E[phi(u1) phi(u2)]`` (Poole et al. 2016, eq. 5)."""
        return self.sigma_w2 * C + self.sigma_b2

    def chi_1_from(self, D1):
        """``chi_1 = sigma_w2 D1`` from ``D1 = E[phi'(u)^2]`` (Poole et al. 2016, eq. 7)."""
        return self.sigma_w2 * D1

    def gradient_factor(self, chi_1):
        """Per-layer factor of the mean squared gradient, ``chi_1 / rho`` (Schoenholz et al. 2017, eq. 16, Sec. 5).

        Going back one layer multiplies ``E||dE/dh||^2`` by it (the squared norm's factor).
        """
        return chi_1 / self.rho

    def chi_c_from(self, Dc):
        """``chi_c = sigma_w2 Dc`` from ``Dc = E[phi'(u1) phi'(u2)]`` (Schoenholz et al. 2017, eq. 8)."""
        return self.sigma_w2 * Dc

    def ntk_from(self, K_next, Dc, theta):
        """NTK step ``Theta' = K' + sigma_w2 Dc Theta`` (Jacot et al. 2018; NTK parametrisation)."""
        return K_next + self.sigma_w2 * Dc * theta

    def gap_from(self, q, V, D, c):
        """``G(c) = 1 - (1 - c') / (1 - c)`` at a fixed point ``q' = q`` of the variance map.

        ``1 - c' = sigma_w2 (V (1/rho - 1) + D) / q`` with ``D = E[(phi(u1) - phi(u2))^2] / 2``,
        so c* is the root of ``G(c) = 1 - sigma_w2 (V (1/rho - 1) + D) / (q (1 - c))``: a form that
        stays well conditioned as c* approaches 1 (Schoenholz et al. 2017, eq. 5 rearranged).
        """
        return 1.0 - self.sigma_w2 * (V * (1.0 / self.rho - 1.0) + D) / (q * (1.0 - c))

    @staticmethod
    def on_critical_line(q, V, D, rho=1.0):
        """``(sigma_w2, sigma_b2)`` where ``q`` is a fixed point and ``chi_1 = 1``, from ``V(q)``, ``D1(q)``.

        ``chi_1_from(D) = 1`` gives ``sigma_w2 = 1/D``; ``variance(V) = q`` gives
        ``sigma_b2 = q - sigma_w2/rho V`` (Hayou et al. 2019, Sec. 2; Schoenholz et al. 2017,
        Fig. 1).  Points with ``sigma_b2 < 0`` are not realisable.
        """
        with np.errstate(over="ignore", divide="ignore"):  # a tiny rho: sigma_b2 -> -inf, not realisable
            sw = 1.0 / D
            return sw, q - sw / rho * V

    def select(self, idx) -> Dense:
        """The layers of points ``idx`` (for array-valued variances)."""
        take = lambda v: v[idx] if np.ndim(v) else v  # noqa: E731
        return Dense(self.act, take(self.sigma_w2), take(self.sigma_b2), self.rho)

    # ---- maps with a provider ----
    def provider(self, E: Expectations | None = None) -> Expectations:
        """``E`` itself, or the core provider of this layer's activation."""
        return core_expectations(self.act) if E is None else E

    def q_map(self, q, E: Expectations | None = None):
        """The variance map at ``q`` (finite; Poole et al. 2016, eq. 3)."""
        return self.variance(self.provider(E)("phi2", q))

    def q_slope(self, q, E: Expectations | None = None):
        """Slope of the variance map, ``sigma_w2/rho E[phi'^2 + phi phi'']`` (Schoenholz et al. 2017, eq. 5)."""
        return self.sigma_w2 / self.rho * self.provider(E)("slope", q)

    def limit(self, q) -> Dense | None:
        """The equivalent homogeneous layer at unit variance where ``q`` is a limit, else None.

        ``q = inf``: :func:`asymptotic_activation`; ``q = 0`` with ``sigma_b2 = 0`` and
        ``phi(0) = 0``: :func:`local_activation`.  Variances below :data:`Q_TINY` count as 0
        there: the limit is exact for the relu family and off by O(q) for a smooth phi, while the
        direct integrals lose all precision as ``q`` underflows.  Returns ``Dense(psi, rho / E[psi^2], 0, rho)``
        (one scalar layer; call with scalar ``q`` and scalar variances), or None if there is no
        limit (``q`` finite and not such a zero).

        Raises
        ------
        NoLimitError
            Where the limit does not exist (phi grows faster than linearly, or ``phi'(0) = 0``).
        """
        q = float(q)
        if np.isinf(q):
            psi = asymptotic_activation(self.act)
            if psi is None:
                raise NoLimitError(f"{self.act.name!r} grows faster than linearly: "
                                   "no limiting correlation map at q = inf")
        elif q <= Q_TINY and float(self.sigma_b2) == 0.0 and float(self.act.phi(np.zeros(1))[0]) == 0.0:
            psi = local_activation(self.act)
            if psi is None:
                raise NoLimitError(f"{self.act.name!r} has phi'(0) = 0 on both sides: its zero-bias correlation map "
                                   "at q* = 0 is that of a higher-degree local form, not computed here")
        else:
            return None
        v = float(expectation(psi, "phi2", 1.0))
        return Dense(psi, self.rho / v, 0.0, self.rho)

    def small_bias_limit(self) -> Dense | None:
        """The layer whose map at unit variance is the ``sigma_b2 -> 0+`` limit at ``q* = 0``.

        A different network from zero bias: ``c' = sigma_w2 E[psi psi] + 1 - sigma_w2/rho E[psi^2]``
        with psi the local form of phi at 0 (``b/q*`` stays finite as both vanish).  Reported
        beside the zero-bias answer to show the discontinuity at ``sigma_b2 = 0``.  None where
        phi'(0) = 0 on both sides.
        """
        psi = local_activation(self.act)
        if psi is None:
            return None
        v = float(expectation(psi, "phi2", 1.0))
        w = float(self.sigma_w2)
        return Dense(psi, w, 1.0 - w / self.rho * v, self.rho)

    def c_map(self, q, c, E: Expectations | None = None):
        """Correlation map ``c' = q12' / q'`` for two inputs of variance ``q`` (Poole et al. 2016, eq. 5).

        Elementwise over broadcast ``q``, ``c`` (and the layer's variances).  Where ``q`` is
        infinite, or zero with zero bias, the map is that of :meth:`limit` (NaN with a warning
        where phi grows faster than linearly); where both variances vanish (``sigma_w2 = sigma_b2
        = 0``) every input maps to 0 and ``c' = 1``.
        """
        E = self.provider(E)
        shape, (q, c, sw, sb) = _flat(q, c, self.sigma_w2, self.sigma_b2)
        out = np.empty(q.size)
        den = np.full(q.size, np.nan)
        fin = np.isfinite(q)
        if fin.any():
            den[fin] = sw[fin] / self.rho * E("phi2", q[fin]) + sb[fin]
        reg = fin & (den > 0) & ~((q <= Q_TINY) & (sb == 0))
        if reg.any():
            num = sw[reg] * E("cov", q[reg], q[reg], c=c[reg]) + sb[reg]
            out[reg] = num / den[reg]
        for i in np.flatnonzero(~reg):
            lim = self._limit_at(sw[i], sb[i], q[i])
            if lim is None:  # every pre-activation is 0
                out[i] = 1.0
            elif lim is _NAN:
                out[i] = np.nan
            else:
                out[i] = float(lim.c_map(1.0, c[i]))
        return out.reshape(shape)

    def chi_1(self, q, E: Expectations | None = None):
        """``chi_1 = sigma_w2 E[phi'(u)^2]`` at ``q`` (Poole et al. 2016, eq. 7).

        At ``q = inf`` its limit ``sigma_w2 (phi'(+inf)^2 + phi'(-inf)^2) / 2``, or inf if phi grows
        faster than linearly.
        """
        E = self.provider(E)
        shape, (q, sw) = _flat(q, self.sigma_w2)
        out = np.empty(q.size)
        inf = np.isinf(q)
        if inf.any():
            s = self.act.slopes
            out[inf] = np.inf if s is None else sw[inf] * (s[0] ** 2 + s[1] ** 2) / 2
        if (~inf).any():
            out[~inf] = sw[~inf] * E("dphi2", q[~inf])
        return out.reshape(shape)

    def variance_growth(self):
        """Per-layer factor of a diverging variance, ``lim q'/q = sigma_w2/rho (s+^2 + s-^2) / 2``.

        ``s+``, ``s-`` are the slopes of phi at +inf and -inf (``E[phi(sqrt(q) z)^2] ~ q (s+^2 + s-^2)/2``
        for large q, the variance map of :func:`asymptotic_activation`).  None if phi grows faster
        than linearly.
        """
        s = self.act.slopes
        return None if s is None else self.sigma_w2 / self.rho * (s[0] ** 2 + s[1] ** 2) / 2

    def backward(self, q, E: Expectations | None = None):
        """Per-layer factor of the mean squared gradient at ``q``, ``chi_1 / rho`` (Schoenholz et al. 2017)."""
        return self.gradient_factor(self.chi_1(q, E))

    def pseudo_linear(self, q):
        """Where the layer at variance ``q`` is pseudo-linear (a bool array).

        That is ``q = 0``, zero bias, phi(0) = 0 and phi smooth at 0 (its local form is linear), so
        the correlation map is ``c -> rho c``.

        A network there acts as a linear map on signals whose variance decays like ``chi_1^l``.
        """
        shape, (q, sb) = _flat(q, self.sigma_b2)
        out = np.zeros(q.size, dtype=bool)
        cand = (q == 0) & (sb == 0)
        if cand.any() and float(self.act.phi(np.zeros(1))[0]) == 0.0:
            psi = local_activation(self.act)
            out[cand] = is_linear(psi)
        return out.reshape(shape)

    def chi_c(self, q, c, E: Expectations | None = None):
        """Slope of the correlation map at ``c``, ``sigma_w2 E[phi'(u1) phi'(u2)]`` (at a fixed point of q).

        Schoenholz et al. 2017, eq. 8.  At the limits, the slope of the limiting map.
        """
        E = self.provider(E)
        shape, (q, c, sw, sb) = _flat(q, c, self.sigma_w2, self.sigma_b2)
        out = np.empty(q.size)
        reg = np.isfinite(q) & (q > 0) & ~((q <= Q_TINY) & (sb == 0))
        if reg.any():
            out[reg] = sw[reg] * E("dcov", q[reg], q[reg], c=c[reg])
        for i in np.flatnonzero(~reg):
            lim = self._limit_at(sw[i], sb[i], q[i])
            if lim is None:
                out[i] = sw[i] * float(E("dphi2", 0.0)) if q[i] == 0 else np.nan
            elif lim is _NAN:
                out[i] = np.nan
            else:
                out[i] = float(lim.chi_c(1.0, c[i]))
        return out.reshape(shape)

    # ---- the four questions every layer type answers (see rule() below) ----
    def forward(self, q, c):
        """``(q', c')``: the variance map and the correlation map (Poole et al. 2016, eqs. 3, 5)."""
        return float(self.q_map(q)), float(self.c_map(q, c))

    def gradient(self, q, c=None):
        """``chi_1 / rho`` at ``q`` (Schoenholz et al. 2017, eq. 16)."""
        return float(self.backward(q))

    def argument(self, q, c):
        """What enters phi is the layer's input itself: ``(q, c)``."""
        return float(q), float(c)

    def gradient_share(self, q, c, s):
        """``(factor, s')`` for a batch gradient whose covariance has off-diagonal share ``s``.

        ``s`` is the sum of the off-diagonal entries of the per-unit batch covariance of the
        gradient over its trace (0 for i.i.d. output gradients, -1 in the hyperplane orthogonal to
        the ones vector).  Going back, the diagonal scales by ``chi_1/rho`` and the off-diagonal by
        ``chi_c(q, c) = sigma_w2 E[phi'(u1) phi'(u2)]`` (masks are independent across inputs), so
        ``s' = s rho chi_c / chi_1``.  Only batch norm's factor depends on ``s``.
        """
        factor = self.gradient(q)
        if s == 0.0:
            return factor, 0.0
        chi1 = float(self.chi_1(q))
        return factor, (s * self.rho * float(self.chi_c(q, c)) / chi1 if chi1 > 0 else 0.0)

    def nonlinearity(self, q, c=None):
        """Nonlinear power fraction of phi at variance ``q`` (see :func:`_nonlinear_fraction`)."""
        return _nonlinear_fraction(self.act, q)

    def _limit_at(self, sw, sb, q):
        """The limit layer of one point (or a stand-in with the same methods).

        None where every pre-activation is 0; ``_NAN`` (warned) if there is no limit; the point's
        own layer where a tiny positive q has no limit (phi'(0) = 0).
        """
        if sw == 0.0 and sb == 0.0:
            return None
        one = Dense(self.act, float(sw), float(sb), self.rho)
        try:
            lim = one.limit(q)
        except NoLimitError as err:
            if 0.0 < q <= Q_TINY:
                return _Direct(one, q)
            warnings.warn(str(err), RuntimeWarning, stacklevel=4)
            return _NAN
        return lim if lim is not None else _Direct(one, q)


class _Direct:
    """A point whose maps are evaluated directly at its own ``q`` (no limit applies)."""

    def __init__(self, layer, q):
        self.layer, self.q = layer, q

    def c_map(self, _q, c):
        E = self.layer.provider()
        den = self.layer.q_map(self.q, E)
        return self.layer.covariance(E("cov", self.q, self.q, c=c)) / den if den > 0 else 1.0

    def chi_c(self, _q, c):
        return self.layer.chi_c_from(self.layer.provider()("dcov", self.q, self.q, c=c))


class NoLimitError(ValueError):
    """No limiting correlation map exists (phi grows faster than linearly, or phi'(0) = 0)."""


_NAN = object()


def _flat(*arrays):
    arrs = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in arrays))
    return arrs[0].shape, [np.array(a, dtype=float).ravel() for a in arrs]


# ---- the other layer types (meanfield.architecture), for signals and gradients layer by layer ----
#
# Every layer type answers five questions about a batch whose vectors have per-unit variance q
# and pairwise correlation c (the vector the layer reads: h, or x for residual blocks):
#   forward(q, c)     -> (q', c') of the vector it writes,
#   gradient(q, c)    -> the factor of E||dE/d(input)||^2 / E||dE/d(output)||^2 (equal widths),
#   gradient_share(q, c, s) -> that factor and the new off-diagonal share s of the gradient's batch
#                        covariance, for a gradient with share s (only batch norm's factor depends on s),
#   argument(q, c)    -> (variance, correlation) of what enters phi,
#   nonlinearity(q, c) -> the fraction of phi's output power no linear map of its argument explains.
# The other layer types reuse Dense where their rule is Dense's at another variance.

def _nonlinear_fraction(act: Activation, q):
    """``1 - E[phi'(u)]^2 q / E[phi(u)^2]``, ``u ~ N(0, q)``: phi's output power not explained linearly.

    By Stein's lemma ``E[u phi(u)] = q E[phi'(u)]``, so this is ``1 - E[u phi]^2 / (E[u^2] E[phi^2])``,
    the power left after the best linear fit ``phi(u) ~ a u`` (Philipp et al. 2018, Sec. 6,
    pseudo-linearity).  At ``q = 0`` the limit: 0 if phi(0) = 0 and phi is smooth there (the layer is
    pseudo-linear), 1 if phi(0) != 0 (the output is a constant); at ``q = inf`` that of the
    asymptotic form.
    """
    q = float(q)
    if not np.isfinite(q) or q == 0.0:
        psi = asymptotic_activation(act) if np.isinf(q) else None
        if q == 0.0:
            if float(act.phi(np.zeros(1))[0]) != 0.0:
                return 1.0
            psi = local_activation(act)
        if psi is None:
            return float("nan")
        act, q = psi, 1.0
    v = float(expectation(act, "phi2", q))
    if v == 0.0:
        return float("nan")
    d = float(expectation(act, "dphi", q))
    return float(min(1.0, max(0.0, 1.0 - d * d * q / v)))




@dataclass(frozen=True)
class LayerNorm:
    """Layer norm before phi: ``h' = W phi(LN(h)) + b`` (Ba et al. 2016; Philipp et al. 2018, Sec. 4).

    ``LN(h) = (h - mean_units h) / sd_units h`` per input.  At large width the mean over units
    vanishes and the spread is ``sqrt(q)``, so LN(h) has unit variance whatever q is, and the
    layer is :class:`Dense` at unit variance:

    * forward  ``q' = sigma_w2 E[phi(z)^2] + sigma_b2``, ``c' = (sigma_w2 E[phi(z1) phi(z2)] + sigma_b2) / q'``
      with unit-variance ``z1, z2`` of correlation c: q is at its fixed point after one layer;
    * backward ``dE/dh = (1/sqrt(q)) P D W^T dE/dh'`` (P removes two directions of N), so the
      factor is ``sigma_w2 E[phi'(z)^2] / q``; at the fixed point with ``sigma_b2 = 0`` it is
      ``E[phi'(z)^2] / E[phi(z)^2]`` whatever sigma_w2 (Philipp et al. 2018: layer-norm tanh
      explodes).
    """

    act: Activation
    sigma_w2: float
    sigma_b2: float

    def _unit(self) -> Dense:
        return Dense(self.act, self.sigma_w2, self.sigma_b2)

    def forward(self, q, c):
        """``(q', c')``: Dense's maps at unit input variance."""
        return self._unit().forward(1.0, c)

    def gradient(self, q, c=None):
        """``sigma_w2 E[phi'(z)^2] / q``."""
        if not q > 0:
            raise ValueError("layer norm needs inputs of positive variance (q > 0)")
        return float(self._unit().backward(1.0)) / float(q)

    def argument(self, q, c):
        """LN(h): unit variance, the input's correlation."""
        return 1.0, float(c)

    def gradient_share(self, q, c, s):
        """``(factor, s')`` as :meth:`Dense.gradient_share` at unit variance."""
        factor = self.gradient(q)
        if s == 0.0:
            return factor, 0.0
        return factor, self._unit().gradient_share(1.0, c, s)[1]

    def nonlinearity(self, q, c=None):
        """Nonlinear power fraction of phi at unit variance."""
        return _nonlinear_fraction(self.act, 1.0)


@dataclass(frozen=True)
class BatchNorm:
    """Batch norm before phi: ``h' = W phi(BN(h)) + b`` (Yang et al. 2019, ICLR).

    Yang et al. 2019, "A mean field theory of batch normalization".

    ``BN(h) = sqrt(B) G h / ||G h||`` per unit over the batch (``G = I - 11^T/B``).  For a batch
    whose covariance is permutation symmetric (``q[(1 - c) I + c 11^T]``, ``c < 1``: i.i.d. or
    equicorrelated inputs), ``y = BN(h)`` is uniform on the sphere of radius ``sqrt(B)`` in the
    hyperplane orthogonal to the ones vector, whatever q and c are
    (:mod:`meanfield.batchnorm`):

    * forward: the fixed point ``(q*, c*)`` after one layer
      (:func:`meanfield.batchnorm.batch_norm_fixed_point`);
    * backward: ``dE/dh = (sqrt(B)/||Gh||) P_y D W^T dE/dh'`` with ``||Gh||^2 ~ q (1 - c) chi^2_{B-1}``:
      the factor is ``lambda_G (sigma_w2 m) / (q (1 - c))``, ``m = E[phi(y1)^2] - E[phi(y1) phi(y2)]``,
      which is ``lambda_G`` at the fixed point (``q* (1 - c*) = sigma_w2 m``).  sigma_w2 and
      sigma_b2 cancel there; ``lambda_G >= 1``: batch norm makes gradients explode.
    """

    act: Activation
    batch_size: int
    sigma_w2: float
    sigma_b2: float

    def __post_init__(self):
        if self.batch_size <= 3:
            raise ValueError(f"the batch-norm gradient theory needs batch_size > 3, got {self.batch_size}: "
                             "E[1/chi^2_(B-1)] diverges, so the expected squared gradient is infinite for B <= 3")

    def _sphere(self):
        from .batchnorm import sphere_expectations
        return sphere_expectations(self.act, self.batch_size)

    def forward(self, q, c):
        """The fixed point ``(q*, c*)``, reached after one layer."""
        _check_batch(c, self.batch_size)
        from .batchnorm import batch_norm_fixed_point

        qs, cs = batch_norm_fixed_point(self.act, self.batch_size, self.sigma_w2, self.sigma_b2)
        return float(qs), float(cs)

    def gradient(self, q, c):
        """The factor for a gradient in the hyperplane orthogonal to 1: ``lambda_G sigma_w2 m / (q (1 - c))``.

        ``lambda_G`` at the fixed point (``q (1 - c) = sigma_w2 m``, ``m = E[phi(y1)^2] - E[phi(y1) phi(y2)]``).
        """
        return self.gradient_share(q, c, -1.0)[0]

    def gradient_share(self, q, c, s):
        """``(factor, -1)`` for a gradient whose batch covariance has off-diagonal share ``s``.

        ``B sigma_w2 (A + C s) / (q (1 - c) (B - 3))`` with ``(A, C)`` of
        :func:`meanfield.batchnorm.backward_coefficients`; the result lies in the hyperplane
        (``s' = -1``), where the factor is ``lambda_G`` at the fixed point.  The last layer of a
        network whose output gradient is i.i.d. over the batch (``s = 0``) grows it by ``A`` alone.
        """
        _check_batch(c, self.batch_size)
        from .batchnorm import backward_coefficients

        A, C = (float(v) for v in backward_coefficients(self.act, self.batch_size))
        B = self.batch_size
        return B * self.sigma_w2 * (A + C * s) / (float(q) * (1.0 - float(c)) * (B - 3)), -1.0

    def argument(self, q, c):
        """``y = BN(h)``: ``E[y^2] = 1`` and correlation ``-1/(B-1)`` between batch elements."""
        return 1.0, -1.0 / (self.batch_size - 1)

    def nonlinearity(self, q, c=None):
        """``1 - E[y phi(y)]^2 / E[phi(y)^2]`` over the sphere marginal (``E[y^2] = 1``)."""
        s = self._sphere()
        return float(min(1.0, max(0.0, 1.0 - float(s.yphi) ** 2 / float(s.phi2)))) if s.phi2 > 0 else float("nan")


def _check_batch(c, B=None):
    if not float(c) < 1.0:
        raise ValueError("batch norm needs distinct batch elements (correlation c < 1): identical inputs "
                         "have zero spread over the batch and batch norm divides by it")
    if B is not None and float(c) < -1.0 / (B - 1) - 1e-12:
        raise ValueError(f"a batch of {B} inputs cannot have every pairwise correlation equal to {float(c):g}: "
                         f"the smallest possible is -1/(B-1) = {-1.0 / (B - 1):.6g}")


@dataclass(frozen=True)
class Residual:
    """Residual block ``x' = x + V phi(W x + b) + a`` (Yang & Schoenholz 2017, Sec. 3).

    With ``p`` the variance of x: ``q = sigma_w2 p + sigma_b2`` enters phi, and

    * forward  ``p' = p + sigma_v2 E[phi(u)^2] + sigma_a2``, ``p12' = p12 + sigma_v2 E[phi(u1) phi(u2)] + sigma_a2``;
    * backward ``1 + sigma_v2 sigma_w2 E[phi'(u)^2]`` (the skip adds the identity);
    * dilution (Philipp et al. 2018, Sec. 5): with ``k^2 = p / (sigma_v2 E[phi^2] + sigma_a2)`` the
      ratio of skip to branch power and ``r`` the branch's own gradient scale coefficient, the
      block's is ``GSC^2 = (k^2 + r^2) / (k^2 + 1)``.
    """

    act: Activation
    sigma_w2: float
    sigma_b2: float
    sigma_v2: float
    sigma_a2: float

    def _branch(self) -> Dense:
        return Dense(self.act, self.sigma_w2, self.sigma_b2)

    def argument(self, p, c):
        """``(q, c_q)`` with ``q = sigma_w2 p + sigma_b2``, ``q12 = sigma_w2 p c + sigma_b2``."""
        q = self.sigma_w2 * float(p) + self.sigma_b2
        return q, ((self.sigma_w2 * float(p) * float(c) + self.sigma_b2) / q if q > 0 else 1.0)

    def branch_power(self, p, E: Expectations | None = None):
        """``sigma_v2 E[phi(u)^2] + sigma_a2``, the variance the branch adds."""
        q, _ = self.argument(p, 1.0)
        with np.errstate(over="ignore"):
            return self.sigma_v2 * float(self._branch().provider(E)("phi2", q)) + self.sigma_a2

    def forward(self, p, c):
        """``(p', c')``."""
        q, cq = self.argument(p, c)
        v = self.branch_power(p)
        cov = self.sigma_v2 * float(self._branch().provider()("cov", q, q, c=cq)) + self.sigma_a2
        p_out = float(p) + v
        return p_out, (float(p) * float(c) + cov) / p_out if p_out > 0 else 1.0

    def gradient(self, p, c=None, E: Expectations | None = None):
        """``1 + sigma_v2 sigma_w2 E[phi'(u)^2]`` (its ``q = inf`` limit where p is infinite)."""
        q = self.sigma_w2 * float(p) + self.sigma_b2
        return 1.0 + self.sigma_v2 * float(self._branch().chi_1(q, E))

    def gradient_share(self, p, c, s):
        """``(factor, s')``: the skip keeps the gradient, the branch adds ``sigma_v2`` times Dense's part."""
        factor = self.gradient(p)
        if s == 0.0:
            return factor, 0.0
        q, cq = self.argument(p, c)
        off = 1.0 + self.sigma_v2 * float(self._branch().chi_c(q, cq))
        return factor, s * off / factor

    def nonlinearity(self, p, c=None):
        """Nonlinear power fraction of phi at ``q = sigma_w2 p + sigma_b2``."""
        return _nonlinear_fraction(self.act, self.argument(p, 1.0)[0])

    def dilution(self, p):
        """``(k^2, r^2)``: skip-to-branch power ratio and the branch's squared GSC (Philipp et al. 2018)."""
        v = self.branch_power(p)
        q, _ = self.argument(p, 1.0)
        r2 = self.sigma_v2 * float(self._branch().chi_1(q)) * float(p) / v if v > 0 else float("nan")
        return (float(p) / v if v > 0 else float("inf")), r2


def rule(layer) -> Dense | LayerNorm | BatchNorm | Residual:
    """The layer rule of an architecture layer (:class:`meanfield.architecture.Layer`)."""
    kind = layer.kind
    if kind == "dense":
        return Dense(layer.act, layer.sigma_w2, layer.sigma_b2, layer.rho)
    if kind == "layer_norm":
        return LayerNorm(layer.act, layer.sigma_w2, layer.sigma_b2)
    if kind == "batch_norm":
        return BatchNorm(layer.act, layer.batch_size, layer.sigma_w2, layer.sigma_b2)
    if kind == "residual":
        return Residual(layer.act, layer.sigma_w2, layer.sigma_b2, layer.sigma_v2, layer.sigma_a2)
    raise ValueError(f"unknown layer kind {kind!r}")  # pragma: no cover  (Layer validates its kind)
