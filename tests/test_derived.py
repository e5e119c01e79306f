"""Derived closed forms (meanfield._gaussian_rules, meanfield._derived) against independent references.

The references are written out here: phi and phi' by hand, and the NNGP/NTK recursion per pair of
inputs by nested adaptive scipy quadrature (no meanfield integrator), or published formulas (the
arc-cosine kernels of Cho & Saul 2009, Mehler's formula for Hermite polynomials, the bivariate
normal distribution function of scipy.stats).
"""

import math
import warnings

import numpy as np
import pytest
import sympy as sp
from scipy import integrate, special, stats

import meanfield as mf
from meanfield import _derived, _gaussian_rules, symbolic
from meanfield.symbolic import c, q, q1, q2, q12, sigma_b2, sigma_w2

SQ2PI = math.sqrt(2 * math.pi)


def _gelu(t):
    return t * (1 + math.erf(t / math.sqrt(2))) / 2


def _dgelu(t):
    return (1 + math.erf(t / math.sqrt(2))) / 2 + t * math.exp(-t * t / 2) / SQ2PI


def _relu_n(n):
    return (lambda t: t**n if t > 0 else 0.0), (lambda t: n * t ** (n - 1) if t > 0 else 0.0)


# typed expression -> (phi, phi' or None, kinks, sigma_w2, sigma_b2), written out by hand
CASES = {
    "x*(1+erf(x/sqrt(2)))/2": (_gelu, _dgelu, (), 1.7, 0.1),
    "relu(x)**2": (*_relu_n(2), (0.0,), 0.4, 0.2),
    "relu(x)**3": (*_relu_n(3), (0.0,), 0.15, 0.2),
    "relu(x)**2 - 0.3*relu(-x)**2": (lambda t: t * t if t > 0 else -0.3 * t * t,
                                     lambda t: 2 * t if t > 0 else -0.6 * t, (0.0,), 0.5, 0.1),
    "sign(x)": (lambda t: math.copysign(1.0, t) if t != 0 else 0.0, None, (0.0,), 1.3, 0.2),
    "heaviside(x)": (lambda t: 1.0 if t > 0 else 0.0, None, (0.0,), 2.0, 0.1),
    "exp(-x**2/2)": (lambda t: math.exp(-t * t / 2), lambda t: -t * math.exp(-t * t / 2), (), 2.5, 0.1),
    "exp(-x**2)*sin(x)": (lambda t: math.exp(-t * t) * math.sin(t),  # gabor, as neural-tangents has it
                          lambda t: math.exp(-t * t) * (math.cos(t) - 2 * t * math.sin(t)), (), 3.0, 0.05),
    "erf(2*x + 0.5)": (lambda t: math.erf(2 * t + 0.5),
                       lambda t: 4 / math.sqrt(math.pi) * math.exp(-(2 * t + 0.5) ** 2), (), 1.5, 0.1),
    "x**3 - 3*x": (lambda t: t**3 - 3 * t, lambda t: 3 * t * t - 3, (), 0.3, 0.05),
}
X = np.array([[0.9, -0.3, 0.4], [0.2, 0.8, -0.5], [-1.1, 0.3, 0.7]])


def _e2(f, g, qa, qb, qab, kinks):
    """E[f(u1) g(u2)] by nested scipy quad (u1 outer, u2 | u1 inner), split at the kinks."""
    if qab * qab >= qa * qb:  # one variable (the diagonal)
        return _e1(lambda u: f(u) * g(u * math.sqrt(qb / qa) * math.copysign(1.0, qab)), qa, kinks)
    sa = math.sqrt(qa)
    beta = qab / qa
    sd = math.sqrt(max(qb - qab * qab / qa, 0.0))

    def inner(u1):
        m = beta * u1
        edges = sorted({m - 14 * sd, m + 14 * sd, *(k for k in kinks if abs(k - m) < 14 * sd)})
        tot = 0.0
        for lo, hi in zip(edges[:-1], edges[1:]):
            tot += integrate.quad(lambda u2: g(u2) * math.exp(-((u2 - m) / sd) ** 2 / 2), lo, hi,
                                  epsabs=0, epsrel=1e-13, limit=200)[0]
        return tot / (SQ2PI * sd)

    edges = sorted({-14 * sa, 14 * sa, *(k for k in kinks if abs(k) < 14 * sa),
                    *(k / beta for k in kinks if beta != 0 and abs(k / beta) < 14 * sa)})
    tot = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        tot += integrate.quad(lambda u1: f(u1) * inner(u1) * math.exp(-u1 * u1 / (2 * qa)), lo, hi,
                              epsabs=1e-15, epsrel=1e-13, limit=200)[0]
    return tot / (SQ2PI * sa)


def _e1(f, qa, kinks):
    s = math.sqrt(qa)
    edges = sorted({-14 * s, 14 * s, *(k for k in kinks if abs(k) < 14 * s)})
    return sum(integrate.quad(lambda u: f(u) * math.exp(-u * u / (2 * qa)), lo, hi, epsabs=0, epsrel=1e-13,
                              limit=200)[0] for lo, hi in zip(edges[:-1], edges[1:])) / (SQ2PI * s)


def _reference(phi, dphi, kinks, sw, sb, i, j, depth):
    """NNGP and NTK entries (i, j) by the per-pair recursion, every expectation by scipy quad."""
    d = X.shape[1]
    qa, qb, k = (sb + sw * X[i] @ X[i] / d, sb + sw * X[j] @ X[j] / d, sb + sw * X[i] @ X[j] / d)
    t = k
    for _ in range(depth):
        kn = sb + sw * _e2(phi, phi, qa, qb, k, kinks)
        if dphi is not None:
            t = kn + sw * _e2(dphi, dphi, qa, qb, k, kinks) * t
        qa, qb, k = (sb + sw * _e1(lambda u: phi(u) ** 2, qa, kinks),
                     sb + sw * _e1(lambda u: phi(u) ** 2, qb, kinks), kn)
    return k, t


@pytest.mark.slow
@pytest.mark.parametrize("expr", list(CASES))
def test_nngp_and_ntk_match_nested_quadrature(expr):
    phi, dphi, kinks, sw, sb = CASES[expr]
    act = mf.activation(expr)
    assert symbolic.has_closed_form(act), symbolic.derivation(act)
    depth = 3
    K = mf.nngp(X, None, act, depth=depth, sigma_w2=sw, sigma_b2=sb, method="exact")
    T = mf.ntk(X, None, act, depth=depth, sigma_w2=sw, sigma_b2=sb, method="exact") if dphi else None
    for i, j in [(0, 1), (1, 2), (0, 0)]:
        k_ref, t_ref = _reference(phi, dphi, kinks, sw, sb, i, j, depth)
        assert K[i, j] == pytest.approx(k_ref, rel=1e-12, abs=1e-14), (i, j)
        if dphi is not None:
            assert T[i, j] == pytest.approx(t_ref, rel=1e-12, abs=1e-14), (i, j)
    if dphi is None:  # a jump: phi' has a Dirac mass, the NTK is undefined
        with pytest.raises(ValueError, match="discontinuous"):
            mf.ntk(X, None, act, depth=1)


def test_arc_cosine_kernels_of_higher_order():
    # Cho & Saul (2009): E[relu(u1)^n relu(u2)^n] = (q1 q2)^(n/2) J_n(theta) / (2 pi)
    th = sp.acos(c)
    J = {2: 3 * sp.sin(th) * sp.cos(th) + (sp.pi - th) * (1 + 2 * sp.cos(th) ** 2),
         3: 4 * sp.sin(th) ** 3 + 15 * sp.sin(th) * sp.cos(th) ** 2
         + (sp.pi - th) * (9 * sp.sin(th) ** 2 * sp.cos(th) + 15 * sp.cos(th) ** 3)}
    for n, Jn in J.items():
        got = mf.closed_form(f"relu(x)**{n}", "cov_map").subs({sigma_w2: 1, sigma_b2: 0})
        ref = (q1 * q2) ** sp.Rational(n, 2) * Jn / (2 * sp.pi)
        f = sp.lambdify((q1, q2, q12), got)
        r = sp.lambdify((q1, q2, c), ref)
        for a, b, cc in [(0.7, 1.9, 0.3), (2.0, 0.4, -0.85), (1.0, 1.0, 0.999)]:
            assert f(a, b, cc * math.sqrt(a * b)) == pytest.approx(r(a, b, cc), rel=1e-13)
    # relu^3 on the diagonal: E[relu(u)^6] = 15 q^3 / 2
    assert sp.simplify(mf.closed_form("relu(x)**3", "q_map") - (15 * sigma_w2 * q**3 / 2 + sigma_b2)) == 0


def test_gelu_typed_is_recognised_and_matches_the_published_variance_map():
    typed = mf.closed_form("x*(1+erf(x/sqrt(2)))/2", "q_map")
    named = mf.closed_form("gelu", "q_map")
    assert typed is not None and sp.simplify(typed - named) == 0
    # E[gelu(u)^2] = q/4 + q asin(q/(1+q))/(2 pi) + q^2/(pi (1+q) sqrt(1+2q))
    ref = sigma_w2 * (q / 4 + q * sp.asin(q / (1 + q)) / (2 * sp.pi)
                      + q**2 / (sp.pi * (1 + q) * sp.sqrt(1 + 2 * q))) + sigma_b2
    f, r = sp.lambdify((q, sigma_w2, sigma_b2), typed), sp.lambdify((q, sigma_w2, sigma_b2), ref)
    for v in (0.01, 0.5, 3.0, 200.0):
        assert f(v, 1.3, 0.2) == pytest.approx(r(v, 1.3, 0.2), rel=1e-14)
    # the bivariate form shown in the README
    cov = sp.lambdify((q1, q2, q12), mf.closed_form("gelu", "cov_map").subs({sigma_w2: 1, sigma_b2: 0}))
    for a, b, cc in [(0.3, 2.0, 0.4), (1.5, 1.5, -0.9), (5.0, 0.7, 0.99)]:
        ab = cc * math.sqrt(a * b)
        root = math.sqrt((1 + a) * (1 + b) - ab**2)
        ref = (ab / 4 + ab * math.asin(ab / math.sqrt((1 + a) * (1 + b))) / (2 * math.pi)
               + (a * b - ab**2 + ab**2 / (1 + a) + ab**2 / (1 + b)) / (2 * math.pi * root))
        assert cov(a, b, ab) == pytest.approx(ref, rel=1e-14)


def test_hermite_polynomials_follow_mehler():
    # E[He_n(z1) He_m(z2)] = n! c^n delta_nm for unit variances (Mehler); He_3 = x^3 - 3x, He_4 = x^4 - 6x^2 + 3
    for expr, n in [("x**3 - 3*x", 3), ("x**4 - 6*x**2 + 3", 4)]:
        e = mf.expectation(expr, "cov", 1.0, 1.0, np.array([-0.7, 0.2, 0.9]), method="exact")
        np.testing.assert_allclose(e, math.factorial(n) * np.array([-0.7, 0.2, 0.9]) ** n, rtol=1e-13)


@pytest.mark.parametrize("name", ["relu", "abs", "erf", "sin", "cos", "exp", "linear"])
def test_rules_rederive_the_table(name):
    # the listed families, derived by the rules, agree with the table's formulas
    act = mf.activation(name)
    qa, qb, cc = np.array([0.3, 1.7, 2.5]), np.array([1.1, 0.4, 2.5]), np.array([0.6, -0.8, 0.97])
    for kind, order in (("cov", 0), ("dcov", 1)):
        ts = _gaussian_rules.terms(act.expr)
        if order:
            ts = _gaussian_rules.derivative_terms(ts)
        s12 = c * sp.sqrt(q1) * sp.sqrt(q2)
        derived = sp.lambdify((q1, q2, c), _gaussian_rules.expect([ts, ts], sp.Matrix([[q1, s12], [s12, q2]])),
                              modules=[{"norm_cdf": special.ndtr}, "scipy", "numpy"])
        table = symbolic.numeric(act, kind)
        np.testing.assert_allclose(derived(qa, qb, cc) + 0 * qa, table(qa, qb, cc * np.sqrt(qa * qb)), rtol=1e-13)


def test_one_dimensional_kinds_match_quadrature():
    for expr in ("gelu", "relu(x)**3", "exp(-x**2/2)*cos(x)", "erf(x - 0.4)"):
        for kind in ("phi2", "dphi2", "slope"):
            qs = np.array([1e-3, 0.4, 2.0, 9.0])
            exact = mf.expectation(expr, kind, qs, method="exact")
            quad = mf.expectation(expr, kind, qs, method="quadrature")
            np.testing.assert_allclose(exact, quad, rtol=1e-11, atol=1e-14)


def test_bivariate_normal_distribution_function():
    for h, k, r in [(0.3, -0.8, 0.4), (0.0, 1.2, -0.6), (-0.5, 0.0, 0.9), (0.0, 0.0, 0.35), (1.1, 0.7, 0.0),
                    (-1.3, -0.2, -0.95), (0.4, 0.9, 1.0), (0.4, -0.9, -1.0)]:
        if abs(r) < 1:
            ref = stats.multivariate_normal([0, 0], [[1, r], [r, 1]]).cdf([h, k])
            tol = 1e-7  # scipy's multivariate_normal.cdf is itself accurate to about 1e-8
        else:
            ref = special.ndtr(min(h, k)) if r > 0 else max(special.ndtr(h) - special.ndtr(-k), 0.0)
            tol = 1e-15
        assert _derived.bvn(h, k, r) == pytest.approx(ref, abs=tol)
    # h = k = 0: Sheppard's formula, exactly
    assert _derived.bvn(0.0, 0.0, 0.35) == pytest.approx(0.25 + math.asin(0.35) / (2 * math.pi), rel=1e-15)


def test_compiled_loop_agrees_with_numpy():
    act = mf.activation("gelu")
    f = symbolic.numeric(act, "cov")
    rng = np.random.default_rng(3)
    n = _derived.COMPILE_SIZE
    a, b = rng.uniform(0.01, 5, n), rng.uniform(0.01, 5, n)
    ab = rng.uniform(-1, 1, n) * np.sqrt(a * b)
    big = f(a, b, ab)  # compiled loop
    small = np.concatenate([f(a[i:i + 1000], b[i:i + 1000], ab[i:i + 1000]) for i in range(0, n, 1000)])
    np.testing.assert_allclose(big, small, rtol=1e-13, atol=1e-15)


def test_outside_the_class_and_rejections(monkeypatch):
    assert mf.closed_form("tanh", "cov_map") is None
    assert "outside the class" in symbolic.derivation("relu(x - 1)**2")["cov"]
    assert "outside the class" in symbolic.derivation("x*tanh(x)")["phi2"]
    # a wrong derivation is never used: it is caught by the check against quadrature
    real = _gaussian_rules.expect
    monkeypatch.setattr(_gaussian_rules, "expect", lambda *a, **k: real(*a, **k) * sp.Rational(1001, 1000))
    with pytest.warns(symbolic.ClosedFormWarning, match="disagrees with quadrature"):
        v = mf.expectation("relu(x)**2 + x/7", "phi2", 1.3)
    ref = _e1(lambda u: (max(u, 0.0) ** 2 + u / 7) ** 2, 1.3, (0.0,))
    assert v == pytest.approx(ref, rel=1e-12)
    with warnings.catch_warnings():  # the other expectations are rejected too, each with its warning
        warnings.simplefilter("ignore", symbolic.ClosedFormWarning)
        assert "rejected" in symbolic.derivation("relu(x)**2 + x/7")["phi2"]
    # a derivation past its bound falls back to quadrature, with a note
    monkeypatch.setattr(_gaussian_rules, "expect", real)
    monkeypatch.setattr(_gaussian_rules, "MAX_STEPS", 1)
    with pytest.warns(symbolic.ClosedFormWarning, match="not derived"):
        v = mf.expectation("relu(x)**2 + x/9", "cov", 1.0, 2.0, 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", symbolic.ClosedFormWarning)
        assert "not derived" in symbolic.derivation("relu(x)**2 + x/9")["cov"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ref = mf.expectation("relu(x)**2 + x/9", "cov", 1.0, 2.0, 0.5, method="quadrature")
    assert v == pytest.approx(ref, rel=1e-12)


def test_derived_forms_at_large_variances():
    # at sigma_w2 = 2 gelu's variance grows without bound (E[gelu(u)^2] = q/2 + o(1)): a closed form
    # that lost digits at q ~ 1e11 (an arcsine near 1) once gave a spurious finite q*
    assert mf.q_star("gelu", sigma_w2=2.0, sigma_b2=0.5) == math.inf
    assert mf.analyze("x*(1+erf(x/sqrt(2)))/2", 2.0, 0.5, method="quadrature").q_star == math.inf
