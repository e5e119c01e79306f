"""Sampled finite random networks: the observables of the mean-field theory, measured.

This module is the independent check of the theory.  It imports only
:mod:`meanfield.activations` (to evaluate phi and phi') and never calls the maps, fixed
points or kernels that it is used to test.

Conventions (Poole et al. 2016; Schoenholz et al. 2017; Lee et al. 2018)
-------------------------------------------------------------------------
A network of depth ``L`` with widths ``N_1, ..., N_L`` maps an input ``x`` in ``R^{d_in}`` to

    h^1 = W^1 x + b^1,                       W^1_ij ~ N(0, sigma_w2 / d_in)
    h^l = W^l (m^l / rho * phi(h^{l-1})) + b^l,   W^l_ij ~ N(0, sigma_w2 / N_{l-1}),  l = 2..L

with ``b^l_i ~ N(0, sigma_b2)`` and optional dropout masks ``m^l_i ~ Bernoulli(rho)`` drawn
independently for every input (inverted dropout, keep probability ``rho``).  The output is
``h^L`` (pre-activations; there is no final nonlinearity).  So
``q^1 = sigma_w2 |x|^2 / d_in + sigma_b2`` and, at large width,
``q^l = sigma_w2 / rho * E[phi(sqrt(q^{l-1}) z)^2] + sigma_b2``.

Residual networks (Yang & Schoenholz 2017) have constant width ``N = d_in`` and

    h^l = W^l x^{l-1} + b^l,   x^l = x^{l-1} + V^l (m^l / rho * phi(h^l)) + a^l,   x^0 = x

with ``V^l_ij ~ N(0, sigma_v2 / N)`` and ``a^l_i ~ N(0, sigma_a2)``.

Orthogonal weights are scaled Haar partial isometries (QR of a Gaussian matrix with the sign of
the diagonal of R fixed, Mezzadri 2007), scaled so that every entry has variance
``sigma_w2 / N_in`` as in the Gaussian case: ``W = sqrt(sigma_w2) O`` for square layers.

Variances everywhere (``sigma_w2``, ``sigma_b2``), never standard deviations.

Memory
------
The forward pass over a batch keeps one layer at a time.  Backpropagation needs phi' of
every layer (the "tape"), and the Jacobian needs a ``d_in x N`` matrix per input; both are
bounded by ``memory_limit``: the weights are kept only when they fit, otherwise they are
regenerated from per-layer seeds, and the inputs are processed in chunks.  Results do not
depend on the chunking (all random numbers come from per-layer streams).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import special, stats

from .activations import Activation, activation

__all__ = [
    "NetworkSpec",
    "SampledNetwork",
    "Propagation",
    "Simulation",
    "KernelEstimate",
    "Comparison",
    "sample_network",
    "propagate",
    "simulate",
    "empirical_nngp",
    "empirical_ntk",
    "compare",
    "DEFAULT_MEMORY_LIMIT",
]

#: Default bound, in bytes, on the working memory of one network's propagation (1 GiB).
DEFAULT_MEMORY_LIMIT = 2**30


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


# ----------------------------------------------------------------------------------------
# Nonlinearity evaluation (dtype-preserving fast paths for common table entries)
# ----------------------------------------------------------------------------------------

_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)


def _tanh_pair(h, need_d):
    t = np.tanh(h)
    return t, (1.0 - t * t if need_d else None)


def _relu_pair(h, need_d):
    return np.maximum(h, 0), ((h > 0).astype(h.dtype) if need_d else None)


def _linear_pair(h, need_d):
    return h.copy(), (np.ones_like(h) if need_d else None)


def _erf_pair(h, need_d):
    return special.erf(h), (_TWO_OVER_SQRT_PI * np.exp(-h * h) if need_d else None)


def _hard_tanh_pair(h, need_d):
    return np.clip(h, -1, 1), (((h >= -1) & (h < 1)).astype(h.dtype) if need_d else None)


_FAST = {
    "tanh": _tanh_pair,
    "relu": _relu_pair,
    "linear": _linear_pair,
    "erf": _erf_pair,
    "hard_tanh": _hard_tanh_pair,
}


class _Nonlinearity:
    """phi and phi' on arrays of a given dtype; fast paths for plain table entries."""

    def __init__(self, act: Activation):
        self.act = act
        table = act.params.get("table") if isinstance(act.params, dict) else None
        plain = isinstance(act.params, dict) and set(act.params) == {"table"}
        self.fast = _FAST.get(table) if plain else None

    def check_derivative(self):
        self.act.derivative(1)  # raises a clear ValueError if phi' is unavailable

    def __call__(self, h, need_d):
        if self.fast is not None:
            return self.fast(h, need_d)
        phi = np.asarray(self.act.phi(h), dtype=h.dtype)
        dphi = np.asarray(self.act.derivative(1)(h), dtype=h.dtype) if need_d else None
        return phi, dphi


# ----------------------------------------------------------------------------------------
# Architecture
# ----------------------------------------------------------------------------------------


def _positive_int(value, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            value = int(value)
        else:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _variance(value, name, positive):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number (a variance), got {value!r}") from None
    if not math.isfinite(v) or v < 0 or (positive and v == 0):
        need = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} is a variance and must be finite and {need}, got {value!r}")
    return v


class NetworkSpec:
    """Architecture and initialisation distribution of a random fully connected network.

    A spec holds no weights: :func:`propagate` and :func:`simulate` sample them (layer by layer,
    so that deep wide networks never need all their weights in memory); :func:`sample_network`
    draws one network with explicit parameters.

    Parameters
    ----------
    act : str, Activation or callable
        Nonlinearity phi, anything :func:`meanfield.activations.activation` accepts.
    sigma_w2 : float
        Weight variance: ``W^l_ij ~ N(0, sigma_w2 / N_{l-1})`` (``N_0 = d_in``).
    sigma_b2 : float, default 0
        Bias variance: ``b^l_i ~ N(0, sigma_b2)``.
    widths : sequence of int, optional
        Widths ``N_1, ..., N_L`` of the layers ``h^1 .. h^L``; the last is the output width.
    width, depth : int, optional
        Shorthand for ``widths = [width] * depth`` (give either ``widths`` or both of these).
    weights : {"gaussian", "orthogonal"}
        Gaussian entries, or scaled Haar-orthogonal matrices (Pennington et al. 2017).
    rho : float in (0, 1], default 1
        Dropout keep probability; masks are applied, divided by ``rho``, to ``phi(h^{l-1})``
        before ``W^l`` (Schoenholz et al. 2017, sec. 5).
    residual : bool, default False
        Residual blocks ``x^l = x^{l-1} + V^l phi(W^l x^{l-1} + b^l) + a^l`` (Yang & Schoenholz
        2017); needs equal widths, equal to the input dimension.
    sigma_v2, sigma_a2 : float
        Residual branch variances: ``V_ij ~ N(0, sigma_v2 / N)``, ``a_i ~ N(0, sigma_a2)``.
    dtype : {"float64", "float32"}
        Precision of the sampled weights and activations (recorded statistics are float64).

    Raises
    ------
    ValueError
        Non-positive widths, depth 0, negative or non-finite variances, ``rho`` outside
        (0, 1], unknown weight distribution or dtype, unequal widths for a residual network.
    """

    def __init__(self, act, *, sigma_w2, sigma_b2=0.0, widths=None, width=None, depth=None,
                 weights="gaussian", rho=1.0, residual=False, sigma_v2=1.0, sigma_a2=0.0,
                 dtype="float64"):
        self.act = activation(act)
        self.sigma_w2 = _variance(sigma_w2, "sigma_w2", positive=True)
        self.sigma_b2 = _variance(sigma_b2, "sigma_b2", positive=False)
        if widths is not None:
            if width is not None or depth is not None:
                raise ValueError("give either widths=[N_1, ..., N_L] or width= and depth=, not both")
            if isinstance(widths, (int, np.integer)):
                raise ValueError("widths must be a sequence of layer widths; for equal widths use width= and depth=")
            widths = [_positive_int(n, "every width") for n in widths]
            if not widths:
                raise ValueError("depth must be at least 1: widths is empty")
        else:
            if width is None or depth is None:
                raise ValueError("give widths=[N_1, ..., N_L], or both width= and depth=")
            width = _positive_int(width, "width")
            depth = _positive_int(depth, "depth")
            widths = [width] * depth
        self.widths = tuple(widths)
        if weights not in ("gaussian", "orthogonal"):
            raise ValueError(f"weights must be 'gaussian' or 'orthogonal', got {weights!r}")
        self.weights = weights
        try:
            rho = float(rho)
        except (TypeError, ValueError):
            raise ValueError(f"rho (keep probability) must be a number in (0, 1], got {rho!r}") from None
        if not (0.0 < rho <= 1.0):
            raise ValueError(f"rho is a keep probability and must lie in (0, 1], got {rho!r}")
        self.rho = rho
        self.residual = bool(residual)
        self.sigma_v2 = _variance(sigma_v2, "sigma_v2", positive=True)
        self.sigma_a2 = _variance(sigma_a2, "sigma_a2", positive=False)
        if self.residual and len(set(self.widths)) != 1:
            raise ValueError(f"a residual network needs equal widths, got {list(self.widths)}")
        dt = np.dtype(dtype)
        if dt not in (np.dtype(np.float64), np.dtype(np.float32)):
            raise ValueError(f"dtype must be float64 or float32, got {dtype!r}")
        self.dtype = dt

    @property
    def depth(self) -> int:
        """Number of layers L."""
        return len(self.widths)

    def __repr__(self):
        w = (f"width={self.widths[0]}, depth={self.depth}" if len(set(self.widths)) == 1
             else f"widths={list(self.widths)}")
        extra = ""
        if self.weights != "gaussian":
            extra += f", weights={self.weights!r}"
        if self.rho != 1.0:
            extra += f", rho={self.rho}"
        if self.residual:
            extra += f", residual=True, sigma_v2={self.sigma_v2}, sigma_a2={self.sigma_a2}"
        if self.dtype != np.float64:
            extra += ", dtype='float32'"
        return (f"NetworkSpec({self.act.name!r}, sigma_w2={self.sigma_w2}, sigma_b2={self.sigma_b2}, "
                f"{w}{extra})")

    # shapes -------------------------------------------------------------------------
    def _check_inputs(self, X) -> np.ndarray:
        X = np.asarray(X, dtype=float)
        if X.ndim == 1:
            X = X[None, :]
        if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
            raise ValueError(f"inputs must be an array of shape (n_inputs, d_in) with both > 0, got shape {X.shape}")
        if not np.all(np.isfinite(X)):
            bad = np.argwhere(~np.isfinite(X))[0]
            raise ValueError(f"inputs must be finite: X[{bad[0]}, {bad[1]}] = {X[tuple(bad)]}")
        if self.residual and X.shape[1] != self.widths[0]:
            raise ValueError(
                f"a residual network has x^0 = x, so the input dimension ({X.shape[1]}) must equal the width "
                f"({self.widths[0]})"
            )
        return X.astype(self.dtype, copy=False)

    def _fan_in(self, d_in):
        return (d_in,) + self.widths[:-1]

    def _n_params(self, d_in):
        """Number of weight entries (W, and V for residual networks)."""
        n = sum(a * b for a, b in zip(self._fan_in(d_in), self.widths, strict=True))
        return n * (2 if self.residual else 1)

    def _scale(self, n_in, n_out, var):
        """Multiplier s with W = s Z, Z standard (Gaussian) or a partial isometry (orthogonal)."""
        if self.weights == "gaussian":
            return math.sqrt(var / n_in)
        return math.sqrt(var * max(n_in, n_out) / n_in)


# ----------------------------------------------------------------------------------------
# Per-layer parameters: stored, or regenerated from per-layer seeds
# ----------------------------------------------------------------------------------------


def _stream(base: int, layer: int, kind: int) -> np.random.Generator:
    """Independent random stream for (network, layer, kind); kind 0: W, b; 1: V, a; 2: masks."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(base, spawn_key=(layer, kind))))


def _standard_matrix(gen, n_in, n_out, weights, dtype, out=None):
    """Z of shape (n_in, n_out): standard Gaussian, or a Haar partial isometry (QR, sign fix).

    ``out``, if given, is a reusable buffer of that shape (avoids page faults on fresh memory).
    """
    if out is not None:
        A = gen.standard_normal(dtype=dtype, out=out)
    else:
        A = gen.standard_normal((n_in, n_out), dtype=dtype)
    if weights == "gaussian":
        return A
    if n_in >= n_out:
        Q, R = np.linalg.qr(A)
        return Q * np.sign(np.diag(R))[None, :]
    Q, R = np.linalg.qr(A.T)
    return (Q * np.sign(np.diag(R))[None, :]).T


class _Params:
    """Parameters of one network, layer by layer: h = (a @ Z) * s + b with Z (n_in, n_out)."""

    def __init__(self, spec: NetworkSpec, d_in: int, base: int, store: bool):
        self.spec, self.d_in, self.base, self.store = spec, d_in, base, store
        self._cache: dict = {}
        self._buffers: dict = {}

    def _make(self, l, kind):
        spec = self.spec
        n_in = (self.d_in,) + spec.widths[:-1]
        n_i = n_in[l] if kind == 0 else spec.widths[l]
        n_o = spec.widths[l]
        gen = _stream(self.base, l, kind)
        buf = None
        if not self.store and spec.weights == "gaussian":
            # one layer's matrix is in use at a time (per kind): reuse its memory
            buf = self._buffers.get(kind)
            if buf is None or buf.shape != (n_i, n_o):
                buf = self._buffers[kind] = np.empty((n_i, n_o), dtype=spec.dtype)
        Z = _standard_matrix(gen, n_i, n_o, spec.weights, spec.dtype, out=buf)
        var_b = spec.sigma_b2 if kind == 0 else spec.sigma_a2
        b = (math.sqrt(var_b) * gen.standard_normal(n_o, dtype=spec.dtype)).astype(spec.dtype)
        s = spec._scale(n_i, n_o, spec.sigma_w2 if kind == 0 else spec.sigma_v2)
        return Z, s, b

    def get(self, l, kind=0):
        key = (l, kind)
        if key in self._cache:
            return self._cache[key]
        out = self._make(l, kind)
        if self.store:
            self._cache[key] = out
        return out


class _StoredParams:
    def __init__(self, layers, res_layers):
        self.layers, self.res_layers = layers, res_layers

    def get(self, l, kind=0):
        return (self.layers if kind == 0 else self.res_layers)[l]


# ----------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------


@dataclass
class Propagation:
    """What one sampled network did to a batch of inputs.

    Layer ``l = 1..L`` is stored at index ``l - 1`` of the first axis (``layers`` holds l).

    Attributes
    ----------
    q : ndarray (L, B)
        ``q^l = (1/N_l) sum_i (h^l_i)^2`` for each input (Poole et al. 2016, eq. 3).
    q12 : ndarray (L, B, B) or (L, P) or None
        ``q12^l = (1/N_l) sum_i h^l_i(x_a) h^l_i(x_b)`` for all pairs or the requested ``pairs``.
    pairs : ndarray (P, 2) or None
        The input pairs of ``q12`` when a list was requested.
    p : ndarray (L, B) or None
        Residual networks: ``p^l = (1/N) sum_i (x^l_i)^2`` (Yang & Schoenholz 2017).
    grad_sq : ndarray (L, B) or None
        ``||d(g . h^L)/d h^l||^2`` (residual: ``d/d x^l``) for a random output gradient
        ``g ~ N(0, I)``, drawn independently for each input.  ``grad_sq[l-1] / grad_sq[l]``
        estimates ``chi_1 / rho`` at layer l (Schoenholz et al. 2017, eq. 12).
    grad_input_sq : ndarray (B,) or None
        ``||d(g . h^L)/dx||^2 = ||J^T g||^2``.
    grad_w_sq : ndarray (L, B) or None
        ``||d(g . h^L)/d W^l||_F^2 = ||delta^l||^2 ||a^{l-1}||^2``, per input.
    jvp_sq : ndarray (L, B) or None
        ``||J^l u||^2`` with ``J^l = dh^l/dx`` (residual: ``dx^l/dx``) for the tangent ``u``
        of each input (forward mode; Hanin 2018).
    jacobian_sv : ndarray (B, min(d_in, N_L)) or None
        Singular values of the input-output Jacobian of each input, descending.
    output : ndarray (B, N_L)
        ``h^L`` (residual: ``x^L``).
    activations : list of ndarray (B, N_l) or None
        ``h^l`` for every layer, only if ``keep_activations=True``.
    ntk : ndarray (B, B) or None
        Filled only by :func:`empirical_ntk`.
    """

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
    activations: list | None = None
    ntk: np.ndarray | None = field(default=None, repr=False)

    @property
    def layers(self) -> np.ndarray:
        """Layer numbers 1..L matching the first axis of the per-layer arrays."""
        return np.arange(1, self.q.shape[0] + 1)

    @property
    def c(self) -> np.ndarray | None:
        """Correlations ``c^l = q12^l / sqrt(q^l_a q^l_b)`` (Poole et al. 2016, eq. 5)."""
        return _correlation(self.q, self.q12, self.pairs)


def _correlation(q, q12, pairs):
    if q12 is None:
        return None
    if pairs is None:
        return q12 / np.sqrt(q[..., :, None] * q[..., None, :])
    return q12 / np.sqrt(q[..., pairs[:, 0]] * q[..., pairs[:, 1]])


_RECORDS = ("q", "q12", "p", "grad_sq", "grad_input_sq", "grad_w_sq", "jvp_sq", "jacobian_sv", "output")


@dataclass
class Simulation:
    """Records of many independently sampled networks, stacked along a first axis.

    Every attribute of :class:`Propagation` appears here with a leading axis of length
    ``n_networks``, so ``sim.q[:, l-1, a]`` is ``q^l`` of input ``a`` in each network.  Networks
    are independent, so standard errors across that axis are honest; inputs and layers of one
    network are not independent of each other.
    """

    spec: NetworkSpec
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
    def n_networks(self) -> int:
        return self.q.shape[0]

    @property
    def layers(self) -> np.ndarray:
        """Layer numbers 1..L matching axis 1 of the per-layer arrays."""
        return np.arange(1, self.q.shape[1] + 1)

    @property
    def c(self) -> np.ndarray | None:
        """Correlations ``c^l = q12^l / sqrt(q^l_a q^l_b)``, per network."""
        return _correlation(self.q, self.q12, self.pairs)

    def gradient_ratio(self, inputs=None) -> np.ndarray:
        """Per-network, per-layer growth of the squared gradient, shape (n_networks, L-1).

        ``ratio[:, k] = sum_a grad_sq[:, k, a] / sum_a grad_sq[:, k+1, a]``, the sum over the
        given ``inputs`` (an index or a list; default all), estimates the
        backward factor of layer ``l = k + 1``: ``sigma_w2 E[phi'(h^l)^2] / rho`` (``chi_1 / rho``
        at ``q^l``; Schoenholz et al. 2017, eq. 12) for plain networks, and
        ``1 + sigma_v2 sigma_w2 E[phi'(h^{l+1})^2] / rho`` for residual ones (Yang & Schoenholz
        2017).  Pair ``ratio[:, k]`` with theory evaluated at ``q[k]`` (plain) or ``q[k+1]``
        (residual).  Inputs with different ``q`` have different factors in early layers, so
        compare one input at a time there.
        """
        if self.grad_sq is None:
            raise ValueError("gradients were not recorded: simulate with gradients=True")
        sel = slice(None) if inputs is None else np.atleast_1d(inputs)
        g = self.grad_sq[:, :, sel].sum(axis=2)
        return g[:, :-1] / g[:, 1:]

    def mean(self, name: str, axis=0):
        """Mean of a record over networks (axis 0 by default)."""
        return np.mean(self._get(name), axis=axis)

    def sem(self, name: str, axis=0):
        """Standard error of the mean of a record over networks."""
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
    samples : ndarray (n_networks, B, B) or None
        Per-network kernels, if requested.
    """

    mean: np.ndarray
    sem: np.ndarray
    n_networks: int
    samples: np.ndarray | None = field(default=None, repr=False)


# ----------------------------------------------------------------------------------------
# The core: one network, one batch
# ----------------------------------------------------------------------------------------


@dataclass
class _Options:
    gradients: bool
    pairs: object  # "all", None or ndarray (P, 2)
    jacobian: object  # False, "pre", "post"
    jvp: bool
    keep_activations: bool
    grams: bool  # NTK: activation and backprop Gram matrices


def _plan(spec: NetworkSpec, B: int, d_in: int, opt: _Options, memory_limit: float, can_store: bool):
    """Decide (store_weights, chunk_size) within memory_limit, or raise before any work."""
    isz = spec.dtype.itemsize
    L = spec.depth
    max_n = max((d_in,) + spec.widths)
    fixed = 8 * max_n * B * isz + 8 * 8 * L * B
    if opt.pairs is not None:
        P = B * B if isinstance(opt.pairs, str) else len(opt.pairs)
        fixed += 8 * L * P
    if opt.grams:
        fixed += 8 * (4 * L + 2) * B * B
    if opt.keep_activations:
        fixed += isz * B * sum(spec.widths)
    if fixed > memory_limit:
        raise ValueError(
            f"the requested records need {_fmt_bytes(fixed)}, more than memory_limit = {_fmt_bytes(memory_limit)}: "
            "record fewer pairs (pairs=[[a, b], ...] or None), use fewer inputs, or raise memory_limit"
        )
    backward = opt.gradients or opt.grams
    per_input = 0
    if backward:
        per_input += isz * sum(spec.widths) * (2 if spec.residual else 1)
    if opt.jacobian:
        per_input += 3 * isz * d_in * max_n
    if per_input == 0:
        return False, B
    weights = isz * spec._n_params(d_in)
    if can_store and fixed + weights + per_input * B <= memory_limit:
        return True, B
    if fixed + per_input * B <= memory_limit:
        return False, B
    chunk = int((memory_limit - fixed) // per_input)
    what = "the Jacobian and the backpropagation tape" if opt.jacobian else "the backpropagation tape"
    if chunk < 1:
        raise ValueError(
            f"{what} for a single input need {_fmt_bytes(fixed + per_input)} "
            f"({_fmt_bytes(per_input)} per input plus {_fmt_bytes(fixed)} for one layer of the batch and the "
            f"records), more than memory_limit = {_fmt_bytes(memory_limit)}; "
            "use smaller widths or d_in, or raise memory_limit"
        )
    if opt.grams:
        raise ValueError(
            f"the empirical NTK needs the backpropagation tape of all {B} inputs at once: "
            f"{_fmt_bytes(fixed + per_input * B)}, more than memory_limit = {_fmt_bytes(memory_limit)}; "
            "use fewer inputs or raise memory_limit"
        )
    return False, chunk


def _masks(spec, base, l, rows, n):
    """Dropout factors m / rho for layer l (0-based, applied to phi(h^l)) and input rows."""
    gen = _stream(base, l, 2)
    gen.bit_generator.advance(rows.start * n)
    keep = gen.random((rows.stop - rows.start, n)) < spec.rho
    return keep.astype(spec.dtype) / spec.dtype.type(spec.rho)


def _sq(a):
    return np.einsum("ij,ij->i", a, a, dtype=np.float64)


def _gram(a):
    return np.asarray(a @ a.T, dtype=np.float64)


def _forward(spec, nl, params, X, rows, base, opt, *, records, tape, jac, tangents):
    """Forward pass over the inputs X[rows].

    Fills the forward records (when ``records`` is given), appends phi'(h) * m / rho of every
    hidden layer to ``tape`` (when given), and accumulates the transposed Jacobian when ``jac``.
    Returns the output and the Jacobian stack (n_rows, d_in, N_L) or None.
    """
    L = spec.depth
    x = X[rows]
    n_rows, d_in = x.shape
    need_d = tape is not None or bool(jac) or tangents is not None
    v = None if tangents is None else tangents[rows].astype(spec.dtype)
    M = None
    if jac and spec.residual:
        M = np.broadcast_to(np.eye(d_in, dtype=spec.dtype), (n_rows, d_in, d_in)).copy()
    a = x
    for l in range(L):
        n = spec.widths[l]
        Z, s, b = params.get(l, 0)
        h = a @ Z
        h *= s
        h += b
        if records is not None:
            records["q"][l] = _sq(h) / n
            if opt.pairs is not None:
                if isinstance(opt.pairs, str):
                    records["q12"][l] = _gram(h) / n
                else:
                    pa, pb = opt.pairs[:, 0], opt.pairs[:, 1]
                    records["q12"][l] = np.einsum("ij,ij->i", h[pa], h[pb], dtype=np.float64) / n
            if opt.keep_activations:
                records["activations"].append(h.copy())
            if opt.grams:
                records["gram_in"].append(_gram(a))
            if opt.gradients:
                records["a_sq"][l] = _sq(a)
        if spec.residual:
            phi, dphi = nl(h, need_d)
            if spec.rho < 1:
                m = _masks(spec, base, l, rows, n)
                phi *= m
                if dphi is not None:
                    dphi *= m
            V, sv, ab = params.get(l, 1)
            if v is not None:
                u = (v @ Z) * s
                u *= dphi
                v = v + (u @ V) * sv
            if jac:
                U = np.matmul(M, Z) * s
                U *= dphi[:, None, :]
                M = M + np.matmul(U, V) * sv
            if tape is not None:
                tape.append(dphi)
            branch = phi @ V
            branch *= sv
            branch += ab
            if records is not None and opt.grams:
                records["gram_phi"].append(_gram(phi))
            a = a + branch
            if records is not None:
                records["p"][l] = _sq(a) / n
        else:
            if v is not None:
                v = (v @ Z) * s
            if jac:
                M = np.broadcast_to(Z * s, (n_rows,) + Z.shape).copy() if l == 0 else np.matmul(M, Z) * s
            if l < L - 1:
                phi, dphi = nl(h, need_d)
                if spec.rho < 1:
                    m = _masks(spec, base, l, rows, n)
                    phi *= m
                    if dphi is not None:
                        dphi *= m
                if tape is not None:
                    tape.append(dphi)
                if jac:
                    M *= dphi[:, None, :]
                a = phi
            elif jac == "post":
                M *= nl(h, True)[1][:, None, :]
        if records is not None and v is not None:
            records["jvp_sq"][l] = _sq(v)
            if not spec.residual and l < L - 1:
                v *= dphi
    out = a if spec.residual else h
    return out, M


def _backward(spec, params, rows, delta, tape, opt, records, a_sq, ntk_coef):
    """Backpropagate ``delta`` (n_rows, N_L) through the tape; fill gradient records and the NTK."""
    L = spec.depth
    want = opt.gradients
    if want:
        records["grad_sq"][L - 1, rows] = _sq(delta)
    ntk = np.zeros((delta.shape[0],) * 2) if opt.grams else None
    cw, cb, cv, ca = ntk_coef if ntk_coef is not None else (None,) * 4
    for l in range(L - 1, -1, -1):
        Z, s, _ = params.get(l, 0)
        if spec.residual:
            V, sv, _ = params.get(l, 1)
            t = delta @ V.T
            t *= sv
            t *= tape[l]
            if ntk is not None:
                Gg, Gt = _gram(delta), _gram(t)
                ntk += cw(s) * Gt * records["gram_in"][l] + cb * Gt + cv(sv) * Gg * records["gram_phi"][l] + ca * Gg
            if want:
                records["grad_w_sq"][l, rows] = _sq(t) * a_sq[l, rows]
            delta = delta + (t @ Z.T) * s
        else:
            if ntk is not None:
                Gd = _gram(delta)
                ntk += cw(s) * Gd * records["gram_in"][l] + cb * Gd
            if want:
                records["grad_w_sq"][l, rows] = records["grad_sq"][l, rows] * a_sq[l, rows]
            if l == 0 and not want:
                break
            prev = delta @ Z.T
            prev *= s
            if l > 0:
                prev *= tape[l - 1]
            delta = prev
        if want:
            if l > 0:
                records["grad_sq"][l - 1, rows] = _sq(delta)
            else:
                records["grad_input_sq"][rows] = _sq(delta)
    return ntk


def _run(spec, X, params, base, out_grad, tangents, opt, memory_limit, ntk_coef=None):
    """One network, one batch: plan the memory, then forward (and backward) passes."""
    B, d_in = X.shape
    L = spec.depth
    nl = _Nonlinearity(spec.act)
    if opt.gradients or opt.jacobian or tangents is not None or opt.grams:
        nl.check_derivative()
    store, chunk = _plan(spec, B, d_in, opt, memory_limit, can_store=params is None)
    if params is None:
        params = _Params(spec, d_in, base, store)
    rec: dict = {"q": np.empty((L, B))}
    if opt.pairs is not None:
        rec["q12"] = np.empty((L, B, B) if isinstance(opt.pairs, str) else (L, len(opt.pairs)))
    if spec.residual:
        rec["p"] = np.empty((L, B))
    if opt.gradients:
        for k in ("a_sq", "grad_sq", "grad_w_sq"):
            rec[k] = np.empty((L, B))
        rec["grad_input_sq"] = np.empty(B)
    if tangents is not None:
        rec["jvp_sq"] = np.empty((L, B))
    if opt.keep_activations:
        rec["activations"] = []
    if opt.grams:
        rec["gram_in"], rec["gram_phi"] = [], []
    backward = opt.gradients or opt.grams
    single = chunk >= B
    everything = slice(0, B)
    tape = [] if (backward and single) else None
    out, M = _forward(spec, nl, params, X, everything, base, opt, records=rec, tape=tape,
                      jac=opt.jacobian if single else False, tangents=tangents)
    sv = None
    if opt.jacobian:
        k = min(d_in, spec.widths[-1])
        sv = np.empty((B, k))
    ntk = None
    if single:
        if opt.jacobian:
            sv[:] = np.linalg.svd(M, compute_uv=False)[:, :k]
            del M
        if backward:
            ntk = _backward(spec, params, everything, out_grad, tape, opt, rec, rec.get("a_sq"), ntk_coef)
    else:
        for start in range(0, B, chunk):
            rows = slice(start, min(B, start + chunk))
            tape = [] if backward else None
            _, M = _forward(spec, nl, params, X, rows, base, opt, records=None, tape=tape,
                            jac=opt.jacobian, tangents=None)
            if opt.jacobian:
                sv[rows] = np.linalg.svd(M, compute_uv=False)[:, :k]
                del M
            if backward:
                _backward(spec, params, rows, out_grad[rows], tape, opt, rec, rec.get("a_sq"), None)
            del tape
    return Propagation(
        q=rec["q"], output=np.asarray(out), q12=rec.get("q12"),
        pairs=None if isinstance(opt.pairs, str) or opt.pairs is None else opt.pairs,
        p=rec.get("p"), grad_sq=rec.get("grad_sq"), grad_input_sq=rec.get("grad_input_sq"),
        grad_w_sq=rec.get("grad_w_sq"), jvp_sq=rec.get("jvp_sq"), jacobian_sv=sv,
        activations=rec.get("activations"), ntk=ntk,
    )


# ----------------------------------------------------------------------------------------
# Sampled networks with explicit parameters
# ----------------------------------------------------------------------------------------


def _as_rng(rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer, np.random.SeedSequence)):
        return np.random.default_rng(rng)
    raise TypeError(f"rng must be a numpy.random.Generator or a seed, got {type(rng).__name__}")


def _new_base(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**63 - 1))


class SampledNetwork:
    """One sampled network with explicit parameters (for small and moderate sizes).

    Attributes
    ----------
    spec : NetworkSpec
    d_in : int
    weights : list of ndarray
        ``W^l`` with shape ``(N_l, N_{l-1})``, including the scale (``Var W_ij = sigma_w2 / N_{l-1}``).
    biases : list of ndarray
        ``b^l`` with shape ``(N_l,)``.
    res_weights, res_biases : list of ndarray or None
        Residual networks: ``V^l`` (N, N) and ``a^l`` (N,).
    """

    def __init__(self, spec: NetworkSpec, d_in: int, layers, res_layers=None):
        self.spec, self.d_in = spec, d_in
        self._params = _StoredParams(layers, res_layers)

    @property
    def weights(self):
        return [(Z * s).T for Z, s, _ in self._params.layers]

    @property
    def biases(self):
        return [b for _, _, b in self._params.layers]

    @property
    def res_weights(self):
        rl = self._params.res_layers
        return None if rl is None else [(V * s).T for V, s, _ in rl]

    @property
    def res_biases(self):
        rl = self._params.res_layers
        return None if rl is None else [a for _, _, a in rl]

    def __repr__(self):
        return f"SampledNetwork({self.spec!r}, d_in={self.d_in})"

    def __call__(self, X) -> np.ndarray:
        """The output ``h^L`` (residual: ``x^L``) for inputs X of shape (B, d_in); no dropout."""
        X = self.spec._check_inputs(X)
        self._check_dim(X)
        spec = self.spec
        nl = _Nonlinearity(spec.act)
        a = X
        for l in range(spec.depth):
            Z, s, b = self._params.get(l, 0)
            h = (a @ Z) * s + b
            if spec.residual:
                V, sv, ab = self._params.get(l, 1)
                a = a + (nl(h, False)[0] @ V) * sv + ab
            elif l < spec.depth - 1:
                a = nl(h, False)[0]
        return a if spec.residual else h

    def _check_dim(self, X):
        if X.shape[1] != self.d_in:
            raise ValueError(f"this network takes inputs of dimension {self.d_in}, got {X.shape[1]}")


def sample_network(spec: NetworkSpec, d_in: int, rng, *, memory_limit=DEFAULT_MEMORY_LIMIT) -> SampledNetwork:
    """Draw one network with explicit parameters from the distribution ``spec``.

    The weights are the same as :func:`propagate` would draw for the same state of ``rng``.

    Parameters
    ----------
    spec : NetworkSpec
    d_in : int
        Input dimension ``N_0``.
    rng : numpy.random.Generator or int
    memory_limit : float
        Refuse (ValueError) if the parameters would take more bytes than this.

    Returns
    -------
    SampledNetwork
    """
    if not isinstance(spec, NetworkSpec):
        raise TypeError("spec must be a NetworkSpec")
    d_in = _positive_int(d_in, "d_in")
    if spec.residual and d_in != spec.widths[0]:
        raise ValueError(f"a residual network needs d_in equal to the width {spec.widths[0]}, got {d_in}")
    n = spec._n_params(d_in)
    if n * spec.dtype.itemsize > memory_limit:
        raise ValueError(
            f"the parameters need {_fmt_bytes(n * spec.dtype.itemsize)}, more than memory_limit = "
            f"{_fmt_bytes(memory_limit)}; use propagate(spec, ...) which samples layer by layer"
        )
    params = _Params(spec, d_in, _new_base(_as_rng(rng)), store=True)
    layers = [params.get(l, 0) for l in range(spec.depth)]
    res = [params.get(l, 1) for l in range(spec.depth)] if spec.residual else None
    return SampledNetwork(spec, d_in, layers, res)


# ----------------------------------------------------------------------------------------
# Public propagation and Monte Carlo
# ----------------------------------------------------------------------------------------


def _options(spec, X, pairs, jacobian, gradients, keep_activations, grams=False):
    B = X.shape[0]
    if pairs is not None and not (isinstance(pairs, str) and pairs == "all"):
        pairs = np.asarray(pairs)
        if pairs.ndim == 1 and pairs.size == 2:
            pairs = pairs[None, :]
        if pairs.ndim != 2 or pairs.shape[1] != 2 or not np.issubdtype(pairs.dtype, np.integer):
            raise ValueError("pairs must be 'all', None, or an integer array of shape (P, 2) of input indices")
        if pairs.size and (pairs.min() < 0 or pairs.max() >= B):
            raise ValueError(f"pairs index inputs 0..{B - 1}, got values in [{pairs.min()}, {pairs.max()}]")
    if jacobian is True:
        jacobian = "pre"
    if jacobian not in (False, None, "pre", "post"):
        raise ValueError(f"jacobian must be False, True/'pre' (dh^L/dx) or 'post' (d phi(h^L)/dx), got {jacobian!r}")
    if jacobian == "post" and spec.residual:
        raise ValueError("jacobian='post' is for plain networks; a residual network's output is x^L")
    return _Options(gradients=bool(gradients), pairs=pairs, jacobian=jacobian or False, jvp=False,
                    keep_activations=bool(keep_activations), grams=grams)


def _tangents(jvp, rng, B, d_in, dtype):
    if jvp is None or jvp is False:
        return None
    if jvp is True:
        u = rng.standard_normal((B, d_in))
        return (u / np.linalg.norm(u, axis=1, keepdims=True)).astype(dtype)
    u = np.asarray(jvp, dtype=float)
    if u.shape == (d_in,):
        u = np.broadcast_to(u, (B, d_in))
    if u.shape != (B, d_in) or not np.all(np.isfinite(u)):
        raise ValueError(f"jvp must be True or a finite array of shape ({d_in},) or ({B}, {d_in}), got shape {u.shape}")
    return u.astype(dtype)


def _check_limit(memory_limit):
    try:
        ok = float(memory_limit) > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"memory_limit must be a positive number of bytes, got {memory_limit!r}")
    return float(memory_limit)


def _resolve(network, X):
    if isinstance(network, SampledNetwork):
        spec = network.spec
        X = spec._check_inputs(X)
        network._check_dim(X)
        return spec, X, network._params
    if isinstance(network, NetworkSpec):
        return network, network._check_inputs(X), None
    raise TypeError("network must be a NetworkSpec or a SampledNetwork")


def propagate(network, X, rng, *, gradients=True, pairs="all", jacobian=False, jvp=False,
              keep_activations=False, output_gradient=None, memory_limit=DEFAULT_MEMORY_LIMIT) -> Propagation:
    """Propagate a batch of inputs through one sampled network and record the observables.

    Records, for every layer ``l = 1..L`` (Poole et al. 2016; Schoenholz et al. 2017):
    ``q^l = (1/N_l) sum_i (h^l_i)^2`` per input; ``q12^l = (1/N_l) sum_i h^l_i(x_a) h^l_i(x_b)``
    (and ``c^l``) per pair; the squared norms ``||delta^l||^2`` of a random output gradient
    ``g ~ N(0, I_{N_L})`` backpropagated to ``h^l``, whose layer-to-layer ratio estimates
    ``chi_1 / rho = sigma_w2 E[phi'(h)^2] / rho``; optionally ``||J^l u||^2`` (forward mode) and the
    singular values of the input-output Jacobian ``J = dh^L/dx`` (Pennington et al. 2017).

    Parameters
    ----------
    network : NetworkSpec or SampledNetwork
        A spec draws a fresh network from ``rng`` (layer by layer); a sampled network is used as is.
    X : array (B, d_in)
        Inputs, one per row; must be finite.
    rng : numpy.random.Generator or int
        Source of the weights, dropout masks, output gradients and tangents.
    gradients : bool
        Backpropagate a random output gradient (``grad_sq``, ``grad_input_sq``, ``grad_w_sq``).
    pairs : "all", None or int array (P, 2)
        Which input pairs to record ``q12`` for: all (a (B, B) matrix per layer), none, or a list.
    jacobian : False, True/"pre" or "post"
        Singular values of ``dh^L/dx`` ("pre"), or of ``d phi(h^L)/dx`` ("post", the convention of
        Pennington et al. 2017).  Needs ``3 d_in max(N) `` numbers per input: too large a request is
        refused (ValueError stating the memory) before any work.
    jvp : bool or array
        Forward-mode tangents: True draws a uniform unit vector per input; or give them, shape
        (d_in,) or (B, d_in).  Records ``jvp_sq[l-1] = ||J^l u||^2`` (Hanin 2018).
    keep_activations : bool
        Also return every layer's ``h^l`` (memory ``B sum N_l``).
    output_gradient : array (B, N_L) or (N_L,), optional
        The gradient ``g`` to backpropagate instead of a random one (e.g. of a loss).
    memory_limit : float
        Bytes of working memory allowed (default :data:`DEFAULT_MEMORY_LIMIT`); the weights are
        kept only if they fit, and the backward pass and Jacobian are chunked over inputs.

    Returns
    -------
    Propagation

    Raises
    ------
    ValueError
        NaN or infinite inputs, bad shapes, a request that cannot fit in ``memory_limit``, or an
        activation without phi' when gradients, tangents or the Jacobian are requested.
    """
    spec, X, params = _resolve(network, X)
    memory_limit = _check_limit(memory_limit)
    opt = _options(spec, X, pairs, jacobian, gradients, keep_activations)
    B, d_in = X.shape
    _plan(spec, B, d_in, opt, memory_limit, can_store=params is None)  # refuse before drawing anything
    rng = _as_rng(rng)
    base = _new_base(rng)
    n_out = spec.widths[-1]
    if output_gradient is not None:
        if not gradients:
            raise ValueError("output_gradient is given but gradients=False")
        out_grad = np.asarray(output_gradient, dtype=float)
        if out_grad.shape == (n_out,):
            out_grad = np.broadcast_to(out_grad, (B, n_out))
        if out_grad.shape != (B, n_out) or not np.all(np.isfinite(out_grad)):
            raise ValueError(f"output_gradient must be a finite array of shape ({n_out},) or ({B}, {n_out})")
        out_grad = out_grad.astype(spec.dtype)
    else:
        out_grad = rng.standard_normal((B, n_out), dtype=spec.dtype) if gradients else None
    tangents = _tangents(jvp, rng, B, d_in, spec.dtype)
    return _run(spec, X, params, base, out_grad, tangents, opt, memory_limit)


def simulate(spec: NetworkSpec, X, n_networks: int, rng, *, gradients=True, pairs="all", jacobian=False,
             jvp=False, outputs=False, memory_limit=DEFAULT_MEMORY_LIMIT) -> Simulation:
    """Monte Carlo over independently sampled networks: :func:`propagate` ``n_networks`` times.

    Parameters
    ----------
    spec : NetworkSpec
    X : array (B, d_in)
    n_networks : int
        Number of independent networks.
    rng : numpy.random.Generator or int
    gradients, pairs, jacobian, jvp, memory_limit
        As in :func:`propagate` (``memory_limit`` also bounds the stacked records).
    outputs : bool
        Keep every network's output ``h^L`` (``n_networks * B * N_L`` numbers).

    Returns
    -------
    Simulation
        Records stacked along a first axis of length ``n_networks``.  Feed per-network values to
        :func:`compare`, e.g. ``compare(theory_q, sim.q[:, :, 0])`` or
        ``compare(theory_chi, sim.gradient_ratio())``.
    """
    if not isinstance(spec, NetworkSpec):
        raise TypeError("simulate takes a NetworkSpec (it samples the networks)")
    n_networks = _positive_int(n_networks, "n_networks")
    X = spec._check_inputs(X)
    memory_limit = _check_limit(memory_limit)
    opt = _options(spec, X, pairs, jacobian, gradients, False)
    B, d_in = X.shape
    L = spec.depth
    per = 8 * B * L * (2 + 3 * bool(gradients) + (jvp is not False and jvp is not None))
    if opt.pairs is not None:
        per += 8 * L * (B * B if isinstance(opt.pairs, str) else len(opt.pairs))
    if jacobian:
        per += 8 * B * min(d_in, spec.widths[-1])
    if outputs:
        per += spec.dtype.itemsize * B * spec.widths[-1]
    if per * n_networks > memory_limit:
        raise ValueError(
            f"the stacked records of {n_networks} networks need {_fmt_bytes(per * n_networks)}, more than "
            f"memory_limit = {_fmt_bytes(memory_limit)}: record fewer pairs, fewer inputs or fewer networks"
        )
    rng = _as_rng(rng)
    runs = [propagate(spec, X, rng, gradients=gradients, pairs=opt.pairs, jacobian=jacobian, jvp=jvp,
                      memory_limit=memory_limit) for _ in range(n_networks)]

    def stack(name):
        vals = [getattr(r, name) for r in runs]
        return None if vals[0] is None else np.stack(vals)

    return Simulation(
        spec=spec, q=stack("q"), output=stack("output") if outputs else None, q12=stack("q12"),
        pairs=runs[0].pairs, p=stack("p"), grad_sq=stack("grad_sq"), grad_input_sq=stack("grad_input_sq"),
        grad_w_sq=stack("grad_w_sq"), jvp_sq=stack("jvp_sq"), jacobian_sv=stack("jacobian_sv"),
    )


class _Welford:
    def __init__(self, keep):
        self.n, self.mean, self.m2, self.samples = 0, None, None, [] if keep else None

    def add(self, x):
        self.n += 1
        if self.mean is None:
            self.mean, self.m2 = x.astype(np.float64).copy(), np.zeros_like(x, dtype=np.float64)
        else:
            d = x - self.mean
            self.mean += d / self.n
            self.m2 += d * (x - self.mean)
        if self.samples is not None:
            self.samples.append(x)

    def result(self):
        sem = np.sqrt(self.m2 / (self.n - 1) / self.n) if self.n > 1 else np.full_like(self.mean, np.nan)
        return KernelEstimate(mean=self.mean, sem=sem, n_networks=self.n,
                              samples=None if self.samples is None else np.stack(self.samples))


def empirical_nngp(spec: NetworkSpec, X, n_networks: int, rng, *, layer=None, return_samples=False,
                   memory_limit=DEFAULT_MEMORY_LIMIT) -> KernelEstimate:
    """Empirical NNGP kernel: the output covariance over sampled networks (Lee et al. 2018).

    ``K_hat(x_a, x_b) = mean over networks of (1/N_l) sum_i h^l_i(x_a) h^l_i(x_b)``: the units of a
    layer are exchangeable, so each network contributes the average over its units.  The mean of
    ``h`` is zero, so this second moment is the covariance.  As ``N -> inf`` it tends to the NNGP
    kernel ``K^l`` of Lee et al. 2018, eq. 4 (with ``K^1 = sigma_w2 x.x'/d_in + sigma_b2``).

    Parameters
    ----------
    spec : NetworkSpec
    X : array (B, d_in)
    n_networks : int
    rng : numpy.random.Generator or int
    layer : int, optional
        Layer ``1..L`` whose kernel to estimate (default: the output layer L).
    return_samples : bool
        Keep the per-network kernels.

    Returns
    -------
    KernelEstimate
        ``mean`` and ``sem`` of shape (B, B).
    """
    if not isinstance(spec, NetworkSpec):
        raise TypeError("spec must be a NetworkSpec")
    n_networks = _positive_int(n_networks, "n_networks")
    layer = spec.depth if layer is None else _positive_int(layer, "layer")
    if layer > spec.depth:
        raise ValueError(f"layer must be in 1..{spec.depth}, got {layer}")
    X = spec._check_inputs(X)
    memory_limit = _check_limit(memory_limit)
    rng = _as_rng(rng)
    acc = _Welford(return_samples)
    for _ in range(n_networks):
        r = propagate(spec, X, rng, gradients=False, pairs="all", memory_limit=memory_limit)
        acc.add(r.q12[layer - 1])
    return acc.result()


def empirical_ntk(spec: NetworkSpec, X, n_networks: int, rng, *, parametrization="ntk", return_samples=False,
                  memory_limit=DEFAULT_MEMORY_LIMIT) -> KernelEstimate:
    """Empirical neural tangent kernel of the scalar output ``f(x) = h^L_1(x)`` (Jacot et al. 2018).

    ``Theta(x, x') = sum_theta df(x)/dtheta df(x')/dtheta``, computed exactly and without autodiff
    from the layer-wise form (``delta^l = df/dh^l``, ``a^{l-1}`` the input of layer l):

        Theta = sum_l [ c_w^l (delta^l(x) . delta^l(x')) (a^{l-1}(x) . a^{l-1}(x')) + c_b (delta^l(x) . delta^l(x')) ]

    In the NTK parametrisation (``W = sqrt(sigma_w2 / N_{l-1}) Z``, ``b = sqrt(sigma_b2) beta``,
    derivatives in ``Z`` and ``beta``) ``c_w^l = sigma_w2 / N_{l-1}`` and ``c_b = sigma_b2``, and
    ``Theta`` tends to the infinite-width NTK ``Theta^l = K^l + sigma_w2 E[phi'(u) phi'(u')] Theta^{l-1}``,
    ``Theta^1 = K^1`` (Jacot et al. 2018; Lee et al. 2019).  In the standard parametrisation
    (derivatives in ``W`` and ``b``) ``c_w = c_b = 1``; it grows with the width.  Residual blocks add
    the analogous ``V``, ``a`` terms.  The output unit is the first of the last layer (all are
    exchangeable; use a last width of 1 to skip computing the others).

    Parameters
    ----------
    spec : NetworkSpec or SampledNetwork
        Without dropout (``rho = 1``).  For a SampledNetwork the kernel of that one network is
        returned (``n_networks`` is ignored and ``sem`` is NaN).
    X : array (B, d_in)
    n_networks : int
    rng : numpy.random.Generator or int
    parametrization : {"ntk", "standard"}
    return_samples : bool

    Returns
    -------
    KernelEstimate
        ``mean`` and ``sem`` of shape (B, B).
    """
    if isinstance(spec, SampledNetwork):
        networks = [spec]
        spec = spec.spec
    elif isinstance(spec, NetworkSpec):
        networks = None
        n_networks = _positive_int(n_networks, "n_networks")
    else:
        raise TypeError("spec must be a NetworkSpec or a SampledNetwork")
    if spec.rho != 1.0:
        raise ValueError("the empirical NTK is defined here for networks without dropout (rho = 1)")
    if parametrization == "ntk":
        coef = (lambda s: s * s, spec.sigma_b2, lambda s: s * s, spec.sigma_a2)
    elif parametrization == "standard":
        coef = (lambda s: 1.0, 1.0, lambda s: 1.0, 1.0)
    else:
        raise ValueError(f"parametrization must be 'ntk' or 'standard', got {parametrization!r}")
    X = spec._check_inputs(X)
    if networks is not None:
        networks[0]._check_dim(X)
    memory_limit = _check_limit(memory_limit)
    opt = _options(spec, X, None, False, False, False, grams=True)
    rng = _as_rng(rng)
    B = X.shape[0]
    delta = np.zeros((B, spec.widths[-1]), dtype=spec.dtype)
    delta[:, 0] = 1
    acc = _Welford(return_samples)
    for k in range(len(networks) if networks is not None else n_networks):
        params = networks[k]._params if networks is not None else None
        r = _run(spec, X, params, _new_base(rng), delta, None, opt, memory_limit, ntk_coef=coef)
        acc.add(r.ntk)
    return acc.result()


# ----------------------------------------------------------------------------------------
# Theory against simulation
# ----------------------------------------------------------------------------------------


@dataclass
class Comparison:
    """Theory against simulation, layer by layer.

    Attributes
    ----------
    theory, mean, sem : ndarray (K,)
        Theory values, simulated means and their standard errors.
    z : ndarray (K,)
        ``(mean - theory) / sem``.
    threshold : float
        Critical |z| (Student t with ``n - 1`` degrees of freedom) at ``confidence``; with
        ``familywise=True`` Bonferroni-corrected so that *all* K layers pass with that probability
        when the theory is right.
    layer_passed : ndarray of bool (K,)
        ``|mean - theory| <= threshold * sem + atol + rtol * |theory|``.
    passed : bool
        All layers passed.
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
        with np.errstate(divide="ignore", invalid="ignore"):
            return (self.mean - self.theory) / self.sem

    @property
    def layer_passed(self) -> np.ndarray:
        allowed = self.threshold * self.sem + self.atol + self.rtol * np.abs(self.theory)
        return np.abs(self.mean - self.theory) <= allowed

    @property
    def passed(self) -> bool:
        return bool(np.all(self.layer_passed))

    def __bool__(self):
        return self.passed

    @property
    def max_abs_z(self) -> float:
        return float(np.max(np.abs(self.z)))

    def summary(self) -> str:
        """A short human-readable report."""
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


def compare(theory, samples=None, *, mean=None, sem=None, n_samples=None, confidence=0.99, familywise=True,
            atol=0.0, rtol=0.0, layers=None, label="") -> Comparison:
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
    mean, sem : array (K,), optional
    n_samples : int, optional
        Number of independent samples behind ``mean`` and ``sem`` (default: normal quantiles).
    confidence : float in (0, 1)
    familywise : bool
    atol, rtol : float
    layers : array (K,), optional
        Labels of the layers (default 1..K).
    label : str

    Returns
    -------
    Comparison
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
    layers = np.arange(1, K + 1) if layers is None else np.asarray(layers)
    if layers.shape != (K,):
        raise ValueError(f"layers must have shape ({K},), got {layers.shape}")
    return Comparison(theory=theory, mean=mean, sem=sem, n_samples=n_samples or 0, confidence=float(confidence),
                      familywise=bool(familywise), threshold=threshold, atol=float(atol), rtol=float(rtol),
                      layers=layers, label=str(label))
