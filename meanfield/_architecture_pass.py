"""The engine behind :func:`meanfield.empirical.measure_gradient_scales`: sampled architectures.

Private.  The networks are those of :mod:`meanfield.architecture` (dense, batch-norm, layer-norm
and residual layers, all of one width ``N``); the public function states what is measured, this
module does the work:

* the argument checks and the memory plan, before anything is drawn;
* parameter streams: each network draws one seed from the caller's Generator, and every layer's
  weights, biases and dropout masks come from their own stream of that seed
  (``SeedSequence(seed, spawn_key=(k, kind))``), so the weights can be kept or regenerated, and
  drawn on several threads, without changing any result;
* the exact forward pass over a batch (per-unit batch norm, per-input layer norm) and the exact
  backward pass of ``E = sum(u * h^L)`` through it, with the per-layer records.

Arrays are ``(N, B)``: column ``b`` is batch element ``b``.  Weights are stored standardised,
``W = s Z`` with ``Z_ij ~ N(0, 1)`` and ``s = sqrt(sigma_w2 / N)``.  Layers are numbered
``k = 1..L``; layer ``k`` maps ``h^{k-1}`` to ``h^k`` and ``h^0`` is the input batch.  Uses only
:mod:`meanfield.activations` (through the sampled-network engine's phi / phi' evaluator),
:mod:`meanfield.architecture` (plain data) and argument helpers, never the theory.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from . import _threads, _validate
from ._network_pass import Nonlinearity, new_base
from ._validate import format_bytes
from .architecture import Layer, describe

__all__ = ["Setup", "check_arguments", "plan", "Sampler", "measure_records", "RECORDS"]

#: Stream kinds of layer k >= 1: W and b; the residual branch V and a; the dropout masks.
_WEIGHTS, _BRANCH, _MASKS = 0, 1, 2
#: Stream kinds of "layer" 0: the input batch and the output gradient u.
_INPUT, _OUTPUT_GRADIENT = 0, 1

#: The per-network records: name -> whether it has one entry per layer (L) or per vector (L + 1).
RECORDS = {"q": False, "c": False, "grad2": False, "sign_diversity": True, "nonlinearity": True}


@dataclass(frozen=True)
class Setup:
    """The checked arguments of one measurement."""

    layers: tuple
    width: int
    batch_size: int
    n_networks: int
    q0: float
    c0: float
    dtype: np.dtype
    memory_limit: float

    @property
    def depth(self) -> int:
        return len(self.layers)


# ----------------------------------------------------------------------------------------
# Arguments and memory, before any work
# ----------------------------------------------------------------------------------------


def _number(name, value):
    if isinstance(value, (bool, np.bool_, str, bytes)) or np.ndim(value) != 0:
        raise ValueError(f"{name} must be a single real number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a single real number, got {value!r}") from None


def check_arguments(layers, width, batch_size, n_networks, q0, c0, dtype, memory_limit) -> Setup:
    """Every argument checked (ValueError naming the bad one), and the memory plan made."""
    if isinstance(layers, Layer) or isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence):
        raise ValueError("layers must be a sequence of meanfield.architecture.Layer "
                         f"(e.g. architecture.network(...)), got {type(layers).__name__}")
    layers = tuple(layers)
    if not layers:
        raise ValueError("layers is empty: give at least one meanfield.architecture.Layer")
    for k, lay in enumerate(layers):
        if not isinstance(lay, Layer):
            raise ValueError(f"layers[{k}] must be a meanfield.architecture.Layer, got {type(lay).__name__}")
    width = _validate.positive_int("width", width)
    batch_size = _validate.positive_int("batch_size", batch_size)
    if batch_size < 2:
        raise ValueError(f"batch_size must be at least 2 (correlations and sign diversity need pairs), "
                         f"got {batch_size}")
    n_networks = _validate.positive_int("n_networks", n_networks)
    batch_norm = False
    for k, lay in enumerate(layers):
        if lay.kind == "batch_norm":
            batch_norm = True
            if lay.batch_size != batch_size:
                raise ValueError(f"layers[{k}] is a batch_norm layer for batches of {lay.batch_size}, "
                                 f"but batch_size = {batch_size}: they must be equal")
    q0 = _number("q0", q0)
    if not (math.isfinite(q0) and q0 > 0):
        raise ValueError(f"q0 (the input variance) must be finite and > 0, got {q0!r}")
    c0 = _number("c0", c0)
    lowest = -1.0 / (batch_size - 1)
    if batch_norm and not (0.0 <= c0 < 1.0):
        raise ValueError(f"c0 must be in [0, 1) in a network with batch norm (c0 = 1 makes every batch element "
                         f"equal and batch norm divides by their zero spread), got {c0!r}")
    if not (lowest - 1e-12 <= c0 <= 1.0):
        raise ValueError(f"c0 must be a correlation in [-1/(batch_size - 1), 1] = [{lowest:.4g}, 1] "
                         f"(the batch's correlation matrix must be positive semi-definite), got {c0!r}")
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise ValueError(f"dtype must be 'float64' or 'float32', got {dtype!r}") from None
    if dt not in (np.dtype(np.float64), np.dtype(np.float32)):
        raise ValueError(f"dtype must be 'float64' or 'float32', got {dtype!r}")
    for lay in layers:
        Nonlinearity(lay.act).check_derivative()  # a clear ValueError if phi' is not available
    setup = Setup(layers, width, batch_size, n_networks, q0, max(c0, lowest), dt,
                  _validate.memory_limit(memory_limit))
    plan(setup)
    return setup


def _matrices(lay) -> int:
    return 2 if lay.kind == "residual" else 1


def plan(setup: Setup) -> bool:
    """Whether all of a network's weights are kept (else regenerated in the backward pass).

    Raises ValueError, stating the sizes, when even one layer's weights with the tape do not fit.
    """
    N, B, L, isz = setup.width, setup.batch_size, setup.depth, setup.dtype.itemsize
    tape = sum(2 if lay.kind in ("batch_norm", "layer_norm") else 1 for lay in setup.layers) * N * B * isz
    work = 12 * N * B * 8 + 8 * B * B * 8
    records = 8 * setup.n_networks * (L + 1) * (len(RECORDS) + 1)
    fixed = tape + work + records
    weights = sum(_matrices(lay) for lay in setup.layers) * N * N * isz
    one_layer = max(_matrices(lay) for lay in setup.layers) * N * N * isz
    if fixed + weights <= setup.memory_limit:
        return True
    if fixed + one_layer <= setup.memory_limit:
        return False
    raise ValueError(
        f"measuring {describe(setup.layers)} at width {N} with batches of {B} needs at least "
        f"{format_bytes(fixed + one_layer)} (one layer's weights {format_bytes(one_layer)}, the backward tape "
        f"{format_bytes(tape)}, working arrays and records {format_bytes(work + records)}), more than "
        f"memory_limit = {format_bytes(setup.memory_limit)}: use a smaller width, batch or depth, "
        "or raise memory_limit"
    )


# ----------------------------------------------------------------------------------------
# One network: parameters, forward and backward
# ----------------------------------------------------------------------------------------


def _stream(base: int, k: int, kind: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(base, spawn_key=(k, kind))))


def _mean_square(a) -> float:
    return float(np.einsum("ij,ij->", a, a, dtype=np.float64)) / a.size


def _unit_scale(a) -> np.ndarray:
    """``a / max|a|`` in float64: cosines without overflowing products."""
    a = np.asarray(a, dtype=np.float64)
    return a / np.max(np.abs(a))


def _mean_pair_cosine(h) -> float:
    """Mean over pairs a < b of the cosine between columns a and b."""
    hs = _unit_scale(h)
    G = hs.T @ hs
    n = np.sqrt(np.diag(G))
    iu = np.triu_indices(G.shape[0], 1)
    return float(np.mean(G[iu] / (n[iu[0]] * n[iu[1]])))


def _sign_diversity(a) -> float:
    """Mean over pairs of columns of the fraction of rows where their signs differ."""
    s = np.where(a > 0, 1.0, -1.0)
    G = s.T @ s
    iu = np.triu_indices(G.shape[0], 1)
    return float(np.mean((a.shape[0] - G[iu]) / (2.0 * a.shape[0])))


def _nonlinear_fraction(a, p) -> float:
    """``1 - (sum a p)^2 / (sum a^2 sum p^2)`` over all entries."""
    a, p = _unit_scale(a), _unit_scale(p)
    ap = float(np.einsum("ij,ij->", a, p))
    return 1.0 - ap * ap / (float(np.einsum("ij,ij->", a, a)) * float(np.einsum("ij,ij->", p, p)))


class Sampler:
    """Draws networks of one :class:`Setup` and runs them; buffers are reused across networks.

    ``draw(base)`` starts the network of seed ``base``; ``params(k)`` is layer k's
    ``(Z, b, V, a)`` (``V``, ``a`` None unless residual), kept or regenerated identically;
    ``forward`` and ``backward`` are the exact passes.
    """

    def __init__(self, setup: Setup, store: bool):
        self.setup, self.store = setup, store
        N, dt = setup.width, setup.dtype
        self.nl = [Nonlinearity(lay.act) for lay in setup.layers]
        self.slots = {}
        i = 0
        for k, lay in enumerate(setup.layers, start=1):
            n = _matrices(lay)
            self.slots[k] = tuple(range(i, i + n)) if store else tuple(range(n))
            if store:
                i += n
        n_buf = i if store else max(_matrices(lay) for lay in setup.layers)
        self.buffer = np.empty((n_buf, N, N), dtype=dt)
        self.biases: list = [None] * (setup.depth + 1)
        self.base = None

    def draw(self, base: int) -> None:
        """Start the network whose streams derive from the seed ``base``."""
        self.base = base
        if self.store:
            _threads.run(self._fill, range(1, self.setup.depth + 1))

    def _fill(self, k):
        lay, N, dt = self.setup.layers[k - 1], self.setup.width, self.setup.dtype
        out = []
        for slot, (kind, var) in zip(self.slots[k], ((_WEIGHTS, lay.sigma_b2), (_BRANCH, lay.sigma_a2))):
            gen = _stream(self.base, k, kind)
            gen.standard_normal(dtype=dt, out=self.buffer[slot])
            out.append((math.sqrt(var) * gen.standard_normal(N, dtype=dt)).astype(dt)[:, None])
        self.biases[k] = out

    def params(self, k: int):
        """``(Z, b, V, a)`` of layer k (b and a as columns)."""
        if not self.store:
            self._fill(k)
        Zs = [self.buffer[s] for s in self.slots[k]]
        bs = self.biases[k]
        if len(Zs) == 1:
            return Zs[0], bs[0], None, None
        return Zs[0], bs[0], Zs[1], bs[1]

    def inputs(self) -> np.ndarray:
        """The batch ``h^0`` (N, B): entries N(0, q0), correlation c0 between any two columns.

        ``x = sqrt(q0) Z C^{1/2}`` with ``C = (1 - c0) I + c0 1 1^T``, ``Z`` standard:
        ``C^{1/2} = sqrt(1 - c0) (I - 1 1^T / B) + sqrt(1 + (B - 1) c0) 1 1^T / B``.
        """
        s = self.setup
        Z = _stream(self.base, 0, _INPUT).standard_normal((s.width, s.batch_size))
        mean = Z.mean(axis=1, keepdims=True)
        x = math.sqrt(1.0 - s.c0) * (Z - mean) + math.sqrt(max(0.0, 1.0 + (s.batch_size - 1) * s.c0)) * mean
        return (math.sqrt(s.q0) * x).astype(s.dtype)

    def output_gradient(self) -> np.ndarray:
        """``u = dE/dh^L`` (N, B), i.i.d. N(0, 1)."""
        s = self.setup
        return _stream(self.base, 0, _OUTPUT_GRADIENT).standard_normal((s.width, s.batch_size), dtype=s.dtype)

    def forward(self, h, start: int = 1, stop: int | None = None, records=None, tape=None):
        """``h^{stop}`` from ``h = h^{start-1}`` through layers ``start..stop``.

        With ``records`` (a dict of per-network arrays, as in :data:`RECORDS`) fills q, c of
        ``h^k`` and the phi-argument diagnostics of layer k; with ``tape`` (a list) appends what
        the backward pass of each layer needs.
        """
        setup = self.setup
        stop = setup.depth if stop is None else stop
        for k in range(start, stop + 1):
            lay = setup.layers[k - 1]
            s = math.sqrt(lay.sigma_w2 / setup.width)
            Z, b, V, a = self.params(k)
            if lay.kind == "residual":
                arg = s * (Z @ h) + b
            elif lay.kind == "dense":
                arg = h
            else:
                axis = 1 if lay.kind == "batch_norm" else 0
                cen = h - h.mean(axis=axis, keepdims=True)
                sigma = np.sqrt(np.mean(cen * cen, axis=axis, keepdims=True))
                arg = cen / sigma
            phi, dphi = self.nl[k - 1](arg, True)
            if records is not None:
                records["sign_diversity"][k - 1] = _sign_diversity(arg)
                records["nonlinearity"][k - 1] = _nonlinear_fraction(arg, phi)
            if lay.rho < 1:
                gen = _stream(self.base, k, _MASKS)
                m = (gen.random(h.shape) < lay.rho).astype(setup.dtype) / setup.dtype.type(lay.rho)
                phi, dphi = phi * m, dphi * m
            if lay.kind == "residual":
                h = h + math.sqrt(lay.sigma_v2 / setup.width) * (V @ phi) + a
            else:
                h = s * (Z @ phi) + b
            if tape is not None:
                tape.append((arg, dphi, sigma) if lay.kind in ("batch_norm", "layer_norm") else (dphi,))
            if records is not None:
                records["q"][k] = _mean_square(h)
                records["c"][k] = _mean_pair_cosine(h)
        return h

    def backward(self, g, tape, records=None, start: int = 1):
        """``dE/dh^{start-1}`` from ``g = dE/dh^L`` back through layers ``L..start``.

        Consumes ``tape`` (of a forward pass from ``h^{start-1}``); with ``records`` fills grad2.
        """
        setup = self.setup
        L = setup.depth
        if records is not None:
            records["grad2"][L] = _mean_square(g)
        for k in range(L, start - 1, -1):
            lay = setup.layers[k - 1]
            s = math.sqrt(lay.sigma_w2 / setup.width)
            Z, _, V, _ = self.params(k)
            saved = tape.pop()
            if lay.kind == "residual":
                dz = saved[0] * (math.sqrt(lay.sigma_v2 / setup.width) * (V.T @ g))
                g = g + s * (Z.T @ dz)
            elif lay.kind == "dense":
                g = s * (Z.T @ g) * saved[0]
            else:
                y, dphi, sigma = saved
                axis = 1 if lay.kind == "batch_norm" else 0
                dy = s * (Z.T @ g) * dphi
                g = (dy - dy.mean(axis=axis, keepdims=True) - y * np.mean(dy * y, axis=axis, keepdims=True)) / sigma
            if records is not None:
                records["grad2"][k - 1] = _mean_square(g)
        return g


def measure_records(setup: Setup, rng: np.random.Generator) -> dict:
    """Per-network records, arrays of shape (n_networks, L + 1) or (n_networks, L).

    Network n draws one seed from ``rng``; overflow and division by a zero spread leave inf or
    NaN in its records (no warnings).
    """
    L, n = setup.depth, setup.n_networks
    out = {name: np.empty((n, L if per_layer else L + 1)) for name, per_layer in RECORDS.items()}
    sampler = Sampler(setup, plan(setup))
    with np.errstate(all="ignore"):
        for i in range(n):
            sampler.draw(new_base(rng))
            rec = {name: arr[i] for name, arr in out.items()}
            h0 = sampler.inputs()
            rec["q"][0], rec["c"][0] = _mean_square(h0), _mean_pair_cosine(h0)
            tape: list = []
            sampler.forward(h0, records=rec, tape=tape)
            sampler.backward(sampler.output_gradient(), tape, records=rec)
    return out
