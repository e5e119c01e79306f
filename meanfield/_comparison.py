"""Theory against simulation, layer by layer: the statistics behind :func:`meanfield.empirical.compare`.

Private; the public names are :func:`meanfield.empirical.compare` and
:class:`meanfield.empirical.Comparison`.  The theory values are always computed by the caller:
nothing here evaluates the mean-field theory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

__all__ = ["Comparison", "compare"]


@dataclass
class Comparison:
    """Theory against simulation, layer by layer.

    Made by :func:`compare`; true in a boolean context when every layer passed.

    Parameters
    ----------
    theory, mean, sem : ndarray (K,)
        Theory values, simulated means and their standard errors.
    n_samples : int
        Number of independent samples behind ``mean`` and ``sem`` (0 if not known).
    confidence : float
        The stated confidence in (0, 1).
    familywise : bool
        Whether ``threshold`` is Bonferroni-corrected over the K layers.
    threshold : float
        Critical |z| (Student t with ``n - 1`` degrees of freedom) at ``confidence``; with
        ``familywise=True`` Bonferroni-corrected so that *all* K layers pass with that probability
        when the theory is right.
    atol, rtol : float
        Allowed systematic deviation, absolute and relative to ``|theory|``.
    layers : ndarray (K,)
        Layer labels (layer numbers ``0..K-1`` unless given).
    label : str
        Name used in :meth:`summary`.

    Attributes
    ----------
    z : ndarray (K,)
        ``(mean - theory) / sem``.
    layer_passed : ndarray of bool (K,)
        ``|mean - theory| <= threshold * sem + atol + rtol * |theory|``.
    passed : bool
        All layers passed.
    max_abs_z : float
        Largest ``|z|`` over the layers.
    """

    theory: np.ndarray
    mean: np.ndarray
    sem: np.ndarray
    n_samples: int
    confidence: float
    familywise: bool
    threshold: float
    atol: float
    rtol: float
    layers: np.ndarray
    label: str = ""

    @property
    def z(self) -> np.ndarray:
        """``(mean - theory) / sem`` per layer."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return (self.mean - self.theory) / self.sem

    @property
    def layer_passed(self) -> np.ndarray:
        """``|mean - theory| <= threshold * sem + atol + rtol * |theory|`` per layer."""
        allowed = self.threshold * self.sem + self.atol + self.rtol * np.abs(self.theory)
        return np.abs(self.mean - self.theory) <= allowed

    @property
    def passed(self) -> bool:
        """All layers passed."""
        return bool(np.all(self.layer_passed))

    def __bool__(self):
        return self.passed

    @property
    def max_abs_z(self) -> float:
        """Largest ``|z|`` over the layers."""
        return float(np.max(np.abs(self.z)))

    def summary(self) -> str:
        """A short human-readable report.

        Returns
        -------
        str
            The verdict, the threshold, the worst layer (theory, simulation +- sem, z) and the
            failing layers, if any.
        """
        name = f"{self.label}: " if self.label else ""
        verdict = "PASS" if self.passed else "FAIL"
        worst = int(np.argmax(np.abs(self.z)))
        lines = [
            f"{name}{verdict} at {self.confidence:.3g} confidence ({'all layers' if self.familywise else 'per layer'}, "
            f"|z| <= {self.threshold:.3g}, n = {self.n_samples}); worst layer {self.layers[worst]}: "
            f"theory {self.theory[worst]:.6g}, simulation {self.mean[worst]:.6g} +- {self.sem[worst]:.2g} "
            f"(z = {self.z[worst]:+.2f})"
        ]
        bad = self.layers[~self.layer_passed]
        if bad.size:
            lines.append(f"failing layers: {bad.tolist()}")
        return "\n".join(lines)

    def __str__(self):
        return self.summary()


def compare(theory: ArrayLike, samples: ArrayLike | None = None, *, mean: ArrayLike | None = None,
            sem: ArrayLike | None = None, n_samples: int | None = None, confidence: float = 0.99,
            familywise: bool = True, atol: float = 0.0, rtol: float = 0.0, layers: ArrayLike | None = None,
            label: str = "") -> Comparison:
    """Compare theory with simulation layer by layer, with standard errors and a pass/fail.

    Give either ``samples`` (per-network values, shape (n_networks, K); networks must be
    independent) or precomputed ``mean``, ``sem`` and ``n_samples``.  The test is two-sided:
    layer k passes if ``|mean_k - theory_k| <= t * sem_k + atol + rtol |theory_k|`` with ``t`` the
    Student-t quantile at ``confidence`` (``n - 1`` degrees of freedom), Bonferroni-corrected over
    the K layers when ``familywise`` (then the whole comparison passes with probability
    ``>= confidence`` if the theory is right).  ``atol``/``rtol`` allow for a known systematic
    (e.g. finite-width O(1/N)) deviation.

    Parameters
    ----------
    theory : array (K,) or scalar
        Theory values, computed by the caller (this module never evaluates the theory).
    samples : array (n, K), optional
        Per-network values, ``n >= 2`` independent networks.
    mean, sem : array (K,), optional
        Precomputed means and standard errors (instead of ``samples``).
    n_samples : int, optional
        Number of independent samples behind ``mean`` and ``sem`` (default: normal quantiles).
    confidence : float in (0, 1)
        Probability of passing when the theory is right (per layer, or for all layers).
    familywise : bool
        Bonferroni-correct over the K layers.
    atol, rtol : float
        Allowed systematic deviation, absolute and relative to ``|theory|``.
    layers : array (K,), optional
        Labels of the layers (default ``0..K-1``: the layer numbers of a record that starts at
        layer 0, as ``sim.q[:, :, a]`` and ``sim.gradient_ratio()`` do).
    label : str
        Name shown in the summary.

    Returns
    -------
    Comparison

    Raises
    ------
    ValueError
        ``confidence`` outside (0, 1), both or neither of ``samples`` and ``mean``/``sem``, fewer
        than two samples, mismatched shapes, non-finite values or a negative ``sem``.
    """
    if not (0 < float(confidence) < 1):
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    if samples is not None:
        if mean is not None or sem is not None:
            raise ValueError("give either samples or mean and sem, not both")
        s = np.asarray(samples, dtype=float)
        if s.ndim == 1:
            s = s[:, None]
        if s.ndim != 2 or s.shape[0] < 2:
            raise ValueError(f"samples must have shape (n_networks >= 2, K), got {np.shape(samples)}")
        n_samples = s.shape[0]
        mean = s.mean(axis=0)
        sem = s.std(axis=0, ddof=1) / math.sqrt(n_samples)
    elif mean is None or sem is None:
        raise ValueError("give samples, or both mean and sem")
    mean = np.atleast_1d(np.asarray(mean, dtype=float))
    sem = np.atleast_1d(np.asarray(sem, dtype=float))
    theory = np.broadcast_to(np.asarray(theory, dtype=float), mean.shape).copy()
    if sem.shape != mean.shape:
        raise ValueError(f"mean and sem must have the same shape, got {mean.shape} and {sem.shape}")
    for name, arr in (("theory", theory), ("mean", mean), ("sem", sem)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains non-finite values")
    if np.any(sem < 0):
        raise ValueError("sem must be non-negative")
    K = mean.size
    alpha = 1.0 - float(confidence)
    if familywise:
        alpha /= K
    if n_samples is not None and n_samples >= 2:
        threshold = float(stats.t.ppf(1 - alpha / 2, df=n_samples - 1))
    else:
        threshold = float(stats.norm.ppf(1 - alpha / 2))
    layers = np.arange(K) if layers is None else np.asarray(layers)
    if layers.shape != (K,):
        raise ValueError(f"layers must have shape ({K},), got {layers.shape}")
    return Comparison(theory=theory, mean=mean, sem=sem, n_samples=n_samples or 0, confidence=float(confidence),
                      familywise=bool(familywise), threshold=threshold, atol=float(atol), rtol=float(rtol),
                      layers=layers, label=str(label))
