"""The engine behind :mod:`meanfield.empirical`: one sampled network, one batch of inputs.

Private.  The public module states what is sampled and recorded; this one does the work:

* parameter streams: every layer's weights come from its own seeded stream, so they can be kept
  or regenerated at will and the results never depend on which;
* the memory plan: keep the weights or not, and how many inputs per chunk, decided within
  ``memory_limit`` before anything is drawn;
* the forward pass (records, the phi' tape, forward-mode tangents, the Jacobian) and the
  backward pass (gradient norms and the layer-wise NTK sum), layer by layer.

It uses only :mod:`meanfield.activations` (phi and phi') and :mod:`meanfield._validate`, never
the theory.  The conventions (layers ``l = 0..L-1``, ``h^l = W^l a^{l-1} + b^l`` with
``a^{-1} = x``, inverted dropout, residual blocks, scaled Haar weights) are those of
:mod:`meanfield.empirical`; layer ``l`` is index ``l`` of every list, stream and record here.
Internally a layer's weights are stored as ``(Z, s, b)`` with ``W = (s Z)^T``: ``Z`` of shape
``(n_in, n_out)`` standard (Gaussian or a partial isometry), ``s`` the scale, so that a batch ``a``
of row vectors maps to ``h = (a @ Z) * s + b``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special

from ._empirical_results import KernelEstimate, NetworkRun
from ._validate import format_bytes
from .activations import Activation

__all__ = [
    "FAST",
    "Nonlinearity",
    "n_weights",
    "LayerParams",
    "StoredParams",
    "new_base",
    "Options",
    "plan",
    "ntk_coefficients",
    "run_batch",
    "RunningMean",
]


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


#: Table name -> ``f(h, need_d) = (phi(h), phi'(h) or None)`` in the dtype of ``h``.
FAST = {
    "tanh": _tanh_pair,
    "relu": _relu_pair,
    "linear": _linear_pair,
    "erf": _erf_pair,
    "hard_tanh": _hard_tanh_pair,
}


class Nonlinearity:
    """phi and phi' on arrays of a given dtype; fast paths for plain table entries."""

    def __init__(self, act: Activation):
        self.act = act
        table = act.params.get("table") if isinstance(act.params, dict) else None
        plain = isinstance(act.params, dict) and set(act.params) == {"table"}
        self.fast = FAST.get(table) if plain else None

    def check_derivative(self):
        self.act.derivative(1)  # raises a clear ValueError if phi' is unavailable

    def __call__(self, h, need_d):
        if self.fast is not None:
            return self.fast(h, need_d)
        phi = np.asarray(self.act.phi(h), dtype=h.dtype)
        dphi = np.asarray(self.act.derivative(1)(h), dtype=h.dtype) if need_d else None
        return phi, dphi


# ----------------------------------------------------------------------------------------
# Per-layer parameters: stored, or regenerated from per-layer seeds
# ----------------------------------------------------------------------------------------


def n_weights(spec, d_in):
    """Number of weight entries (W, and V for residual networks)."""
    fan_in = (d_in,) + spec.widths[:-1]
    n = sum(a * b for a, b in zip(fan_in, spec.widths, strict=True))
    return n * (2 if spec.residual else 1)


def _scale(spec, n_in, n_out, var):
    """Multiplier s with W = s Z, Z standard (Gaussian) or a partial isometry (orthogonal)."""
    if spec.weights == "gaussian":
        return math.sqrt(var / n_in)
    return math.sqrt(var * max(n_in, n_out) / n_in)


def _stream(base: int, layer: int, kind: int) -> np.random.Generator:
    """Independent random stream for (network, layer, kind); kind 0: W, b; 1: V, a; 2: masks.

    Kind 2 of layer ``l`` holds the masks on ``phi(h^l)``: ``m^{l+1}`` (before ``W^{l+1}``) in a
    plain network, ``m^l`` (before ``V^l``) in a residual one.
    """
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


class LayerParams:
    """Parameters of one network drawn from the streams of ``base``, layer by layer.

    ``get(l, kind)`` is ``(Z, s, b)`` of layer ``l``: kind 0 is ``W^l, b^l``, kind 1 the
    residual branch ``V^l, a^l``.  With ``store`` they are kept after the first draw; otherwise they
    are regenerated, identically, whenever asked for.
    """

    def __init__(self, spec, d_in: int, base: int, store: bool):
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
        s = _scale(spec, n_i, n_o, spec.sigma_w2 if kind == 0 else spec.sigma_v2)
        return Z, s, b

    def get(self, l, kind=0):
        key = (l, kind)
        if key in self._cache:
            return self._cache[key]
        out = self._make(l, kind)
        if self.store:
            self._cache[key] = out
        return out


class StoredParams:
    """Explicit parameters: lists of ``(Z, s, b)`` per layer (and per residual branch)."""

    def __init__(self, layers, res_layers):
        self.layers, self.res_layers = layers, res_layers

    def get(self, l, kind=0):
        return (self.layers if kind == 0 else self.res_layers)[l]


def new_base(rng: np.random.Generator) -> int:
    """The seed of one network's parameter and mask streams (one draw from ``rng``)."""
    return int(rng.integers(0, 2**63 - 1))


# ----------------------------------------------------------------------------------------
# What to record, and whether it fits
# ----------------------------------------------------------------------------------------


@dataclass
class Options:
    gradients: bool
    pairs: object  # "all", None or ndarray (P, 2)
    jacobian: object  # False, "pre", "post"
    keep_activations: bool
    grams: bool  # NTK: activation and backprop Gram matrices


def plan(spec, B: int, d_in: int, opt: Options, memory_limit: float, can_store: bool):
    """Decide (store_weights, chunk_size) within memory_limit, or raise before any work."""
    isz = spec.dtype.itemsize
    L = spec.depth
    max_n = max((d_in,) + spec.widths)
    fixed = 8 * max_n * B * isz + 8 * 8 * L * B
    # one layer's weight matrix is always in memory while it is used (orthogonal ones: QR work space too)
    fan_in = (d_in,) + spec.widths[:-1]
    largest = max(a * b for a, b in zip(fan_in, spec.widths, strict=True))
    fixed += isz * largest * (1 if spec.weights == "gaussian" else 3)
    if opt.pairs is not None:
        P = B * B if isinstance(opt.pairs, str) else len(opt.pairs)
        fixed += 8 * L * P
    if opt.grams:
        fixed += 8 * (4 * L + 2) * B * B
    if opt.keep_activations:
        fixed += isz * B * sum(spec.widths)
    if fixed > memory_limit:
        raise ValueError(
            f"one layer's weights, the batch and the requested records need {format_bytes(fixed)}, more than "
            f"memory_limit = {format_bytes(memory_limit)}: use smaller widths, record fewer pairs "
            "(pairs=[[a, b], ...] or None), use fewer inputs, or raise memory_limit"
        )
    backward = opt.gradients or opt.grams
    per_input = 0
    if backward:
        per_input += isz * sum(spec.widths) * (2 if spec.residual else 1)
    if opt.jacobian:
        per_input += 3 * isz * d_in * max_n
    if per_input == 0:
        return False, B
    weights = isz * n_weights(spec, d_in)
    if can_store and fixed + weights + per_input * B <= memory_limit:
        return True, B
    if fixed + per_input * B <= memory_limit:
        return False, B
    chunk = int((memory_limit - fixed) // per_input)
    what = "the Jacobian and the backpropagation tape" if opt.jacobian else "the backpropagation tape"
    if chunk < 1:
        raise ValueError(
            f"{what} for a single input need {format_bytes(fixed + per_input)} "
            f"({format_bytes(per_input)} per input plus {format_bytes(fixed)} for one layer of the batch and the "
            f"records), more than memory_limit = {format_bytes(memory_limit)}; "
            "use smaller widths or d_in, or raise memory_limit"
        )
    if opt.grams:
        raise ValueError(
            f"the empirical NTK needs the backpropagation tape of all {B} inputs at once: "
            f"{format_bytes(fixed + per_input * B)}, more than memory_limit = {format_bytes(memory_limit)}; "
            "use fewer inputs or raise memory_limit"
        )
    return False, chunk


def ntk_coefficients(spec, parametrization):
    """``(c_w(s), c_b, c_v(s), c_a)`` of the layer-wise NTK sum, from the weight scale ``s``."""
    if parametrization == "ntk":
        return (lambda s: s * s, spec.sigma_b2, lambda s: s * s, spec.sigma_a2)
    if parametrization == "standard":
        return (lambda s: 1.0, 1.0, lambda s: 1.0, 1.0)
    raise ValueError(f"parametrization must be 'ntk' or 'standard', got {parametrization!r}")


# ----------------------------------------------------------------------------------------
# The passes: one network, one batch
# ----------------------------------------------------------------------------------------


def _masks(spec, base, l, rows, n):
    """Dropout factors m / rho applied to phi(h^l) (stream kind 2 of layer l), for the input rows."""
    gen = _stream(base, l, 2)
    gen.bit_generator.advance(rows.start * n)
    keep = gen.random((rows.stop - rows.start, n)) < spec.rho
    return keep.astype(spec.dtype) / spec.dtype.type(spec.rho)


def _nonlinearity(nl, h, need_d, spec, base, l, rows, n):
    """phi(h^l) and phi'(h^l), both times the dropout factors m / rho when rho < 1."""
    phi, dphi = nl(h, need_d)
    if spec.rho < 1:
        m = _masks(spec, base, l, rows, n)
        phi = phi * m  # not in place: an activation may return a read-only or shared array (a broadcast constant)
        if dphi is not None:
            dphi = dphi * m
    return phi, dphi


def _sq(a):
    return np.einsum("ij,ij->i", a, a, dtype=np.float64)


def _gram(a):
    """``a a^T`` in float64 (a float32 product overflows long before its float64 squares do)."""
    a = np.asarray(a, dtype=np.float64)
    return a @ a.T


def _forward(spec, nl, params, X, rows, base, opt, *, records, tape, jac, tangents):
    """Forward pass over the inputs X[rows].

    Fills the forward records of layers ``l = 0..L-1`` at index ``l`` (when ``records`` is given),
    appends phi'(h^l) * m / rho of every hidden layer to ``tape[l]`` (when given), and accumulates
    the transposed Jacobian when ``jac``.  Returns the output ``h^{L-1}`` (residual ``x^{L-1}``)
    and the Jacobian stack (n_rows, d_in, N_{L-1}) or None.
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
            phi, dphi = _nonlinearity(nl, h, need_d, spec, base, l, rows, n)
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
                phi, dphi = _nonlinearity(nl, h, need_d, spec, base, l, rows, n)
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


def _backward(spec, params, rows, delta, tape, opt, records, ntk_coef):
    """Backpropagate ``delta`` (n_rows, N_{L-1}) through the tape; fill gradient records and the NTK.

    ``delta^l`` (residual: the gradient at ``x^l``) goes to ``grad_sq[l]``, layers ``L-1`` down to 0.
    """
    L = spec.depth
    want = opt.gradients
    a_sq = records.get("a_sq")
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


def run_batch(spec, X, params, base, out_grad, tangents, opt, memory_limit, ntk_coef=None) -> NetworkRun:
    """One network, one batch: plan the memory, then the forward (and backward) passes.

    ``params`` is a :class:`StoredParams` or None (then drawn from the streams of ``base``);
    ``out_grad`` the output gradient to backpropagate and ``tangents`` the forward-mode tangents
    (or None).  Records not requested are None.
    """
    B, d_in = X.shape
    L = spec.depth
    nl = Nonlinearity(spec.act)
    if opt.gradients or opt.jacobian or tangents is not None or opt.grams:
        nl.check_derivative()
    store, chunk = plan(spec, B, d_in, opt, memory_limit, can_store=params is None)
    if params is None:
        params = LayerParams(spec, d_in, base, store)
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
            ntk = _backward(spec, params, everything, out_grad, tape, opt, rec, ntk_coef)
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
                _backward(spec, params, rows, out_grad[rows], tape, opt, rec, None)
            del tape
    return NetworkRun(
        q=rec["q"], output=np.asarray(out), q12=rec.get("q12"),
        pairs=None if isinstance(opt.pairs, str) or opt.pairs is None else opt.pairs,
        p=rec.get("p"), grad_sq=rec.get("grad_sq"), grad_input_sq=rec.get("grad_input_sq"),
        grad_w_sq=rec.get("grad_w_sq"), jvp_sq=rec.get("jvp_sq"), jacobian_sv=sv,
        activations=rec.get("activations"), ntk=ntk,
    )


class RunningMean:
    """Mean and standard error of a stream of arrays (Welford), optionally keeping them."""

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

    def result(self) -> KernelEstimate:
        """Mean, standard error (NaN for a single sample) and, if kept, the samples."""
        sem = np.sqrt(self.m2 / (self.n - 1) / self.n) if self.n > 1 else np.full_like(self.mean, np.nan)
        return KernelEstimate(mean=self.mean, sem=sem, n_networks=self.n,
                              samples=None if self.samples is None else np.stack(self.samples))
