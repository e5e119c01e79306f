"""Argument checks of the kernel functions and estimators: clear errors before any work."""

from __future__ import annotations

import numpy as np

from . import _validate, symbolic
from .activations import Activation, activation

__all__ = ["variance", "check"]


def variance(name: str, value) -> float:
    """A single finite number >= 0 (not a bool)."""
    return _validate.number(name, value, low=0.0, what="a finite variance >= 0")


def check(X1, X2, act, depth, sigma_w2, sigma_b2, method, memory_limit, n_arrays: int):
    """Checked arguments of :func:`meanfield.kernels.nngp` and :func:`~meanfield.kernels.ntk`.

    ``n_arrays`` is the number of ``n1 x n2`` arrays the recursion holds at a time (3 for the
    NNGP, 5 for the NTK); a kernel whose arrays exceed ``memory_limit`` bytes (None: the package
    default) is refused.  Returns ``(X1, X2, same, act, depth, sigma_w2, sigma_b2)``.
    """
    X1 = _validate.inputs("X1", X1)
    same = X2 is None
    X2 = X1 if same else _validate.inputs("X2", X2)
    if X1.shape[1] != X2.shape[1]:
        raise ValueError(f"X1 and X2 must have the same number of features, got {X1.shape[1]} and {X2.shape[1]}")
    if isinstance(depth, (bool, np.bool_)) or not isinstance(depth, (int, np.integer)):
        raise ValueError(f"depth must be a non-negative integer (number of hidden layers), got {depth!r}")
    if depth < 0:
        raise ValueError(f"depth must be >= 0 (number of hidden layers), got {depth}")
    sw = variance("sigma_w2", sigma_w2)
    sb = variance("sigma_b2", sigma_b2)
    _validate.method(method)
    limit = _validate.memory_limit(memory_limit)
    act: Activation = activation(act)
    if n_arrays > 3:  # the NTK needs phi'
        act.derivative(1)
    need = 8.0 * X1.shape[0] * X2.shape[0] * n_arrays
    if need > limit:
        raise ValueError(
            f"a {X1.shape[0]} x {X2.shape[0]} kernel needs {_validate.format_bytes(need)} of working memory, more "
            f"than memory_limit = {_validate.format_bytes(limit)}: use fewer inputs (or compute blocks of rows), "
            "or raise memory_limit"
        )
    if method == "exact" and not symbolic.has_closed_form(act):
        raise ValueError(f"no closed form is known for {act.name!r}; use method='auto' or 'quadrature'")
    return X1, X2, same, act, int(depth), sw, sb
