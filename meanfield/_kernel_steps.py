"""The steps of the kernel recursion shared by the in-memory and the blocked kernels.

:func:`input_layer` is ``K^0``; :class:`Moments` gives the Gaussian expectations of one layer on
the diagonals and at every entry of a kernel (or of one block of it); :func:`affine_power` sums the
NTK's remaining layers once the NNGP has stopped changing.  :mod:`meanfield.kernels` runs them on
a whole kernel, :mod:`meanfield._blocked_engine` on blocks.
"""

from __future__ import annotations

import numpy as np

from . import symbolic
from ._kernel_tables import BLOCK, Plan, apply_plan, build_plan, mirror_upper, zero_variance_fix
from .activations import Activation
from .expectations import expectation

__all__ = ["Moments", "affine_power", "input_layer"]


def affine_power(theta, k, a, n):
    """``n`` steps of ``theta -> k + a theta`` (elementwise): ``a^n theta + k (1 + a + ... + a^(n-1))``."""
    a = np.asarray(a, dtype=float)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        an = np.power(a, n)
        near = np.abs(1.0 - a) < 1e-8  # the geometric sum to second order in (a - 1)
        geo = np.where(near, n * (1.0 + 0.5 * (n - 1) * (a - 1.0)),
                       (1.0 - an) / np.where(near, 1.0, 1.0 - a))
        return an * theta + k * geo


def input_layer(X1, X2, same, sw, sb):
    """``K^0 = sigma_b2 + sigma_w2 x.x'/d_in`` and its diagonals (exactly symmetric when X2 is X1)."""
    d_in = X1.shape[1]
    with np.errstate(over="ignore", invalid="ignore"):
        K = sb + sw * (X1 @ X2.T) / d_in
        d1 = sb + sw * np.einsum("ij,ij->i", X1, X1) / d_in
        d2 = d1 if same else sb + sw * np.einsum("ij,ij->i", X2, X2) / d_in
    if not (np.isfinite(K).all() and np.isfinite(d1).all() and np.isfinite(d2).all()):
        raise ValueError("the inputs X1, X2 are too large: sigma_w2 x.x'/d_in + sigma_b2 exceeds float64's range "
                         "(about 1.8e308); rescale X")
    if same:
        np.fill_diagonal(K, d1)
        K = 0.5 * (K + K.T)
    return K, d1, d2


class Moments:
    """The Gaussian expectations of one layer for ``f = phi`` (order 0) or ``phi'`` (order 1).

    :meth:`second` gives ``E[f(u)^2]`` on the diagonals; :meth:`products` gives ``E[f(u) f(u')]``
    at every entry of a kernel: by the closed form (upper triangle, mirrored, when X2 is X1), or
    by the tables of :mod:`meanfield._kernel_tables` on the given range of angles.  The tables
    (:meth:`plan`) and their evaluation (:meth:`apply`) are also available apart, for kernels
    computed by blocks.
    """

    def __init__(self, act: Activation, order: int, method: str, same: bool):
        self.act, self.method, self.same = act, method, same
        self.f = act.phi if order == 0 else act.derivative(1)
        self.kind = "phi2" if order == 0 else "dphi2"
        closed = method != "quadrature" and symbolic.has_closed_form(act)
        self.closed = symbolic.numeric(act, "cov" if order == 0 else "dcov") if closed else None

    def second(self, d1, d2):
        """``E[f(u)^2]``, ``u ~ N(0, q)``, at the variances ``d1`` and ``d2`` of the rows and columns."""
        m1 = self.second_moment(d1)
        return m1, (m1 if self.same else self.second_moment(d2))

    def second_moment(self, q):
        """``E[f(u)^2]``, ``u ~ N(0, q)``, computed at the distinct values of q only."""
        u, inv = np.unique(q, return_inverse=True)
        return expectation(self.act, self.kind, u, method=self.method)[inv.ravel()]

    def products(self, K, d1, d2, m1, m2, angles):
        """``E[f(u) f(u')]`` on every entry of ``K`` (variances ``d1``, ``d2``; ``m = E[f^2]`` there)."""
        plan = None if self.closed is not None else self.plan(d1, d2, m1, m2, angles)
        return self.apply(plan, K, d1, d2, self.same)

    def plan(self, d1, d2, m1, m2, angles) -> Plan:
        """The tables of this layer for the variances ``d1``, ``d2`` on the range of angles ``angles``."""
        return build_plan(self.f, self.act, d1, d2, m1, m2, *angles, self.second_moment)

    def apply(self, plan, K, d1, d2, same, threads=True):
        """``E[f(u) f(u')]`` on every entry of ``K``: the closed form (``plan`` None) or the tables of ``plan``.

        ``plan`` holds the weights of exactly the rows and columns of ``K``; with ``same`` (a
        symmetric ``K``) only the upper triangle is evaluated and mirrored.
        """
        out = np.empty_like(K)
        if plan is None:
            rows = max(1, BLOCK // max(1, K.shape[1]))
            for r in range(0, K.shape[0], rows):
                sl = slice(r, r + rows)
                cs = slice(r if same else 0, None)  # X2 is X1: the upper block triangle, mirrored below
                out[sl, cs] = self.closed(d1[sl, None], d2[None, cs], K[sl, cs])
            if same:
                mirror_upper(out)
            return out
        apply_plan(plan, K, d1, d2, out, same, threads)
        zero_variance_fix(self.f, self.act, d1, d2, out)
        return out
