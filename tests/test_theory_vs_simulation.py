"""The core theory against sampled finite networks (width 1000), for activations without closed forms.

meanfield.empirical never calls the theory; here the theory's layer-by-layer predictions
(q_map, cov_map, chi_1 at the layer's q) are compared with the simulation at 99.9% family-wise
confidence, in the ordered and the chaotic phase.  A 5% error in sigma_w2 on the theory side must
fail the same comparison (power check).
"""

import numpy as np
import pytest

import meanfield as mf
from meanfield import empirical as emp

CASES = [("tanh", 1.2, 0.05), ("tanh", 3.0, 0.3), ("hard_tanh", 3.0, 0.1), ("gelu", 1.5, 0.1)]


def _theory(name, sw, sb, x, depth):
    d = x.shape[1]
    k = x @ x.T / d
    q1, q2, q12 = sw * k[0, 0] + sb, sw * k[1, 1] + sb, sw * k[0, 1] + sb  # layer 1
    qs, cs, chis = [], [], []
    for _ in range(depth):
        qs.append(q1)
        cs.append(q12 / np.sqrt(q1 * q2))
        chis.append(mf.chi_1(name, sw, sb, q=q1))
        q1, q2, q12 = mf.cov_map(q1, q2, q12, name, sw, sb)
    return np.array(qs), np.array(cs), np.array(chis)


@pytest.mark.slow
@pytest.mark.parametrize("name,sw,sb", CASES)
def test_layer_by_layer_agreement(name, sw, sb):
    rng = np.random.default_rng(20261126)
    depth, width = 8, 1000
    x = rng.standard_normal((2, 50))
    x[1] = 0.6 * x[0] + 0.8 * x[1]
    q_th, c_th, chi_th = _theory(name, sw, sb, x, depth)
    spec = emp.NetworkSpec(name, sigma_w2=sw, sigma_b2=sb, width=width, depth=depth)
    sim = emp.simulate(spec, x, 16, rng)
    assert emp.compare(q_th, sim.q[:, :, 0], confidence=0.999, rtol=2e-3).passed
    assert emp.compare(c_th, sim.c[:, :, 0, 1], confidence=0.999, atol=2e-3).passed
    ratio = sim.gradient_ratio(inputs=0)
    assert emp.compare(chi_th[:-1], ratio, confidence=0.999, rtol=5e-3).passed
    # power: the same comparison rejects a theory with sigma_w2 off by 5%
    q_bad, _, _ = _theory(name, sw * 1.05, sb, x, depth)
    assert not emp.compare(q_bad, sim.q[:, :, 0], confidence=0.999, rtol=2e-3).passed
