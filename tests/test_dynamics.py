"""Layer-by-layer propagation and gradient growth, against closed forms and independent recursions."""

from __future__ import annotations

import math

import numpy as np
import pytest

import meanfield as mf
from meanfield.dynamics import describe_factor, gradient_growth, propagate


def _relu_c_map(c):
    # arc-cosine kernel (Cho & Saul 2009): E[relu(u1) relu(u2)] / sqrt(q1 q2)
    theta = np.arccos(np.clip(c, -1, 1))
    return (np.sin(theta) + (np.pi - theta) * np.cos(theta)) / (2 * np.pi)


def test_relu_propagation_matches_closed_form_recursion():
    w, b, depth = 1.5, 0.3, 30
    p = propagate("relu", q0=2.0, c0=0.2, depth=depth, sigma_w2=w, sigma_b2=b)
    q, c = 2.0, 0.2
    for layer in range(1, depth + 1):
        q12 = w * q * _relu_c_map(c) + b
        q = w * q / 2 + b
        c = q12 / q
        assert p.q[layer] == pytest.approx(q, rel=1e-13)
        assert p.c[layer] == pytest.approx(c, rel=1e-12)
    q_star = b / (1 - w / 2)  # closed form; q^l - q* shrinks by sigma_w2/2 per layer
    assert p.q[-1] == pytest.approx(q_star + (2.0 - q_star) * (w / 2) ** depth, rel=1e-12)


def test_relu_edge_of_chaos_correlation_approaches_one_polynomially():
    # Hayou et al. 2019: at (sigma_b2, sigma_w2) = (0, 2), 1 - c^l ~ 9 pi^2 / (2 l^2)
    p = propagate("relu", q0=1.0, c0=0.1, depth=2000, sigma_w2=2.0, sigma_b2=0.0)
    layer = 2000
    assert (1 - p.c[layer]) * layer**2 / (9 * np.pi**2 / 2) == pytest.approx(1.0, rel=0.05)


def test_tanh_propagation_converges_to_analyze_fixed_points():
    p = propagate("tanh", q0=0.5, c0=0.3, depth=60, sigma_w2=2.5, sigma_b2=0.1)
    ref = mf.analyze("tanh", 2.5, 0.1)
    assert p.q[-1] == pytest.approx(ref.q_star, rel=1e-10)
    # c approaches c* geometrically, by chi_c per layer (Schoenholz et al. 2017, eq. 8)
    gap = p.c - ref.c_star
    assert abs(gap[-1]) < abs(gap[0]) * 0.05
    assert gap[-1] / gap[-2] == pytest.approx(ref.chi_c, rel=1e-3)


def test_propagation_with_unequal_variances_and_dropout():
    p = propagate("erf", q0=(0.5, 2.0), c0=0.4, depth=3, sigma_w2=1.5, sigma_b2=0.1, rho=0.8)
    # first layer by the Williams (1997) closed form
    q1, q2, q12 = 0.5, 2.0, 0.4 * 1.0
    cov = 2 / np.pi * np.arcsin(2 * q12 / np.sqrt((1 + 2 * q1) * (1 + 2 * q2)))
    v1 = 2 / np.pi * np.arcsin(2 * q1 / (1 + 2 * q1))
    assert p.q1[1] == pytest.approx(1.5 / 0.8 * v1 + 0.1, rel=1e-13)
    assert p.q12[1] == pytest.approx(1.5 * cov + 0.1, rel=1e-13)
    assert p.c[1] == pytest.approx(p.q12[1] / np.sqrt(p.q1[1] * p.q2[1]), rel=1e-14)


def test_propagation_broadcasts():
    p = propagate("erf", q0=1.0, c0=np.array([0.1, 0.5, 0.9]), depth=4, sigma_w2=np.array([[1.0], [2.0]]))
    assert p.c.shape == (5, 2, 3)
    single = propagate("erf", q0=1.0, c0=0.5, depth=4, sigma_w2=2.0)
    np.testing.assert_allclose(p.c[:, 1, 1], single.c, rtol=1e-14)


def test_gradient_growth_plain_is_chi1_per_layer():
    g = gradient_growth("tanh", depth=70, sigma_w2=2.5, sigma_b2=0.05)
    ref = mf.analyze("tanh", 2.5, 0.05)
    assert g.factor == pytest.approx(ref.chi_1, rel=1e-12)
    np.testing.assert_allclose(g.per_layer, ref.chi_1, rtol=1e-12)
    np.testing.assert_allclose(g.total, ref.chi_1 ** np.arange(1, 71), rtol=1e-11)
    assert g.regime == "exploding"
    assert g.depth_for(1e3) == math.ceil(math.log(1e3) / math.log(ref.chi_1))
    assert g.depth_for(1e9) == math.ceil(math.log(1e9) / math.log(ref.chi_1))  # beyond depth: extrapolated
    assert g.summary().startswith("the squared gradient norm grows x1.13 per layer: x")


def test_gradient_growth_dropout_and_vanishing():
    g = gradient_growth("erf", depth=50, sigma_w2=0.6, sigma_b2=0.1, rho=0.9)
    q = mf.q_star("erf", 0.6, 0.1, rho=0.9)
    chi1 = 0.6 * 4 / (np.pi * np.sqrt(1 + 4 * q))  # Williams closed form of E[erf'^2]
    assert g.factor == pytest.approx(chi1 / 0.9, rel=1e-12)
    assert g.regime == "vanishing"
    assert g.depth_for(1e-3) == math.ceil(math.log(1e-3) / math.log(chi1 / 0.9))
    assert "shrink" in g.summary()


def test_gradient_growth_from_input_variance_follows_q_map():
    g = gradient_growth("relu", depth=5, sigma_w2=1.5, sigma_b2=0.2, q0=3.0)
    q = 3.0
    for i in range(5):
        assert g.q[i] == pytest.approx(q, rel=1e-14)
        q = 1.5 * q / 2 + 0.2
    np.testing.assert_allclose(g.per_layer, 0.75, rtol=1e-14)  # relu: chi_1 = sigma_w2 / 2


def test_residual_gradient_growth_recursion_erf():
    # Yang & Schoenholz 2017 with erf's closed forms, computed independently here
    sw, sb, sv, sa, depth = 1.5, 0.05, 1.0, 0.02, 40
    g = gradient_growth("erf", depth=depth, sigma_w2=sw, sigma_b2=sb, residual=True, sigma_v2=sv, sigma_a2=sa)
    p, factors = 1.0, []
    for _ in range(depth):
        q = sw * p + sb
        factors.append(1 + sv * sw * 4 / (np.pi * np.sqrt(1 + 4 * q)))
        p = p + sv * 2 / np.pi * np.arcsin(2 * q / (1 + 2 * q)) + sa
    np.testing.assert_allclose(g.per_layer, factors, rtol=1e-13)
    np.testing.assert_allclose(g.total, np.cumprod(factors), rtol=1e-12)


def test_residual_tanh_growth_is_subexponential():
    g = gradient_growth("tanh", depth=800, sigma_w2=1.5, sigma_b2=0.05, residual=True)
    log_total = np.log(g.total)
    # exp(C sqrt(l)): quadrupling the depth doubles log growth; exponential would quadruple it
    ratio = log_total[799] / log_total[199]
    assert 1.7 < ratio < 2.4
    assert np.all(np.diff(g.per_layer) < 0)  # the per-layer factor decays towards 1


def test_describe_factor_words():
    assert describe_factor(1.13, 70) == "the squared gradient norm grows x1.13 per layer: x5.2e3 over 70 layers"
    assert describe_factor(0.5, 10) == "the squared gradient norm shrinks x0.5 per layer: x9.8e-4 over 10 layers"


def test_bad_inputs():
    with pytest.raises(ValueError, match="depth"):
        propagate("tanh", depth=0)
    with pytest.raises(ValueError, match="correlation"):
        propagate("tanh", c0=1.5)
    with pytest.raises(ValueError, match="sigma_w2"):
        gradient_growth("tanh", sigma_w2=-1.0)
    with pytest.raises(ValueError, match="factor"):
        gradient_growth("tanh", depth=5).depth_for(1.0)
    with pytest.raises(ValueError, match="diverges"):
        gradient_growth("relu", depth=5, sigma_w2=3.0, sigma_b2=0.1)


def test_absurd_depths_are_refused_before_allocating():
    # 1e9 layers of four float64 arrays is 32 GB: refused with the size, at once
    with pytest.raises(ValueError, match=r"propagate would need 32 GB .* memory_limit"):
        propagate("tanh", depth=10**9)
    with pytest.raises(ValueError, match=r"gradient_growth would need 32 GB"):
        gradient_growth("tanh", depth=10**9)
    with pytest.raises(ValueError, match="memory_limit must be a positive number"):
        propagate("tanh", depth=5, memory_limit=float("nan"))
    assert propagate("tanh", depth=5, memory_limit=1e6).q.shape == (6,)


def test_divergent_variance_past_float64_keeps_an_exact_correlation():
    # relu, sigma_w2 = 3: q grows x1.5 per layer and passes 1.8e308 near layer 1750. Once the bias
    # is negligible (q ~ 1e17 at layer 100) the correlation follows the normalised arc-cosine map
    # c' = (sqrt(1 - c^2) + (pi - arccos c) c) / pi exactly; iterate it independently from there.
    r = propagate("relu", q0=1.0, c0=0.5, depth=2000, sigma_w2=3.0, sigma_b2=0.1)
    assert np.isinf(r.q[-1]) and np.all(np.isfinite(r.c)) and np.all(np.diff(r.c[100:]) >= 0)
    c = r.c[100]
    for _ in range(1900):
        c = (np.sqrt(1 - c * c) + (np.pi - np.arccos(c)) * c) / np.pi
    assert r.c[-1] == pytest.approx(c, abs=1e-9)


def test_gradient_growth_past_float64_range_and_residual_wording():
    # relu at sigma_w2 = 3 from q0 = 1: q passes 1.8e308 near layer 1750; chi_1 = sigma_w2 / 2 at every q
    g = gradient_growth("relu", depth=3000, sigma_w2=3.0, sigma_b2=0.1, q0=1.0)
    assert np.isinf(g.q[-1]) and np.allclose(g.per_layer, 1.5, rtol=1e-12, atol=0)
    # exp grows faster than linearly: chi_1 is inf once the variance is, with no crash
    assert gradient_growth("exp", depth=50, sigma_w2=3.0, sigma_b2=0.1, q0=1.0).per_layer[-1] == np.inf
    # residual relu: the factor 1 + sigma_v2 sigma_w2 / 2 is the same at every layer: exponential, not "sub-"
    r = gradient_growth("relu", depth=100, sigma_w2=3.0, sigma_b2=0.0, residual=True)
    assert np.allclose(r.per_layer, 2.5, rtol=1e-12) and "grows exponentially: x2.5 per layer" in r.summary()
    t = gradient_growth("tanh", depth=100, sigma_w2=2.5, sigma_b2=0.05, residual=True)
    assert "sub-exponentially" in t.summary()


@pytest.mark.parametrize("call, match", [
    (lambda: mf.expectation("tanh", "phi2", 1.0, rtol=-1), "rtol"),
    (lambda: mf.expectation("tanh", "phi2", 1.0, rtol=float("nan")), "rtol"),
    (lambda: gradient_growth("tanh", sigma_v2=[1, 2], residual=True), "sigma_v2 must be a single number"),
    (lambda: gradient_growth("tanh", q0=[1, 2]), "q0 must be a single number"),
])
def test_secondary_arguments_are_checked(call, match):
    with pytest.raises(ValueError, match=match):
        call()
