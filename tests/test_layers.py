"""The layer rule (meanfield.layers) and the answers at its edges: zero bias, q* = 0 and q* = inf.

Every consumer (analyze, phase_diagram, propagate, gradient_growth, the maps) must give the same
answer at the special points, that answer must be the network's with exactly those parameters
(checked against closed forms and sampled networks), and the sigma_b2 -> 0+ limit must be
reported beside it, not substituted for it.
"""

import math

import numpy as np
import pytest
from scipy import integrate, optimize

import meanfield as mf
from meanfield import empirical as emp
from meanfield.layers import Dense, asymptotic_activation, core_expectations, local_activation

FIELDS = ("q_star", "c_star", "chi_1", "chi_c", "q_slope", "xi_q", "xi_c", "trainable_depth", "gradient_factor")

# (activation, sigma_w2, sigma_b2, rho): q* = 0 with and without dropout, q* = inf, kinks, c -> 1
SPECIAL = [
    ("relu", 1.0, 0.0, 1.0), ("relu", 1.0, 0.0, 0.8), ("relu", 2.0, 0.0, 1.0), ("relu", 3.0, 0.0, 1.0),
    ("relu", 3.0, 0.1, 1.0), ("relu", 3.0, 0.1, 0.7), ("leaky_relu", 1.0, 0.0, 0.8), ("abs", 0.5, 0.0, 0.9),
    ("tanh", 0.5, 0.0, 1.0), ("tanh", 0.5, 0.0, 0.8), ("tanh", 1.0, 0.0, 1.0), ("tanh", 3.0, 0.0, 1.0),
    ("tanh", 1.7615, 0.05, 1.0), ("erf", 0.5, 0.0, 1.0), ("erf", 0.5, 0.0, 0.9), ("gelu", 2.0, 0.0, 1.0),
    ("gelu", 2.0, 0.0, 0.8), ("gelu", 6.0, 0.1, 1.0), ("hard_tanh", 0.5, 0.0, 1.0), ("hard_tanh", 3.0, 0.05, 1.0),
    ("elu", 4.0, 0.0, 1.0), ("elu", 0.5, 0.0, 1.0), ("softplus", 1.0, 0.0, 1.0), ("tanh", 0.0, 0.0, 1.0),
]


def _J1(c):
    """E[relu(z1) relu(z2)] / E[relu(z)^2] for unit normals of correlation c (Cho & Saul 2009)."""
    th = math.acos(c)
    return (math.sin(th) + (math.pi - th) * c) / math.pi


@pytest.mark.parametrize("act, sw, sb, rho", SPECIAL)
def test_analyze_and_phase_diagram_agree_at_special_points(act, sw, sb, rho):
    ref = mf.analyze(act, sw, sb, rho=rho)
    pd = mf.phase_diagram(act, [sw], [sb], rho=rho)
    for name in FIELDS:
        np.testing.assert_allclose(getattr(pd, name)[0, 0], getattr(ref, name), rtol=1e-10, atol=1e-12,
                                   err_msg=f"{act} ({sw}, {sb}, rho={rho}): {name}")
    assert pd.phase[0, 0] == ref.phase


def test_zero_bias_relu_with_dropout_is_the_exact_scale_invariant_map():
    # relu is scale invariant: with zero bias c' = rho J1(c) at every layer, whatever q does
    cs = optimize.brentq(lambda c: 0.8 * _J1(c) - c, 0.0, 0.999, xtol=1e-15)
    p = mf.analyze("relu", 1.0, 0.0, rho=0.8)
    assert p.c_star == pytest.approx(cs, abs=1e-12) and p.c_star == pytest.approx(0.4728, abs=1e-4)
    # the map itself, at q* = 0 and at any q, equals rho J1
    for q in (0.0, 1e-3, 1.0, 37.0):
        assert mf.c_map(0.9, "relu", 1.0, 0.0, q=q, rho=0.8) == pytest.approx(0.8 * _J1(0.9), rel=1e-12)
    prop = mf.propagate("relu", q0=1.0, c0=0.9, depth=400, sigma_w2=1.0, sigma_b2=0.0, rho=0.8)
    assert prop.c[-1] == pytest.approx(cs, abs=1e-10)
    # any positive bias, however small, gives another network: reported, not substituted
    assert p.c_star_small_bias == pytest.approx(mf.c_star("relu", 1.0, 1e-12, rho=0.8), rel=1e-9)
    assert p.c_star_small_bias == pytest.approx(0.7811, abs=1e-4)


def test_zero_bias_relu_without_dropout_converges_polynomially():
    # c* = 1 with slope exactly 1 (xi_c = inf): 1 - c^l ~ 9 pi^2 / (2 l^2) for every sigma_w2 < 2
    for sw in (1.0, 1.5, 2.0):
        p = mf.analyze("relu", sw, 0.0)
        assert p.c_star == 1.0 and p.chi_c == pytest.approx(1.0, rel=1e-12) and p.xi_c == math.inf
        assert p.chi_1 == pytest.approx(sw / 2, rel=1e-14)
    prop = mf.propagate("relu", q0=1.0, c0=0.0, depth=2000, sigma_w2=1.0, sigma_b2=0.0)
    assert (1 - prop.c[-1]) * 2000**2 == pytest.approx(9 * math.pi**2 / 2, rel=0.02)


@pytest.mark.parametrize("act, sw", [("tanh", 0.5), ("gelu", 2.0), ("erf", 0.5), ("swish", 2.0), ("sin", 0.5)])
def test_smooth_activations_become_pseudo_linear_at_zero_bias(act, sw):
    p = mf.analyze(act, sw, 0.0)
    assert p.q_star == 0.0 and p.phase == "pseudo-linear"
    assert math.isnan(p.c_star) and p.chi_c == 1.0 and p.xi_c == math.inf and math.isnan(p.trainable_depth)
    # correlations freeze at an input-dependent value instead of converging
    runs = [mf.propagate(act, q0=1.0, c0=c0, depth=80, sigma_w2=sw, sigma_b2=0.0).c for c0 in (0.2, 0.6)]
    assert runs[1][-1] - runs[0][-1] > 0.1 and max(runs[0][-1], runs[1][-1]) < 0.9
    assert abs(runs[0][-1] - runs[0][40]) < 1e-6 and abs(runs[1][-1] - runs[1][40]) < 1e-6
    # the limiting map is the identity: c_map at q = 0 returns c
    assert mf.c_map(0.37, act, sw, 0.0, q=0.0) == pytest.approx(0.37, rel=1e-12)
    # with dropout the linear limit c' = rho c has c* = 0 and slope rho
    pd = mf.analyze(act, sw * 0.8, 0.0, rho=0.8)
    assert pd.phase == "pseudo-linear" and abs(pd.c_star) < 1e-12 and pd.chi_c == pytest.approx(0.8, rel=1e-12)


def test_divergent_variance_uses_the_asymptotic_map():
    # relu at sigma_w2 > 2 diverges; the correlation map is the same scale-invariant one
    p = mf.analyze("relu", 3.0, 0.1, rho=0.7)
    cs = optimize.brentq(lambda c: 0.7 * _J1(c) - c, 0.0, 0.999, xtol=1e-15)
    assert p.phase == "divergent" and p.q_star == math.inf and p.c_star == pytest.approx(cs, abs=1e-12)
    # elu grows like relu at +inf and is bounded at -inf: the limit is relu itself
    assert asymptotic_activation(mf.activation("elu")).phi(np.array([2.0, -3.0])).tolist() == [2.0, 0.0]
    assert mf.analyze("elu", 4.0, 0.0).c_star == 1.0


def test_limit_layers_and_their_expectations():
    # the equivalent homogeneous layer at unit variance: Dense(psi, rho / E[psi^2], 0, rho)
    relu = mf.activation("relu")
    lim = Dense(relu, 1.0, 0.0, 0.8).limit(0.0)
    assert lim.sigma_w2 == pytest.approx(0.8 / 0.5, rel=1e-14) and float(lim.q_map(1.0)) == pytest.approx(1.0)
    assert Dense(relu, 1.0, 0.1, 0.8).limit(0.0) is None  # with a bias, q = 0 is an ordinary point
    tanh = mf.activation("tanh")
    assert local_activation(tanh).phi(np.array([-2.0, 3.0])).tolist() == [-2.0, 3.0]
    assert asymptotic_activation(tanh) is None
    with pytest.warns(RuntimeWarning, match="faster than linearly"):
        assert math.isnan(float(Dense(mf.activation("exp(x) - 1"), 1.0, 0.0).c_map(np.inf, 0.5)))
    # the small-bias layer: its map at unit variance is the sigma_b2 -> 0+ limit, checked at 1e-12
    small = Dense(relu, 1.0, 0.0, 0.8).small_bias_limit()
    E = core_expectations(relu)
    q = float(mf.q_star("relu", 1.0, 1e-12, rho=0.8))
    direct = mf.c_map(0.3, "relu", 1.0, 1e-12, q=q, rho=0.8)
    assert float(small.c_map(1.0, 0.3, core_expectations(small.act))) == pytest.approx(direct, rel=1e-9)
    assert float(Dense(relu, 2.0, 0.0).chi_1(np.inf, E)) == pytest.approx(1.0)


def test_layer_rule_against_independent_quadrature():
    # q', q12', chi_1 and chi_c of Dense against scipy quad of the defining integrals
    sw, sb, rho, q, c = 1.7, 0.2, 0.9, 0.8, 0.35
    layer = Dense(mf.activation("tanh"), sw, sb, rho)

    def gauss(f):
        return integrate.quad(lambda z: f(z) * math.exp(-z * z / 2) / math.sqrt(2 * math.pi), -12, 12,
                              epsabs=1e-14, epsrel=1e-13, limit=200)[0]

    def gauss2(f):
        s = math.sqrt(1 - c * c)
        return gauss(lambda z1: gauss(lambda z2: f(math.sqrt(q) * z1, math.sqrt(q) * (c * z1 + s * z2))))

    V = gauss(lambda z: math.tanh(math.sqrt(q) * z) ** 2)
    C = gauss2(lambda a, b: math.tanh(a) * math.tanh(b))
    D1 = gauss(lambda z: (1 - math.tanh(math.sqrt(q) * z) ** 2) ** 2)
    Dc = gauss2(lambda a, b: (1 - math.tanh(a) ** 2) * (1 - math.tanh(b) ** 2))
    assert float(layer.q_map(q)) == pytest.approx(sw / rho * V + sb, rel=1e-11)
    assert float(layer.c_map(q, c)) == pytest.approx((sw * C + sb) / (sw / rho * V + sb), rel=1e-10)
    assert float(layer.chi_1(q)) == pytest.approx(sw * D1, rel=1e-11)
    assert float(layer.backward(q)) == pytest.approx(sw * D1 / rho, rel=1e-11)
    assert float(layer.chi_c(q, c)) == pytest.approx(sw * Dc, rel=1e-10)


def test_critical_points_on_the_unstable_branch():
    # swish and gelu at sigma_b2 = 0.1: chi_1 = 1 only at an unstable fixed point of the variance map
    for act in ("swish", "gelu"):
        pts = mf.critical_points(act, 0.1)
        assert len(pts) >= 1 and not any(p.reached for p in pts)
        p = pts[0]
        assert not p.stable and p.q_slope > 1
        assert mf.q_map(p.q_star, act, p.sigma_w2, 0.1) == pytest.approx(p.q_star, rel=1e-10)
        assert mf.chi_1(act, p.sigma_w2, 0.1, q=p.q_star) == pytest.approx(1.0, rel=1e-10)
        # started just below it the network falls to the lower (ordered) fixed point, above it diverges
        below = mf.propagate(act, q0=0.9 * p.q_star, c0=1.0, depth=400, sigma_w2=p.sigma_w2, sigma_b2=0.1).q[-1]
        assert below == pytest.approx(p.q_reached, rel=1e-6) and below < p.q_star
        assert mf.q_star(act, p.sigma_w2, 0.1, q0=1.1 * p.q_star) == math.inf
        with pytest.warns(RuntimeWarning, match="no critical point"):
            assert math.isnan(mf.critical_sigma_w2(act, 0.1))
    # tanh: one stable critical point, the published one
    (t,) = mf.critical_points("tanh", 0.05)
    assert t.stable and t.reached and t.sigma_w2 == pytest.approx(1.76, abs=5e-3)


def _pair(rng, d, c):
    x = rng.standard_normal(d)
    y = c * x + math.sqrt(1 - c * c) * rng.standard_normal(d)
    return np.stack([x, y])


@pytest.mark.slow
def test_sampled_zero_bias_networks_follow_the_zero_bias_theory():
    rng = np.random.default_rng(1234)
    # relu with dropout at sigma_b2 = 0: settles at c* = 0.4728, not at the small-bias 0.7811
    X = _pair(rng, 300, 0.9)
    spec = emp.NetworkSpec("relu", sigma_w2=1.0, sigma_b2=0.0, width=600, depth=30, rho=0.8)
    sim = emp.simulate(spec, X, 12, rng, gradients=False)
    c_last = sim.c[:, -1, 0, 1]
    p = mf.analyze("relu", 1.0, 0.0, rho=0.8)
    se = c_last.std(ddof=1) / math.sqrt(c_last.size)
    assert abs(c_last.mean() - p.c_star) < 4 * se + 0.01, (c_last.mean(), p.c_star, se)
    assert abs(c_last.mean() - p.c_star_small_bias) > 10 * se
    # gelu at sigma_b2 = 0 is pseudo-linear: correlations freeze where the theory's propagate says,
    # far from c* = 1 of any small positive bias
    X = _pair(rng, 300, 0.3)
    spec = emp.NetworkSpec("gelu", sigma_w2=2.0, sigma_b2=0.0, width=600, depth=30)
    sim = emp.simulate(spec, X, 12, rng, gradients=False)
    q1 = 2.0 * np.einsum("ij,ij->i", X, X) / X.shape[1]
    c1 = X[0] @ X[1] / np.linalg.norm(X[0]) / np.linalg.norm(X[1])
    theory = mf.propagate("gelu", q0=(q1[0], q1[1]), c0=c1, depth=29, sigma_w2=2.0, sigma_b2=0.0).c
    c_sim = sim.c[:, :, 0, 1]
    se = c_sim[:, -1].std(ddof=1) / math.sqrt(c_sim.shape[0])
    assert abs(c_sim[:, -1].mean() - theory[-1]) < 4 * se + 0.01, (c_sim[:, -1].mean(), theory[-1], se)
    # any small positive bias would drive c to 1; at width 600 c diffuses around the frozen value
    assert theory[-1] < 0.6 and 1 - c_sim[:, -1].mean() > 10 * se


def test_zero_bias_with_a_flat_origin_is_refused_clearly():
    # phi = x^2 has phi'(0) = 0: no piecewise-linear local form; c* is NaN with a warning, not a crash
    with pytest.warns(RuntimeWarning, match="phi'\\(0\\) = 0"):
        p = mf.analyze("monomial", 0.3, 0.0)
    assert p.q_star == 0.0 and math.isnan(p.c_star) and math.isnan(p.chi_c)
    pd = mf.phase_diagram("monomial", [0.3], [0.0])
    assert math.isnan(pd.c_star[0, 0]) and pd.q_star[0, 0] == 0.0


def test_variance_growth_of_a_diverging_network():
    # q'/q at large q against the direct variance map: gelu and elu grow like relu, softplus too
    for act, sw in (("gelu", 3.0), ("elu", 4.0), ("softplus", 2.5), ("leaky_relu", 3.0)):
        layer = Dense(mf.activation(act), sw, 0.1, 0.8)
        q = 1e12
        assert layer.variance_growth() == pytest.approx(float(mf.q_map(q, act, sw, 0.1, rho=0.8)) / q, rel=1e-5)
    assert Dense(mf.activation("exp"), 1.0, 0.0).variance_growth() is None


@pytest.mark.slow
def test_sampled_networks_fall_or_diverge_either_side_of_an_unstable_critical_point():
    # gelu at sigma_b2 = 0.1: chi_1 = 1 only at an unstable fixed point q_c (slope 1.04). Sampled networks
    # started at q^0 = q_c / 2 follow the theory down towards the ordered fixed point; started at 3 q_c their
    # variance runs away (theory: x12 in 39 layers; at width 800 the spread across networks is large, since
    # the repulsion from q_c is weak and finite-width noise compounds)
    (p,) = mf.critical_points("gelu", 0.1)
    rng = np.random.default_rng(7)
    d = 400
    finals, theory = {}, {}
    for f in (0.5, 3.0):
        x = rng.standard_normal(d)
        x *= math.sqrt((f * p.q_star - 0.1) / p.sigma_w2 * d) / np.linalg.norm(x)  # q^0 = f q_c
        spec = emp.NetworkSpec("gelu", sigma_w2=p.sigma_w2, sigma_b2=0.1, width=800, depth=40)
        finals[f] = emp.simulate(spec, x[None, :], 8, rng, gradients=False).q[:, -1, 0]
        theory[f] = mf.propagate("gelu", q0=f * p.q_star, c0=1.0, depth=39, sigma_w2=p.sigma_w2, sigma_b2=0.1).q[-1]
    low = finals[0.5]
    se = low.std(ddof=1) / math.sqrt(low.size)
    assert abs(low.mean() - theory[0.5]) < 4 * se + 0.02 * theory[0.5], (low.mean(), theory[0.5], se)
    assert np.all(low < p.q_star) and theory[0.5] < p.q_star
    assert theory[3.0] > 10 * p.q_star and np.all(finals[3.0] > p.q_star) and np.median(finals[3.0]) > 3 * p.q_star
