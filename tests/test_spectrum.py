"""Jacobian singular-value spectra (Pennington, Schoenholz & Ganguli 2017, 2018) against closed
forms, published formulas and sampled products of random matrices."""

import numpy as np
import pytest
from scipy import special

import meanfield.spectrum as sp

# ----------------------------------------------------------------------------------------
# helpers


def tanh_sinh(f, a, b, h=1 / 32, tmax=3.2):
    """int_a^b f by the double-exponential rule (endpoint singularities allowed); f vectorised."""
    tau = np.arange(-tmax, tmax + h / 2, h)
    x = np.tanh(0.5 * np.pi * np.sinh(tau))
    wgt = 0.5 * np.pi * np.cosh(tau) / np.cosh(0.5 * np.pi * np.sinh(tau)) ** 2 * h
    lam = a + (b - a) * 0.5 * (1 + x)
    keep = (lam > a) & (lam < b)
    vals = f(lam[keep])
    return 0.5 * (b - a) * np.sum(wgt[keep] * vals), lam[keep], vals


def density_moments(spec, lo_floor=1e-40):
    """(mass, m1, m2) of the continuous part on (0, edge): tanh-sinh in log-lambda for the
    lower end (the density may blow up like lambda^-alpha at 0; the part below 1e-40 edge is
    below 1e-9 for the depths used)."""
    # u = log(lambda / edge) in (log lo_floor, 0)
    a = np.log(lo_floor)

    def f(u):
        lam = spec.bulk_edge * np.exp(u)
        return np.stack([lam, lam ** 2, lam ** 3]) * spec.density(lam)  # lambda rho dlog lambda

    tau = np.arange(-3.2, 3.2 + 1 / 64, 1 / 32)
    x = np.tanh(0.5 * np.pi * np.sinh(tau))
    wgt = 0.5 * np.pi * np.cosh(tau) / np.cosh(0.5 * np.pi * np.sinh(tau)) ** 2 / 32
    u = a + (0 - a) * 0.5 * (1 + x)
    keep = (u > a) & (u < 0)
    vals = f(u[keep])
    out = 0.5 * (0 - a) * (vals * wgt[keep]).sum(axis=1)
    return out


def sample_jacobian_eigs(act_dphi, q, depth, sigma_w2, weights, n, rng):
    """Squared singular values of prod D^l W^l, D = diag(phi'(h)), h ~ N(0, q) i.i.d."""
    J = np.eye(n)
    for _ in range(depth):
        if weights == "gaussian":
            W = rng.normal(0.0, np.sqrt(sigma_w2 / n), (n, n))
        else:
            Z = rng.normal(size=(n, n))
            Q, R = np.linalg.qr(Z)
            W = np.sqrt(sigma_w2) * Q * np.sign(np.diag(R))
        D = act_dphi(rng.normal(0.0, np.sqrt(q), n))
        J = D[:, None] * (W @ J)
    return np.linalg.eigvalsh(J @ J.T)


def fuss_catalan(s, k):
    return special.comb((s + 1) * k, k, exact=True) / (s * k + 1)


# ----------------------------------------------------------------------------------------
# closed forms


@pytest.mark.parametrize("depth", [1, 2, 3, 7])
def test_linear_gaussian_is_a_product_of_ginibre_matrices(depth):
    s = sp.jacobian_spectrum("linear", depth, 1.0, 0.0, n_moments=6)
    want = np.array([fuss_catalan(depth, k) for k in range(1, 7)], dtype=float)
    np.testing.assert_allclose(s.moments, want, rtol=1e-12)
    assert s.variance == pytest.approx(depth, rel=1e-14)
    assert s.edge == pytest.approx((depth + 1) ** (depth + 1) / depth ** depth, rel=1e-12)
    assert s.atoms == ()


def test_scaling_of_moments_with_sigma_w2():
    s = sp.jacobian_spectrum("linear", 3, 0.8, 0.1, n_moments=3)
    want = np.array([fuss_catalan(3, k) * 0.8 ** (3 * k) for k in (1, 2, 3)], dtype=float)
    np.testing.assert_allclose(s.moments, want, rtol=1e-12)
    assert s.variance == pytest.approx(0.8 ** 6 * 3, rel=1e-13)


def test_tanh_at_q_star_zero_is_the_linear_network():
    s = sp.jacobian_spectrum("tanh", 5, 1.0, 0.0, n_moments=4)
    assert s.q_star == 0.0
    np.testing.assert_allclose(s.moments, [fuss_catalan(5, k) for k in (1, 2, 3, 4)], rtol=1e-12)
    assert s.edge == pytest.approx(6 ** 6 / 5 ** 5, rel=1e-12)


def test_elu_law_has_an_atom_and_a_continuous_part():
    s = sp.jacobian_spectrum("elu", 3, 1.2, 0.1, n_moments=3)
    law = s.law
    np.testing.assert_allclose(law.values, [1.0])
    np.testing.assert_allclose(law.probs, [0.5], rtol=1e-14)
    assert law.dmax == 1.0 and law.pieces == ((-np.inf, 0.0),)
    # mu_k = E[phi'^(2k)] = 1/2 + E[exp(2k u) 1(u < 0)], u ~ N(0, q*)
    q = s.q_star
    for k in (1, 2, 3):
        want = 0.5 + np.exp(2 * k * k * q) * special.ndtr(-2 * k * np.sqrt(q))
        assert s.mu[k - 1] == pytest.approx(want, rel=1e-11)


def test_linear_orthogonal_is_an_isometry():
    s = sp.jacobian_spectrum("linear", 5, 1.0, 0.0, "orthogonal")
    assert s.variance == 0.0
    np.testing.assert_allclose(s.moments, 1.0, rtol=1e-14)
    assert s.atoms == ((1.0, 1.0),)
    assert s.edge == 1.0


@pytest.mark.parametrize("depth", [1, 4, 30])
def test_relu_published_variances(depth):
    g = sp.jacobian_spectrum("relu", depth, 2.0, 0.0)
    o = sp.jacobian_spectrum("relu", depth, 2.0, 0.0, "orthogonal")
    assert g.mean == pytest.approx(1.0, rel=1e-14) and o.mean == pytest.approx(1.0, rel=1e-14)
    assert g.variance == pytest.approx(depth / 0.5, rel=1e-13)  # L / p
    assert o.variance == pytest.approx(depth * 0.5 / 0.5, rel=1e-13)  # L (1 - p) / p
    # the series of the S-transform agrees with the closed-form variance
    assert g.moments[1] - g.moments[0] ** 2 == pytest.approx(g.variance, rel=1e-11)
    assert o.moments[1] - o.moments[0] ** 2 == pytest.approx(o.variance, rel=1e-11)
    assert g.atoms == ((0.0, 0.5),)


@pytest.mark.parametrize("q", [0.05, 0.3, 1.0])
def test_hard_tanh_published_variances(q):
    # critical line of hard tanh parametrised by q*: sigma_w2 = 1/p, sigma_b2 = q - sigma_w2 E[phi^2]
    p = special.erf(1 / np.sqrt(2 * q))
    e_phi2 = q * (p - np.sqrt(2 / (np.pi * q)) * np.exp(-1 / (2 * q))) + (1 - p)
    sw = 1 / p
    sb = q - sw * e_phi2
    depth = 12
    g = sp.jacobian_spectrum("hard_tanh", depth, sw, sb)
    o = sp.jacobian_spectrum("hard_tanh", depth, sw, sb, "orthogonal")
    assert g.q_star == pytest.approx(q, rel=1e-9)
    assert g.mean == pytest.approx(1.0, rel=1e-8)
    assert g.variance == pytest.approx(depth / p, rel=1e-8)
    assert o.variance == pytest.approx(depth * (1 - p) / p, rel=1e-8)


def test_relu_edge_closed_form_matches_minimisation():
    # Gaussian: t^2 - (L+1) t + L(1-p) = 0; lambda_max = sigma_w2^L (t-1+p)/p (p t/(t-1))^L
    L, p = 10, 0.5
    t = ((L + 1) + np.sqrt((L + 1) ** 2 - 4 * L * (1 - p))) / 2
    want = 2.0 ** L * (t - 1 + p) / p * (p * t / (t - 1)) ** L
    s = sp.jacobian_spectrum("relu", L, 2.0, 0.0)
    assert s.edge == pytest.approx(want, rel=1e-13)
    grid = s.edge_t * np.linspace(0.5, 2.0, 2001)
    grid = grid[grid > 1]
    assert np.min(s.lam_of_t(grid)[0].real) >= s.edge * (1 - 1e-12)
    # orthogonal: t = L (1 - p) (> 1 here)
    o = sp.jacobian_spectrum("relu", L, 2.0, 0.0, "orthogonal")
    t = L * (1 - p)
    assert o.edge_t == t
    assert o.edge == pytest.approx(2.0 ** L * (t - 1 + p) / p * (p * t / (t - 1 + p)) ** L, rel=1e-13)


def test_orthogonal_atom_at_the_top_when_few_units_switch_off():
    s = sp.jacobian_spectrum("relu", 2, 2.0, 0.0, "orthogonal")  # L (1 - p) = 1: no atom
    assert [loc for loc, _ in s.atoms] == [0.0]
    s = sp.jacobian_spectrum("hard_tanh", 4, 1.2, 0.05, "orthogonal")
    p = float(s.law.probs[-1])
    assert s.atoms[1] == pytest.approx((1.2 ** 4, 1 - 4 * (1 - p)), rel=1e-14)
    assert s.edge == 1.2 ** 4
    assert not np.isfinite(s.edge_t)
    # the continuous part ends below the atom, at the local minimum t = L (1 - p) of lambda(t)
    assert s.bulk_edge_t == pytest.approx(4 * (1 - p), rel=1e-14)
    assert s.bulk_edge < s.edge
    assert s.density([s.bulk_edge * 0.999])[0] > 0 and s.density([s.bulk_edge * 1.001])[0] == 0
    with pytest.raises(NotImplementedError):  # L (1 - p) = 1 exactly: the bulk top is not known
        sp.jacobian_spectrum("relu", 2, 2.0, 0.0, "orthogonal").density([0.5])


@pytest.mark.parametrize("act, sw, sb, weights", [
    ("relu", 2.0, 0.0, "gaussian"), ("hard_tanh", 1.2, 0.05, "gaussian"), ("relu", 2.0, 0.0, "orthogonal"),
])
def test_general_edge_search_reproduces_the_closed_form(act, sw, sb, weights):
    """The numerical minimisation of lambda(t) (used for every other activation) on two-valued laws."""
    s = sp.jacobian_spectrum(act, 10, sw, sb, weights)
    t = sp._edge_t(s.law, 10, sw, weights)
    assert t == pytest.approx(s.edge_t, rel=1e-10)


def test_density_keeps_shape_and_order():
    s = sp.jacobian_spectrum("relu", 5, 2.0, 0.0)
    lam = np.array([[3.0, 0.5], [s.edge * 1.5, 0.01]])
    rho = s.density(lam)
    assert rho.shape == (2, 2) and rho[1, 0] == 0.0
    np.testing.assert_allclose(rho.ravel(), [s.density([x])[0] for x in lam.ravel()], rtol=1e-10)


# ----------------------------------------------------------------------------------------
# the density


DENSITY_CASES = [
    # (act, depth, sigma_w2, sigma_b2, weights, lower end of the integral relative to the edge)
    ("linear", 1, 1.0, 0.0, "gaussian", 1e-40),
    ("linear", 3, 1.0, 0.0, "gaussian", 1e-40),
    ("relu", 3, 2.0, 0.0, "gaussian", 1e-40),
    ("relu", 4, 2.0, 0.0, "orthogonal", 1e-40),
    ("hard_tanh", 4, 1.2, 0.05, "orthogonal", 1e-40),  # below an atom at the top
    ("hard_tanh", 3, 1.2, 0.05, "gaussian", 1e-40),
    ("elu", 3, 1.2, 0.1, "gaussian", 1e-40),  # d: an atom at 1 (u > 0) and a continuous part
    ("tanh", 4, 1.05, 0.01, "gaussian", 1e-40),
    # well conditioned: the density falls below 1e-6 at 3e-3 edge and keeps falling steeply, so
    # the mass below 5e-3 edge is < 1e-8
    ("tanh", 4, 1.05, 0.01, "orthogonal", 5e-3),
]


@pytest.mark.parametrize("act, depth, sw, sb, weights, floor", DENSITY_CASES)
def test_density_mass_and_moments(act, depth, sw, sb, weights, floor):
    """The density integrates to 1 - atoms and reproduces m1 and the variance to 1e-6."""
    s = sp.jacobian_spectrum(act, depth, sw, sb, weights)
    mass, m1, m2 = density_moments(s, floor)
    atom_m1 = sum(loc * m for loc, m in s.atoms)
    atom_m2 = sum(loc ** 2 * m for loc, m in s.atoms)
    assert mass == pytest.approx(s.continuous_mass, abs=1e-6)
    assert m1 + atom_m1 == pytest.approx(s.mean, rel=1e-6)
    assert m2 + atom_m2 - s.mean ** 2 == pytest.approx(s.variance, rel=1e-6)


def test_marchenko_pastur_density():
    s = sp.jacobian_spectrum("linear", 1, 1.0, 0.0)
    lam = np.linspace(0.05, 3.95, 40)
    want = np.sqrt(lam * (4 - lam)) / (2 * np.pi * lam)
    np.testing.assert_allclose(s.density(lam), want, rtol=1e-9)
    assert np.all(s.density([4.1, 10.0]) == 0)
    np.testing.assert_allclose(s.singular_value_density(np.sqrt(lam)), 2 * np.sqrt(lam) * want, rtol=1e-9)


# ----------------------------------------------------------------------------------------
# sampled networks


@pytest.mark.slow
@pytest.mark.parametrize("weights", ["gaussian", "orthogonal"])
def test_tanh_against_sampled_products(weights):
    """Width 400, depth 16, 4 samples: mean and variance within 5% and 10%, CDF within 0.03
    above its 20% quantile, largest sample below 1.1 x the edge."""
    depth, sw, sb, n = 16, 1.05, 0.01, 400
    s = sp.jacobian_spectrum("tanh", depth, sw, sb, weights)
    rng = np.random.default_rng(12)
    eigs = np.concatenate([
        sample_jacobian_eigs(lambda h: 1 / np.cosh(h) ** 2, s.q_star, depth, sw, weights, n, rng)
        for _ in range(4)])
    assert eigs.mean() == pytest.approx(s.mean, rel=0.05)
    assert eigs.var() == pytest.approx(s.variance, rel=0.10)
    # CDF from the top: P(lambda <= x) = 1 - int_x^edge rho (no atoms here), trapezoid on 150 points
    lo = np.quantile(eigs, 0.2)
    lam = np.linspace(lo, s.edge, 150)
    rho = s.density(lam)
    upper = np.concatenate([np.cumsum((0.5 * (rho[1:] + rho[:-1]) * np.diff(lam))[::-1])[::-1], [0.0]])
    cdf = 1.0 - upper
    emp = np.searchsorted(np.sort(eigs), lam, side="right") / eigs.size
    assert np.max(np.abs(cdf - emp)[1:]) < 0.03  # (the first panel is not in any cdf[1:])
    assert eigs.max() <= s.edge * 1.1


def test_orthogonal_tanh_at_small_q_is_well_conditioned():
    """Pennington et al. 2017: orthogonal weights + tanh near q* = 0 keep the spectrum near its
    mean at depth, Gaussian weights do not."""
    g = sp.jacobian_spectrum("tanh", 100, 1.0005, 1e-5)
    o = sp.jacobian_spectrum("tanh", 100, 1.0005, 1e-5, "orthogonal")
    assert g.q_star < 0.02
    assert o.variance / o.mean ** 2 < 0.1 * g.variance / g.mean ** 2
    assert o.edge / o.mean < 2 and g.edge / g.mean > 100


# ----------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize("depth", [0, -3, 2.5, "3", True])
def test_bad_depth(depth):
    with pytest.raises(ValueError, match="depth"):
        sp.jacobian_spectrum("tanh", depth, 1.0, 0.0)


def test_bad_weights_and_no_fixed_point():
    with pytest.raises(ValueError, match="weights"):
        sp.jacobian_spectrum("tanh", 3, 1.0, 0.0, weights="uniform")
    with pytest.raises(ValueError, match="no finite fixed point"):
        sp.jacobian_spectrum("relu", 3, 2.5, 0.1)
    with pytest.raises(ValueError, match="sigma_w2"):
        sp.jacobian_spectrum("relu", 3, 0.0, 0.1)
    with pytest.raises(ValueError, match="n_moments"):
        sp.jacobian_spectrum("relu", 3, 1.0, 0.1, n_moments=1)
    s = sp.jacobian_spectrum("relu", 3, 1.0, 0.1)
    with pytest.raises(ValueError, match="lam"):
        s.density([-1.0])


def test_selu_sup_of_phi_prime_squared_is_its_left_limit_at_zero():
    # selu's phi' jumps at 0 from lambda alpha (left) to lambda (right): sup phi'^2 = (lambda alpha)^2, not attained
    import meanfield as mf

    lam_a2 = (1.0507009873554805 * 1.6732632423543772) ** 2
    s = mf.jacobian_spectrum("selu", 4, 1.2, 0.05)
    assert s.law.dmax == pytest.approx(lam_a2, rel=1e-9)
    assert s.edge_t > s.law.dmax and s.edge > s.mean > 0
    rng = np.random.default_rng(0)
    act, n, ev = mf.activation("selu"), 500, []
    for _ in range(3):  # sampled products: the largest value approaches the edge from below
        J = np.eye(n)
        for _ in range(4):
            W = rng.normal(size=(n, n)) * np.sqrt(1.2 / n)
            J = (act.dphi(rng.normal(size=n) * np.sqrt(s.q_star))[:, None] * W) @ J
        ev.append(np.linalg.eigvalsh(J @ J.T))
    top = max(e.max() for e in ev)
    assert 0.8 * s.edge < top < 1.05 * s.edge


@pytest.mark.parametrize("weights, v_w", [("gaussian", 1.0), ("orthogonal", 0.0)])
def test_kink_at_zero_with_collapsing_variance_keeps_both_slopes(weights, v_w):
    # leaky relu at (1.9, 0): q* = 0, but h is tiny with either sign, so phi'^2 is alpha^2 or 1 with probability 1/2
    import meanfield as mf

    a2, L = 0.01**2, 8
    s = mf.jacobian_spectrum("leaky_relu", L, 1.9, 0.0, weights=weights)
    mu1, mu2 = (1 + a2) / 2, (1 + a2 * a2) / 2
    m1 = (1.9 * mu1) ** L
    assert s.q_star == 0.0 and s.mean == pytest.approx(m1, rel=1e-12)
    assert s.variance == pytest.approx(m1 * m1 * L * (mu2 / mu1**2 - 1 + v_w), rel=1e-12)


# ----------------------------------------------------------------------------------------
# layer by layer from the input's variance


@pytest.mark.parametrize("act, sw, sb", [("tanh", 1.05, 0.01), ("erf", 1.3, 0.05), ("elu", 1.2, 0.1)])
@pytest.mark.parametrize("weights", ["gaussian", "orthogonal"])
def test_moments_from_q_star_are_the_fixed_point_spectrum(act, sw, sb, weights):
    s = sp.jacobian_spectrum(act, 12, sw, sb, weights, n_moments=5)
    m = sp.jacobian_moments(act, 12, sw, sb, weights=weights, n_moments=5)
    np.testing.assert_allclose(m.q, s.q_star, rtol=1e-13)
    np.testing.assert_allclose(m.moments, s.moments, rtol=1e-12)
    assert m.variance == pytest.approx(m.moments[1] - m.moments[0] ** 2, rel=1e-10)


@pytest.mark.parametrize("act, sw", [("relu", 2.0), ("linear", 0.8)])
def test_scale_invariant_law_does_not_depend_on_the_input_variance(act, sw):
    """phi' of relu and linear does not depend on the scale: any q0 gives the fixed-point moments."""
    s = sp.jacobian_spectrum(act, 7, sw, 0.0, n_moments=4)
    m = sp.jacobian_moments(act, 7, sw, 0.0, q0=37.0, n_moments=4)
    np.testing.assert_allclose(m.moments, s.moments, rtol=1e-13)


@pytest.mark.slow
@pytest.mark.parametrize("weights", ["gaussian", "orthogonal"])
def test_moments_layer_by_layer_against_sampled_products(weights):
    """tanh from q0 = 3, far above its q* = 0.12: width 400, depth 8, 12 networks; the mean and
    variance of each network's eigenvalues, averaged, within 4 standard errors (+3% for width
    400), while the fixed-point spectrum is off by a factor of 9 in the mean."""
    depth, sw, sb, n = 8, 1.05, 0.01, 400
    m = sp.jacobian_moments("tanh", depth, sw, sb, q0=3.0, weights=weights)
    rng = np.random.default_rng(5)
    stats = []
    for _ in range(12):
        J = np.eye(n)
        for ql in m.q:
            if weights == "gaussian":
                W = rng.normal(0.0, np.sqrt(sw / n), (n, n))
            else:
                Q, R = np.linalg.qr(rng.normal(size=(n, n)))
                W = np.sqrt(sw) * Q * np.sign(np.diag(R))
            J = (1 / np.cosh(rng.normal(0.0, np.sqrt(ql), n)) ** 2)[:, None] * (W @ J)
        eigs = np.linalg.eigvalsh(J @ J.T)
        stats.append((eigs.mean(), eigs.var()))
    stats = np.array(stats)
    est, se = stats.mean(0), stats.std(0, ddof=1) / np.sqrt(len(stats))
    for got, err, want in zip(est, se, (m.mean, m.variance)):
        assert abs(got - want) < 4 * err + 0.03 * want
    assert sp.jacobian_spectrum("tanh", depth, sw, sb, weights).mean > 5 * m.mean


def test_moments_bad_input():
    with pytest.raises(ValueError, match="q0"):
        sp.jacobian_moments("tanh", 3, 1.0, 0.0, q0=-1.0)
    with pytest.raises(ValueError, match="diverges"):
        sp.jacobian_moments("exp", 40, 3.0, 0.1, q0=1.0)
    with pytest.raises(ValueError, match="q\\* = inf"):
        sp.jacobian_moments("relu", 3, 3.0, 0.1)
    with pytest.raises(ValueError, match="weights"):
        sp.jacobian_moments("tanh", 3, 1.0, 0.0, weights="unitary")
