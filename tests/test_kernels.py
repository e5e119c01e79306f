"""Tests of meanfield.kernels and meanfield.gp: NNGP / NTK recursions and GP prediction.

Every numerical test compares with something computed independently: closed forms written out
here (arc-cosine kernels, Williams' erf kernel), a per-pair recursion through the adaptive
quadrature of meanfield.expectations, nested scipy.integrate.quad, mpmath, and (slow) sampled
finite networks from meanfield.empirical.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import integrate

from meanfield import _kernel_tables
from meanfield._bivariate import bivariate_shared
from meanfield.activations import activation
from meanfield.expectations import expectation
from meanfield.gp import NNGPClassifier, NNGPRegressor
from meanfield.kernels import KernelWarning, nngp, ntk
from meanfield.layers import Dense
from meanfield.phase import critical_sigma_w2


def _inputs(n, d, seed, norms=None):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    X *= math.sqrt(d) / np.linalg.norm(X, axis=1, keepdims=True)
    if norms is not None:
        X *= np.resize(np.asarray(norms, dtype=float), n)[:, None]
    return X


def _k0(X, Y, sw, sb):
    return sb + sw * X @ Y.T / X.shape[1]


def _relu_reference(X, depth, sw, sb):
    """Arc-cosine recursion (Cho & Saul 2009) with the NTK of Arora et al. 2019, eq. 9."""
    K = _k0(X, X, sw, sb)
    T = K.copy()
    for _ in range(depth):
        d = np.sqrt(np.diag(K))
        c = np.clip(K / np.outer(d, d), -1, 1)
        np.fill_diagonal(c, 1.0)  # exactly: arccos amplifies the rounding of K_ii / d_i^2
        th = np.arccos(c)
        J1 = (np.sin(th) + (np.pi - th) * np.cos(th)) / (2 * np.pi)
        J0 = (np.pi - th) / (2 * np.pi)
        K = sb + sw * np.outer(d, d) * J1
        T = K + sw * J0 * T
    return K, T


def _erf_reference(X, Y, depth, sw, sb):
    """Williams (1997): E[erf(u) erf(v)] = (2/pi) asin(2 S12 / sqrt((1 + 2 S11)(1 + 2 S22)))."""
    K, d1, d2 = _k0(X, Y, sw, sb), sb + sw * np.sum(X * X, 1) / X.shape[1], sb + sw * np.sum(Y * Y, 1) / X.shape[1]
    for _ in range(depth):
        K = sb + sw * 2 / np.pi * np.arcsin(2 * K / np.sqrt(np.outer(1 + 2 * d1, 1 + 2 * d2)))
        d1 = sb + sw * 2 / np.pi * np.arcsin(2 * d1 / (1 + 2 * d1))
        d2 = sb + sw * 2 / np.pi * np.arcsin(2 * d2 / (1 + 2 * d2))
    return K


def _pair_reference(act, X, pairs, depth, sw, sb, want_ntk=False):
    """Per-pair recursion with adaptive Gauss-Kronrod quadrature (meanfield.expectations)."""
    i, j = np.array(pairs).T
    q1 = sb + sw * np.sum(X[i] ** 2, 1) / X.shape[1]
    q2 = sb + sw * np.sum(X[j] ** 2, 1) / X.shape[1]
    k = sb + sw * np.sum(X[i] * X[j], 1) / X.shape[1]
    t, t1, t2 = k.copy(), q1.copy(), q2.copy()
    for _ in range(depth):
        c = np.clip(k / np.sqrt(q1 * q2), -1, 1)
        knew = sb + sw * expectation(act, "cov", q1, q2, c=c, method="quadrature")
        if want_ntk:
            g = expectation(act, "dcov", q1, q2, c=c, method="quadrature")
            g1, g2 = expectation(act, "dphi2", q1), expectation(act, "dphi2", q2)
        n1 = sb + sw * expectation(act, "phi2", q1)
        n2 = sb + sw * expectation(act, "phi2", q2)
        if want_ntk:
            t = knew + sw * g * t
            t1, t2 = n1 + sw * g1 * t1, n2 + sw * g2 * t2
        k, q1, q2 = knew, n1, n2
    return t if want_ntk else k


def _rel(a, b):
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


# ----------------------------------------------------------------------------------------
# closed forms
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [0, 1, 3, 10])
def test_relu_matches_arc_cosine_to_machine_precision(depth):
    X = _inputs(12, 7, 0, norms=[0.5, 1.0, 2.0, 3.0])
    K, T = _relu_reference(X, depth, 1.8, 0.3)
    Theta, K_mf = ntk(X, None, "relu", depth=depth, sigma_w2=1.8, sigma_b2=0.3, return_nngp=True)
    assert _rel(K_mf, K) < 1e-13
    assert _rel(Theta, T) < 1e-13
    assert _rel(nngp(X, None, "relu", depth, 1.8, 0.3), K) < 1e-13


def test_erf_matches_williams_cross_kernel():
    X, Y = _inputs(9, 5, 1, norms=[0.3, 1, 4]), _inputs(6, 5, 2, norms=[2, 0.7])
    ref = _erf_reference(X, Y, 6, 2.5, 0.1)
    assert _rel(nngp(X, Y, "erf", depth=6, sigma_w2=2.5, sigma_b2=0.1), ref) < 1e-13


def test_depth_zero_is_linear_kernel():
    X = _inputs(5, 4, 3, norms=[1, 2])
    np.testing.assert_allclose(nngp(X, None, "tanh", depth=0, sigma_w2=1.3, sigma_b2=0.2), _k0(X, X, 1.3, 0.2),
                               rtol=1e-14)


# ----------------------------------------------------------------------------------------
# one step is the layer rule of meanfield.layers.Dense
# ----------------------------------------------------------------------------------------


def _two_inputs(case):
    rng = np.random.default_rng(22)
    X = _inputs(2, 4, 22, norms=[0.8, 1.9])
    if case == "zero norm":
        X[0] = 0.0  # with sigma_b2 = 0: q = 0 for the first input
    elif case == "c -> 1":
        X[1] = X[0] + 1e-5 * rng.standard_normal(4)  # nearly identical: 1 - c ~ 1e-10
    elif case == "c -> 1, two norms":
        X[1] = 1.5 * X[0] + 1e-5 * rng.standard_normal(4)
    return X


@pytest.mark.parametrize("method", ["auto", "quadrature"])
@pytest.mark.parametrize("case", ["generic", "zero norm", "c -> 1", "c -> 1, two norms"])
@pytest.mark.parametrize("act", ["erf", "tanh"])  # with a closed form and without
def test_one_layer_is_the_layer_rule(act, case, method):
    # K^1 = Dense.covariance(E[phi(u) phi(u')]), K^1(x, x) = Dense.variance(E[phi(u)^2]) and
    # Theta^1 = Dense.ntk_from(K^1, E[phi'(u) phi'(u')], K^0), the expectations by the adaptive
    # quadrature of meanfield.expectations (independent of the kernel tables)
    sw, sb = 1.7, (0.0 if case == "zero norm" else 0.2)
    layer = Dense(activation(act), sw, sb)
    X = _two_inputs(case)
    K0 = _k0(X, X, sw, sb)
    q = np.diag(K0).copy()
    s = np.sqrt(np.outer(q, q))
    c = np.clip(np.divide(K0, s, out=np.zeros_like(K0), where=s > 0), -1, 1)
    np.fill_diagonal(c, 1.0)
    Q1, Q2 = np.meshgrid(q, q, indexing="ij")
    ref_K = layer.covariance(expectation(act, "cov", Q1, Q2, c=c, method="quadrature"))
    ref_K[np.diag_indices(2)] = layer.variance(expectation(act, "phi2", q, method="quadrature"))
    ref_T = layer.ntk_from(ref_K, expectation(act, "dcov", Q1, Q2, c=c, method="quadrature"), K0)
    ref_T[np.diag_indices(2)] = layer.ntk_from(np.diag(ref_K), expectation(act, "dphi2", q, method="quadrature"), q)
    Theta, K = ntk(X, None, act, depth=1, sigma_w2=sw, sigma_b2=sb, method=method, return_nngp=True)
    np.testing.assert_allclose(K, ref_K, rtol=1e-10, atol=1e-300)
    np.testing.assert_allclose(Theta, ref_T, rtol=1e-10, atol=1e-300)
    np.testing.assert_array_equal(nngp(X, None, act, depth=1, sigma_w2=sw, sigma_b2=sb, method=method), K)
    # the cross kernel (no symmetry shortcut) agrees
    np.testing.assert_allclose(nngp(X[:1], X[1:], act, depth=1, sigma_w2=sw, sigma_b2=sb, method=method),
                               ref_K[:1, 1:], rtol=1e-10, atol=1e-300)
    if case == "zero norm":
        assert K[0, 0] == 0.0 and K[0, 1] == 0.0  # phi(0) = 0: the first input maps to 0



@pytest.mark.parametrize("scale", [1.0, 1.5])
def test_tables_as_c_approaches_1_match_williams(scale):
    # 1 - c ~ 1e-15 (closer than the adaptive reference quadrature resolves): tables against the closed form
    rng = np.random.default_rng(23)
    X = _inputs(2, 4, 22, norms=[0.8, 1.9])
    X[1] = scale * X[0] + 1e-7 * rng.standard_normal(4)
    ref = _erf_reference(X, X, 1, 1.7, 0.2)
    assert _rel(nngp(X, None, "erf", depth=1, sigma_w2=1.7, sigma_b2=0.2, method="quadrature"), ref) < 1e-13

# ----------------------------------------------------------------------------------------
# the table method against closed forms (exercises it on smooth and kinked maps)
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("act", ["erf", "relu", "leaky_relu", "sin"])
@pytest.mark.parametrize("norms", [None, [1.0, 2.5]])
def test_table_method_matches_closed_forms(act, norms):
    X = _inputs(10, 6, 4, norms=norms)
    sw = 1.5 if act != "sin" else 1.0
    T_ex, K_ex = ntk(X, None, act, depth=8, sigma_w2=sw, sigma_b2=0.2, return_nngp=True)
    T_in, K_in = ntk(X, None, act, depth=8, sigma_w2=sw, sigma_b2=0.2, return_nngp=True, method="quadrature")
    assert _rel(K_in, K_ex) < 1e-11
    assert _rel(T_in, T_ex) < 1e-11


def test_table_method_many_distinct_norms_matches_erf_closed_form(monkeypatch):
    # more distinct variances than groups: Chebyshev interpolation in log q (forced here with
    # few inputs by lowering the group limit)
    monkeypatch.setattr(_kernel_tables, "MAX_GROUPS", 2)
    X = _inputs(4, 5, 5, norms=[0.9, 1.0, 1.1, 1.2])
    Y = _inputs(3, 5, 6, norms=[0.95, 1.05, 1.15])
    ref = _erf_reference(X, Y, 1, 1.4, 0.1)
    K = nngp(X, Y, "erf", depth=1, sigma_w2=1.4, sigma_b2=0.1, method="quadrature")
    assert _rel(K, ref) < 1e-10


def test_variance_interpolation_over_a_wide_spread_of_norms():
    # norms from 0.5 to 2 (variances over a factor 16): more than 10 interpolation nodes in layer 1
    X = _inputs(9, 5, 14, norms=np.geomspace(0.5, 2.0, 9))
    Y = _inputs(4, 5, 15, norms=[0.6, 0.9, 1.4, 1.9])
    ref = _erf_reference(X, Y, 1, 2.0, 0.1)
    Theta_in, K = ntk(X, Y, "erf", depth=1, sigma_w2=2.0, sigma_b2=0.1, method="quadrature", return_nngp=True)
    assert _rel(K, ref) < 1e-10
    Theta_ex = ntk(X, Y, "erf", depth=1, sigma_w2=2.0, sigma_b2=0.1)
    assert _rel(Theta_in, Theta_ex) < 1e-10


@pytest.mark.slow
def test_oscillating_activation_at_large_variance_is_accurate_without_warning():
    # q near 400: the rule of fixed panels had errors of 1e-7 here; panels on the scale of the waves
    X = _inputs(3, 4, 16, norms=[4.5, 4.0, 3.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error", KernelWarning)
        K = nngp(X, None, "x*tanh(x) + sin(x)/2", depth=1, sigma_w2=20.0, sigma_b2=0.1)
    pairs = [(0, 1), (0, 2), (1, 2)]
    ref = _pair_reference("x*tanh(x) + sin(x)/2", X, pairs, 1, 20.0, 0.1)
    assert _rel(np.array([K[i, j] for i, j in pairs]), ref) < 1e-10


# ----------------------------------------------------------------------------------------
# any activation: against per-pair adaptive quadrature, ordered / critical / chaotic
# ----------------------------------------------------------------------------------------

_PAIRS = [(0, 1), (0, 2), (1, 3), (2, 3)]


def _phase_params(act, phase):
    sb = 0.05
    if phase == "critical":
        return float(critical_sigma_w2(act, sb)), sb
    return {"ordered": 0.8, "chaotic": 25.0}[phase], sb


@pytest.mark.parametrize("phase", ["ordered", "critical", "chaotic"])
@pytest.mark.parametrize("depth", [10, 50])
def test_tanh_against_pair_quadrature(phase, depth):
    sw, sb = _phase_params("tanh", phase)
    X = _inputs(4, 6, 7)
    K = nngp(X, None, "tanh", depth=depth, sigma_w2=sw, sigma_b2=sb)
    ref = _pair_reference("tanh", X, _PAIRS, depth, sw, sb)
    got = np.array([K[i, j] for i, j in _PAIRS])
    assert _rel(got, ref) < 1e-9


@pytest.mark.parametrize("act,phase", [
    ("softplus", "ordered"), ("gelu", "chaotic"), ("swish", "critical"), ("mish", "ordered"),
    ("hard_tanh", "critical"), ("selu", "ordered"), ("elu", "critical"), ("x*tanh(x) + sin(x)/2", "ordered"),
])
def test_other_activations_against_pair_quadrature_depth_10(act, phase):
    sw, sb = _phase_params(act, phase) if phase != "critical" or act != "swish" else (1.9, 0.05)
    if act in ("gelu",) and phase == "chaotic":
        sw = 3.0  # unbounded activation: the variance grows, q ~ 1e4 after 10 layers
    X = _inputs(4, 6, 8, norms=[1.0, 1.6])
    K = nngp(X, None, act, depth=10, sigma_w2=sw, sigma_b2=sb)
    ref = _pair_reference(act, X, _PAIRS, 10, sw, sb)
    got = np.array([K[i, j] for i, j in _PAIRS])
    assert _rel(got, ref) < 1e-9


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["ordered", "critical", "chaotic"])
def test_tanh_unnormalised_inputs_against_pair_quadrature(phase):
    # every input has its own norm (Gaussian inputs, no normalisation): variance interpolation
    sw, sb = _phase_params("tanh", phase)
    X = np.random.default_rng(17).standard_normal((12, 6))
    pairs = [(0, 1), (2, 7), (5, 11), (9, 10), (3, 3)]
    K = nngp(X, None, "tanh", depth=10, sigma_w2=sw, sigma_b2=sb)
    ref = _pair_reference("tanh", X, pairs, 10, sw, sb)
    assert _rel(np.array([K[i, j] for i, j in pairs]), ref) < 1e-9


@pytest.mark.parametrize("act", ["tanh", "hard_tanh"])
def test_ntk_against_pair_quadrature(act):
    sw, sb = _phase_params(act, "critical")
    X = _inputs(4, 6, 9, norms=[1.0, 1.5])
    Theta = ntk(X, None, act, depth=10, sigma_w2=sw, sigma_b2=sb)
    ref = _pair_reference(act, X, _PAIRS, 10, sw, sb, want_ntk=True)
    assert _rel(np.array([Theta[i, j] for i, j in _PAIRS]), ref) < 1e-9


@pytest.mark.parametrize("act,phi", [("tanh", np.tanh), ("hard_tanh", lambda u: np.clip(u, -1, 1))])
def test_one_layer_against_nested_scipy_quad(act, phi):
    # independent of the package's quadrature: nested scipy.integrate.quad per entry
    X = _inputs(2, 3, 10, norms=[1.0, 1.7])
    sw, sb = 2.3, 0.1
    q1, q2 = sb + sw * np.sum(X**2, 1) / 3
    q12 = sb + sw * X[0] @ X[1] / 3
    beta, v = q12 / q1, q2 - q12**2 / q1

    def inner(u1):
        m, s = beta * u1, math.sqrt(v)
        pts = [p for p in (-1.0, 1.0) if m - 12 * s < p < m + 12 * s] if act == "hard_tanh" else None
        f = lambda t: phi(t) * math.exp(-0.5 * ((t - m) / s) ** 2) / (s * math.sqrt(2 * math.pi))  # noqa: E731
        return integrate.quad(f, m - 12 * s, m + 12 * s, points=pts, epsabs=1e-15, epsrel=1e-13, limit=400)[0]

    s1 = math.sqrt(q1)
    outer = integrate.quad(lambda u: phi(u) * math.exp(-0.5 * (u / s1) ** 2) / (s1 * math.sqrt(2 * math.pi))
                           * inner(u), -12 * s1, 12 * s1, points=[-1.0, 0.0, 1.0], epsabs=1e-15, epsrel=1e-13,
                           limit=400)[0]
    K = nngp(X, None, act, depth=1, sigma_w2=sw, sigma_b2=sb)
    assert abs(K[0, 1] - (sb + sw * outer)) < 1e-11 * abs(K[0, 1])


def test_bivariate_rule_against_mpmath():
    # one call for three outer variances at once (the inner integrals are shared between them)
    mp = pytest.importorskip("mpmath")
    mp.mp.dps = 25
    from meanfield.activations import activation

    act = activation("hard_tanh")
    qa, q2 = np.array([0.3, 1.0, 4.0]), 1.3
    thetas = np.array([1e-5, 0.7, math.pi - 1e-4])
    got = bivariate_shared(act.phi, act, qa, np.full(3, q2), thetas)
    for a, q1 in enumerate(qa):
        for k, theta in enumerate(thetas):
            t = mp.mpf(theta)
            c, s, a1, a2 = mp.cos(t), mp.sin(t), mp.sqrt(mp.mpf(q1)), mp.sqrt(mp.mpf(q2))

            def inner(u1, c=c, s=s, a1=a1, a2=a2):
                m, sd = a2 * c * u1 / a1, a2 * s
                lo, hi = (-1 - m) / sd, (1 - m) / sd
                return (-mp.ncdf(lo) + 1 - mp.ncdf(hi) + m * (mp.ncdf(hi) - mp.ncdf(lo))
                        + sd * (mp.npdf(lo) - mp.npdf(hi)))

            b = float(a2 * c / a1)
            pts = sorted({-10.0 * float(a1), -1.0, 0.0, 1.0, 10.0 * float(a1)}
                         | {k_ / b for k_ in (-1, 1) if abs(k_ / b) < 10 * float(a1)})
            ref = mp.quad(lambda u: max(-1, min(1, u)) * mp.npdf(u / a1) / a1 * inner(u), pts, maxdegree=10)
            assert abs(got[a, k] - float(ref)) < 1e-13, (q1, theta)


@pytest.mark.parametrize("act", ["tanh", "softplus", "gelu", "mish", "selu", "swish", "erf"])
def test_bivariate_rule_against_adaptive_quadrature(act):
    # the fixed rule (several outer variances sharing inner integrals) against the package's
    # adaptive Gauss-Kronrod expectation, over variances 0.05 to 400 and angles 0 to pi
    from meanfield.activations import activation

    a = activation(act)
    thetas = np.array([0.0, 0.05, 0.3, 1.0, 1.6, 2.5, math.pi - 0.05, math.pi])  # (tiny angles: mpmath test)
    for qa, q2 in [([0.05, 0.08], 0.06), ([0.5, 1.0, 1.9], 1.2), ([3.0, 10.0], 6.0), ([100.0, 400.0], 200.0)]:
        qa = np.array(qa)
        got = bivariate_shared(a.phi, a, qa, np.full(thetas.size, q2), thetas)
        for i, q1 in enumerate(qa):
            ref = expectation(a, "cov", np.full(thetas.size, q1), np.full(thetas.size, q2), c=np.cos(thetas),
                              method="quadrature")
            scale = math.sqrt(expectation(a, "phi2", q1) * expectation(a, "phi2", q2))
            assert np.max(np.abs(got[i] - ref)) < 1e-11 * scale, (act, q1, q2)


# ----------------------------------------------------------------------------------------
# structure
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("act,sw", [("tanh", 1.0), ("softplus", 1.5), ("relu", 2.0)])
def test_symmetric_and_psd(act, sw):
    X = _inputs(25, 8, 11, norms=[0.8, 1.2])
    for K in (nngp(X, None, act, depth=5, sigma_w2=sw, sigma_b2=0.1), ntk(X, None, act, depth=5, sigma_w2=sw,
                                                                           sigma_b2=0.1)):
        assert np.array_equal(K, K.T)
        ev = np.linalg.eigvalsh(K)
        assert ev.min() > -1e-12 * ev.max()


def _tanh_entry(X):
    return float(nngp(X, None, "tanh", depth=2, sigma_w2=1.5, sigma_b2=0.1)[1, 2])


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_kernels_after_fork_and_from_several_threads():
    # the table work runs on a thread pool: a forked child (multiprocessing's default on Linux) must
    # not wait on the parent's threads, and concurrent calls from user threads must agree
    import multiprocessing
    import threading

    X = _inputs(40, 5, 18, norms=[1.0, 1.3])
    expected = _tanh_entry(X)
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.apply_async(_tanh_entry, (X,)).get(timeout=300) == expected
    results = []
    threads = [threading.Thread(target=lambda: results.append(_tanh_entry(X))) for _ in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=300)
    assert results == [expected] * 3


def test_cross_kernel_consistent_with_joint_kernel():
    X = _inputs(6, 4, 12, norms=[1, 2])
    Y = _inputs(3, 4, 13)
    full = nngp(np.vstack([X, Y]), None, "tanh", depth=4, sigma_w2=1.6, sigma_b2=0.1)
    cross = nngp(X, Y, "tanh", depth=4, sigma_w2=1.6, sigma_b2=0.1)
    np.testing.assert_allclose(cross, full[:6, 6:], rtol=1e-12)


# ----------------------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,match", [
    ({"X1": np.ones((3, 2)), "X2": np.ones((3, 3))}, "same number of features"),
    ({"X1": np.array([[1.0, np.nan]])}, "finite"),
    ({"X1": np.array([[1.0, np.inf]])}, "finite"),
    ({"X1": np.ones((0, 3))}, "n > 0"),
    ({"X1": np.ones((2, 3)), "depth": -1}, "depth"),
    ({"X1": np.ones((2, 3)), "depth": 2.5}, "depth"),
    ({"X1": np.ones((2, 3)), "sigma_w2": -1.0}, "sigma_w2"),
    ({"X1": np.ones((2, 3)), "method": "magic"}, "method"),
    ({"X1": np.ones((2, 3)), "method": "interpolate"}, r"method must be one of \('auto', 'exact', 'quadrature'\)"),
    ({"X1": np.ones((2, 3)), "act": "tanh", "method": "exact"}, "closed form"),
    ({"X1": np.ones((2, 3)), "memory_limit": 10}, "memory"),
    ({"X1": np.ones((2, 3)), "memory_limit": -1.0}, "memory_limit must be a positive number"),
])
def test_bad_input_raises(kwargs, match):
    args = {"X2": None, "act": "tanh", "depth": 2, "sigma_w2": 1.0, "sigma_b2": 0.1, **kwargs}
    with pytest.raises(ValueError, match=match):
        nngp(**args)


def test_too_large_kernel_raises_before_work():
    X = np.zeros((200_000, 2))
    with pytest.raises(ValueError, match="memory_limit"):
        ntk(X, None, "tanh", depth=3, sigma_w2=1.0)


# ----------------------------------------------------------------------------------------
# prediction
# ----------------------------------------------------------------------------------------


def test_regressor_matches_explicit_gp_formulas():
    X = _inputs(20, 5, 14, norms=[1, 1.5])
    Xs = _inputs(7, 5, 15)
    y = np.sin(X[:, 0]) + X[:, 1]
    reg = NNGPRegressor("erf", depth=3, sigma_w2=1.5, sigma_b2=0.1, noise=1e-3).fit(X, y)
    mean, cov = reg.predict(Xs, return_cov=True)
    K = _erf_reference(X, X, 3, 1.5, 0.1) + 1e-3 * np.eye(20)
    Ks = _erf_reference(Xs, X, 3, 1.5, 0.1)
    Kss = _erf_reference(Xs, Xs, 3, 1.5, 0.1)
    np.testing.assert_allclose(mean, Ks @ np.linalg.solve(K, y), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(cov, Kss - Ks @ np.linalg.solve(K, Ks.T), rtol=1e-7, atol=1e-10)
    _, std = reg.predict(Xs, return_std=True)
    np.testing.assert_allclose(std**2, np.diag(cov), rtol=1e-7, atol=1e-10)


def test_deep_ordered_phase_singular_kernel_is_regularised_not_nan():
    X = _inputs(40, 5, 16)
    y = X[:, 0]
    reg = NNGPRegressor("tanh", depth=30, sigma_w2=0.3, sigma_b2=0.5)
    with pytest.warns(KernelWarning, match="singular"):
        reg.fit(X, y)
    assert reg.jitter_ > 0
    mean, std = reg.predict(_inputs(5, 5, 17), return_std=True)
    assert np.all(np.isfinite(mean)) and np.all(np.isfinite(std))


def test_classifier_one_hot_targets_and_accuracy():
    rng = np.random.default_rng(18)
    centres = rng.standard_normal((3, 6)) * 3
    lab = rng.integers(0, 3, 90)
    X = centres[lab] + rng.standard_normal((90, 6))
    clf = NNGPClassifier("relu", depth=2, sigma_w2=2.0, sigma_b2=0.1, noise=1e-2).fit(X[:60], lab[:60])
    scores = clf.decision_function(X[:60])
    assert scores.shape == (60, 3)
    assert clf.score(X[60:], lab[60:]) > 0.9
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert set(clf.predict(X[60:])) <= {0, 1, 2}


def test_ntk_regressor_refuses_variance():
    X = _inputs(5, 3, 19)
    reg = NNGPRegressor("relu", depth=2, kernel="ntk", noise=1e-6).fit(X, X[:, 0])
    with pytest.raises(ValueError, match="NNGP"):
        reg.predict(X, return_std=True)


# ----------------------------------------------------------------------------------------
# sampled finite networks (independent Monte Carlo)
# ----------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("act", ["tanh", "hard_tanh"])
def test_nngp_and_ntk_against_sampled_networks(act):
    from meanfield import empirical

    X = _inputs(4, 8, 20, norms=[0.8, 1.3])
    depth, sw, sb = 3, 1.6, 0.1
    # depth hidden layers + readout = empirical NetworkSpec of depth + 1 layers
    spec = empirical.NetworkSpec(act, sigma_w2=sw, sigma_b2=sb, widths=[256] * depth + [64])
    Theta, K = ntk(X, None, act, depth=depth, sigma_w2=sw, sigma_b2=sb, return_nngp=True)
    rng = np.random.default_rng(21)
    est = empirical.empirical_nngp(spec, X, 40, rng)
    iu = np.triu_indices(4)
    # finite width bias is O(1/N): allow 2% besides the sampling error
    cmp = empirical.compare(K[iu], mean=est.mean[iu], sem=est.sem[iu], n_samples=40, rtol=0.02)
    assert cmp.passed, cmp.summary()
    spec1 = empirical.NetworkSpec(act, sigma_w2=sw, sigma_b2=sb, widths=[256] * depth + [1])
    est = empirical.empirical_ntk(spec1, X, 40, rng)
    cmp = empirical.compare(Theta[iu], mean=est.mean[iu], sem=est.sem[iu], n_samples=40, rtol=0.03)
    assert cmp.passed, cmp.summary()


def test_special_zero_variance_input():
    # sigma_b2 = 0 and a zero input: u = 0 exactly; E[phi(0) phi(u')] = phi(0) E[phi(u')]
    X = np.array([[0.0, 0.0], [1.0, 2.0]])
    K = nngp(X, None, "x + exp(-x*x)", depth=1, sigma_w2=1.0, sigma_b2=0.0)
    q = 2.5
    dens = lambda u: math.exp(-u * u / (2 * q)) / math.sqrt(2 * math.pi * q)  # noqa: E731
    ref = 1.0 * integrate.quad(lambda u: (u + math.exp(-u * u)) * dens(u), -50, 50, epsabs=1e-14)[0]
    assert abs(K[0, 1] - ref) < 1e-12
    assert abs(K[0, 0] - 1.0) < 1e-15


def test_inputs_and_labels_are_checked_before_any_work():
    # complex inputs were cut to their real part; NaN labels and equal targets were accepted
    import meanfield as mf
    from meanfield import empirical as emp

    X = np.ones((3, 2))
    with pytest.raises(ValueError, match="complex"):
        mf.nngp(X + 1j, None, "relu", 1)
    with pytest.raises(ValueError, match="NaN"):
        mf.NNGPClassifier().fit(X, np.array([0.0, np.nan, 1.0]))
    with pytest.raises(ValueError, match="on > off"):
        mf.NNGPClassifier(targets=(0.5, 0.5)).fit(X, np.array([0, 1, 1]))
    with pytest.raises(ValueError, match="complex"):
        emp.simulate(emp.NetworkSpec("relu", sigma_w2=2.0, width=8, depth=2), X + 1j, 2, np.random.default_rng(0))


def test_divergent_kernels_stay_exact_until_float64_runs_out():
    # relu, sigma_w2 = 3: K(x, x) grows x1.5 per layer. Past 1e154 the product of two variances used to
    # overflow (normalised K[0, 1] jumped to 1/pi at depth 880); the normalised kernel follows the
    # arc-cosine map, checked by iterating it from depth 100 where the bias no longer matters
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2, 10))

    def corr(K):
        return K[0, 1] / (np.sqrt(K[0, 0]) * np.sqrt(K[1, 1]))

    c = corr(nngp(X, None, "relu", depth=100, sigma_w2=3.0, sigma_b2=0.1))
    for _ in range(900):
        c = (np.sqrt(1 - c * c) + (np.pi - np.arccos(c)) * c) / np.pi
    assert corr(nngp(X, None, "relu", depth=1000, sigma_w2=3.0, sigma_b2=0.1)) == pytest.approx(c, abs=1e-9)
    with pytest.raises(ValueError, match=r"exceed float64.s range at layer 17\d\d of 1800"):
        nngp(X, None, "relu", depth=1800, sigma_w2=3.0, sigma_b2=0.1)


def _erf_kernels_by_hand(X, depth, sw, sb):
    """NNGP and NTK of an erf network by Williams' closed forms (Williams 1997; Jacot et al. 2018)."""
    K = sw * X @ X.T / X.shape[1] + sb
    T = K.copy()
    for _ in range(depth):
        d = 1 + 2 * np.diag(K)
        C = 2 / np.pi * np.arcsin(2 * K / np.sqrt(np.outer(d, d)))
        Dc = 4 / np.pi / np.sqrt(np.outer(d, d) - 4 * K**2)
        K = sw * C + sb
        with np.errstate(over="ignore"):  # the chaotic NTK overflows, as it should
            T = K + sw * Dc * T
    return K, T


def test_very_deep_kernels_stop_at_their_fixed_point(monkeypatch):
    X = np.random.default_rng(0).normal(size=(6, 4))
    for sw in (0.8, 3.0):  # ordered and chaotic: the NNGP converges long before 3000 layers
        K_ref, T_ref = _erf_kernels_by_hand(X, 3000, sw, 0.1)
        K = nngp(X, act="erf", depth=10**9, sigma_w2=sw, sigma_b2=0.1)
        assert K == pytest.approx(K_ref, rel=1e-12)
        if sw < 1:  # ordered: the NTK converges too, its remaining layers summed as a geometric series
            T = ntk(X, act="erf", depth=10**9, sigma_w2=sw, sigma_b2=0.1)
            assert T == pytest.approx(T_ref, rel=1e-11)
        else:  # chaotic: the NTK's diagonal grows by chi_1 > 1 per layer, past float64 long before 1e9
            with pytest.raises(ValueError, match="NTK exceeds"):
                ntk(X, act="erf", depth=10**9, sigma_w2=sw, sigma_b2=0.1)
    # a kernel still moving after MAX_LAYERS layers is refused, not looped (here with a small MAX_LAYERS)
    import meanfield.kernels as kernels

    monkeypatch.setattr(kernels, "MAX_LAYERS", 20)
    with pytest.raises(ValueError, match="still changing after 20 layers"):
        nngp(X[:2], act="relu", depth=10**9, sigma_w2=2.0, sigma_b2=0.0)
    assert nngp(X[:2], act="relu", depth=20, sigma_w2=2.0, sigma_b2=0.0).shape == (2, 2)
