"""The law of ``d = phi'(h)^2``, ``h ~ N(0, q)``, and its transforms, for :mod:`meanfield.spectrum`.

The law is split into atoms (the intervals between kinks where phi' is constant, each with its
exact Gaussian mass: relu, hard tanh, leaky relu, the linear half of elu) and a continuous part
(the intervals where phi' varies).  The moment generating function ``w(t) = E[d / (t - d)]`` and
its derivative are exact sums over the atoms plus adaptive Gauss-Kronrod integrals
(:func:`meanfield.quadrature.integrate`, one batch for many complex ``t``) over the continuous
part, with panels cut where ``d(u) = Re t`` and around the extrema of ``d`` at the scale of the
distance of ``t`` to the real axis and to the extremal value: the integrand's near-pole is
resolved also as ``t`` approaches the spectral edge, where a fixed-order rule fails.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

from . import quadrature
from .activations import Activation

#: Relative spread below which phi' counts as constant on an interval.
_FLAT = 1e-13
#: Points of the u grid that locates the roots of d(u) = Re t and the extrema of d.
_GRID = 4001
#: Cut offsets around a near-pole, in units of its width (geometric out to 4^11 widths).
_GEOM = 4.0 ** np.arange(-1, 12)
_OFFSETS = np.concatenate([-_GEOM[::-1], [0.0], _GEOM])
_RTOL = 1e-11


@dataclass(frozen=True)
class D2Law:
    """Law of ``d = phi'(h)^2`` for ``h ~ N(0, q)``.

    Attributes
    ----------
    values, probs : atoms of d (distinct values, ascending) and their masses
    pieces : ((a, b), ...) intervals of u where phi' is not constant (the continuous part)
    dmax : the supremum of d over the support
    p_zero : P(d = 0)
    """

    act: Activation
    q: float
    values: np.ndarray
    probs: np.ndarray
    pieces: tuple
    dmax: float
    p_zero: float
    grid_u: np.ndarray
    grid_d: np.ndarray

    @property
    def discrete(self) -> bool:
        return not self.pieces

    def moments(self, k_max: int) -> np.ndarray:
        """``mu_k = E[d^k]`` for k = 1..k_max: exact over the atoms, adaptive quadrature otherwise."""
        ks = np.arange(1, k_max + 1)
        if self.discrete:
            return (self.values[None, :] ** ks[:, None]) @ self.probs
        act = self.act
        dphi = act.dphi
        return np.array([
            quadrature.expect_1d(lambda u, k=k: dphi(u) ** (2 * k), 0.0, self.q, act.kinks,
                                 2 * k * act.exp_rate, 1e-13)[()]
            for k in ks])

    def w(self, t):
        """``w(t) = E[d/(t - d)]``, ``w'(t) = -E[d/(t - d)^2]`` and ``1 + w = E[t/(t - d)]``.

        At complex (or real) ``t``; ``1 + w`` is summed directly over the atoms (it vanishes as
        t -> 0, where ``1 + w`` would lose its digits).
        """
        t = np.asarray(t, dtype=complex)
        shape = t.shape
        t = t.ravel()
        diff = t[:, None] - self.values[None, :]
        pv = self.probs * self.values
        w = (pv / diff).sum(axis=1)
        dw = -(pv / diff ** 2).sum(axis=1)
        w1 = (self.probs * t[:, None] / diff).sum(axis=1)
        if not self.discrete:
            cw, cdw, cw1 = self._continuous(t)
            w, dw, w1 = w + cw, dw + cdw, w1 + cw1
        return w.reshape(shape), dw.reshape(shape), w1.reshape(shape)

    # ------------------------------------------------------------------------------------
    def _continuous(self, t):
        """The continuous part of w and w' by batched adaptive quadrature in u."""
        n = t.size
        sd = np.sqrt(self.q)
        reach = quadrature.Z_RANGE * sd + 2 * self.act.exp_rate * self.q
        cuts = [np.full((n, 1), -reach), np.full((n, 1), reach),
                np.broadcast_to(sd * np.array([-6.0, -3.0, -1.5, 0.0, 1.5, 3.0, 6.0]), (n, 7))]
        ends = [x for ab in self.pieces for x in ab if np.isfinite(x)]
        if ends:
            cuts.append(np.broadcast_to(np.array(ends), (n, len(ends))))
        cuts.extend(self._pole_cuts(t))
        c = np.concatenate(cuts, axis=1)
        c = np.where(np.isfinite(c), c, -reach)
        c = np.clip(c, -reach, reach)
        c.sort(axis=1)
        left, right = c[:, :-1], c[:, 1:]
        keep = right > left
        owner = np.broadcast_to(np.arange(n)[:, None], left.shape)[keep]
        breaks = np.stack([left[keep], right[keep]], axis=1)
        # integrals per t: Re w, Re w', Re E[t/(t-d)] (and the imaginary parts for complex t)
        comps = (0, 2, 4) if not np.any(t.imag) else (0, 1, 2, 3, 4, 5)
        nc = len(comps)
        breaks = np.concatenate([breaks] * nc)
        owner = np.concatenate([owner + j * n for j in range(nc)])
        comp_of = np.array(comps)
        dphi, pieces, norm = self.act.dphi, self.pieces, 1.0 / (np.sqrt(2 * np.pi) * sd)
        tr, ti = t.real, t.imag

        def func(u, own):
            i, j = own % n, comp_of[own // n][:, None]
            inside = np.zeros(u.shape, dtype=bool)
            for a, b in pieces:
                inside |= (u >= a) & (u <= b)
            dg = np.where(inside, dphi(u) ** 2, 0.0)
            g = np.where(inside, np.exp(-0.5 * (u / sd) ** 2) * norm, 0.0)
            a = tr[i, None] - dg
            b = np.broadcast_to(ti[i, None], a.shape)
            den = a * a + b * b
            # d/(t-d) = d (a - ib)/den; -d/(t-d)^2 = -d (a - ib)^2/den^2; t/(t-d) = t (a - ib)/den
            num = np.select(
                [j == 0, j == 1, j == 2, j == 3, j == 4],
                [dg * a, -dg * b, dg * (b * b - a * a) / den, 2 * dg * a * b / den, tr[i, None] * a + b * b],
                ti[i, None] * a - tr[i, None] * b)
            return g * num / den

        val, _, _ = quadrature.integrate(func, breaks, owner, nc * n, rtol=_RTOL, max_panels=4000)
        parts = dict(zip(comps, np.split(val, nc)))
        zero = np.zeros(n)
        return tuple(parts[k] + 1j * parts.get(k + 1, zero) for k in (0, 2, 4))

    def _pole_cuts(self, t):
        """Cuts around the roots of d(u) = Re t and the extrema of d, at the near-pole's width."""
        u, d = self.grid_u, self.grid_d
        du = u[1] - u[0]
        out = []
        s = d[None, :] - t.real[:, None]
        cross = (s[:, :-1] * s[:, 1:] < 0) & np.isfinite(s[:, :-1]) & np.isfinite(s[:, 1:])
        rows, cols = np.nonzero(cross)
        if rows.size:
            counts = np.bincount(rows, minlength=t.size)
            m = counts.max()
            slot = np.arange(rows.size) - np.concatenate([[0], np.cumsum(counts)])[rows]
            frac = s[rows, cols] / (s[rows, cols] - s[rows, cols + 1])
            root = u[cols] + frac * du
            slope = np.abs(d[cols + 1] - d[cols]) / du
            width = np.abs(t.imag[rows]) / np.maximum(slope, 1e-300)
            pts = np.full((t.size, m, _OFFSETS.size), np.nan)
            pts[rows, slot] = root[:, None] + width[:, None] * _OFFSETS
            out.append(pts.reshape(t.size, -1))
        ext = _extrema(d)
        for k in ext:
            curv = abs(d[k + 1] - 2 * d[k] + d[k - 1]) / du ** 2 / 2
            if curv <= 0 or not np.isfinite(curv):
                continue
            width = np.sqrt(np.abs(t - d[k]) / curv)
            out.append(u[k] + width[:, None] * _OFFSETS)
        return out


def _extrema(d):
    """Grid indices of the interior local extrema of d (NaN where d is an atom)."""
    g = np.diff(d)
    ok = np.isfinite(g[:-1]) & np.isfinite(g[1:])
    return np.flatnonzero(ok & (g[:-1] * g[1:] < 0)) + 1


def d2_law(act: Activation, q: float) -> D2Law:
    """Split the law of ``phi'(h)^2``, ``h ~ N(0, q)``, into atoms and a continuous part."""
    dphi = act.derivative(1)
    sd = np.sqrt(q)
    edges = [-np.inf, *act.kinks, np.inf]
    if q == 0:
        # q* = 0 is the limit of a collapsing variance: h is tiny with either sign, so at a kink at 0
        # phi'^2 takes its two one-sided values with probability 1/2 each (one atom if they agree)
        h = np.array([-1e-150, 1e-150]) if 0.0 in act.kinks else np.zeros(1)
        vals = np.asarray(dphi(h), dtype=float) ** 2
        law: dict[float, float] = {}
        for v in vals:
            law[float(v)] = law.get(float(v), 0.0) + 1.0 / vals.size
        values = np.array(sorted(law))
        probs = np.array([law[v] for v in values])
        return D2Law(act, 0.0, values, probs, (), float(values.max()), float(law.get(0.0, 0.0)), np.zeros(1),
                     np.full(1, np.nan))
    atoms: dict[float, float] = {}
    pieces = []
    scale = sd + 1.0
    for a, b in zip(edges[:-1], edges[1:]):
        if np.isfinite(a) and np.isfinite(b):
            x = a + (b - a) * np.array([0.05, 0.2, 0.4, 0.5, 0.6, 0.8, 0.95])
        elif np.isfinite(a):
            x = a + scale * np.array([1e-3, 0.1, 0.5, 1.0, 3.0, 10.0, 30.0])
        elif np.isfinite(b):
            x = b - scale * np.array([1e-3, 0.1, 0.5, 1.0, 3.0, 10.0, 30.0])
        else:
            x = scale * np.array([-30.0, -3.0, -0.7, 0.0, 0.4, 2.5, 30.0])
        vals = np.asarray(dphi(x), dtype=float) ** 2
        mass = special.ndtr(b / sd) - special.ndtr(a / sd)
        if np.ptp(vals) <= _FLAT * max(1.0, np.max(np.abs(vals))):
            v = float(vals[3])
            atoms[v] = atoms.get(v, 0.0) + mass
        else:
            pieces.append((a, b))
    values = np.array(sorted(atoms))
    probs = np.array([atoms[v] for v in values])
    reach = quadrature.Z_RANGE * sd + 2 * act.exp_rate * q
    grid_u = np.linspace(-reach, reach, _GRID)
    inside = np.zeros(grid_u.shape, dtype=bool)
    for a, b in pieces:
        inside |= (grid_u > a) & (grid_u < b)
    grid_d = np.where(inside, np.asarray(dphi(grid_u), dtype=float) ** 2, np.nan)
    dmax = float(values.max()) if values.size else -np.inf
    if pieces:
        dmax = max(dmax, _sup_d(dphi, grid_u, grid_d, act.slopes, pieces))
    p_zero = float(probs[values == 0].sum()) if values.size else 0.0
    return D2Law(act, float(q), values, probs, tuple(pieces), dmax, p_zero, grid_u, grid_d)


def _sup_d(dphi, grid_u, grid_d, slopes, pieces=()):
    """Sup of phi'^2 over the continuous pieces.

    The grid maximum, refined; the one-sided limits at the pieces' finite ends (e.g. selu's
    ``(lambda alpha)^2`` as h -> 0-); and the limits at +-inf.
    """
    from scipy import optimize

    k = int(np.nanargmax(grid_d))
    best = float(grid_d[k])
    if 0 < k < grid_u.size - 1 and np.isfinite(grid_d[k - 1]) and np.isfinite(grid_d[k + 1]):
        res = optimize.minimize_scalar(lambda x: -float(dphi(np.array([x]))[0] ** 2),
                                       bounds=(grid_u[k - 1], grid_u[k + 1]), method="bounded",
                                       options={"xatol": 1e-12})
        best = max(best, -float(res.fun))
    ends = [x + (1e-12 * max(1.0, abs(x)) if side else -1e-12 * max(1.0, abs(x)))
            for a, b in pieces for x, side in ((a, True), (b, False)) if np.isfinite(x)]
    if ends:
        with np.errstate(all="ignore"):
            vals = np.asarray(dphi(np.array(ends, dtype=float)), dtype=float) ** 2
        if np.isfinite(vals).any():
            best = max(best, float(np.nanmax(vals)))
    if slopes is not None:
        best = max(best, *(float(s) ** 2 for s in slopes))
    return best
