"""Engine of :mod:`meanfield.blocked`: the kernel recursion on one block, and its preparation.

:func:`prepare` runs, once and on the whole data set, what every block shares: the per-input
diagonals ``K^l(x, x)`` of every layer (one-dimensional integrals), and, for an activation without
a closed form, every layer's tables (:func:`meanfield._kernel_tables.build_plan`) with the weights
of every input.  The tables cover all angles ``[0, pi]`` (a block cannot know the range of angles
in the other blocks), so they can differ from those of :func:`meanfield.kernels.nngp`, which
tabulates only the angles that occur, by the tables' tolerance (about 1e-14 relative).

:func:`block` computes the recursion on rows ``r0..`` and columns ``c0..`` of the kernel from the
inputs of those rows and columns and the prepared state only; it is the same sequence of
elementwise operations as the in-memory recursion (:mod:`meanfield.kernels`), block by block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ._kernel_steps import Moments, affine_power
from ._kernel_tables import Plan
from .layers import Dense

__all__ = ["State", "prepare", "block", "store_block"]


@dataclass
class State:
    """What every block needs: the layer rule, every layer's diagonals and tables."""

    layer: Dense
    depth: int
    same: bool
    want_ntk: bool
    phi: Moments
    dphi: Moments | None
    d1: list = field(default_factory=list)  # d1[l]: K^l(x, x) of the rows, l = 0..m
    d2: list = field(default_factory=list)
    D1: list = field(default_factory=list)  # D1[l]: E[phi'(u)^2] at d1[l] (NTK)
    D2: list = field(default_factory=list)
    plans: list = field(default_factory=list)  # plans[l]: tables of layer l + 1 for phi (None: closed form)
    dplans: list = field(default_factory=list)  # and for phi'
    steady: int | None = None  # from this layer on the diagonals do not change (every layer repeats it)

    def at(self, l: int) -> int:
        """Index of the stored layer that layer ``l`` (``l >= 0``, before the step) uses."""
        return l if self.steady is None else min(l, self.steady)


def _finite(*arrays) -> bool:
    return all(bool(np.all(np.isfinite(a))) for a in arrays)


def prepare(X1: np.ndarray, X2: np.ndarray, same: bool, layer: Dense, depth: int, method: str,
            want_ntk: bool) -> State:
    """Diagonals of every layer and, without a closed form, every layer's tables on ``[0, pi]``.

    Raises the ValueError of :func:`meanfield.kernels.nngp` when the variances leave float64's
    range, before any block is computed.
    """
    sw, sb = layer.sigma_w2, layer.sigma_b2
    d_in = X1.shape[1]
    d1 = sb + sw * np.einsum("ij,ij->i", X1, X1) / d_in
    d2 = d1 if same else sb + sw * np.einsum("ij,ij->i", X2, X2) / d_in
    phi = Moments(layer.act, 0, method, same)
    dphi = Moments(layer.act, 1, method, same) if want_ntk else None
    st = State(layer, depth, same, want_ntk, phi, dphi, [d1], [d2])
    angles = (0.0, math.pi)
    for layer_number in range(1, depth + 1):
        V1, V2 = phi.second(d1, d2)
        st.plans.append(None if phi.closed is not None else phi.plan(d1, d2, V1, V2, angles))
        if want_ntk:
            D1, D2 = dphi.second(d1, d2)
            st.D1.append(D1)
            st.D2.append(D2)
            st.dplans.append(None if dphi.closed is not None else dphi.plan(d1, d2, D1, D2, angles))
        with np.errstate(over="ignore"):
            n1 = layer.variance(V1)
            n2 = n1 if same else layer.variance(V2)
        if not _finite(n1, n2):
            raise ValueError(f"the kernel's variances exceed float64's range at layer {layer_number} of {depth}: "
                             f"the network diverges at sigma_w2 = {sw:g}, sigma_b2 = {sb:g}; use fewer layers or "
                             "a smaller sigma_w2")
        steady = np.array_equal(n1, d1) and np.array_equal(n2, d2)
        d1, d2 = n1, n2
        st.d1.append(d1)
        st.d2.append(d2)
        if steady:  # every later layer has these diagonals and these tables
            st.steady = layer_number - 1
            break
    return st


def _rows(plan: Plan | None, rs: slice, cs: slice) -> Plan | None:
    """The weights of ``plan`` for rows ``rs`` and columns ``cs`` only (the tables are shared)."""
    if plan is None:
        return None
    return Plan(plan.tables, plan.idx1[rs], plan.w1[rs], plan.idx2[cs], plan.w2[cs])


def block(st: State, Xr: np.ndarray, Xc: np.ndarray, r0: int, c0: int) -> np.ndarray:
    """Rows ``r0 .. r0 + len(Xr)`` and columns ``c0 .. c0 + len(Xc)`` of ``K^L`` (or ``Theta^L``).

    ``Xr``, ``Xc`` are the inputs of those rows and columns.  When X2 is X1 and ``r0 == c0`` the
    block lies on the diagonal: it is computed as a symmetric kernel (upper triangle, mirrored).
    """
    layer, same = st.layer, st.same
    sw, sb = layer.sigma_w2, layer.sigma_b2
    rs, cs = slice(r0, r0 + Xr.shape[0]), slice(c0, c0 + Xc.shape[0])
    on_diag = same and r0 == c0
    d_in = Xr.shape[1]
    K = sb + sw * (Xr @ Xc.T) / d_in
    if same:  # the whole kernel is 0.5 (K + K^T) with its diagonal set first
        Kt = sb + sw * (Xc @ Xr.T) / d_in
        if on_diag:
            np.fill_diagonal(K, st.d1[0][rs])
            np.fill_diagonal(Kt, st.d1[0][rs])
        K = 0.5 * (K + Kt.T)
        del Kt
    Theta = K.copy() if st.want_ntk else None
    t1 = st.d1[0][rs].copy() if st.want_ntk else None
    for layer_number in range(1, st.depth + 1):
        i = st.at(layer_number - 1)
        d1, d2 = st.d1[i][rs], st.d2[i][cs]
        with np.errstate(over="ignore"):
            C = st.phi.apply(_rows(st.plans[i], rs, cs), K, d1, d2, on_diag, threads=False)
        if st.want_ntk:
            Dc = st.dphi.apply(_rows(st.dplans[i], rs, cs), K, d1, d2, on_diag, threads=False)
        K_prev = K
        K = layer.covariance(C)
        del C
        n1 = st.d1[i + 1][rs]
        if on_diag:
            np.fill_diagonal(K, n1)
        fixed = st.steady is not None and i == st.steady and np.array_equal(K, K_prev)
        del K_prev
        if st.want_ntk:
            D1 = st.D1[i][rs]
            Theta = layer.ntk_from(K, Dc, Theta)
            t1 = layer.ntk_from(n1, D1, t1)
            if on_diag:
                np.fill_diagonal(Theta, t1)
            if fixed and layer_number < st.depth:
                n = st.depth - layer_number
                Theta = affine_power(Theta, K, sw * Dc, n)
                t1 = affine_power(t1, n1, sw * D1, n)
                if on_diag:
                    np.fill_diagonal(Theta, t1)
            if not np.isfinite(Theta).all():
                raise ValueError(f"the NTK exceeds float64's range by layer {st.depth}: it grows by "
                                 "sigma_w2 E[phi'(u) phi'(u')] >= 1 per layer; use fewer layers")
            del Dc
        if fixed:
            break
    return Theta if st.want_ntk else K


def store_block(st: State, Xr: np.ndarray, Xc: np.ndarray, r0: int, c0: int, path: str) -> int:
    """Compute :func:`block` and write it into the zarr array at ``path`` (and its mirror when X2 is X1).

    Returns the number of entries written.  Writing the same block again writes the same values,
    so a block recomputed after a lost worker leaves the store as it would have been.
    """
    import zarr

    B = block(st, Xr, Xc, r0, c0)
    z = zarr.open_array(path, mode="r+")
    rs, cs = slice(r0, r0 + B.shape[0]), slice(c0, c0 + B.shape[1])
    z[rs, cs] = B
    if st.same and r0 != c0:
        z[cs, rs] = B.T
        return 2 * B.size
    return B.size
