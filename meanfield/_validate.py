"""Argument checks shared by the public functions: clear errors before any heavy work."""

from __future__ import annotations

import numpy as np

__all__ = ["nonnegative", "correlation", "keep_probability", "broadcast", "finish"]


def _as_float_array(name, value):
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number or an array of numbers, got {type(value).__name__}") from None
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    return arr


def nonnegative(name, value):
    """A finite, non-negative float array, or ValueError naming ``name``."""
    arr = _as_float_array(name, value)
    bad = ~np.isfinite(arr) | (arr < 0)
    if bad.any():
        raise ValueError(f"{name} must be finite and >= 0 (a variance), got {arr[bad].ravel()[0]!r}")
    return arr


def correlation(name, value):
    """A float array in [-1, 1], or ValueError naming ``name``."""
    arr = _as_float_array(name, value)
    bad = ~np.isfinite(arr) | (np.abs(arr) > 1)
    if bad.any():
        raise ValueError(f"{name} must be a correlation in [-1, 1], got {arr[bad].ravel()[0]!r}")
    return arr


def keep_probability(rho):
    """Dropout keep probability in (0, 1]."""
    arr = _as_float_array("rho", rho)
    if arr.ndim != 0:
        raise ValueError("rho must be a single number in (0, 1]")
    r = float(arr)
    if not (0 < r <= 1):
        raise ValueError(f"rho (dropout keep probability) must be in (0, 1], got {r!r}")
    return r


def broadcast(*arrays):
    """Broadcast arrays together; return the common shape and flat copies."""
    try:
        arrs = np.broadcast_arrays(*arrays)
    except ValueError:
        shapes = ", ".join(str(np.shape(a)) for a in arrays)
        raise ValueError(f"arguments do not broadcast together: shapes {shapes}") from None
    return arrs[0].shape, [np.array(a, dtype=float).ravel() for a in arrs]


def finish(values, shape):
    """Reshape a flat result; a 0-d result becomes a Python float."""
    out = np.asarray(values, dtype=float).reshape(shape)
    return float(out) if out.ndim == 0 else out
