"""What :func:`meanfield.empirical.measure_gradient_scales` returns, and the statistics behind it.

Private; the public name is :class:`meanfield.empirical.SampledGradientScales`.  Means over the
networks whose records are finite, standard errors across those networks, and the delta method
for the ratios (per-layer factor, gradient scale coefficients).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .architecture import describe

__all__ = ["SampledGradientScales", "estimate"]


@dataclass(frozen=True, eq=False)
class SampledGradientScales:
    """Gradient scales of sampled networks of :mod:`meanfield.architecture` layers.

    ``h^0`` is the input batch and layer ``k = 1..L`` maps ``h^{k-1}`` to ``h^k``; arrays of
    length ``L + 1`` are indexed by ``l = 0..L`` (the vector ``h^l``), arrays of length ``L`` by
    ``k - 1`` (layer ``k``).  Means are over the networks that stayed finite; ``*_se`` are their
    standard errors (``NaN`` with fewer than two such networks).

    Attributes
    ----------
    layers : tuple of meanfield.architecture.Layer
    width, batch_size, n_networks : int
    q0, c0 : float
        Input variance and correlation.
    dtype : str
    q, q_se : ndarray (L + 1,)
        ``q^l = (1 / (N B)) sum_{i, b} (h^l_{ib})^2``.
    c, c_se : ndarray (L + 1,)
        Mean over pairs ``a < b`` of the cosine ``h^l_a . h^l_b / (|h^l_a| |h^l_b|)``.
    grad2, grad2_se : ndarray (L + 1,)
        ``||g^l||^2 / (N B)``, ``g^l = dE/dh^l`` for ``E = sum(u * h^L)``, ``u_ib ~ N(0, 1)``:
        an unbiased estimate of ``||J_{L,l}||_F^2 / (N B)`` of the batch Jacobian
        ``J_{L,l} = dh^L / dh^l``.  ``grad2[L]`` is about 1.
    factor, factor_se : ndarray (L,)
        ``factor[k-1] = grad2[k-1] / grad2[k]``, the ratio of the means over networks: the growth
        of the squared gradient going back through layer ``k``.  Standard error by the delta
        method, ``|R| sd_n(X_n / mean X - Y_n / mean Y) / sqrt(n)`` for ``R = mean X / mean Y``.
    gsc, gsc_se : ndarray (L + 1,)
        Gradient scale coefficient (Philipp et al. 2018) ``GSC(L, l) = ||J_{L,l}||_qm ||h^l|| / ||h^L||``
        with ``||A||_qm = ||A||_F / sqrt(n_in)``, ``n_in = N B``: ``gsc[l]^2 = grad2[l] q[l] / q[L]``
        (from the means), and ``gsc[L] = 1`` exactly (``J_{L,L} = I``; ``grad2[L]`` is only its
        estimate).  Standard error by the delta method.
    gsc_layer, gsc_layer_se : ndarray (L,)
        Per-layer GSC ``GSC(k, k-1) = sqrt(factor[k-1] q[k-1] / q[k])``; their product over the layers is
        ``gsc[0] / sqrt(grad2[L])`` (``gsc`` is normalised by ``E||u||^2``, the per-layer factors by the
        measured ``||u||^2``).
    sign_diversity, sign_diversity_se : ndarray (L,)
        For layer k: the fraction of units at which two batch elements' arguments of phi (after the
        normalisation) have different signs, averaged over pairs (Philipp et al. 2018); ``arccos(c)/pi``
        for Gaussian pre-activations of correlation c.
    nonlinearity, nonlinearity_se : ndarray (L,)
        Nonlinear power fraction at layer k's phi, ``1 - (sum a phi(a))^2 / (sum a^2 sum phi(a)^2)``
        over units and batch, ``a`` the argument of phi: ``1 - E[phi'(a)]^2 q / E[phi(a)^2]`` for
        Gaussian ``a`` of variance q (Stein's lemma).  0 for linear phi.
    n_diverged : int
        Networks left out of the means because a record is inf or NaN (overflow, underflow to an
        all-zero layer, or a batch-norm unit with zero spread).
    per_network : dict of ndarray
        The records of every network (``"q"``, ``"c"``, ``"grad2"``, ``"sign_diversity"``,
        ``"nonlinearity"``), shape (n_networks, L + 1) or (n_networks, L), diverged ones included.
    diverged : ndarray of bool (n_networks,)
    """

    layers: tuple = field(repr=False)
    width: int
    batch_size: int
    n_networks: int
    q0: float
    c0: float
    dtype: str
    q: np.ndarray
    q_se: np.ndarray
    c: np.ndarray
    c_se: np.ndarray
    grad2: np.ndarray
    grad2_se: np.ndarray
    factor: np.ndarray
    factor_se: np.ndarray
    gsc: np.ndarray
    gsc_se: np.ndarray
    gsc_layer: np.ndarray
    gsc_layer_se: np.ndarray
    sign_diversity: np.ndarray
    sign_diversity_se: np.ndarray
    nonlinearity: np.ndarray
    nonlinearity_se: np.ndarray
    n_diverged: int
    per_network: dict = field(repr=False)
    diverged: np.ndarray = field(repr=False)

    @property
    def depth(self) -> int:
        """Number of layers L."""
        return len(self.layers)

    def mean_factor(self) -> float:
        """Geometric mean of the per-layer factors, ``(grad2[0] / grad2[L])^(1/L)``."""
        with np.errstate(all="ignore"):
            return float((self.grad2[0] / self.grad2[-1]) ** (1.0 / self.depth))

    def summary(self) -> str:
        """One line: the network, the sample, GSC(L, 0), the mean per-layer factor, q^L and c^L."""
        ok = self.n_networks - self.n_diverged
        text = (f"{describe(self.layers)}, width {self.width}, batch {self.batch_size}, "
                f"{ok} network{'s' if ok != 1 else ''}: GSC(L, 0) = {self.gsc[0]:.4g} +- {self.gsc_se[0]:.2g}, "
                f"per-layer factor (geometric mean) {self.mean_factor():.4g}, "
                f"q^L = {self.q[-1]:.4g}, c^L = {self.c[-1]:.4f}")
        if self.n_diverged:
            text += f"; {self.n_diverged} of {self.n_networks} diverged (inf/NaN) and left out"
        return text


def _mean_se(x):
    n = x.shape[0]
    mean = x.mean(axis=0) if n else np.full(x.shape[1:], np.nan)
    se = x.std(axis=0, ddof=1) / math.sqrt(n) if n > 1 else np.full(x.shape[1:], np.nan)
    return mean, se


def _delta_se(value, terms):
    """Delta-method standard error of ``value = prod_i (mean X_i)^e_i`` from ``terms = [(e_i, X_i, mean X_i)]``."""
    n = terms[0][1].shape[0]
    if n < 2:
        return np.full(np.shape(value), np.nan)
    y = sum(e * x / m for e, x, m in terms)
    return np.abs(value) * y.std(axis=0, ddof=1) / math.sqrt(n)


def estimate(setup, records: dict) -> SampledGradientScales:
    """Means, standard errors and the derived ratios from the per-network ``records``."""
    diverged = ~np.all([np.all(np.isfinite(r), axis=1) for r in records.values()], axis=0)
    ok = {name: r[~diverged] for name, r in records.items()}
    stats = {name: _mean_se(r) for name, r in ok.items()}
    with np.errstate(all="ignore"):
        q, g2 = stats["q"][0], stats["grad2"][0]
        Q, G = ok["q"], ok["grad2"]
        factor = g2[:-1] / g2[1:]
        factor_se = _delta_se(factor, [(1, G[:, :-1], g2[:-1]), (-1, G[:, 1:], g2[1:])])
        gsc = np.sqrt(g2 * q / q[-1])
        gsc_se = _delta_se(gsc, [(0.5, G, g2), (0.5, Q, q), (-0.5, Q[:, -1:], q[-1:])])
        gsc[-1], gsc_se[-1] = 1.0, 0.0  # J_{L,L} = I exactly (grad2[L] only estimates its norm)
        gsc_layer = np.sqrt(factor * q[:-1] / q[1:])
        gsc_layer_se = _delta_se(gsc_layer, [(0.5, G[:, :-1], g2[:-1]), (-0.5, G[:, 1:], g2[1:]),
                                             (0.5, Q[:, :-1], q[:-1]), (-0.5, Q[:, 1:], q[1:])])
    return SampledGradientScales(
        layers=setup.layers, width=setup.width, batch_size=setup.batch_size, n_networks=setup.n_networks,
        q0=setup.q0, c0=setup.c0, dtype=setup.dtype.name,
        q=q, q_se=stats["q"][1], c=stats["c"][0], c_se=stats["c"][1], grad2=g2, grad2_se=stats["grad2"][1],
        factor=factor, factor_se=factor_se, gsc=gsc, gsc_se=gsc_se, gsc_layer=gsc_layer, gsc_layer_se=gsc_layer_se,
        sign_diversity=stats["sign_diversity"][0], sign_diversity_se=stats["sign_diversity"][1],
        nonlinearity=stats["nonlinearity"][0], nonlinearity_se=stats["nonlinearity"][1],
        n_diverged=int(diverged.sum()), per_network=records, diverged=diverged,
    )
