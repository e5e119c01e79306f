"""Closed forms against quadrature (an independent method) and against known formulas."""

import math

import numpy as np
import pytest
import sympy as sp

import meanfield as mf
from meanfield import symbolic
from meanfield.activations import activation
from meanfield.symbolic import c, q, q1, q2, q12, sigma_b2, sigma_w2

FAMILIES = ["relu", "abs", "linear", "erf", "sin", "cos", "exp", "monomial"]
RNG = np.random.default_rng(7)
Q1 = RNG.uniform(0.05, 4.0, 12)
Q2 = RNG.uniform(0.05, 4.0, 12)
C = RNG.uniform(-0.99, 0.99, 12)


@pytest.mark.parametrize("name", FAMILIES + ["leaky_relu"])
@pytest.mark.parametrize("kind", ["cov", "dcov", "half_sq_diff"])
def test_closed_form_matches_quadrature(name, kind):
    act = mf.activation(name, alpha=0.3) if name == "leaky_relu" else mf.activation(name)
    qq2 = Q1 if kind == "half_sq_diff" else Q2
    exact = mf.expectation(act, kind, Q1, qq2, C * np.sqrt(Q1 * qq2), method="exact")
    quad = mf.expectation(act, kind, Q1, qq2, C * np.sqrt(Q1 * qq2), method="quadrature")
    scale = np.sqrt(mf.expectation(act, "phi2", Q1) * mf.expectation(act, "phi2", qq2)) + 1
    assert np.max(np.abs(exact - quad) / scale) < 1e-11


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("kind", ["phi2", "dphi2", "slope"])
def test_one_dimensional_closed_forms_match_quadrature(name, kind):
    qs = np.array([1e-3, 0.3, 1.0, 2.5, 7.0])
    exact = mf.expectation(name, kind, qs, method="exact")
    quad = mf.expectation(name, kind, qs, method="quadrature")
    # the tolerance is relative to E|integrand| (O(1) here): sin's slope exp(-2q) is tiny at q = 7
    np.testing.assert_allclose(exact, quad, rtol=1e-11, atol=1e-14)


def test_published_formulas():
    erf_q_map = sigma_w2 * 2 / sp.pi * sp.asin(2 * q / (1 + 2 * q)) + sigma_b2
    assert sp.simplify(mf.closed_form("erf", "q_map") - erf_q_map) == 0
    assert sp.simplify(mf.closed_form("relu", "q_map") - (sigma_w2 * q / 2 + sigma_b2)) == 0
    assert sp.simplify(mf.closed_form("relu", "chi_1") - sigma_w2 / 2) == 0
    assert sp.simplify(mf.closed_form("erf", "chi_1") - 4 * sigma_w2 / (sp.pi * sp.sqrt(1 + 4 * q))) == 0
    # arc-cosine kernel at unit variances (Cho & Saul 2009)
    relu_cov = mf.closed_form("relu", "cov_map").subs({q1: 1, q2: 1, sigma_b2: 0, sigma_w2: 1})
    th = sp.acos(q12)
    assert sp.simplify(relu_cov - (sp.sin(th) + (sp.pi - th) * q12) / (2 * sp.pi)) == 0
    # x^3: E[u1^3 u2^3] = 9 q1 q2 q12 + 6 q12^3
    cube = mf.closed_form(mf.activation("monomial", k=3), "cov_map").subs({sigma_b2: 0, sigma_w2: 1})
    assert sp.expand(cube - (9 * q1 * q2 * q12 + 6 * q12**3)) == 0
    assert mf.closed_form("erf", "c_map").has(c)


def test_no_closed_form_and_bad_quantity():
    assert mf.closed_form("tanh", "q_map") is None
    assert mf.closed_form("x*tanh(x)", "chi_c") is None
    with pytest.raises(ValueError, match="unknown quantity"):
        mf.closed_form("erf", "q_star")
    with pytest.raises(ValueError, match="no closed form"):
        mf.expectation("tanh", "phi2", 1.0, method="exact")


def test_typed_expressions_use_closed_forms():
    # a user's max(0, x) and erf(x) are recognised: exact and quadrature agree, exact is in the table
    assert mf.closed_form("max(0, x)", "q_map") is not None
    assert mf.closed_form("2*x**2 - 1", "q_map") is not None
    v = mf.expectation("2*x**2 - 1", "phi2", 0.7, method="exact")
    assert v == pytest.approx(4 * 3 * 0.7**2 - 4 * 0.7 + 1, rel=1e-14)


def test_sin_cos_closed_forms_at_large_variances():
    # E[sin(u)^2] = (1 - exp(-2q))/2, E[cos(u)^2] = (1 + exp(-2q))/2 and
    # E[sin(u1) sin(u2)] = exp(-(q1 + q2)/2) sinh(q12): finite (no inf * 0) far beyond exp's range
    q = np.array([0.5, 700.0, 1000.0, 1e6])
    with np.errstate(over="raise", invalid="raise"):
        np.testing.assert_allclose(symbolic.numeric(activation("sin"), "phi2")(q), (1 - np.exp(-2 * q)) / 2,
                                   rtol=1e-15)
        np.testing.assert_allclose(symbolic.numeric(activation("cos"), "phi2")(q), (1 + np.exp(-2 * q)) / 2,
                                   rtol=1e-15)
        np.testing.assert_allclose(symbolic.numeric(activation("cos"), "dphi2")(q), (1 - np.exp(-2 * q)) / 2,
                                   rtol=1e-15)
        q1, q2, q12 = np.array([1000.0, 2.0, 1e5]), np.array([1000.0, 3.0, 1e5]), np.array([1000.0, 1.0, 99990.0])
        got = symbolic.numeric(activation("sin"), "cov")(q1, q2, q12)
        ref = np.array([0.5, math.exp(-2.5) * math.sinh(1.0), 0.5 * math.exp(-10.0)])  # exp(-(q1+q2)/2 + q12)/2
        # (last entry: the exponent -10 comes from c = q12 / sqrt(q1 q2) times 1e5, so rounding of c
        # is amplified to ~1e-11 relative)
        np.testing.assert_allclose(got, ref, rtol=1e-10)


def test_erf_slope_keeps_its_precision_at_large_variance():
    # d/dq (2/pi) asin(2q/(1+2q)) = 4 / (pi (1 + 2q) sqrt(1 + 4q)), without cancellation
    for v in (1e-6, 1.0, 1e6, 1e8, 1e12):
        exact = 4 / (np.pi * (1 + 2 * v) * np.sqrt(1 + 4 * v))
        assert mf.q_map_slope(v, "erf", 1.0, 0.0) == pytest.approx(exact, rel=1e-13)
