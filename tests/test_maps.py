"""Maps: closed forms, broadcasting, dropout, validation."""

import numpy as np
import pytest

import meanfield as mf


def test_q_map_relu_and_erf_closed_forms():
    q = np.array([0.0, 0.5, 3.0, 40.0])
    np.testing.assert_allclose(mf.q_map(q, "relu", 1.7, 0.2), 1.7 * q / 2 + 0.2, rtol=1e-15)
    np.testing.assert_allclose(mf.q_map(q, "erf", 2.0, 0.1, method="quadrature"),
                               2.0 * 2 / np.pi * np.arcsin(2 * q / (1 + 2 * q)) + 0.1, rtol=1e-13)


def test_broadcasting_shapes_and_scalars():
    out = mf.q_map(np.ones((3, 1)), "tanh", np.array([1.0, 2.0]), 0.1)
    assert out.shape == (3, 2)
    assert isinstance(mf.q_map(1.0, "tanh", 1.0, 0.1), float)
    assert mf.q_star("tanh", np.linspace(1, 3, 4)[:, None], np.array([0.0, 0.5])).shape == (4, 2)
    with pytest.raises(ValueError, match="broadcast"):
        mf.q_map(np.ones(3), "tanh", np.ones(2), 0.1)


def test_c_map_fixed_point_and_dropout():
    # at c = 1 and q = q*, c_map(1) = 1 without dropout and < 1 with it
    assert mf.c_map(1.0, "tanh", 2.5, 0.05) == pytest.approx(1.0, abs=1e-14)
    cd = mf.c_map(1.0, "tanh", 2.5, 0.05, rho=0.8)
    qs = mf.q_star("tanh", 2.5, 0.05, rho=0.8)
    v = (qs - 0.05) / (2.5 / 0.8)
    assert cd == pytest.approx((2.5 * v + 0.05) / qs, rel=1e-13)
    assert cd < 1


def test_c_map_relu_arccos():
    c = np.linspace(-1, 1, 21)
    th = np.arccos(c)
    ref = (np.sin(th) + (np.pi - th) * c) / np.pi  # sigma_w2 = 2, sigma_b2 = 0: q is preserved
    np.testing.assert_allclose(mf.c_map(c, "relu", 2.0, 0.0, q=1.3), ref, atol=1e-15)
    np.testing.assert_allclose(mf.c_map(c, "relu", 2.0, 0.0, q=1.3, method="quadrature"), ref, atol=1e-13)


@pytest.mark.slow
def test_relu_edge_of_chaos_correlation_approach():
    # Hayou et al. 2019: on the relu edge of chaos 1 - c^l ~ 9 pi^2 / (2 l^2)
    c = 0.0
    for _ in range(2000):
        c = mf.c_map(c, "relu", 2.0, 0.0, q=1.0)
    assert 2000**2 * (1 - c) == pytest.approx(9 * np.pi**2 / 2, rel=0.02)


def test_cov_map_unequal_variances():
    q1, q2, q12 = 0.7, 3.0, 0.9
    n1, n2, n12 = mf.cov_map(q1, q2, q12, "erf", 1.5, 0.1)
    assert n1 == pytest.approx(1.5 * 2 / np.pi * np.arcsin(2 * q1 / (1 + 2 * q1)) + 0.1, rel=1e-14)
    assert n12 == pytest.approx(1.5 * 2 / np.pi * np.arcsin(2 * q12 / np.sqrt((1 + 2 * q1) * (1 + 2 * q2))) + 0.1,
                                rel=1e-14)
    t1, t2, t12 = mf.cov_map(q1, q2, q12, "tanh", 1.5, 0.1)
    import reference as R

    assert t12 == pytest.approx(1.5 * _tanh_cross(q1, q2, q12, R) + 0.1, rel=1e-10)
    with pytest.raises(ValueError, match="covariance"):
        mf.cov_map(1.0, 1.0, 1.5, "tanh", 1.0, 0.0)


def _tanh_cross(q1, q2, q12, R):
    import math

    from scipy import integrate

    s1 = math.sqrt(q1)
    beta = q12 / q1
    sd = math.sqrt(q2 - q12 * beta)

    def inner(u1):
        return integrate.quad(lambda z: math.tanh(beta * u1 + sd * z) * math.exp(-z * z / 2), -12, 12,
                              epsabs=1e-15, epsrel=1e-12)[0] / math.sqrt(2 * math.pi)

    return integrate.quad(lambda z: math.tanh(s1 * z) * inner(s1 * z) * math.exp(-z * z / 2), -12, 12,
                          epsabs=0, epsrel=1e-12)[0] / math.sqrt(2 * math.pi)


def test_chi_1_closed_forms():
    assert mf.chi_1("relu", 1.7, 0.3) == pytest.approx(0.85, rel=1e-15)
    q = mf.q_star("erf", 2.0, 0.3)
    assert mf.chi_1("erf", 2.0, 0.3) == pytest.approx(2.0 * 4 / (np.pi * np.sqrt(1 + 4 * q)), rel=1e-14)
    assert mf.chi_1("erf", 2.0, 0.3, q=0.5) == pytest.approx(2.0 * 4 / (np.pi * np.sqrt(3.0)), rel=1e-14)


def test_chi_c_at_one_is_chi_1():
    assert mf.chi_c("tanh", 1.3, 0.2, c=1.0) == pytest.approx(mf.chi_1("tanh", 1.3, 0.2), rel=1e-12)


def test_q_map_slope_matches_derivative():
    q, h = 1.3, 1e-5
    fd = (mf.q_map(q + h, "hard_tanh", 2.0, 0.1) - mf.q_map(q - h, "hard_tanh", 2.0, 0.1)) / (2 * h)
    assert mf.q_map_slope(q, "hard_tanh", 2.0, 0.1) == pytest.approx(fd, rel=1e-8)


@pytest.mark.parametrize("kwargs,match", [
    (dict(sigma_w2=-1.0, sigma_b2=0.1), "sigma_w2"),
    (dict(sigma_w2=1.0, sigma_b2=np.nan), "sigma_b2"),
    (dict(sigma_w2=np.inf, sigma_b2=0.1), "sigma_w2"),
    (dict(sigma_w2=1.0, sigma_b2=0.1, rho=0.0), "rho"),
    (dict(sigma_w2=1.0, sigma_b2=0.1, rho=1.5), "rho"),
    (dict(sigma_w2=[], sigma_b2=0.1), "empty"),
])
def test_bad_arguments_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mf.q_star("tanh", **kwargs)


def test_bad_q_and_c():
    with pytest.raises(ValueError, match="q must be"):
        mf.q_map(-0.1, "tanh", 1.0, 0.0)
    with pytest.raises(ValueError, match="c must be a correlation"):
        mf.c_map(1.2, "tanh", 1.0, 0.1)
    with pytest.raises(ValueError, match="c must be a correlation"):
        mf.c_map(np.nan, "tanh", 1.0, 0.1)
    with pytest.raises(ValueError, match="method"):
        mf.q_map(1.0, "tanh", 1.0, 0.0, method="fast")


@pytest.mark.parametrize("value,match", [
    (None, "required"), ("abc", "real number"), (1 + 2j, "real number"), ([[1, 2], [3]], "regular array"),
])
def test_malformed_arguments_are_value_errors(value, match):
    with pytest.raises(ValueError, match=f"sigma_w2 .*{match}|sigma_w2 is {match}"):
        mf.q_star("tanh", value, 0.1)


def test_public_expectation_validates():
    with pytest.raises(ValueError, match="q1"):
        mf.expectation("tanh", "phi2", -1.0)
    with pytest.raises(ValueError, match="covariance"):
        mf.expectation("tanh", "cov", 1.0, 1.0, 2.0)
    with pytest.raises(ValueError, match="single number"):
        mf.gradient_growth("tanh", depth=5, sigma_w2=[1.0, 2.0])
