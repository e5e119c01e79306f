"""Phase-diagram fields of layer-norm and batch-norm networks (for :func:`meanfield.phase_diagram`).

Layer norm: the normalised pre-activations have unit variance, so at every grid point the
network is ``Dense(phi, sigma_w2/q*, sigma_b2/q*)`` at its fixed point ``q = 1``, with
``q* = sigma_w2 E[phi(z)^2] + sigma_b2`` (as :func:`meanfield.analyze` with ``norm="layer"``):
c* and chi_c come from the engine's compiled c* search at ``q = 1`` (one set of Hermite
coefficients for the whole grid), the few points it cannot certify from the core.  Its critical
line ``chi_1 = sigma_w2 E[phi'(z)^2] / q* = 1`` is the straight line
``sigma_b2 = sigma_w2 (E[phi'(z)^2] - E[phi(z)^2])``.

Batch norm: q* and c* of the permutation-symmetric fixed point, ``chi_1 = lambda_G(phi, B)`` at
every point (Yang et al. 2019); no critical line (``lambda_G`` does not depend on the variances).
"""

from __future__ import annotations

import numpy as np

from .fixed_points import solve_c_star
from .layers import Dense
from .phase import classify, fields_at


def chunk(eng, act, w, b, norm, batch_size):
    """All fields for flat arrays of points ``(w, b)``, and the phase codes and fallback count."""
    n = w.size
    zero = np.zeros(n)
    if norm == "batch":
        from .batchnorm import batch_norm_fixed_point, lambda_G

        qs, cs = (np.broadcast_to(np.asarray(a, dtype=float), (n,)).copy()
                  for a in batch_norm_fixed_point(act, batch_size, w, b))
        chi1 = np.full(n, float(lambda_G(act, batch_size)))
        nan = np.full(n, np.nan)
        code = classify(chi1, qs, np.zeros(n, dtype=bool))
        return dict(q_star=qs, c_star=cs, chi_1=chi1, chi_c=nan, q_slope=zero, xi_q=zero, xi_c=nan,
                    trainable_depth=nan, gradient_factor=chi1), code, 0
    V1, D1 = (float(v[0]) for v in eng.one_dim(("phi2", "dphi2"), np.ones(1)))
    qs = w * V1 + b
    unit = Dense(act, w / qs, b / qs)
    ones = np.ones(n)
    chi1 = w * D1 / qs
    cs, chic = np.empty(n), np.empty(n)
    ordered = chi1 <= 1.0  # c* = 1 and chi_c = chi_1 (Schoenholz et al. 2017)
    cs[ordered], chic[ordered] = 1.0, chi1[ordered]
    idx = np.flatnonzero(~ordered)
    n_ref = 0
    if idx.size:
        c_i, x_i, ok = eng.c_star(w[idx] / qs[idx], ones[idx], 1.0)
        cs[idx], chic[idx] = c_i, x_i
        bad = idx[~ok]
        if bad.size:
            cs[bad], chic[bad] = solve_c_star(unit.select(bad), ones[bad])[:2]
            n_ref = bad.size
    derived, code = fields_at(unit, ones, zero, cs, chic, chi1)
    return dict(q_star=qs, c_star=cs, chi_1=chi1, chi_c=chic, **derived), code, n_ref


def critical_line(eng, sb, norm):
    """sigma_w2 on ``chi_1 = 1`` for each sigma_b2 (NaN where there is none)."""
    out = np.full(sb.size, np.nan)
    if norm == "layer":
        V1, D1 = (float(v[0]) for v in eng.one_dim(("phi2", "dphi2"), np.ones(1)))
        if D1 > V1:
            out = sb / (D1 - V1)
            out[sb == 0] = np.nan  # sigma_w2 = 0 is not a network
    return out
