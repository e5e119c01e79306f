"""NNGP and NTK kernels of deep fully connected networks on data, and Gaussian-process prediction.

Conventions
-----------
A network of ``depth`` L hidden layers maps ``x`` in ``R^{d_in}`` through

    h^0 = W^0 x + b^0,                      W^0_ij ~ N(0, sigma_w2 / d_in)
    h^l = W^l phi(h^{l-1}) + b^l,           W^l_ij ~ N(0, sigma_w2 / N_{l-1}),   l = 1..L

with ``b^l_i ~ N(0, sigma_b2)``; ``h^L`` is the (linear) readout.  ``depth`` counts the
nonlinearities (hidden layers); the readout is not counted.  So ``depth=0`` is the linear
kernel and ``depth=L`` here is :class:`meanfield.empirical.NetworkSpec` with ``depth=L + 1``
(whose layer 1 is ``h^0`` above and whose output ``h^{L+1}`` is the readout).

NNGP (Lee et al. 2018, eqs. 5-6):

    K^0(x, x') = sigma_b2 + sigma_w2 x.x' / d_in
    K^l(x, x') = sigma_b2 + sigma_w2 E[phi(u) phi(u')],   (u, u') ~ N(0, [[K^{l-1}(x,x), K^{l-1}(x,x')],
                                                                          [K^{l-1}(x,x'), K^{l-1}(x',x')]])

NTK in the NTK parametrisation (``W = sqrt(sigma_w2 / N) Z``, ``b = sqrt(sigma_b2) beta``, gradients
with respect to ``Z`` and ``beta``; Jacot et al. 2018, Thm. 1; Arora et al. 2019, eq. 9; Lee et al.
2019, eq. 7):

    Theta^0 = K^0,    Theta^l = K^l + sigma_w2 E[phi'(u) phi'(u')] Theta^{l-1}

This is :func:`meanfield.empirical.empirical_ntk` with ``parametrization="ntk"`` at infinite width.

Numerical method
----------------
Closed forms (:mod:`meanfield.symbolic`: the ReLU family, erf, sin, cos, exp, polynomials) are
evaluated directly, entry by entry.  For any other activation every layer is done in three steps:

1. The diagonal ``K^l(x, x)`` is a one-dimensional integral, computed directly for every input by
   :func:`meanfield.expectations.expectation` (adaptive Gauss-Kronrod).
2. Off the diagonal, ``E[phi(u) phi(u')]`` depends on the entry only through the two variances and
   the angle ``theta = arccos c``.  Inputs are grouped by their variance (exactly equal values, to
   1e-12 relative, form one group; normalised inputs form a single group).  For every pair of
   groups the map ``theta -> E[phi(u) phi(u')]`` is tabulated on the range of angles that occur,
   as a piecewise Chebyshev interpolant of degree 16 in ``theta`` (not ``c``: the half-integer
   powers of ``1 - c`` that kinks produce are odd powers of ``theta``, and the boundary layer of
   large variances becomes wide), with pieces bisected until the trailing Chebyshev coefficients
   of every table fall below ``1e-13`` of its scale (an a-posteriori estimate).
   With more than 5 distinct variances, the tables are instead built at Chebyshev-Lobatto nodes
   in ``log q`` and interpolated (barycentric) in both variances.  What is interpolated is the
   normalised ``E[phi(u) phi(u')] / sqrt(E[phi(u)^2] E[phi(u')^2])``.  Tables at 5 nodes give the
   rate at which its Chebyshev coefficients along the variance axes decay; the number of nodes
   that brings the trailing ones below ``1e-12`` is predicted from it and rounded up to 9, 17, 33
   or 65 (nested node sets, so the integrals already done are reused).
   After the first layer the variances contract towards ``q*``, so few nodes are needed; a wide
   spread of input norms costs most in layer 1.
3. Table nodes are bivariate integrals by a fixed-order rule: ``u`` outer, ``u' | u`` inner,
   composite 12-point Gauss-Legendre on panels cut at multiples of the standard deviations, at
   fixed points on the activation's scale, at kinks and (outer) around the points where the
   conditional mean crosses a kink.  Given ``u / sqrt(q)``, the inner integral does not depend on
   the outer variance ``q``, so it is computed once and shared by all outer variances.  Compiled
   code (numba, cached) lays out the nodes; phi is evaluated on them in large vectorised batches.
   Its accuracy is checked in the tests: 1e-13 against mpmath (hard tanh), and within 1e-11 of
   adaptive Gauss-Kronrod quadrature (tolerance 1e-12) for tanh, softplus, gelu, mish, selu, swish
   and erf at variances 0.05 to 400 and all angles.  A compiled kernel evaluates the tables for
   all entries (the upper triangle only when ``X2`` is ``X1``), block by block; memory stays
   O(n1 n2).  Table nodes and blocks of rows are spread over threads (the CPUs the process may
   use, at most 8).

Limitation: the panels resolve the activation's features near the origin (within about 12) and
the Gaussian on the scale of its standard deviation.  An activation that oscillates without end
(``sin(x)`` inside a non-closed-form expression) at large variances (q above about 100) needs
finer panels than this rule uses (errors of 1e-7 at q = 400): a KernelWarning says so above
q = 50.  The closed forms of ``sin`` and ``cos`` themselves are exact.
"""

from __future__ import annotations

import math
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import sympy as sp

from . import _validate, quadrature, symbolic
from ._jit import jit
from .activations import Activation, activation
from .expectations import expectation

__all__ = [
    "nngp",
    "ntk",
    "NNGPRegressor",
    "NNGPClassifier",
    "KernelWarning",
    "DEFAULT_MEMORY_LIMIT",
    "METHODS",
]

#: Default bound on the kernel arrays, in bytes (4 GiB).
DEFAULT_MEMORY_LIMIT = 4 * 2**30
#: ``"auto"``: closed form where known, else tables; ``"exact"``: insist on a closed form;
#: ``"interpolate"``: the table method even where a closed form exists (for cross-checks).
METHODS = ("auto", "exact", "interpolate")

#: Tolerance of the tables, relative to sqrt(E[phi(u)^2] E[phi(u')^2]).
TABLE_TOL = 1e-13
_DEGREE = 16
_MAX_PIECES = 64
_GROUP_RTOL = 1e-12
_MAX_GROUPS = 5
#: Tolerance of the interpolation over the variances (of E[phi(u) phi(u')] / sqrt(E[phi(u)^2] E[phi(u')^2])).
VARIANCE_TOL = 1e-12
_MAX_VARIANCE_NODES = 65  # 5, 9, 17, 33, 65: nested Chebyshev-Lobatto sets
_BLOCK = 1 << 17


class KernelWarning(UserWarning):
    """A kernel matrix was regularised, a table did not reach its tolerance, or an activation
    oscillating without end reached variances where the tables lose accuracy."""


# ----------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------


def _inputs(name, X):
    try:
        X = np.asarray(X, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a numeric array of shape (n, d_in)") from None
    if X.ndim == 1:
        X = X[None, :]
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{name} must have shape (n, d_in) with n > 0 and d_in > 0, got shape {X.shape}")
    if not np.all(np.isfinite(X)):
        i, j = np.argwhere(~np.isfinite(X))[0]
        raise ValueError(f"{name} must be finite: {name}[{i}, {j}] = {X[i, j]}")
    return X


def _scalar_variance(name, v):
    arr = _validate.nonnegative(name, v)
    if arr.ndim != 0:
        raise ValueError(f"{name} must be a single number")
    return float(arr)


def _check(X1, X2, act, depth, sigma_w2, sigma_b2, method, memory_limit, n_arrays):
    X1 = _inputs("X1", X1)
    same = X2 is None
    X2 = X1 if same else _inputs("X2", X2)
    if X1.shape[1] != X2.shape[1]:
        raise ValueError(f"X1 and X2 must have the same number of features, got {X1.shape[1]} and {X2.shape[1]}")
    if isinstance(depth, (bool, np.bool_)) or not isinstance(depth, (int, np.integer)):
        raise ValueError(f"depth must be a non-negative integer (number of hidden layers), got {depth!r}")
    if depth < 0:
        raise ValueError(f"depth must be >= 0 (number of hidden layers), got {depth}")
    sw = _scalar_variance("sigma_w2", sigma_w2)
    sb = _scalar_variance("sigma_b2", sigma_b2)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    act = activation(act)
    if n_arrays > 2:
        act.derivative(1)
    need = 8.0 * X1.shape[0] * X2.shape[0] * n_arrays
    if need > memory_limit:
        raise ValueError(
            f"a {X1.shape[0]} x {X2.shape[0]} kernel needs about {need / 2**30:.2f} GiB of working memory, more "
            f"than memory_limit = {memory_limit / 2**30:.2f} GiB: use fewer inputs (or compute blocks of rows), "
            "or raise memory_limit"
        )
    if method == "exact" and not symbolic.has_closed_form(act):
        raise ValueError(f"no closed form is known for {act.name!r}; use method='auto'")
    return X1, X2, same, act, int(depth), sw, sb


# ----------------------------------------------------------------------------------------
# Bivariate rule for the table nodes
# ----------------------------------------------------------------------------------------

_GL_X, _GL_W = np.polynomial.legendre.leggauss(12)
_ZCUTS = np.array([-6.0, -4.0, -2.5, -1.25, 0.0, 1.25, 2.5, 4.0, 6.0])
_ACUTS = np.array([-12.0, -6.0, -3.0, -1.5, -0.5, 0.0, 0.5, 1.5, 3.0, 6.0, 12.0])
_KCUTS = np.array([-5.0, -2.0, -0.7, 0.0, 0.7, 2.0, 5.0])
_RANGE = 9.5
_CHUNK_NODES = 1 << 21
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_POOL = None
_OSCILLATION_Q = 50.0


@jit(nogil=True)
def _panels(lo, hi, cuts, u, w, k, write=True):  # pragma: no cover - compiled
    """Gauss-Legendre nodes on the panels between ``lo``, the sorted ``cuts`` inside, and ``hi``.

    Writes into ``u[k:]``, ``w[k:]`` (only counts them without ``write``) and returns the next free
    index; empty panels get no nodes.
    """
    ng = _GL_X.size
    left = lo
    for idx in range(cuts.size + 1):
        right = cuts[idx] if idx < cuts.size else hi
        if right > hi:
            right = hi
        if right <= left:
            continue
        if write:
            half = 0.5 * (right - left)
            mid = 0.5 * (right + left)
            for g in range(ng):
                u[k + g] = mid + half * _GL_X[g]
                w[k + g] = half * _GL_W[g]
        k += ng
        left = right
    return k


@jit(nogil=True)
def _outer_nodes(beta, sd2, reach, fixed, kinks):  # pragma: no cover - compiled
    """Standard-normal outer nodes ``z`` on ``[-reach, reach]`` and weights (density included) of
    every row, with row pointers.

    Cuts: ``_ZCUTS``, the sorted ``fixed`` points and, for every kink ``k`` of the inner function,
    ``k / beta + (sd2 / |beta|) * _KCUTS`` (where the conditional mean ``beta z`` crosses it).
    """
    n = beta.size
    ncut = _ZCUTS.size + fixed.size + kinks.size * _KCUTS.size
    u = np.empty(n * (ncut + 1) * _GL_X.size)
    w = np.empty_like(u)
    ptr = np.zeros(n + 1, dtype=np.int64)
    cuts = np.empty(ncut)
    k = 0
    for r in range(n):
        m = 0
        for z in _ZCUTS:
            cuts[m] = z
            m += 1
        for z in fixed:
            cuts[m] = z
            m += 1
        if beta[r] != 0.0:
            width = sd2[r] / abs(beta[r])
            for kk in kinks:
                p0 = kk / beta[r]
                for z in _KCUTS:
                    cuts[m] = p0 + width * z
                    m += 1
        cs = np.sort(cuts[:m])
        k0 = k
        k = _panels(-reach[r], reach[r], cs, u, w, k)
        for i in range(k0, k):
            w[i] *= math.exp(-0.5 * u[i] * u[i]) * _INV_SQRT_2PI
        ptr[r + 1] = k
    return u[:k], w[:k], ptr


@jit(nogil=True)
def _inner_cuts(m, s, feats, cuts):  # pragma: no cover - compiled
    """Sorted union of the standard-normal cuts and the feature preimages ``(feats - m) / s``."""
    a = 0
    b = 0
    for c in range(cuts.size):
        fb = (feats[b] - m) / s if b < feats.size else np.inf
        if a < _ZCUTS.size and _ZCUTS[a] <= fb:
            cuts[c] = _ZCUTS[a]
            a += 1
        else:
            cuts[c] = fb
            b += 1


@jit(nogil=True)
def _inner_nodes(u1, ptr, beta, sd2, reach, feats):  # pragma: no cover - compiled
    """Inner nodes ``u2 = beta u1 + sd2 t`` and weights (Gaussian in t) for every outer node."""
    n1 = u1.size
    nrow = ptr.size - 1
    row = np.empty(n1, dtype=np.int64)
    for r in range(nrow):
        row[ptr[r]:ptr[r + 1]] = r
    # pass 1: number of nodes per outer node
    count = np.empty(n1, dtype=np.int64)
    cuts = np.empty(_ZCUTS.size + feats.size)
    none = np.empty(0)
    for i in range(n1):
        r = row[i]
        if sd2[r] <= 0.0:
            count[i] = 1
            continue
        _inner_cuts(beta[r] * u1[i], sd2[r], feats, cuts)
        count[i] = _panels(-reach[r], reach[r], cuts, none, none, 0, False)
    iptr = np.zeros(n1 + 1, dtype=np.int64)
    iptr[1:] = np.cumsum(count)
    u = np.empty(iptr[n1])
    w = np.empty(iptr[n1])
    # pass 2: the nodes
    for i in range(n1):
        r = row[i]
        m = beta[r] * u1[i]
        s = sd2[r]
        k = iptr[i]
        if s <= 0.0:
            u[k] = m
            w[k] = 1.0
            continue
        _inner_cuts(m, s, feats, cuts)
        _panels(-reach[r], reach[r], cuts, u, w, k)
        for j in range(k, iptr[i + 1]):
            t = u[j]
            u[j] = m + s * t
            w[j] *= math.exp(-0.5 * t * t) * _INV_SQRT_2PI
    return u, w, iptr


def _workers():
    """Threads for the table work: the CPUs this process may use (at most 8)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        n = os.cpu_count() or 1
    return max(1, min(8, n))


def _run(task, items, threads=True):
    """``[task(x) for x in items]``, on a thread pool when there are several items and CPUs.

    The compiled kernels release the GIL and numpy releases it in its loops, so threads run in
    parallel (no OpenMP: safe under fork and from several user threads).
    """
    items = list(items)
    if not threads or len(items) < 2 or _workers() < 2:
        return [task(x) for x in items]
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=_workers())
    return list(_POOL.map(task, items))


def _forget_pool():
    """After fork the child has the pool object but not its threads: start a new one when needed."""
    global _POOL
    _POOL = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


@jit(nogil=True)
def _inner_sums(f2, w2, iptr):  # pragma: no cover - compiled
    out = np.empty(iptr.size - 1)
    for i in range(iptr.size - 1):
        acc = 0.0
        for j in range(iptr[i], iptr[i + 1]):
            acc += w2[j] * f2[j]
        out[i] = acc
    return out


def _bivariate_shared(fn, act: Activation, qa, q2, theta, cache=None):
    """``E[fn(u1) fn(u2)]`` for every ``u1 ~ N(0, qa[a])`` and every row ``(q2, theta)``: (len(qa), rows).

    Nested fixed-order rule (see the module docstring).  The outer variable is
    ``z = u1 / sqrt(qa)``; given ``z``, the inner integral over ``u2`` does not depend on ``qa``, so
    it is computed once per row and shared by all ``qa``.  The outer panels are cut at multiples of
    the standard deviation, at the activation's fixed points ``_ACUTS`` seen at the largest
    ``sqrt(qa)`` and at halvings of it down to the smallest (so that, seen at any ``sqrt(qa)``, the
    panels near the origin are at most as wide as ``_ACUTS`` makes them), at the kinks seen at every
    ``sqrt(qa)``, and around the points where the conditional mean crosses a kink.  Nodes are laid
    out by compiled code and ``fn`` is evaluated on them in large vectorised batches; qa, q2 > 0.
    ``cache`` (a dict) keeps the outer nodes and inner integrals of every row for later calls with
    the same outer cuts (nested sets of ``qa``).
    """
    qa, q2, theta = (np.ascontiguousarray(np.ravel(v), dtype=float) for v in (qa, q2, theta))
    kinks = np.asarray(act.kinks, dtype=float)
    feats = np.sort(np.concatenate([_ACUTS, kinks]))
    sa = np.sqrt(qa)
    s_lo, s_hi = float(sa.min()), float(sa.max())
    scales = s_hi * 0.5 ** np.arange(math.floor(math.log2(s_hi / s_lo)) + 1)
    fixed = np.unique(np.concatenate([(_ACUTS[:, None] / scales[None, :]).ravel(),
                                      (kinks[:, None] / sa[None, :]).ravel()]))
    reach = _RANGE + 2.0 * act.exp_rate * np.sqrt(np.maximum(q2, qa.max()))
    a2 = np.sqrt(q2)
    beta = a2 * np.cos(theta)  # E[u2 | z] = beta z
    sd2 = a2 * np.sin(theta)
    cache = {} if cache is None else cache
    fkey = fixed.tobytes()
    keys = [(fkey, q2[r], theta[r], reach[r]) for r in range(q2.size)]
    out = np.empty((qa.size, q2.size))
    per_row = (_ZCUTS.size + fixed.size + kinks.size * _KCUTS.size + 1) * (_ZCUTS.size + feats.size + 1) * _GL_X.size**2
    rows = max(1, min(_CHUNK_NODES // per_row, -(-q2.size // _workers())))

    def chunk(r):
        sl = slice(r, r + rows)
        new = np.array([k not in cache for k in keys[sl]])
        if new.any():
            idx = np.arange(r, min(r + rows, q2.size))[new]
            z, w1, ptr = _outer_nodes(beta[idx], sd2[idx], reach[idx], fixed, kinks)
            u2, w2, iptr = _inner_nodes(z, ptr, beta[idx], sd2[idx], reach[idx], feats)
            wg = w1 * _inner_sums(np.asarray(fn(u2), dtype=float), w2, iptr)
            for k, i in enumerate(idx):
                cache[keys[i]] = (z[ptr[k]:ptr[k + 1]], wg[ptr[k]:ptr[k + 1]])
        parts = [cache[k] for k in keys[sl]]
        z = np.concatenate([p[0] for p in parts])
        wg = np.concatenate([p[1] for p in parts])
        starts = np.cumsum([0] + [p[0].size for p in parts[:-1]])
        f1 = np.asarray(fn((sa[:, None] * z[None, :]).ravel()), dtype=float).reshape(qa.size, z.size)
        out[:, sl] = np.add.reduceat(f1 * wg[None, :], starts, axis=1)

    # a user's callable may not be thread-safe: threads only for activations built from expressions
    _run(chunk, range(0, q2.size, rows), threads=act.expr is not None)
    return out


# ----------------------------------------------------------------------------------------
# Tables in theta
# ----------------------------------------------------------------------------------------

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
                    warnings.warn(f"kernel table for {name!r} reached only {tail:.1e} relative accuracy",
                                  KernelWarning, stacklevel=4)
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
        F = _bivariate_shared(fn, act, qnodes, np.repeat(qnodes, n), np.tile(th, qnodes.size), cache)
        return F.reshape(qnodes.size, qnodes.size, n)[pa, pb]

    return values


# ----------------------------------------------------------------------------------------
# Compiled evaluation of the tables
# ----------------------------------------------------------------------------------------


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
def _mirror_upper(A):  # pragma: no cover - compiled
    """Copy the upper triangle of the square A onto the lower one."""
    n = A.shape[0]
    B = 64
    for ib in range(0, n, B):
        for jb in range(0, ib + 1, B):
            for i in range(ib, min(ib + B, n)):
                for j in range(jb, min(jb + B, i)):
                    A[i, j] = A[j, i]


# ----------------------------------------------------------------------------------------
# Variance nodes: groups or interpolation in sqrt(q)
# ----------------------------------------------------------------------------------------


def _groups(values):
    """Cluster values equal to within _GROUP_RTOL; return (centres, labels)."""
    order = np.argsort(values)
    v = values[order]
    gap = np.diff(v) > _GROUP_RTOL * np.maximum(np.abs(v[1:]), 1e-300)
    lab_sorted = np.concatenate([[0], np.cumsum(gap)])
    labels = np.empty(values.size, dtype=np.int64)
    labels[order] = lab_sorted
    centres = np.bincount(labels, weights=values) / np.bincount(labels)
    return centres, labels


def _lobatto(lo, hi, M):
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
class _Plan:
    tables: _Tables
    idx1: np.ndarray
    w1: np.ndarray
    idx2: np.ndarray
    w2: np.ndarray


def _plan(fn, act, d1, d2, e1, e2, lo, hi, phi2):
    """Tables and per-input weights for one layer.

    ``phi2(q)`` gives the scale ``E[fn(u)^2]``, and ``e1``, ``e2`` are its values at ``d1``, ``d2``.
    """
    allq = np.concatenate([d1, d2])
    pos = allq[allq > 0]
    if pos.size and pos.max() > _OSCILLATION_Q and act.expr is not None and act.expr.has(sp.sin, sp.cos):
        warnings.warn(f"{act.name!r} oscillates without end and the variance reaches {pos.max():.3g}: the "
                      "kernel tables may be accurate only to about 1e-7 there (measured at q = 400), not 1e-9 "
                      "(see meanfield.kernels)",
                      KernelWarning, stacklevel=4)
    if pos.size == 0:
        pos = np.array([1.0])
    centres, labels = _groups(pos)
    if centres.size <= _MAX_GROUPS:
        sc1 = np.sqrt(np.maximum(phi2(centres), 1e-300))
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
        return _Plan(tab, i1, w1, i2, w2)
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
        sc1 = np.sqrt(np.maximum(phi2(q_nodes), 1e-300))
        tab, pieces = _build_tables(_shared_values(fn, act, q_nodes, cache), act.name, q_nodes, lo, hi,
                                    sc1[:, None] * sc1[None, :], pieces)
        # interpolate E[fn fn'] / sqrt(E[fn^2] E[fn'^2]): the scales are known for every input
        tab.coef /= (sc1[:, None] * sc1[None, :])[:, :, None, None]
        env = _variance_envelope(tab.coef)
        err = float(env[-2:].max())
        if err <= VARIANCE_TOL:
            break
        if M >= _MAX_VARIANCE_NODES:
            warnings.warn(f"variance interpolation for {act.name!r} reached only {err:.1e} relative accuracy",
                          KernelWarning, stacklevel=3)
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
    return _Plan(tab, i1, w1, i2, w2)


def _variance_envelope(coef):
    """Largest Chebyshev coefficient of each degree along either variance axis of the tables, (M,)."""
    C = _cheb_coeffs(np.moveaxis(coef, 0, -1))  # (M, P, D, M): coefficients along the first axis
    C = np.abs(_cheb_coeffs(np.moveaxis(C, 0, -1)))  # (P, D, M, M): and along the second
    return np.maximum(C.max(axis=(0, 1, 3)), C.max(axis=(0, 1, 2)))


def _apply(plan, K, d1, d2, out, same):
    tab = plan.tables
    rows = max(1, min(_BLOCK // max(1, K.shape[1]), -(-K.shape[0] // (4 * _workers()))))

    def block(r):
        sl = slice(r, r + rows)
        _eval_tables(K[sl], d1[sl], d2, plan.idx1[sl], plan.w1[sl], plan.idx2, plan.w2, tab.coef, tab.breaks,
                     tab.ndeg, r, same, out[sl])

    _run(block, range(0, K.shape[0], rows))
    if same:
        _mirror_upper(out)
    return out


# ----------------------------------------------------------------------------------------
# The recursion
# ----------------------------------------------------------------------------------------


def _angle_range(K, d1, d2, same):
    """Smallest and largest angle arccos(c) over the entries (off the diagonal when X2 is X1)."""
    cmin, cmax = np.inf, -np.inf
    rows = max(1, _BLOCK // max(1, K.shape[1]))
    for r in range(0, K.shape[0], rows):
        sl = slice(r, r + rows)
        s = np.sqrt(d1[sl, None] * d2[None, :])
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


def _zero_variance_fix(fn, act, d1, d2, F):
    """Entries with a zero variance: E[fn(0) fn(u')] = fn(0) E[fn(u')]."""
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


def _expect_unique(act, kind, q):
    """One-dimensional expectation at the distinct values of q only."""
    u, inv = np.unique(q, return_inverse=True)
    return expectation(act, kind, u)[inv.ravel()]


def _recursion(X1, X2, same, act, depth, sw, sb, method, want_ntk):
    d_in = X1.shape[1]
    K = sb + sw * (X1 @ X2.T) / d_in
    d1 = sb + sw * np.einsum("ij,ij->i", X1, X1) / d_in
    d2 = d1 if same else sb + sw * np.einsum("ij,ij->i", X2, X2) / d_in
    if same:
        np.fill_diagonal(K, d1)
        K = 0.5 * (K + K.T)
    Theta = K.copy() if want_ntk else None
    td1, td2 = (d1.copy(), d2.copy()) if want_ntk else (None, None)
    exact = method != "interpolate" and symbolic.has_closed_form(act)
    cov = symbolic.numeric(act, "cov") if exact else None
    dcov = symbolic.numeric(act, "dcov") if (exact and want_ntk) else None
    F = np.empty_like(K)
    G = np.empty_like(K) if want_ntk else None
    for _ in range(depth):
        e1 = _expect_unique(act, "phi2", d1)
        e2 = e1 if same else _expect_unique(act, "phi2", d2)
        if want_ntk:
            g1 = _expect_unique(act, "dphi2", d1)
            g2 = g1 if same else _expect_unique(act, "dphi2", d2)
        if exact:
            rows = max(1, _BLOCK // max(1, K.shape[1]))
            for r in range(0, K.shape[0], rows):
                sl = slice(r, r + rows)
                cs = slice(r if same else 0, None)  # X2 is X1: the upper block triangle, mirrored below
                F[sl, cs] = cov(d1[sl, None], d2[None, cs], K[sl, cs])
                if want_ntk:
                    G[sl, cs] = dcov(d1[sl, None], d2[None, cs], K[sl, cs])
            if same:
                _mirror_upper(F)
                if want_ntk:
                    _mirror_upper(G)
        else:
            lo, hi = _angle_range(K, d1, d2, same)
            def phi2(q):
                return expectation(act, "phi2", q)

            plan = _plan(act.phi, act, d1, d2, e1, e2, lo, hi, phi2)
            _apply(plan, K, d1, d2, F, same)
            _zero_variance_fix(act.phi, act, d1, d2, F)
            if want_ntk:
                dphi = act.derivative(1)

                def dphi2(q):
                    return expectation(act, "dphi2", q)

                gplan = _plan(dphi, act, d1, d2, g1, g2, lo, hi, dphi2)
                _apply(gplan, K, d1, d2, G, same)
                _zero_variance_fix(dphi, act, d1, d2, G)
        if want_ntk:
            # Theta^l = K^l + sigma_w2 E[phi' phi'] Theta^{l-1}, entrywise
            Theta *= G
            Theta *= sw
            td1 = sb + sw * e1 + sw * g1 * td1
            td2 = td1 if same else sb + sw * e2 + sw * g2 * td2
        np.multiply(F, sw, out=K)
        K += sb
        d1 = sb + sw * e1
        d2 = d1 if same else sb + sw * e2
        if same:
            # F and G are evaluated on the upper triangle and mirrored: K and Theta stay exactly symmetric
            np.fill_diagonal(K, d1)
        if want_ntk:
            Theta += K
            if same:
                np.fill_diagonal(Theta, td1)
    return K, Theta


def nngp(X1, X2=None, act="relu", depth=1, sigma_w2=2.0, sigma_b2=0.0, *, method="auto",
         memory_limit=DEFAULT_MEMORY_LIMIT):
    """NNGP kernel ``K^L(x, x')`` of a deep fully connected network (Lee et al. 2018, eqs. 5-6).

    ``K^0 = sigma_b2 + sigma_w2 x.x'/d_in`` and
    ``K^l = sigma_b2 + sigma_w2 E[phi(u) phi(u')]`` with ``(u, u')`` Gaussian with the 2 x 2
    covariance of ``K^{l-1}`` on ``{x, x'}``; inputs of different norms are handled exactly.

    Parameters
    ----------
    X1 : array (n1, d_in)
    X2 : array (n2, d_in), optional
        Defaults to ``X1`` (then the result is exactly symmetric).
    act : str, Activation or callable
        The nonlinearity phi (see :func:`meanfield.activation`).
    depth : int
        Number of hidden layers L (nonlinearities), >= 0; the linear readout is not counted.
        ``depth=L`` corresponds to ``meanfield.empirical.NetworkSpec(depth=L + 1)``.
    sigma_w2, sigma_b2 : float
        Weight and bias variances (``W_ij ~ N(0, sigma_w2 / fan_in)``, ``b_i ~ N(0, sigma_b2)``).
    method : {"auto", "exact", "interpolate"}
        Closed form where known (``"auto"``), only closed forms (``"exact"``), or the table
        method for every activation (``"interpolate"``, for cross-checks).  See the module
        docstring for the method and its accuracy.
    memory_limit : float
        Bytes the kernel arrays may use; a larger request raises ValueError before any work.

    Returns
    -------
    ndarray (n1, n2)

    Raises
    ------
    ValueError
        Inputs not 2-D, empty, non-finite or of different feature dimensions; depth < 0;
        negative variances; a kernel larger than ``memory_limit``.
    """
    X1, X2, same, act, depth, sw, sb = _check(X1, X2, act, depth, sigma_w2, sigma_b2, method, memory_limit, 2)
    return _recursion(X1, X2, same, act, depth, sw, sb, method, False)[0]


def ntk(X1, X2=None, act="relu", depth=1, sigma_w2=2.0, sigma_b2=0.0, *, method="auto",
        memory_limit=DEFAULT_MEMORY_LIMIT, return_nngp=False):
    """Neural tangent kernel ``Theta^L(x, x')`` in the NTK parametrisation (Jacot et al. 2018).

    ``Theta^0 = K^0`` and ``Theta^l = K^l + sigma_w2 E[phi'(u) phi'(u')] Theta^{l-1}`` (Arora et
    al. 2019, eq. 9; Lee et al. 2019, eq. 7, with ``sigma_w2``, ``sigma_b2`` variances), with
    ``K^l`` the NNGP kernel of :func:`nngp`.  In a finite network with
    ``W^l = sqrt(sigma_w2 / N_{l-1}) Z^l`` and ``b^l = sqrt(sigma_b2) beta^l``, this is the limit of
    ``sum_theta df(x)/dtheta df(x')/dtheta`` over ``theta = (Z, beta)`` of all layers, readout
    included (:func:`meanfield.empirical.empirical_ntk` with ``parametrization="ntk"``).

    Parameters
    ----------
    X1, X2, act, depth, sigma_w2, sigma_b2, method, memory_limit
        As in :func:`nngp`.  ``act`` needs phi' (a kink contributes no Dirac mass).
    return_nngp : bool
        Also return the NNGP kernel ``K^L`` (computed on the way).

    Returns
    -------
    ndarray (n1, n2), or (Theta, K) with ``return_nngp``
    """
    X1, X2, same, act, depth, sw, sb = _check(X1, X2, act, depth, sigma_w2, sigma_b2, method, memory_limit, 4)
    K, Theta = _recursion(X1, X2, same, act, depth, sw, sb, method, True)
    return (Theta, K) if return_nngp else Theta


# ----------------------------------------------------------------------------------------
# Gaussian-process prediction
# ----------------------------------------------------------------------------------------


def _cholesky(A, jitter):
    """Cholesky of ``A + j I``; ``j`` grows from ``jitter`` (x10) while the factorisation fails or
    is numerically singular (reciprocal condition estimate ``(min L_ii / max L_ii)^2 < n eps``).

    Returns (L, j).
    """
    n = A.shape[0]
    scale = float(np.mean(np.diag(A)))
    if not np.isfinite(scale) or scale <= 0:
        scale = 1.0
    j = float(jitter)
    eye = np.eye(n)
    for _ in range(40):
        try:
            L = np.linalg.cholesky(A + j * eye)
            d = np.diag(L)
            if np.all(np.isfinite(L)) and (d.min() / d.max()) ** 2 >= n * np.finfo(float).eps:
                return L, j
        except np.linalg.LinAlgError:
            pass
        j = max(10.0 * j, 1e-12 * scale)
    raise np.linalg.LinAlgError("kernel matrix is not positive definite even with a large diagonal regulariser")


class NNGPRegressor:
    """Gaussian-process regression with the NNGP (or NTK) kernel, scikit-learn style.

    The posterior of a GP with prior covariance ``K`` and observation noise variance ``noise``
    (Lee et al. 2018, eq. 2; Rasmussen & Williams 2006, eqs. 2.25-2.26):

        mean(x*) = K(x*, X) (K(X, X) + noise I)^{-1} y
        cov(x*)  = K(x*, x*) - K(x*, X) (K(X, X) + noise I)^{-1} K(X, x*)

    With ``kernel="ntk"`` the mean is that of an infinitely wide network trained to convergence by
    gradient flow on the squared loss (Jacot et al. 2018; Lee et al. 2019, eq. 16, initial output
    averaged out); its variance is not the GP formula, so only the mean is offered.

    Singular kernels: deep networks in the ordered phase map all inputs towards one point, so
    ``K(X, X)`` approaches a constant matrix and becomes numerically singular.  Then the Cholesky
    factorisation retries with a diagonal regulariser ``jitter`` multiplied by 10 until it
    succeeds; the value used is ``jitter_`` and a :class:`KernelWarning` says so.  The remedy is a
    positive ``noise`` (a ridge term, also the observation-noise variance), fewer layers, or
    parameters nearer the critical line.

    Parameters
    ----------
    act, depth, sigma_w2, sigma_b2
        Network, as in :func:`nngp`.
    kernel : {"nngp", "ntk"}
    noise : float
        Observation-noise variance added to the diagonal of ``K(X, X)``.
    jitter : float
        First diagonal regulariser tried if the factorisation fails (default 0: try none).
    method : str
        As in :func:`nngp`.

    Attributes
    ----------
    X_train_, alpha_, jitter_, n_features_in_
    """

    def __init__(self, act="relu", depth=1, sigma_w2=2.0, sigma_b2=0.0, *, kernel="nngp", noise=0.0, jitter=0.0,
                 method="auto"):
        self.act = act
        self.depth = depth
        self.sigma_w2 = sigma_w2
        self.sigma_b2 = sigma_b2
        self.kernel = kernel
        self.noise = noise
        self.jitter = jitter
        self.method = method

    def get_params(self, deep=True):
        return {k: getattr(self, k) for k in ("act", "depth", "sigma_w2", "sigma_b2", "kernel", "noise", "jitter",
                                              "method")}

    def set_params(self, **params):
        for k, v in params.items():
            if k not in self.get_params():
                raise ValueError(f"unknown parameter {k!r}")
            setattr(self, k, v)
        return self

    def _k(self, A, B=None):
        fn = {"nngp": nngp, "ntk": ntk}.get(self.kernel)
        if fn is None:
            raise ValueError(f"kernel must be 'nngp' or 'ntk', got {self.kernel!r}")
        return fn(A, B, self.act, depth=self.depth, sigma_w2=self.sigma_w2, sigma_b2=self.sigma_b2,
                  method=self.method)

    def fit(self, X, y):
        """Factorise ``K(X, X) + noise I`` and solve for the weights of the posterior mean."""
        X = _inputs("X", X)
        y = np.asarray(y, dtype=float)
        if y.shape[0] != X.shape[0] or y.ndim not in (1, 2):
            raise ValueError(f"y must have shape ({X.shape[0]},) or ({X.shape[0]}, n_targets), got {y.shape}")
        if not np.all(np.isfinite(y)):
            raise ValueError("y must be finite")
        noise = _scalar_variance("noise", self.noise)
        jitter = _scalar_variance("jitter", self.jitter)
        K = self._k(X)
        L, j = _cholesky(K + noise * np.eye(X.shape[0]), jitter)
        if j > jitter:
            warnings.warn(
                f"K(X, X) + noise I is numerically singular (typical deep in the ordered phase, where all inputs "
                f"become alike); added {j:.3g} to its diagonal (jitter_). Remedy: a positive noise, fewer layers, "
                "or parameters nearer the critical line", KernelWarning, stacklevel=2)
        self.X_train_ = X
        self.n_features_in_ = X.shape[1]
        self.jitter_ = j
        self.L_ = L
        from scipy.linalg import cho_solve

        self.alpha_ = cho_solve((L, True), y)
        return self

    def predict(self, X, return_std=False, return_cov=False):
        """Posterior mean, and optionally its standard deviation or covariance (NNGP kernel only)."""
        if not hasattr(self, "alpha_"):
            raise ValueError("call fit before predict")
        X = _inputs("X", X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, the training data had {self.n_features_in_}")
        if (return_std or return_cov) and self.kernel != "nngp":
            raise ValueError("predictive variances are the GP posterior of the NNGP kernel; use kernel='nngp'")
        if return_std and return_cov:
            raise ValueError("give return_std or return_cov, not both")
        Ks = self._k(X, self.X_train_)
        mean = Ks @ self.alpha_
        if not (return_std or return_cov):
            return mean
        from scipy.linalg import solve_triangular

        V = solve_triangular(self.L_, Ks.T, lower=True)
        if return_cov:
            cov = self._k(X) - V.T @ V
            return mean, 0.5 * (cov + cov.T)
        prior = self._prior_var(X)
        var = np.maximum(prior - np.einsum("ij,ij->j", V, V), 0.0)
        return mean, np.sqrt(var)

    def _prior_var(self, X):
        # K^L(x, x) by the one-dimensional variance recursion (Poole et al. 2016, eq. 3)
        act = activation(self.act)
        sw, sb = float(self.sigma_w2), float(self.sigma_b2)
        d = sb + sw * np.einsum("ij,ij->i", X, X) / X.shape[1]
        for _ in range(int(self.depth)):
            d = sb + sw * expectation(act, "phi2", d)
        return d

    def score(self, X, y):
        """Coefficient of determination R^2 of the posterior mean."""
        y = np.asarray(y, dtype=float)
        pred = self.predict(X)
        ss_res = np.sum((y - pred) ** 2)
        ss_tot = np.sum((y - y.mean(axis=0)) ** 2)
        return float(1.0 - ss_res / ss_tot) if ss_tot > 0 else 0.0


class NNGPClassifier(NNGPRegressor):
    """Classification as regression on one-hot targets (Lee et al. 2018, Sec. 2.4).

    Each class ``k`` gets the target ``on`` (default 0.9) for its samples and ``off`` (default -0.1)
    for the others; the prediction is the class of the largest posterior mean.  Parameters as in
    :class:`NNGPRegressor`, plus ``targets=(off, on)``.
    """

    def __init__(self, act="relu", depth=1, sigma_w2=2.0, sigma_b2=0.0, *, kernel="nngp", noise=0.0, jitter=0.0,
                 method="auto", targets=(-0.1, 0.9)):
        super().__init__(act, depth, sigma_w2, sigma_b2, kernel=kernel, noise=noise, jitter=jitter, method=method)
        self.targets = targets

    def get_params(self, deep=True):
        return {**super().get_params(deep), "targets": self.targets}

    def fit(self, X, y):
        y = np.asarray(y)
        if y.ndim != 1:
            raise ValueError("y must be a 1-D array of class labels")
        self.classes_, codes = np.unique(y, return_inverse=True)
        off, on = (float(t) for t in self.targets)
        Y = np.full((y.size, self.classes_.size), off)
        Y[np.arange(y.size), codes] = on
        return super().fit(X, Y)

    def decision_function(self, X):
        """Posterior means of the one-hot targets, shape (n, n_classes)."""
        return NNGPRegressor.predict(self, X)

    def predict(self, X):
        return self.classes_[np.argmax(self.decision_function(X), axis=1)]

    def score(self, X, y):
        """Accuracy."""
        return float(np.mean(self.predict(X) == np.asarray(y)))
