"""Finite-width corrections for two inputs: the 1/n theory of one NNGP kernel entry.

The infinite-width network's kernel entry ``K^l_12`` (the NNGP, :func:`meanfield.nngp`) is the
mean-field covariance of two inputs' pre-activations.  At width ``n`` a network's *empirical*
kernel ``K^l_ab = (1/N_l) sum_i h^l_i(x_a) h^l_i(x_b)`` fluctuates around it by ``O(1/sqrt(n))``
and its mean moves by ``O(1/n)``.  This module carries the single-input recursions of
:mod:`meanfield.finite_width` (Roberts, Yaida & Hanin 2021, "The Principles of Deep Learning
Theory" (PDLT), §4.3 (the four-point vertex with several inputs) and §4.5 (the subleading
kernel correction G^{1}_{a1 a2})) to a pair of inputs, by the same expansion of the conditional
mean and covariance of the next layer's kernel to first order in 1/n.

Conventions are those of :mod:`meanfield.finite_width` (our layer ``l`` is the book's ``l + 1``,
``C_W = sigma_w2``, ``C_b = sigma_b2``).  Write a layer's random covariance of the pair as the
vector ``g = (G_11, G_12, G_22)``: given layer ``l``, the units of layer ``l + 1`` are i.i.d.
``N(0, G^{l+1})`` with ``G^{l+1} = sigma_b2 + sigma_w2 / N_l sum_j f(h^l_j)``,
``f(h) = (phi(h_1)^2, phi(h_1) phi(h_2), phi(h_2)^2)``.  With ``M(g) = <f>_g`` (the q-map and the
covariance map without their affine parts), ``J = sigma_w2 dM/dg`` and
``Sigma_f(g) = Cov_g[f]`` (four-point expectations ``<phi_1^a phi_2^b>``, ``a + b = 4``), the
expansion of ``E[G^{l+1} | G^l]`` to first order in ``1/n`` gives, in absolute form
(``S^l = Cov[G^l] = V^l / N_{l-1}``, ``D^l = E[G^l] - K^l = G1^l / N_{l-1}``):

* ``K^{l+1} = sigma_b2 + sigma_w2 M(K^l)``                        (the NNGP recursion)
* ``S^{l+1} = sigma_w2^2 Sigma_f(K^l) / N_l + J S^l J^T``            (PDLT §4.3)
* ``D^{l+1} = J D^l + (sigma_w2 / 2) sum_{pq} d^2 M / dg_p dg_q S^l_pq``  (PDLT §4.5)

from ``S^0 = D^0 = 0``.  The diagonal entries decouple and are exactly :func:`finite_width`'s
recursions for each input alone (they use the same exact expectations).  The entries of ``J``
that are Gaussian expectations are exact (``d<phi_1^2>/dG_11 = <phi'^2 + phi phi''>``,
``d<phi_1 phi_2>/dG_12 = <phi'_1 phi'_2>``, Price's theorem); the rest of ``J`` and the off-diagonal
output's second derivatives contracted with ``S`` are central differences of the accurate
covariance map, extrapolated (Richardson), with an error estimate kept in ``G1_error``.

What a sampled network of widths ``N_0..N_{L-1}`` shows (over networks, to first order):
``E[K^l_emp] = K^l + D^l`` and ``Cov[K^l_emp] = S^l + Sigma_h(K^l) / N_l`` with the Gaussian
``Sigma_h`` (``Cov(h_a h_b, h_c h_d) = K_ac K_bd + K_ad K_bc``), and for the correlation
``c = K_12 / sqrt(K_11 K_22)`` the delta method's mean and spread.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _validate, quadrature
from .activations import Activation, activation
from .finite_width import phi2_fourth_derivative, phi4_expectation
from .layers import Q_TINY, Dense

__all__ = ["FiniteWidthPair", "finite_width_pair"]

#: Largest finite-difference step, relative to the larger variance of the pair.
_STEP = 1e-2


@dataclass(frozen=True)
class FiniteWidthPair:
    """The 1/n theory of a pair of inputs' kernel, layer by layer (see the module docstring).

    Entries are ordered ``(11, 12, 22)``; arrays have one row per layer ``l = 0..L-1``.

    Attributes
    ----------
    act : Activation
    sigma_w2, sigma_b2 : float
    widths : (L,) int array, ``N_0..N_{L-1}``
    K : (L, 3) leading-order kernel entries (the NNGP of the pair)
    V : (L, 3, 3) four-point vertex normalised by the fan-in: ``Cov[G^l] = V^l / N_{l-1}``
    G1 : (L, 3) 1/n correction of the mean: ``E[G^l] = K^l + G1^l / N_{l-1}``
    G1_error : (L,) estimated absolute error of ``G1[:, 1]`` from the finite differences
    mean_kernel : (L, 3) predicted mean over networks of the empirical kernel, ``K + G1 / N_{l-1}``
    cov_kernel : (L, 3, 3) its covariance over networks, ``V / N_{l-1} + Sigma_h(K) / N_l``
    std_kernel : (L, 3) ``sqrt`` of ``cov_kernel``'s diagonal
    c : (L,) leading-order correlation ``K_12 / sqrt(K_11 K_22)``
    mean_c, std_c : (L,) mean and spread over networks of the empirical correlation (delta method)

    Where a variance collapses (``<= Q_TINY``) or the pair becomes identical (``|c| = 1`` in
    float64, where the covariance map has no two-sided differences) the 1/n terms are NaN from
    there on.

    Cost: about 45 bivariate expectations per layer (all layers in one batch): 20 layers take
    about 0.5 s for relu and 1 s for erf (closed-form covariance maps) and 9 s for tanh
    (quadrature), measured on a 2-core machine running other work.
    """

    act: Activation
    sigma_w2: float
    sigma_b2: float
    widths: np.ndarray
    K: np.ndarray
    V: np.ndarray
    G1: np.ndarray
    G1_error: np.ndarray
    mean_kernel: np.ndarray
    cov_kernel: np.ndarray
    std_kernel: np.ndarray
    c: np.ndarray
    mean_c: np.ndarray
    std_c: np.ndarray

    @property
    def depth(self) -> int:
        """Number of layers ``L``."""
        return int(self.widths.size)


def finite_width_pair(act, depth: int, width: int | None = None, sigma_w2: float = 1.0, sigma_b2: float = 0.0,
                      q1: float = 1.0, q2: float = 1.0, q12: float = 0.5, *, widths=None) -> FiniteWidthPair:
    """Kernel, four-point vertex and 1/n mean correction of a pair of inputs through a finite network.

    ``K^{l+1} = sigma_b2 + sigma_w2 M(K^l)``, ``V`` and ``G1`` by the recursions of the module
    docstring (Roberts, Yaida & Hanin 2021, §4.3 and §4.5, for two inputs), from
    ``K^0 = (q1, q12, q2)``, ``V^0 = G1^0 = 0``.  Then ``E[K^l_emp] = K^l + G1^l / N_{l-1}``.

    Parameters
    ----------
    act : Activation or str
        A continuous activation (phi' enters the exact slopes).
    depth : int
        Number of layers ``L``, numbered ``0..L-1``.
    width : int, optional
        Every layer's width (give this or ``widths``).
    sigma_w2, sigma_b2 : float
        Weight variance (> 0) and bias variance (>= 0).
    q1, q2, q12 : float
        The first layer's variances (``sigma_w2 |x_a|^2 / d_in + sigma_b2``, > 0) and covariance
        (``sigma_w2 x_1.x_2 / d_in + sigma_b2``), with ``|q12| < sqrt(q1 q2)``: two different
        inputs (for one input use :func:`meanfield.finite_width`).
    widths : sequence of int, optional
        ``N_0..N_{L-1}``.

    Returns
    -------
    FiniteWidthPair
    """
    act = activation(act)
    depth = _validate.positive_int("depth", depth)
    Ns = _validate.layer_widths(depth, width, widths)
    sw = _validate.number("sigma_w2", sigma_w2, low=0.0, low_open=True, what="a positive number")
    sb = _validate.number("sigma_b2", sigma_b2, low=0.0, what="a non-negative number")
    q1 = _validate.number("q1", q1, low=0.0, low_open=True, what="a positive number")
    q2 = _validate.number("q2", q2, low=0.0, low_open=True, what="a positive number")
    q12 = _validate.number("q12", q12)
    if not abs(q12) < np.sqrt(q1 * q2):
        raise ValueError(f"q12 must satisfy |q12| < sqrt(q1 q2) = {np.sqrt(q1 * q2):.6g} (two different inputs), "
                         f"got {q12!r}; for one input use finite_width")
    if not act.continuous:
        raise ValueError(f"{act.name!r} jumps: the finite-width pair theory needs a continuous activation")
    layer = Dense(act, sw, sb)
    E = layer.provider()

    K = np.empty((depth, 3))
    K[0] = (q1, q12, q2)
    for l in range(1, depth):
        K[l] = sb + sw * _means(E, K[l - 1][None, :])[0]
        if not np.all(np.isfinite(K[l])):
            raise ValueError(f"the kernel leaves float64 range at layer {l} (sigma_w2={sw}): "
                             "no finite-width theory there")

    # every expectation the recursions need depends on K alone: all layers at once, then the algebra
    src = K[:-1]
    live = (np.minimum(src[:, 0], src[:, 2]) > Q_TINY) & (np.abs(src[:, 1]) < np.sqrt(src[:, 0] * src[:, 2]))
    n_live = int(np.argmin(live)) if not live.all() else live.size  # the 1/n terms stop at the first dead layer
    S = np.zeros((depth, 3, 3))
    D = np.zeros((depth, 3))
    err = np.zeros(depth)
    if n_live:
        k = src[:n_live]
        J = sw * _jacobians(E, k)
        Sf = _four_point(act, E, k)
        H, H_err = _hessians(E, k)
        d4 = np.stack([phi2_fourth_derivative(act, k[:, 0]), phi2_fourth_derivative(act, k[:, 2])], axis=1)
        for l in range(n_live):
            S[l + 1] = sw * sw * Sf[l] / Ns[l] + J[l] @ S[l] @ J[l].T
            curv = np.array([0.25 * d4[l, 0] * S[l, 0, 0], np.sum(H[l] * S[l]), 0.25 * d4[l, 1] * S[l, 2, 2]])
            D[l + 1] = J[l] @ D[l] + 0.5 * sw * curv
            err[l + 1] = abs(J[l, 1, 1]) * err[l] + 0.5 * sw * np.sum(H_err[l] * np.abs(S[l]))
    S[n_live + 1:], D[n_live + 1:], err[n_live + 1:] = np.nan, np.nan, np.nan

    fan_in = np.concatenate([[Ns[0]], Ns[:-1]]).astype(float)
    V = S * fan_in[:, None, None]
    G1 = D * fan_in[:, None]
    mean_kernel = K + D
    cov_kernel = S + _gaussian_cov(K) / Ns[:, None, None]
    c = np.clip(K[:, 1] / np.sqrt(K[:, 0] * K[:, 2]), -1.0, 1.0)
    mean_c, std_c = _correlation(K, D, cov_kernel)
    return FiniteWidthPair(act=act, sigma_w2=sw, sigma_b2=sb, widths=Ns, K=K, V=V, G1=G1, G1_error=err * fan_in,
                           mean_kernel=mean_kernel, cov_kernel=cov_kernel,
                           std_kernel=np.sqrt(np.diagonal(cov_kernel, axis1=1, axis2=2)),
                           c=c, mean_c=mean_c, std_c=std_c)


def _means(E, g):
    """``M(g) = (<phi_1^2>, <phi_1 phi_2>, <phi_2^2>)`` for rows ``g = (G_11, G_12, G_22)``."""
    g = np.asarray(g, dtype=float)
    c = np.clip(g[:, 1] / np.sqrt(g[:, 0] * g[:, 2]), -1.0, 1.0)  # rounding may put |c| a hair above 1
    return np.stack([E("phi2", g[:, 0]), E("cov", g[:, 0], g[:, 2], c=c), E("phi2", g[:, 2])], axis=1)


def _span(k, v):
    """Largest ``t`` with ``k + s v`` a covariance (positive definite) for every ``|s| <= t``, per row."""
    a, b, d = v
    A = a * d - b * b
    B = k[:, 0] * d + k[:, 2] * a - 2 * k[:, 1] * b
    C = k[:, 0] * k[:, 2] - k[:, 1] ** 2  # > 0: det(k + s v) = A s^2 + B s + C
    out = np.full(k.shape[0], np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        if A != 0:
            disc = B * B - 4 * A * C
            real = disc >= 0
            r = np.sqrt(np.where(real, disc, 0.0))
            smallest = np.minimum(np.abs((-B + r) / (2 * A)), np.abs((-B - r) / (2 * A)))
            out = np.where(real, np.minimum(out, smallest), out)
        else:
            out = np.where(B != 0, np.minimum(out, np.abs(C / np.where(B != 0, B, 1.0))), out)
    for col, vv in ((0, a), (2, d)):
        if vv != 0:
            out = np.minimum(out, k[:, col] / abs(vv))
    return out


def _steps(k, v):
    """Difference steps along direction ``v`` for every row of ``k``: small, and inside the covariances."""
    return np.minimum(_STEP * np.maximum(k[:, 0], k[:, 2]) / np.linalg.norm(v), 0.5 * _span(k, v))


def _jacobians(E, k):
    """``dM/dg`` per row of ``k``: exact diagonal slopes and Price's ``<phi'_1 phi'_2>``, differences for the rest.

    ``d<phi_1 phi_2>/dG_11`` and ``/dG_22`` (at fixed ``G_12``) are fourth-order central differences.
    """
    n = k.shape[0]
    J = np.zeros((n, 3, 3))
    c = np.clip(k[:, 1] / np.sqrt(k[:, 0] * k[:, 2]), -1.0, 1.0)
    J[:, 0, 0] = E("slope", k[:, 0])
    J[:, 2, 2] = E("slope", k[:, 2])
    J[:, 1, 1] = E("dcov", k[:, 0], k[:, 2], c=c)
    cols = (0, 2)
    pts, hs = [], []
    for col in cols:
        v = np.zeros(3)
        v[col] = 1.0
        h = _steps(k, v)
        hs.append(h)
        pts.extend(k + t[:, None] * v for t in (-h, -h / 2, h / 2, h))
    m = _means(E, np.concatenate(pts))[:, 1].reshape(len(cols), 4, n)
    for i, col in enumerate(cols):
        J[:, 1, col] = (8 * (m[i, 2] - m[i, 1]) - (m[i, 3] - m[i, 0])) / (6 * hs[i])
    return J


#: Directions whose second differences give the Hessian of <phi_1 phi_2>: e_i, then e_i + e_j.
_DIRECTIONS = (np.eye(3)[0], np.eye(3)[1], np.eye(3)[2],
               np.array([1.0, 1.0, 0.0]), np.array([1.0, 0.0, 1.0]), np.array([0.0, 1.0, 1.0]))


def _hessians(E, k):
    """Hessian of ``<phi_1 phi_2>`` in ``g`` per row of ``k`` and an entrywise error bound.

    Second differences along each direction v at steps h, h/2, h/4, extrapolated (Richardson) at
    (h, h/2) and (h/2, h/4): the finer value is used and their difference bounds its error.
    ``v^T H v`` along ``e_i + e_j`` gives the mixed entries.
    """
    n = k.shape[0]
    pts, hs = [k], []
    for v in _DIRECTIONS:
        h = _steps(k, v)
        hs.append(h)
        for t in (h, h / 2, h / 4):
            pts.append(k + t[:, None] * v)
            pts.append(k - t[:, None] * v)
    m = _means(E, np.concatenate(pts))[:, 1]
    m0, rest = m[:n], m[n:].reshape(len(_DIRECTIONS), 3, 2, n)
    quad, quad_err = np.empty((len(_DIRECTIONS), n)), np.empty((len(_DIRECTIONS), n))
    for i, h in enumerate(hs):
        d = [(rest[i, j, 0] - 2 * m0 + rest[i, j, 1]) / (h / 2 ** j) ** 2 for j in range(3)]
        coarse, fine = (4 * d[1] - d[0]) / 3, (4 * d[2] - d[1]) / 3
        quad[i], quad_err[i] = fine, np.abs(fine - coarse)
    H = np.empty((n, 3, 3))
    H_err = np.empty((n, 3, 3))
    for i in range(3):
        H[:, i, i], H_err[:, i, i] = quad[i], quad_err[i]
    for idx, (i, j) in enumerate(((0, 1), (0, 2), (1, 2)), start=3):
        H[:, i, j] = H[:, j, i] = 0.5 * (quad[idx] - quad[i] - quad[j])
        H_err[:, i, j] = H_err[:, j, i] = 0.5 * (quad_err[idx] + quad_err[i] + quad_err[j])
    return H, H_err


def _four_point(act: Activation, E, k):
    """``Sigma_f = Cov[f]``, ``f = (phi_1^2, phi_1 phi_2, phi_2^2)``, under ``N(0, k)``, per row of ``k``."""
    phi = act.phi
    c = np.clip(k[:, 1] / np.sqrt(k[:, 0] * k[:, 2]), -1.0, 1.0)
    rate, tol = 4 * act.exp_rate, quadrature.RTOL
    m = _means(E, k)
    p4_1, p4_2 = phi4_expectation(act, k[:, 0]), phi4_expectation(act, k[:, 2])

    def mixed(a, b):
        return np.asarray(quadrature.expect_2d(lambda u1, u2: phi(u1) ** a * phi(u2) ** b, k[:, 0], k[:, 2], corr=c,
                                               kinks1=act.kinks, kinks2=act.kinks, exp_rate=rate, rtol=tol),
                          dtype=float).reshape(-1)

    m31, m22, m13 = mixed(3, 1), mixed(2, 2), mixed(1, 3)
    out = np.empty((k.shape[0], 3, 3))
    out[:, 0, 0] = p4_1 - m[:, 0] ** 2
    out[:, 0, 1] = out[:, 1, 0] = m31 - m[:, 0] * m[:, 1]
    out[:, 0, 2] = out[:, 2, 0] = m22 - m[:, 0] * m[:, 2]
    out[:, 1, 1] = m22 - m[:, 1] ** 2
    out[:, 1, 2] = out[:, 2, 1] = m13 - m[:, 1] * m[:, 2]
    out[:, 2, 2] = p4_2 - m[:, 2] ** 2
    return out


def _gaussian_cov(K):
    """``Cov(h_a h_b, h_c h_d) = K_ac K_bd + K_ad K_bc`` for Gaussian h, per layer, entries (11, 12, 22)."""
    a, b, d = K[:, 0], K[:, 1], K[:, 2]
    out = np.empty((K.shape[0], 3, 3))
    out[:, 0, 0] = 2 * a * a
    out[:, 0, 1] = out[:, 1, 0] = 2 * a * b
    out[:, 0, 2] = out[:, 2, 0] = 2 * b * b
    out[:, 1, 1] = a * d + b * b
    out[:, 1, 2] = out[:, 2, 1] = 2 * b * d
    out[:, 2, 2] = 2 * d * d
    return out


def _correlation(K, D, C):
    """Mean and spread of ``x_2 / sqrt(x_1 x_3)`` for ``x`` with mean ``K + D`` and covariance ``C`` (delta method)."""
    a, b, d = K[:, 0], K[:, 1], K[:, 2]
    r = np.sqrt(a * d)
    c = b / r
    g = np.stack([-c / (2 * a), 1 / r, -c / (2 * d)], axis=1)
    H = np.zeros((K.shape[0], 3, 3))
    H[:, 0, 0] = 3 * c / (4 * a * a)
    H[:, 2, 2] = 3 * c / (4 * d * d)
    H[:, 0, 2] = H[:, 2, 0] = c / (4 * a * d)
    H[:, 0, 1] = H[:, 1, 0] = -1 / (2 * a * r)
    H[:, 1, 2] = H[:, 2, 1] = -1 / (2 * d * r)
    mean = c + np.einsum("li,li->l", g, D) + 0.5 * np.einsum("lij,lij->l", H, C)
    var = np.einsum("li,lij,lj->l", g, C, g)
    return mean, np.sqrt(var)
