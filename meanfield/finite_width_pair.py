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

    S = np.zeros((depth, 3, 3))
    D = np.zeros((depth, 3))
    err = np.zeros(depth)
    for l in range(depth - 1):
        k = K[l]
        if min(k[0], k[2]) <= Q_TINY or abs(k[1]) >= np.sqrt(k[0] * k[2]):
            S[l + 1:], D[l + 1:], err[l + 1:] = np.nan, np.nan, np.nan
            break
        J = sw * _jacobian(E, k)
        S[l + 1] = sw * sw * _four_point(act, E, k) / Ns[l] + J @ S[l] @ J.T
        curv, curv_err = _curvature(act, E, k, S[l])
        D[l + 1] = J @ D[l] + 0.5 * sw * curv
        err[l + 1] = abs(J[1, 1]) * err[l] + 0.5 * sw * curv_err

    fan_in = np.concatenate([[Ns[0]], Ns[:-1]]).astype(float)
    V = S * fan_in[:, None, None]
    G1 = D * fan_in[:, None]
    mean_kernel = K + D
    cov_kernel = S + _gaussian_cov(K) / Ns[:, None, None]
    c = K[:, 1] / np.sqrt(K[:, 0] * K[:, 2])
    mean_c, std_c = _correlation(K, D, cov_kernel)
    return FiniteWidthPair(act=act, sigma_w2=sw, sigma_b2=sb, widths=Ns, K=K, V=V, G1=G1, G1_error=err * fan_in,
                           mean_kernel=mean_kernel, cov_kernel=cov_kernel,
                           std_kernel=np.sqrt(np.diagonal(cov_kernel, axis1=1, axis2=2)),
                           c=c, mean_c=mean_c, std_c=std_c)


def _means(E, g):
    """``M(g) = (<phi_1^2>, <phi_1 phi_2>, <phi_2^2>)`` for rows ``g = (G_11, G_12, G_22)``."""
    g = np.asarray(g, dtype=float)
    c = g[:, 1] / np.sqrt(g[:, 0] * g[:, 2])
    return np.stack([E("phi2", g[:, 0]), E("cov", g[:, 0], g[:, 2], c=c), E("phi2", g[:, 2])], axis=1)


def _span(k, v):
    """Largest ``t`` with ``k + s v`` a covariance (positive definite) for every ``|s| <= t``."""
    a, b, d = v
    # det(k + s v) = (k0 + s a)(k2 + s d) - (k1 + s b)^2 = A s^2 + B s + C, C > 0
    A, B, C = a * d - b * b, k[0] * d + k[2] * a - 2 * k[1] * b, k[0] * k[2] - k[1] ** 2
    roots = [r.real for r in np.roots([A, B, C]) if abs(r.imag) <= 1e-12 * abs(r)] if (A or B) else []
    limits = [abs(r) for r in roots]
    for kk, vv in ((k[0], a), (k[2], d)):
        if vv != 0:
            limits.append(kk / abs(vv))
    return min(limits) if limits else np.inf


def _second_difference(E, k, v, h):
    """``d^2 M / dt^2 (k + t v)`` at ``t = 0`` and an error bound: Richardson over steps h, h/2, h/4.

    The extrapolated values at (h, h/2) and (h/2, h/4) are both fourth order; the finer is
    returned and their difference bounds its error.
    """
    ts = np.array([h, h / 2, h / 4])
    pts = np.concatenate([[k], k + ts[:, None] * v, k - ts[:, None] * v])
    m = _means(E, pts)
    d = [(m[1 + i] - 2 * m[0] + m[4 + i]) / t ** 2 for i, t in enumerate(ts)]
    coarse, fine = (4 * d[1] - d[0]) / 3, (4 * d[2] - d[1]) / 3
    return fine, np.abs(fine - coarse)


def _step(k, v):
    return min(_STEP * max(k[0], k[2]) / np.linalg.norm(v), 0.5 * _span(k, v))


def _jacobian(E, k):
    """``dM/dg`` at ``k``: exact diagonal slopes and Price's ``<phi'_1 phi'_2>``, differences for the rest."""
    J = np.zeros((3, 3))
    c = k[1] / np.sqrt(k[0] * k[2])
    J[0, 0] = float(E("slope", np.array([k[0]]))[0])
    J[2, 2] = float(E("slope", np.array([k[2]]))[0])
    J[1, 1] = float(E("dcov", np.array([k[0]]), np.array([k[2]]), c=np.array([c]))[0])
    for col in (0, 2):  # d<phi_1 phi_2>/dG_11 and /dG_22 at fixed G_12: fourth-order central differences
        v = np.zeros(3)
        v[col] = 1.0
        h = _step(k, v)
        m = _means(E, np.array([k + t * v for t in (-h, -h / 2, h / 2, h)]))[:, 1]
        J[1, col] = (8 * (m[2] - m[1]) - (m[3] - m[0])) / (6 * h)
    return J


def _curvature(act, E, k, S):
    """``sum_pq d^2 M / dg_p dg_q S_pq`` (exact for the diagonal entries) and the error bound of its middle entry."""
    out = np.zeros(3)
    out[0] = 0.25 * float(phi2_fourth_derivative(act, np.array([k[0]]))[0]) * S[0, 0]
    out[2] = 0.25 * float(phi2_fourth_derivative(act, np.array([k[2]]))[0]) * S[2, 2]
    lam, vecs = np.linalg.eigh(S)
    err = 0.0
    scale = max(abs(lam).max(), 0.0)
    for lam_i, v in zip(lam, vecs.T):
        if abs(lam_i) <= 1e-14 * scale or scale == 0.0:
            continue
        d2, e2 = _second_difference(E, k, v, _step(k, v))
        out[1] += lam_i * d2[1]
        err += abs(lam_i) * e2[1]
    return out, err


def _four_point(act: Activation, E, k):
    """``Sigma_f = Cov[f]``, ``f = (phi_1^2, phi_1 phi_2, phi_2^2)``, under ``N(0, k)``."""
    phi = act.phi
    c = k[1] / np.sqrt(k[0] * k[2])
    rate, tol = 4 * act.exp_rate, quadrature.RTOL
    m = _means(E, k[None, :])[0]
    p4 = phi4_expectation(act, np.array([k[0], k[2]]))

    def mixed(a, b):
        return float(quadrature.expect_2d(lambda u1, u2: phi(u1) ** a * phi(u2) ** b, k[0], k[2], corr=c,
                                          kinks1=act.kinks, kinks2=act.kinks, exp_rate=rate, rtol=tol))

    m31, m22, m13 = mixed(3, 1), mixed(2, 2), mixed(1, 3)
    out = np.empty((3, 3))
    out[0, 0] = p4[0] - m[0] ** 2
    out[0, 1] = out[1, 0] = m31 - m[0] * m[1]
    out[0, 2] = out[2, 0] = m22 - m[0] * m[2]
    out[1, 1] = m22 - m[1] ** 2
    out[1, 2] = out[2, 1] = m13 - m[1] * m[2]
    out[2, 2] = p4[1] - m[2] ** 2
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
