"""Kernel tables: the layer map of every entry of a kernel, tabulated in the angle and evaluated.

Off the diagonal, ``E[fn(u) fn(u')]`` depends on an entry only through the two variances and the
angle ``theta = arccos c``.  For one layer, :func:`build_plan` tabulates ``theta -> E[fn(u) fn(u')]``
on the range of angles that occur, as piecewise Chebyshev interpolants of degree 16 in ``theta``
(pieces bisected until the trailing coefficients are below :data:`TABLE_TOL` of the scale), at
*variance nodes*: the distinct variances themselves (at most :data:`MAX_GROUPS` groups), or else
Chebyshev-Lobatto nodes in ``log q`` with barycentric interpolation of the normalised
``E[fn(u) fn(u')] / sqrt(E[fn(u)^2] E[fn(u')^2])`` (node count predicted from the decay of the
coefficients along the variance axes, in nested sets 5, 9, 17, 33, 65).  Table nodes are
integrals by :func:`meanfield._bivariate.bivariate_shared`.  :func:`apply_plan` evaluates the
tables for every entry in compiled code, blocks of rows on threads (the upper triangle only for a
symmetric kernel, mirrored).  The method and its accuracy are described in :mod:`meanfield.kernels`.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import quadrature
from ._bivariate import bivariate_shared
from ._jit import jit
from ._threads import run, workers
from .activations import Activation

__all__ = ["KernelWarning", "Plan", "build_plan", "apply_plan", "angle_range", "zero_variance_fix", "mirror_upper",
           "TABLE_TOL", "VARIANCE_TOL", "MAX_GROUPS", "BLOCK"]


class KernelWarning(UserWarning):
    """A kernel matrix was regularised, or a table lost accuracy.

    Raised where a table did not reach its tolerance, or an activation oscillating without end
    reached variances where the tables lose accuracy.
    """

    __module__ = "meanfield.kernels"  # its public home


#: Tolerance of the tables, relative to sqrt(E[phi(u)^2] E[phi(u')^2]).
TABLE_TOL = 1e-13
#: Tolerance of the interpolation over the variances (of E[phi(u) phi(u')] / sqrt(E[phi(u)^2] E[phi(u')^2])).
VARIANCE_TOL = 1e-12
#: More distinct variances than this are interpolated (else each group gets its own tables).
MAX_GROUPS = 5
#: Entries per block of rows (bounds the temporaries of a block).
BLOCK = 1 << 17
_DEGREE = 16
_MAX_PIECES = 64
_GROUP_RTOL = 1e-12
_MAX_VARIANCE_NODES = 65  # 5, 9, 17, 33, 65: nested Chebyshev-Lobatto sets
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def warn(message: str) -> None:
    """A :class:`KernelWarning` attributed to the first caller outside the package."""
    frame, level = sys._getframe(1), 2
    while frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == _PACKAGE_DIR:
        frame, level = frame.f_back, level + 1
    warnings.warn(message, KernelWarning, stacklevel=level)

_LOB = np.cos(np.pi * np.arange(_DEGREE + 1) / _DEGREE)[::-1]  # Chebyshev-Lobatto nodes on [-1, 1], ascending


def _cheb_coeffs(values):
    """Chebyshev coefficients from values at the ascending Lobatto nodes (last axis)."""
    v = values[..., ::-1]  # x_j = cos(pi j / N)
    N = v.shape[-1] - 1
    ext = np.concatenate([v, v[..., -2:0:-1]], axis=-1)
    a = np.fft.rfft(ext, axis=-1).real[..., : N + 1] / N
    a[..., 0] /= 2
    a[..., N] /= 2
    return a


@dataclass
class _Tables:
    """Piecewise Chebyshev tables T_ab(theta), a, b over the variance nodes."""

    breaks: np.ndarray  # (P + 1,)
    coef: np.ndarray  # (M, M, P, DEGREE + 1)
    ndeg: np.ndarray  # (P,) coefficients kept per piece (trailing ones below 1e-16 of the scale dropped)


def _build_tables(values, name, qnodes, lo, hi, scale, pieces=None):
    """Tables of ``theta -> E[fn(u) fn(u')]`` for all pairs ``a <= b`` of ``qnodes`` on ``[lo, hi]``.

    ``values(th)`` gives the expectations for the pairs ``np.triu_indices(M)`` at the angles ``th``,
    shape (pairs, th.size).  ``pieces`` are initial pieces (bisected further where needed).
    Returns the tables and the final pieces.
    """
    M = qnodes.size
    pa, pb = np.triu_indices(M)
    if pieces is None:
        if hi - lo < 1e-15:
            lo, hi = max(0.0, lo - 1e-9), min(math.pi, hi + 1e-9)
        pieces = [(lo, hi)]
    pieces = list(pieces)
    sc = scale[pa, pb]
    done: dict = {}
    for _ in range(200):
        todo = [p for p in pieces if p not in done]
        if not todo:
            break
        th = np.concatenate([0.5 * (p[0] + p[1]) + 0.5 * (p[1] - p[0]) * _LOB for p in todo])
        vals = values(th).reshape(pa.size, len(todo), _DEGREE + 1)
        coef = _cheb_coeffs(vals)
        new = []
        for k, p in enumerate(todo):
            tail = np.max(np.abs(coef[:, k, -3:]) / sc[:, None])
            if tail <= TABLE_TOL or len(pieces) + len(new) >= _MAX_PIECES or p[1] - p[0] < 1e-10:
                if tail > 1e3 * TABLE_TOL:
                    warn(f"kernel table for {name!r} reached only {tail:.1e} relative accuracy")
                done[p] = coef[:, k]
            else:
                m = 0.5 * (p[0] + p[1])
                new.extend([(p[0], m), (m, p[1])])
        pieces = sorted([p for p in pieces if p in done] + new)
    breaks = np.array([p[0] for p in pieces] + [pieces[-1][1]])
    C = np.zeros((M, M, len(pieces), _DEGREE + 1))
    ndeg = np.empty(len(pieces), dtype=np.int64)
    for k, p in enumerate(pieces):
        C[pa, pb, k] = done[p]
        C[pb, pa, k] = done[p]
        # drop trailing coefficients whose total is below 1e-16 of the scale
        tail = np.cumsum(np.max(np.abs(done[p]) / sc[:, None], axis=0)[::-1])[::-1]
        ndeg[k] = max(1, int(np.count_nonzero(tail > 1e-16)))
    return _Tables(breaks, C, ndeg), pieces


def _shared_values(fn, act, qnodes, cache=None):
    """``values(th)`` for :func:`_build_tables`: inner integrals shared by all outer variances."""
    pa, pb = np.triu_indices(qnodes.size)

    def values(th):
        n = th.size
        F = bivariate_shared(fn, act, qnodes, np.repeat(qnodes, n), np.tile(th, qnodes.size), cache)
        return F.reshape(qnodes.size, qnodes.size, n)[pa, pb]

    return values


@jit(nogil=True)
def _eval_tables(K, d1, d2, idx1, w1, idx2, w2, coef, breaks, ndeg, row0, upper, out):  # pragma: no cover
    """out[i, j] = sum_ab w1[i, a] w2[j, b] T_ab(arccos(K[i, j] / sqrt(d1[i] d2[j]))).

    With ``upper`` only ``j >= row0 + i`` (the rest is mirrored by the caller).
    """
    n1, n2 = K.shape
    M = coef.shape[1]
    P = coef.shape[2]
    D = coef.shape[3]
    lo = breaks[0]
    hi = breaks[P]
    for i in range(n1):
        C = np.zeros((M, P, D))
        V = np.empty(D)
        for a in range(idx1.shape[1]):
            wa = w1[i, a]
            if wa != 0.0:
                C += wa * coef[idx1[i, a]]
        j0 = row0 + i if upper else 0
        for j in range(j0, n2):
            s = math.sqrt(d1[i] * d2[j])
            if s == 0.0:
                out[i, j] = 0.0
                continue
            c = K[i, j] / s
            if c > 1.0:
                c = 1.0
            elif c < -1.0:
                c = -1.0
            th = math.acos(c)
            if th < lo:
                th = lo
            elif th > hi:
                th = hi
            # binary search for the piece
            a0 = 0
            b0 = P
            while b0 - a0 > 1:
                mid = (a0 + b0) // 2
                if th >= breaks[mid]:
                    a0 = mid
                else:
                    b0 = mid
            pl = breaks[a0]
            ph = breaks[a0 + 1]
            t = (2.0 * th - pl - ph) / (ph - pl)
            t2 = 2.0 * t
            nd = ndeg[a0]
            # combine the tables of column j's variance nodes (contiguous, vectorisable), then one
            # Clenshaw recurrence for sum_k V[k] T_k(t)
            V[:nd] = 0.0
            for b in range(idx2.shape[1]):
                wb = w2[j, b]
                if wb != 0.0:
                    Cg = C[idx2[j, b], a0]
                    for k in range(nd):
                        V[k] += wb * Cg[k]
            b1 = 0.0
            b2 = 0.0
            for k in range(nd - 1, 0, -1):
                tmp = t2 * b1 - b2 + V[k]
                b2 = b1
                b1 = tmp
            acc = t * b1 - b2 + V[0]
            out[i, j] = acc


@jit(nogil=True)
def mirror_upper(A):  # pragma: no cover - compiled
    """Copy the upper triangle of the square A onto the lower one."""
    n = A.shape[0]
    B = 64
    for ib in range(0, n, B):
        for jb in range(0, ib + 1, B):
            for i in range(ib, min(ib + B, n)):
                for j in range(jb, min(jb + B, i)):
                    A[i, j] = A[j, i]



def _groups(values):
    """Centres of the clusters of values equal to within _GROUP_RTOL, ascending."""
    order = np.argsort(values)
    v = values[order]
    gap = np.diff(v) > _GROUP_RTOL * np.maximum(np.abs(v[1:]), 1e-300)
    lab_sorted = np.concatenate([[0], np.cumsum(gap)])
    labels = np.empty(values.size, dtype=np.int64)
    labels[order] = lab_sorted
    return np.bincount(labels, weights=values) / np.bincount(labels)


def _lobatto(lo, hi, M):
    """``M`` Chebyshev-Lobatto nodes on ``[lo, hi]``, ascending."""
    k = np.arange(M)
    return 0.5 * (lo + hi) - 0.5 * (hi - lo) * np.cos(np.pi * k / (M - 1))


def _bary_weights(x, nodes):
    """Barycentric Lagrange weights (len(x), M) for Chebyshev-Lobatto ``nodes``."""
    M = nodes.size
    lam = np.ones(M)
    lam[1::2] = -1.0
    lam[0] *= 0.5
    lam[-1] *= 0.5
    diff = x[:, None] - nodes[None, :]
    exact = diff == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        t = lam / diff
        W = t / t.sum(axis=1, keepdims=True)
    rows = exact.any(axis=1)
    W[rows] = exact[rows].astype(float)
    return W


@dataclass
class Plan:
    """The tables of one layer and, for every input, its variance nodes and weights.

    Entry ``(i, j)`` is ``sum_ab w1[i, a] w2[j, b] T_{idx1[i, a], idx2[j, b]}(theta_ij)``.
    """

    tables: _Tables
    idx1: np.ndarray
    w1: np.ndarray
    idx2: np.ndarray
    w2: np.ndarray


def build_plan(fn: Callable, act: Activation, d1: np.ndarray, d2: np.ndarray, e1: np.ndarray, e2: np.ndarray,
               lo: float, hi: float, second_moment: Callable) -> Plan:
    """Tables of ``E[fn(u) fn(u')]`` for one layer on the angles ``[lo, hi]``, and per-input weights.

    ``d1``, ``d2`` are the variances of the rows and columns; ``second_moment(q)`` gives the scale
    ``E[fn(u)^2]``, and ``e1``, ``e2`` are its values at ``d1``, ``d2``.  Zero variances get zero
    weights (see :func:`zero_variance_fix`).
    """
    allq = np.concatenate([d1, d2])
    pos = allq[allq > 0]
    if pos.size == 0:
        pos = np.array([1.0])
    centres = _groups(pos)
    if centres.size <= MAX_GROUPS:
        sc1 = np.sqrt(np.maximum(second_moment(centres), 1e-300))
        tab = _build_tables(_shared_values(fn, act, centres), act.name, centres, lo, hi, sc1[:, None] * sc1[None, :])[0]

        def weights(d):
            idx = np.zeros((d.size, 1), dtype=np.int64)
            w = np.ones((d.size, 1))
            p = d > 0
            idx[p, 0] = np.searchsorted(centres, d[p] * (1 - 2 * _GROUP_RTOL))
            idx[:, 0] = np.clip(idx[:, 0], 0, centres.size - 1)
            w[~p] = 0.0
            return idx, w

        i1, w1 = weights(d1)
        i2, w2 = weights(d2)
        return Plan(tab, i1, w1, i2, w2)
    # many distinct variances: tables at Chebyshev-Lobatto nodes in x = log q; 5 nodes give the
    # rate at which the Chebyshev coefficients along the variance axes decay, from which the
    # number of nodes that reaches VARIANCE_TOL is predicted, rounded up to a nested set (5, 9,
    # 17, ...: the rows already computed are reused)
    x_lo, x_hi = math.log(pos.min()), math.log(pos.max())
    pieces = None
    cache: dict = {}
    M, err5 = 5, None
    while True:
        x_nodes = _lobatto(x_lo, x_hi, M)
        q_nodes = np.exp(x_nodes)
        sc1 = np.sqrt(np.maximum(second_moment(q_nodes), 1e-300))
        tab, pieces = _build_tables(_shared_values(fn, act, q_nodes, cache), act.name, q_nodes, lo, hi,
                                    sc1[:, None] * sc1[None, :], pieces)
        # interpolate E[fn fn'] / sqrt(E[fn^2] E[fn'^2]): the scales are known for every input
        tab.coef /= (sc1[:, None] * sc1[None, :])[:, :, None, None]
        env = _variance_envelope(tab.coef)
        err = float(env[-2:].max())
        if err <= VARIANCE_TOL:
            break
        if M >= _MAX_VARIANCE_NODES:
            warn(f"variance interpolation for {act.name!r} reached only {err:.1e} relative accuracy")
            break
        # geometric decay err_M ~ rho^-M: rho from the coefficients of the first tables, then from
        # the tails of the first and the latest
        if M == 5:
            err5, rho = err, (env[1] / max(env[4], 1e-300)) ** (1.0 / 3.0)
        else:
            rho = (err5 / max(err, 1e-300)) ** (1.0 / (M - 5))
        need = M + math.ceil(math.log(err / VARIANCE_TOL) / math.log(max(rho, 1.5)))
        while M < need and M < _MAX_VARIANCE_NODES:
            M = 2 * M - 1

    def weights(d, e):
        p = d > 0
        W = np.zeros((d.size, M))
        W[p] = _bary_weights(np.log(d[p]), x_nodes) * np.sqrt(e[p])[:, None]
        return np.broadcast_to(np.arange(M), W.shape).copy(), W

    i1, w1 = weights(d1, e1)
    i2, w2 = weights(d2, e2)
    return Plan(tab, i1, w1, i2, w2)


def _variance_envelope(coef):
    """Largest Chebyshev coefficient of each degree along either variance axis of the tables, (M,)."""
    C = _cheb_coeffs(np.moveaxis(coef, 0, -1))  # (M, P, D, M): coefficients along the first axis
    C = np.abs(_cheb_coeffs(np.moveaxis(C, 0, -1)))  # (P, D, M, M): and along the second
    return np.maximum(C.max(axis=(0, 1, 3)), C.max(axis=(0, 1, 2)))


def apply_plan(plan: Plan, K: np.ndarray, d1: np.ndarray, d2: np.ndarray, out: np.ndarray, same: bool,
               threads: bool = True) -> np.ndarray:
    """Evaluate the tables of ``plan`` at every entry of ``K`` (variances ``d1``, ``d2``) into ``out``.

    With ``same`` (a symmetric kernel) only the upper triangle is evaluated and then mirrored, so
    ``out`` is exactly symmetric.  Blocks of rows run on the thread pool (in this thread without
    ``threads``).
    """
    tab = plan.tables
    rows = max(1, min(BLOCK // max(1, K.shape[1]), -(-K.shape[0] // (4 * workers()))))

    def block(r):
        sl = slice(r, r + rows)
        _eval_tables(K[sl], d1[sl], d2, plan.idx1[sl], plan.w1[sl], plan.idx2, plan.w2, tab.coef, tab.breaks,
                     tab.ndeg, r, same, out[sl])

    run(block, range(0, K.shape[0], rows), threads)
    if same:
        mirror_upper(out)
    return out


def angle_range(K: np.ndarray, d1: np.ndarray, d2: np.ndarray, same: bool) -> tuple[float, float]:
    """Smallest and largest angle arccos(c) over the entries (off the diagonal when X2 is X1)."""
    cmin, cmax = np.inf, -np.inf
    rows = max(1, BLOCK // max(1, K.shape[1]))
    for r in range(0, K.shape[0], rows):
        sl = slice(r, r + rows)
        s = np.sqrt(d1[sl, None]) * np.sqrt(d2[None, :])  # the product of two variances above 1e154 overflows
        with np.errstate(divide="ignore", invalid="ignore"):
            c = K[sl] / s
        bad = ~(s > 0)
        if same:
            ii = np.arange(sl.start, min(sl.stop, K.shape[0]))
            bad[ii - sl.start, ii] = True
        if bad.any():
            c[bad] = np.nan
        if not np.all(bad):
            cmin, cmax = min(cmin, float(np.nanmin(c))), max(cmax, float(np.nanmax(c)))
    if cmin > cmax:
        return 0.0, 1e-9
    cmin, cmax = min(max(cmin, -1.0), 1.0), min(max(cmax, -1.0), 1.0)
    return math.acos(cmax), math.acos(cmin)


def zero_variance_fix(fn: Callable, act: Activation, d1: np.ndarray, d2: np.ndarray, F: np.ndarray) -> None:
    """Set the entries with a zero variance: ``E[fn(0) fn(u')] = fn(0) E[fn(u')]``."""
    z1, z2 = d1 <= 0, d2 <= 0
    if not (z1.any() or z2.any()):
        return
    f0 = float(fn(np.zeros(1))[0])
    m2 = quadrature.expect_1d(fn, 0.0, d2, act.kinks, act.exp_rate)
    m1 = quadrature.expect_1d(fn, 0.0, d1, act.kinks, act.exp_rate)
    if z1.any():
        F[z1, :] = f0 * m2[None, :]
    if z2.any():
        F[:, z2] = m1[:, None] * f0
