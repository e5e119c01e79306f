"""Finite-width corrections for one input: the 1/n theory of the layer variance.

Everything else in the package is the infinite-width limit, in which the variance of a layer's
pre-activations is the deterministic kernel ``K^l`` (the q-map).  At width ``n`` it fluctuates
from network to network by ``O(1/sqrt(n))`` and its mean moves by ``O(1/n)``; both grow with
depth.  This module computes the leading corrections layer by layer (Roberts, Yaida & Hanin
2021, "The Principles of Deep Learning Theory" (PDLT), ch. 4, §4.3 (the
four-point vertex) and §4.5 (the subleading correction G^{1}), ch. 5, §§5.2-5.4 (universality
classes and their fluctuations); Yaida 2019; Hanin 2018 for the relu products).

Conventions (as in :mod:`meanfield.empirical`)
-----------------------------------------------
Layers ``l = 0..L-1`` are pre-activations, ``h^0 = W^0 x + b^0`` with
``q0 = sigma_w2 |x|^2 / d_in + sigma_b2``, ``h^l = W^l phi(h^{l-1}) + b^l``,
``W^l_ij ~ N(0, sigma_w2 / N_{l-1})``, ``b^l_i ~ N(0, sigma_b2)``, widths ``N_0..N_{L-1}``.
Our layer ``l`` is the book's layer ``l + 1``, our ``N_{l-1}`` its ``n_l``; ``C_W = sigma_w2``,
``C_b = sigma_b2``, ``K = q``, ``<f>_K`` the expectation over ``u ~ N(0, K)``.

Given layer ``l - 1``, the units of layer ``l`` are i.i.d. ``N(0, G^l)`` with the random
*layer variance* ``G^l = sigma_b2 + sigma_w2 / N_{l-1} sum_j phi(h^{l-1}_j)^2`` (``G^0 = q0``).
Its moments define the book's quantities (PDLT §4.3, single input):

* ``E[G^l] = K^l + G1^l / N_{l-1}``  (``G1`` is the book's ``G^{{1}}``)
* ``Var[G^l] = V^l / N_{l-1}``       (``V`` the four-point vertex; ``E[h^4] - 3 E[h^2]^2 = 3 V / N``)

and they follow from ``E[G^{l+1} | G^l] = f(G^l)``, ``f(K) = sigma_b2 + sigma_w2 <phi^2>_K`` (the
q-map), by expanding to first order in ``1/N``:

* ``K^{l+1} = f(K^l)``
* ``V^{l+1} = sigma_w2^2 (<phi^4> - <phi^2>^2)_{K^l} + (N_l / N_{l-1}) chi_par^2 V^l``  (§4.3)
* ``G1^{l+1} = (N_l / N_{l-1}) [chi_par G1^l + sigma_w2 / 8 <(phi^2)''''>_{K^l} V^l]``   (§4.5)

with ``V^0 = G1^0 = 0``, ``chi_par = f'(K) = sigma_w2 <phi'^2 + phi phi''>_K`` (the slope of the
q-map, :meth:`meanfield.layers.Dense.q_slope`; PDLT §5.1) and, by Gaussian integration by
parts, ``<g''''>_K = <g(u) (u^4 - 6 K u^2 + 3 K^2)>_K / K^4`` (``f'' = sigma_w2 <(phi^2)''''> / 4``).
The width ratio ``N_l / N_{l-1}`` appears because each vertex is normalised by its own fan-in.

Scale-invariant activations (``a relu(x) - b relu(-x)``) without bias are exact: ``G^{l+1} =
G^l X_l`` with independent ``X_l``, so ``E[h^4] / (3 E[h^2]^2) = prod_{k<l} (1 + v / N_k)``,
``v = 6 (a^4 + b^4) / (a^2 + b^2)^2 - 1`` (relu 5, linear 2; Hanin 2018), and the 1/n
recursion gives ``V^l / K^2 = v l`` (the book's ``v (l - 1)``, PDLT §5.4).  Then the derived
predictions below are computed from those exact products instead of their first order.

What is here: :func:`finite_width` (a :class:`FiniteWidth`: K, V, G1 and the predicted mean and
spread over networks of a layer's empirical second moment, and a unit's kurtosis),
:func:`jacobian_norm` (a :class:`JacobianNorm`: mean and spread of Hanin's ``||J^l u||^2``), and
the two new one-dimensional expectations they need, :func:`phi4_expectation` and
:func:`phi2_fourth_derivative` (adaptive quadrature, :func:`meanfield.quadrature.expect_1d`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _validate, quadrature
from .activations import Activation, activation
from .expectations import expectation
from .layers import Q_TINY, Dense, asymptotic_activation

__all__ = ["FiniteWidth", "finite_width", "JacobianNorm", "jacobian_norm", "phi4_expectation",
           "phi2_fourth_derivative"]

#: Below this variance the fourth derivative of <phi^2> is integrated one q at a time in scaled
#: form (q^4 would underflow).
_Q_SPLIT = 1e-60


@dataclass(frozen=True)
class FiniteWidth:
    """The 1/n theory of one input's layer variance, layer by layer (see the module docstring).

    All arrays have one entry per layer ``l = 0..L-1``.

    Attributes
    ----------
    act : Activation
    sigma_w2, sigma_b2, q0 : float
    widths : (L,) int array, ``N_0..N_{L-1}``
    K : leading-order kernel (the q-map from ``q0``)
    V : four-point vertex, normalised by the fan-in: ``Var[G^l] = V^l / N_{l-1}`` (``V^0 = 0``)
    G1 : 1/n correction of the mean: ``E[G^l] = K^l + G1^l / N_{l-1}`` (``G1^0 = 0``)
    chi_par : slope of the q-map at ``K^l`` (``sigma_w2 <phi'^2 + phi phi''>``)
    exact : True for a bias-free scale-invariant activation, where the predictions below are the
        exact finite-width values, not their first order in 1/n
    var_G : variance over networks of the layer variance ``G^l``: ``V^l / N_{l-1}``
    mean_q : predicted mean over networks of the layer's empirical second moment
        ``q^l = (1/N_l) sum_i (h^l_i)^2``: ``E[q^l] = E[G^l] = K^l + G1^l / N_{l-1}``
    var_q : its variance over networks, ``V^l / N_{l-1} + 2 (K^l)^2 / N_l`` (the layer
        variance's fluctuation plus the sampling of ``N_l`` units)
    std_q : ``sqrt(var_q)``
    moment_ratio : ``E[h^4] / (3 E[h^2]^2) = E[G^2] / E[G]^2 = 1 + V^l / (N_{l-1} (K^l)^2)`` for
        one unit ``h`` of layer ``l`` (over networks)
    kurtosis_excess : ``E[h^4] / E[h^2]^2 - 3 = 3 (moment_ratio - 1)``
    rho : dropout keep probability (1: none)

    Where the variance collapses (``K^l <= Q_TINY = 1e-100``, bias-free ordered phase) the 1/n
    terms are not computed: ``G1``, ``mean_q`` and what depends on them are NaN from the layer after
    (not in the exact case, whose predictions do not depend on the scale).
    """

    act: Activation
    sigma_w2: float
    sigma_b2: float
    q0: float
    widths: np.ndarray
    K: np.ndarray
    V: np.ndarray
    G1: np.ndarray
    chi_par: np.ndarray
    exact: bool
    var_G: np.ndarray
    mean_q: np.ndarray
    var_q: np.ndarray
    std_q: np.ndarray
    moment_ratio: np.ndarray
    kurtosis_excess: np.ndarray
    rho: float = 1.0

    @property
    def depth(self) -> int:
        """Number of layers ``L``."""
        return int(self.widths.size)

    @property
    def relative_std_q(self) -> np.ndarray:
        """Network-to-network spread of ``q^l`` relative to its mean, ``std_q / mean_q``."""
        return self.std_q / self.mean_q


def phi4_expectation(act, q, rtol: float | None = None) -> np.ndarray:
    """``<phi^4>_q = E[phi(u)^4]``, ``u ~ N(0, q)``, elementwise (adaptive quadrature).

    Needed for the four-point vertex ``V`` (PDLT §4.3).  ``q = 0`` gives ``phi(0)^4``.
    """
    act = activation(act)
    q = _validate.nonnegative("q", q, allow_empty=True)
    tol = quadrature.RTOL if rtol is None else rtol
    phi = act.phi
    return quadrature.expect_1d(lambda u: phi(u) ** 4, 0.0, q, act.kinks, 4 * act.exp_rate, tol,
                                jumps=not act.continuous)


def phi2_fourth_derivative(act, q, rtol: float | None = None) -> np.ndarray:
    """``<(phi^2)''''>_q = <phi(u)^2 (u^4 - 6 q u^2 + 3 q^2)>_q / q^4``, ``u ~ N(0, q)``, elementwise.

    Gaussian integration by parts (Stein's lemma four times); it equals ``4 d^2/dq^2 <phi^2>_q``
    and needs no derivative of phi, so kinks are fine (relu gives 0).  It enters the 1/n
    correction of the mean (PDLT §4.5).  Computed as ``(<phi^2 u^4> - 6 q <phi^2 u^2> + 3 q^2
    <phi^2>) / q^4``, three batched quadratures over all ``q`` at once; ``q`` must exceed
    :data:`meanfield.layers.Q_TINY`.  The
    terms cancel where phi is nearly linear (small q): the absolute error is about
    ``rtol <phi^2> / q^2``, which the recursion multiplies by ``V / N ~ q^2 / N``.
    """
    act = activation(act)
    q = _validate.nonnegative("q", q, allow_empty=True)
    if np.any(q <= Q_TINY):
        raise ValueError(f"q must be > {Q_TINY:g} for the fourth derivative of <phi^2> (it divides by q^4)")
    tol = quadrature.RTOL if rtol is None else rtol
    phi, kinks, rate = act.phi, act.kinks, 2 * act.exp_rate + 0.1
    out = np.empty(q.shape)
    big = q > _Q_SPLIT
    if big.any():
        qb = q[big]
        m4 = quadrature.expect_1d(lambda u: phi(u) ** 2 * u ** 4, 0.0, qb, kinks, rate, tol)
        m2 = quadrature.expect_1d(lambda u: phi(u) ** 2 * u ** 2, 0.0, qb, kinks, rate, tol)
        m0 = np.asarray(expectation(act, "phi2", qb, rtol=rtol), dtype=float)
        out[big] = (m4 - 6.0 * qb * m2 + 3.0 * qb * qb * m0) / qb ** 4
    for idx in zip(*np.nonzero(~big)):  # q^4 would underflow: the Hermite weight in u / sqrt(q), one q at a time
        qi = float(q[idx])
        s = np.sqrt(qi)

        def F(u, s=s, qi=qi):
            x2 = (u / s) ** 2
            return phi(u) ** 2 / qi * (((x2 - 6.0) * x2 + 3.0) / qi)

        out[idx] = quadrature.expect_1d(F, 0.0, qi, kinks, rate, tol)[()]
    return out


def finite_width(act, depth: int, width: int | None = None, sigma_w2: float = 1.0, sigma_b2: float = 0.0,
                 q0: float = 1.0, *, widths=None, rho: float = 1.0) -> FiniteWidth:
    """Kernel, four-point vertex and 1/n mean correction of one input through a finite network.

    ``K^{l+1} = sigma_b2 + sigma_w2 <phi^2>_{K^l}``,
    ``V^{l+1} = sigma_w2^2 (<phi^4> - <phi^2>^2)_{K^l} + (N_l/N_{l-1}) chi_par^2 V^l``,
    ``G1^{l+1} = (N_l/N_{l-1}) [chi_par G1^l + sigma_w2/8 <(phi^2)''''>_{K^l} V^l]`` from
    ``K^0 = q0``, ``V^0 = G1^0 = 0`` (Roberts, Yaida & Hanin 2021, §4.3 and §4.5, with
    ``C_W = sigma_w2``, ``C_b = sigma_b2``, their layer ``l + 1`` our layer ``l``); then
    ``E[q^l] = K^l + G1^l/N_{l-1}``, ``Var[q^l] = V^l/N_{l-1} + 2 (K^l)^2/N_l`` and
    ``E[h^4]/(3 E[h^2]^2) = 1 + V^l/(N_{l-1} (K^l)^2)``, exact products for bias-free
    scale-invariant phi (Hanin 2018).  See the module docstring.

    With dropout (keep probability ``rho``, masks ``m_j ~ Bernoulli(rho)`` scaled by ``1/rho`` on
    ``phi(h^{l-1})``, one draw per unit and network, as in :mod:`meanfield.empirical`) a unit adds
    ``m_j phi_j^2 / rho^2`` to the layer variance: its mean is ``<phi^2>/rho`` (the q-map's
    ``sigma_w2/rho``) and its variance ``<phi^4>/rho^3 - <phi^2>^2/rho^2``, so
    ``V^{l+1} = sigma_w2^2 (<phi^4>/rho^3 - <phi^2>^2/rho^2) + (N_l/N_{l-1}) chi_par^2 V^l`` with
    ``chi_par = sigma_w2/rho <phi'^2 + phi phi''>`` and ``sigma_w2/(8 rho)`` in ``G1``; for the
    exact scale-invariant products ``v = <phi^4>/(rho <phi^2>^2) - 1``.

    Parameters
    ----------
    act : Activation or str
    depth : int
        Number of layers ``L`` (weight matrices), numbered ``0..L-1``.
    width : int, optional
        Every layer's width (give this or ``widths``).
    sigma_w2, sigma_b2 : float
        Weight variance (> 0) and bias variance (>= 0).
    q0 : float
        Variance of the first pre-activation, ``sigma_w2 |x|^2 / d_in + sigma_b2`` (> 0).
    widths : sequence of int, optional
        ``N_0..N_{L-1}``, one per layer.
    rho : float
        Dropout keep probability in (0, 1] (default 1: no dropout).

    Returns
    -------
    FiniteWidth
    """
    act = activation(act)
    depth = _validate.positive_int("depth", depth)
    Ns = _validate.layer_widths(depth, width, widths)
    sw = _validate.number("sigma_w2", sigma_w2, low=0.0, low_open=True, what="a positive number")
    sb = _validate.number("sigma_b2", sigma_b2, low=0.0, what="a non-negative number")
    q0 = _validate.number("q0", q0, low=0.0, low_open=True, what="a positive number")
    rho = _validate.number("rho", rho, low=0.0, low_open=True, high=1.0, what="a keep probability in (0, 1]")
    layer = Dense(act, sw, sb, rho)

    K = np.empty(depth)
    K[0] = q0
    for l in range(1, depth):
        K[l] = float(layer.q_map(K[l - 1]))
        if not np.isfinite(K[l]):
            raise ValueError(f"the variance leaves float64 range at layer {l} (q0={q0}, sigma_w2={sw}): "
                             "no finite-width theory there")
    src = K[:-1]  # the K^l that feed layer l + 1
    chi = np.asarray(layer.q_slope(K), dtype=float).reshape(depth)
    p2 = np.asarray(layer.provider()("phi2", src), dtype=float).reshape(src.shape)
    p4 = phi4_expectation(act, src)
    exact = sb == 0.0 and _scale_invariant(act)
    d4 = np.zeros(src.shape)  # scale invariant: <phi^2> is linear in K, its fourth derivative 0
    if not exact:
        d4[:] = np.nan  # a collapsed variance (K <= Q_TINY): no 1/n theory computed there
        live = src > Q_TINY
        if live.any():
            d4[live] = phi2_fourth_derivative(act, src[live])

    # absolute form: S^l = Var[G^l] = V^l / N_{l-1}, D^l = E[G^l] - K^l = G1^l / N_{l-1}
    S = np.zeros(depth)
    D = np.zeros(depth)
    for l in range(depth - 1):
        S[l + 1] = sw * sw * (p4[l] / rho ** 3 - p2[l] ** 2 / rho ** 2) / Ns[l] + chi[l] ** 2 * S[l]
        D[l + 1] = chi[l] * D[l] + sw / (8.0 * rho) * d4[l] * S[l]
    fan_in = np.concatenate([[Ns[0]], Ns[:-1]]).astype(float)  # N_{l-1}; layer 0 has V = G1 = 0
    V, G1 = S * fan_in, D * fan_in

    if exact:  # G^{l+1} = G^l X_l: E[G] = K, E[G^2] / K^2 = prod (1 + v / N_k)
        v = p4[0] / (rho * p2[0] ** 2) - 1.0 if depth > 1 else 0.0
        ratio = np.concatenate([[1.0], np.cumprod(1.0 + v / Ns[:-1])])
        mean_q = K.copy()
        var_G = K ** 2 * (ratio - 1.0)
        var_q = K ** 2 * (ratio * (1.0 + 2.0 / Ns) - 1.0)
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = 1.0 + S / K ** 2
        mean_q = K + D
        var_G = S
        var_q = S + 2.0 * K ** 2 / Ns
    return FiniteWidth(act=act, sigma_w2=sw, sigma_b2=sb, q0=q0, widths=Ns, K=K, V=V, G1=G1, chi_par=chi,
                       exact=bool(exact), var_G=var_G, mean_q=mean_q, var_q=var_q, std_q=np.sqrt(var_q),
                       moment_ratio=ratio, kurtosis_excess=3.0 * (ratio - 1.0), rho=rho)


@dataclass(frozen=True)
class JacobianNorm:
    """Hanin's quantity ``||J^l u||^2`` over random networks, ``J^l = dh^l/dx``, layer by layer.

    All arrays have one entry per layer ``l = 0..L-1`` (see :func:`jacobian_norm`).

    Attributes
    ----------
    act : Activation
    sigma_w2, sigma_b2, q0, u_var : float
    widths : (L,) int array
    K : leading-order kernel of the input
    H : leading-order variance of one unit of ``J^l u``, ``u_var prod_k chi_1(K^k)``
    mean : ``E||J^l u||^2`` to order 1/n, ``N_l (H + dH)``
    var : its variance over networks, ``N_l^2 Var[H^l] + 2 N_l H^2``
    std : ``sqrt(var)``
    moment_ratio : ``E||J^l u||^4 / (E||J^l u||^2)^2 = 1 + var / mean^2``
    exact : True for a scale-invariant activation (any bias): the values are exact, not first order
    """

    act: Activation
    sigma_w2: float
    sigma_b2: float
    q0: float
    u_var: float
    widths: np.ndarray
    K: np.ndarray
    H: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    std: np.ndarray
    moment_ratio: np.ndarray
    exact: bool


def jacobian_norm(act, depth: int, width: int | None = None, sigma_w2: float = 1.0, sigma_b2: float = 0.0,
                  q0: float = 1.0, u_var: float = 1.0, *, widths=None) -> JacobianNorm:
    """Mean and spread over networks of ``||J^l u||^2`` for a direction ``u`` orthogonal to the input.

    ``v^l = J^l u`` follows ``v^0 = W^0 u``, ``v^l = W^l (phi'(h^{l-1}) v^{l-1})``.  Given layer
    ``l - 1``, the pairs ``(h^l_i, v^l_i)`` are i.i.d. Gaussian with the random covariance
    ``G = sigma_b2 + sigma_w2 <phi^2>_emp``, ``C = sigma_w2 <phi phi' v>_emp``,
    ``H = sigma_w2 <phi'^2 v^2>_emp`` (empirical averages over the ``N_{l-1}`` units).  With
    ``u`` orthogonal to ``x`` (``C^0 = 0``; ``u_var = sigma_w2 |u|^2 / d_in`` is the variance of
    ``W^0 u``), ``E[C] = 0`` at every layer and, to first order in 1/n (the method of
    Roberts, Yaida & Hanin 2021, §4.3-4.5, applied to the triple (G, C, H); Hanin 2018):

    * ``H^{l+1} = chi_1 H^l`` (``chi_1 = sigma_w2 B``, ``B(K) = <phi'^2>_K``)
    * ``Var C' = sigma_w2^2 H <phi^2 phi'^2> / N + chi_par^2 Var C``
    * ``Cov(G, H)' = sigma_w2^2 H (<phi^2 phi'^2> - <phi^2> B) / N + chi_par (b Var G + chi_1 Cov(G, H))``
    * ``Var H' = sigma_w2^2 H^2 (3 <phi'^4> - B^2) / N + b^2 Var G + 2 b chi_1 Cov(G, H) + chi_1^2 Var H``
    * ``dH' = b dG + chi_1 dH + sigma_w2 (H B'' Var G / 2 + B' Cov(G, H) + 2 B' Var C)``

    with ``b = sigma_w2 H B'(K)``, ``Var G`` and ``dG = E[G] - K`` from :func:`finite_width`, the
    derivatives ``B' = <phi'^2 (u^2 - K)> / (2 K^2)`` and ``B'' = <phi'^2 (u^4 - 6 K u^2 + 3 K^2)>
    / (4 K^4)`` by Gaussian integration by parts, all at ``K^l``; ``N = N_l`` feeds layer ``l + 1``.
    Then ``E||J^l u||^2 = N_l (H + dH)`` and ``Var = N_l^2 Var H + 2 N_l H^2``.

    For a scale-invariant phi (``a relu(x) - b relu(-x)``, any bias, any ``u``) the factor a layer
    applies to ``H`` is independent of the past, so ``E||J^l u||^4 / (E||J^l u||^2)^2 =
    prod_{k<l} (1 + v/N_k) (1 + 2/N_l)`` exactly, ``v = 6 (a^4 + b^4)/(a^2 + b^2)^2 - 1``: for relu
    Hanin's ``prod (1 + 5/n_j)`` with the last factor ``(1 + 2/n_L)``.

    Parameters
    ----------
    act, depth, width, sigma_w2, sigma_b2, q0, widths
        As in :func:`finite_width` (phi must be continuous: phi' enters).
    u_var : float
        ``sigma_w2 |u|^2 / d_in`` (> 0), the variance of each unit of ``J^0 u = W^0 u``.

    Returns
    -------
    JacobianNorm
    """
    u_var = _validate.number("u_var", u_var, low=0.0, low_open=True, what="a positive number")
    fw = finite_width(act, depth, width, sigma_w2, sigma_b2, q0, widths=widths)
    act, Ns, sw, K = fw.act, fw.widths, fw.sigma_w2, fw.K
    act.derivative(1)  # a clear error for a discontinuous phi
    chi_1 = np.asarray(Dense(act, sw, fw.sigma_b2).chi_1(K), dtype=float).reshape(depth)
    H = u_var * np.concatenate([[1.0], np.cumprod(chi_1[:-1])])
    exact = _scale_invariant(act)
    if exact:
        B = float(expectation(act, "dphi2", 1.0))
        B4 = float(_dphi_moments(act, np.array([1.0]), 4)[0])
        v = 3.0 * B4 / B ** 2 - 1.0  # <phi'^4 v^4> / <phi'^2 v^2>^2 - 1 at C = 0 (and for any C here)
        ratio = np.concatenate([[1.0], np.cumprod(1.0 + v / Ns[:-1])]) * (1.0 + 2.0 / Ns)
        mean = Ns * H
        var = mean ** 2 * (ratio - 1.0)
        return JacobianNorm(act=act, sigma_w2=sw, sigma_b2=fw.sigma_b2, q0=fw.q0, u_var=u_var, widths=Ns, K=K, H=H,
                            mean=mean, var=var, std=np.sqrt(var), moment_ratio=ratio, exact=True)

    src = K[:-1]
    fan_in = np.concatenate([[Ns[0]], Ns[:-1]]).astype(float)
    SGG, DG = fw.V / fan_in, fw.G1 / fan_in
    p2 = np.asarray(expectation(act, "phi2", src), dtype=float).reshape(src.shape)
    Bk = chi_1[:-1] / sw
    phi, dphi, kinks, rate = act.phi, act.dphi, act.kinks, 2 * act.exp_rate + 0.1
    p2d2 = quadrature.expect_1d(lambda u: (phi(u) * dphi(u)) ** 2, 0.0, src, kinks, rate)
    d4 = _dphi_moments(act, src, 4)
    B1s, B2s = np.full(src.shape, np.nan), np.full(src.shape, np.nan)  # K B'(K), K^2 B''(K)
    live = src > Q_TINY
    if live.any():
        q = src[live]
        m2 = quadrature.expect_1d(lambda u: dphi(u) ** 2 * u ** 2, 0.0, q, kinks, rate) / q
        m4 = quadrature.expect_1d(lambda u: dphi(u) ** 2 * u ** 4, 0.0, q, kinks, rate) / q ** 2
        B1s[live] = (m2 - Bk[live]) / 2.0
        B2s[live] = (m4 - 6.0 * m2 + 3.0 * Bk[live]) / 4.0
    SCC, SGH, SHH, DH = (np.zeros(depth) for _ in range(4))
    with np.errstate(invalid="ignore", divide="ignore"):
        for l in range(depth - 1):
            n, c1, cp, k, h = Ns[l], chi_1[l], fw.chi_par[l], K[l], H[l]
            b = sw * h * B1s[l] / k
            SCC[l + 1] = sw * sw * h * p2d2[l] / n + cp * cp * SCC[l]
            SGH[l + 1] = sw * sw * h * (p2d2[l] - p2[l] * Bk[l]) / n + cp * (b * SGG[l] + c1 * SGH[l])
            SHH[l + 1] = (sw * sw * h * h * (3.0 * d4[l] - Bk[l] ** 2) / n + b * b * SGG[l]
                          + 2.0 * b * c1 * SGH[l] + c1 * c1 * SHH[l])
            DH[l + 1] = (b * DG[l] + c1 * DH[l] + sw * (0.5 * h * B2s[l] * SGG[l] / k ** 2
                                                        + B1s[l] * SGH[l] / k + 2.0 * B1s[l] * SCC[l] / k))
    mean = Ns * (H + DH)
    var = Ns.astype(float) ** 2 * SHH + 2.0 * Ns * H ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = 1.0 + var / mean ** 2
    return JacobianNorm(act=act, sigma_w2=sw, sigma_b2=fw.sigma_b2, q0=fw.q0, u_var=u_var, widths=Ns, K=K, H=H,
                        mean=mean, var=var, std=np.sqrt(var), moment_ratio=ratio, exact=False)


def _dphi_moments(act: Activation, q, power: int) -> np.ndarray:
    """``<phi'(u)^power>_q`` (adaptive quadrature)."""
    dphi = act.dphi
    return quadrature.expect_1d(lambda u: dphi(u) ** power, 0.0, np.asarray(q, dtype=float), act.kinks,
                                power * act.exp_rate)


def _scale_invariant(act: Activation) -> bool:
    """Whether phi is exactly ``a relu(x) - b relu(-x)`` (checked on a grid of points)."""
    if tuple(act.kinks) not in ((), (0.0,)):
        return False
    psi = asymptotic_activation(act)
    if psi is None:
        return False
    xs = np.concatenate([-np.logspace(-3, 3, 25), [0.0], np.logspace(-3, 3, 25)])
    a, b = act.phi(xs), psi.phi(xs)
    return bool(np.allclose(a, b, rtol=1e-14, atol=1e-300))
