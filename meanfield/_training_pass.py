"""The engine behind :mod:`meanfield.training`: forward, backward and SGD steps of one classifier.

Private.  The public module states the model and the checks; this one does the arithmetic, in the
compute dtype, on weights kept in memory and updated in place, with every buffer allocated once
(a training step is the matrix products of the forward and backward passes plus a few elementwise
passes over the same arrays).

Layout: ``Ws[l]`` has shape ``(n_in, n_out)`` (a batch of row vectors maps as ``h = a @ Ws[l] + bs[l]``);
index ``l = 0..L-1`` are the hidden layers ``h^l`` of the network, index ``L`` is the readout
``z = phi(h^{L-1}) @ Ws[L] + bs[L]`` (with no hidden layers, ``z = x @ Ws[0] + bs[0]``).
It uses only :class:`meanfield._network_pass.Nonlinearity` (phi and phi'), never the theory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Buffers", "forward", "loss_and_delta", "backward", "sgd", "logits", "streams", "Record", "run"]


def streams(base: int, depth: int):
    """The readout's stream and the mini-batch stream of one run (kinds 3 and 4 of layer ``depth``).

    The hidden layers use the per-layer streams of :class:`meanfield._network_pass.LayerParams`
    (kinds 0-2); these two keys are disjoint from them.
    """
    seq = [np.random.SeedSequence(base, spawn_key=(depth, kind)) for kind in (3, 4)]
    return tuple(np.random.Generator(np.random.PCG64(s)) for s in seq)


class Buffers:
    """Every array one step needs, for a batch of ``B`` inputs, allocated once."""

    def __init__(self, Ws, B: int, dtype):
        n_layers = len(Ws)
        self.A = [None] + [np.empty((B, W.shape[0]), dtype) for W in Ws[1:]]  # inputs of layers 1..L
        self.D = [np.empty((B, W.shape[0]), dtype) for W in Ws[1:]]  # phi'(h^l), l = 0..L-1
        self.Z = np.empty((B, Ws[-1].shape[1]), dtype)  # logits, then the output gradient
        self.delta = [np.empty((B, W.shape[1]), dtype) for W in Ws]
        self.gW = [np.empty_like(W) for W in Ws]
        self.gb = [np.empty(W.shape[1], dtype) for W in Ws]
        self.n_layers = n_layers


def forward(nl, Ws, bs, x, buf: Buffers):
    """Forward pass of the batch ``x``; keeps every layer's input (``buf.A``) and phi' (``buf.D``)."""
    L = len(Ws) - 1
    buf.A[0] = x
    tanh = nl is not None and nl.fast is not None and nl.act.name == "tanh"
    for l in range(L):
        h = buf.A[l + 1]
        np.matmul(buf.A[l], Ws[l], out=h)
        h += bs[l]
        if tanh:
            np.tanh(h, out=h)
            d = buf.D[l]
            np.multiply(h, h, out=d)
            np.subtract(1, d, out=d)
        else:
            phi, dphi = nl(h, True)
            h[...] = phi
            buf.D[l][...] = dphi
    np.matmul(buf.A[L], Ws[L], out=buf.Z)
    buf.Z += bs[L]
    return buf.Z


def loss_and_delta(z, y, scale):
    """Mean softmax cross-entropy of the logits ``z`` (B, C) with labels ``y``, and its gradient.

    ``z`` is overwritten with ``scale * dLoss/dz = scale * (softmax(z) - onehot(y)) / B``.
    Returns ``(loss, number of correct predictions)``; a non-finite loss means the run diverged.
    """
    B = z.shape[0]
    rows = np.arange(B)
    correct = int(np.count_nonzero(np.argmax(z, axis=1) == y))
    z -= z.max(axis=1, keepdims=True)
    z_true = z[rows, y].astype(np.float64)
    np.exp(z, out=z)
    s = z.sum(axis=1, keepdims=True)
    loss = float(np.mean(np.log(s[:, 0], dtype=np.float64) - z_true))  # log-sum-exp, never log(0)
    z /= s
    z[rows, y] -= 1
    z *= z.dtype.type(scale / B)
    return loss, correct


def backward(Ws, buf: Buffers, g):
    """Gradients of the loss whose output gradient is ``g`` into ``buf.gW``, ``buf.gb``."""
    L = len(Ws) - 1
    delta = g
    for l in range(L, -1, -1):
        np.matmul(buf.A[l].T, delta, out=buf.gW[l])
        np.add.reduce(delta, axis=0, out=buf.gb[l])
        if l == 0:
            break
        prev = buf.delta[l - 1]
        np.matmul(delta, Ws[l].T, out=prev)
        prev *= buf.D[l - 1]
        delta = prev


def sgd(Ws, bs, buf: Buffers, velocity, momentum):
    """One update with the gradients (already times the learning rate): ``u = mu u + g``, ``w -= u``."""
    if velocity is None:
        for W, b, gW, gb in zip(Ws, bs, buf.gW, buf.gb, strict=True):
            W -= gW
            b -= gb
        return
    mu = Ws[0].dtype.type(momentum)
    for W, b, gW, gb, (uW, ub) in zip(Ws, bs, buf.gW, buf.gb, velocity, strict=True):
        uW *= mu
        uW += gW
        W -= uW
        ub *= mu
        ub += gb
        b -= ub


def logits(nl, Ws, bs, X, chunk=4096):
    """Logits of the inputs ``X`` (no tape kept), in chunks of rows."""
    out = np.empty((X.shape[0], Ws[-1].shape[1]), Ws[0].dtype)
    for start in range(0, X.shape[0], chunk):
        a = X[start:start + chunk]
        for l in range(len(Ws) - 1):
            h = a @ Ws[l]
            h += bs[l]
            a = nl(h, False)[0]
        out[start:start + chunk] = a @ Ws[-1] + bs[-1]
    return out


@dataclass
class Record:
    loss: np.ndarray
    accuracy: np.ndarray
    diverged_at: int | None


def run(nl, Ws, bs, X, y, batch_size, steps, lr, momentum, batches: np.random.Generator) -> Record:
    """``steps`` SGD steps on mini-batches drawn without replacement, epoch by epoch.

    Stops at the first step whose loss (or any parameter) is not finite; the remaining records
    are NaN.
    """
    buf = Buffers(Ws, batch_size, Ws[0].dtype)
    velocity = None if momentum == 0 else [(np.zeros_like(W), np.zeros_like(b)) for W, b in zip(Ws, bs, strict=True)]
    loss = np.full(steps, np.nan)
    acc = np.full(steps, np.nan)
    xb = np.empty((batch_size, X.shape[1]), X.dtype)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # divergence is recorded, not warned
        diverged = _steps(nl, Ws, bs, X, y, xb, buf, velocity, batch_size, steps, lr, momentum, batches, loss, acc)
    return Record(loss=loss, accuracy=acc, diverged_at=diverged)


def _steps(nl, Ws, bs, X, y, xb, buf, velocity, batch_size, steps, lr, momentum, batches, loss, acc):
    n = X.shape[0]
    order, pos = None, n
    diverged = None
    for t in range(steps):
        if pos + batch_size > n:
            order, pos = batches.permutation(n), 0
        idx = order[pos:pos + batch_size]
        pos += batch_size
        np.take(X, idx, axis=0, out=xb)
        yb = y[idx]
        z = forward(nl, Ws, bs, xb, buf)
        loss[t], correct = loss_and_delta(z, yb, lr)
        acc[t] = correct / batch_size
        if not np.isfinite(loss[t]):
            loss[t], acc[t], diverged = np.nan, np.nan, t
            break
        backward(Ws, buf, z)
        sgd(Ws, bs, buf, velocity, momentum)
    if diverged is None and not all(np.isfinite(W).all() for W in Ws):
        diverged = steps  # the last update left non-finite weights
    return diverged
