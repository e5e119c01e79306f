"""Phase diagrams over (sigma_w2, sigma_b2) grids: every mean-field field, fast and accurate.

:func:`phase_diagram` computes, on a grid of weight and bias variances, the fixed points
``q*`` and ``c*``, ``chi_1``, ``chi_c``, the depth scales ``xi_q`` and ``xi_c``, the trainable
depth ``6 xi_c``, the phase, and the critical line ``chi_1 = 1`` (Poole et al. 2016;
Schoenholz et al. 2017).  The values agree with :func:`meanfield.analyze` (the per-point
reference) to about 1e-12, but are computed for all points at once:

1. **One-dimensional tables.**  ``V(q) = E[phi(sqrt(q) z)^2]``, ``D1(q) = E[phi'(sqrt(q) z)^2]``
   and the q-map slope ``S(q) = dV/dq`` are tabulated once per activation (and process) as
   piecewise Chebyshev series in ``t = ln q`` (patches of unit width, 32 Chebyshev points of the
   first kind; node values from the core adaptive quadrature at ~1e-12).  A patch whose last
   Chebyshev coefficients are not below 1e-14 of its largest is not used: its points are
   integrated directly.  Patches are built lazily, only where a query needs them.  ``q*`` is
   then a vectorised bracketed root (the same bracketing as :func:`meanfield.q_star`).

2. **Mehler (Hermite) expansion of the correlation map at q*** (chaotic points only; the
   ordered phase needs no bivariate integral: ``c* = 1``, ``chi_c = chi_1``).  With
   ``b_k(q) = E[phi(sqrt(q) z) He_k(z)] / sqrt(k!)`` and ``a_k = b_k^2`` (Mehler's formula),
   ``E[phi(u1) phi(u2)] = sum_k a_k c^k`` for ``u1, u2`` of variance q and correlation c, so

   * ``D(q, c) / (1 - c) = sum_{j>=0} A_j c^j``, ``A_j = sum_{k>j} a_k``, where
     ``D = E[(phi(u1) - phi(u2))^2] / 2``: the well-conditioned fixed-point equation
     ``G(c) = 1 - sigma_w2 (V (1/rho - 1) + D) / (q (1 - c)) = 0`` of the core;
   * ``E[phi'(u1) phi'(u2)] = (1/q) sum_{k>=1} k a_k c^(k-1)`` (Price's theorem; Gaussian
     integration by parts ``E[phi'(sqrt(q) z) He_k] = E[phi He_{k+1}] / sqrt(q)``).

   The ``b_k`` of a batch of points are one matrix product: the trapezoidal rule on a half grid
   in z (even and odd parts of phi apart) against the Gaussian-weighted normalised Hermite
   functions from their three-term recurrence.  For phi analytic in a strip (tanh: poles at
   ``+-i pi/2``) the trapezoidal rule converges exponentially.  The truncation order grows with
   q (``30 + 150 q`` terms).  A point is accepted only if the two sum rules
   ``sum_k a_k = V(q)`` and ``sum_k k a_k = q D1(q)`` hold to 1e-11 against the independent
   1-D quadrature; the second bounds the truncation error of both series for every
   ``|c| <= 1``, since ``(1 - c^k)/(1 - c) <= k`` and ``k |c|^(k-1) <= k`` there.  Points that
   fail (kinked or fast-growing activations, very large q*) are computed per point by the
   core (:func:`meanfield.fixed_points.c_star`'s method), which is slow but exact.

3. **Root-finding in compiled code.**  The largest attracting root of G below 1 is bracketed
   by the same scan as :func:`meanfield.c_star` and polished by safeguarded Newton in a numba
   kernel that takes only arrays (compiled once, cached on disk).

Activations with closed forms (erf, the relu family, sin, cos, ...) use them throughout.
Memory: the grid is processed in chunks, so working memory is bounded by the chunk size and
does not grow with the number of quadrature nodes; the result itself takes about 100 bytes
per grid point.
"""

from __future__ import annotations

import functools
import math
import os
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np

from . import _validate
from ._io import atomic_write
from ._jit import jit
from .activations import Activation, activation
from .expectations import expectation
from .fixed_points import _bracketed_roots, _c_star_point, _q_star_search
from .phase import TRAINABLE_DEPTH_FACTOR, _critical_search, _depth_scale
from .symbolic import numeric

__all__ = ["phase_diagram", "PhaseDiagram", "load_phase_diagram", "GridTooLargeError", "PHASES"]
_KINDS1 = ("phi2", "dphi2", "slope")
_CHEB_N = 32
_PATCH_WIDTH = 1.0
_T_MIN = math.log(1e-8)
_T_MAX = math.log(1e8)
_TAIL_TOL = 1e-14
_SUM_RULE_TOL = 1e-11
_K_MAX = 6000
_Z_RANGE = 13.0
_STEP = 8.0

# Chebyshev points of the first kind on [-1, 1] and the matrix from values to coefficients
_J = np.arange(_CHEB_N)
_CHEB_X = np.cos(np.pi * (_J + 0.5) / _CHEB_N)
_CHEB_M = (2.0 / _CHEB_N) * np.cos(np.pi * np.outer(_J, _J + 0.5) / _CHEB_N)
_CHEB_M[0] *= 0.5


def _clenshaw(coef, x):
    """sum_k coef[:, k] T_k(x) for rows of coefficients and points x (same length)."""
    b1 = np.zeros(x.shape)
    b2 = np.zeros(x.shape)
    x2 = 2.0 * x
    for k in range(coef.shape[1] - 1, 0, -1):
        b1, b2 = coef[:, k] + x2 * b1 - b2, b1
    return coef[:, 0] + x * b1 - b2


class _Table1D:
    """Lazily built piecewise-Chebyshev tables of V, D1 and S in ln q."""

    def __init__(self, act: Activation):
        self.act = act
        self.n_patch = int(math.ceil((_T_MAX - _T_MIN) / _PATCH_WIDTH))
        # coefficients: (kind, patch, k); a patch is built (built) and usable (ok)
        self.coef = np.zeros((len(_KINDS1), self.n_patch, _CHEB_N))
        self.built = np.zeros(self.n_patch, dtype=bool)
        self.ok = np.zeros(self.n_patch, dtype=bool)
        self.lock = threading.Lock()

    def _build(self, patches):
        t0 = _T_MIN + _PATCH_WIDTH * patches
        t = (t0[:, None] + 0.5 * _PATCH_WIDTH * (1.0 + _CHEB_X[None, :])).ravel()
        q = np.exp(t)
        for i, kind in enumerate(_KINDS1):
            vals = expectation(self.act, kind, q).reshape(patches.size, _CHEB_N)
            coef = vals @ _CHEB_M.T
            self.coef[i, patches] = coef
            scale = np.max(np.abs(coef), axis=1)
            tail = np.max(np.abs(coef[:, -4:]), axis=1)
            good = tail <= _TAIL_TOL * np.maximum(scale, np.finfo(float).tiny)
            self.ok[patches] = (self.ok[patches] | (i == 0)) & good
        self.built[patches] = True

    def __call__(self, kinds, q):
        """Values of each kind in ``kinds`` at q (any shape >= 0); a tuple of arrays."""
        q = np.asarray(q, dtype=float)
        flat = q.ravel()
        out = [np.empty(flat.size) for _ in kinds]
        with np.errstate(divide="ignore"):
            t = np.log(flat)
        inside = (t >= _T_MIN) & (t < _T_MAX)
        patch = np.zeros(flat.size, dtype=np.intp)
        patch[inside] = ((t[inside] - _T_MIN) / _PATCH_WIDTH).astype(np.intp)
        patch = np.minimum(patch, self.n_patch - 1)
        need = np.unique(patch[inside])
        missing = need[~self.built[need]]
        if missing.size:
            with self.lock:
                missing = missing[~self.built[missing]]
                if missing.size:
                    self._build(missing)
        use = inside & self.ok[patch]
        idx = np.flatnonzero(use)
        if idx.size:
            p = patch[idx]
            x = 2.0 * (t[idx] - (_T_MIN + _PATCH_WIDTH * p)) / _PATCH_WIDTH - 1.0
            for o, kind in zip(out, kinds, strict=True):
                o[idx] = _clenshaw(self.coef[_KINDS1.index(kind), p], x)
        rest = np.flatnonzero(~use)
        if rest.size:
            for o, kind in zip(out, kinds, strict=True):
                o[rest] = expectation(self.act, kind, flat[rest])
        return tuple(o.reshape(q.shape) for o in out)


# ----------------------------------------------------------------------------------------
# Hermite functions on a half grid
# ----------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _hermite_half_grid(h: float, K: int):
    """z_j = j h on [0, Z_RANGE] and trapezoid-weighted He_k(z_j) phi(z_j)/sqrt(k!) for k <= K.

    Returns (z, G_even, G_odd): full-line trapezoid weights folded onto z >= 0 (2h, and h at
    z = 0), so that ``b_k = sum_j f_par(z_j) G[j, k]`` for the even (odd) part of f.
    """
    z = np.arange(0.0, _Z_RANGE + 0.5 * h, h)
    w = np.full(z.size, 2.0 * h)
    w[0] = h
    g = np.empty((K + 1, z.size))
    g[0] = np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    if K >= 1:
        g[1] = z * g[0]
    for k in range(1, K):
        g[k + 1] = (z * g[k] - math.sqrt(k) * g[k - 1]) / math.sqrt(k + 1.0)
    g *= w
    return z, np.ascontiguousarray(g[0::2].T), np.ascontiguousarray(g[1::2].T)


def _mehler_params(q_hi: float, boost: int):
    """Truncation order and trapezoid step for points with q <= q_hi."""
    K = int(math.ceil(30 + 150.0 * q_hi)) * (2 ** boost)
    d = math.pi / (2.0 * math.sqrt(q_hi))  # distance of tanh's poles from the real z axis
    h = min(0.5, 2.0 * math.pi * d / (40.0 + math.sqrt(2.0 * K) * d + 0.25 * d * d)) / (1.5 ** boost)
    return K, h


def _mehler_coefficients(phi, q, K, h, parity=0):
    """Hermite coefficients b_k(q) of phi(sqrt(q) z), k = 0..K: (even k, odd k) rows per q.

    ``parity`` is 1 for an odd phi, 2 for an even one (the other half is then empty), else 0.
    """
    z, g_even, g_odd = _hermite_half_grid(float(h), int(K))
    u = np.sqrt(q)[:, None] * z[None, :]
    fp = phi(u)
    empty = np.zeros((q.size, 0))
    if parity == 1:
        return empty, fp @ g_odd
    if parity == 2:
        return fp @ g_even, empty
    fm = phi(-u)
    return (0.5 * (fp + fm)) @ g_even, (0.5 * (fp - fm)) @ g_odd


def _parity(phi):
    """1 if phi is exactly odd in floating point on a test sample, 2 if even, else 0."""
    xs = np.concatenate([np.linspace(0.0, 30.0, 301), np.geomspace(1e-8, 1e3, 200)])
    with np.errstate(all="ignore"):
        p, m = phi(xs), phi(-xs)
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(m))):
        return 0
    if np.array_equal(p, -m):
        return 1
    if np.array_equal(p, m):
        return 2
    return 0


# ----------------------------------------------------------------------------------------
# Compiled root-finding for G(c) = 1 - s (E0/(1 - c) + sum_j A_j c^j)
# ----------------------------------------------------------------------------------------

_TOPS = (1e-6, 1e-9, 1e-12)
_BELOWS = (0.99, 0.9, 0.5, 0.0, -0.5, -1.0)


@jit()
def n_needed(n, x):
    # terms beyond j with |x|^j < 1e-19 cannot matter (the coefficients decrease)
    ax = abs(x)
    if ax < 0.999:
        m = int(-43.8 / math.log(ax)) + 2 if ax > 0.0 else 1
        if m < n:
            return m
    return n

@jit()
def g_and_slope(A, n, s, e0, x):
    # G(x) = 1 - s (e0 / (1 - x) + sum_j A_j x^j) and dG/dx, by Horner
    m = n_needed(n, x)
    p = 0.0
    dp = 0.0
    for j in range(m - 1, -1, -1):
        dp = dp * x + p
        p = p * x + A[j]
    inv = 1.0 / (1.0 - x)
    return 1.0 - s * (e0 * inv + p), -s * (e0 * inv * inv + dp)

@jit()
def poly(B, n, x):
    m = n_needed(n, x)
    acc = 0.0
    for j in range(m - 1, -1, -1):
        acc = acc * x + B[j]
    return acc

@jit()
def c_star_kernel(b_even, b_odd, s, e0, out_c, out_chi, out_s0, out_s1):
    """Per row of Hermite coefficients: c* (the core's scan, then safeguarded Newton), chi_c,
    and the sums sum_k a_k and sum_k k a_k (a_k = b_k^2) for the sum-rule checks."""
    tops = np.array([1e-6, 1e-9, 1e-12])
    belows = np.array([0.99, 0.9, 0.5, 0.0, -0.5, -1.0])
    ne = b_even.shape[1]
    no = b_odd.shape[1]
    K = max(2 * ne - 2, 2 * no - 1)
    if K < 1:
        K = 1
    a = np.zeros(K + 1)
    A = np.empty(K)
    B = np.empty(K)
    for i in range(s.shape[0]):
        for k in range(K + 1):
            a[k] = 0.0
        for k in range(ne):
            a[2 * k] = b_even[i, k] * b_even[i, k]
        for k in range(no):
            if 2 * k + 1 <= K:
                a[2 * k + 1] = b_odd[i, k] * b_odd[i, k]
        # A_j = sum_{k > j} a_k (summed from the small end), B_j = (j + 1) a_{j+1}
        acc = 0.0
        s1 = 0.0
        for j in range(K - 1, -1, -1):
            acc += a[j + 1]
            A[j] = acc
            B[j] = (j + 1) * a[j + 1]
            s1 += B[j]
        out_s0[i] = acc + a[0]
        out_s1[i] = s1
        n = K
        while n > 1 and A[n - 1] <= 1e-20 * A[0]:
            n -= 1
        top = 2.0
        ftop = 0.0
        for e in tops:
            f, _ = g_and_slope(A, n, s[i], e0[i], 1.0 - e)
            if f < 0.0:
                top = 1.0 - e
                ftop = f
                break
        if top > 1.0:
            out_c[i] = 1.0
            out_chi[i] = s[i] * poly(B, n, 1.0)
            continue
        root = -1.0
        for below in belows:
            if below >= top:
                continue
            fb, _ = g_and_slope(A, n, s[i], e0[i], below)
            if fb >= 0.0:
                if fb == 0.0:
                    root = below
                    break
                # safeguarded Newton on [lo, hi], G(lo) > 0 > G(hi)
                lo, hi = below, top
                x = hi if -ftop < fb else lo
                for _ in range(100):
                    fx, dfx = g_and_slope(A, n, s[i], e0[i], x)
                    if fx == 0.0:
                        break
                    if fx > 0.0:
                        lo = x
                    else:
                        hi = x
                    xn = x - fx / dfx if dfx != 0.0 else 0.5 * (lo + hi)
                    if not (xn > lo and xn < hi):
                        xn = 0.5 * (lo + hi)
                    step = abs(xn - x)
                    x = xn
                    if step <= 1e-16 * max(abs(x), 1e-3) or hi - lo <= 1e-16 * max(abs(x), 1e-3):
                        break
                root = x
                break
            top = below
            ftop = fb
        out_c[i] = root
        out_chi[i] = s[i] * poly(B, n, root)


def _kernel():
    return c_star_kernel


def _c_star_numpy(G, n):
    """Vectorised version of the core's scan + root bracket, for closed-form G(c, idx)."""
    top = np.full(n, np.nan)
    ftop = np.full(n, np.nan)
    todo = np.arange(n)
    for e in _TOPS:
        if todo.size == 0:
            break
        f = G(np.full(todo.size, 1.0 - e), todo)
        neg = f < 0
        top[todo[neg]], ftop[todo[neg]] = 1.0 - e, f[neg]
        todo = todo[~neg]
    root = np.full(n, np.nan)
    root[todo] = 1.0
    active = np.flatnonzero(np.isfinite(top))
    lo = np.full(n, np.nan)
    flo = np.full(n, np.nan)
    for below in _BELOWS:
        if active.size == 0:
            break
        cand = active[top[active] > below]
        skip = active[top[active] <= below]
        if cand.size == 0:
            active = skip
            continue
        fb = G(np.full(cand.size, below), cand)
        hit = fb >= 0
        lo[cand[hit]], flo[cand[hit]] = below, fb[hit]
        miss = cand[~hit]
        top[miss], ftop[miss] = below, fb[~hit]
        active = np.concatenate([skip, miss])
    root[active] = -1.0
    br = np.flatnonzero(np.isfinite(lo))
    if br.size:
        r, _, _ = _bracketed_roots(lambda c, idx: G(c, br[idx]), lo[br], top[br], flo[br], ftop[br],
                                   rel_tol=4e-16)
        root[br] = r
    return root


# ----------------------------------------------------------------------------------------
# The engine
# ----------------------------------------------------------------------------------------


class Engine:
    """Vectorised q*, chi_1, q-map slope, c* and chi_c for one activation."""

    def __init__(self, act: Activation):
        self.act = act
        self.closed = {k: numeric(act, k) for k in ("phi2", "dphi2", "slope", "cov", "dcov")}
        self.closed_1d = all(self.closed[k] is not None for k in _KINDS1)
        self.closed_2d = self.closed["cov"] is not None and self.closed["dcov"] is not None
        self.table = None if self.closed_1d else _Table1D(act)
        self.mehler_ok = act.exp_rate == 0 and act.continuous and act.dphi is not None
        self.parity = _parity(act.phi) if self.mehler_ok else 0

    # ---- one-dimensional ----
    def one_dim(self, kinds, q):
        q = np.asarray(q, dtype=float)
        if self.closed_1d:
            return tuple(self.closed[k](q) for k in kinds)
        return self.table(kinds, q)

    def q_star(self, w, b, q0=None):
        """Fixed point of q -> w V(q) + b reached from q0 (default 1), as the core's q_star."""
        q0 = np.ones(w.size) if q0 is None else q0
        value, converged, _, _ = _q_star_search(lambda q: self.one_dim(("phi2",), q)[0], w, b, q0)
        return value, converged

    # ---- correlation fixed point ----
    def c_star(self, w, q, rho):
        """c* and chi_c at finite q > 0 for points that need a root (chaotic, or rho < 1).

        Returns (c_star, chi_c, accepted): ``accepted`` is False where the fast path could not
        certify its accuracy; those entries must be computed by the caller (core per point).
        """
        n = w.size
        cs = np.full(n, np.nan)
        chic = np.full(n, np.nan)
        accepted = np.zeros(n, dtype=bool)
        if n == 0:
            return cs, chic, accepted
        if self.closed_2d and self.closed_1d:
            v = self.closed["phi2"](q)
            cov, dcov = self.closed["cov"], self.closed["dcov"]

            def G(c, idx):
                qi = q[idx]
                d = v[idx] - cov(qi, qi, c * qi)
                return 1.0 - w[idx] * (v[idx] * (1.0 / rho - 1.0) + d) / (qi * (1.0 - c))

            cs[:] = _c_star_numpy(G, n)
            chic[:] = w * dcov(q, q, cs * q)
            accepted[:] = True
            return cs, chic, accepted
        if not self.mehler_ok:
            return cs, chic, accepted
        V, D1 = self.one_dim(("phi2", "dphi2"), q)
        todo = np.arange(n)
        for boost in range(2):
            if todo.size == 0:
                break
            still = []
            # bins of q a quarter octave wide share a truncation order and a grid
            with np.errstate(divide="ignore"):
                key = np.floor(4.0 * np.log2(q[todo]))
            for kb in np.unique(key):
                sel = todo[key == kb]
                q_hi = float(np.max(q[sel]))
                K, h = _mehler_params(max(q_hi, 1e-3), boost)
                if K > _K_MAX:
                    still.append(sel)
                    continue
                for start in range(0, sel.size, max(1, 2_000_000 // (K + 1))):
                    part = sel[start:start + max(1, 2_000_000 // (K + 1))]
                    ok = self._mehler_part(part, w, q, rho, V, D1, K, h, cs, chic)
                    accepted[part[ok]] = True
                    still.append(part[~ok])
            todo = np.concatenate(still) if still else np.zeros(0, dtype=np.intp)
        return cs, chic, accepted

    def _mehler_part(self, part, w, q, rho, V, D1, K, h, cs, chic):
        qp = q[part]
        b_even, b_odd = _mehler_coefficients(self.act.phi, qp, K, h, self.parity)
        m = part.size
        s = w[part] / qp
        e0 = V[part] * (1.0 / rho - 1.0)
        out_c, out_chi, s0, s1 = (np.empty(m) for _ in range(4))
        _kernel()(b_even, b_odd, s, e0, out_c, out_chi, s0, s1)
        # sum rules against the independent 1-D quadrature: sum a_k = V, sum k a_k = q D1
        ok = (np.abs(s0 - V[part]) <= _SUM_RULE_TOL * np.maximum(np.abs(V[part]), 1e-300)) & (
            np.abs(s1 - qp * D1[part]) <= _SUM_RULE_TOL * np.maximum(qp * D1[part], 1e-300))
        cs[part[ok]] = out_c[ok]
        chic[part[ok]] = out_chi[ok]
        return ok


@functools.lru_cache(maxsize=16)
def engine(act: Activation) -> Engine:
    """The (cached) engine of an activation: tables persist for the life of the process."""
    return Engine(act)


# ----------------------------------------------------------------------------------------
# The public part
# ----------------------------------------------------------------------------------------

#: Phase labels, indexed by the integer codes stored in files.
PHASES = ("ordered", "chaotic", "critical", "divergent")
_FIELDS = ("q_star", "c_star", "chi_1", "chi_c", "q_slope", "xi_q", "xi_c", "trainable_depth",
           "gradient_factor")
#: Result arrays plus the flat (sigma_w2, sigma_b2) pairs and the phase code, per point.
_BYTES_PER_POINT = 8 * (len(_FIELDS) + 2) + 1 + 4 * 9
_CHUNK = 20000
_CHUNK_BYTES = 64 * 2**20  # bounded working memory of one chunk
_FORMAT = 1


class GridTooLargeError(ValueError):
    """The requested grid does not fit in memory (the message says how much it needs)."""


def _fmt_bytes(n):
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.3g} {unit}"
        n /= 1000.0
    return f"{n:.3g} PB"  # pragma: no cover


def _available_memory():
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8 * 2**30


def _grid(name, values, default):
    if values is None:
        values = default
    arr = np.asarray(values, dtype=float) if not isinstance(values, str) else None
    if arr is None:
        raise TypeError(f"{name} must be a number or a 1-D array of numbers")
    arr = _validate.nonnegative(name, np.atleast_1d(arr))
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D grid, got an array of shape {arr.shape}")
    if arr.size > 1 and np.any(np.diff(arr) <= 0):
        raise ValueError(f"{name} grid must be strictly increasing")
    return arr


def required_memory(n_sigma_w2: int, n_sigma_b2: int) -> int:
    """Bytes a phase diagram of this size needs (results plus bounded working memory)."""
    return int(n_sigma_w2) * int(n_sigma_b2) * _BYTES_PER_POINT + 4 * _CHUNK_BYTES


@dataclass(frozen=True, eq=False)
class PhaseDiagram:
    """Mean-field fields on a (sigma_b2, sigma_w2) grid (Poole et al. 2016; Schoenholz et al. 2017).

    Every field is an array of shape ``(len(sigma_b2), len(sigma_w2))``: ``field[i, j]`` is at
    ``sigma_b2[i]``, ``sigma_w2[j]`` (rows are bias variances, as in Schoenholz et al. 2017,
    Fig. 1, with sigma_w2 on the horizontal axis).

    Attributes
    ----------
    activation : str
        Name of the activation.
    sigma_w2, sigma_b2 : 1-D arrays
        The grid (variances).
    rho : float
        Dropout keep probability.
    q_star : fixed point of ``q -> sigma_w2/rho E[phi(sqrt(q) z)^2] + sigma_b2`` (inf: divergent)
    c_star : attracting fixed point of the correlation map
    chi_1 : ``sigma_w2 E[phi'(sqrt(q*) z)^2]`` (Poole et al. 2016, eq. 7)
    chi_c : ``sigma_w2 E[phi'(u1) phi'(u2)]`` at (q*, c*) (Schoenholz et al. 2017, eq. 8)
    q_slope : slope of the variance map at q*
    xi_q, xi_c : depth scales ``-1/ln(q_slope)`` and ``-1/ln(chi_c)`` (Schoenholz eqs. 5, 9)
    trainable_depth : ``6 xi_c`` (Schoenholz et al. 2017, Sec. 6)
    gradient_factor : per-layer factor of the squared gradient norm, ``chi_1 / rho``
    phase : str array, one of :data:`PHASES` (as :func:`meanfield.analyze`: "critical" where
        ``|chi_1 - 1| < 1e-9``, "divergent" where q* is infinite)
    critical_line : ``sigma_w2`` on ``chi_1 = 1`` for each ``sigma_b2`` (NaN where there is none)
    n_reference : int
        Points whose c* the fast path could not certify and that were computed per point by the
        core instead.
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
    critical_line: np.ndarray
    n_reference: int = 0

    @property
    def shape(self):
        """``(len(sigma_b2), len(sigma_w2))``."""
        return (self.sigma_b2.size, self.sigma_w2.size)

    @property
    def phase_code(self):
        """The phase as integer codes into :data:`PHASES`."""
        codes = np.zeros(self.shape, dtype=np.int8)
        for k, name in enumerate(PHASES):
            codes[self.phase == name] = k
        return codes

    def critical_trainable_depth(self, offset=0.05):
        """Trainable depth just off the critical line, for each sigma_b2.

        The trainable depth diverges on the line itself; what a practitioner can use is its value
        at ``sigma_w2 = (1 + offset) * critical sigma_w2`` (chaotic side), interpolated in
        sigma_w2 along each row of the grid.  NaN where that point is outside the grid.
        """
        out = np.full(self.sigma_b2.size, np.nan)
        target = (1.0 + offset) * self.critical_line
        for i, t in enumerate(target):
            if np.isfinite(t) and self.sigma_w2[0] <= t <= self.sigma_w2[-1] and self.sigma_w2.size > 1:
                row = self.trainable_depth[i]
                j = int(np.clip(np.searchsorted(self.sigma_w2, t), 1, self.sigma_w2.size - 1))
                lo, hi = row[j - 1], row[j]
                if np.isfinite(lo) and np.isfinite(hi):
                    out[i] = np.interp(t, self.sigma_w2[j - 1:j + 1], row[j - 1:j + 1])
                else:  # an infinite or undefined neighbour (on the line, or divergent variance)
                    out[i] = hi if t - self.sigma_w2[j - 1] > self.sigma_w2[j] - t else lo
        return out

    def plot(self, ax=None, **kwargs):
        """The phase diagram with critical line and trainable-depth contours.

        See :func:`meanfield.plotting.plot_phase_diagram`; returns ``(fig, ax)``.
        """
        from .plotting import plot_phase_diagram

        return plot_phase_diagram(self, ax=ax, **kwargs)

    def save(self, path):
        """Write every field and parameter to an ``.npz`` file, atomically.

        The data go to a temporary file in the same directory, which is then renamed over
        ``path`` (``os.replace``): the file is complete or absent, never half-written.
        """
        path = os.fspath(path)
        arrays = {name: np.asarray(getattr(self, name), dtype=float) for name in _FIELDS}
        arrays.update(
            format=np.array(_FORMAT), activation=np.array(self.activation), rho=np.array(self.rho),
            sigma_w2=self.sigma_w2, sigma_b2=self.sigma_b2, phase_code=self.phase_code,
            phase_names=np.array(PHASES), critical_line=self.critical_line,
            n_reference=np.array(self.n_reference),
        )
        atomic_write(path, lambda fh: np.savez(fh, **arrays), prefix=".phase-diagram-")
        return path

    @classmethod
    def load(cls, path):
        """Read a file written by :meth:`save`."""
        return load_phase_diagram(path)

    def as_dict(self):
        """Plain Python values (lists, floats, str) for JSON; non-finite floats stay as floats."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.tolist() if isinstance(v, np.ndarray) else v
        return out


def load_phase_diagram(path) -> PhaseDiagram:
    """Load a :class:`PhaseDiagram` written by :meth:`PhaseDiagram.save`.

    Raises
    ------
    ValueError
        If the file is not a phase-diagram file (missing fields or an unknown format).
    """
    with np.load(os.fspath(path), allow_pickle=False) as data:
        missing = [k for k in (*_FIELDS, "format", "activation", "rho", "sigma_w2", "sigma_b2", "phase_code",
                               "phase_names", "critical_line") if k not in data.files]
        if missing:
            raise ValueError(f"{path!s} is not a meanfield phase-diagram file (missing {', '.join(missing)})")
        if int(data["format"]) != _FORMAT:
            raise ValueError(f"{path!s}: unsupported phase-diagram format {int(data['format'])}")
        names = np.asarray(data["phase_names"]).astype(str)
        values = {k: np.array(data[k]) for k in _FIELDS}
        return PhaseDiagram(
            activation=str(data["activation"]), sigma_w2=np.array(data["sigma_w2"]),
            sigma_b2=np.array(data["sigma_b2"]), rho=float(data["rho"]),
            phase=names[np.asarray(data["phase_code"], dtype=np.intp)].astype(f"U{max(map(len, names))}"),
            critical_line=np.array(data["critical_line"]),
            n_reference=int(data["n_reference"]) if "n_reference" in data.files else 0, **values,
        )


def phase_diagram(act="tanh", sigma_w2=None, sigma_b2=None, rho=1.0, *,
                  progress: Callable[[int, int], None] | None = None,
                  max_memory: float | None = None) -> PhaseDiagram:
    """Every mean-field field on a (sigma_w2, sigma_b2) grid (Schoenholz et al. 2017, Fig. 1).

    For each grid point: ``q*`` solves ``q = sigma_w2/rho E[phi(sqrt(q) z)^2] + sigma_b2``
    (Poole et al. 2016, eq. 3); ``chi_1 = sigma_w2 E[phi'(sqrt(q*) z)^2]`` (eq. 7); ``c*`` is
    the attracting fixed point of the correlation map (eq. 5), 1 in the ordered phase;
    ``chi_c = sigma_w2 E[phi'(u1) phi'(u2)]`` at (q*, c*), ``xi_q``, ``xi_c = -1/ln chi_c`` and
    the trainable depth ``6 xi_c`` (Schoenholz et al. 2017, eqs. 5, 8, 9 and Sec. 6).  The
    values are those of :func:`meanfield.analyze` (see the module docstring for the method and
    its error control).

    Parameters
    ----------
    act : Activation or str
        Default ``"tanh"``.
    sigma_w2, sigma_b2 : 1-D array_like
        Strictly increasing grids of weight and bias variances (>= 0, finite).  Defaults:
        ``linspace(0.5, 5, 200)`` and ``linspace(0, 2, 200)``.
    rho : float
        Dropout keep probability (Schoenholz et al. 2017, Sec. 5).
    progress : callable, optional
        Called as ``progress(done, total)`` (grid points) after each chunk; library code
        prints nothing itself.
    max_memory : float, optional
        Refuse grids needing more bytes than this (default: the memory available now).

    Returns
    -------
    PhaseDiagram

    Raises
    ------
    GridTooLargeError
        If the grid needs more memory than allowed; the message gives the size needed.
    ValueError
        For empty, negative, non-finite or unsorted grids.
    """
    act = activation(act)
    rho = _validate.keep_probability(rho)
    sw = _grid("sigma_w2", sigma_w2, np.linspace(0.5, 5.0, 200))
    sb = _grid("sigma_b2", sigma_b2, np.linspace(0.0, 2.0, 200))
    need = required_memory(sw.size, sb.size)
    limit = _available_memory() if max_memory is None else float(max_memory)
    if need > limit:
        raise GridTooLargeError(
            f"a {sb.size} x {sw.size} (sigma_b2 x sigma_w2) grid needs about {_fmt_bytes(need)} of memory "
            f"({_BYTES_PER_POINT} bytes per point), more than the {_fmt_bytes(limit)} available; use a coarser grid")
    act.derivative(1)  # a clear error now if chi_1 is undefined
    eng = engine(act)
    n = sw.size * sb.size
    out = {name: np.empty(n) for name in _FIELDS}
    code = np.empty(n, dtype=np.int8)
    n_ref = 0
    for start in range(0, n, _CHUNK):
        stop = min(n, start + _CHUNK)
        flat = np.arange(start, stop)
        w = sw[flat % sw.size]
        b = sb[flat // sw.size]
        res, c, nr = _chunk(eng, act, w, b, rho)
        for name in _FIELDS:
            out[name][start:stop] = res[name]
        code[start:stop] = c
        n_ref += nr
        if progress is not None:
            progress(stop, n)
    crit = _critical_sigma_w2(eng, sb, rho)
    shape = (sb.size, sw.size)
    phase = np.array(PHASES)[code.reshape(shape)]
    return PhaseDiagram(activation=act.name, sigma_w2=sw, sigma_b2=sb, rho=rho, phase=phase,
                        critical_line=crit, n_reference=n_ref,
                        **{name: out[name].reshape(shape) for name in _FIELDS})


def _chunk(eng: Engine, act: Activation, w, b, rho):
    """All fields for flat arrays of points."""
    n = w.size
    qs, _ = eng.q_star(w / rho, b)
    fin = np.isfinite(qs)
    chi1 = np.empty(n)
    q_slope = np.full(n, np.inf)
    V = np.full(n, np.nan)
    if fin.any():
        V[fin], d1, s = eng.one_dim(("phi2", "dphi2", "slope"), qs[fin])
        chi1[fin] = w[fin] * d1
        q_slope[fin] = (w[fin] / rho) * s
    if (~fin).any():
        chi1[~fin] = np.inf if act.slopes is None else w[~fin] * (act.slopes[0] ** 2 + act.slopes[1] ** 2) / 2
    cs = np.empty(n)
    chic = np.empty(n)
    # divergent variance: the limiting map of the asymptotically linear activation (same for all)
    if (~fin).any():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            cs[~fin], chic[~fin] = _c_star_point(act, 1.0, 0.0, np.inf, rho, "auto")
    zero = fin & (qs == 0)
    if zero.any():
        d0 = float(expectation(act, "dphi2", 0.0))
        wz = w[zero]
        dz = np.where(wz > 0, d0, 0.0)
        a = wz * dz / rho
        with np.errstate(divide="ignore", invalid="ignore"):
            cs[zero] = 1.0 if rho == 1.0 else (1.0 - a) / (1.0 - rho * a)
        chic[zero] = wz * dz
    pos = fin & (qs > 0)
    if rho == 1.0:
        ordered = pos & (chi1 <= 1.0)
        cs[ordered] = 1.0
        chic[ordered] = chi1[ordered]
        pos &= ~ordered
    n_ref = 0
    idx = np.flatnonzero(pos)
    if idx.size:
        c_i, x_i, ok = eng.c_star(w[idx], qs[idx], rho)
        cs[idx], chic[idx] = c_i, x_i
        for j in idx[~ok]:  # per point, by the core: slow but exact
            cs[j], chic[j] = _c_star_point(act, w[j], b[j], qs[j], rho, "auto")
            n_ref += 1
    xiq = np.where(np.isinf(qs), np.inf, _depth_scale(q_slope))
    xic = _depth_scale(chic)
    code = np.where(chi1 > 1.0, 1, 0).astype(np.int8)
    code[np.abs(chi1 - 1.0) < 1e-9] = 2
    code[np.isinf(qs)] = 3
    res = dict(q_star=qs, c_star=cs, chi_1=chi1, chi_c=chic, q_slope=q_slope, xi_q=xiq, xi_c=xic,
               trainable_depth=TRAINABLE_DEPTH_FACTOR * xic, gradient_factor=chi1 / rho)
    return res, code, n_ref


def _critical_sigma_w2(eng: Engine, sb, rho):
    """sigma_w2 on chi_1 = 1 for each sigma_b2, from the tables (see :func:`meanfield.critical_sigma_w2`)."""
    return _critical_search(lambda q: eng.one_dim(("phi2", "dphi2"), q), sb, rho)
