"""Gaussian expectations by adaptive Gauss-Kronrod quadrature, many integrals at once.

All integrals of one call share an integrand and are refined together: every round evaluates
the integrand on the 21 Kronrod nodes of every open panel in one vectorised call, estimates each
panel's error the QUADPACK way (Piessens et al. 1983, routine QK21), closes the panels that meet
their share of the tolerance and bisects the rest.  Integration runs in the variable ``u``
itself (not ``z = u / sqrt(q)``), so the panels can be split exactly at the activation's kinks,
and the range ``mean +- 10 sd`` (widened for exponentially growing integrands) is cut into
panels on the scale of both the Gaussian and the activation.  This keeps the accuracy at
large variances (q of 10 to 1e6) where a fixed Gauss-Hermite rule fails, and at kinks where it
converges only as O(1/n).

Two-dimensional expectations over a correlated pair are nested one-dimensional ones:
``E[h(u1, u2)] = E_{u1}[ E[h(u1, u2) | u1] ]`` with ``u2 | u1 ~ N(q12/q1 u1, q2 - q12^2/q1)``;
the inner integrals of all outer nodes are again one batch.
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = ["QuadratureWarning", "integrate", "expect_1d", "expect_2d", "z_range", "RTOL"]

#: Default relative tolerance, relative to the integral of |integrand|.
RTOL = 1e-12

# Kronrod 21-point nodes (positive half, descending, last is 0) and weights; Gauss 10-point
# weights for the nodes at odd positions.  QUADPACK qk21.
_XGK = np.array([
    0.995657163025808080735527280689003, 0.973906528517171720077964012084452,
    0.930157491355708226001207180059508, 0.865063366688984510732096688423493,
    0.780817726586416897063717578345042, 0.679409568299024406234327365114874,
    0.562757134668604683339000099272694, 0.433395394129247190799265943165784,
    0.294392862701460198131126603103866, 0.148874338981631210884826001129720,
    0.0,
])
_WGK = np.array([
    0.011694638867371874278064396062192, 0.032558162307964727478818972459390,
    0.054755896574351996031381300244580, 0.075039674810919952767043140916190,
    0.093125454583697605535065465083366, 0.109387158802297641899210590325805,
    0.123491976262065851077600525634640, 0.134709217311473325928054001771707,
    0.142775938577060080797094273138717, 0.147739104901338491374841515972068,
    0.149445554002916905664936468389821,
])
_WG = np.array([
    0.066671344308688137593568809893332, 0.149451349150580593145776339657697,
    0.219086362515982043995534934228163, 0.269266719309996355091226921569469,
    0.295524224714752870173892994651338,
])
#: The 21 nodes on [-1, 1], ascending, and their Kronrod and Gauss weights.
NODES = np.concatenate([-_XGK[:-1], _XGK[::-1]])
W_KRONROD = np.concatenate([_WGK[:-1], _WGK[::-1]])
W_GAUSS = np.zeros(21)
W_GAUSS[1:10:2] = _WG
W_GAUSS[11:20:2] = _WG[::-1]

_EPS = np.finfo(float).eps
_TINY = np.finfo(float).tiny
#: Half-width of the integration range in standard deviations.
Z_RANGE = 10.0
#: Standard-deviation multiples and absolute positions at which the range is cut to start.
_CUTS_SD = np.array([-6.0, -3.0, -1.5, 0.0, 1.5, 3.0, 6.0])
_CUTS_ABS = np.array([-5.0, -2.0, 0.0, 2.0, 5.0])
_MAX_ROUNDS = 60
#: Outer cuts around the preimage of an inner kink, in conditional standard deviations.
_KINK_CUTS = (0.0, -0.7, 0.7, -2.0, 2.0, -5.0, 5.0)


class QuadratureWarning(UserWarning):
    """An integral did not reach its tolerance."""


def integrate(func, breaks, owner, n, rtol=RTOL, atol=0.0, max_panels=400, with_error=False):
    """Integrate ``func`` over many ranges at once.

    Parameters
    ----------
    func : callable
        ``func(u, owner)`` -> values, with ``u`` of shape (P, 21) and ``owner`` of shape (P,)
        giving the integral each row belongs to.
    breaks : (P0, 2) array
        Initial panels (left, right).
    owner : (P0,) int array
        Integral index of each initial panel, in ``range(n)``.
    n : int
        Number of integrals.
    rtol : float
        Tolerance relative to the integral of |func| over the range.
    atol : float or (n,) array
        Absolute tolerance: an integral is also done when its error estimate is below it.
    with_error : bool
        Also return the error estimates.

    Returns
    -------
    value, scale, converged : arrays of shape (n,)
        The integrals, the integrals of |func| (or of the magnitudes ``func`` returns as the
        second item of a tuple), and whether the error estimate met ``rtol * scale``.
    error : array of shape (n,)
        The estimated absolute errors (only with ``with_error=True``; 0 where the integral is
        infinite).
    """
    left, right = breaks[:, 0].astype(float), breaks[:, 1].astype(float)
    owner = np.asarray(owner, dtype=np.intp)
    atol = np.broadcast_to(np.asarray(atol, dtype=float), (n,))
    total = np.zeros(n)
    err_done = np.zeros(n)
    abs_done = np.zeros(n)
    length = np.bincount(owner, weights=right - left, minlength=n)
    panels = np.bincount(owner, minlength=n).astype(float)
    converged = np.ones(n, dtype=bool)
    overflow = np.zeros(n)
    for _ in range(_MAX_ROUNDS):
        half = 0.5 * (right - left)
        mid = 0.5 * (right + left)
        u = mid[:, None] + half[:, None] * NODES
        f, f_abs = _values(func(u, owner))
        big = ~np.isfinite(f).all(axis=1)
        if big.any():  # the integrand overflows: the integral is +-inf
            overflow[owner[big]] = np.sign(np.nansum(f[big], axis=1))
            f[big], f_abs[big] = 0.0, 0.0
        res_k = f @ W_KRONROD * half
        res_g = f @ W_GAUSS * half
        res_abs = f_abs @ W_KRONROD * np.abs(half)
        mean_f = (f @ W_KRONROD) * 0.5
        res_asc = np.abs(f - mean_f[:, None]) @ W_KRONROD * np.abs(half)
        err = np.abs(res_k - res_g)
        with np.errstate(divide="ignore", invalid="ignore"):
            scaled = res_asc * np.minimum(1.0, (200.0 * err / res_asc) ** 1.5)
        err = np.where((res_asc > 0) & (err > 0), scaled, err)
        err = np.maximum(err, 50.0 * _EPS * res_abs)
        # per-integral totals over open panels plus closed ones
        absval = abs_done + np.bincount(owner, weights=res_abs, minlength=n)
        errsum = err_done + np.bincount(owner, weights=err, minlength=n)
        tol = np.maximum(rtol * absval, atol)
        done_int = errsum <= tol
        # a panel closes if its integral is done, or it meets its share of the tolerance
        frac = (right - left) / np.where(length[owner] > 0, length[owner], 1.0)
        share = 0.5 * np.maximum(rtol * (res_abs + absval[owner] * frac), atol[owner] * frac)
        close = done_int[owner] | (err <= share) | (half <= 4 * _EPS * np.maximum(np.abs(mid), _TINY))
        close |= overflow[owner] != 0
        too_many = panels[owner] > max_panels
        close |= too_many
        np.add.at(total, owner[close], res_k[close])
        np.add.at(err_done, owner[close], err[close])
        np.add.at(abs_done, owner[close], res_abs[close])
        keep = ~close
        left, right, mid, owner = left[keep], right[keep], mid[keep], owner[keep]
        if left.size == 0:
            break
        panels += np.bincount(owner, minlength=n)
        left, right = np.concatenate([left, mid]), np.concatenate([mid, right])
        owner = np.concatenate([owner, owner])
    if left.size:
        # only reached when _MAX_ROUNDS ran out
        half = 0.5 * (right - left)
        u = 0.5 * (right + left)[:, None] + half[:, None] * NODES
        f, f_abs = _values(func(u, owner))
        np.add.at(total, owner, f @ W_KRONROD * half)
        np.add.at(abs_done, owner, f_abs @ W_KRONROD * half)
        np.add.at(err_done, owner, np.abs(f @ W_KRONROD - f @ W_GAUSS) * half)
        converged[np.unique(owner)] = False
    converged &= err_done <= np.maximum(np.maximum(rtol * abs_done, atol) * 10.0, _TINY)
    hit = overflow != 0
    total[hit], abs_done[hit], converged[hit], err_done[hit] = overflow[hit] * np.inf, np.inf, True, 0.0
    if with_error:
        return total, abs_done, converged, err_done
    return total, abs_done, converged


def _values(result):
    """Integrand values and their magnitudes (the scale the tolerance is relative to)."""
    if isinstance(result, tuple):
        f, f_abs = (np.asarray(r, dtype=float) for r in result)
    else:
        f = np.asarray(result, dtype=float)
        f_abs = np.abs(f)
    if np.isnan(f).any():
        raise FloatingPointError("integrand is NaN at some quadrature nodes")
    return f, f_abs


_Z_PROBE = np.linspace(0.0, 60.0, 121)
#: Ratio (as a logarithm) to the peak of |F(u)| times the density below which the tail is left out.
_TAIL_LOG = 41.0


def z_range(F, sd, mean=0.0, base=Z_RANGE) -> float:
    """Half-width, in standard deviations, that holds all of ``E[F(u)]`` but 1e-18 of its peak.

    ``base`` (10), or more where ``|F(mean + z sd)| exp(-z^2 / 2)`` is still within ``exp(-41)`` of
    its peak beyond it: a polynomial of high degree k has its mass near ``z = sqrt(k)``, so ``x**64``
    squared needs 20 standard deviations.  ``sd`` may be an array: the smallest and largest are
    probed.  Exponential growth is left to the callers' ``exp_rate`` widening (values that overflow
    are not counted).
    """
    sd = np.asarray(sd, dtype=float)
    sd = sd[np.isfinite(sd) & (sd > 0)]
    if sd.size == 0:
        return base
    scales = np.array([sd.min(), sd.max(), -sd.min(), -sd.max()])  # both sides, one call of F
    with np.errstate(all="ignore"):
        v = np.abs(np.asarray(F((mean + scales[:, None] * _Z_PROBE).ravel()), dtype=float)).reshape(4, -1)
        logf = np.where(np.isfinite(v) & (v > 0), np.log(np.where(v > 0, v, 1.0)), -np.inf) - 0.5 * _Z_PROBE**2
    need = base
    for row in logf:
        if np.isfinite(row).any():
            alive = np.flatnonzero(row >= np.max(row) - _TAIL_LOG)
            need = max(need, float(_Z_PROBE[alive[-1]]) + 1.0)
    return need


def _gauss_panels(mean, sd, kinks, exp_rate, zr=Z_RANGE):
    """Initial panels for E[F(u)], u ~ N(mean, sd^2), one row of breakpoints per integral."""
    mean = np.asarray(mean, dtype=float)
    sd = np.asarray(sd, dtype=float)
    reach = zr * sd + exp_rate * sd * sd
    lo, hi = mean - reach, mean + reach
    pts = [lo[:, None], hi[:, None], mean[:, None] + sd[:, None] * _CUTS_SD]
    pts.append(np.broadcast_to(_CUTS_ABS, (mean.size, _CUTS_ABS.size)))
    if len(kinks):
        pts.append(np.broadcast_to(np.asarray(kinks, dtype=float), (mean.size, len(kinks))))
    if exp_rate > 0:
        pts.append((mean + exp_rate * sd * sd)[:, None] + sd[:, None] * _CUTS_SD)
    cuts = np.concatenate(pts, axis=1)
    cuts = np.clip(cuts, lo[:, None], hi[:, None])
    cuts.sort(axis=1)
    left, right = cuts[:, :-1], cuts[:, 1:]
    keep = right > left
    owner = np.broadcast_to(np.arange(mean.size)[:, None], left.shape)[keep]
    return np.stack([left[keep], right[keep]], axis=1), owner


def _warn(converged, what, value, error, rtol):
    """Warn if some integrals missed the tolerance, saying how large their error estimates are."""
    if np.all(converged):
        return
    bad = ~np.asarray(converged, dtype=bool)
    err, val = np.asarray(error, dtype=float)[bad], np.asarray(value, dtype=float)[bad]
    worst = int(np.argmax(err))
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(val != 0, err / np.abs(val), np.inf)
    rel_text = (f"{np.max(rel):.2g} relative to the value" if np.all(np.isfinite(rel))
                else "relative error unbounded (a value is 0)")
    warnings.warn(
        f"{what}: {np.count_nonzero(bad)} of {bad.size} integrals did not reach the requested "
        f"tolerance (rtol {rtol:.1g}); estimated error up to {err[worst]:.2g} absolute, {rel_text} "
        f"(worst: {val[worst]:.6g} +- {err[worst]:.2g})",
        QuadratureWarning,
        stacklevel=3,
    )


def expect_1d(F, mean, var, kinks=(), exp_rate=0.0, rtol=RTOL, jumps=True):
    """E[F(u)] for u ~ N(mean, var), elementwise over broadcast ``mean`` and ``var``.

    ``F`` is a vectorised function of one array.  Where ``var == 0`` the value is F(mean), or,
    if ``jumps`` and ``mean`` is a kink, the average of the one-sided limits (the limit of
    E[F(u)] as var -> 0).
    """
    mean, var = np.broadcast_arrays(np.asarray(mean, dtype=float), np.asarray(var, dtype=float))
    shape = mean.shape
    mean, var = mean.ravel(), var.ravel()
    out = np.empty(mean.size)
    point = var <= 0
    if point.any():
        out[point] = _point_value(F, mean[point], kinks if jumps else ())
    idx = np.flatnonzero(~point)
    if idx.size:
        sd = np.sqrt(var[idx])
        m = mean[idx]
        zr = z_range(F, sd, float(m[np.argmax(sd)]))
        breaks, owner = _gauss_panels(m, sd, kinks, exp_rate, zr)
        norm = 1.0 / (np.sqrt(2.0 * np.pi) * sd)

        def integrand(u, own):
            zz = (u - m[own, None]) / sd[own, None]
            w = np.exp(-0.5 * zz * zz) * norm[own, None]
            with np.errstate(invalid="ignore", over="ignore"):
                return np.where(w > 0, F(u) * w, 0.0)

        val, _, ok, err = integrate(integrand, breaks, owner, idx.size, rtol, with_error=True)
        _warn(ok, "Gaussian expectation", val, err, rtol)
        out[idx] = val
    return out.reshape(shape)


def _point_value(F, m, kinks):
    """F(m); at a kink, the mean of the one-sided limits (F may jump there)."""
    val = np.array(F(m), dtype=float)
    if len(kinks):
        at = np.isin(m, np.asarray(kinks, dtype=float))
        if at.any():
            h = np.where(m[at] == 0, 1e-150, 4 * _EPS * np.abs(m[at]))
            val[at] = 0.5 * (F(m[at] + h) + F(m[at] - h))
    return val


def expect_2d(h, q1, q2, q12=None, kinks1=(), kinks2=(), exp_rate=0.0, rtol=RTOL, corr=None):
    """E[h(u1, u2)] for (u1, u2) ~ N(0, [[q1, q12], [q12, q2]]), elementwise over broadcast args.

    Give either the covariance ``q12`` or the correlation ``corr``; with ``corr`` the conditional
    variance ``q2 (1 - c)(1 + c)`` keeps full relative precision as c approaches 1.

    ``h(u1, u2)`` is vectorised over arrays that broadcast together.  ``kinks1`` and ``kinks2``
    are the points where h is not smooth in u1 and in u2.  Degenerate covariances (``q1 = 0``,
    or ``q12^2 = q1 q2``) reduce to one-dimensional integrals.
    """
    if (q12 is None) == (corr is None):
        raise ValueError("give exactly one of q12 and corr")
    third = q12 if corr is None else corr
    q1, q2, third = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in (q1, q2, third)))
    shape = q1.shape
    q1, q2, third = q1.ravel(), q2.ravel(), third.ravel()
    with np.errstate(divide="ignore", invalid="ignore"):
        if corr is None:
            beta = np.where(q1 > 0, third / q1, 0.0)  # E[u2 | u1] = beta u1
            cond_var = np.where(q1 > 0, q2 - third * beta, q2)
        else:
            beta = np.where(q1 > 0, third * np.sqrt(q2 / q1), 0.0)
            cond_var = np.where(q1 > 0, q2 * (1.0 - third) * (1.0 + third), q2)
    cond_var = np.where(cond_var <= 1e-15 * q2, 0.0, cond_var)
    out = np.empty(q1.size)

    zero1 = q1 <= 0
    if zero1.any():  # u1 = 0: E[h(0, u2)]
        out[zero1] = expect_1d(lambda u: h(0.0, u), 0.0, q2[zero1], kinks2, exp_rate, rtol)
    degenerate = ~zero1 & (cond_var == 0)
    if degenerate.any():  # u2 = beta u1
        b = beta[degenerate]
        rows = np.flatnonzero(degenerate)
        out[rows] = _expect_along(h, q1[rows], b, kinks1, kinks2, exp_rate, rtol)
    full = np.flatnonzero(~zero1 & ~degenerate)
    if full.size:
        sd1 = np.sqrt(q1[full])
        b = beta[full]
        csd = np.sqrt(cond_var[full])
        # the range from the growth of h along the diagonal (u1 = u2), the steepest direction of a product
        zr = z_range(lambda u: h(u, u), np.sqrt(np.maximum(q1[full], q2[full])))
        breaks, owner = _gauss_panels(np.zeros(full.size), sd1, kinks1, exp_rate, zr)
        extra = []
        # where the inner smoothing is narrow, H(u1) bends within a few conditional standard
        # deviations (in u1: csd/|beta|) of beta u1 = k: cut there, at the scale of the bend
        safe_b = np.where(b != 0, b, 1.0)
        for k in kinks2:
            centre = np.where(b != 0, k / safe_b, np.nan)
            width = csd / np.abs(safe_b)
            for m in _KINK_CUTS:
                extra.append(centre + m * width)
        if extra:
            breaks, owner = _split_at(breaks, owner, np.stack(extra, axis=1))
        norm = 1.0 / (np.sqrt(2.0 * np.pi) * sd1)
        # absolute tolerance from a rough E|h|: inner integrals far in the tails, where h is
        # rounding noise, then stop at a level that cannot matter to the total
        atol = rtol * _rough_abs_mean(h, sd1, b, csd)

        def outer(u1, own):
            m = b[own, None] * u1
            s = np.broadcast_to(csd[own, None], u1.shape)
            a_in = np.broadcast_to(atol[own, None], u1.shape).ravel()
            inner, inner_abs = _conditional(h, u1.ravel(), m.ravel(), s.ravel(), kinks2, exp_rate, rtol, a_in, zr)
            zz = u1 / sd1[own, None]
            w = np.exp(-0.5 * zz * zz) * norm[own, None]
            return inner.reshape(u1.shape) * w, inner_abs.reshape(u1.shape) * w

        val, _, ok, err = integrate(outer, breaks, owner, full.size, rtol, atol, with_error=True)
        _warn(ok, "bivariate Gaussian expectation", val, err, rtol)
        out[full] = val
    return out.reshape(shape)


def _rough_abs_mean(h, sd1, b, csd, n=24):
    """E|h(u1, u2)| from a tensor Gauss-Hermite rule: only a scale for tolerances."""
    z, w = np.polynomial.hermite_e.hermegauss(n)
    w = w / w.sum()
    u1 = sd1[:, None, None] * z[None, :, None]
    u2 = b[:, None, None] * u1 + csd[:, None, None] * z[None, None, :]
    vals = np.abs(h(u1, u2))
    vals = np.where(np.isfinite(vals), vals, 0.0)
    return np.einsum("kij,i,j->k", vals, w, w)


def _conditional(h, u1, mean, sd, kinks2, exp_rate, rtol, atol=0.0, zr=Z_RANGE):
    """E[h(u1, u2)] over u2 ~ N(mean, sd^2), one integral per entry of u1."""
    breaks, owner = _gauss_panels(mean, sd, kinks2, exp_rate, zr)
    norm = 1.0 / (np.sqrt(2.0 * np.pi) * sd)

    def integrand(u2, own):
        zz = (u2 - mean[own, None]) / sd[own, None]
        return h(u1[own, None], u2) * np.exp(-0.5 * zz * zz) * norm[own, None]

    val, scale, ok, err = integrate(integrand, breaks, owner, u1.size, rtol, atol, max_panels=200, with_error=True)
    _warn(ok, "conditional Gaussian expectation", val, err, rtol)
    return val, scale


def _expect_along(h, q1, b, kinks1, kinks2, exp_rate, rtol):
    """E[h(u, b u)] for u ~ N(0, q1): the degenerate bivariate case."""
    out = np.empty(q1.size)
    for bv in np.unique(b):
        rows = b == bv
        ks = list(kinks1) + ([k / bv for k in kinks2] if bv != 0 else [])
        out[rows] = expect_1d(lambda u, bv=bv: h(u, bv * u), 0.0, q1[rows], sorted(set(ks)), exp_rate, rtol)
    return out


def _split_at(breaks, owner, points):
    """Split panels at per-integral points (NaN entries ignored)."""
    left, right = breaks[:, 0], breaks[:, 1]
    for j in range(points.shape[1]):
        p = points[owner, j]
        inside = np.isfinite(p) & (p > left) & (p < right)
        if inside.any():
            new_left, new_right = p[inside], right[inside]
            right = np.where(inside, p, right)
            left = np.concatenate([left, new_left])
            right = np.concatenate([right, new_right])
            owner = np.concatenate([owner, owner[inside]])
    return np.stack([left, right], axis=1), owner
