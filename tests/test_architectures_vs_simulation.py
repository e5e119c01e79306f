"""Gradient scales of batch-norm, layer-norm, residual and dense networks: theory against sampled networks.

Each check compares the mean-field prediction (``meanfield.gradients``) with sampled networks of
width >= 500 (``meanfield.empirical.measure_gradient_scales``, exact backpropagation) layer by
layer.  Tolerance: 4 standard errors of the estimate plus a finite-width allowance of 2/width
relative (the estimates carry an O(1/width) bias: about -1/width at B = 16 for batch norm).
"""

from __future__ import annotations

import numpy as np
import pytest

import meanfield as mf
from meanfield.empirical import measure_gradient_scales

pytestmark = pytest.mark.slow


def _agree(theory, estimate, se, width, what):
    theory, estimate, se = (np.asarray(a, dtype=float) for a in (theory, estimate, se))
    tol = 4 * se + 2.0 / width * np.abs(theory)
    bad = np.abs(estimate - theory) > tol
    assert not bad.any(), (f"{what}: layers {np.flatnonzero(bad).tolist()} theory {theory[bad]} "
                           f"vs sampled {estimate[bad]} +- {se[bad]}")


@pytest.mark.parametrize("act, sigma_w2, B", [("linear", 1.0, 8), ("relu", 2.0, 16), ("tanh", 1.0, 16),
                                              ("selu", 1.0, 32)])
def test_batch_norm_every_layer_and_gsc(act, sigma_w2, B):
    net = mf.network(act, 8, sigma_w2=sigma_w2, sigma_b2=0.1, norm="batch", batch_size=B)
    th = mf.gradient_scales(net)
    width = 800
    em = measure_gradient_scales(net, width, B, 30, np.random.default_rng(7))
    assert em.n_diverged == 0
    # inside the network the factor is lambda_G whatever sigma_w2 and sigma_b2 (Yang et al. 2019)
    assert th.factor[1:-1] == pytest.approx(float(mf.lambda_G(act, B)), rel=1e-12)
    _agree(th.factor, em.factor, em.factor_se, width, f"{act} B={B} factor")
    _agree(th.gsc, em.gsc, em.gsc_se, width, f"{act} B={B} GSC")
    _agree(th.q, em.q, em.q_se, width, f"{act} B={B} q")
    # sign diversity of what enters phi: arccos(-1/(B-1))/pi for every batch-normalised layer
    assert em.sign_diversity[1:] == pytest.approx(th.sign_diversity[1:], abs=0.01)


def test_batch_norm_explosion_rate_across_batch_sizes_relu():
    # the closed form through lambda_G against sampled networks in the middle layers, B = 8 .. 64
    for B in (8, 32, 64):
        net = mf.network("relu", 6, sigma_w2=2.0, norm="batch", batch_size=B)
        em = measure_gradient_scales(net, 600, B, 20, np.random.default_rng(B))
        mid = slice(1, 5)
        lam = float(mf.lambda_G("relu", B))
        _agree(np.full(4, lam), em.factor[mid], em.factor_se[mid], 600, f"relu B={B}")


def test_layer_norm_residual_and_dense_tanh():
    cases = {
        "layer norm": mf.network("tanh", 10, sigma_w2=1.0, norm="layer"),
        "residual": mf.network("tanh", 10, sigma_w2=1.5, sigma_b2=0.05, residual=True, sigma_v2=0.7),
        "dense": mf.network("tanh", 10, sigma_w2=2.5, sigma_b2=0.05),
        "selu": mf.network("selu", 10, sigma_w2=1.0),
    }
    for name, net in cases.items():
        th = mf.gradient_scales(net, q0=1.0, c0=0.3)
        width = 600
        em = measure_gradient_scales(net, width, 6, 30, np.random.default_rng(3), q0=1.0, c0=0.3)
        _agree(th.factor, em.factor, em.factor_se, width, f"{name} factor")
        _agree(th.gsc, em.gsc, em.gsc_se, width, f"{name} GSC")
        # correlations, sign diversity and pseudo-linearity: mean-field values within sampling noise
        assert em.c[1:] == pytest.approx(th.c[1:], abs=0.02), name
        assert em.sign_diversity == pytest.approx(th.sign_diversity, abs=0.01), name
        assert em.nonlinearity == pytest.approx(th.nonlinearity, abs=0.01), name
