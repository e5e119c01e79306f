"""The core theory against sampled finite networks (width 1000), for activations without closed forms.

meanfield.empirical never calls the theory; here the theory's layer-by-layer predictions
(q_map, cov_map, chi_1 at the layer's q) are compared with the simulation at 99.9% family-wise
confidence, in the ordered and the chaotic phase.  A 5% error in sigma_w2 on the theory side must
fail the same comparison (power check).

Layer l (l = 0..L-1; layer 0 is the input layer's pre-activation h^0 = W^0 x + b^0) is index l of the
simulation's records, index l of propagate started from q^0, and nngp(depth=l); a theory shifted by
one layer must fail.
"""

import numpy as np
import pytest

import meanfield as mf
from meanfield import empirical as emp

CASES = [("tanh", 1.2, 0.05), ("tanh", 3.0, 0.3), ("hard_tanh", 3.0, 0.1), ("gelu", 1.5, 0.1)]


def _theory(name, sw, sb, x, depth):
    d = x.shape[1]
    k = x @ x.T / d
    q1, q2, q12 = sw * k[0, 0] + sb, sw * k[1, 1] + sb, sw * k[0, 1] + sb  # layer 0: h^0 = W^0 x + b^0
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


@pytest.mark.slow
def test_one_layer_numbering_for_theory_and_simulation():
    """Layer l is the same layer everywhere: sim.q[:, l], propagate(q0=q^0).q[l] and nngp(depth=l).

    Layer 0 is the input layer's pre-activation h^0 = W^0 x + b^0 with q^0 = sigma_w2 |x|^2 / d_in
    + sigma_b2 (Lee et al. 2018, eq. 6).  Theory shifted by one layer must fail the same comparison.
    """
    name, sw, sb, L, width, n = "tanh", 2.0, 0.2, 5, 1000, 16
    rng = np.random.default_rng(20180)
    x = rng.standard_normal((2, 50))
    x[1] = 0.5 * (0.6 * x[0] + 0.8 * x[1])  # |x_1|^2 / d_in about 1/4, correlated with x_0
    q0 = sw * np.sum(x * x, axis=1) / x.shape[1] + sb  # q^0 of each input
    spec = emp.NetworkSpec(name, sigma_w2=sw, sigma_b2=sb, width=width, depth=L)
    assert list(spec.widths) == [width] * L
    sim = emp.simulate(spec, x, n, 7, gradients=False)
    np.testing.assert_array_equal(sim.layers, np.arange(L))

    # q^l of input 0: propagate's index l against sim.q[:, l, 0], l = 0..L-1 (one extra layer for the shift)
    q_th = mf.propagate(name, q0=q0[0], c0=1.0, depth=L, sigma_w2=sw, sigma_b2=sb).q
    assert q_th[0] == pytest.approx(q0[0])
    cmp = emp.compare(q_th[:L], sim.q[:, :, 0], confidence=0.999, rtol=2e-3, label="q^l")
    assert cmp.passed, cmp.summary()
    np.testing.assert_array_equal(cmp.layers, np.arange(L))
    late = emp.compare(q_th[1:], sim.q[:, :, 0], confidence=0.999, rtol=2e-3)  # theory one layer ahead
    early = emp.compare(q_th[:L - 1], sim.q[:, 1:, 0], confidence=0.999, rtol=2e-3)  # one layer behind
    assert not late.passed and not early.passed, (late.summary(), early.summary())

    # the empirical NNGP at layer l against nngp(depth=l): entries (0, 0), (0, 1), (1, 1) of every layer
    iu = np.triu_indices(2)
    K_th = np.stack([mf.nngp(x, act=name, depth=l, sigma_w2=sw, sigma_b2=sb)[iu] for l in range(L + 1)])
    np.testing.assert_allclose(K_th[0], (sw * x @ x.T / x.shape[1] + sb)[iu], rtol=1e-12)  # K^0
    est = [emp.empirical_nngp(spec, x, n, 7, layer=l, return_samples=True) for l in range(L)]
    for l in range(L):  # the same networks as sim: layer l of the estimate is sim's layer l
        np.testing.assert_array_equal(est[l].samples, sim.q12[:, l])
    samples = np.concatenate([e.samples[:, iu[0], iu[1]] for e in est], axis=1)  # (n, L * 3), layer-major
    layers = np.repeat(np.arange(L), 3)
    cmp = emp.compare(K_th[:L].ravel(), samples, confidence=0.999, rtol=2e-3, layers=layers, label="NNGP")
    assert cmp.passed, cmp.summary()
    assert not emp.compare(K_th[1:].ravel(), samples, confidence=0.999, rtol=2e-3).passed
    assert not emp.compare(K_th[:L - 1].ravel(), samples[:, 3:], confidence=0.999, rtol=2e-3).passed
    # default layer: the output layer L-1
    np.testing.assert_allclose(emp.empirical_nngp(spec, x, 2, 7).mean, est[L - 1].samples[:2].mean(0), rtol=1e-14)
