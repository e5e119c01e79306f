"""Critical line, depth scales and the all-at-once summary."""

import warnings

import numpy as np
import pytest
import reference as R

import meanfield as mf


def test_published_critical_points():
    # Schoenholz et al. 2017: tanh at sigma_b2 = 0.05 is critical at sigma_w2 ~ 1.76
    assert mf.critical_sigma_w2("tanh", 0.05) == pytest.approx(1.76, abs=5e-3)
    # tanh at sigma_b2 = 0: 1 (q* = 0); erf: pi/4 (erf'(0)^2 = 4/pi)
    assert mf.critical_sigma_w2("tanh", 0.0) == pytest.approx(1.0, rel=1e-14)
    assert mf.critical_sigma_w2("erf", 0.0) == pytest.approx(np.pi / 4, rel=1e-14)


def test_hayou_edge_of_chaos_points():
    # Hayou et al. 2019 (Monte Carlo, ~0.3% noise), given as standard deviations (sigma_b, sigma_w)
    pts = [(0.05, 1.1243), (0.2, 1.3079), (0.5, 1.5525), (1.0, 1.8576), (5.0, 3.3355)]
    sb2 = np.array([p[0] ** 2 for p in pts])
    sw2 = np.array([p[1] ** 2 for p in pts])
    np.testing.assert_allclose(mf.critical_sigma_w2("tanh", sb2), sw2, rtol=1e-2)


def test_critical_line_is_chi_1_equal_one():
    sb2 = np.array([0.01, 0.05, 0.5, 2.0, 4.0])
    for name in ["tanh", "hard_tanh", "erf", "sin"]:
        sw2 = mf.critical_sigma_w2(name, sb2)
        np.testing.assert_allclose(mf.chi_1(name, sw2, sb2), 1.0, rtol=1e-10)
    # along the q*-parametrisation, q* is the fixed point and chi_1 = 1, checked with mpmath
    q = 1.7
    sw2, sb2 = mf.critical_line("tanh", q)
    assert sw2 * float(R.D("tanh", q)) == pytest.approx(1.0, rel=1e-12)
    assert sw2 * float(R.V("tanh", q)) + sb2 == pytest.approx(q, rel=1e-12)


def test_relu_has_a_single_critical_point():
    assert mf.critical_sigma_w2("relu", 0.0) == pytest.approx(2.0, rel=1e-15)
    with pytest.warns(RuntimeWarning, match="no critical point"):
        out = mf.critical_sigma_w2("relu", [0.0, 0.3])
    assert out[0] == pytest.approx(2.0) and np.isnan(out[1])


def test_xi_c_diverges_at_the_critical_line():
    sw = mf.critical_sigma_w2("tanh", 0.05)
    xi = [mf.xi_c("tanh", sw * (1 + d), 0.05) for d in (-1e-2, -1e-3, 1e-3, 1e-2)]
    assert xi[1] > 5 * xi[0] and xi[2] > 5 * xi[3]
    # ordered side: xi_c = -1/ln chi_1 (c* = 1), checked with mpmath
    s = sw * 0.9
    q = R.q_star("tanh", s, 0.05)
    assert mf.xi_c("tanh", s, 0.05) == pytest.approx(float(-1 / np.log(float(s * R.D("tanh", q)))), rel=1e-10)
    assert mf.trainable_depth("tanh", s, 0.05) == pytest.approx(6 * mf.xi_c("tanh", s, 0.05), rel=1e-15)


def test_analyze_broadcasts_and_labels_phases():
    p = mf.analyze("tanh", np.array([0.5, 3.0])[:, None], np.array([0.0, 0.1, 0.3]))
    assert p.q_star.shape == (2, 3)
    # sigma_b2 = 0 with q* = 0: tanh is pseudo-linear there (a linear map on a vanishing signal)
    assert list(p.phase[0]) == ["pseudo-linear", "ordered", "ordered"] and list(p.phase[1]) == ["chaotic"] * 3
    d = mf.analyze("tanh", 1.5, 0.05).as_dict()
    assert isinstance(d["q_star"], float) and d["phase"] == "ordered"
    assert mf.xi_q("tanh", 1.5, 0.05) == pytest.approx(d["xi_q"])


def test_critical_line_with_dropout():
    # with dropout the line is chi_1 = 1 at the dropout fixed point q* = sigma_w2/rho V(q*) + sigma_b2
    sb2 = np.array([0.05, 0.5])
    sw2 = mf.critical_sigma_w2("tanh", sb2, rho=0.8)
    np.testing.assert_allclose(mf.chi_1("tanh", sw2, sb2, rho=0.8), 1.0, rtol=1e-10)
    assert np.all(sw2 != mf.critical_sigma_w2("tanh", sb2))


def test_critical_line_of_unbounded_activations_is_on_the_attracting_branch():
    # gelu, swish, mish have an unstable fixed point too; the critical point must be the fixed
    # point the iteration reaches (from q0 = 1), where analyze finds chi_1 = 1.
    sb2 = np.array([0.0, 0.1, 1 / 3, 1.0])
    for name in ["gelu", "swish", "mish", "elu", "hard_tanh"]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            sw2 = mf.critical_sigma_w2(name, sb2)
        ok = np.isfinite(sw2)
        assert ok.sum() >= 1
        p = mf.analyze(name, sw2[ok], sb2[ok])
        np.testing.assert_allclose(p.chi_1, 1.0, rtol=1e-9)
        assert set(p.phase) == {"critical"}
    # gelu at sigma_b2 = 0.1: the attracting branch jumps to divergence before chi_1 reaches 1
    with pytest.warns(RuntimeWarning, match="no critical point"):
        assert np.isnan(mf.critical_sigma_w2("gelu", 0.1))


def test_critical_points_of_bounded_activations_at_huge_variance():
    # tanh at sigma_b2 = 1e13: q* ~ 1e13 and chi_1 = sigma_w2 E[sech^4(sqrt(q) z)] ~ sigma_w2 (4/3) / sqrt(2 pi q)
    # (Laplace), so sigma_w2 = (3/4) sqrt(2 pi q*); the old fixed search grid ended below it ("no critical point")
    (p,) = mf.critical_points("tanh", 1e13)
    assert p.stable and p.reached
    assert p.sigma_w2 == pytest.approx(0.75 * np.sqrt(2 * np.pi * p.q_star), rel=1e-6)
    assert mf.critical_sigma_w2("tanh", 1e13) == pytest.approx(p.sigma_w2, rel=1e-12)
    sw = mf.critical_sigma_w2("tanh", 0.05, rho=1e-6)  # dropout: chi_1 = 1 at the dropout fixed point
    q = mf.q_star("tanh", sw, 0.05, rho=1e-6)
    assert mf.chi_1("tanh", sw, 0.05, q=q) == pytest.approx(1.0, rel=1e-9)
