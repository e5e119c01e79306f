"""Tests of meanfield.empirical against independent oracles.

Oracles: closed forms written out here (erf: Williams 1997; ReLU: Cho & Saul 2009), scipy
quadrature for tanh, finite differences of a forward pass written here from the sampled
parameters, exact finite-width moments (Hanin 2018) and free-probability spectra (Pennington et
al. 2017).  The module under test is never asked for the theory.
"""

from __future__ import annotations

import math
import time

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from scipy import integrate, stats

import meanfield.empirical as emp
from meanfield._network_pass import FAST
from meanfield.activations import activation

# ----------------------------------------------------------------------------------------
# Theory, written independently of the package
# ----------------------------------------------------------------------------------------

SQ2PI = math.sqrt(2 * math.pi)


def _gauss1(f, q):
    """E[f(sqrt(q) z)], z ~ N(0, 1), by adaptive quadrature."""
    val, _ = integrate.quad(lambda z: f(math.sqrt(q) * z) * math.exp(-z * z / 2) / SQ2PI, -np.inf, np.inf,
                            epsabs=1e-12, epsrel=1e-10)
    return val


def _gauss2(f, q1, q2, q12):
    """E[f(u1) f(u2)] for centred Gaussians with variances q1, q2 and covariance q12 (nested quad)."""
    c = max(-1.0, min(1.0, q12 / math.sqrt(q1 * q2)))
    s = math.sqrt(max(0.0, 1 - c * c))

    def inner(z1):
        g = lambda z2: f(math.sqrt(q2) * (c * z1 + s * z2)) * math.exp(-z2 * z2 / 2) / SQ2PI  # noqa: E731
        return integrate.quad(g, -12, 12, epsabs=1e-11, epsrel=1e-9)[0]

    return integrate.quad(lambda z1: f(math.sqrt(q1) * z1) * inner(z1) * math.exp(-z1 * z1 / 2) / SQ2PI,
                          -12, 12, epsabs=1e-11, epsrel=1e-9)[0]


def phi2_mean(kind, q1, q2, q12):
    """E[phi(u1) phi(u2)]."""
    if kind == "erf":
        return 2 / math.pi * math.asin(2 * q12 / math.sqrt((1 + 2 * q1) * (1 + 2 * q2)))
    if kind == "relu":
        c = max(-1.0, min(1.0, q12 / math.sqrt(q1 * q2)))
        th = math.acos(c)
        return math.sqrt(q1 * q2) * (math.sin(th) + (math.pi - th) * math.cos(th)) / (2 * math.pi)
    if kind == "tanh":
        if q12 == q1 == q2:
            return _gauss1(lambda u: math.tanh(u) ** 2, q1)
        return _gauss2(math.tanh, q1, q2, q12)
    raise ValueError(kind)


def dphi2_mean(kind, q):
    """E[phi'(sqrt(q) z)^2]."""
    if kind == "erf":
        return 4 / (math.pi * math.sqrt(1 + 4 * q))
    if kind == "relu":
        return 0.5
    if kind == "tanh":
        return _gauss1(lambda u: (1 - math.tanh(u) ** 2) ** 2, q)
    raise ValueError(kind)


def dphi_cross(kind, q1, q2, q12):
    """E[phi'(u1) phi'(u2)] (for the NTK)."""
    if kind == "erf":
        return 4 / math.pi / math.sqrt((1 + 2 * q1) * (1 + 2 * q2) - 4 * q12 * q12)
    if kind == "relu":
        th = math.acos(max(-1.0, min(1.0, q12 / math.sqrt(q1 * q2))))
        return (math.pi - th) / (2 * math.pi)
    raise ValueError(kind)


def theory_plain(kind, w2, b2, X, L, pair=(0, 1), rho=1.0):
    """Mean-field q^l (L, B), q12^l for one pair (L,), and backward factors chi/rho at q^l (L, B), l = 0..L-1."""
    d = X.shape[1]
    q = np.empty((L, X.shape[0]))
    q12 = np.empty(L)
    q[0] = w2 * np.sum(X * X, axis=1) / d + b2
    q12[0] = w2 * X[pair[0]] @ X[pair[1]] / d + b2
    for l in range(1, L):
        q[l] = [w2 / rho * phi2_mean(kind, qa, qa, qa) + b2 for qa in q[l - 1]]
        q12[l] = w2 * phi2_mean(kind, q[l - 1, pair[0]], q[l - 1, pair[1]], q12[l - 1]) + b2
    chi = np.array([[w2 * dphi2_mean(kind, qa) / rho for qa in row] for row in q])
    return q, q12, chi


# ----------------------------------------------------------------------------------------
# A forward pass written here from the sampled parameters (oracle for finite differences)
# ----------------------------------------------------------------------------------------


def params_of(net):
    """The sampled parameters as plain arrays (copies that the tests may perturb)."""
    P = {"spec": net.spec, "W": net.weights, "b": net.biases}
    if net.spec.residual:
        P["V"], P["a"] = net.res_weights, net.res_biases
    return P


def forward_from(P, phi, z, layer=None):
    """Output of a network from its input ``z = x`` (``layer`` None) or from ``z`` = layer ``layer``
    (``h^l``, or ``x^l`` if residual; layers l = 0..L-1, ``h^0 = W^0 x + b^0``)."""
    P = P if isinstance(P, dict) else params_of(P)
    spec, W, b = P["spec"], P["W"], P["b"]
    if spec.residual:
        for l in range(0 if layer is None else layer + 1, spec.depth):
            z = z + phi(z @ W[l].T + b[l]) @ P["V"][l].T + P["a"][l]
        return z
    h = z @ W[0].T + b[0] if layer is None else z
    for l in range(1 if layer is None else layer + 1, spec.depth):
        h = phi(h) @ W[l].T + b[l]
    return h


def fd_jacobian(f, z, eps=1e-6):
    cols = []
    for i in range(z.size):
        e = np.zeros_like(z)
        e[i] = eps
        cols.append((f(z + e) - f(z - e)) / (2 * eps))
    return np.stack(cols, axis=-1)


def inputs(d, norms, cos01=0.6, seed=0):
    """Inputs with |x_a|^2 / d = norms[a] and cos(x_0, x_1) = cos01."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((d, len(norms))))
    dirs = basis.T.copy()
    if len(norms) > 1:
        dirs[1] = cos01 * basis[:, 0] + math.sqrt(1 - cos01**2) * basis[:, 1]
    return dirs * np.sqrt(np.asarray(norms) * d)[:, None]


# ----------------------------------------------------------------------------------------
# Bad input: clear errors before heavy work
# ----------------------------------------------------------------------------------------


def test_bad_architecture_raises():
    with pytest.raises(ValueError, match="positive integer"):
        emp.NetworkSpec("tanh", sigma_w2=1, width=0, depth=3)
    with pytest.raises(ValueError, match="positive integer"):
        emp.NetworkSpec("tanh", sigma_w2=1, width=10, depth=0)
    with pytest.raises(ValueError, match="positive integer"):
        emp.NetworkSpec("tanh", sigma_w2=1, widths=[10, -2])
    with pytest.raises(ValueError, match="depth must be at least 1"):
        emp.NetworkSpec("tanh", sigma_w2=1, widths=[])
    with pytest.raises(ValueError, match="keep probability"):
        emp.NetworkSpec("tanh", sigma_w2=1, width=10, depth=2, rho=0.0)
    with pytest.raises(ValueError, match="keep probability"):
        emp.NetworkSpec("tanh", sigma_w2=1, width=10, depth=2, rho=1.5)
    with pytest.raises(ValueError, match="variance"):
        emp.NetworkSpec("tanh", sigma_w2=-1, width=10, depth=2)
    with pytest.raises(ValueError, match="variance"):
        emp.NetworkSpec("tanh", sigma_w2=1, sigma_b2=float("nan"), width=10, depth=2)
    with pytest.raises(ValueError, match="gaussian"):
        emp.NetworkSpec("tanh", sigma_w2=1, width=10, depth=2, weights="uniform")
    with pytest.raises(ValueError, match="dtype"):
        emp.NetworkSpec("tanh", sigma_w2=1, width=10, depth=2, dtype="float16")
    with pytest.raises(ValueError, match="equal widths"):
        emp.NetworkSpec("tanh", sigma_w2=1, widths=[10, 20], residual=True)
    with pytest.raises(ValueError, match="either"):
        emp.NetworkSpec("tanh", sigma_w2=1, widths=[10], width=10, depth=1)
    with pytest.raises(ValueError, match="unknown activation"):
        emp.NetworkSpec("tanhh", sigma_w2=1, width=10, depth=1)


def test_bad_inputs_raise():
    spec = emp.NetworkSpec("tanh", sigma_w2=1.5, width=20, depth=3)
    X = np.ones((3, 5))
    X[1, 2] = np.nan
    with pytest.raises(ValueError, match="finite"):
        emp.run(spec, X, 0)
    with pytest.raises(ValueError, match="shape"):
        emp.run(spec, np.ones((0, 5)), 0)
    with pytest.raises(ValueError, match="pairs"):
        emp.run(spec, np.ones((3, 5)), 0, pairs=[[0, 3]])
    res = emp.NetworkSpec("tanh", sigma_w2=1.5, width=20, depth=3, residual=True)
    with pytest.raises(ValueError, match="input dimension"):
        emp.run(res, np.ones((3, 5)), 0)
    for bad in (0, -1.0, float("inf"), "lots", True):
        with pytest.raises(ValueError, match="memory_limit"):
            emp.run(spec, np.ones((3, 5)), 0, memory_limit=bad)
    with pytest.raises(ValueError, match="memory_limit"):
        emp.sample_network(spec, 5, 0, memory_limit=0)
    no_dphi = emp.NetworkSpec(activation(np.tanh), sigma_w2=1.5, width=20, depth=3)
    with pytest.raises(ValueError, match="derivative"):
        emp.run(no_dphi, np.ones((3, 5)), 0)
    r = emp.run(no_dphi, np.ones((3, 5)), 0, gradients=False)  # forward needs no phi'
    assert np.all(np.isfinite(r.q))


def test_too_large_jacobian_refused_before_work():
    spec = emp.NetworkSpec("tanh", sigma_w2=1.5, width=100_000, depth=50)
    X = np.ones((4, 20_000))
    t = time.perf_counter()
    with pytest.raises(ValueError, match=r"GB.*memory_limit = 4.29 GB"):  # the package default, 4 GiB
        emp.run(spec, X, 0, jacobian=True)
    assert time.perf_counter() - t < 0.5  # refused before sampling 50 layers of 1e10 weights
    with pytest.raises(ValueError, match="parameters need"):
        emp.sample_network(spec, 20_000, 0)
    with pytest.raises(ValueError, match="pairs"):
        emp.run(emp.NetworkSpec("tanh", sigma_w2=1, width=4, depth=4), np.ones((20_000, 3)), 0,
                      gradients=False, memory_limit=2**28)


# ----------------------------------------------------------------------------------------
# Exactness: fast paths, chunking, sampled networks, derivatives by finite differences
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FAST))
def test_fast_nonlinearities_match_activation_table(name):
    act = activation(name)
    h = np.random.default_rng(0).standard_normal(2000) * 3
    h = h[np.abs(np.abs(h) - 1) > 1e-9]  # away from hard_tanh's kinks
    phi, dphi = FAST[name](h, True)
    np.testing.assert_allclose(phi, act.phi(h), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(dphi, act.dphi(h), rtol=1e-12, atol=1e-15)
    assert FAST[name](h.astype(np.float32), True)[1].dtype == np.float32


@pytest.mark.parametrize("kw", [
    dict(act="tanh", sigma_w2=1.7, sigma_b2=0.1, widths=[30, 40, 25]),
    dict(act="relu", sigma_w2=2.0, sigma_b2=0.1, width=32, depth=3, rho=0.7),
    dict(act="erf", sigma_w2=1.0, sigma_b2=0.1, width=12, depth=3, residual=True, sigma_v2=0.5, sigma_a2=0.1),
    dict(act="tanh", sigma_w2=1.2, width=30, depth=3, weights="orthogonal", dtype="float32"),
])
def test_results_do_not_depend_on_chunking(kw):
    spec = emp.NetworkSpec(kw.pop("act"), **kw)
    d = 12 if spec.residual else 9
    X = np.random.default_rng(1).standard_normal((7, d))
    opts = dict(jacobian=True, jvp=True)
    big = emp.run(spec, X, 3, **opts)
    small = emp.run(spec, X, 3, memory_limit=120_000, **opts)  # forces chunks of 1-2 inputs
    rtol = 1e-4 if spec.dtype == np.float32 else 1e-10
    for name in ("q", "q12", "p", "grad_sq", "grad_input_sq", "grad_w_sq", "jvp_sq", "jacobian_sv", "output"):
        a, b = getattr(big, name), getattr(small, name)
        if a is None:
            assert b is None and (name != "p" or not spec.residual)
            continue
        np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-12, err_msg=name)
    assert big.output.dtype == spec.dtype


def test_sampled_network_matches_run_and_handwritten_forward():
    spec = emp.NetworkSpec("tanh", sigma_w2=1.5, sigma_b2=0.2, widths=[7, 6, 5])
    X = np.random.default_rng(2).standard_normal((4, 3))
    net = emp.sample_network(spec, 3, np.random.default_rng(9))
    r = emp.run(spec, X, np.random.default_rng(9), gradients=False)
    np.testing.assert_allclose(net(X), r.output, rtol=1e-13)
    np.testing.assert_allclose(forward_from(net, np.tanh, X), r.output, rtol=1e-13)
    assert [w.shape for w in net.weights] == [(7, 3), (6, 7), (5, 6)]  # W^0, W^1, W^2: (N_l, N_{l-1})
    equal = emp.sample_network(emp.NetworkSpec("tanh", sigma_w2=1.0, width=5, depth=3), 5, 0).weights
    assert not np.allclose(equal[1], equal[2])  # independent layers, no shared memory
    # layer 0 is h^0 = W^0 x + b^0, recorded at index 0
    np.testing.assert_allclose(r.q[0], np.mean((X @ net.weights[0].T + net.biases[0]) ** 2, axis=1), rtol=1e-13)
    np.testing.assert_array_equal(r.layers, [0, 1, 2])


@pytest.mark.parametrize("case", ["plain", "residual"])
def test_gradients_jvp_jacobian_against_finite_differences(case):
    if case == "plain":
        spec = emp.NetworkSpec("tanh", sigma_w2=1.8, sigma_b2=0.3, widths=[6, 7, 5])
        d = 4
    else:
        spec = emp.NetworkSpec("erf", sigma_w2=1.1, sigma_b2=0.2, width=5, depth=3, residual=True,
                               sigma_v2=0.7, sigma_a2=0.1)
        d = 5
    rng = np.random.default_rng(4)
    X = rng.standard_normal((3, d))
    g = rng.standard_normal((3, spec.widths[-1]))
    u = rng.standard_normal((3, d))
    net = emp.sample_network(spec, d, rng)
    phi = activation(spec.act).phi
    r = emp.run(net, X, 0, output_gradient=g, jvp=u, jacobian=True, keep_activations=True)
    for a in range(3):
        J = fd_jacobian(lambda x: forward_from(net, phi, x), X[a])
        np.testing.assert_allclose(r.grad_input_sq[a], np.sum((g[a] @ J) ** 2), rtol=1e-7)
        np.testing.assert_allclose(r.jvp_sq[-1, a], np.sum((J @ u[a]) ** 2), rtol=1e-7)
        np.testing.assert_allclose(r.jacobian_sv[a], np.linalg.svd(J, compute_uv=False), rtol=1e-7, atol=1e-10)
        # per-layer gradient: d(g . out)/d(state of layer l), l = 0..L-1, at index l
        for l in range(spec.depth):
            Jl = fd_jacobian(lambda z, l=l: forward_from(net, phi, z, l), _state(net, phi, X[a], l))
            np.testing.assert_allclose(r.grad_sq[l, a], np.sum((g[a] @ Jl) ** 2), rtol=1e-6, err_msg=f"l={l}")
            # J^l = dh^l/dx (residual dx^l/dx) of the tangent, forward mode
            Jx = fd_jacobian(lambda x, l=l: _state(net, phi, x, l), X[a])
            np.testing.assert_allclose(r.jvp_sq[l, a], np.sum((Jx @ u[a]) ** 2), rtol=1e-6, err_msg=f"l={l}")
    # grad_w_sq of layer 0 is ||delta^0||^2 ||x||^2 (plain) by the chain rule
    if not spec.residual:
        np.testing.assert_allclose(r.grad_w_sq[0], r.grad_sq[0] * np.sum(X * X, axis=1), rtol=1e-12)


def _state(net, phi, x, l):
    """Layer l of the network for input x: h^l, or x^l if residual (the output of layers 0..l)."""
    s = net.spec
    spec = emp.NetworkSpec(s.act, sigma_w2=s.sigma_w2, sigma_b2=s.sigma_b2, widths=s.widths[:l + 1],
                           residual=s.residual, sigma_v2=s.sigma_v2, sigma_a2=s.sigma_a2)
    return forward_from({"spec": spec, **{k: v[:l + 1] for k, v in params_of(net).items() if k != "spec"}}, phi, x)


def test_post_activation_jacobian_against_finite_differences():
    spec = emp.NetworkSpec("tanh", sigma_w2=1.3, sigma_b2=0.1, widths=[6, 5, 4])
    X = np.random.default_rng(5).standard_normal((2, 3))
    net = emp.sample_network(spec, 3, 1)
    r = emp.run(net, X, 0, jacobian="post", gradients=False)
    for a in range(2):
        J = fd_jacobian(lambda x: np.tanh(forward_from(net, np.tanh, x)), X[a])
        np.testing.assert_allclose(r.jacobian_sv[a], np.linalg.svd(J, compute_uv=False), rtol=1e-7)


@pytest.mark.parametrize("parametrization", ["ntk", "standard"])
@pytest.mark.parametrize("case", ["plain", "residual"])
def test_ntk_against_finite_difference_parameter_gradients(case, parametrization):
    if case == "plain":
        spec = emp.NetworkSpec("tanh", sigma_w2=1.6, sigma_b2=0.3, widths=[4, 5, 2])
        d = 3
    else:
        spec = emp.NetworkSpec("tanh", sigma_w2=1.2, sigma_b2=0.2, width=3, depth=2, residual=True,
                               sigma_v2=0.8, sigma_a2=0.3)
        d = 3
    X = np.random.default_rng(6).standard_normal((3, d))
    net = emp.sample_network(spec, d, 11)
    P = params_of(net)
    groups = [(P["W"], spec.sigma_w2, True), (P["b"], spec.sigma_b2, False)]
    if spec.residual:
        groups += [(P["V"], spec.sigma_v2, True), (P["a"], spec.sigma_a2, False)]
    eps = 1e-6
    grads = []  # rows: parameters; columns: inputs
    for arrays, var, is_weight in groups:
        for arr in arrays:
            n_in = arr.shape[1] if is_weight else None
            coef = (var / n_in if is_weight else var) if parametrization == "ntk" else 1.0
            for idx in np.ndindex(arr.shape):
                old = arr[idx]
                arr[idx] = old + eps
                fp = forward_from(P, np.tanh, X)[:, 0]
                arr[idx] = old - eps
                fm = forward_from(P, np.tanh, X)[:, 0]
                arr[idx] = old
                grads.append(math.sqrt(coef) * (fp - fm) / (2 * eps))
    G = np.array(grads)
    theta_fd = G.T @ G
    theta = emp.empirical_ntk(net, X, 1, 0, parametrization=parametrization).mean
    np.testing.assert_allclose(theta, theta_fd, rtol=1e-7, atol=1e-9)


def test_layers_are_numbered_from_zero():
    """Layer l is the pre-activation after l nonlinear layers: index l of every record, layers 0..L-1."""
    spec = emp.NetworkSpec("tanh", sigma_w2=1.4, sigma_b2=0.1, widths=[8, 7, 6, 5])
    X = np.random.default_rng(3).standard_normal((3, 4))
    net = emp.sample_network(spec, 4, 2)
    r = emp.run(net, X, 0, keep_activations=True)
    np.testing.assert_array_equal(r.layers, np.arange(4))
    for l in range(4):
        h = r.activations[l]
        np.testing.assert_allclose(h, _state(net, np.tanh, X, l), rtol=1e-12)  # shape (B, N_l)
        np.testing.assert_allclose(r.q[l], np.mean(h * h, axis=1), rtol=1e-12)
        np.testing.assert_allclose(r.q12[l], h @ h.T / spec.widths[l], rtol=1e-12)
        # the input of W^l is x (l = 0) or phi(h^{l-1})
        a = X if l == 0 else np.tanh(r.activations[l - 1])
        np.testing.assert_allclose(r.grad_w_sq[l], r.grad_sq[l] * np.sum(a * a, axis=1), rtol=1e-12)
    np.testing.assert_array_equal(r.output, r.activations[-1])
    # empirical_nngp(layer=l) is layer l of the same networks' records (the same rng, no gradients)
    sim = emp.simulate(spec, X, 3, 5, gradients=False)
    np.testing.assert_array_equal(sim.layers, np.arange(4))
    np.testing.assert_array_equal(emp.compare(np.ones(4), sim.q[:, :, 0]).layers, np.arange(4))
    for l in range(4):
        est = emp.empirical_nngp(spec, X, 3, 5, layer=l, return_samples=True)
        np.testing.assert_array_equal(est.samples, sim.q12[:, l])
    for bad in (-1, 4, 1.5, True, "0"):
        with pytest.raises(ValueError, match=r"layer must be an integer in 0\.\.3"):
            emp.empirical_nngp(spec, X, 2, 0, layer=bad)


# ----------------------------------------------------------------------------------------
# Orthogonal weights are Haar
# ----------------------------------------------------------------------------------------


def test_orthogonal_weights_are_scaled_haar():
    spec = emp.NetworkSpec("linear", sigma_w2=1.7, widths=[40, 40, 25], weights="orthogonal")
    W0, W1, W2 = emp.sample_network(spec, 40, 0).weights
    np.testing.assert_allclose(W1 @ W1.T, 1.7 * np.eye(40), atol=1e-12)  # sqrt(sigma_w2) O
    np.testing.assert_allclose(W2 @ W2.T, 1.7 * np.eye(25), atol=1e-12)  # rows orthonormal, entries var 1.7/40
    spec = emp.NetworkSpec("linear", sigma_w2=1.0, widths=[60], weights="orthogonal")
    W = emp.sample_network(spec, 30, 0).weights[0]  # tall: columns orthogonal, entries var 1/30
    np.testing.assert_allclose(W.T @ W, 2.0 * np.eye(30), atol=1e-12)
    # Haar on O(3): E tr O = 0 and E (tr O)^2 = 1 (Diaconis & Shahshahani); without the sign fix E tr O != 0
    small = emp.NetworkSpec("linear", sigma_w2=1.0, widths=[3], weights="orthogonal")
    rng = np.random.default_rng(0)
    tr = np.array([np.trace(emp.sample_network(small, 3, rng).weights[0]) for _ in range(4000)])
    assert abs(tr.mean()) < 4 * tr.std() / math.sqrt(tr.size)
    assert abs(np.mean(tr**2) - 1) < 4 * np.std(tr**2) / math.sqrt(tr.size)


# ----------------------------------------------------------------------------------------
# The comparison helper and its plot
# ----------------------------------------------------------------------------------------


def test_compare_statistics():
    rng = np.random.default_rng(0)
    theory = np.linspace(1, 2, 10)
    samples = theory + rng.standard_normal((25, 10)) * 0.1
    cmp = emp.compare(theory, samples, confidence=0.99)
    assert cmp.passed and bool(cmp)
    np.testing.assert_allclose(cmp.threshold, stats.t.ppf(1 - 0.01 / 10 / 2, 24))
    np.testing.assert_allclose(cmp.sem, samples.std(0, ddof=1) / 5)
    np.testing.assert_allclose(cmp.z, (samples.mean(0) - theory) / cmp.sem)
    shifted = emp.compare(theory + 12 * cmp.sem, samples)
    assert not shifted.passed and not shifted.layer_passed.any()
    assert "FAIL" in shifted.summary()
    tolerant = emp.compare(theory + 12 * cmp.sem, samples, atol=12 * cmp.sem.max())
    assert tolerant.passed
    per_layer = emp.compare(theory, samples, familywise=False)
    assert per_layer.threshold == pytest.approx(stats.t.ppf(0.995, 24))
    by_stats = emp.compare(theory, mean=cmp.mean, sem=cmp.sem)
    assert by_stats.threshold == pytest.approx(stats.norm.ppf(1 - 0.01 / 20))
    # calibration: with the true theory, 99% family-wise passes about 99% of the time
    passes = np.mean([emp.compare(theory, theory + rng.standard_normal((25, 10))).passed for _ in range(400)])
    assert passes > 0.96
    with pytest.raises(ValueError, match="n_networks >= 2"):
        emp.compare(theory, samples[:1])
    with pytest.raises(ValueError, match="confidence"):
        emp.compare(theory, samples, confidence=1.0)


def test_plot_comparison_draws_line_and_band():
    from matplotlib.collections import PolyCollection

    from meanfield.plotting import plot_comparison

    theory = np.linspace(1, 2, 8)
    samples = theory + np.random.default_rng(0).standard_normal((10, 8)) * 0.05
    samples[:, 3] += 1.0
    cmp = emp.compare(theory, samples, label="q")
    fig, ax = plot_comparison(cmp)
    np.testing.assert_allclose(ax.lines[0].get_ydata(), theory)
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 1
    ys = bands[0].get_paths()[0].vertices[:, 1]
    assert ys.max() == pytest.approx((cmp.mean + cmp.threshold * cmp.sem).max())
    assert any(line.get_marker() == "x" for line in ax.lines)  # the failing layer is marked
    assert ax.get_title() == "q"
    fig2, ax2 = plot_comparison(cmp, ax=ax, nsigma=1)
    assert ax2 is ax and fig2 is fig
    import matplotlib.pyplot as plt

    plt.close(fig)


# ----------------------------------------------------------------------------------------
# Mean field at width >= 1000 (statistical; fixed seeds)
# ----------------------------------------------------------------------------------------

PHASES = {
    ("tanh", "ordered"): (1.2, 0.05),
    ("tanh", "chaotic"): (3.0, 0.05),
    ("erf", "ordered"): (0.7, 0.2),
    ("erf", "chaotic"): (3.0, 0.05),
    ("relu", "ordered"): (1.5, 0.1),
    ("relu", "chaotic"): (2.4, 0.05),
}


@pytest.mark.slow
@pytest.mark.parametrize("kind,phase", list(PHASES))
def test_mean_field_at_width_1000(kind, phase):
    w2, b2 = PHASES[(kind, phase)]
    L, N = 8, 1000
    X = inputs(50, [0.5, 2.0, 1.0], cos01=0.6)
    X = np.concatenate([X, np.repeat(X[2:], 7, axis=0)])  # copies of input 2 get independent output gradients
    spec = emp.NetworkSpec(kind, sigma_w2=w2, sigma_b2=b2, width=N, depth=L)
    sim = emp.simulate(spec, X, 16, np.random.default_rng(list(PHASES).index((kind, phase))), pairs=[[0, 1]])
    q, q12, chi = theory_plain(kind, w2, b2, X[:3], L)
    chi_deep = chi[-1, 2]
    assert (chi_deep < 1) if phase == "ordered" else (chi_deep > 1), chi_deep  # the setup is in that phase
    for a in range(3):
        cmp = emp.compare(q[:, a], sim.q[:, :, a], confidence=0.999, label=f"q input {a}")
        assert cmp.passed, cmp.summary()
    c_theory = q12 / np.sqrt(q[:, 0] * q[:, 1])
    cmp = emp.compare(c_theory, sim.c[:, :, 0], confidence=0.999, label="c")
    assert cmp.passed, cmp.summary()
    ratio = sim.gradient_ratio(inputs=range(2, 10))
    cmp = emp.compare(chi[:-1, 2], ratio, confidence=0.999, label="gradient ratio")
    assert cmp.passed, cmp.summary()
    # power: a 10% error in sigma_w2 (q-map), or of 10% in the backward factor, would be caught
    q_wrong, _, _ = theory_plain(kind, 1.1 * w2, b2, X[:3], L)
    assert not emp.compare(q_wrong[:, 2], sim.q[:, :, 2], confidence=0.999).passed
    assert not emp.compare(1.1 * chi[:-1, 2], ratio, confidence=0.999).passed


@pytest.mark.slow
def test_dropout_mean_field():
    """Dropout: sigma_w2 / rho on the diagonal of the q-map only; backward factor chi_1 / rho."""
    rho, w2, b2, L = 0.7, 1.5, 0.1, 6
    X = inputs(50, [1.0, 1.0], cos01=0.5)
    spec = emp.NetworkSpec("erf", sigma_w2=w2, sigma_b2=b2, width=1200, depth=L, rho=rho)
    sim = emp.simulate(spec, X, 10, 21)
    q, q12, chi = theory_plain("erf", w2, b2, X, L, rho=rho)
    assert emp.compare(q[:, 0], sim.q[:, :, 0], confidence=0.999).passed
    c = q12 / np.sqrt(q[:, 0] * q[:, 1])
    cmp = emp.compare(c, sim.c[:, :, 0, 1], confidence=0.999)
    assert cmp.passed, cmp.summary()
    cmp = emp.compare(chi[:-1, 0], sim.gradient_ratio(inputs=0), confidence=0.999)
    assert cmp.passed, cmp.summary()
    assert not emp.compare(chi[:-1, 0] * rho, sim.gradient_ratio(inputs=0), confidence=0.999).passed


@pytest.mark.slow
def test_residual_mean_field():
    """Yang & Schoenholz 2017, layers l = 0..L-1 from x^{-1} = x: q^l = sigma_w2 p^{l-1} + sigma_b2,
    p^l = p^{l-1} + sigma_v2 E phi(h^l)^2 + sigma_a2, p^{-1} = |x|^2 / N; the gradient from x^{l+1} back to
    x^l grows by 1 + sigma_v2 sigma_w2 E phi'(h^{l+1})^2 (gradient_ratio()[:, l] against factor[l + 1])."""
    w2, b2, v2, a2, L, N = 1.0, 0.1, 0.5, 0.05, 8, 1000
    x = inputs(N, [1.0])
    spec = emp.NetworkSpec("tanh", sigma_w2=w2, sigma_b2=b2, width=N, depth=L, residual=True, sigma_v2=v2, sigma_a2=a2)
    sim = emp.simulate(spec, x, 10, 5, pairs=None)
    p_prev = float(x[0] @ x[0]) / N
    q_th, p_th = [], []
    for _ in range(L):
        ql = w2 * p_prev + b2
        p_prev = p_prev + v2 * phi2_mean("tanh", ql, ql, ql) + a2
        q_th.append(ql)
        p_th.append(p_prev)
    q_th = np.array(q_th)
    factor = 1 + v2 * w2 * np.array([dphi2_mean("tanh", ql) for ql in q_th])
    for th, s in ((q_th, sim.q[:, :, 0]), (np.array(p_th), sim.p[:, :, 0]), (factor[1:], sim.gradient_ratio())):
        cmp = emp.compare(th, s, confidence=0.999)
        assert cmp.passed, cmp.summary()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["erf", "relu"])
def test_empirical_nngp_and_ntk_against_closed_forms(kind):
    w2, b2, L, N = (1.6, 0.1, 3, 1000) if kind == "erf" else (1.8, 0.2, 3, 1000)
    X = inputs(20, [0.5, 1.5, 1.0, 0.8], cos01=0.3, seed=3)
    B = X.shape[0]
    K = w2 * X @ X.T / X.shape[1] + b2  # K^0 = Theta^0, layer 0: h^0 = W^0 x + b^0
    T = K.copy()
    for _ in range(1, L):
        d = np.sqrt(np.diag(K))
        Kn = np.array([[w2 * phi2_mean(kind, K[i, i], K[j, j], K[i, j]) + b2 for j in range(B)] for i in range(B)])
        Kd = np.array([[w2 * dphi_cross(kind, K[i, i], K[j, j], K[i, j]) for j in range(B)] for i in range(B)])
        assert d.size == B
        T = Kn + Kd * T
        K = Kn
    iu = np.triu_indices(B)
    spec = emp.NetworkSpec(kind, sigma_w2=w2, sigma_b2=b2, widths=[N] * (L - 1) + [N])  # layers 0..L-1
    nngp = emp.empirical_nngp(spec, X, 30, 7, return_samples=True)  # default: the output layer L-1
    cmp = emp.compare(K[iu], nngp.samples[:, iu[0], iu[1]], confidence=0.999, label="NNGP")
    assert cmp.passed, cmp.summary()
    np.testing.assert_allclose(nngp.mean, nngp.samples.mean(0))
    ntk_spec = emp.NetworkSpec(kind, sigma_w2=w2, sigma_b2=b2, widths=[N] * (L - 1) + [1])
    ntk = emp.empirical_ntk(ntk_spec, X, 30, 8, return_samples=True)
    cmp = emp.compare(T[iu], ntk.samples[:, iu[0], iu[1]], confidence=0.999, label="NTK")
    assert cmp.passed, cmp.summary()
    # power: the NTK differs from the NNGP, and the estimate resolves the difference
    assert not emp.compare(K[iu], ntk.samples[:, iu[0], iu[1]], confidence=0.999).passed


# ----------------------------------------------------------------------------------------
# Finite width: Hanin 2018; Jacobian spectra at criticality: Pennington et al. 2017
# ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_hanin_fourth_moment_of_jacobian_vector_norm():
    """Bias-free ReLU, sigma_w2 = 2, Gaussian weights, unit u: ||J u||^2 (J = dh^{L-1}/dx, layers 0..L-1)
    is a product of independent factors, so E||Ju||^4 / (E||Ju||^2)^2 = prod_{j=0}^{L-2} (1 + 5/N_j) *
    (1 + 2/N_{L-1}) exactly: a gated layer j (phi'(h^j) before W^{j+1}) contributes 1 + 5/N_j (Hanin
    2018), the ungated output layer a chi^2 factor 1 + 2/N_{L-1}."""
    widths = [48, 64, 40, 56]
    spec = emp.NetworkSpec("relu", sigma_w2=2.0, sigma_b2=0.0, widths=widths)
    rng = np.random.default_rng(2018)
    X = rng.standard_normal((32, 30))
    m1, m2 = [], []
    for _ in range(1200):
        r = emp.run(spec, X, rng, gradients=False, pairs=None, jvp=True)
        x = r.jvp_sq[-1]
        m1.append(x.mean())
        m2.append((x * x).mean())
    m1, m2 = np.array(m1), np.array(m2)
    ratio = m2.mean() / m1.mean() ** 2
    # delta method for a ratio of means over independent networks
    grad = np.array([1 / m1.mean() ** 2, -2 * m2.mean() / m1.mean() ** 3])
    cov = np.cov(np.stack([m2, m1])) / m1.size
    se = math.sqrt(grad @ cov @ grad)
    exact = np.prod([1 + 5 / n for n in widths[:-1]]) * (1 + 2 / widths[-1])
    assert abs(ratio - exact) < 4 * se, (ratio, exact, se)
    assert se < 0.02 * exact
    # the finite-width excess is real: not the Gaussian-limit value 1, not the naive (1 + 2/n) chi^2 product
    assert ratio - 1 > 10 * se
    naive = np.prod([1 + 2 / n for n in widths])
    assert abs(ratio - naive) > 4 * se
    # and E||Ju||^2 = sigma_w2 N_{L-1} / d_in (gated layers preserve it on average)
    assert abs(m1.mean() - 2 * widths[-1] / X.shape[1]) < 4 * m1.std() / math.sqrt(m1.size)


def _spectral_variance(sv):
    lam = sv**2
    return np.mean(np.mean(lam**2, axis=-1) / np.mean(lam, axis=-1) ** 2 - 1)


@pytest.mark.slow
@pytest.mark.parametrize("act,w2,weights,jac,expected", [
    ("linear", 1.0, "gaussian", "pre", lambda L: L),                # products of Ginibre matrices
    ("relu", 2.0, "gaussian", "post", lambda L: L / 0.5),           # REFERENCES.md: L / p, p = 1/2
    ("relu", 2.0, "gaussian", "pre", lambda L: L + (L - 1) * 1.0),  # without the last phi': one gate fewer
    ("relu", 2.0, "orthogonal", "post", lambda L: L * 0.5 / 0.5),   # L (1 - p) / p
])
def test_jacobian_spectrum_variance_at_criticality(act, w2, weights, jac, expected):
    """Variance of the spectrum of J J^T (normalised by its mean) for depth L, layers 0..L-1 (Pennington
    et al. 2017): J = d phi(h^{L-1})/dx ("post": L weight matrices W^0..W^{L-1}, L gates phi'(h^l)) or
    dh^{L-1}/dx ("pre": L - 1 gates).  Free multiplicative convolution adds the variances of the factors:
    W W^T Gaussian 1 (orthogonal 0), each ReLU gate D^2 (values 0 and 2) 1/p - 1 = 1."""
    L, N = 4, 300
    spec = emp.NetworkSpec(act, sigma_w2=w2, sigma_b2=0.0, width=N, depth=L, weights=weights)
    X = np.random.default_rng(0).standard_normal((2, N))
    vals = [_spectral_variance(emp.run(spec, X, s, gradients=False, pairs=None, jacobian=jac).jacobian_sv)
            for s in range(3)]
    assert np.mean(vals) == pytest.approx(expected(L), rel=0.06)


def test_empirical_ntk_refuses_dropout():
    spec = emp.NetworkSpec("tanh", sigma_w2=1.0, width=4, depth=2, rho=0.5)
    with pytest.raises(ValueError, match="dropout"):
        emp.empirical_ntk(spec, np.ones((2, 3)), 2, 0)


def _internal_imports(module_file):
    """(module, names) of every meanfield import in a file, module relative to the package."""
    import ast
    import pathlib

    out = []
    for node in ast.walk(ast.parse(pathlib.Path(module_file).read_text())):
        if isinstance(node, ast.ImportFrom) and (node.level > 0 or (node.module or "").startswith("meanfield")):
            module = (node.module or "").removeprefix("meanfield.").removeprefix("meanfield")
            if module:
                out.append((module, [a.name for a in node.names]))
            else:  # from . import _network_pass
                out.extend((a.name, []) for a in node.names)
        elif isinstance(node, ast.Import):
            out.extend((a.name.removeprefix("meanfield."), []) for a in node.names if a.name.startswith("meanfield"))
    return out


def test_empirical_imports_only_the_activation_table():
    """The module is the independent check of the theory: no maps, fixed points or kernels.

    It and the private modules it is made of import only the activation table, the plain argument
    checks, the task runner and each other, and never an underscored name from another module."""
    import pathlib

    package = pathlib.Path(emp.__file__).parent
    allowed = {"activations", "_validate", "architecture", "runner"}
    seen, todo = set(), ["empirical"]
    while todo:
        name = todo.pop()
        seen.add(name)
        for module, names in _internal_imports(package / f"{name}.py"):
            assert not [n for n in names if n.startswith("_")], (name, module, names)
            if module not in allowed and module not in seen:
                assert module.startswith("_"), f"{name} imports meanfield.{module}"
                todo.append(module)
    assert seen - {"empirical"} <= {"_network_pass", "_empirical_checks", "_empirical_results", "_comparison",
                                    "_architecture_pass", "_gradient_scales", "_threads", "_empirical_tasks",
                                    "_portable"}


def test_no_public_name_shared_with_dynamics():
    """One name per thing: a sampled network's pass is ``run``/``NetworkRun``, the theory's ``propagate``."""
    from meanfield import dynamics

    assert not set(emp.__all__) & set(dynamics.__all__)
    assert not hasattr(emp, "propagate") and not hasattr(emp, "Propagation")
    assert all(hasattr(emp, name) for name in emp.__all__)
    assert "DEFAULT_MEMORY_LIMIT" not in emp.__all__


def test_float32_correlations_survive_variances_beyond_float32_range():
    # relu, sigma_w2 = 4: q doubles per layer and passes float32's 3.4e38 near layer 128; q was finite
    # (accumulated in float64) but q12 overflowed to inf and c with it
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2, 50))
    spec = emp.NetworkSpec("relu", sigma_w2=4.0, sigma_b2=0.0, width=200, depth=130, dtype="float32")
    sim = emp.simulate(spec, X, 2, rng, gradients=False)
    assert np.all(sim.q[:, -1] > 3.4e38) and np.all(np.isfinite(sim.q12))
    assert np.all(np.abs(sim.c) <= 1 + 1e-6) and np.all(sim.c[:, -1, 0, 1] > 0.9)


def test_one_hidden_weight_matrix_counts_against_memory_limit():
    # width 20000: one 20000 x 20000 float64 matrix is 3.2 GB, refused under 1e8 bytes before sampling
    spec = emp.NetworkSpec("tanh", sigma_w2=1.5, width=20000, depth=2)
    with pytest.raises(ValueError, match=r"need 3\.2 GB, more than memory_limit = 100 MB"):
        emp.run(spec, np.ones((2, 10)), np.random.default_rng(0), memory_limit=1e8)


def test_negative_seed_is_refused_clearly():
    with pytest.raises(ValueError, match="non-negative integer seed"):
        emp.run(emp.NetworkSpec("tanh", sigma_w2=1.5, width=5, depth=2), np.ones((1, 3)), -1)


def test_dropout_with_a_table_activation_that_returns_a_shared_array():
    """leaky_relu with dropout (and forward-mode tangents) runs, and equals the same function typed as an expression."""
    X = np.random.default_rng(0).standard_normal((3, 5))
    runs = [emp.simulate(emp.NetworkSpec(act, sigma_w2=2.0, sigma_b2=0.1, width=50, depth=3, rho=0.8), X, 2,
                               np.random.default_rng(1), jvp=True)
            for act in ("leaky_relu", "Max(x, 0.01*x)")]
    assert np.all(np.isfinite(runs[0].q)) and np.all(np.isfinite(runs[0].jvp_sq))
    np.testing.assert_array_equal(runs[0].q, runs[1].q)
    np.testing.assert_array_equal(runs[0].jvp_sq, runs[1].jvp_sq)
