"""Argument checks shared by the public functions: clear errors before any heavy work."""

from __future__ import annotations

import numpy as np

__all__ = ["number", "nonnegative", "scalar", "correlation", "keep_probability", "broadcast", "finish", "memory_limit",
           "format_bytes", "positive_int", "method", "inputs", "METHODS", "DEFAULT_MEMORY_LIMIT"]

#: What ``method=`` may be, everywhere: the closed form where one exists ("auto"), only the closed
#: form ("exact"), or never the closed form ("quadrature"; for cross-checks).
METHODS = ("auto", "exact", "quadrature")

#: Bytes of working memory a call may use unless given ``memory_limit`` (the one policy of the package:
#: kernels, phase diagrams and sampled networks refuse, before any work, what would need more).
DEFAULT_MEMORY_LIMIT = 4 * 2**30


def _as_float_array(name, value, allow_empty=False):
    if value is None:
        raise ValueError(f"{name} is required: give a number or an array of numbers")
    try:
        if isinstance(value, (str, bytes)) or np.iscomplexobj(value):
            raise ValueError(f"{name} must be a real number or an array of real numbers, got {value!r}")
        arr = np.asarray(value, dtype=float)
    except ValueError as err:
        if str(err).startswith(name):
            raise
        raise ValueError(f"{name} must be a number or a regular array of numbers, got {value!r}") from None
    except TypeError:
        raise ValueError(f"{name} must be a number or a regular array of numbers, got {type(value).__name__}") from None
    if arr.size == 0 and not allow_empty:
        raise ValueError(f"{name} is empty")
    return arr


def number(name, value, *, low=-np.inf, high=np.inf, low_open=False, what="a number") -> float:
    """One finite float in ``[low, high]`` (``(low, high]`` if ``low_open``), or ValueError naming ``name``.

    Bools, strings, arrays and non-finite values are refused; ``what`` describes the quantity.
    """
    if isinstance(value, (bool, np.bool_, str, bytes)) or np.ndim(value) != 0:
        raise ValueError(f"{name} must be {what} (a single number), got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be {what} (a single number), got {value!r}") from None
    if not np.isfinite(v) or v > high or v < low or (low_open and v == low):
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return v


def nonnegative(name, value, allow_empty=False):
    """A finite, non-negative float array, or ValueError naming ``name``."""
    arr = _as_float_array(name, value, allow_empty)
    bad = ~np.isfinite(arr) | (arr < 0)
    if bad.any():
        raise ValueError(f"{name} must be finite and >= 0 (a variance), got {arr[bad].ravel()[0].item()!r}")
    return arr


def scalar(name, arr):
    """A single float from a validated array, or ValueError naming ``name``."""
    if np.ndim(arr) != 0:
        raise ValueError(f"{name} must be a single number here, got an array of shape {np.shape(arr)}")
    return float(arr)


def correlation(name, value, allow_empty=False):
    """A float array in [-1, 1], or ValueError naming ``name``."""
    arr = _as_float_array(name, value, allow_empty)
    bad = ~np.isfinite(arr) | (np.abs(arr) > 1)
    if bad.any():
        raise ValueError(f"{name} must be a correlation in [-1, 1], got {arr[bad].ravel()[0].item()!r}")
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


def memory_limit(value):
    """``memory_limit`` in bytes: ``None`` means :data:`DEFAULT_MEMORY_LIMIT`; else a positive number."""
    if value is None:
        return float(DEFAULT_MEMORY_LIMIT)
    try:
        out = float(value)
    except (TypeError, ValueError):
        out = float("nan")
    if isinstance(value, bool) or not (out > 0 and np.isfinite(out)):
        raise ValueError(f"memory_limit must be a positive number of bytes, got {value!r}")
    return out


def format_bytes(n: float) -> str:
    """``1.5e9`` -> ``'1.5 GB'``: sizes in messages."""
    n = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.3g} {unit}"
        n /= 1000.0
    return f"{n:.3g} TB"  # pragma: no cover


def positive_int(name, value):
    """A positive int (integral floats such as ``10.0`` accepted), or ValueError naming ``name``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            value = int(value)
        else:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def method(value):
    """One of :data:`METHODS`, or ValueError listing them."""
    if not isinstance(value, str) or value not in METHODS:
        hint = " ('interpolate' is now called 'quadrature')" if value == "interpolate" else ""
        raise ValueError(f"method must be one of {METHODS}, got {value!r}{hint}")
    return value


def inputs(name, X):
    """Inputs as a finite real float array of shape (n, d_in), n, d_in > 0; a 1-D array is refused as ambiguous."""
    if isinstance(X, (str, bytes)) or np.iscomplexobj(X):
        raise ValueError(f"{name} must be a real numeric array of shape (n, d_in), got {type(X).__name__}"
                         + (" with complex values" if np.iscomplexobj(X) else ""))
    try:
        X = np.asarray(X, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real numeric array of shape (n, d_in)") from None
    if X.ndim == 1:
        raise ValueError(f"{name} must have shape (n, d_in), one input per row, got a 1-D array of shape {X.shape}: "
                         f"pass {name}.reshape(-1, 1) for {X.shape[0]} scalar inputs or {name}.reshape(1, -1) "
                         f"for one input of dimension {X.shape[0]}")
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{name} must have shape (n, d_in) with n > 0 and d_in > 0, got shape {X.shape}")
    if not np.all(np.isfinite(X)):
        i, j = np.argwhere(~np.isfinite(X))[0]
        raise ValueError(f"{name} must be finite: {name}[{i}, {j}] = {X[i, j]}")
    return X


def layer_widths(depth: int, width, widths) -> np.ndarray:
    """``N_0..N_{L-1}`` from ``width`` or ``widths``, or ValueError naming the bad argument."""
    if (width is None) == (widths is None):
        raise ValueError("give width (one width for every layer) or widths (one per layer), not both or neither")
    if widths is None:
        return np.full(depth, positive_int("width", width), dtype=np.int64)
    if isinstance(widths, (str, bytes)) or np.ndim(widths) != 1:
        raise ValueError(f"widths must be a sequence of positive integers, got {widths!r}")
    out = np.array([positive_int(f"widths[{i}]", w) for i, w in enumerate(widths)], dtype=np.int64)
    if out.size != depth:
        raise ValueError(f"widths has {out.size} entries but depth is {depth}: give one width per layer")
    return out
