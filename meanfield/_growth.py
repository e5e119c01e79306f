"""Growth of an activation at large |x|: the exponential rate that widens integration ranges."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["growth_rate"]


def growth_rate(fn: Callable, name: str) -> float:
    """Exponential growth rate of |fn| at large |x|; error if it grows faster than exponentially.

    On each side the rate is the slope of ``log|fn|`` between 100 and 200 (50 and 100 where 200
    overflows); faster-than-exponential growth shows as a steeper slope over the next stretch, taken
    as long as an exponential at that rate stays within float range (so ``exp(4 x)``, which
    overflows at 200, is measured and accepted, and ``exp(x**2)`` is refused).
    """
    def log_abs(xs):
        with np.errstate(all="ignore"):
            v = np.abs(np.asarray(fn(np.asarray(xs, dtype=float)), dtype=float))
        return np.where(np.isfinite(v) & (v < 1e300), np.log(np.maximum(v, 1e-300)), np.inf)

    rate = 0.0
    for side in (1.0, -1.0):
        l50, l100, l200 = log_abs([50.0 * side, 100.0 * side, 200.0 * side])
        if not np.isfinite(l100):
            raise ValueError(
                f"activation {name!r} overflows at |x| = 100: it grows too fast to be square-integrable "
                "under a Gaussian of any useful variance"
            )
        r1, base, at = ((l200 - l100) / 100.0, l200, 200.0) if np.isfinite(l200) else ((l100 - l50) / 50.0, l100, 100.0)
        stretch = 200.0 if r1 <= 0.05 else min(200.0, (680.0 - base) / r1)
        if r1 > 0.05 and stretch >= 10.0:
            r2 = (log_abs([side * (at + stretch)])[0] - base) / stretch  # inf if it overflowed
            if r2 > 1.5 * r1 + 0.05:
                raise ValueError(
                    f"activation {name!r} grows faster than exponentially (like exp(x**2)): E[phi(u)^2] is "
                    "infinite for large variances, so it is not square-integrable under the Gaussian"
                )
        rate = max(rate, r1 if r1 > 0.05 else 0.0)
    return float(rate)
