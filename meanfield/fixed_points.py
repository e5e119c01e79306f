"""Fixed points of the variance and correlation maps: q_star and c_star.

Both are found by bracketed root-finding, not by iterating the maps: near the critical line
the iteration converges only polynomially.  ``q_star`` is the fixed point that the iteration
``q^{l+1} = sigma_w2/rho E[phi(sqrt(q^l) z)^2] + sigma_b2`` reaches from ``q0``; if the
variance grows without bound it is ``inf``.  ``c_star`` is the attracting fixed point of the
correlation map at ``q_star``: 1 in the ordered phase (chi_1 < 1, no dropout), the largest
attracting root below 1 otherwise.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import numpy as np
import sympy as sp
from scipy import optimize

from . import _validate
from .activations import Activation, activation, x
from .expectations import expectation

__all__ = ["q_star", "c_star", "FixedPointInfo", "ConvergenceWarning", "Q_MAX"]

#: Variances above this count as divergent (q_star = inf).
Q_MAX = 1e30
_STEP = 8.0


class ConvergenceWarning(UserWarning):
    """A fixed-point search did not meet its tolerance."""


@dataclass(frozen=True)
class FixedPointInfo:
    """Diagnostics of a fixed-point search (arrays shaped like the broadcast inputs).

    Attributes
    ----------
    converged : bool array
        The bracket closed to the tolerance (1e-14 relative).
    iterations : int array
        Map evaluations spent.
    diverged : bool array
        The variance grows without bound (q_star is inf).
    slope : float array
        Slope of the map at the fixed point; ``|slope| < 1`` means attracting.
    """

    converged: np.ndarray
    iterations: np.ndarray
    diverged: np.ndarray
    slope: np.ndarray


def _bracketed_roots(F, lo, hi, flo, fhi, rel_tol=1e-14, max_iter=200):
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


def q_star(act, sigma_w2, sigma_b2, rho=1.0, q0=1.0, method="auto", full_output=False):
    """Fixed point of the variance map (Poole et al. 2016, eq. 3; Schoenholz et al. 2017, eq. 3).

    ``q* = sigma_w2/rho * E[phi(sqrt(q*) z)^2] + sigma_b2``, ``z ~ N(0, 1)``; with dropout
    (keep probability ``rho``, inverted masks) the weight variance is divided by rho on the
    diagonal (Schoenholz et al. 2017, Sec. 5).

    Parameters
    ----------
    act : Activation or str
    sigma_w2, sigma_b2 : array_like
        Weight and bias variances (broadcast together with ``q0``).
    rho : float
        Dropout keep probability in (0, 1].
    q0 : array_like
        Input variance the iteration starts from (default 1).  For activations with a single
        attracting fixed point (tanh, erf, relu, ...) the result does not depend on it.
    method : {"auto", "exact", "quadrature"}
    full_output : bool
        Also return a :class:`FixedPointInfo`.

    Returns
    -------
    float or ndarray (and FixedPointInfo)
        ``inf`` where the variance grows without bound (e.g. relu with sigma_w2 > 2): a result,
        not an error.  Values above :data:`Q_MAX` count as divergent.
    """
    act = activation(act)
    rho = _validate.keep_probability(rho)
    sw = _validate.nonnegative("sigma_w2", sigma_w2)
    sb = _validate.nonnegative("sigma_b2", sigma_b2)
    q0 = _validate.nonnegative("q0", q0)
    shape, (sw, sb, q0) = _validate.broadcast(sw, sb, q0)
    value, info = _q_star_flat(act, sw / rho, sb, q0, method)
    if not info.converged.all():
        warnings.warn(f"q_star did not converge for {np.count_nonzero(~info.converged)} point(s)",
                      ConvergenceWarning, stacklevel=2)
    out = _validate.finish(value, shape)
    if full_output:
        return out, FixedPointInfo(*(np.reshape(a, shape) for a in
                                     (info.converged, info.iterations, info.diverged, info.slope)))
    return out


def _q_star_flat(act: Activation, w, b, q0, method):
    value, converged, iters, diverged = _q_star_search(
        lambda q: expectation(act, "phi2", q, method=method), w, b, q0)
    slope = np.full(w.size, np.nan)
    fin = np.isfinite(value)
    if act.dphi is not None and act.continuous:
        slope[fin] = w[fin] * expectation(act, "slope", value[fin], method=method)
    return value, FixedPointInfo(converged, iters, diverged, slope)


def _q_star_search(phi2, w, b, q0):
    """Fixed points of ``q -> w phi2(q) + b`` reached from ``q0``, for flat arrays of points.

    ``phi2`` is a vectorised ``q -> E[phi(sqrt(q) z)^2]``.  Steps geometrically from q0 in the
    direction the map moves until the sign of ``F = w phi2 + b - q`` changes (up to :data:`Q_MAX`,
    beyond which the variance diverges), then closes the bracket.  Returns
    ``(value, converged, iterations, diverged)``.
    """
    n = w.size
    iters = np.zeros(n, dtype=int)

    def F(q, idx):
        return w[idx] * phi2(q) + b[idx] - q

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
    cur = np.clip(q0[up] + 2.0 * f0[up], 1.05 * q0[up], _STEP * q0[up])
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
        cur = np.clip(np.nan_to_num(target, nan=np.inf, posinf=np.inf), 1.05 * cur, _STEP * cur)
        over = cur > Q_MAX
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
    cur = q0[zero_fp] / _STEP
    for _ in range(16):
        if zero_fp.size == 0:
            break
        fc = F(cur, zero_fp)
        iters[zero_fp] += 1
        found = fc > 1e-13 * cur  # a sign, not rounding
        lo[zero_fp[found]], flo[zero_fp[found]] = cur[found], fc[found]
        hi[zero_fp[~found]], fhi[zero_fp[~found]] = cur[~found], fc[~found]
        zero_fp, cur = zero_fp[~found], cur[~found] / _STEP
    value[zero_fp] = 0.0  # 0 attracts everything below q0

    todo = np.flatnonzero(np.isnan(value))
    converged = np.ones(n, dtype=bool)
    if todo.size:
        root, conv, it = _bracketed_roots(lambda q, idx: F(q, todo[idx]), lo[todo], hi[todo], flo[todo], fhi[todo])
        value[todo] = root
        converged[todo] = conv
        iters[todo] += it
    return value, converged, iters, diverged


# ----------------------------------------------------------------------------------------
# Limit of infinite variance: phi is asymptotically a relu(x) + b relu(-x)
# ----------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _two_slopes(s_plus: float, s_minus: float) -> Activation:
    """``s+ relu(x) - s- relu(-x)``: slope s+ for x > 0 and s- for x < 0."""
    a, b = (sp.nsimplify(s, rational=True, tolerance=1e-12) for s in (s_plus, s_minus))
    relu_x = sp.Piecewise((x, x > 0), (0, True))
    relu_mx = sp.Piecewise((-x, x < 0), (0, True))
    return activation(a * relu_x - b * relu_mx)


@functools.lru_cache(maxsize=32)
def asymptotic_activation(act: Activation) -> Activation | None:
    """The piecewise-linear activation phi approaches at large |x|, or None.

    With slopes ``s+ = phi'(+inf)`` and ``s- = phi'(-inf)``: ``s+ relu(x) - s- relu(-x)``.
    It governs the correlation map when q_star is infinite (degree-1 homogeneity).
    """
    if act.slopes is None or act.slopes == (0.0, 0.0):
        return None
    return _two_slopes(*act.slopes)


@functools.lru_cache(maxsize=32)
def local_activation(act: Activation) -> Activation:
    """The piecewise-linear activation phi looks like near 0: slopes phi'(0+) and phi'(0-).

    It governs the correlation map in the limit q* -> 0 (sigma_b2 -> 0 with phi(0) = 0).
    """
    dphi = act.derivative(1)
    s_plus, s_minus = (float(v) for v in dphi(np.array([1e-150, -1e-150])))
    return _two_slopes(s_plus, s_minus)


def c_star(act, sigma_w2, sigma_b2, rho=1.0, method="auto", full_output=False):
    """Attracting fixed point of the correlation map (Poole et al. 2016, eq. 5; Schoenholz et al. 2017).

    ``c* = (sigma_w2 E[phi(u1) phi(u2)] + sigma_b2) / q*`` with ``u1, u2`` of variance q* and
    correlation c*.  Without dropout ``c* = 1`` in the ordered phase (chi_1 <= 1); in the chaotic
    phase, and always with dropout, it is the largest root below 1 of
    ``G(c) = 1 - sigma_w2 (E[phi(u)^2] (1/rho - 1) + E[(phi(u1) - phi(u2))^2]/2) / (q* (1 - c))``,
    a form that stays well conditioned as c* approaches 1 near the critical line.
    Where q* is infinite the map is its limit for the asymptotically linear activation
    (:func:`asymptotic_activation`); if phi grows faster than linearly there is no limit and
    the result is NaN, with a warning.  With ``q* = 0`` (sigma_b2 = 0, phi(0) = 0) the map is
    its ``sigma_b2 -> 0`` limit, the map of the local piecewise-linear form of phi at 0
    (:func:`local_activation`): c* = 1 without dropout.

    Returns
    -------
    float or ndarray (and FixedPointInfo, whose ``slope`` is chi_c at c*)
    """
    act = activation(act)
    rho = _validate.keep_probability(rho)
    sw = _validate.nonnegative("sigma_w2", sigma_w2)
    sb = _validate.nonnegative("sigma_b2", sigma_b2)
    shape, (sw, sb) = _validate.broadcast(sw, sb)
    qs, _ = _q_star_flat(act, sw / rho, sb, np.ones_like(sw), method)
    cs, slopes, conv, evals = _c_star_flat(act, sw, sb, qs, rho, method)
    out = _validate.finish(cs, shape)
    if full_output:
        info = FixedPointInfo(conv.reshape(shape), evals.reshape(shape), np.isinf(qs).reshape(shape),
                              slopes.reshape(shape))
        return out, info
    return out


def _c_star_flat(act, sw, sb, qs, rho, method):
    """c*, chi_c at it, convergence flags and map evaluations, for each point, given q*."""
    n = sw.size
    cs = np.empty(n)
    chi_c = np.empty(n)
    conv = np.ones(n, dtype=bool)
    evals = np.zeros(n, dtype=int)
    for i in range(n):
        stats = {}
        cs[i], chi_c[i] = _c_star_point(act, sw[i], sb[i], qs[i], rho, method, stats)
        conv[i] = stats.get("converged", True)
        evals[i] = stats.get("evaluations", 0)
    if not conv.all():
        warnings.warn(f"c_star did not converge for {np.count_nonzero(~conv)} point(s)", ConvergenceWarning,
                      stacklevel=3)
    return cs, chi_c, conv, evals


def _c_star_point(act, w, b, qs, rho, method, stats=None):
    """(c*, chi_c) at one point; ``stats`` (a dict), if given, receives convergence diagnostics."""
    stats = {} if stats is None else stats
    if np.isinf(qs):
        lim = asymptotic_activation(act)
        if lim is None:
            warnings.warn(f"{act.name!r} grows faster than linearly and q* is infinite: the correlation "
                          "map has no limit, c* and chi_c are NaN", RuntimeWarning, stacklevel=4)
            return np.nan, np.nan
        v_inf = float(expectation(lim, "phi2", 1.0))
        return _c_star_finite(lim, rho / v_inf, 1.0, rho, method, stats)
    if qs == 0:
        # the sigma_b2 -> 0 limit: near q* = 0 phi acts as its local piecewise-linear form psi and
        # the map is c -> sigma_w2 E[psi psi](1, 1, c) + 1 - sigma_w2/rho E[psi^2](1): the finite
        # problem for psi at q = 1
        if w == 0:
            return 1.0, 0.0
        return _c_star_finite(local_activation(act), w, 1.0, rho, method, stats)
    return _c_star_finite(act, w, qs, rho, method, stats)


def _c_star_finite(act, w, qs, rho, method, stats):
    v = float(expectation(act, "phi2", qs, method=method))
    stats["evaluations"] = 0

    def chi_c_at(c):
        return float(w * expectation(act, "dcov", qs, qs, c=c, method=method))

    def G(c):
        stats["evaluations"] += 1
        d = float(expectation(act, "half_sq_diff", qs, qs, c=c, method=method))
        return 1.0 - w * (v * (1.0 / rho - 1.0) + d) / (qs * (1.0 - c))

    if rho == 1.0:
        chi1 = w * float(expectation(act, "dphi2", qs, method=method))
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
