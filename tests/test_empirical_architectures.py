"""Sampled dense, batch-norm, layer-norm and residual networks (measure_gradient_scales) against oracles.

Oracles, all written here: a forward pass and finite-difference gradients computed from the
sampled weights alone; Gaussian expectations by scipy quadrature (the q-map, the c-map, chi_1,
Stein's lemma); the closed forms of Yang et al. 2019 for batch norm (linear phi: (B-2)/(B-3);
ReLU at finite B, derived below) and of Yang & Schoenholz 2017 for residual blocks.  Statistical
checks allow ``Z`` standard errors (stated at each check) computed across independent networks.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import integrate

import meanfield._architecture_pass as ap
from meanfield._network_pass import new_base
from meanfield.architecture import Layer, network
from meanfield.empirical import SampledGradientScales, measure_gradient_scales

SQ2PI = math.sqrt(2 * math.pi)
Z = 4.0  # standard errors allowed in the statistical checks


def gauss(f, q=1.0):
    """E[f(sqrt(q) z)], z ~ N(0, 1)."""
    val, _ = integrate.quad(lambda z: f(math.sqrt(q) * z) * math.exp(-z * z / 2) / SQ2PI, -np.inf, np.inf,
                            epsabs=1e-12, epsrel=1e-10)
    return val


def gauss2(f, q, c):
    """E[f(u1) f(u2)] for (u1, u2) Gaussian with variances q and correlation c."""
    s = math.sqrt(1 - c * c)

    def inner(z1):
        return integrate.quad(lambda z2: f(math.sqrt(q) * (c * z1 + s * z2)) * math.exp(-z2 * z2 / 2) / SQ2PI,
                              -np.inf, np.inf, epsabs=1e-11)[0]

    val, _ = integrate.quad(lambda z1: f(math.sqrt(q) * z1) * inner(z1) * math.exp(-z1 * z1 / 2) / SQ2PI,
                            -np.inf, np.inf, epsabs=1e-10)
    return val


def tanh(x):
    return math.tanh(x)


def dtanh(x):
    return 1.0 - math.tanh(x) ** 2


def block_factor(res: SampledGradientScales, a: int, b: int):
    """Per-layer factor over layers a+1..b, ``(mean grad2[a] / mean grad2[b])^(1/(b-a))``, and its standard error.

    Computed here from the per-network records (delta method for the ratio of means).
    """
    G = res.per_network["grad2"][~res.diverged]
    ga, gb = G[:, a].mean(), G[:, b].mean()
    ratio = ga / gb
    se_log = (G[:, a] / ga - G[:, b] / gb).std(ddof=1) / math.sqrt(len(G))
    n = b - a
    value = ratio ** (1 / n)
    return value, value * se_log / n


# ----------------------------------------------------------------------------------------
# Exact passes: an independent forward pass and finite differences
# ----------------------------------------------------------------------------------------

SMALL = (
    Layer("dense", "tanh", 1.5, 0.1),
    Layer("batch_norm", "tanh", 1.2, 0.1, batch_size=5),
    Layer("layer_norm", "erf", 0.9, 0.2),
    Layer("residual", "tanh", 1.1, 0.05, sigma_v2=0.7, sigma_a2=0.1),
    Layer("dense", "softplus", 0.8, 0.1),
    Layer("batch_norm", "sin", 1.0, 0.0, batch_size=5),
)


def _sampler(layers, width, batch, seed, c0=0.3):
    setup = ap.check_arguments(layers, width, batch, 1, 1.3, c0, "float64", None)
    sampler = ap.Sampler(setup, store=True)
    sampler.draw(seed)
    return setup, sampler


def _my_forward(layers, params, h, start, stop):
    """The layers written out from their definitions (no dropout), h of shape (N, B)."""
    N = h.shape[0]
    for k in range(start, stop + 1):
        lay = layers[k - 1]
        Zw, b, Zv, a = params[k]
        W = math.sqrt(lay.sigma_w2 / N) * Zw
        phi = lay.act.phi
        if lay.kind == "dense":
            h = W @ phi(h) + b
        elif lay.kind == "batch_norm":
            mu = h.mean(axis=1, keepdims=True)
            var = ((h - mu) ** 2).mean(axis=1, keepdims=True)
            h = W @ phi((h - mu) / np.sqrt(var)) + b
        elif lay.kind == "layer_norm":
            mu = h.mean(axis=0, keepdims=True)
            var = ((h - mu) ** 2).mean(axis=0, keepdims=True)
            h = W @ phi((h - mu) / np.sqrt(var)) + b
        else:
            V = math.sqrt(lay.sigma_v2 / N) * Zv
            h = h + V @ phi(W @ h + b) + a
    return h


def test_forward_and_backward_match_an_independent_implementation():
    """Engine forward == forward written here; engine gradients == central differences of it (every entry)."""
    N, B = 6, 5
    setup, s = _sampler(SMALL, N, B, seed=11)
    L = len(SMALL)
    params = {k: tuple(None if p is None else np.array(p) for p in s.params(k)) for k in range(1, L + 1)}
    h0, u = s.inputs(), s.output_gradient()
    tape = []
    hL = s.forward(h0, tape=tape)
    np.testing.assert_allclose(hL, _my_forward(SMALL, params, h0, 1, L), rtol=1e-12, atol=1e-12)
    eps = 1e-6
    for l in range(L):
        hl = _my_forward(SMALL, params, h0, 1, l)
        tape = []
        s.forward(hl, start=l + 1, tape=tape)
        g = s.backward(u, tape, start=l + 1)
        fd = np.empty_like(hl)
        for i in range(N):
            for j in range(B):
                e = np.zeros_like(hl)
                e[i, j] = eps
                fd[i, j] = (np.sum(u * _my_forward(SMALL, params, hl + e, l + 1, L))
                            - np.sum(u * _my_forward(SMALL, params, hl - e, l + 1, L))) / (2 * eps)
        np.testing.assert_allclose(g, fd, rtol=0, atol=1e-6 * np.abs(fd).max(), err_msg=f"dE/dh^{l}")


def test_backward_with_dropout_is_the_directional_derivative():
    """With dropout (masks fixed per network) the backward pass is the derivative of the forward: 1e-6."""
    layers = (Layer("dense", "tanh", 1.5, 0.1, rho=0.7),) + SMALL[1:] + (Layer("dense", "gelu", 1.3, 0.0, rho=0.5),)
    setup, s = _sampler(layers, 6, 5, seed=5)
    L = len(layers)
    h0, u = s.inputs(), s.output_gradient()
    rng = np.random.default_rng(0)
    for l in range(L):
        hl = s.forward(h0, stop=l)
        tape = []
        s.forward(hl, start=l + 1, tape=tape)
        g = s.backward(u, tape, start=l + 1)
        v = rng.standard_normal(hl.shape)
        eps = 1e-6
        fd = (np.sum(u * s.forward(hl + eps * v, start=l + 1)) - np.sum(u * s.forward(hl - eps * v, start=l + 1)))
        fd /= 2 * eps
        assert abs(np.sum(g * v) - fd) <= 1e-6 * max(1.0, abs(fd)), (l, np.sum(g * v), fd)


def test_records_are_the_stated_statistics():
    """q, c, grad2, sign diversity and nonlinearity of one network, recomputed here from its own pass."""
    layers = (Layer("dense", "relu", 2.0, 0.1),) + SMALL[1:4]
    N, B = 7, 5
    res = measure_gradient_scales(layers, N, B, 1, np.random.default_rng(3), q0=1.3, c0=0.3)
    setup, s = _sampler(layers, N, B, seed=new_base(np.random.default_rng(3)))
    L = len(layers)
    params = {k: s.params(k) for k in range(1, L + 1)}
    hs = [s.inputs()]
    for k in range(1, L + 1):
        hs.append(_my_forward(layers, params, hs[-1], k, k))
    u = s.output_gradient()
    rec = res.per_network
    iu = np.triu_indices(B, 1)
    for l, h in enumerate(hs):
        assert rec["q"][0, l] == pytest.approx(np.mean(h * h), rel=1e-12)
        C = (h.T @ h) / np.outer(np.linalg.norm(h, axis=0), np.linalg.norm(h, axis=0))
        assert rec["c"][0, l] == pytest.approx(C[iu].mean(), rel=1e-10, abs=1e-12)
        tape = []
        s.forward(h, start=l + 1, tape=tape)
        g = s.backward(u, tape, start=l + 1)
        assert rec["grad2"][0, l] == pytest.approx(np.sum(g * g) / (N * B), rel=1e-12)
    for k, lay in enumerate(layers, start=1):
        h = hs[k - 1]
        if lay.kind == "dense":
            arg = h
        elif lay.kind == "residual":
            arg = math.sqrt(lay.sigma_w2 / N) * params[k][0] @ h + params[k][1]
        else:
            ax = 1 if lay.kind == "batch_norm" else 0
            arg = (h - h.mean(axis=ax, keepdims=True)) / h.std(axis=ax, keepdims=True)
        diff = [np.mean(np.sign(arg[:, a]) != np.sign(arg[:, b])) for a, b in zip(*iu)]
        assert rec["sign_diversity"][0, k - 1] == pytest.approx(np.mean(diff), abs=1e-12)
        p = lay.act.phi(arg)
        nl = 1 - np.sum(arg * p) ** 2 / (np.sum(arg * arg) * np.sum(p * p))
        assert rec["nonlinearity"][0, k - 1] == pytest.approx(nl, abs=1e-12)


@pytest.mark.parametrize("c0", [0.4, -0.15, -0.2])
def test_input_batch_has_the_requested_variance_and_correlation(c0):
    """Entries N(0, q0), pairwise correlation c0 (down to -1/(B-1) = -0.2 at B = 6: the inputs sum to zero).

    The sample cosine of N = 400 pairs of entries is biased by about -c (1 - c^2) / (2N) (Fisher):
    allowed for on top of Z standard errors.
    """
    N = 400
    res = measure_gradient_scales(network("tanh", 1, sigma_w2=1.0), N, 6, 40, 1, q0=2.5, c0=c0)
    assert abs(res.q[0] - 2.5) < Z * res.q_se[0]
    assert abs(res.c[0] - c0) < Z * res.c_se[0] + abs(c0) * (1 - c0**2) / N


def test_derived_fields_are_consistent():
    """gsc^2 = grad2 q / q[L]; prod gsc_layer = gsc[0] / sqrt(grad2[L]); prod factor = grad2[0] / grad2[L]."""
    res = measure_gradient_scales(network("tanh", 6, sigma_w2=1.3, sigma_b2=0.1, norm="layer"), 50, 4, 5, 0)
    G = res.per_network["grad2"]
    np.testing.assert_allclose(res.factor, G.mean(0)[:-1] / G.mean(0)[1:], rtol=1e-12)
    np.testing.assert_allclose(res.gsc[:-1] ** 2, (res.grad2 * res.q / res.q[-1])[:-1], rtol=1e-12)
    assert np.prod(res.gsc_layer) == pytest.approx(res.gsc[0] / math.sqrt(res.grad2[-1]), rel=1e-12)
    assert np.prod(res.factor) == pytest.approx(res.grad2[0] / res.grad2[-1], rel=1e-12)
    assert res.gsc[-1] == 1.0 and res.gsc_se[-1] == 0.0
    assert abs(res.grad2[-1] - 1) < Z * res.grad2_se[-1]
    assert np.all(res.factor_se > 0) and np.all(np.isfinite(res.gsc_se))
    assert res.depth == 6 and res.n_diverged == 0
    text = res.summary()
    assert "6 layer_norm tanh layers" in text and "width 50" in text and "GSC(L, 0)" in text


# ----------------------------------------------------------------------------------------
# Batch norm (Yang et al. 2019)
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("B, width, depth, n", [(8, 500, 20, 14), (16, 1000, 16, 16)])
def test_linear_batch_norm_factor_is_b_minus_2_over_b_minus_3(B, width, depth, n):
    """Linear phi with batch norm: the squared gradient grows by (B-2)/(B-3) per layer (Yang et al. 2019).

    Middle layers only (the input is not at the fixed point, and u is not orthogonal to the ones
    vector), float32.  Measured: B=8 1.1952 +- 0.0047 (width 500, layers 4..17 of 20); B=16
    1.0779 +- 0.0016 (width 1000, layers 3..15 of 16); within Z standard errors, and resolved from
    the nearby (B-1)/(B-2).  There is a finite-width bias of about -1/width (B=16, width 500, 200
    networks: 1.07473 +- 0.00052 against 1.07692), hence width 1000 at B=16.
    """
    res = measure_gradient_scales(network("linear", depth, sigma_w2=1.0, norm="batch", batch_size=B), width, B, n,
                                  np.random.default_rng(2), dtype="float32")
    a, b = (3, depth - 3) if depth > 16 else (2, depth - 1)
    value, se = block_factor(res, a, b)
    assert abs(value - (B - 2) / (B - 3)) < Z * se, (value, se)
    assert abs(value - (B - 1) / (B - 2)) > 2 * se
    # every middle layer on its own, with its delta-method error
    mid = slice(a, b)
    assert np.all(np.abs(res.factor[mid] - (B - 2) / (B - 3)) < Z * res.factor_se[mid])
    # the forward pass sits at the fixed point: c = -1/(B-1) for the normalised batch
    assert np.all(np.abs(res.c[2:] + 1 / (B - 1)) < 0.01)


def relu_batch_norm_factor(B):
    """lambda_G of ReLU after batch norm at finite B, derived from the layer's backward pass.

    Per unit, y = BN(h) is uniform on the sphere of radius sqrt(B) orthogonal to 1; with
    G = I - 1 1^T / B, D = diag(phi'(y)): E||dh||^2 = E[1/sigma^2] E[tr(G_y D G D)] sigma_w2 |g|^2 / (N (B-1)),
    G_y = G - y y^T / B, sigma^2 ~ (sigma_w2 m / B) chi^2_{B-1}, m = E[phi1^2] - E[phi1 phi2].
    ReLU's homogeneity makes the Gaussian (rho = -1/(B-1)) moments exact.
    """
    rho = -1 / (B - 1)
    th = math.acos(rho)
    e11, e12 = 0.5, (math.sin(th) + (math.pi - th) * math.cos(th)) / (2 * math.pi)
    m = e11 - e12
    d11, d12 = 0.5, 0.25 + math.asin(rho) / (2 * math.pi)
    tr_dgdg = B * d11 - 2 * d11 + (B * d11 + B * (B - 1) * d12) / B**2
    ydgdy = B * 0.5 - (B * 0.5 + B * (B - 1) * e12) / B
    T = tr_dgdg - ydgdy / B
    return B / (m * (B - 3)) * T / (B - 1)


def test_relu_batch_norm_factor_at_large_batch():
    """ReLU, B = 64: the finite-B lambda_G (1.49306), and clearly not yet pi/(pi-1) = 1.46694.

    Measured 1.4914 +- 0.0015 (8 networks, width 500, layers 3..13 of 16, float32).
    """
    B = 64
    res = measure_gradient_scales(network("relu", 16, sigma_w2=2.0, norm="batch", batch_size=B), 500, B, 8,
                                  np.random.default_rng(2), dtype="float32")
    value, se = block_factor(res, 3, 13)
    expected, limit = relu_batch_norm_factor(B), math.pi / (math.pi - 1)
    assert abs(value - expected) < Z * se, (value, se, expected)
    assert abs(value - limit) < 0.04  # near the B -> inf value ...
    assert abs(value - limit) > Z * se  # ... and resolved from it
    # the sign diversity of the normalised batch: arccos(-1/(B-1))/pi (signs of a Gaussian, exactly)
    assert np.all(np.abs(res.sign_diversity[2:] - math.acos(-1 / (B - 1)) / math.pi)
                  < Z * res.sign_diversity_se[2:] + 1e-3)


# ----------------------------------------------------------------------------------------
# Layer norm (Philipp et al. 2018), dense (Schoenholz et al. 2017), residual (Yang & Schoenholz 2017)
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_layer_norm_factor(act):
    """sigma_b2 = 0: factor E[phi'(z)^2] / E[phi(z)^2] (tanh 1.17781, relu exactly 1), also the per-layer GSC.

    Measured at width 500, B 8, 10 networks, layers 3..13: tanh 1.1808 +- 0.0054, relu 1.0051 +- 0.0043.
    """
    if act == "tanh":
        expected = gauss(lambda x: dtanh(x) ** 2) / gauss(lambda x: tanh(x) ** 2)
    else:
        expected = 1.0
    res = measure_gradient_scales(network(act, 16, sigma_w2=1.7, norm="layer"), 500, 8, 10,
                                  np.random.default_rng(2), dtype="float32")
    value, se = block_factor(res, 3, 13)
    assert abs(value - expected) < Z * se, (value, se, expected)
    mid = slice(3, 13)
    assert np.all(np.abs(res.gsc_layer[mid] ** 2 - expected) < Z * 2 * res.gsc_layer_se[mid])


def _dense_theory(sigma_w2, sigma_b2, q0, c0, depth):
    q, c = [q0], [c0]
    for _ in range(depth):
        qn = sigma_w2 * gauss(lambda x: tanh(x) ** 2, q[-1]) + sigma_b2
        q12 = sigma_w2 * gauss2(tanh, q[-1], c[-1]) + sigma_b2
        q.append(qn)
        c.append(q12 / qn)
    return np.array(q), np.array(c)


def test_dense_tanh_factor_is_chi1_at_the_fixed_point():
    """(sigma_w2, sigma_b2) = (1.5, 0.05), started at q*: factor chi_1 = sigma_w2 E[phi'(sqrt(q*) z)^2]."""
    sw, sb = 1.5, 0.05
    q = 1.0
    for _ in range(500):
        q = sw * gauss(lambda x: tanh(x) ** 2, q) + sb
    chi1 = sw * gauss(lambda x: dtanh(x) ** 2, q)
    res = measure_gradient_scales(network("tanh", 10, sigma_w2=sw, sigma_b2=sb), 500, 8, 12,
                                  np.random.default_rng(4), q0=q)
    value, se = block_factor(res, 0, 10)
    assert abs(value - chi1) < Z * se, (value, se, chi1)
    assert np.all(np.abs(res.factor - chi1) < Z * res.factor_se)
    assert np.all(np.abs(res.q - q) < Z * res.q_se + 2 * q / 500)  # allowance: O(1/N) finite-width shift


def test_dense_dropout_divides_the_factor_by_rho():
    """Linear phi, keep probability rho: factor sigma_w2 / rho and q^k = sigma_w2 q^{k-1} / rho + sigma_b2.

    Exact in expectation at any width (linear backward passes do not see the forward values).
    Measured 0.8045 +- 0.0018 against 0.8 (12 networks); 200 networks give 0.79999 +- 0.00068.
    """
    sw, sb, rho, L = 0.6, 0.1, 0.75, 6
    res = measure_gradient_scales([Layer("dense", "linear", sw, sb, rho=rho)] * L, 400, 8, 12, np.random.default_rng(8))
    value, se = block_factor(res, 0, L)
    assert abs(value - sw / rho) < Z * se, (value, se)
    q = [1.0]
    for _ in range(L):
        q.append(sw * q[-1] / rho + sb)
    assert np.all(np.abs(res.q - q) < Z * res.q_se + 2 * np.array(q) / 400)


def test_residual_tanh_factor_follows_the_variance_recursion():
    """x' = x + V tanh(W x + b) + a: factor_k = 1 + sigma_v2 sigma_w2 E[phi'(sqrt(q^k) z)^2] along the recursion.

    q^k = sigma_w2 p^{k-1} + sigma_b2, p^k = p^{k-1} + sigma_v2 E[phi(sqrt(q^k) z)^2] + sigma_a2, p^0 = q0.
    """
    sw, sb, sv, sa, L = 1.2, 0.05, 0.6, 0.02, 8
    p, qs, factors = [1.0], [], []
    for _ in range(L):
        qk = sw * p[-1] + sb
        qs.append(qk)
        factors.append(1 + sv * sw * gauss(lambda x: dtanh(x) ** 2, qk))
        p.append(p[-1] + sv * gauss(lambda x: tanh(x) ** 2, qk) + sa)
    res = measure_gradient_scales(network("tanh", L, sigma_w2=sw, sigma_b2=sb, residual=True, sigma_v2=sv,
                                          sigma_a2=sa), 500, 8, 12, np.random.default_rng(5))
    assert np.all(np.abs(res.factor - factors) < Z * res.factor_se), (res.factor, factors)
    value, se = block_factor(res, 0, L)
    assert abs(value - np.prod(factors) ** (1 / L)) < Z * se
    assert np.all(np.abs(res.q - p) < Z * res.q_se + 2 * np.array(p) / 500)


def test_sign_diversity_and_nonlinearity_of_dense_tanh_layers():
    """Gaussian pre-activations: sign diversity arccos(c)/pi, nonlinear power 1 - E[phi']^2 q / E[phi^2].

    Layer 1's argument is the input (q0, c0); layer 2's has (q^1, c^1) of the q- and c-maps (quadrature).
    """
    sw, sb, q0, c0 = 2.0, 0.1, 1.5, 0.3
    q, c = _dense_theory(sw, sb, q0, c0, 1)
    res = measure_gradient_scales(network("tanh", 2, sigma_w2=sw, sigma_b2=sb), 500, 16, 20,
                                  np.random.default_rng(6), q0=q0, c0=c0)
    for k in (1, 2):
        qa, ca = q[k - 1], c[k - 1]
        sign = math.acos(ca) / math.pi
        nonlin = 1 - gauss(dtanh, qa) ** 2 * qa / gauss(lambda x: tanh(x) ** 2, qa)
        assert abs(res.sign_diversity[k - 1] - sign) < Z * res.sign_diversity_se[k - 1], (k, res.sign_diversity, sign)
        # finite N B: the ratio of sums has an O(1/(N B)) bias, far below the allowance
        assert abs(res.nonlinearity[k - 1] - nonlin) < Z * res.nonlinearity_se[k - 1] + 1e-3, (k, nonlin)
    assert abs(res.c[1] - c[1]) < Z * res.c_se[1] + 2 / 500
    lin = measure_gradient_scales(network("linear", 2, sigma_w2=1.0), 50, 4, 2, 0)
    np.testing.assert_allclose(lin.nonlinearity, 0, atol=1e-12)


# ----------------------------------------------------------------------------------------
# Reproducibility, memory, overflow, bad input
# ----------------------------------------------------------------------------------------


def test_reproducible_and_independent_of_the_memory_plan():
    net = SMALL[:4]
    a = measure_gradient_scales(net, 40, 5, 3, 123)
    b = measure_gradient_scales(net, 40, 5, 3, np.random.default_rng(123))
    # weights regenerated layer by layer in the backward pass: the same numbers
    setup = ap.check_arguments(net, 40, 5, 3, 1.0, 0.0, "float64", 60_000)
    assert not ap.plan(setup)
    c = measure_gradient_scales(net, 40, 5, 3, 123, memory_limit=60_000)
    for name in ("q", "c", "grad2", "sign_diversity", "nonlinearity"):
        np.testing.assert_array_equal(a.per_network[name], b.per_network[name])
        np.testing.assert_array_equal(a.per_network[name], c.per_network[name])
    d = measure_gradient_scales(net, 40, 5, 3, 124)
    assert not np.array_equal(a.grad2, d.grad2)
    # float32 draws its weights from the float32 normal sampler (another sample), but the same inputs
    f32 = measure_gradient_scales(net, 40, 5, 3, 123, dtype="float32")
    assert f32.dtype == "float32" and f32.n_diverged == 0
    np.testing.assert_allclose(f32.per_network["q"][:, 0], a.per_network["q"][:, 0], rtol=1e-6)
    assert not np.allclose(f32.q, a.q, rtol=1e-4)


def test_overflow_is_counted_not_raised():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = measure_gradient_scales(network("relu", 400, sigma_w2=50.0), 20, 4, 3, 0)
    assert res.n_diverged == 3 and res.diverged.all()
    assert np.isnan(res.factor).all() and np.isnan(res.q).all()
    assert not np.isfinite(res.per_network["q"][:, -1]).any()
    assert "3 of 3 diverged" in res.summary()


def test_too_large_a_request_is_refused_before_any_work():
    with pytest.raises(ValueError, match="memory_limit") as err:
        measure_gradient_scales(network("tanh", 10, sigma_w2=1.0), 100_000, 16, 1, 0)
    assert "GB" in str(err.value)
    with pytest.raises(ValueError, match="memory_limit"):
        measure_gradient_scales(network("tanh", 10, sigma_w2=1.0), 50, 4, 1, 0, memory_limit=1000)


LIN = network("linear", 2, sigma_w2=1.0)
BN4 = network("linear", 2, sigma_w2=1.0, norm="batch", batch_size=4)


@pytest.mark.parametrize("kwargs, name", [
    (dict(layers=[]), "layers"),
    (dict(layers="dense"), "layers"),
    (dict(layers=Layer("dense", "tanh", 1.0)), "layers"),
    (dict(layers=[LIN[0], 3]), "layers"),
    (dict(width=0), "width"),
    (dict(width=2.5), "width"),
    (dict(batch_size=1), "batch_size"),
    (dict(layers=BN4, batch_size=8), "batch_size"),
    (dict(n_networks=0), "n_networks"),
    (dict(q0=0.0), "q0"),
    (dict(q0=float("nan")), "q0"),
    (dict(q0="1"), "q0"),
    (dict(c0=1.5), "c0"),
    (dict(c0=-0.5), "c0"),
    (dict(layers=BN4, c0=1.0), "c0"),
    (dict(layers=BN4, c0=-0.1), "c0"),
    (dict(dtype="float16"), "dtype"),
    (dict(dtype="nonsense"), "dtype"),
    (dict(rng=-1), "rng"),
    (dict(memory_limit=-5), "memory_limit"),
])
def test_bad_arguments_raise_value_error_naming_them(kwargs, name):
    args = dict(layers=LIN, width=10, batch_size=4, n_networks=2, rng=0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        measure_gradient_scales(**args)


def test_activation_without_derivative_is_refused():
    from meanfield.activations import activation

    act = activation(lambda x: np.tanh(x))
    with pytest.raises(ValueError, match="derivative"):
        measure_gradient_scales([Layer("dense", act, 1.0)], 10, 4, 1, 0)
