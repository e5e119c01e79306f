"""Gradient scales through dense, layer-norm, residual and batch-norm networks, against closed forms and quad."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, special

import meanfield as mf
from meanfield.architecture import Layer, describe, network
from meanfield.gradients import gradient_scales

SELU_L, SELU_A = 1.0507009873554805, 1.6732632423543772


def _gauss(f, q=1.0):
    """E[f(sqrt(q) z)] by adaptive quad (independent of meanfield's quadrature)."""
    s = math.sqrt(q)
    g = lambda z: f(s * z) * math.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    return sum(integrate.quad(g, a, b, epsabs=0, epsrel=1e-13, limit=200)[0]
               for a, b in ((-np.inf, -1), (-1, 0), (0, 1), (1, np.inf)))


def _gauss2(f, c):
    """E[f(z1, z2)], unit variances, correlation c, by nested quad."""
    s = math.sqrt(1 - c * c)

    def inner(z1):
        g = lambda z2: f(z1, c * z1 + s * z2) * math.exp(-z2 * z2 / 2)  # noqa: E731
        return integrate.quad(g, -12, 12, epsabs=1e-15, epsrel=1e-12, limit=200)[0] / math.sqrt(2 * math.pi)

    return integrate.quad(lambda z1: inner(z1) * math.exp(-z1 * z1 / 2) / math.sqrt(2 * math.pi), -12, 12,
                          epsabs=1e-15, epsrel=1e-12, limit=200)[0]


tanh, dtanh = math.tanh, lambda u: 1 - math.tanh(u) ** 2


def test_layer_norm_tanh_explodes_by_E_dphi2_over_E_phi2():
    # Philipp et al. 2018: layer-norm tanh at sigma_b2 = 0 explodes by E[phi'(z)^2]/E[phi(z)^2] whatever sigma_w2
    want = _gauss(lambda u: dtanh(u) ** 2) / _gauss(lambda u: tanh(u) ** 2)
    for sw in (0.5, 1.0, 3.0):
        g = gradient_scales(network("tanh", 12, sigma_w2=sw, norm="layer"), q0=2.0)
        assert g.factor[1:] == pytest.approx(want, rel=1e-10)
        assert g.gsc_layer[1:] ** 2 == pytest.approx(want, rel=1e-10)  # q is at its fixed point after layer 1
        assert g.q[1:] == pytest.approx(sw * _gauss(lambda u: tanh(u) ** 2), rel=1e-10)
    assert want == pytest.approx(1.1778072323, rel=1e-9)


def test_layer_norm_relu_keeps_gradient_scale():
    g = gradient_scales(network("relu", 20, sigma_w2=2.0, norm="layer"))
    assert g.gsc == pytest.approx(1.0, rel=1e-12)


def test_selu_published_chi_1_at_its_fixed_point():
    # SELU at (1, 0): q* = 1 and chi_1 = lambda^2 (1/2 + alpha^2 e^2 Phi(-2)) > 1 (slightly chaotic)
    chi = SELU_L**2 * (0.5 + SELU_A**2 * math.e**2 * special.ndtr(-2.0))
    g = gradient_scales(network("selu", 30, sigma_w2=1.0), q0=1.0)
    assert g.q == pytest.approx(1.0, rel=1e-9)
    assert g.factor == pytest.approx(chi, rel=1e-10)
    assert g.overall == pytest.approx(chi ** 15, rel=1e-8)  # GSC(L, 0)^2 = chi^L at q* (q_0 = q_L)
    assert chi > 1


def test_dense_gsc_is_sqrt_chi_1_at_the_fixed_point():
    p = mf.analyze("tanh", 2.5, 0.05)
    g = gradient_scales(network("tanh", 10, sigma_w2=2.5, sigma_b2=0.05), q0=float(p.q_star))
    assert g.factor == pytest.approx(_gauss(lambda u: 2.5 * dtanh(u) ** 2, float(p.q_star)), rel=1e-10)
    assert g.gsc_layer == pytest.approx(math.sqrt(float(p.chi_1)), rel=1e-9)


def test_gsc_over_depth_from_factors_and_variances():
    # GSC(L, l)^2 = prod_{k > l} factor_k * q_l / q_L, here with q changing layer by layer (erf from q0 = 5)
    g = gradient_scales(network("erf", 8, sigma_w2=1.3, sigma_b2=0.1), q0=5.0)
    for l in range(9):
        want = math.prod(g.factor[l:]) * g.q[l] / g.q[-1]
        assert g.gsc[l] ** 2 == pytest.approx(want, rel=1e-12)
    # and the erf variance map in closed form (Williams 1997): q' = sw (2/pi) asin(2q/(1+2q)) + sb
    q = 5.0
    for l in range(8):
        q = 1.3 * 2 / math.pi * math.asin(2 * q / (1 + 2 * q)) + 0.1
        assert g.q[l + 1] == pytest.approx(q, rel=1e-12)


def test_residual_factor_and_dilution_follow_yang_schoenholz_and_philipp():
    sw, sb, sv, sa = 1.2, 0.1, 0.8, 0.05
    g = gradient_scales(network("tanh", 6, sigma_w2=sw, sigma_b2=sb, residual=True, sigma_v2=sv, sigma_a2=sa), q0=0.7)
    p = 0.7
    for k in range(6):
        q = sw * p + sb
        d, v = _gauss(lambda u: dtanh(u) ** 2, q), _gauss(lambda u: tanh(u) ** 2, q)
        assert g.factor[k] == pytest.approx(1 + sv * sw * d, rel=1e-10)
        k2, r2 = p / (sv * v + sa), sv * sw * d * p / (sv * v + sa)
        assert (g.k2[k], g.r2[k]) == pytest.approx((k2, r2), rel=1e-10)
        # the block's GSC by Philipp et al.'s dilution formula
        assert g.gsc_layer[k] ** 2 == pytest.approx((k2 + r2) / (k2 + 1), rel=1e-10)
        p = p + sv * v + sa
        assert g.q[k + 1] == pytest.approx(p, rel=1e-10)
    # effective depth: sum ln GSC_k over the mean ln r (a plain stack of the branches with the same GSC)
    g = gradient_scales(network("tanh", 40, sigma_w2=3.0, residual=True, sigma_v2=0.5))
    want = np.sum(np.log((g.k2 + g.r2) / (g.k2 + 1))) / np.mean(np.log(g.r2))
    assert g.effective_depth == pytest.approx(want, rel=1e-12)
    assert 1 < g.effective_depth < 40  # diluted: far shallower than its 40 blocks


def test_residual_relu_at_sigma_w2_2_keeps_gsc_one_while_the_gradient_doubles():
    g = gradient_scales(network("relu", 20, sigma_w2=2.0, residual=True))
    assert g.factor == pytest.approx(2.0, rel=1e-12)
    assert g.gsc == pytest.approx(1.0, rel=1e-12)


def test_sign_diversity_and_nonlinearity_closed_forms():
    # relu at (2, 0) from c0 = 0: c1 = 1/pi (arc-cosine), sign diversity arccos(c)/pi; relu's nonlinear fraction 1/2
    g = gradient_scales(network("relu", 3, sigma_w2=2.0), q0=1.0, c0=0.0)
    assert g.c[1] == pytest.approx(1 / math.pi, rel=1e-12)
    assert g.sign_diversity[0] == pytest.approx(0.5, rel=1e-12)
    assert g.sign_diversity[1] == pytest.approx(math.acos(1 / math.pi) / math.pi, rel=1e-12)
    assert g.nonlinearity == pytest.approx(0.5, rel=1e-12)
    # erf: E[erf'(u)] = 2/sqrt(pi (1 + 2q)), E[erf(u)^2] = (2/pi) asin(2q/(1+2q))
    for q in (0.01, 1.0, 30.0):
        g = gradient_scales(network("erf", 1, sigma_w2=1.0), q0=q)
        want = 1 - q * 4 / (math.pi * (1 + 2 * q)) / (2 / math.pi * math.asin(2 * q / (1 + 2 * q)))
        assert g.nonlinearity[0] == pytest.approx(want, rel=1e-10, abs=1e-14)
    assert gradient_scales(network("linear", 2, sigma_w2=1.0)).nonlinearity == pytest.approx(0.0, abs=1e-14)


def test_pseudo_linear_limit_at_zero_variance():
    # tanh at q = 0 (zero bias, sigma_w2 < 1 lets q collapse): the limit is linear, nonlinear fraction -> 0
    g = gradient_scales(network("tanh", 400, sigma_w2=0.5), q0=1.0)
    assert g.nonlinearity[-1] < 1e-12
    assert g.nonlinearity[0] == pytest.approx(
        1 - _gauss(lambda u: dtanh(u)) ** 2 / _gauss(lambda u: tanh(u) ** 2), rel=1e-10)


def test_analyze_layer_norm_matches_its_maps():
    sw, sb = 1.5, 0.2
    p = mf.analyze("tanh", sw, sb, norm="layer")
    v = _gauss(lambda u: tanh(u) ** 2)
    qs = sw * v + sb
    assert p.q_star == pytest.approx(qs, rel=1e-10)
    assert p.chi_1 == pytest.approx(sw * _gauss(lambda u: dtanh(u) ** 2) / qs, rel=1e-10)
    assert p.xi_q == 0.0 and p.norm == "layer"
    # c* is a fixed point of the layer-norm correlation map c' = (sw E[tanh z1 tanh z2] + sb) / q*
    c = float(p.c_star)
    assert (sw * _gauss2(lambda a, b: tanh(a) * tanh(b), c) + sb) / qs == pytest.approx(c, abs=1e-9)
    chi_c = sw * _gauss2(lambda a, b: dtanh(a) * dtanh(b), c) / qs
    assert p.chi_c == pytest.approx(chi_c, rel=1e-8)
    assert p.xi_c == pytest.approx(-1 / math.log(chi_c), rel=1e-7)


def test_gradient_growth_takes_the_architecture():
    gg = mf.gradient_growth("tanh", depth=10, sigma_w2=1.0, sigma_b2=0.0, norm="layer")
    want = _gauss(lambda u: dtanh(u) ** 2) / _gauss(lambda u: tanh(u) ** 2)
    assert gg.factor == pytest.approx(want, rel=1e-10)
    assert gg.overall == pytest.approx(want**10, rel=1e-9)
    assert gg.norm == "layer"


def test_describe_and_mixed_networks():
    net = network("tanh", 3, sigma_w2=1.0, norm="layer") + network("relu", 2, sigma_w2=2.0)
    assert describe(net) == "3 layer_norm tanh layers, 2 dense relu layers"
    g = gradient_scales(net)
    assert g.factor[3:] == pytest.approx(2.0 * 0.5, rel=1e-12)  # relu chi_1 = sigma_w2/2


@pytest.mark.parametrize("call, match", [
    (lambda: network("tanh", 0, sigma_w2=1.0), "depth"),
    (lambda: network("tanh", 3, sigma_w2=1.0, norm="group"), "norm"),
    (lambda: network("tanh", 3, sigma_w2=1.0, norm="batch"), "batch_size"),
    (lambda: network("tanh", 3, sigma_w2=1.0, batch_size=8), "batch_size"),
    (lambda: network("tanh", 3, sigma_w2=1.0, norm="batch", batch_size=1), "batch_size"),
    (lambda: network("tanh", 3, sigma_w2=-1.0), "sigma_w2"),
    (lambda: network("tanh", 3, sigma_w2=1.0, norm="layer", residual=True), "residual"),
    (lambda: Layer("conv", "tanh", 1.0), "kind"),
    (lambda: Layer("residual", "tanh", 1.0, rho=0.5), "dropout"),
    (lambda: gradient_scales([]), "empty"),
    (lambda: gradient_scales(["tanh"]), "Layer"),
    (lambda: gradient_scales(network("tanh", 2, sigma_w2=1.0), q0=0.0), "q0"),
    (lambda: gradient_scales(network("tanh", 2, sigma_w2=1.0), c0=1.5), "c0"),
    (lambda: gradient_scales(network("tanh", 2, sigma_w2=1.0, norm="batch", batch_size=3)), "batch_size > 3"),
    (lambda: gradient_scales(network("tanh", 2, sigma_w2=1.0, norm="batch", batch_size=8), c0=1.0), "c < 1"),
    (lambda: gradient_scales(network("tanh", 2, sigma_w2=1.0, norm="batch", batch_size=8), c0=-0.5), "-1/\\(B-1\\)"),
    (lambda: mf.analyze("tanh", 1.0, 0.0, norm="layer", rho=0.5), "dropout"),
    (lambda: mf.analyze("tanh", 0.0, 0.1, norm="layer"), "sigma_w2"),
])
def test_bad_architectures_are_refused(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_layer_norm_phase_diagram_agrees_with_analyze_and_its_critical_line_with_quad(tmp_path):
    sw, sb = np.linspace(0.3, 5, 14), np.linspace(0, 2, 9)
    pd = mf.phase_diagram("tanh", sw, sb, norm="layer")
    W, B = np.meshgrid(sw, sb)
    p = mf.analyze("tanh", W, B, norm="layer")
    for name in ("q_star", "chi_1", "chi_c", "xi_c", "trainable_depth"):
        a, b = getattr(pd, name), getattr(p, name)
        assert np.array_equal(np.isfinite(a), np.isfinite(b))
        assert a[np.isfinite(a)] == pytest.approx(b[np.isfinite(b)], rel=1e-9)
    assert np.nanmax(np.abs(pd.c_star - p.c_star)) < 1e-10
    assert (pd.phase == p.phase).all() and {"ordered", "chaotic"} <= set(pd.phase.ravel())
    # critical line: chi_1 = sw E[phi'^2] / (sw E[phi^2] + sb) = 1, with the expectations by quad
    d1, v1 = _gauss(lambda u: dtanh(u) ** 2), _gauss(lambda u: tanh(u) ** 2)
    line = pd.critical_line
    assert math.isnan(line[0])  # at sigma_b2 = 0 chi_1 = E[phi'^2]/E[phi^2] > 1 for every sigma_w2
    assert line[1:] * d1 / (line[1:] * v1 + sb[1:]) == pytest.approx(1.0, rel=1e-12)
    pd.save(tmp_path / "ln.npz")
    back = mf.load_phase_diagram(tmp_path / "ln.npz")
    assert back.norm == "layer" and back.batch_size is None
    assert np.array_equal(back.c_star, pd.c_star, equal_nan=True)


def _relu_lambda_G(B):
    # closed form for relu (orthant probability and arc-cosine moment of the elliptical sphere marginal)
    rho = -1.0 / (B - 1)
    th = math.acos(rho)
    phi12 = (math.sin(th) + (math.pi - th) * math.cos(th)) / (2 * math.pi)
    d12 = 0.25 + math.asin(rho) / (2 * math.pi)
    m = 0.5 - phi12
    return ((B - 1) * 0.5 + d12 - 0.5 + phi12) / ((B - 3) * m)


def test_batch_norm_linear_network_layer_by_layer_in_closed_form():
    B, sw, sb, q0, c0 = 8, 1.3, 0.2, 2.0, 0.25
    g = gradient_scales(network("linear", 6, sigma_w2=sw, sigma_b2=sb, norm="batch", batch_size=B), q0=q0, c0=c0)
    lam, m = (B - 2) / (B - 3), B / (B - 1)  # m = E[y1^2] - E[y1 y2]
    assert g.factor[1:-1] == pytest.approx(lam, rel=1e-12)
    assert g.factor[0] == pytest.approx(lam * sw * m / (q0 * (1 - c0)), rel=1e-12)  # input off the fixed point
    assert g.factor[-1] == pytest.approx((B - 2) * (B - 1) / (B * (B - 3)), rel=1e-12)  # i.i.d. output gradient
    assert g.q[1:] == pytest.approx(sw + sb, rel=1e-12)
    assert g.c[1:] == pytest.approx((sb - sw / (B - 1)) / (sw + sb), rel=1e-12)
    assert g.sign_diversity == pytest.approx(math.acos(-1 / (B - 1)) / math.pi, rel=1e-12)
    assert g.nonlinearity == pytest.approx(0.0, abs=1e-12)


def test_batch_norm_analyze_and_phase_diagram_relu():
    for B in (4, 16, 100):
        p = mf.analyze("relu", [1.0, 3.0], [0.0, 0.5], norm="batch", batch_size=B)
        assert p.chi_1 == pytest.approx(_relu_lambda_G(B), rel=1e-12)
        assert (p.phase == "chaotic").all() and np.isnan(p.xi_c).all()
    assert _relu_lambda_G(10**7) == pytest.approx(math.pi / (math.pi - 1), rel=1e-6)
    pd = mf.phase_diagram("relu", [0.5, 1.0, 2.0], [0.0, 0.3], norm="batch", batch_size=16)
    assert pd.chi_1 == pytest.approx(_relu_lambda_G(16), rel=1e-12)
    assert pd.q_star == pytest.approx(np.array([0.5, 1.0, 2.0]) * 0.5 + np.array([[0.0], [0.3]]), rel=1e-12)
    assert np.isnan(pd.critical_line).all() and pd.batch_size == 16
    with pytest.raises(ValueError, match="batch_size"):
        mf.phase_diagram("relu", [1.0], [0.0], norm="batch", batch_size=3)


def test_divergent_dense_networks_are_followed_past_float64():
    # relu at sigma_w2 = 3: q grows by 3/2 per layer and leaves float64 by layer ~1750; relu is homogeneous,
    # so every later layer has GSC^2 = chi_1 q_in / q_out = (3/2) / (3/2) = 1 exactly
    short = gradient_scales(network("relu", 100, sigma_w2=3.0, sigma_b2=0.1))
    deep = gradient_scales(network("relu", 3000, sigma_w2=3.0, sigma_b2=0.1))
    assert deep.diverged_at is None and np.isinf(deep.q[-1])
    assert deep.factor == pytest.approx(1.5, rel=1e-12)
    assert deep.gsc_layer[100:] == pytest.approx(1.0, rel=1e-9)
    assert deep.overall == pytest.approx(short.overall, rel=1e-9)
    assert 0.999 < deep.c[-1] <= 1.0  # correlations approach 1 under the relu c-map
    # faster than linear growth has no limit: stop and say where
    g = gradient_scales(network("exp", 30, sigma_w2=3.0, sigma_b2=0.1))
    assert g.diverged_at is not None and "float64" in g.summary()
