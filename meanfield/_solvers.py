"""Root finders of the theory: variance fixed points, correlation fixed points, critical points.

Private engine of :mod:`meanfield.fixed_points`, :mod:`meanfield.phase` and
:mod:`meanfield.diagram`.  Every map is evaluated through the layer rule
(:class:`meanfield.layers.Dense`); these functions only find roots.
"""

from __future__ import annotations

import numpy as np
from scipy import optimize

from .layers import Dense, core_expectations, is_linear

__all__ = ["bracketed_roots", "q_star_search", "q_ceiling", "c_star_point", "critical_candidates", "critical_search",
           "Q_MAX", "Q_BOUNDED",
           "STEP"]

#: Variances above this count as divergent (q_star = inf).
Q_MAX = 1e30
#: Above this a variance counts as divergent for activations that grow at least linearly.  Those
#: that grow more slowly (bounded: tanh, erf, sigmoid; or sublinear) cannot diverge, and their
#: fixed point is searched up to :data:`Q_BOUNDED` (``q* ~ sigma_w2 sup phi^2`` can be ~1e31).
Q_BOUNDED = 1e305

#: Largest factor of one step of the upward bracket search.
STEP = 8.0


def bracketed_roots(F, lo, hi, flo, fhi, rel_tol=1e-14, max_iter=200):
    """Roots of F in [lo, hi] (F(lo) >= 0 >= F(hi) or the reverse), vectorised Illinois method.

    ``F(x, idx)`` evaluates the functions of rows ``idx`` at ``x``.  Returns (root, converged,
    iterations).
    """
    lo, hi, flo, fhi = (np.array(a, dtype=float) for a in (lo, hi, flo, fhi))
    n = lo.size
    root = np.where(flo == 0, lo, np.where(fhi == 0, hi, np.nan))
    conv = np.isfinite(root)
    iters = np.zeros(n, dtype=int)
    active = np.flatnonzero(~conv)
    side = np.zeros(n, dtype=int)  # which end was kept last time (for the Illinois halving)
    for _ in range(max_iter):
        if active.size == 0:
            break
        a, b, fa, fb = lo[active], hi[active], flo[active], fhi[active]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # flat or overflowing: bisection
            xs = (a * fb - b * fa) / (fb - fa)
        width = np.abs(b - a)
        bad = ~np.isfinite(xs) | (xs <= np.minimum(a, b)) | (xs >= np.maximum(a, b))
        xs = np.where(bad, 0.5 * (a + b), xs)
        fx = F(xs, active)
        iters[active] += 1
        same_as_lo = np.sign(fx) == np.sign(fa)
        # replace the end with the same sign; halve the other end's value if it was kept before
        new_lo = np.where(same_as_lo, xs, a)
        new_hi = np.where(same_as_lo, b, xs)
        new_flo = np.where(same_as_lo, fx, np.where(side[active] == -1, 0.5 * fa, fa))
        new_fhi = np.where(same_as_lo, np.where(side[active] == 1, 0.5 * fb, fb), fx)
        side[active] = np.where(same_as_lo, 1, -1)
        lo[active], hi[active], flo[active], fhi[active] = new_lo, new_hi, new_flo, new_fhi
        done = (fx == 0) | (np.abs(new_hi - new_lo) <= rel_tol * np.maximum(np.abs(xs), 1e-300))
        stalled = np.abs(new_hi - new_lo) >= width  # cannot happen in exact arithmetic
        done |= stalled & (np.abs(new_hi - new_lo) <= 1e-12 * np.maximum(np.abs(xs), 1e-300))
        root[active[done]] = xs[done]
        conv[active[done]] = True
        active = active[~done]
    if active.size:
        root[active] = 0.5 * (lo[active] + hi[active])
    return root, conv, iters



def q_ceiling(act) -> float:
    """:data:`Q_MAX` for activations that grow at least linearly, :data:`Q_BOUNDED` for slower ones."""
    return Q_BOUNDED if act.slopes == (0.0, 0.0) else Q_MAX


def q_star_search(qmap, q0, q_max=Q_MAX):
    """Fixed points of the variance maps reached from ``q0``, for flat arrays of points.

    ``qmap(q, idx)`` evaluates the variance map of points ``idx`` at ``q`` (the layer rule,
    :meth:`meanfield.layers.Dense.variance`, with any expectation provider).  Steps geometrically from q0 in the
    direction the map moves until the sign of ``F = w phi2 + b - q`` changes (up to ``q_max``,
    beyond which the variance diverges; see :func:`q_ceiling`), then closes the bracket.  Returns
    ``(value, converged, iterations, diverged)``.
    """
    q0 = np.asarray(q0, dtype=float)
    n = q0.size
    iters = np.zeros(n, dtype=int)

    def F(q, idx):
        return qmap(q, idx) - q

    f0 = F(q0, np.arange(n))
    iters += 1
    lo = np.zeros(n)
    hi = np.zeros(n)
    flo = np.zeros(n)
    fhi = np.zeros(n)
    value = np.full(n, np.nan)
    value[f0 == 0] = q0[f0 == 0]
    diverged = np.zeros(n, dtype=bool)

    # upward: step until F < 0.  Each step extrapolates the secant through the last two
    # points to F = 0 (overshooting the root for the usual concave F, creeping up to it for a
    # convex one), clipped to [1.05, 8] times the current point; the first step doubles the map's.
    up = np.flatnonzero(f0 > 0)
    lo[up], flo[up] = q0[up], f0[up]
    prev_q, prev_f = q0[up], f0[up]
    cur = np.clip(q0[up] + 2.0 * f0[up], 1.05 * q0[up], STEP * q0[up])
    cur = np.maximum(cur, 1e-3)
    while up.size:
        fc = F(cur, up)
        iters[up] += 1
        # |F| below 1e-13 cur is the rounding of w V + b - q, not a sign: such a point neither
        # closes the bracket nor moves its lower end, and the search jumps on by the full step
        found = fc < -1e-13 * cur
        clear = fc > 1e-13 * cur
        hi[up[found]], fhi[up[found]] = cur[found], fc[found]
        lo[up[clear]], flo[up[clear]] = cur[clear], fc[clear]
        keep = ~found
        up, cur, fc, clear, prev_q, prev_f = up[keep], cur[keep], fc[keep], clear[keep], prev_q[keep], prev_f[keep]
        with np.errstate(divide="ignore", invalid="ignore"):
            secant = (fc - prev_f) / (cur - prev_q)
            target = np.where(clear & (secant < 0), cur - fc / secant, np.inf)
        prev_q, prev_f = np.where(clear, cur, prev_q), np.where(clear, fc, prev_f)
        cur = np.clip(np.nan_to_num(target, nan=np.inf, posinf=np.inf), 1.05 * cur, STEP * cur)
        over = cur > q_max
        diverged[up[over]] = True
        value[up[over]] = np.inf
        keep = ~over
        up, cur, prev_q, prev_f = up[keep], cur[keep], prev_q[keep], prev_f[keep]

    # downward: F(0) = w phi(0)^2 + b >= 0
    down = np.flatnonzero(f0 < 0)
    hi[down], fhi[down] = q0[down], f0[down]
    f_zero = F(np.zeros(down.size), down)
    iters[down] += 1
    lo[down], flo[down] = 0.0, f_zero
    # where 0 is itself a fixed point, look for a larger one the iteration would reach first
    zero_fp = down[f_zero == 0]
    cur = q0[zero_fp] / STEP
    for _ in range(16):
        if zero_fp.size == 0:
            break
        fc = F(cur, zero_fp)
        iters[zero_fp] += 1
        found = fc > 1e-13 * cur  # a sign, not rounding
        lo[zero_fp[found]], flo[zero_fp[found]] = cur[found], fc[found]
        hi[zero_fp[~found]], fhi[zero_fp[~found]] = cur[~found], fc[~found]
        zero_fp, cur = zero_fp[~found], cur[~found] / STEP
    value[zero_fp] = 0.0  # 0 attracts everything below q0

    todo = np.flatnonzero(np.isnan(value))
    converged = np.ones(n, dtype=bool)
    if todo.size:
        root, conv, it = bracketed_roots(lambda q, idx: F(q, todo[idx]), lo[todo], hi[todo], flo[todo], fhi[todo])
        value[todo] = root
        converged[todo] = conv
        iters[todo] += it
    return value, converged, iters, diverged


def c_star_point(layer: Dense, qs: float, E=None, stats=None):
    """(c*, chi_c) of one scalar layer at its variance fixed point ``qs``.

    Regular points: the largest root below 1 of :meth:`~meanfield.layers.Dense.gap_from`, or 1
    in the ordered phase without dropout.  Limits (``qs`` infinite, or 0 with zero bias): the
    same for the equivalent homogeneous layer (:meth:`~meanfield.layers.Dense.limit`); where that
    layer is linear and there is no dropout, every correlation is a fixed point: c* is NaN and
    chi_c = 1 (correlations freeze).  Raises :class:`meanfield.layers.NoLimitError` where no
    limit exists.  ``stats`` (a dict), if given, receives convergence diagnostics.
    """
    stats = {} if stats is None else stats
    if float(layer.sigma_w2) == 0.0:  # every input maps to the bias vector (or to 0): indistinguishable
        return 1.0, 0.0
    lim = layer.limit(qs)
    if lim is not None:
        if is_linear(lim.act) and layer.rho == 1.0:
            return np.nan, 1.0
        return _c_star_finite(lim, 1.0, core_expectations(lim.act), stats)
    return _c_star_finite(layer, qs, layer.provider(E), stats)


def _c_star_finite(layer: Dense, qs, E, stats):
    V = float(E("phi2", qs))
    stats["evaluations"] = 0

    def chi_c_at(c):
        return float(layer.chi_c_from(E("dcov", qs, qs, c=c)))

    def G(c):
        stats["evaluations"] += 1
        return float(layer.gap_from(qs, V, E("half_sq_diff", qs, qs, c=c), c))

    if layer.rho == 1.0:
        chi1 = float(layer.chi_1_from(E("dphi2", qs)))
        if chi1 <= 1.0:
            return 1.0, chi1
    top = None
    for eps in (1e-6, 1e-9, 1e-12):
        if G(1.0 - eps) < 0:
            top = 1.0 - eps
            break
    if top is None:  # c* is within 1e-12 of 1
        return 1.0, chi_c_at(1.0)
    for below in (0.99, 0.9, 0.5, 0.0, -0.5, -1.0):
        if below >= top:
            continue
        g_below = G(below)
        if g_below >= 0:
            if g_below == 0:
                return below, chi_c_at(below)
            root, res = optimize.brentq(G, below, top, xtol=1e-16, rtol=4 * np.finfo(float).eps, maxiter=200,
                                        full_output=True, disp=False)
            stats["converged"] = bool(res.converged)
            return root, chi_c_at(root)
        top = below
    return -1.0, chi_c_at(-1.0)


def critical_candidates(one_dim, sb, rho, q_max=Q_MAX):
    """Every q with chi_1 = 1 at a fixed point of the variance map, for each sigma_b2 (flat array).

    ``one_dim(q)`` returns ``(E[phi(sqrt(q) z)^2], E[phi'(sqrt(q) z)^2])``.  On the critical
    line the layer rule gives ``sigma_w2 = 1/D(q)`` and ``sigma_b2 = q - sigma_w2/rho V(q)``
    (:meth:`meanfield.layers.Dense.on_critical_line`), so the candidates are the roots of
    ``h(q) - sigma_b2``, found at every sign change on a geometric grid of q from 0 to ``q_max``
    (:func:`q_ceiling`: bounded activations have critical points at any sigma_b2).
    Returns a list of ``(row, q)`` arrays in increasing q, one pair per sign change.
    """
    grid = np.concatenate([[0.0], np.geomspace(1e-3, q_max, int(np.ceil(np.log(q_max / 1e-3) / np.log(8.0))) + 1)])

    def h(q):
        v, d = one_dim(q)
        with np.errstate(divide="ignore", invalid="ignore"):
            _, b = Dense.on_critical_line(q, v, np.where(d > 0, d, np.nan), rho)
        return np.where(d > 0, b, -np.inf)

    g = h(grid)[None, :] - sb[:, None]  # (n, grid)
    out = []
    for k in range(grid.size - 1):
        at_node = g[:, k] == 0
        crossing = ~at_node & (np.sign(g[:, k]) * np.sign(g[:, k + 1]) < 0)
        rows = np.flatnonzero(at_node | crossing)
        if rows.size == 0:
            continue
        q_c = np.where(at_node[rows], grid[k], np.nan)
        solve = np.flatnonzero(crossing[rows])
        if solve.size:
            r = rows[solve]
            q_c[solve] = bracketed_roots(lambda q, idx, r=r: h(q) - sb[r[idx]], np.full(r.size, grid[k]),
                                         np.full(r.size, grid[k + 1]), g[r, k], g[r, k + 1])[0]
        out.append((rows, q_c))
    return out


def critical_search(act, one_dim, sb, rho, q0=1.0):
    """sigma_w2 with chi_1 = 1 for each sigma_b2 in a flat array; NaN where there is none.

    Candidates from :func:`critical_candidates`, taken in increasing q; a candidate is accepted
    only if it is the fixed point the variance iteration reaches from ``q0`` at that sigma_w2
    (for gelu, swish, mish some roots are unstable fixed points, or are not reached from q0).
    """
    n = sb.size
    out = np.full(n, np.nan)
    open_ = np.ones(n, dtype=bool)
    for rows, q_c in critical_candidates(one_dim, sb, rho, q_ceiling(act)):
        keep = open_[rows]
        rows, q_c = rows[keep], q_c[keep]
        if rows.size == 0:
            continue
        d = one_dim(q_c)[1]
        with np.errstate(divide="ignore"):
            sw = np.where(d > 0, 1.0 / np.where(d > 0, d, 1.0), np.nan)
        ok = np.isfinite(sw)
        reached = np.full(rows.size, np.nan)
        if ok.any():
            layer = Dense(act, sw[ok], sb[rows[ok]], rho)
            reached[ok] = q_star_search(lambda q, idx, layer=layer: layer.select(idx).variance(one_dim(q)[0]),
                                        np.full(np.count_nonzero(ok), float(q0)), q_ceiling(act))[0]
        # accepted if chi_1 = 1 at the fixed point actually reached (for relu every q is fixed)
        chi_reached = np.full(rows.size, np.nan)
        fin = ok & np.isfinite(reached)
        if fin.any():
            chi_reached[fin] = Dense(act, sw[fin], sb[rows[fin]], rho).chi_1_from(one_dim(reached[fin])[1])
        good = fin & (np.abs(chi_reached - 1.0) <= 1e-9)
        out[rows[good]] = sw[good]
        open_[rows[good]] = False
    return out
