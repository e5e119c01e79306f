"""Adaptive quadrature against closed forms, including where Gauss-Hermite fails."""

import warnings

import mpmath as mp
import numpy as np
import pytest
from scipy import special

from meanfield.quadrature import NODES, W_GAUSS, W_KRONROD, QuadratureWarning, expect_1d, expect_2d


def test_kronrod_rule_is_exact_to_degree_31():
    for k in range(32):
        exact = 0.0 if k % 2 else 2.0 / (k + 1)
        assert abs(W_KRONROD @ NODES**k - exact) < 1e-14
    g, w = np.polynomial.legendre.leggauss(10)
    np.testing.assert_allclose(NODES[1:20:2], g, atol=1e-15)
    np.testing.assert_allclose(W_GAUSS[1:20:2], w, atol=1e-15)


Q = np.array([1e-8, 1e-3, 0.1, 1.0, 10.0, 30.0, 100.0, 1e3, 1e4, 1e6])


def test_erf_variance_where_gauss_hermite_fails():
    exact = 2 / np.pi * np.arcsin(2 * Q / (1 + 2 * Q))
    ours = expect_1d(lambda u: special.erf(u) ** 2, 0.0, Q)
    assert np.max(np.abs(ours / exact - 1)) < 1e-13
    # the failure this replaces (DESIGN.md): 64-node Gauss-Hermite at q = 30 is off by ~4e-2
    z, w = np.polynomial.hermite_e.hermegauss(64)
    gh = (w / w.sum()) @ special.erf(np.sqrt(30.0) * z) ** 2
    assert abs(gh / exact[5] - 1) > 1e-2


def test_kinked_integrands_exact():
    np.testing.assert_allclose(expect_1d(lambda u: np.maximum(u, 0) ** 2, 0.0, Q, kinks=(0.0,)), Q / 2, rtol=1e-14)
    # hard tanh: E[clip(u)^2] = E[u^2; |u|<1] + P(|u| > 1), in closed form with erf (30 digits)
    mp.mp.dps = 30

    def closed(q):
        a = 1 / mp.sqrt(q)
        return q * (mp.erf(a / mp.sqrt(2)) - mp.sqrt(2 / mp.pi) * a * mp.exp(-a * a / 2)) + mp.erfc(a / mp.sqrt(2))

    exact = np.array([float(closed(mp.mpf(q))) for q in Q])
    ours = expect_1d(lambda u: np.clip(u, -1, 1) ** 2, 0.0, Q, kinks=(-1.0, 1.0))
    np.testing.assert_allclose(ours, exact, rtol=1e-13)


def test_nonzero_mean_and_exponential_growth():
    m, v = np.array([-3.0, 0.5, 4.0]), np.array([0.2, 2.0, 9.0])
    np.testing.assert_allclose(expect_1d(np.exp, m, v, exp_rate=1.0), np.exp(m + v / 2), rtol=1e-13)
    # E[exp(2u)] for u ~ N(0, 30): mass sits near u = 60 = 11 sd out
    np.testing.assert_allclose(expect_1d(lambda u: np.exp(2 * u), 0.0, 30.0, exp_rate=2.0), np.exp(60.0), rtol=1e-12)


def test_zero_variance_is_a_point_value():
    assert expect_1d(np.cos, 0.3, 0.0) == np.cos(0.3)
    step = lambda u: (u > 0).astype(float)  # noqa: E731
    assert expect_1d(step, 0.0, 0.0, kinks=(0.0,)) == 0.5
    assert expect_1d(step, 0.0, 0.0, kinks=(0.0,), jumps=False) == 0.0


@pytest.mark.parametrize("q1,q2,c", [
    (1.0, 1.0, 0.5), (10.0, 30.0, 0.9), (100.0, 100.0, 0.999999), (100.0, 100.0, -0.3), (0.5, 2.0, 1.0),
    (50.0, 50.0, 0.0), (3.0, 0.2, -1.0), (1e-4, 5.0, 0.7), (1e4, 1e4, 0.99),
])
def test_bivariate_against_closed_forms(q1, q2, c):
    q12 = c * np.sqrt(q1 * q2)
    williams = 2 / np.pi * np.arcsin(2 * q12 / np.sqrt((1 + 2 * q1) * (1 + 2 * q2)))
    ours = expect_2d(lambda a, b: special.erf(a) * special.erf(b), q1, q2, q12)
    assert abs(ours - williams) <= 1e-13 * max(abs(williams), 1e-3)
    th = np.arccos(c)
    arccos1 = np.sqrt(q1 * q2) * (np.sin(th) + (np.pi - th) * c) / (2 * np.pi)
    relu = expect_2d(lambda a, b: np.maximum(a, 0) * np.maximum(b, 0), q1, q2, q12, (0.0,), (0.0,))
    np.testing.assert_allclose(relu, arccos1, rtol=1e-12, atol=1e-15)
    arccos0 = (np.pi - th) / (2 * np.pi)
    step = expect_2d(lambda a, b: (a > 0) * (b > 0) * 1.0, q1, q2, q12, (0.0,), (0.0,))
    np.testing.assert_allclose(step, arccos0, rtol=1e-12, atol=1e-15)
    sin = expect_2d(lambda a, b: np.sin(a) * np.sin(b), q1, q2, q12)
    h = (q1 + q2) / 2
    assert abs(sin - 0.5 * (np.exp(q12 - h) - np.exp(-q12 - h))) < 1e-13


def test_correlation_argument_keeps_precision_near_one():
    q = 2.0
    for eps in (1e-6, 1e-9, 1e-12):
        c = 1 - eps
        # E[(u1 - u2)^2]/2 = q (1 - c) for the identity
        half = expect_2d(lambda a, b: 0.5 * (a - b) ** 2, q, q, corr=c)
        assert half == pytest.approx(q * eps, rel=1e-9)


def test_vectorised_over_many_integrals():
    q = np.linspace(0.1, 50, 37).reshape(37, 1)
    c = np.linspace(-0.99, 0.99, 5)
    ours = expect_2d(lambda a, b: special.erf(a) * special.erf(b), q, q, corr=c)
    williams = 2 / np.pi * np.arcsin(2 * c * q / (1 + 2 * q))
    assert ours.shape == (37, 5)
    np.testing.assert_allclose(ours, williams, rtol=1e-12, atol=1e-15)


def test_nan_integrand_is_an_error_not_a_number():
    with pytest.raises(FloatingPointError), np.errstate(invalid="ignore"):
        expect_1d(lambda u: np.log(u), 0.0, 1.0)


def test_unreachable_tolerance_warns():
    rng = np.random.default_rng(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(QuadratureWarning):
            expect_1d(lambda u: np.sin(u * 1e3) + 1e-3 * rng.standard_normal(u.shape), 0.0, 1.0)


def _hard_tanh_cov_mp(q1, q2, c):
    """E[clip(u1) clip(u2)] with the inner expectation in closed form, outer by mpmath."""
    mp.mp.dps = 25
    q1, q2, c = mp.mpf(q1), mp.mpf(q2), mp.mpf(c)
    beta = c * mp.sqrt(q2 / q1)
    s = mp.sqrt(q2 * (1 - c) * (1 + c))

    def inner(u1):  # E[clip(m + s Z)]
        m = beta * u1
        a, b = (-1 - m) / s, (1 - m) / s
        mid = m * (mp.ncdf(b) - mp.ncdf(a)) - s * (mp.npdf(b) - mp.npdf(a))
        return -mp.ncdf(a) + (1 - mp.ncdf(b)) + mid

    pts = sorted({-mp.inf, mp.inf, -1, 1, *(k / beta + t * s / abs(beta) for k in (-1, 1) for t in (-3, 0, 3))})
    f = lambda u: max(-1, min(1, u)) * inner(u) * mp.exp(-u * u / (2 * q1))  # noqa: E731
    return mp.quad(f, pts) / mp.sqrt(2 * mp.pi * q1)


@pytest.mark.parametrize("theta", [1e-5, 1e-3, np.pi / 4, np.pi - 1e-3, np.pi - 1e-4])
def test_kinked_bivariate_near_full_correlation(theta):
    c = np.cos(theta)
    ours = expect_2d(lambda a, b: np.clip(a, -1, 1) * np.clip(b, -1, 1), 1.0, 1.3, kinks1=(-1.0, 1.0),
                     kinks2=(-1.0, 1.0), corr=c)
    assert abs(ours - float(_hard_tanh_cov_mp(1.0, 1.3, c))) < 1e-12
