"""Engine of the phase diagram: 1-D tables, the Mehler expansion of the correlation map, compiled roots.

Private to :mod:`meanfield.diagram` (whose docstring describes the method and its error
control).  The maps come from the layer rule (:class:`meanfield.layers.Dense`); the compiled
kernel ``c_star_kernel`` keeps its own copy of the fixed-point equation ``G(c)`` of
:meth:`meanfield.layers.Dense.gap_from` in Hermite form and is tested against it.
"""

from __future__ import annotations

import functools
import math
import threading

import numpy as np

from ._jit import jit
from ._solvers import bracketed_roots, q_ceiling, q_star_search
from .activations import Activation
from .expectations import expectation
from .layers import Dense
from .symbolic import numeric

__all__ = ["Engine", "engine", "Table1D", "c_star_kernel", "mehler_params", "mehler_coefficients"]

_KINDS1 = ("phi2", "dphi2", "slope")
_CHEB_N = 32
_PATCH_WIDTH = 1.0
_T_MIN = math.log(1e-8)
_T_MAX = math.log(1e8)
_TAIL_TOL = 1e-14
_SUM_RULE_TOL = 1e-11
_K_MAX = 6000
_Z_RANGE = 13.0

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


class Table1D:
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
            # patch by patch: a patch's coefficients do not depend on which others are built with it
            coef = np.array([v @ _CHEB_M.T for v in vals])
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


def mehler_params(q_hi: float, boost: int):
    """Truncation order and trapezoid step for points with q <= q_hi."""
    K = int(math.ceil(30 + 150.0 * q_hi)) * (2 ** boost)
    d = math.pi / (2.0 * math.sqrt(q_hi))  # distance of tanh's poles from the real z axis
    h = min(0.5, 2.0 * math.pi * d / (40.0 + math.sqrt(2.0 * K) * d + 0.25 * d * d)) / (1.5 ** boost)
    return K, h


def mehler_coefficients(phi, q, K, h, parity=0):
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
    """Per row of Hermite coefficients: c*, chi_c and the sum-rule sums.

    c* by the core's scan, then safeguarded Newton on ``G(c)``; chi_c at c*; and the sums
    ``sum_k a_k`` and ``sum_k k a_k`` (``a_k = b_k^2``) for the sum-rule checks.
    """
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
        r, _, _ = bracketed_roots(lambda c, idx: G(c, br[idx]), lo[br], top[br], flo[br], ftop[br],
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
        self.table = None if self.closed_1d else Table1D(act)
        self.mehler_ok = act.exp_rate == 0 and act.continuous and act.dphi is not None
        self.parity = _parity(act.phi) if self.mehler_ok else 0

    # ---- one-dimensional ----
    def one_dim(self, kinds, q):
        q = np.asarray(q, dtype=float)
        if self.closed_1d:
            return tuple(self.closed[k](q) for k in kinds)
        return self.table(kinds, q)

    def q_star(self, w, b, rho=1.0, q0=None):
        """Fixed point of the layer's variance map reached from q0 (default 1), as the core's q_star."""
        q0 = np.ones(w.size) if q0 is None else q0
        layer = Dense(self.act, w, b, rho)
        value, converged, _, _ = q_star_search(
            lambda q, idx: layer.select(idx).variance(self.one_dim(("phi2",), q)[0]), q0, q_ceiling(self.act))
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
            layer = Dense(self.act, w, 0.0, rho)  # the bias enters G only through q* = q

            def G(c, idx):
                qi = q[idx]
                return layer.select(idx).gap_from(qi, v[idx], v[idx] - cov(qi, qi, c * qi), c)

            cs[:] = _c_star_numpy(G, n)
            chic[:] = layer.chi_c_from(dcov(q, q, cs * q))
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
                K, h = mehler_params(max(q_hi, 1e-3), boost)
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
        b_even, b_odd = mehler_coefficients(self.act.phi, qp, K, h, self.parity)
        m = part.size
        s = w[part] / qp
        e0 = V[part] * (1.0 / rho - 1.0)
        out_c, out_chi, s0, s1 = (np.empty(m) for _ in range(4))
        c_star_kernel(b_even, b_odd, s, e0, out_c, out_chi, s0, s1)
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
