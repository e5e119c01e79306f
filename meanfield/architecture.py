"""Network architectures as plain data: a network is a sequence of layers.

A :class:`Layer` holds no weights and no theory: its kind, its activation and its variances.
The theory (:mod:`meanfield.layers`, :mod:`meanfield.gradients`) and the sampled networks
(:mod:`meanfield.empirical`) read the same description.

Layer kinds, each mapping a vector (one entry per unit, for every input of a batch) to the next:

* ``"dense"``      ``h' = W (m * phi(h)) / rho + b`` (dropout masks ``m ~ Bernoulli(rho)``;
  Poole et al. 2016; Schoenholz et al. 2017, Sec. 5);
* ``"batch_norm"`` ``h' = W phi(BN(h)) + b``, ``BN(h)_b = (h_b - mean_B h) / sqrt(var_B h)`` per
  unit over the batch of size ``batch_size`` (biased variance, gamma = 1, beta = 0; Yang et al.
  2019, "A mean field theory of batch normalization");
* ``"layer_norm"`` ``h' = W phi(LN(h)) + b``, ``LN(h) = (h - mean_units h) / sqrt(var_units h)``
  per input over the units (Ba et al. 2016; Philipp et al. 2018);
* ``"residual"``   ``x' = x + V phi(W x + b) + a`` (Yang & Schoenholz 2017), equal widths.

Weights ``W_ij ~ N(0, sigma_w2 / N)``, ``V_ij ~ N(0, sigma_v2 / N)``, biases
``b_i ~ N(0, sigma_b2)``, ``a_i ~ N(0, sigma_a2)``, with N the width of the layer's input.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _validate
from .activations import Activation, activation

__all__ = ["Layer", "KINDS", "NORMS", "network", "describe"]

#: The layer kinds.
KINDS = ("dense", "batch_norm", "layer_norm", "residual")

#: What ``norm=`` accepts in :func:`network` (and the command line's ``--norm``).
NORMS = (None, "batch", "layer")


def _variance(name: str, value, positive=False) -> float:
    what = "a finite positive variance" if positive else "a finite non-negative variance"
    return _validate.number(name, value, low=0.0, low_open=positive, what=what)


def _batch_size(value) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"batch_size must be an integer, got {value!r}")
    if value < 2:
        raise ValueError(f"batch_size must be at least 2 (batch norm divides by the batch's spread), "
                         f"got {value}")
    return int(value)


@dataclass(frozen=True)
class Layer:
    """One layer of a network (plain data; see the module docstring for the kinds).

    Parameters
    ----------
    kind : {"dense", "batch_norm", "layer_norm", "residual"}
    act : Activation or str
        The nonlinearity phi (anything :func:`meanfield.activations.activation` accepts).
    sigma_w2 : float
        Weight variance (``W_ij ~ N(0, sigma_w2/N)``).
    sigma_b2 : float
        Bias variance.
    rho : float
        Dropout keep probability (``"dense"`` only).
    batch_size : int
        Batch size B (``"batch_norm"`` only; at least 2).
    sigma_v2, sigma_a2 : float
        Residual branch output weight and bias variances (``"residual"`` only).

    Raises
    ------
    ValueError
        Unknown kind, invalid variances, a batch size on a layer without batch norm, or
        dropout on a layer other than ``"dense"``.
    """

    kind: str
    act: Activation
    sigma_w2: float
    sigma_b2: float = 0.0
    rho: float = 1.0
    batch_size: int | None = None
    sigma_v2: float = 1.0
    sigma_a2: float = 0.0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown layer kind {self.kind!r}: choose one of {', '.join(KINDS)}")
        set_ = lambda name, v: object.__setattr__(self, name, v)  # noqa: E731
        set_("act", activation(self.act))
        set_("sigma_w2", _variance("sigma_w2", self.sigma_w2, positive=True))
        set_("sigma_b2", _variance("sigma_b2", self.sigma_b2))
        set_("sigma_v2", _variance("sigma_v2", self.sigma_v2))
        set_("sigma_a2", _variance("sigma_a2", self.sigma_a2))
        rho = self.rho
        if isinstance(rho, (bool, np.bool_)) or np.ndim(rho) != 0 or not (0.0 < float(rho) <= 1.0):
            raise ValueError(f"rho (dropout keep probability) must be in (0, 1], got {rho!r}")
        set_("rho", float(rho))
        if self.rho != 1.0 and self.kind != "dense":
            raise ValueError(f"dropout (rho < 1) is supported on dense layers only, not on {self.kind!r}")
        if self.kind == "batch_norm":
            if self.batch_size is None:
                raise ValueError("a batch_norm layer needs batch_size")
            set_("batch_size", _batch_size(self.batch_size))
        elif self.batch_size is not None:
            raise ValueError(f"batch_size applies to batch_norm layers only, not to {self.kind!r}")


def network(act, depth: int, *, sigma_w2: float, sigma_b2: float = 0.0, norm: str | None = None,
            batch_size: int | None = None, residual: bool = False, sigma_v2: float = 1.0,
            sigma_a2: float = 0.0, rho: float = 1.0) -> tuple[Layer, ...]:
    """``depth`` equal layers: dense, batch-norm, layer-norm or residual.

    Parameters
    ----------
    act : Activation or str
    depth : int
        Number of layers (at least 1).
    sigma_w2, sigma_b2 : float
    norm : {None, "batch", "layer"}
        Normalisation before phi in every layer.
    batch_size : int
        Batch size for ``norm="batch"``.
    residual : bool
        Residual blocks ``x' = x + V phi(W x + b) + a`` (no normalisation, no dropout).
    sigma_v2, sigma_a2 : float
        Residual branch variances.
    rho : float
        Dropout keep probability (dense layers).

    Returns
    -------
    tuple of Layer

    Examples
    --------
    >>> net = network("tanh", 50, sigma_w2=1.0, norm="batch", batch_size=32)
    >>> net[0].kind, net[0].batch_size, len(net)
    ('batch_norm', 32, 50)
    """
    if isinstance(depth, (bool, np.bool_)) or not isinstance(depth, (int, np.integer)) or depth < 1:
        raise ValueError(f"depth must be a positive integer, got {depth!r}")
    if norm not in NORMS:
        raise ValueError(f"norm must be None, 'batch' or 'layer', got {norm!r}")
    if residual and norm is not None:
        raise ValueError("residual blocks with normalisation are not covered: use norm=None with residual=True")
    if norm != "batch" and batch_size is not None:
        raise ValueError("batch_size applies to norm='batch' only")
    if residual:
        kind = "residual"
    else:
        kind = {None: "dense", "batch": "batch_norm", "layer": "layer_norm"}[norm]
    layer = Layer(kind, act, sigma_w2, sigma_b2, rho=rho, batch_size=batch_size,
                  sigma_v2=sigma_v2, sigma_a2=sigma_a2)
    return (layer,) * int(depth)


def describe(layers) -> str:
    """A short description of a network, e.g. ``"50 batch_norm(B=32) tanh layers"``."""
    layers = tuple(layers)
    parts, i = [], 0
    while i < len(layers):
        j = i
        while j < len(layers) and layers[j] == layers[i]:
            j += 1
        lay = layers[i]
        kind = f"batch_norm(B={lay.batch_size})" if lay.kind == "batch_norm" else lay.kind
        parts.append(f"{j - i} {kind} {lay.act.name} layer{'s' if j - i > 1 else ''}")
        i = j
    return ", ".join(parts)
