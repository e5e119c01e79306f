"""Fixed points and depth scales against closed forms, published values and independent quadrature.

Accuracy contract (issue: core theory): relative error <= 1e-9 for q_star, chi_1, c_star, xi_q
and <= 1e-7 for xi_c away from the critical line, for smooth and kinked activations, over
sigma_w2 in [0.1, 25] and sigma_b2 in [0, 4] wherever q_star is finite.  References: mpmath at
30 digits (1-D) and nested scipy quad (2-D) in tests/reference.py, written independently.
"""

import warnings

import mpmath as mp
import numpy as np
import pytest
import reference as R

import meanfield as mf

GRID = [(0.1, 0.0), (0.5, 0.3), (1.2, 2.0), (2.5, 1.0), (10.0, 2.0), (25.0, 4.0), (25.0, 0.0)]
SMOOTH = ["tanh", "sigmoid", "softplus", "gelu", "swish", "mish", "sin"]
KINKED = ["hard_tanh", "elu", "selu", "relu"]


def _rel(a, b):
    a, b = float(a), float(b)
    return abs(a - b) / abs(b) if b != 0 else abs(a)


@pytest.mark.slow
@pytest.mark.parametrize("name", SMOOTH + KINKED)
def test_one_dimensional_quantities_match_mpmath(name):
    if name == "relu":
        pytest.skip("closed form: tested in test_relu_closed_forms")
    for sw, sb in GRID:
        point = mf.analyze(name, sw, sb)
        if not np.isfinite(point.q_star):
            continue
        qr = R.q_star(name, sw, sb)
        if abs(qr) < 1e-40:  # the reference solver's rendering of q* = 0
            qr = mp.mpf(0)
        assert _rel(point.q_star, qr) < 1e-9, (name, sw, sb)
        assert _rel(point.chi_1, sw * R.D(name, qr)) < 1e-9, (name, sw, sb)
        slope_ref = sw * R.slope(name, qr)
        if abs(slope_ref) > 1e-8:  # sin at large q: the slope exp(-2q) is below the absolute accuracy
            xi_ref = -1 / mp.log(abs(slope_ref))
            assert _rel(point.xi_q, xi_ref) < 1e-9, (name, sw, sb)


CHAOTIC = [("tanh", 2.5, 0.05), ("tanh", 25.0, 4.0), ("tanh", 4.0, 0.0), ("hard_tanh", 4.0, 0.5),
           ("hard_tanh", 25.0, 1.0), ("sin", 4.0, 0.5), ("hard_tanh", 1.5, 0.0), ("erf", 10.0, 2.0)]


@pytest.mark.parametrize("name,sw,sb", CHAOTIC)
def test_c_star_and_xi_c_in_the_chaotic_phase(name, sw, sb):
    p = mf.analyze(name, sw, sb)
    assert p.phase == "chaotic"
    assert abs(p.chi_1 - 1) > 1e-2
    ref_name = "erf" if name == "erf" else name
    # c* solves c = c_map(c): the residual with an independent integrator bounds the error of c*
    resid = R.c_star_residual(ref_name, sw, sb, p.q_star, p.c_star)
    assert abs(resid) < 1e-10 * abs(1 - p.chi_c)
    chi_c_ref = sw * R.E2(ref_name, p.q_star, p.c_star, deriv=True)
    assert _rel(p.chi_c, chi_c_ref) < 1e-10
    assert _rel(p.xi_c, -1 / np.log(chi_c_ref)) < 1e-7
    assert p.trainable_depth == pytest.approx(6 * p.xi_c, rel=1e-15)


@pytest.mark.slow
def test_c_star_against_an_independent_root():
    # full independent solve (brentq on the nested-quad c-map) for one smooth and one kinked case
    for name, sw, sb in [("tanh", 2.5, 0.05), ("hard_tanh", 4.0, 0.5)]:
        qs = float(R.q_star(name, sw, sb))
        c_ref = R.brentq(lambda c: R.c_star_residual(name, sw, sb, qs, c), 0.0, 0.99)
        assert mf.c_star(name, sw, sb) == pytest.approx(c_ref, rel=1e-9)


def test_relu_closed_forms():
    sw = np.array([0.1, 0.5, 1.0, 1.5, 1.9, 1.99])
    sb = np.array([0.0, 0.3, 4.0])[:, None]
    np.testing.assert_allclose(mf.q_star("relu", sw, sb), sb / (1 - sw / 2) + 0 * sw, rtol=1e-12)
    np.testing.assert_allclose(mf.q_star("relu", sw, sb, method="quadrature"), sb / (1 - sw / 2) + 0 * sw,
                               rtol=1e-11)
    np.testing.assert_allclose(mf.chi_1("relu", sw, 0.3), sw / 2, rtol=1e-15)
    # brain-research/nngp: q* = 4.0 at sigma_w2 = 1.9, sigma_b2 = 0.2
    assert mf.q_star("relu", 1.9, 0.2) == pytest.approx(4.0, rel=1e-13)


def test_divergent_variance_is_inf_not_nan():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = mf.analyze("relu", np.array([2.5, 25.0]), 0.1)
        g = mf.analyze("gelu", 25.0, 4.0)
    assert np.all(np.isinf(p.q_star)) and np.all(p.phase == "divergent")
    np.testing.assert_allclose(p.chi_1, [1.25, 12.5])  # sigma_w2 (phi'(+inf)^2 + phi'(-inf)^2) / 2
    np.testing.assert_array_equal(p.c_star, [1.0, 1.0])  # the arc-cosine map's fixed point
    assert np.isinf(g.q_star) and g.chi_1 == pytest.approx(12.5) and not np.isnan(g.xi_c)
    assert mf.q_star("relu", 2.0, 0.5) == np.inf
    assert mf.q_star("relu", 2.0, 0.0) == 1.0  # marginal: every q is fixed; the input's q0 = 1 stays


def test_dropout_limits_xi_c():
    # Schoenholz et al. 2017, Sec. 5: with dropout c* < 1 and xi_c stays finite at the critical point
    sw = mf.critical_sigma_w2("tanh", 0.05)
    full = mf.analyze("tanh", sw, 0.05)
    drop = mf.analyze("tanh", sw, 0.05, rho=0.95)
    assert full.xi_c > 1e6
    assert drop.c_star < 1 and 1 < drop.xi_c < 100
    qs = drop.q_star
    v = (qs - 0.05) / (sw / 0.95)
    cm = (sw * R.E2("tanh", qs, drop.c_star) + 0.05) / qs
    assert abs(cm - drop.c_star) < 1e-10
    assert abs(v - float(R.V("tanh", qs))) < 1e-10


def test_symmetric_chaos_and_zero_variance():
    # odd phi, sigma_b2 = 0, chaotic: c* = 0 by symmetry; ordered: q* = 0 and the network is
    # pseudo-linear (c -> c): no single c*, correlations freeze, chi_c = 1
    assert abs(mf.c_star("tanh", 3.0, 0.0)) < 1e-12
    p = mf.analyze("tanh", 0.8, 0.0)
    assert p.q_star == 0.0 and np.isnan(p.c_star) and p.chi_c == 1.0 and p.phase == "pseudo-linear"
    assert p.chi_1 == pytest.approx(0.8, rel=1e-15)
    assert p.xi_q == pytest.approx(-1 / np.log(0.8), rel=1e-14)


def test_full_output_reports_convergence():
    q, info = mf.q_star("tanh", [1.5, 3.0], 0.05, full_output=True)
    assert info.converged.all() and not info.diverged.any()
    assert np.all(np.abs(info.slope) < 1)
    np.testing.assert_allclose(info.slope, mf.q_map_slope(q, "tanh", [1.5, 3.0], 0.05), rtol=1e-14)
    c, cinfo = mf.c_star("tanh", [0.5, 3.0], 0.05, full_output=True)
    assert cinfo.converged.all()
    assert cinfo.iterations[0] == 0 and cinfo.iterations[1] > 3  # ordered: c* = 1 needs no search
    assert cinfo.slope[1] == pytest.approx(mf.chi_c("tanh", 3.0, 0.05), rel=1e-14)


def test_q_star_is_a_fixed_point_of_q_map():
    sw = np.linspace(0.3, 20, 9)
    for name in ["tanh", "hard_tanh", "elu", "softplus"]:
        qs = mf.q_star(name, sw, 0.4)
        fin = np.isfinite(qs)
        np.testing.assert_allclose(mf.q_map(qs[fin], name, sw[fin], 0.4), qs[fin], rtol=1e-13)


def test_exponential_growth_fixed_point_and_overflow():
    # phi = exp(x) + 1/2: E[phi^2] = e^{2q} + e^{q/2} + 1/4 in closed form.  From q0 = 0.5 the
    # iteration reaches the stable root near 0.572; from q0 = 1 (beyond the unstable root) it diverges.
    from scipy import optimize

    ref = optimize.brentq(lambda q: 0.1 * (np.exp(2 * q) + np.exp(q / 2) + 0.25) + 0.1 - q, 0.5, 0.7, xtol=1e-15)
    assert mf.q_star("exp(x) + 0.5", 0.1, 0.1, q0=0.5) == pytest.approx(ref, rel=1e-12)
    assert mf.q_star("exp(x) + 0.5", 0.1, 0.1, q0=1.0) == np.inf
    for expr in ("2*exp(x)", "x*exp(x)", "cosh(x)"):
        assert mf.q_star(expr, 0.5, 0.1) == np.inf  # the integrand overflows: a result, not a crash


def test_near_marginal_relu_is_found_quickly():
    q, info = mf.q_star("relu", [1.999, 1.99], [0.1, 0.3], full_output=True)
    np.testing.assert_allclose(q, [0.1 / (1 - 1.999 / 2), 0.3 / (1 - 1.99 / 2)], rtol=1e-12)
    assert info.iterations.max() < 20


def test_zero_bias_with_dropout_is_the_zero_bias_network_not_the_small_bias_limit():
    # at sigma_b2 = 0 (q* = 0) c* is that of the zero-bias network: relu is scale invariant, so
    # c' = rho J1(c) / J1(1) exactly at every layer (arc-cosine J1, Cho & Saul 2009)
    for name, sw in [("relu", 1.0), ("tanh", 0.4), ("abs", 0.5), ("leaky_relu", 1.0)]:
        c0 = mf.c_star(name, sw, 0.0, rho=0.9)
        assert mf.c_map(c0, name, sw, 0.0, q=0.0, rho=0.9) == pytest.approx(c0, rel=1e-12, abs=1e-14)
        # the sigma_b2 -> 0+ limit differs, and analyze reports it beside the answer
        p = mf.analyze(name, sw, 0.0, rho=0.9)
        assert p.c_star_small_bias == pytest.approx(mf.c_star(name, sw, 1e-12, rho=0.9), rel=1e-9, abs=1e-12)
        assert abs(p.c_star_small_bias - c0) > 0.05
    th = np.arccos(c0 := mf.c_star("relu", 1.0, 0.0, rho=0.9))
    assert 0.9 * (np.sin(th) + (np.pi - th) * c0) / np.pi == pytest.approx(c0, rel=1e-12)
    # tanh is smooth at 0: the zero-bias network is pseudo-linear, c' = rho c, so c* = 0, chi_c = rho
    p = mf.analyze("tanh", 0.4, 0.0, rho=0.9)
    assert p.phase == "pseudo-linear" and abs(p.c_star) < 1e-12 and p.chi_c == pytest.approx(0.9, rel=1e-12)


def test_bounded_activations_never_count_as_divergent():
    # tanh at sigma_w2 = 1e31: q* = sigma_w2 E[tanh^2] ~ sigma_w2 (1 - O(q^-1/2)), far above the divergence
    # ceiling of unbounded activations; chi_1 from Laplace's method: E[sech^4(sqrt(q) z)] ~ (4/3) / sqrt(2 pi q)
    p = mf.analyze("tanh", 1e31, 0.0)
    assert p.phase == "chaotic" and p.q_star == pytest.approx(1e31, rel=1e-12)
    assert p.chi_1 == pytest.approx(1e31 * (4 / 3) / np.sqrt(2 * np.pi * 1e31), rel=1e-6)
    assert mf.q_star("sigmoid", 1e31, 0.0) == pytest.approx(0.5e31, rel=1e-12)
    assert mf.phase_diagram("tanh", [1e31], [0.0]).q_star[0, 0] == pytest.approx(1e31, rel=1e-12)
    assert mf.q_star("relu", 3.0, 0.1) == np.inf  # unbounded activations still diverge
