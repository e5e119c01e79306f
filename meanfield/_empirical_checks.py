"""Argument checks of :mod:`meanfield.empirical`: clear errors before any sampling.

Private.  Checks that need the architecture (inputs against a :class:`NetworkSpec`, pairs,
tangents, output gradients) and the memory refusals that come before any work.  Uses only
:mod:`meanfield._validate` and the engine's own types, never the theory.
"""

from __future__ import annotations

import math

import numpy as np

from . import _validate
from ._network_pass import Options, n_weights
from ._validate import format_bytes

__all__ = [
    "layer_number",
    "variance",
    "check_inputs",
    "as_rng",
    "options",
    "tangents",
    "output_gradient",
    "check_parameters_fit",
    "check_stacked_records",
]


def layer_number(value, depth):
    """A layer number ``0..depth-1`` (layer l: the pre-activation after l nonlinear layers), or ValueError."""
    last = depth - 1
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        value = int(value)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or not 0 <= value <= last:
        raise ValueError(
            f"layer must be an integer in 0..{last} (layer 0 is the input layer's pre-activation "
            f"h^0 = W^0 x + b^0, layer {last} the output), got {value!r}"
        )
    return int(value)


def variance(value, name, positive):
    """A finite variance ``>= 0`` (``> 0`` if ``positive``), or ValueError naming ``name``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number (a variance), got {value!r}") from None
    if not math.isfinite(v) or v < 0 or (positive and v == 0):
        need = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} is a variance and must be finite and {need}, got {value!r}")
    return v


def check_inputs(spec, X) -> np.ndarray:
    """Inputs as a finite array (B, d_in) in the spec's dtype, or ValueError."""
    X = _validate.inputs("X", X)
    if spec.residual and X.shape[1] != spec.widths[0]:
        raise ValueError(
            f"a residual network has x^{{-1}} = x, so the input dimension ({X.shape[1]}) must equal the width "
            f"({spec.widths[0]})"
        )
    return X.astype(spec.dtype, copy=False)


def as_rng(rng) -> np.random.Generator:
    """A Generator from a Generator, a seed, a SeedSequence or None; TypeError otherwise."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (bool, np.bool_)):
        raise TypeError("rng must be a numpy.random.Generator or a non-negative integer seed, got a bool")
    if isinstance(rng, (int, np.integer)) and rng < 0:
        raise ValueError(f"rng must be a numpy.random.Generator or a non-negative integer seed, got {rng}")
    if rng is None or isinstance(rng, (int, np.integer, np.random.SeedSequence)):
        return np.random.default_rng(rng)
    raise TypeError(f"rng must be a numpy.random.Generator or a seed, got {type(rng).__name__}")


def options(spec, X, pairs, jacobian, gradients, keep_activations, grams=False) -> Options:
    """Check the record requests against the batch ``X`` (B, d_in)."""
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
        raise ValueError(
            f"jacobian must be False, True/'pre' (dh^{{L-1}}/dx) or 'post' (d phi(h^{{L-1}})/dx), got {jacobian!r}"
        )
    if jacobian == "post" and spec.residual:
        raise ValueError("jacobian='post' is for plain networks; a residual network's output is x^{L-1}")
    return Options(gradients=bool(gradients), pairs=pairs, jacobian=jacobian or False,
                   keep_activations=bool(keep_activations), grams=grams)


def tangents(jvp, rng, B, d_in, dtype):
    """Forward-mode tangents (B, d_in): None, uniform unit vectors drawn from ``rng``, or given."""
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


def output_gradient(given, gradients, rng, B, spec):
    """The output gradient (B, N_{L-1}) to backpropagate: the one given, ``g ~ N(0, I)``, or None."""
    n_out = spec.widths[-1]
    if given is None:
        return rng.standard_normal((B, n_out), dtype=spec.dtype) if gradients else None
    if not gradients:
        raise ValueError("output_gradient is given but gradients=False")
    g = np.asarray(given, dtype=float)
    if g.shape == (n_out,):
        g = np.broadcast_to(g, (B, n_out))
    if g.shape != (B, n_out) or not np.all(np.isfinite(g)):
        raise ValueError(f"output_gradient must be a finite array of shape ({n_out},) or ({B}, {n_out})")
    return g.astype(spec.dtype)


def check_parameters_fit(spec, d_in, memory_limit):
    """Refuse (ValueError) explicit parameters larger than ``memory_limit`` bytes."""
    need = n_weights(spec, d_in) * spec.dtype.itemsize
    if need > memory_limit:
        raise ValueError(
            f"the parameters need {format_bytes(need)}, more than memory_limit = {format_bytes(memory_limit)}; "
            "use run(spec, ...) which samples layer by layer"
        )


def check_stacked_records(spec, d_in, B, n_networks, opt, jvp, outputs, memory_limit):
    """Refuse (ValueError) Monte Carlo records of ``n_networks`` networks larger than ``memory_limit``."""
    L = spec.depth
    per = 8 * B * L * (2 + 3 * opt.gradients + (jvp is not False and jvp is not None))
    if opt.pairs is not None:
        per += 8 * L * (B * B if isinstance(opt.pairs, str) else len(opt.pairs))
    if opt.jacobian:
        per += 8 * B * min(d_in, spec.widths[-1])
    if outputs:
        per += spec.dtype.itemsize * B * spec.widths[-1]
    if per * n_networks > memory_limit:
        raise ValueError(
            f"the stacked records of {n_networks} networks need {format_bytes(per * n_networks)}, more than "
            f"memory_limit = {format_bytes(memory_limit)}: record fewer pairs, fewer inputs or fewer networks"
        )
