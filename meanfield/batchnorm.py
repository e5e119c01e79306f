r"""Batch normalisation in mean field: the symmetric fixed point and the gradient explosion rate.

A batch-normalised layer maps the pre-activations of one unit over a batch of ``B`` inputs,
``h`` in R^B, as ``h' = W phi(BN(h)) + b`` with

    BN(h) = sqrt(B) G h / ||G h||,        G = I - 1 1^T / B

(per unit over the batch, gamma = 1, beta = 0, the 1/B variance convention, so that
``||BN(h)||^2 = B``).  At the permutation-symmetric ("BSB1") batch covariance
``q [(1 - c) I + c 1 1^T]``, ``c < 1``, the centred vector ``G h`` is isotropic Gaussian in the
(B - 1)-dimensional hyperplane orthogonal to the ones vector, so ``y = BN(h)`` is uniform on the
sphere of radius ``sqrt(B)`` in that hyperplane and independent of ``||G h||``; the weight and bias
variances cancel (Yang, Pennington, Rao, Sohl-Dickstein & Schoenholz 2019, "A mean field theory of
batch normalization", ICLR; the BSB1 fixed point and gradient backpropagation).

Marginals of that sphere law (everything here is an expectation under it):

* ``y1 = sqrt(B - 1) t`` with density of ``t`` proportional to ``(1 - t^2)^((B - 4)/2)`` on [-1, 1]
  (``E[y1] = 0``, ``E[y1^2] = 1``);
* given ``y1``: ``y2 = -y1/(B - 1) + R(y1) t'``, ``R(y1)^2 = (B - B y1^2/(B - 1)) (B - 2)/(B - 1)``,
  ``t'`` with density proportional to ``(1 - t'^2)^((B - 5)/2)``.  The pair is elliptical with
  correlation ``rho = -1/(B - 1)``.

Forward (:func:`batch_norm_fixed_point`): from any BSB1 input with ``c < 1`` the next layer is at

    q* = sigma_w2 E[phi(y1)^2] + sigma_b2,     c* = (sigma_w2 E[phi(y1) phi(y2)] + sigma_b2) / q*.

Backward (:func:`lambda_G`): the gradient with respect to ``h`` is
``(sqrt(B)/||G h||) P_y D W^T g'`` with ``P_y = G - y y^T / B`` and ``D = diag(phi'(y))``.  With
``G h ~ N(0, sigma_w2 m G)``, ``m = E[phi(y1)^2] - E[phi(y1) phi(y2)]``, so that
``E[B / ||G h||^2] = B / (sigma_w2 m (B - 3))`` (``E[1/chi^2_k] = 1/(k - 2)``), and gradients
independent of the forward weights, the trace of the per-unit gradient covariance grows per layer
(backwards) by ``B E[tr(D G D P_y)] / (m (B - 3) (B - 1))`` from any start in the hyperplane (the map
commutes with permutations).  Expanding the trace with ``d_i = phi'(y_i)``,

    lambda_G = [(B - 1) E[phi'(y1)^2] + E[phi'(y1) phi'(y2)] - E[y1^2 phi'(y1)^2]
                + E[y1 phi'(y1) y2 phi'(y2)]] / [(B - 3) (E[phi(y1)^2] - E[phi(y1) phi(y2)])].

Checks: linear phi gives ``(B - 2)/(B - 3)``; ``B -> inf`` gives ``E[phi'(z)^2] / Var phi(z)``,
``z ~ N(0, 1)`` (ReLU ``pi/(pi - 1)``; >= 1 by the Gaussian Poincare inequality); ``lambda_G >= 1``
at every B for the table's activations (checked, B = 4 to 10^6).  It needs ``B > 3``: for ``B <= 3``
the factor ``E[1/chi^2_{B-1}]`` diverges.  Sampled networks (width 2000, depth 50) grow their
squared gradients by this factor to within 0.1-0.6% (relu, tanh, hard_tanh at B = 6 to 32).

Exact path: for ``phi = a relu(x) + b relu(-x)`` (relu, leaky relu, abs, linear) every needed
expectation is homogeneous of degree 0 or 2, so it equals the Gaussian one at unit variance and
correlation ``rho`` (arc-cosine kernels of Cho & Saul 2009; the elliptical law has the same angular
part as the Gaussian), except ``E[phi(y1)] = (a + b)/2 E|y1|`` with
``E|y1| = sqrt(B - 1) Gamma((B - 1)/2) / (sqrt(pi) Gamma(B/2))``.

Quadrature: 16-node Gauss-Legendre panels cut at standardised 0, +-1.5, +-3, +-5 and at the kinks
of phi.  ``4 <= B < 24``: nested, in the angles ``t = sin(a)``, ``t' = sin(a')`` (densities
``cos^(B-3) a``, ``cos^(B-4) a'``: smooth), inner panels cut at the kinks' moving preimages; where a
line ``y2 = k`` (``k`` a kink) leaves the ellipse the inner integral has a half-integer power
singularity (even ``B``): outer panels ending there use the graded map ``(3x - x^3)/2``, in a
geometric mesh for even ``B <= 10``.  ``B >= 24``: one tensor grid in ``(y1, y2)`` on
``[-10.07, 10.07]^2`` (widened for exponentially growing phi) serves every batch size: phi is
evaluated once, the pair density ``(1 - Q)_+^((B-5)/2)`` per batch size (beyond 1e-22 at the edge,
where it vanishes to high order).  Both rules are bisected until the 1-D expectations agree with the
bisected rule's to 1e-12 (else a :class:`~meanfield.quadrature.QuadratureWarning`).  ``B = 2``
(``y = +-(1, -1)``) and ``B = 3`` (a circle) are done directly.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass

import numpy as np
import sympy as sp
from scipy import special

from . import _validate
from .activations import Activation, activation, x
from .quadrature import QuadratureWarning

__all__ = ["SphereExpectations", "sphere_expectations", "lambda_G", "backward_coefficients", "batch_norm_fixed_point"]

_X, _W = np.polynomial.legendre.leggauss(16)
_X_GRADED, _DX_GRADED = 0.5 * (3.0 * _X - _X**3), 1.5 * (1.0 - _X**2)  # both ends approached quadratically
_CUTS = np.array([-5.0, -3.0, -1.5, 0.0, 1.5, 3.0, 5.0])  # standardised (unit variance)
_REACH = math.sqrt(2.0 * math.log(1e22))  # the tensor grid's half-width: density ratio 1e-22 at B -> inf
_RTOL_CHECK = 1e-12
_MAX_LEVEL = 3
_B_TENSOR = 24  # from this batch size on, one grid in y serves every batch size
_DERIVATIVE_FIELDS = ("dphi2", "dphi12", "y2dphi2", "ydphi12")
_FORWARD_FIELDS = ("phi", "phi2", "phi12", "half_sq_diff", "yphi")


@dataclass(frozen=True, eq=False)
class SphereExpectations:
    """Expectations under the batch-normalised law (see :func:`sphere_expectations`).

    ``y`` is uniform on the sphere of radius ``sqrt(B)`` in the hyperplane orthogonal to the ones
    vector; ``y1, y2`` are two coordinates of ``y`` (correlation ``-1/(B - 1)``, ``E[y1^2] = 1``).  Every
    field is a float, or an array shaped like ``B``.

    Attributes
    ----------
    B : int or numpy.ndarray
        The batch sizes.
    phi, phi2, phi12 : float or numpy.ndarray
        ``E[phi(y1)]``, ``E[phi(y1)^2]``, ``E[phi(y1) phi(y2)]``.
    half_sq_diff : float or numpy.ndarray
        ``E[(phi(y1) - phi(y2))^2] / 2 = phi2 - phi12``, the ``m`` of :func:`lambda_G`; computed
        from centred values (precise when ``E[phi]^2`` is much larger than the spread).
    yphi : float or numpy.ndarray
        ``E[y1 phi(y1)]`` (for the pseudo-linearity ``1 - E[y phi(y)]^2 / (E[y^2] E[phi(y)^2])``).
    dphi2, dphi12 : float or numpy.ndarray
        ``E[phi'(y1)^2]``, ``E[phi'(y1) phi'(y2)]``.
    y2dphi2, ydphi12 : float or numpy.ndarray
        ``E[y1^2 phi'(y1)^2]``, ``E[y1 phi'(y1) y2 phi'(y2)]``.
    """

    B: int | np.ndarray
    phi: float | np.ndarray
    phi2: float | np.ndarray
    phi12: float | np.ndarray
    half_sq_diff: float | np.ndarray
    yphi: float | np.ndarray
    dphi2: float | np.ndarray
    dphi12: float | np.ndarray
    y2dphi2: float | np.ndarray
    ydphi12: float | np.ndarray


def _batch_sizes(B, minimum: int, why: str) -> np.ndarray:
    """``B`` as an int64 array (integral floats accepted), each >= ``minimum``; else ValueError."""
    if isinstance(B, (bool, np.bool_, str, bytes)) or B is None:
        raise ValueError(f"B (batch size) must be an integer or an array of integers, got {B!r}")
    try:
        arr = np.asarray(B)
    except (TypeError, ValueError):
        raise ValueError(f"B (batch size) must be an integer or an array of integers, got {B!r}") from None
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"B (batch size) must be an integer or an array of integers, got {B!r}")
    if arr.size == 0:
        raise ValueError("B (batch size) is empty")
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            raise ValueError(f"B (batch size) must be an integer, got {arr[bad].ravel()[0]!r}")
        if np.any(np.abs(arr) > 2.0**62):
            raise ValueError("B (batch size) is too large")
    arr = arr.astype(np.int64)
    if np.any(arr < minimum):
        raise ValueError(f"B (batch size) must be >= {minimum}: {why}; got {arr[arr < minimum].ravel()[0]}")
    return arr


@functools.lru_cache(maxsize=64)
def _relu_family(act: Activation):
    """(a, b) with phi = a relu(x) + b relu(-x) exactly, or None (the activation is cached by identity)."""
    if act.expr is None or act.slopes is None or any(k != 0.0 for k in act.kinks):
        return None
    probe = np.array([0.37, 1.9, 7.3])
    if not (np.allclose(act.phi(probe), act.slopes[0] * probe, rtol=1e-12, atol=0)
            and np.allclose(act.phi(-probe), -act.slopes[1] * probe, rtol=1e-12, atol=0)):
        return None  # not piecewise linear: skip sympy
    t = sp.Symbol("t", positive=True)
    a, b = sp.nsimplify(act.slopes[0]), -sp.nsimplify(act.slopes[1])
    try:
        if sp.simplify(act.expr.subs(x, t) - a * t) == 0 and sp.simplify(act.expr.subs(x, -t) - b * t) == 0:
            return float(a), float(b)
    except (TypeError, ValueError, AttributeError):  # pragma: no cover - sympy on odd input
        return None
    return None


def _exact(a: float, b: float, B: np.ndarray) -> dict:
    """The fields for phi = a relu(x) + b relu(-x), from the arc-cosine kernels at rho = -1/(B-1)."""
    B = B.astype(float)
    rho = -1.0 / (B - 1.0)
    s = np.sqrt((1.0 - rho) * (1.0 + rho))

    def j1(r):  # E[relu(u1) relu(u2)], unit variances, correlation r
        return (s + (0.5 * np.pi + np.arcsin(r)) * r) / (2.0 * np.pi)

    def j0(r):  # P(u1 > 0, u2 > 0)
        return 0.25 + np.arcsin(r) / (2.0 * np.pi)

    sq, ab = a * a + b * b, a * b
    abs_y = np.sqrt(B - 1.0) / (np.sqrt(np.pi) * special.poch(0.5 * (B - 1.0), 0.5))  # E|y1|
    phi12 = sq * j1(rho) + 2.0 * ab * j1(-rho)
    return {
        "phi": 0.5 * (a + b) * abs_y,
        "phi2": np.full(B.shape, 0.5 * sq),
        "phi12": phi12,
        "half_sq_diff": sq * (0.5 - j1(rho)) - 2.0 * ab * j1(-rho),
        "yphi": np.full(B.shape, 0.5 * (a - b)),
        "dphi2": np.full(B.shape, 0.5 * sq),
        "dphi12": sq * j0(rho) - 2.0 * ab * j0(-rho),
        "y2dphi2": np.full(B.shape, 0.5 * sq),  # y phi'(y) = phi(y) (Euler)
        "ydphi12": phi12,
    }


def _rule(lo, hi, smax, cuts, graded, level):
    """Gauss-Legendre nodes in the angle ``a`` (``s = smax sin a``) on [lo, hi], split at ``cuts``.

    ``lo, hi, smax`` have shape (M,), ``cuts`` and ``graded`` (M, K) (``graded``: panels ending at
    that cut use the graded map).  Every panel is bisected ``level`` times.  Returns the nodes and
    the weights of ``da`` (no density), both (M, P n).
    """
    M = lo.shape[0]
    zero = np.zeros((M, 1), dtype=bool)
    pts = np.clip(np.concatenate([lo[:, None], cuts, hi[:, None]], axis=1), lo[:, None], hi[:, None])
    flag = np.concatenate([zero, np.broadcast_to(graded, cuts.shape), zero], axis=1)
    order = np.argsort(pts, axis=1, kind="stable")
    pts, flag = np.take_along_axis(pts, order, 1), np.take_along_axis(flag, order, 1)
    same = pts[:, 1:] == pts[:, :-1]  # a graded cut grades both sides, also where other cuts coincide
    for _ in range(2):
        flag[:, 1:] |= same & flag[:, :-1]
        flag[:, :-1] |= same & flag[:, 1:]
    ang = np.arcsin(np.clip(pts / smax[:, None], -1.0, 1.0))
    a, b, fa, fb = ang[:, :-1], ang[:, 1:], flag[:, :-1], flag[:, 1:]
    S = 1 << level
    sub = a[..., None] + (b - a)[..., None] * (np.arange(S + 1) / S)
    a, b = sub[..., :-1].reshape(M, -1), sub[..., 1:].reshape(M, -1)
    end = np.arange(S) == 0
    fa, fb = (fa[..., None] & end).reshape(M, -1), (fb[..., None] & end[::-1]).reshape(M, -1)
    half = 0.5 * (b - a)
    mid = np.where(half > 0, 0.5 * (a + b), 0.0)  # empty panels sit at a harmless place
    g = (fa | fb)[..., None]
    nodes = mid[..., None] + half[..., None] * np.where(g, _X_GRADED, _X)
    weights = half[..., None] * _W * np.where(g, _DX_GRADED, 1.0)
    return nodes.reshape(M, -1), weights.reshape(M, -1)


def _density(nodes, weights, d):
    """Weights times ``cos^d(a)``, normalised to sum 1 along the last axis, and ``sin(a)``."""
    s = np.sin(nodes)
    w = weights * np.exp(0.5 * d * np.log1p(-np.minimum(s * s, 1.0)))
    return w / w.sum(axis=-1, keepdims=True), s


def _columns(act, y, derivs):
    """phi, phi' and the 1-D integrands [phi, phi^2, y phi, |phi|, phi'^2, (y phi')^2] at ``y``."""
    f = act.phi(y)
    d = act.dphi(y) if derivs else np.zeros_like(y)
    return f, d, np.stack([f, f * f, y * f, np.abs(f), d * d, (y * d) ** 2], axis=-1)


def _change(one, fine):
    """Change of the 1-D fields between a rule and its bisection, relative to their scales."""
    scale = np.stack([one[..., 3], one[..., 1], np.sqrt(one[..., 1]), one[..., 4], one[..., 5]], axis=-1)
    diff = np.abs(one[..., [0, 1, 2, 4, 5]] - fine[..., [0, 1, 2, 4, 5]])
    return np.max(diff / np.maximum(scale, 1e-300), axis=-1)


def _unsettled(act, where, change):
    warnings.warn(f"batch-norm sphere expectations of {act.name!r} at {where}: the quadrature did not settle "
                  f"(relative change {change:.1e} on bisecting every panel)", QuadratureWarning, stacklevel=5)


def _outer(B, kinks, level):
    """Outer nodes ``y1``, normalised weights and angles for one batch size.

    Cuts: _CUTS, the kinks, and (graded) the crossings ``c`` where a line ``y2 = k`` meets the
    ellipse, ``(B-1) y1^2 + 2 k y1 + (B-1) k^2 = B (B-2)``.  For even B <= 10 the powers there are
    small half-integers, so other cuts near ``c`` would leave panels close to a branch point: the
    fixed cuts within 0.5 give way to a geometric mesh ``c +- 0.5 / 4^j``, j = 0..3.
    """
    smax = math.sqrt(B - 1.0)
    k = kinks[kinks * kinks < B - 1.0]
    root = np.sqrt(B * (B - 2.0) * (B - 1.0 - k * k))
    cross = np.concatenate([-k + root, -k - root]) / (B - 1.0)
    fixed, mesh = _CUTS, np.empty(0)
    if B % 2 == 0 and B <= 10 and cross.size:
        fixed = _CUTS[np.all(np.abs(_CUTS[:, None] - cross) > 0.5, axis=1)]
        steps = 0.5 * 4.0 ** -np.arange(4)
        mesh = (cross[:, None] + np.concatenate([steps, -steps])).ravel()
    cuts = np.concatenate([fixed, kinks, mesh, cross])
    graded = np.arange(cuts.size) >= cuts.size - cross.size
    keep = np.abs(cuts) < smax
    lim = np.array([smax])
    nodes, w = _rule(-lim, lim, lim, cuts[keep][None, :], graded[keep][None, :], level)
    w1, s1 = _density(nodes[0], w[0], B - 3.0)
    return smax * s1, w1, nodes[0]


def _nested(act: Activation, B: float, derivs: bool) -> dict:
    """The fields at one batch size ``4 <= B < _B_TENSOR``: nested rule in the angles."""
    kinks = np.asarray(act.kinks, dtype=float)
    for level in range(_MAX_LEVEL + 1):
        y1, w1, ang = _outer(B, kinks, level)
        f1, d1, cols = _columns(act, y1, derivs)
        one = w1 @ cols
        y1f, w1f, _ = _outer(B, kinks, level + 1)
        change = _change(one, w1f @ _columns(act, y1f, derivs)[2])
        if change <= _RTOL_CHECK:
            break
    else:
        _unsettled(act, f"B = {int(B)}", change)
    # y2 | y1 = mu + sig s2, s2 = sqrt(B-2) sin(a') with density cos^(B-4) a'
    smax2 = math.sqrt(B - 2.0)
    mu, sig = -y1 / (B - 1.0), math.sqrt(B / (B - 1.0)) * np.cos(ang)
    fixed = _CUTS[np.abs(_CUTS) < smax2]
    cuts = np.concatenate([np.broadcast_to(fixed, (y1.size, fixed.size)), (kinks - mu[:, None]) / sig[:, None]], 1)
    lim = np.full(y1.size, smax2)
    nodes, w = _rule(-lim, lim, lim, cuts, np.zeros(cuts.shape, dtype=bool), level)
    w2, s2 = _density(nodes, w, B - 4.0)
    y2 = mu[:, None] + sig[:, None] * (smax2 * s2)
    f2, d2, _ = _columns(act, y2, derivs)
    inner_f, inner_d, inner_yd = (np.einsum("ij,ij->i", v, w2) for v in (f2, d2, y2 * d2))
    fc = f1 - one[0]
    return {"phi": one[0], "phi2": one[1], "yphi": one[2], "dphi2": one[4], "y2dphi2": one[5],
            "phi12": w1 @ (f1 * inner_f), "half_sq_diff": w1 @ (fc * fc) - w1 @ (fc * (inner_f - one[0])),
            "dphi12": w1 @ (d1 * inner_d), "ydphi12": w1 @ (y1 * d1 * inner_yd)}


def _grid(act, level, shift):
    """Gauss-Legendre nodes and weights in y on [-Y, Y], cut at _CUTS (and shifted copies) and the kinks."""
    Y = _REACH + shift
    fixed = _CUTS if shift == 0 else np.concatenate([_CUTS, _CUTS + shift, _CUTS - shift])
    cuts = np.unique(np.clip(np.concatenate([[-Y, Y], fixed, act.kinks]), -Y, Y))
    S = 1 << level
    pts = np.append((cuts[:-1, None] + np.diff(cuts)[:, None] * (np.arange(S) / S)).ravel(), Y)
    half, mid = 0.5 * np.diff(pts), 0.5 * (pts[1:] + pts[:-1])
    return (mid[:, None] + half[:, None] * _X).ravel(), (half[:, None] * _W).ravel()


def _grid_one_d(y, u, Bs, cols):
    """The 1-D integrals ``cols`` under the marginal ``(1 - y^2/(B-1))_+^((B-4)/2)``, per batch size."""
    r = np.minimum(y[None, :] ** 2 / (Bs[:, None] - 1.0), 1.0)
    with np.errstate(divide="ignore"):
        w = u * np.exp(0.5 * (Bs[:, None] - 4.0) * np.log1p(-r))
    return (w / w.sum(axis=1, keepdims=True)) @ cols


def _tensor_sums(y, u, f, d, Bs, mean):
    """Bivariate fields per batch size on the tensor grid ``y x y``.

    The pair density is ``(1 - Q)_+^((B-5)/2)``, ``Q = ((B-1)(y1^2 + y2^2) + 2 y1 y2) / (B (B-2))``
    (normalised on the grid; outside the ellipse it is taken as ``2^-53`` to that power, < 1e-150).
    Columns: ``phi12``, ``half_sq_diff`` (from ``f`` centred by ``mean``), ``dphi12``, ``ydphi12``.
    """
    S, T, U = y[:, None] ** 2 + y[None, :] ** 2, y[:, None] * y[None, :], u[:, None] * u[None, :]
    out = np.empty((Bs.size, 4))
    step = max(1, (1 << 16) // y.size**2)  # blocks that stay in cache
    for j in range(0, Bs.size, step):
        B = Bs[j:j + step, None, None]
        fc = f[None, :] - mean[j:j + step, None]
        cols = np.stack([np.ones(fc.shape), np.broadcast_to(f, fc.shape), fc, np.broadcast_to(d, fc.shape),
                         np.broadcast_to(y * d, fc.shape)], axis=2)
        P = ((B - 1.0) / (B * (B - 2.0))) * S
        P += (2.0 / (B * (B - 2.0))) * T
        np.minimum(P, 1.0 - 2.0**-53, out=P)
        np.negative(P, out=P)
        np.log1p(P, out=P)
        P *= 0.5 * (B - 5.0)
        np.exp(P, out=P)
        P *= U
        Pc = P @ cols
        z = Pc[:, :, 0].sum(axis=1)
        quad = np.einsum("bik,bik->bk", cols, Pc) / z[:, None]
        out[j:j + step] = quad[:, [1, 2, 3, 4]]
        out[j:j + step, 1] = (np.einsum("bi,bi->b", fc * fc, Pc[:, :, 0]) / z - quad[:, 2])
    return out


def _tensor(act: Activation, Bs: np.ndarray, derivs: bool) -> dict:
    """The fields for batch sizes ``Bs`` (all >= _B_TENSOR) on one tensor grid in y."""
    Bf = Bs.astype(float)
    shift = 2.0 * act.exp_rate
    for level in range(_MAX_LEVEL + 1):
        y, u = _grid(act, level, shift)
        f, d, cols = _columns(act, y, derivs)
        one = _grid_one_d(y, u, Bf, cols)
        yf, uf = _grid(act, level + 1, shift)
        change = _change(one, _grid_one_d(yf, uf, Bf, _columns(act, yf, derivs)[2]))
        if np.all(change <= _RTOL_CHECK):
            break
    else:
        _unsettled(act, f"B >= {int(Bs.min())}", float(np.max(change)))
    two = _tensor_sums(y, u, f, d, Bf, one[:, 0])
    return {"phi": one[:, 0], "phi2": one[:, 1], "yphi": one[:, 2], "dphi2": one[:, 4], "y2dphi2": one[:, 5],
            "phi12": two[:, 0], "half_sq_diff": two[:, 1], "dphi12": two[:, 2], "ydphi12": two[:, 3]}


def _one_sided(fn, pts, kinks):
    """``fn(pts)``, with the mean of the one-sided values where a point is a kink."""
    val = np.array(fn(pts), dtype=float)
    at = np.isin(pts, kinks)
    if at.any():
        h = 1e-9 * np.maximum(1.0, np.abs(pts[at]))
        val[at] = 0.5 * (fn(pts[at] - h) + fn(pts[at] + h))
    return val


def _batch_of_two(act: Activation, derivs: bool) -> dict:
    """B = 2: y = +-(1, -1) with probability 1/2 each."""
    kinks = np.asarray(act.kinks, dtype=float)
    fp, fm = _one_sided(act.phi, np.array([1.0, -1.0]), kinks)
    out = {"phi": 0.5 * (fp + fm), "phi2": 0.5 * (fp * fp + fm * fm), "phi12": fp * fm,
           "half_sq_diff": 0.5 * (fp - fm) ** 2, "yphi": 0.5 * (fp - fm)}
    if derivs:
        dp, dm = _one_sided(act.dphi, np.array([1.0, -1.0]), kinks)
        out.update(dphi2=0.5 * (dp * dp + dm * dm), dphi12=dp * dm, y2dphi2=0.5 * (dp * dp + dm * dm),
                   ydphi12=-dp * dm)
    return out


def _circle(act: Activation, derivs: bool) -> dict:
    """B = 3: ``y1 = sqrt(2) cos(a)``, ``y2 = sqrt(2) cos(a - 2 pi/3)``, ``a`` uniform on [0, 2 pi)."""
    k = np.asarray(act.kinks, dtype=float)
    base = np.arccos(k[np.abs(k) < math.sqrt(2.0)] / math.sqrt(2.0))
    cuts = np.unique(np.concatenate([np.arange(25) * (np.pi / 12), base, 2 * np.pi - base,
                                     (2 * np.pi / 3 + base) % (2 * np.pi), (2 * np.pi / 3 - base) % (2 * np.pi)]))
    for level in range(_MAX_LEVEL + 1):
        res, one = _circle_sums(act, cuts, level, derivs)
        change = _change(one, _circle_sums(act, cuts, level + 1, derivs)[1])
        if change <= _RTOL_CHECK:
            return res
    _unsettled(act, "B = 3", change)
    return res


def _circle_sums(act, cuts, level, derivs):
    """The fields on the circle from Gauss-Legendre panels between ``cuts``, bisected ``level`` times."""
    S = 1 << level
    pts = np.append((cuts[:-1, None] + np.diff(cuts)[:, None] * (np.arange(S) / S)).ravel(), cuts[-1])
    half, mid = 0.5 * np.diff(pts), 0.5 * (pts[1:] + pts[:-1])
    a = (mid[:, None] + half[:, None] * _X).ravel()
    w = (half[:, None] * _W).ravel() / (2 * np.pi)
    y1, y2 = math.sqrt(2.0) * np.cos(a), math.sqrt(2.0) * np.cos(a - 2 * np.pi / 3)
    (f1, d1, cols), (f2, d2, _) = _columns(act, y1, derivs), _columns(act, y2, derivs)
    one = w @ cols
    return {"phi": one[0], "phi2": one[1], "yphi": one[2], "dphi2": one[4], "y2dphi2": one[5],
            "phi12": w @ (f1 * f2), "half_sq_diff": 0.5 * w @ ((f1 - f2) ** 2), "dphi12": w @ (d1 * d2),
            "ydphi12": w @ (y1 * d1 * y2 * d2)}, one


def _fields(act: Activation, B: np.ndarray, method: str, derivs: bool) -> dict:
    """Flat arrays of the fields for the batch sizes ``B`` (validated), each computed once."""
    uniq, inverse = np.unique(B.ravel(), return_inverse=True)
    names = _FORWARD_FIELDS + (_DERIVATIVE_FIELDS if derivs else ())
    coeffs = _relu_family(act) if method != "quadrature" else None
    if method == "exact" and coeffs is None:
        raise ValueError(f"no closed form is known for the batch-norm expectations of {act.name!r} (only for "
                         "a relu(x) + b relu(-x): relu, leaky_relu, abs, linear); use method='auto' or 'quadrature'")
    if coeffs is not None:
        vals = _exact(*coeffs, uniq)
    else:
        vals = {k: np.empty(uniq.size) for k in names}
        small = {2: _batch_of_two, 3: _circle}
        for b, fn in small.items():
            at = uniq == b
            if at.any():
                res = fn(act, derivs)
                for k in names:
                    vals[k][at] = res[k]
        for i in np.flatnonzero((uniq >= 4) & (uniq < _B_TENSOR)):
            res = _nested(act, float(uniq[i]), derivs)
            for k in names:
                vals[k][i] = res[k]
        big = uniq >= _B_TENSOR
        if big.any():
            res = _tensor(act, uniq[big], derivs)
            for k in names:
                vals[k][big] = res[k]
    out = {k: np.asarray(vals[k], dtype=float)[inverse] for k in names}
    bad = [k for k in names if not np.all(np.isfinite(out[k]))]
    if bad:
        raise FloatingPointError(f"batch-norm expectations {bad} of {act.name!r} are not finite: phi (or phi') "
                                 "overflows on the sphere of radius sqrt(B)")
    return out


def sphere_expectations(act, B, method: str = "auto") -> SphereExpectations:
    r"""Expectations of ``phi`` and ``phi'`` under the batch-normalised law, for each batch size.

    ``y`` is uniform on the sphere of radius ``sqrt(B)`` in the hyperplane orthogonal to the ones
    vector: the output of batch normalisation at any permutation-symmetric batch covariance
    (Yang et al. 2019, ICLR).  ``y1, y2`` are two of its coordinates:
    ``y1 = sqrt(B - 1) t``, ``t`` with density proportional to ``(1 - t^2)^((B - 4)/2)``, and
    ``y2 | y1 = -y1/(B - 1) + R(y1) t'``, ``R^2 = (B - B y1^2/(B - 1))(B - 2)/(B - 1)``, ``t'`` with
    density proportional to ``(1 - t'^2)^((B - 5)/2)``.

    Parameters
    ----------
    act : Activation, str, sympy expression or callable
        Anything :func:`meanfield.activation` accepts; it needs ``phi'``.
    B : int or array_like of int
        Batch sizes, each >= 2 (``B = 2``: ``y = +-(1, -1)``; at a kink on one of those points ``phi'``
        is the mean of its one-sided values).
    method : {"auto", "exact", "quadrature"}
        ``"auto"``: the arc-cosine closed form for ``a relu(x) + b relu(-x)`` (relu, leaky_relu, abs,
        linear), quadrature otherwise (see the module docstring); ``"exact"`` insists on the closed
        form, ``"quadrature"`` never uses it.

    Returns
    -------
    SphereExpectations
        Floats for a scalar ``B``, arrays shaped like ``B`` otherwise.

    Raises
    ------
    ValueError
        ``B`` not an integer or below 2; an activation without ``phi'`` (or discontinuous);
        ``method="exact"`` without a closed form.
    """
    act = activation(act)
    Bs = _batch_sizes(B, 2, "the batch mean and variance need two inputs")
    _validate.method(method)
    act.derivative(1)
    vals = _fields(act, Bs, method, derivs=True)
    shape = Bs.shape
    batch = int(Bs) if Bs.ndim == 0 else Bs.copy()
    return SphereExpectations(B=batch, **{k: _validate.finish(v, shape) for k, v in vals.items()})


def lambda_G(act, B, method: str = "auto"):
    r"""Per-layer growth of the squared gradient norm in a batch-normalised network.

    At the symmetric fixed point (:func:`batch_norm_fixed_point`), backpropagation multiplies the
    squared gradient norm by (Yang et al. 2019, ICLR; derivation in the module docstring)

    .. math::

        \lambda_G = \frac{(B-1)\,E[\phi'(y_1)^2] + E[\phi'(y_1)\phi'(y_2)] - E[y_1^2\phi'(y_1)^2]
                          + E[y_1\phi'(y_1)\,y_2\phi'(y_2)]}
                         {(B-3)\,(E[\phi(y_1)^2] - E[\phi(y_1)\phi(y_2)])}

    per layer, from any gradient direction (the trace of its batch covariance grows by exactly this
    factor), independently of ``sigma_w2`` and ``sigma_b2``.  Linear phi: ``(B - 2)/(B - 3)``;
    ``B -> inf``: ``E[phi'(z)^2] / Var phi(z)``, ``z ~ N(0, 1)`` (ReLU ``pi/(pi - 1)``); always >= 1.

    Parameters
    ----------
    act : Activation, str, sympy expression or callable
        Needs ``phi'``.
    B : int or array_like of int
        Batch sizes, each > 3: the factor ``E[B / ||G h||^2]`` is ``E[1/chi^2_{B-1}]``, infinite for
        ``B <= 3``.  At ``B = 4`` the per-layer factor of a sampled network is heavy-tailed
        (``1/chi^2_3`` has infinite variance).
    method : {"auto", "exact", "quadrature"}
        As in :func:`sphere_expectations`.

    Returns
    -------
    float or numpy.ndarray
        Shaped like ``B``.

    Raises
    ------
    ValueError
        ``B`` not an integer or ``<= 3``; no ``phi'``; phi constant on the sphere (the next layer's
        batch is constant and batch normalisation undefined).
    """
    act = activation(act)
    Bs = _batch_sizes(B, 4, "lambda_G needs B > 3 because E[1/chi^2_{B-1}] = 1/(B-3) diverges for B <= 3")
    _validate.method(method)
    act.derivative(1)
    v = _fields(act, Bs, method, derivs=True)
    b = Bs.ravel().astype(float)
    _nondegenerate(act, v["half_sq_diff"], v["phi2"], b)
    A, C = _coefficients(v, b)
    return _validate.finish(b * (A - C) / ((b - 3.0) * v["half_sq_diff"]), Bs.shape)


def _coefficients(v, b):
    """``(A, C)`` of :func:`backward_coefficients` from the sphere fields ``v``."""
    return ((b - 1.0) * v["dphi2"] - v["y2dphi2"]) / b, -(v["dphi12"] + v["ydphi12"]) / b


def backward_coefficients(act, B, method: str = "auto"):
    r"""``(A, C)``: how one batch-norm layer acts on the batch covariance of the gradient.

    Backpropagation through ``h' = W phi(BN(h)) + b`` is ``dE/dh = (sqrt(B)/||Gh||) P_y D W^T dE/dh'``
    with ``P_y = G - y y^T / B`` and ``D = diag(phi'(y))``.  For a per-unit gradient covariance of
    trace ``tr`` and off-diagonal sum ``offsum`` (the only parts that matter, by permutation
    symmetry), the new trace is ``B sigma_w2 / (q (1 - c) (B - 3)) (A tr + C offsum)``, with

    .. math::

        A = E[\phi'(y_1)^2 (P_y)_{11}] = ((B - 1) E[\phi'(y_1)^2] - E[y_1^2 \phi'(y_1)^2]) / B, \qquad
        C = E[\phi'(y_1)\phi'(y_2) (P_y)_{12}] = -(E[\phi'(y_1)\phi'(y_2)] + E[y_1\phi'(y_1) y_2\phi'(y_2)]) / B,

    and the result lies in the hyperplane orthogonal to the ones vector (``offsum = -tr``), where
    the factor at the fixed point is ``lambda_G = B (A - C) / ((B - 3) m)`` (:func:`lambda_G`;
    Yang et al. 2019).  Same arguments as :func:`lambda_G`; returns two floats or arrays shaped like B.
    """
    act = activation(act)
    Bs = _batch_sizes(B, 4, "the batch-norm gradient theory needs B > 3: E[1/chi^2_{B-1}] diverges for B <= 3")
    _validate.method(method)
    act.derivative(1)
    v = _fields(act, Bs, method, derivs=True)
    A, C = _coefficients(v, Bs.ravel().astype(float))
    return _validate.finish(A, Bs.shape), _validate.finish(C, Bs.shape)


def _nondegenerate(act, spread, phi2, b):
    """ValueError where phi is (numerically) constant on the sphere."""
    bad = ~(spread > 1e-13 * np.maximum(phi2, 1e-300))
    if bad.any():
        raise ValueError(f"activation {act.name!r} is constant on the batch-norm sphere at B = {int(b[bad][0])} "
                         "(E[(phi(y1) - phi(y2))^2] = 0): the next layer's batch has no variance to normalise")


def batch_norm_fixed_point(act, B, sigma_w2, sigma_b2, method: str = "auto"):
    r"""The symmetric (BSB1) fixed point ``(q*, c*)`` of a batch-normalised network.

    Batch normalisation before phi maps any permutation-symmetric batch covariance with ``c < 1`` to
    the uniform law on the sphere of radius ``sqrt(B)`` (see :func:`sphere_expectations`), so after one
    layer the pre-activations have covariance ``q* [(1 - c*) I + c* 1 1^T]`` with

    .. math::

        q^* = \sigma_w^2 E[\phi(y_1)^2] + \sigma_b^2, \qquad
        c^* = \frac{\sigma_w^2 E[\phi(y_1)\phi(y_2)] + \sigma_b^2}{q^*}

    (Yang et al. 2019, ICLR: the BSB1 fixed point), and stay there.

    Parameters
    ----------
    act : Activation, str, sympy expression or callable
        phi' is not needed.
    B : int or array_like of int
        Batch sizes, each >= 2: the batch mean and variance need two inputs (``B = 2`` normalises
        every unit to ``+-(1, -1)``).
    sigma_w2 : float or array_like
        Weight variance, > 0 (with 0 the next layer's batch is constant).
    sigma_b2 : float or array_like
        Bias variance, >= 0.
    method : {"auto", "exact", "quadrature"}
        As in :func:`sphere_expectations`.

    Returns
    -------
    q_star, c_star : float or numpy.ndarray
        Broadcast over ``B``, ``sigma_w2`` and ``sigma_b2``.  ``c* < 1`` always; ``c* < 0`` is
        possible for small ``B`` (the batch coordinates are anti-correlated, ``-1/(B - 1)``).

    Raises
    ------
    ValueError
        ``B`` not an integer or below 2, ``sigma_w2 <= 0``, ``sigma_b2 < 0`` (or non-finite), phi
        constant on the sphere.
    """
    act = activation(act)
    Bs = _batch_sizes(B, 2, "the batch mean and variance need two inputs")
    _validate.method(method)
    sw = _validate.nonnegative("sigma_w2", sigma_w2)
    sb = _validate.nonnegative("sigma_b2", sigma_b2)
    if np.any(sw <= 0):
        raise ValueError("sigma_w2 must be > 0: with sigma_w2 = 0 every input of the batch gets the same "
                         "pre-activation and batch normalisation divides by zero")
    shape, (bf, swf, sbf) = _validate.broadcast(Bs, sw, sb)
    bi = bf.astype(np.int64)
    v = _fields(act, bi, method, derivs=False)
    _nondegenerate(act, v["half_sq_diff"], v["phi2"], bf)
    q = swf * v["phi2"] + sbf
    c = 1.0 - swf * v["half_sq_diff"] / q
    return _validate.finish(q, shape), _validate.finish(c, shape)
