"""Finite-width theory of a pair of inputs: against the one-input theory, exact derivatives and sampled networks."""

import math

import numpy as np
import pytest
import sympy as sp
from scipy import integrate

import meanfield as mf
from meanfield.finite_width_pair import finite_width_pair


@pytest.mark.parametrize("act, sw, sb", [("tanh", 1.5, 0.05), ("gelu", 2.0, 0.1), ("erf", 3.0, 0.0)])
def test_diagonal_is_the_one_input_theory(act, sw, sb):
    r = finite_width_pair(act, 6, widths=[20, 30, 25, 40, 30, 50], sigma_w2=sw, sigma_b2=sb, q1=1.2, q2=0.7, q12=0.3)
    for col, q0 in ((0, 1.2), (2, 0.7)):
        f = mf.finite_width(act, 6, widths=[20, 30, 25, 40, 30, 50], sigma_w2=sw, sigma_b2=sb, q0=q0)
        np.testing.assert_allclose(r.K[:, col], f.K, rtol=1e-14)
        np.testing.assert_allclose(r.V[:, col, col], f.V, rtol=1e-13, atol=1e-16)
        np.testing.assert_allclose(r.G1[:, col], f.G1, rtol=1e-12, atol=1e-16)
    k = np.array([1.2, 0.3, 0.7])
    for l in range(1, 6):  # the NNGP entry through the public maps
        q1, q2, q12 = mf.cov_map(k[0], k[2], k[1], act, sw, sb)
        k = np.array([q1, q12, q2])
        np.testing.assert_allclose(r.K[l], k, rtol=1e-13)


def _erf_reference(depth, N, sw, q):
    """The pair recursions for erf from sympy's exact derivatives of the arcsine kernel and scipy's 2-D quadrature."""
    g11, g12, g22 = sp.symbols("g11 g12 g22", positive=True)
    gs = (g11, g12, g22)
    M = [2 / sp.pi * sp.asin(2 * g11 / (1 + 2 * g11)),
         2 / sp.pi * sp.asin(2 * g12 / sp.sqrt((1 + 2 * g11) * (1 + 2 * g22))),
         2 / sp.pi * sp.asin(2 * g22 / (1 + 2 * g22))]
    Mf = sp.lambdify(gs, M, "mpmath")
    Jf = sp.lambdify(gs, [[sp.diff(m, g) for g in gs] for m in M], "mpmath")
    Hf = sp.lambdify(gs, [[[sp.diff(m, a, b) for b in gs] for a in gs] for m in M], "mpmath")

    def moment(k, a, b):
        L = np.linalg.cholesky(np.array([[k[0], k[1]], [k[1], k[2]]]))

        def f(y, x):
            u1, u2 = L[0, 0] * x, L[1, 0] * x + L[1, 1] * y
            return math.erf(u1) ** a * math.erf(u2) ** b * math.exp(-(x * x + y * y) / 2) / (2 * math.pi)

        return integrate.dblquad(f, -9, 9, -9, 9, epsabs=1e-13, epsrel=1e-12)[0]

    K = [np.array(q, dtype=float)]
    S, D = [np.zeros((3, 3))], [np.zeros(3)]
    for _ in range(depth - 1):
        k = K[-1]
        m = np.array([float(v) for v in Mf(*k)])
        J = sw * np.array([[float(v) for v in row] for row in Jf(*k)])
        H = np.array([[[float(v) for v in row] for row in mat] for mat in Hf(*k)])
        m4 = {(a, b): moment(k, a, b) for a, b in ((4, 0), (3, 1), (2, 2), (1, 3), (0, 4))}
        fidx = [(2, 0), (1, 1), (0, 2)]
        Sf = np.array([[m4[(fa[0] + fb[0], fa[1] + fb[1])] - m[i] * m[j] for j, fb in enumerate(fidx)]
                       for i, fa in enumerate(fidx)])
        S.append(sw * sw * Sf / N + J @ S[-1] @ J.T)
        D.append(J @ D[-1] + 0.5 * sw * np.einsum("ipq,pq->i", H, S[-2]))
        K.append(sw * m)
    return np.array(K), np.array(S) * N, np.array(D) * N


def test_erf_against_exact_derivatives_and_2d_quadrature():
    """erf's covariance map is (2/pi) arcsin(2 G12 / sqrt((1 + 2 G11)(1 + 2 G22))): every derivative exact."""
    depth, N, sw, q = 4, 32, 3.0, (1.3, 0.4, 0.8)
    K, V, G1 = _erf_reference(depth, N, sw, q)
    r = finite_width_pair("erf", depth, width=N, sigma_w2=sw, sigma_b2=0.0, q1=q[0], q2=q[2], q12=q[1])
    np.testing.assert_allclose(r.K, K, rtol=1e-12)
    np.testing.assert_allclose(r.V, V, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(r.G1, G1, rtol=1e-6, atol=1e-10)
    assert np.all(r.G1_error < 1e-6 * np.abs(r.G1).max() + 1e-14)
    assert abs(r.G1[-1, 1]) > 1e-3  # the off-diagonal correction is not trivially zero here


def _sample_kernels(phi, depth, N, sw, sb, q, M, rng, chunk=20000):
    """Empirical kernel entries (11, 12, 22) of the last layer of M sampled networks of width N."""
    L = np.linalg.cholesky(np.array([[q[0], q[1]], [q[1], q[2]]]))
    out = np.empty((M, 3))
    for s in range(0, M, chunk):
        m = min(chunk, M - s)
        h = rng.standard_normal((m, N, 2)) @ L.T  # layer 0: units i.i.d. N(0, K^0)
        for _ in range(1, depth):
            W = rng.standard_normal((m, N, N)) * math.sqrt(sw / N)
            h = W @ phi(h) + math.sqrt(sb) * rng.standard_normal((m, N, 1))
        out[s:s + m] = np.stack([(h[..., 0] ** 2).mean(1), (h[..., 0] * h[..., 1]).mean(1),
                                 (h[..., 1] ** 2).mean(1)], 1)
    return out


@pytest.mark.slow
def test_relu_off_diagonal_correction_against_sampled_networks():
    """Bias-free relu: the diagonal is exactly K at every width, the off-diagonal entry moves by G1_12 / n.

    Anti-correlated inputs (c0 = -0.5), width 16, depth 3: the 1/n correction is 20 standard
    errors away from zero and the first-order theory lands within 4 of them.
    """
    depth, N, M, q = 3, 16, 100_000, (1.0, -0.5, 1.0)
    G = _sample_kernels(lambda x: np.maximum(x, 0.0), depth, N, 2.0, 0.0, q, M, np.random.default_rng(7))
    r = finite_width_pair("relu", depth, width=N, sigma_w2=2.0, sigma_b2=0.0, q1=q[0], q2=q[2], q12=q[1])
    mean, se = G.mean(0), G.std(0) / math.sqrt(M)
    assert abs(mean[1] - r.K[-1, 1]) > 15 * se[1]
    assert abs(mean[1] - r.mean_kernel[-1, 1]) < 4 * se[1]
    np.testing.assert_allclose(r.G1[-1, [0, 2]], 0.0, atol=1e-12)
    # the spread to first order (the diagonal's exact relu product differs at O((depth/width)^2), see finite_width)
    np.testing.assert_allclose(G.std(0)[1], r.std_kernel[-1, 1], rtol=0.05)
    live = (G[:, 0] > 0) & (G[:, 2] > 0)  # a network whose units all died has no correlation
    assert live.mean() > 0.999
    c = G[live, 1] / np.sqrt(G[live, 0] * G[live, 2])
    assert abs(c.mean() - r.mean_c[-1]) < 4 * c.std() / math.sqrt(live.sum()) + 0.1 * abs(r.mean_c[-1] - r.c[-1])


@pytest.mark.slow
def test_tanh_at_criticality_against_sampled_networks():
    """tanh, sigma_w2 = 1, sigma_b2 = 0: every kernel entry shrinks by O(depth / width)."""
    depth, N, M, q = 5, 32, 40_000, (1.0, 0.5, 1.0)
    G = _sample_kernels(np.tanh, depth, N, 1.0, 0.0, q, M, np.random.default_rng(3))
    r = finite_width_pair("tanh", depth, width=N, sigma_w2=1.0, sigma_b2=0.0, q1=q[0], q2=q[2], q12=q[1])
    mean, se = G.mean(0), G.std(0) / math.sqrt(M)
    assert np.all(np.abs(mean - r.mean_kernel[-1]) < 4 * se)
    assert np.all(np.abs(mean[[0, 2]] - r.K[-1, [0, 2]]) > 5 * se[[0, 2]])


@pytest.mark.parametrize("kwargs, name", [
    (dict(q12=1.0), "q12"), (dict(q12=-2.0), "q12"), (dict(q1=0.0), "q1"), (dict(q2=-1.0), "q2"),
    (dict(q12=float("nan")), "q12"), (dict(sigma_w2=0.0), "sigma_w2"), (dict(depth=0), "depth"),
    (dict(width=None), "width"), (dict(act="sign(x)"), "jumps"),
])
def test_bad_input(kwargs, name):
    args = dict(act="tanh", depth=3, width=10, sigma_w2=1.0, sigma_b2=0.0, q1=1.0, q2=1.0, q12=0.5) | kwargs
    with pytest.raises(ValueError, match=name):
        finite_width_pair(**args)


def test_collapsing_pair_is_nan_not_garbage():
    """Ordered relu without bias: the variances collapse; the 1/n terms stop as NaN, K stays the NNGP."""
    r = finite_width_pair("relu", 150, width=50, sigma_w2=0.2, sigma_b2=0.0, q1=1.0, q2=1.0, q12=0.2)
    assert np.isfinite(r.K).all()
    dead = np.isnan(r.G1[:, 1])
    assert dead.any() and np.isfinite(r.G1[:np.argmax(dead), 1]).all()


def test_package_exports():
    assert mf.finite_width_pair is finite_width_pair
    assert isinstance(mf.finite_width_pair("relu", 2, width=8, q12=0.1), mf.FiniteWidthPair)
