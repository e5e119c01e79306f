"""The bivariate quadrature rule of the kernel tables, with its node layout in compiled code.

:func:`bivariate_shared` gives ``E[fn(u1) fn(u2)]`` for a set of outer variances at once, by a
nested fixed-order rule: ``u1`` outer, ``u2 | u1`` inner, composite 12-point Gauss-Legendre on
panels cut at multiples of the standard deviations, at fixed points on the activation's scale, at
kinks and (outer) around the points where the conditional mean crosses a kink.  Given
``u1 / sqrt(q1)``, the inner integral does not depend on the outer variance ``q1``, so it is
computed once and shared by all outer variances.  Compiled code (numba, cached by
:func:`meanfield._jit.jit`) lays out the nodes; ``fn`` is evaluated on them in large vectorised
batches, chunks of rows spread over threads (:mod:`meanfield._threads`).

Accuracy (tests/test_kernels.py): 1e-13 against mpmath for hard tanh, and within 1e-11 of
adaptive Gauss-Kronrod quadrature (tolerance 1e-12) for tanh, softplus, gelu, mish, selu, swish
and erf at variances 0.05 to 400 and all angles.  The panels resolve features of the activation
within about 12 of the origin, the Gaussian on the scale of its standard deviation (over a range
widened for polynomials of high degree, :func:`meanfield.quadrature.z_range`) and an oscillating
activation on the scale of its waves (:func:`oscillation_cuts`).
"""

from __future__ import annotations

import math

import numpy as np

from ._jit import jit
from ._threads import run, workers
from .activations import Activation
from .quadrature import z_range

__all__ = ["bivariate_shared"]

_GL_X, _GL_W = np.polynomial.legendre.leggauss(12)  # the rule on every panel
_ZCUTS = np.array([-6.0, -4.0, -2.5, -1.25, 0.0, 1.25, 2.5, 4.0, 6.0])  # in standard deviations
_ACUTS = np.array([-12.0, -6.0, -3.0, -1.5, -0.5, 0.0, 0.5, 1.5, 3.0, 6.0, 12.0])  # on the activation's scale
_KCUTS = np.array([-5.0, -2.0, -0.7, 0.0, 0.7, 2.0, 5.0])  # around a kink crossing, in conditional sds
_RANGE = 9.5  # integration range in standard deviations (widened for exponentially growing phi)
_CHUNK_NODES = 1 << 21  # nodes laid out per chunk of rows (bounds the working memory)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


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
    """Standard-normal outer nodes and weights of every row, with row pointers.

    The nodes ``z`` lie on ``[-reach, reach]``; the weights include the density.

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



@jit(nogil=True)
def _inner_sums(f2, w2, iptr):  # pragma: no cover - compiled
    out = np.empty(iptr.size - 1)
    for i in range(iptr.size - 1):
        acc = 0.0
        for j in range(iptr[i], iptr[i + 1]):
            acc += w2[j] * f2[j]
        out[i] = acc
    return out


#: Most cuts an oscillating activation gets on either axis (beyond, the panels are wider than its waves).
MAX_WAVE_CUTS = 2000


def oscillation_cuts(fn, reach: float) -> np.ndarray:
    """Cuts in u, spaced 1.2 times the shortest distance between extrema of ``fn``, where it oscillates.

    ``fn`` is sampled on ``[-reach, reach]`` (at most 200) every 0.005; an extremum counts where the
    differences change sign and both exceed ``1e-9`` of the largest ``|fn|`` there (rounding in flat
    tails does not count).  A 12-point Gauss-Legendre panel of width ``w`` integrates ``sin(k u)``
    with an error near ``(k w / 2)^24 / 24!``: at ``w = 1.2 pi / k`` that is 6e-18.
    No cuts where ``fn`` has fewer than three extrema; at most :data:`MAX_WAVE_CUTS` (then a
    KernelWarning: the error may exceed the tables' tolerance).
    """
    r = min(float(reach), 200.0)
    u = np.arange(-r, r + 0.0025, 0.005)
    with np.errstate(all="ignore"):
        f = np.asarray(fn(u), dtype=float)
    f = np.where(np.isfinite(f), f, 0.0)
    d = np.diff(f)
    tol = 1e-9 * max(float(np.max(np.abs(f))), 1e-300)
    big = np.abs(d) > tol * 0.005
    turn = np.flatnonzero(big[:-1] & big[1:] & (np.sign(d[:-1]) != np.sign(d[1:])))
    if turn.size < 3:
        return np.empty(0)
    where = u[turn + 1]
    width = 1.2 * float(np.min(np.diff(where)))
    lo, hi = float(where[0]) - width, float(where[-1]) + width
    if (hi - lo) / width > MAX_WAVE_CUTS:
        from ._kernel_tables import warn

        warn(f"the activation oscillates on a scale of {width:.2g} over [{lo:.3g}, {hi:.3g}]: the kernel's quadrature "
             f"is capped at {MAX_WAVE_CUTS} panels there, so its error may exceed the tables' tolerance")
        width = (hi - lo) / MAX_WAVE_CUTS
    return np.arange(lo, hi + 0.5 * width, width)


def bivariate_shared(fn, act: Activation, qa, q2, theta, cache: dict | None = None) -> np.ndarray:
    """``E[fn(u1) fn(u2)]`` for every ``u1 ~ N(0, qa[a])`` and every row ``(q2, theta)``: (len(qa), rows).

    The nested fixed-order rule of the module docstring.  The outer variable is
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
    sa = np.sqrt(qa)
    s_lo, s_hi = float(sa.min()), float(sa.max())
    # wider than _RANGE where fn grows like a polynomial of high degree (mass near z = sqrt(degree))
    zr = z_range(lambda u: np.asarray(fn(u), dtype=float) ** 2, np.sqrt(np.concatenate([qa, q2])), base=_RANGE)
    # an oscillating fn: cuts every `wave` over the stretch where it oscillates, in u1 and in u2
    waves = oscillation_cuts(fn, zr * max(s_hi, float(np.sqrt(q2.max()))))
    feats = np.sort(np.concatenate([_ACUTS, kinks, waves]))
    scales = s_hi * 0.5 ** np.arange(math.floor(math.log2(s_hi / s_lo)) + 1)
    fixed = np.unique(np.concatenate([(_ACUTS[:, None] / scales[None, :]).ravel(),
                                      (kinks[:, None] / sa[None, :]).ravel(), waves / s_hi]))
    reach = zr + 2.0 * act.exp_rate * np.sqrt(np.maximum(q2, qa.max()))
    a2 = np.sqrt(q2)
    beta = a2 * np.cos(theta)  # E[u2 | z] = beta z
    sd2 = a2 * np.sin(theta)
    cache = {} if cache is None else cache
    fkey = fixed.tobytes()
    keys = [(fkey, q2[r], theta[r], reach[r]) for r in range(q2.size)]
    out = np.empty((qa.size, q2.size))
    per_row = (_ZCUTS.size + fixed.size + kinks.size * _KCUTS.size + 1) * (_ZCUTS.size + feats.size + 1) * _GL_X.size**2
    rows = max(1, min(_CHUNK_NODES // per_row, -(-q2.size // workers())))

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
    run(chunk, range(0, q2.size, rows), threads=act.expr is not None)
    return out
