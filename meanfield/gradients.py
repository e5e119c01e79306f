"""Gradient scales through a network of mixed layers (Philipp et al. 2018; Yang et al. 2019).

Which networks explode gradients, by how much per layer, and why: a batch of inputs with
per-unit variance ``q0`` and pairwise correlation ``c0`` is followed layer by layer through a
sequence of :class:`meanfield.architecture.Layer` (dense, batch norm, layer norm, residual), each
by its rule in :mod:`meanfield.layers`, and the mean squared gradient back.

The **gradient scale coefficient** (Philipp et al. 2018, Def. 1) of the network output
``f_L`` with respect to layer ``l``'s vector ``f_l`` is ``GSC(L, l) = ||J_{L,l}||_qm ||f_l|| /
||f_L||`` with ``||A||_qm = ||A||_F / sqrt(n_in)``: the relative change of the output per
relative change of the layer, invariant to rescaling either.  In mean field (equal widths)
``||J_{L,l}||_qm^2`` is the product of the layers' gradient factors and ``||f_l||^2 / ||f_L||^2
= q_l / q_L``, so ``GSC(L, l)^2 = prod_{k=l+1}^L factor_k * q_l / q_L`` and one layer's is
``GSC_k^2 = factor_k q_{k-1} / q_k``.  GSC growing exponentially with depth is Philipp et al.'s
exploding gradient problem: tanh, SELU, layer-norm tanh and batch-norm nets have it; relu at
``sigma_w2 = 2`` and residual networks (by dilution) do not, or much less.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import _validate, architecture
from .layers import Dense, Residual, rule

__all__ = ["GradientScales", "gradient_scales"]

#: Dense layers above this variance are followed with their q = inf limit (relative error ~ sigma_b2 / q).
Q_LIMIT = 1e250


@dataclass(frozen=True)
class GradientScales:
    """Signals and gradients through a network, layer by layer (mean field).

    Layer ``k = 1..L`` maps vector ``k - 1`` to vector ``k``; vector 0 is the input batch.

    Attributes
    ----------
    layers : tuple of meanfield.architecture.Layer
    q, c : (L+1,) per-unit variance of vector l and the correlation between two inputs of the batch
    factor : (L,) per-layer factor of the squared gradient norm; entry ``k-1`` is going back
        through layer k, ``E||dE/df_{k-1}||^2 / E||dE/df_k||^2``, for an output gradient i.i.d.
        over units and inputs (batch norm's factor depends on the gradient's correlation over the
        batch: it is ``lambda_G`` inside the network, larger below the first layer if the input
        batch is not at the fixed point, smaller at the last layer)
    gsc_layer : (L,) one layer's gradient scale coefficient, ``sqrt(factor_k q_{k-1} / q_k)``
    gsc : (L+1,) ``GSC(L, l)`` of the output with respect to vector l (``gsc[L] = 1``)
    sign_diversity : (L,) expected fraction of units at which two inputs' arguments of phi
        differ in sign, ``arccos(c_arg)/pi`` (Philipp et al. 2018, Sec. 6: a collapsing domain
        has little sign diversity)
    nonlinearity : (L,) fraction of phi's output power that the best linear map of its argument
        does not explain, ``1 - E[a phi(a)]^2 / (E[a^2] E[phi(a)^2])`` (Gaussian a: Stein's
        ``1 - E[phi'(a)]^2 q / E[phi(a)^2]``); near 0 the layer is pseudo-linear
    k2, r2 : (L,) for residual blocks, the skip-to-branch power ratio and the branch's squared
        GSC (NaN for other layers): the block's ``GSC^2 = (k2 + r2) / (k2 + 1)`` (dilution)
    diverged_at : the first vector whose variance cannot be followed (entries from there on are
        NaN), or None.  A dense layer whose variance leaves float64 range is followed with its
        limit (``q = inf``: the correlation map and chi_1 of the asymptotic activation, the variance
        growing by :meth:`meanfield.layers.Dense.variance_growth` per layer, GSC from log q);
        activations growing faster than linearly, and residual blocks, stop there.
    """

    layers: tuple
    q: np.ndarray
    c: np.ndarray
    factor: np.ndarray
    gsc_layer: np.ndarray
    gsc: np.ndarray
    sign_diversity: np.ndarray
    nonlinearity: np.ndarray
    k2: np.ndarray
    r2: np.ndarray
    diverged_at: int | None

    @property
    def depth(self) -> int:
        """Number of layers."""
        return len(self.layers)

    @property
    def overall(self) -> float:
        """``GSC(L, 0)``: the gradient scale coefficient of the whole network."""
        return float(self.gsc[0])

    @property
    def per_layer(self) -> float:
        """The geometric mean of the layers' GSC, ``GSC(L, 0)^(1/L)``."""
        g = float(self.gsc[0])
        return g ** (1.0 / self.depth) if math.isfinite(g) else float("nan")

    @property
    def effective_depth(self) -> float:
        """The depth of a plain stack of the branches, at their mean GSC, with the same overall GSC.

        ``sum_k ln GSC_k / mean_k(ln r_k)`` over the residual blocks (Philipp et al. 2018, Sec. 5:
        residual networks are effectively shallower than their block count because each skip
        dilutes its branch; a block with skip-to-branch power ratio k^2 counts about
        ``1/(k^2 + 1)`` of a branch layer).  NaN without residual blocks or where the branches do
        not explode on average (``mean ln r <= 0``).
        """
        res = np.isfinite(self.r2)
        if not res.any():
            return float("nan")
        ln_r = 0.5 * float(np.mean(np.log(self.r2[res])))
        if not ln_r > 0:
            return float("nan")
        return float(np.sum(np.log(self.gsc_layer[res])) / ln_r)

    def summary(self) -> str:
        """One line in words, e.g. ``"GSC x1.21 per layer: 1.4e4 over 50 layers"``."""
        from .dynamics import format_factor

        net = architecture.describe(self.layers)
        if self.diverged_at is not None:
            return f"{net}: the variance leaves float64 range at vector {self.diverged_at}"
        g, L = self.per_layer, self.depth
        if g > 1.0 + 1e-9:
            how = f"explode: GSC x{format_factor(g)} per layer, {format_factor(self.overall)} over {L} layers"
        elif g < 1.0 - 1e-9:
            how = f"vanish: GSC x{format_factor(g)} per layer, {format_factor(self.overall)} over {L} layers"
        else:
            how = f"keep their scale: GSC {format_factor(self.overall)} over {L} layers"
        return f"{net}: gradients {how}"


def gradient_scales(layers, q0: float = 1.0, c0: float = 0.0) -> GradientScales:
    """Signals, gradients and GSC through ``layers`` from an input batch (Philipp et al. 2018).

    Each layer's rule (:func:`meanfield.layers.rule`) gives ``(q, c) -> (q', c')``, the factor of
    the mean squared gradient, and what enters phi; the gradient scale coefficient follows as in
    the module docstring: ``GSC(L, l)^2 = prod_{k > l} factor_k * q_l / q_L`` (computed in logs,
    so very deep networks neither overflow nor underflow).

    Parameters
    ----------
    layers : sequence of meanfield.architecture.Layer
        E.g. ``meanfield.architecture.network("tanh", 50, sigma_w2=1.0, norm="layer")``.
    q0 : float
        Per-unit variance of the input vectors (positive).
    c0 : float
        Correlation between any two inputs of the batch (the same for every pair, as for i.i.d.
        inputs, c0 = 0; batch norm needs c0 < 1 and its theory a batch of this symmetric kind).

    Returns
    -------
    GradientScales

    Examples
    --------
    >>> from meanfield.architecture import network
    >>> round(gradient_scales(network("relu", 10, sigma_w2=2.0)).overall, 6)
    1.0
    """
    layers = tuple(layers)
    if not layers:
        raise ValueError("layers is empty: give at least one layer")
    for i, lay in enumerate(layers):
        if not isinstance(lay, architecture.Layer):
            raise ValueError(f"layers[{i}] is {type(lay).__name__}, not a meanfield.architecture.Layer")
    q0 = _validate.number("q0", q0, low=0.0, low_open=True, what="a finite positive variance")
    c0 = _validate.number("c0", c0, low=-1.0, high=1.0, what="a correlation in [-1, 1]")
    rules = [rule(lay) for lay in layers]  # validates (e.g. batch norm needs B > 3) before any work
    L = len(layers)
    q, c = np.full(L + 1, np.nan), np.full(L + 1, np.nan)
    factor, div, nonlin, k2, r2 = (np.full(L, np.nan) for _ in range(5))
    q[0], c[0] = q0, c0
    diverged = None
    log_q = np.full(L + 1, np.nan)
    log_q[0] = math.log(q0)
    for k, r in enumerate(rules):  # forward: variances and correlations of the batch
        qk, ck = q[k], c[k]
        with np.errstate(over="ignore", invalid="ignore"):
            _, c_arg = r.argument(qk, ck)
            div[k] = math.acos(min(1.0, max(-1.0, c_arg))) / math.pi
            nonlin[k] = r.nonlinearity(qk, ck)
            if isinstance(r, Residual):
                k2[k], r2[k] = r.dilution(qk)
            dense = isinstance(r, Dense)
            if dense and qk > Q_LIMIT and r.variance_growth() is not None:
                # past float64 range soon: the limiting layer (the variance grows by a fixed factor)
                q[k + 1], c[k + 1] = np.inf, float(r.c_map(np.inf, ck))
            else:
                q[k + 1], c[k + 1] = r.forward(qk, ck)
        growth = r.variance_growth() if dense and math.isinf(q[k + 1]) else None
        if math.isinf(q[k + 1]) and growth is not None and growth > 0:
            # Dense.variance_growth: q'/q -> sigma_w2/rho (s+^2 + s-^2)/2 as q -> inf (exact in the limit)
            log_q[k + 1] = log_q[k] + math.log(growth)
        elif math.isfinite(q[k + 1]) and q[k + 1] > 0:
            log_q[k + 1] = math.log(q[k + 1])
        else:
            diverged = k + 1
            q[k + 1:] = np.nan
            break
    # backward from an output gradient i.i.d. over units and batch (share s = 0), tracking the
    # off-diagonal share of its batch covariance (it matters to batch norm only)
    s = 0.0
    top = L if diverged is None else 0
    for k in range(top - 1, -1, -1):
        with np.errstate(over="ignore", invalid="ignore"):
            factor[k], s = rules[k].gradient_share(q[k], c[k], s)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_f = np.log(factor)
        tail = np.concatenate([np.cumsum(log_f[::-1])[::-1], [0.0]])  # sum_{k > l} ln factor_k
        gsc = np.exp(0.5 * (tail + log_q - log_q[-1]))
        gsc_layer = np.exp(0.5 * (log_f + log_q[:-1] - log_q[1:]))
    return GradientScales(layers, q, c, factor, gsc_layer, gsc, div, nonlin, k2, r2, diverged)
