"""What the sampled networks of :mod:`meanfield.empirical` return: the records, stacked or not.

Private; the public names are :class:`meanfield.empirical.NetworkRun`,
:class:`meanfield.empirical.Simulation` and :class:`meanfield.empirical.KernelEstimate`.
Layer ``l`` (the pre-activation after ``l`` nonlinear layers, ``l = 0..L-1`` as in
:mod:`meanfield.empirical`) is stored at index ``l``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

if TYPE_CHECKING:
    from .empirical import NetworkSpec

__all__ = ["NetworkRun", "Simulation", "KernelEstimate"]


@dataclass
class _Records:
    """The per-layer records a sampled network produces (one network, or stacked over many)."""

    q: np.ndarray
    output: np.ndarray
    q12: np.ndarray | None = None
    pairs: np.ndarray | None = None
    p: np.ndarray | None = None
    grad_sq: np.ndarray | None = None
    grad_input_sq: np.ndarray | None = None
    grad_w_sq: np.ndarray | None = None
    jvp_sq: np.ndarray | None = None
    jacobian_sv: np.ndarray | None = None

    @property
    def c(self) -> np.ndarray | None:
        """Correlations ``c^l = q12^l / sqrt(q^l_a q^l_b)`` (Poole et al. 2016, eq. 5), shaped as ``q12``."""
        return _correlation(self.q, self.q12, self.pairs)


@dataclass
class NetworkRun(_Records):
    """What one sampled network did to a batch of inputs (the result of :func:`meanfield.empirical.run`).

    Layer ``l = 0..L-1`` is stored at index ``l`` of the first axis (``layers`` holds l): layer 0
    is the input layer's pre-activation ``h^0 = W^0 x + b^0``.

    Attributes
    ----------
    q : ndarray (L, B)
        ``q^l = (1/N_l) sum_i (h^l_i)^2`` for each input (Poole et al. 2016, eq. 3); at large width
        ``q^0 = sigma_w2 |x|^2 / d_in + sigma_b2``.
    q12 : ndarray (L, B, B) or (L, P) or None
        ``q12^l = (1/N_l) sum_i h^l_i(x_a) h^l_i(x_b)`` for all pairs or the requested ``pairs``.
    c : ndarray or None
        Correlations ``c^l = q12^l / sqrt(q^l_a q^l_b)`` (Poole et al. 2016, eq. 5), shaped as ``q12``.
    pairs : ndarray (P, 2) or None
        The input pairs of ``q12`` when a list was requested.
    p : ndarray (L, B) or None
        Residual networks: ``p^l = (1/N) sum_i (x^l_i)^2`` (Yang & Schoenholz 2017).
    grad_sq : ndarray (L, B) or None
        ``||delta^l||^2 = ||d(g . h^{L-1})/d h^l||^2`` (residual: ``d/d x^l``) for a random output
        gradient ``g ~ N(0, I)``, drawn independently for each input.  ``grad_sq[l] / grad_sq[l+1]``
        estimates ``chi_1 / rho`` at ``q^l`` (Schoenholz et al. 2017, eq. 12).
    grad_input_sq : ndarray (B,) or None
        ``||d(g . h^{L-1})/dx||^2 = ||J^T g||^2``.
    grad_w_sq : ndarray (L, B) or None
        ``||d(g . h^{L-1})/d W^l||_F^2 = ||delta^l||^2 ||a^{l-1}||^2``, per input, ``a^{l-1}`` the input of
        ``W^l``: ``a^{-1} = x``, ``a^{l-1} = m^l / rho * phi(h^{l-1})`` (residual: ``x^{l-1}``).
    jvp_sq : ndarray (L, B) or None
        ``||J^l u||^2`` with ``J^l = dh^l/dx`` (residual: ``dx^l/dx``) for the tangent ``u``
        of each input (forward mode; Hanin 2018).
    jacobian_sv : ndarray (B, min(d_in, N_{L-1})) or None
        Singular values of the input-output Jacobian of each input, descending.
    output : ndarray (B, N_{L-1})
        ``h^{L-1}`` (residual: ``x^{L-1}``).
    activations : list of ndarray (B, N_l) or None
        ``h^l`` for every layer, only if ``keep_activations=True``.
    ntk : ndarray (B, B) or None
        Filled only by :func:`meanfield.empirical.empirical_ntk`.
    """

    activations: list | None = None
    ntk: np.ndarray | None = field(default=None, repr=False)

    @property
    def layers(self) -> np.ndarray:
        """Layer numbers 0..L-1 matching the first axis of the per-layer arrays."""
        return np.arange(self.q.shape[0])


def _correlation(q, q12, pairs):
    """``c = q12 / sqrt(q_a q_b)`` for all pairs (``pairs`` None) or the listed ones."""
    if q12 is None:
        return None
    if pairs is None:
        return q12 / (np.sqrt(q[..., :, None]) * np.sqrt(q[..., None, :]))
    return q12 / (np.sqrt(q[..., pairs[:, 0]]) * np.sqrt(q[..., pairs[:, 1]]))


@dataclass
class Simulation(_Records):
    """Records of many independently sampled networks, stacked along a first axis.

    Every record of :class:`NetworkRun` appears here with a leading axis of length
    ``n_networks``, so ``sim.q[:, l, a]`` is ``q^l`` of input ``a`` in each network (layers
    ``l = 0..L-1``: index ``l`` of :func:`meanfield.propagate` from ``q0 = q^0``).  Networks
    are independent, so standard errors across that axis are honest; inputs and layers of one
    network are not independent of each other.

    Attributes
    ----------
    spec : meanfield.empirical.NetworkSpec
        The distribution the networks were drawn from.
    q, q12, pairs, p, grad_sq, grad_input_sq, grad_w_sq, jvp_sq, jacobian_sv
        As in :class:`NetworkRun`, with a leading network axis (``pairs`` is shared).
    output : ndarray (n_networks, B, N_{L-1}) or None
        Outputs, if ``simulate(..., outputs=True)``.
    c : ndarray or None
        Correlations ``c^l = q12^l / sqrt(q^l_a q^l_b)``, per network.
    n_networks : int
        Number of networks.
    """

    spec: NetworkSpec = field(kw_only=True)

    @property
    def n_networks(self) -> int:
        """Number of independently sampled networks."""
        return self.q.shape[0]

    @property
    def layers(self) -> np.ndarray:
        """Layer numbers 0..L-1 matching axis 1 of the per-layer arrays."""
        return np.arange(self.q.shape[1])

    def gradient_ratio(self, inputs: int | ArrayLike | None = None) -> np.ndarray:
        """Per-network, per-layer growth of the squared gradient, shape (n_networks, L-1).

        ``ratio[:, l] = sum_a grad_sq[:, l, a] / sum_a grad_sq[:, l+1, a]`` (``l = 0..L-2``), the
        sum over the given ``inputs`` (an index or a list; default all), estimates the backward
        factor from layer ``l + 1`` to layer ``l``: ``sigma_w2 E[phi'(h^l)^2] / rho`` (``chi_1 / rho``
        at ``q^l``; Schoenholz et al. 2017, eq. 12) for plain networks, and
        ``1 + sigma_v2 sigma_w2 E[phi'(h^{l+1})^2] / rho`` (block ``l + 1``, at ``q^{l+1}``) for
        residual ones (Yang & Schoenholz 2017).  Pair ``ratio[:, l]`` with theory evaluated at
        ``q[l]`` (plain) or ``q[l+1]`` (residual).  Inputs with different ``q`` have different
        factors in early layers, so compare one input at a time there.

        Parameters
        ----------
        inputs : int or sequence of int, optional
            Inputs whose squared gradients are summed (default all).

        Returns
        -------
        ndarray (n_networks, L - 1)

        Raises
        ------
        ValueError
            If the simulation did not record gradients.
        """
        if self.grad_sq is None:
            raise ValueError("gradients were not recorded: simulate with gradients=True")
        sel = slice(None) if inputs is None else np.atleast_1d(inputs)
        g = self.grad_sq[:, :, sel].sum(axis=2)
        return g[:, :-1] / g[:, 1:]

    def mean(self, name: str, axis: int = 0) -> np.ndarray:
        """Mean of a record over networks.

        Parameters
        ----------
        name : str
            A record (``"q"``, ``"c"``, ``"grad_sq"``, ..., or ``"gradient_ratio"``).
        axis : int
            Axis to average over (0: the networks).

        Returns
        -------
        ndarray
        """
        return np.mean(self._get(name), axis=axis)

    def sem(self, name: str, axis: int = 0) -> np.ndarray:
        """Standard error of the mean of a record over networks.

        Parameters
        ----------
        name : str
            A record, as in :meth:`mean`.
        axis : int
            Axis of the independent samples (0: the networks).

        Returns
        -------
        ndarray
            Sample standard deviation (``ddof=1``) over ``sqrt(n)``.
        """
        a = self._get(name)
        n = a.shape[axis]
        if n < 2:
            raise ValueError("a standard error needs at least two networks")
        return np.std(a, axis=axis, ddof=1) / math.sqrt(n)

    def _get(self, name):
        a = getattr(self, name) if name != "gradient_ratio" else self.gradient_ratio()
        if a is None:
            raise ValueError(f"{name!r} was not recorded in this simulation")
        return a


@dataclass
class KernelEstimate:
    """A Monte Carlo kernel estimate: mean over networks and its standard error.

    Attributes
    ----------
    mean, sem : ndarray (B, B)
        Mean over ``n_networks`` independent networks and the standard error of that mean.
    n_networks : int
        Number of networks averaged.
    samples : ndarray (n_networks, B, B) or None
        Per-network kernels, if requested.
    """

    mean: np.ndarray
    sem: np.ndarray
    n_networks: int
    samples: np.ndarray | None = field(default=None, repr=False)
