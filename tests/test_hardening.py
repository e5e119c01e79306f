"""What a hostile but ordinary user types: clear ValueErrors (command line: exit 2, no traceback), quickly."""

import math
import time
import warnings

import numpy as np
import pytest
from scipy import special

import meanfield as mf
from meanfield.cli import main

# ---------------------------------------------------------------------------------------------
# Typed expressions the parser refuses, in words and before any symbolic work
# ---------------------------------------------------------------------------------------------

ODD_EXPRESSIONS = [
    ("-" * 999 + "x", "nested too deeply"),
    ("tanh(" * 200 + "x" + ")" * 200, "nested too deeply"),
    ("(" * 300 + "x" + ")" * 300, "nested too deeply"),
    ("1e308*x*1e308", "the expression overflows"),
    ("exp(1000)*x", "the expression overflows"),
    ("1e6**60*x", "the expression overflows"),
    ("1e999*x", "the expression overflows"),
    ("Heaviside(x, x)", "Heaviside takes one argument"),
    ("tanh(x, x)", "tanh takes one argument"),
    ("min()", "min takes at least one argument"),
    ("erf(x)/0", "division by zero"),
    ("1/(x - x)", "division by zero"),
    ("0**-1*x", "division by zero"),
    ("log(0)*x", "'log(0)' is infinite or undefined"),
]


@pytest.mark.parametrize("spec, words", ODD_EXPRESSIONS)
def test_odd_expressions_are_refused_in_words_quickly(spec, words):
    start = time.perf_counter()
    with pytest.raises(ValueError, match="cannot use expression") as err:
        mf.activation(spec)
    assert words in str(err.value)
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize("spec, words", ODD_EXPRESSIONS[1:2] + ODD_EXPRESSIONS[3:4] + ODD_EXPRESSIONS[7:8]
                         + ODD_EXPRESSIONS[10:11])
def test_odd_expressions_on_the_command_line_exit_2_without_traceback(spec, words, capsys):
    assert main(["point", spec, "--sigma-w2", "1.5", "--sigma-b2", "0.1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("meanfield: error: ") and words in err
    assert "Traceback" not in err


def test_long_sums_are_not_nesting():
    assert mf.activation("+".join(["x"] * 999)).expr == 999 * mf.activations.x
    assert mf.activation("-" * 40 + "x").expr == mf.activations.x


def test_heaviside_takes_its_value_at_zero():
    np.testing.assert_array_equal(mf.activation("Heaviside(x, 1)").phi(np.array([-1.0, 0.0, 2.0])), [0, 1, 1])


def test_small_decimals_are_not_rounded_to_zero():
    assert mf.activation("1e-300*x + x").phi(np.array([1.0]))[0] == 1.0 + 1e-300
    assert mf.activation("1e-300*x").phi(np.array([2.0]))[0] == pytest.approx(2e-300, rel=1e-15)


def test_typed_long_decimals_build_quickly_and_match_the_numpy_callable():
    scale = 2.4020563531719796
    start = time.perf_counter()
    typed = mf.activation(f"0.5*erf(x/{scale!r})+0.5")  # a 16-digit rational made sympy hang here
    assert time.perf_counter() - start < 5.0
    assert typed.expr.has(mf.activations.sp.Float)

    def phi(z):
        return 0.5 * special.erf(z / scale) + 0.5

    def dphi(z):
        return np.exp(-(z / scale) ** 2) / (np.sqrt(np.pi) * scale)

    z = np.linspace(-12.0, 12.0, 97)
    np.testing.assert_allclose(typed.phi(z), phi(z), rtol=1e-15, atol=1e-16)
    np.testing.assert_allclose(typed.dphi(z), dphi(z), rtol=1e-13, atol=1e-300)
    numeric = mf.activation(phi, dphi)
    assert mf.q_map(1.3, typed, 1.5, 0.1) == pytest.approx(mf.q_map(1.3, numeric, 1.5, 0.1), rel=1e-12)
    assert mf.chi_1(typed, 1.5, 0.1) == pytest.approx(mf.chi_1(numeric, 1.5, 0.1), rel=1e-12)


def test_short_decimals_stay_exact():
    assert mf.activation("0.1*x").expr == mf.activations.x / 10


# ---------------------------------------------------------------------------------------------
# Inputs: a 1-D X is ambiguous (n scalar inputs, or one input of dimension n)
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kernel", [mf.nngp, mf.ntk])
def test_one_dimensional_inputs_are_refused_with_the_reshape_to_use(kernel):
    with pytest.raises(ValueError, match=r"shape \(n, d_in\)") as err:
        kernel(np.array([1.0, 2.0, 3.0]), act="tanh", depth=2)
    assert "reshape(-1, 1)" in str(err.value) and "reshape(1, -1)" in str(err.value)
    K = kernel(np.array([1.0, 2.0, 3.0]).reshape(-1, 1), act="tanh", depth=2)
    assert K.shape == (3, 3)


def test_one_dimensional_inputs_are_refused_by_the_estimators():
    X = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    with pytest.raises(ValueError, match=r"reshape\(-1, 1\)"):
        mf.NNGPRegressor().fit(np.array([0.0, 1.0, 2.0]), [1.0, 2.0, 3.0])
    reg = mf.NNGPRegressor().fit(X, [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"reshape\(1, -1\)"):
        reg.predict(np.array([1.0, 2.0]))


# ---------------------------------------------------------------------------------------------
# NNGPRegressor / NNGPClassifier: targets, labels and secondary arguments
# ---------------------------------------------------------------------------------------------

X3 = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])


@pytest.mark.parametrize("y, words", [
    (["a", "b", "c"], "y must be real numbers (regression targets), got strings; for class labels use NNGPClassifier"),
    (np.array([1j, 1.0, 2.0]), "y must be real numbers (regression targets), got complex numbers"),
    ([1.0, 2.0], r"y must have shape (3,) or (3, n_targets)"),
    (1.0, r"y must have shape (3,) or (3, n_targets)"),
    ([1.0, np.nan, 2.0], "y must be finite"),
])
def test_regressor_refuses_targets_that_are_not_numbers(y, words):
    with pytest.raises(ValueError) as err:
        mf.NNGPRegressor().fit(X3, y)
    assert words in str(err.value)


def test_regressor_score_checks_y():
    reg = mf.NNGPRegressor(noise=1e-3).fit(X3, [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="y must be real numbers"):
        reg.score(X3, ["a", "b", "c"])
    with pytest.raises(ValueError, match="one row per row of X"):
        reg.score(X3, [1.0, 2.0])


@pytest.mark.parametrize("name", ["noise", "jitter"])
@pytest.mark.parametrize("value", [True, [0.1], np.array([0.1]), "0.1", None, -1.0, np.nan])
def test_regressor_refuses_odd_noise_and_jitter(name, value):
    with pytest.raises(ValueError, match=f"^{name} must be a"):
        mf.NNGPRegressor(**{name: value}).fit(X3, [1.0, 2.0, 3.0])


@pytest.mark.parametrize("flag", ["return_std", "return_cov"])
@pytest.mark.parametrize("value", ["yes", [1], np.nan])
def test_predict_flags_must_be_booleans(flag, value):
    reg = mf.NNGPRegressor(noise=1e-3).fit(X3, [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=f"{flag} must be True or False"):
        reg.predict(X3, **{flag: value})


def test_classifier_takes_string_labels():
    clf = mf.NNGPClassifier(noise=1e-3).fit(X3, ["a", "b", "c"])
    assert list(clf.classes_) == ["a", "b", "c"]
    assert list(clf.predict(X3)) == ["a", "b", "c"]
    assert clf.score(X3, ["a", "b", "c"]) == 1.0


@pytest.mark.parametrize("y, targets, words", [
    (["a", 1, None], (-0.1, 0.9), "class labels must be of one kind"),
    (["a", "a", "a"], (-0.1, 0.9), "y has only one class ('a')"),
    (["a", "b"], (-0.1, 0.9), "y has 2 labels, X has 3 rows"),
    (np.array([1j, 2.0, 3.0]), (-0.1, 0.9), "class labels must not be complex"),
    ([0, 1, 2], (False, True), "targets must be two numbers"),
    ([0, 1, 2], "ab", "targets must be two numbers"),
    ([0, 1, 2], (0.0, 0.5, 1.0), "targets must be two numbers"),
])
def test_classifier_refuses_odd_labels_and_targets(y, targets, words):
    with pytest.raises(ValueError) as err:
        mf.NNGPClassifier(targets=targets).fit(X3, y)
    assert words in str(err.value)


def test_classifier_score_needs_one_label_per_row():
    clf = mf.NNGPClassifier(noise=1e-3).fit(X3, [0, 1, 2])
    with pytest.raises(ValueError, match="one label per row of X"):
        clf.score(X3, [0, 1])


# ---------------------------------------------------------------------------------------------
# Command line: meanfield depth
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("factor", ["-3", "0", "1", "nan", "inf"])
def test_depth_refuses_a_factor_not_above_one_in_words(factor, capsys):
    assert main(["depth", "tanh", f"--factor={factor}"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("meanfield: error: --factor must be a number above 1")
    assert "Traceback" not in captured.err and captured.out == ""


def test_depth_of_a_divergent_exp_network_speaks_of_the_network(capsys):
    assert main(["depth", "exp", "--sigma-w2", "3", "--sigma-b2", "0.1"]) == 0
    captured = capsys.readouterr()
    assert "divergent phase" in captured.out and "the variance diverges at this sigma_w2" in captured.out
    assert "q1" not in captured.out + captured.err and "Traceback" not in captured.err


@pytest.mark.parametrize("bad", [True, [1.0], "2", float("nan"), -1.0])
def test_kernel_variances_are_single_numbers(bad):
    import meanfield as mf

    with pytest.raises(ValueError, match="sigma_w2"):
        mf.nngp(np.eye(2), act="relu", depth=1, sigma_w2=bad)


def test_point_of_a_divergent_exp_network_speaks_without_numpy_warnings(capsys):
    code = main(["point", "exp", "--sigma-w2", "3", "--sigma-b2", "0.1"])
    out, err = capsys.readouterr()
    assert code == 0 and "divergent" in out and "grows without bound" in out
    assert "RuntimeWarning" not in err and "overflow" not in err


# ---------------------------------------------------------------------------------------------
# Symbolic work on typed expressions is bounded; past the bound, derivatives are numerical
# ---------------------------------------------------------------------------------------------

def _mp_phi(text):
    import mpmath

    return lambda t: eval(text, {"tanh": mpmath.tanh, "x": t})  # the test's own, fixed expressions


def test_twelve_nested_tanh_build_quickly_with_symbolic_derivatives():
    import mpmath

    text = "tanh(" * 12 + "x" + ")" * 12
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("error", mf.activations.DerivativeWarning)
        act = mf.activation(text)
    assert time.perf_counter() - start < 10.0  # was 58 s
    assert act.d2expr is not None
    f = _mp_phi(text)
    for t in (-1.3, 0.2, 2.5):
        assert act.dphi(np.array([t]))[0] == pytest.approx(float(mpmath.diff(f, t)), rel=1e-13)
        assert act.d2phi(np.array([t]))[0] == pytest.approx(float(mpmath.diff(f, t, 2)), rel=1e-12)


def test_a_product_of_thirty_tanh_takes_numerical_derivatives_with_a_warning():
    import mpmath

    text = "*".join(f"tanh(x+{k})" for k in range(30))
    start = time.perf_counter()
    with pytest.warns(mf.activations.DerivativeWarning, match="numerical differentiation"):
        act = mf.activation(text)
    assert time.perf_counter() - start < 15.0  # was more than 75 s
    f = _mp_phi(text)
    mpmath.mp.dps = 30
    try:
        for t in (-20.5, 0.4):
            exact1, exact2 = float(mpmath.diff(f, t)), float(mpmath.diff(f, t, 2))
            assert act.dphi(np.array([t]))[0] == pytest.approx(exact1, rel=1e-9)
            assert act.d2phi(np.array([t]))[0] == pytest.approx(exact2, rel=1e-7)
    finally:
        mpmath.mp.dps = 15
    chi = mf.chi_1(act, 1.5, 0.1)
    assert np.isfinite(chi) and chi > 0


def test_sixty_factors_take_both_derivatives_numerically():
    text = "*".join(f"tanh(x+{k})" for k in range(60))
    with pytest.warns(mf.activations.DerivativeWarning, match="phi' and phi''"):
        act = mf.activation(text)
    assert act.dexpr is None and act.d2expr is None
    z = np.array([-70.0, -0.3, 1.0])
    # far from every zero the product is tanh(x+k) -> +-1: phi' there matches a centred difference
    assert np.all(np.isfinite(act.dphi(z))) and np.all(np.isfinite(act.d2phi(z)))


def _isserlis_even_moment(coeffs):
    """E[p(z)^2] for z ~ N(0, 1), p with integer coefficients, exactly (moments (n-1)!!)."""
    sq = np.polynomial.polynomial.polymul(coeffs, coeffs)
    total, dfact = 0, 1
    for n, a in enumerate(sq.astype(object)):
        if n % 2 == 0:
            total += int(a) * dfact
            dfact *= n + 1
    return total


@pytest.mark.parametrize("text, coeffs", [
    ("(1+x)**64", [math.comb(64, k) for k in range(65)]),
    ("(1+x)**20", [math.comb(20, k) for k in range(21)]),
])
def test_high_degree_polynomials_are_quick_and_integrated_over_their_whole_mass(text, coeffs):
    start = time.perf_counter()
    act = mf.activation(text)
    value = mf.q_map(1.0, act, 1.0, 0.0)
    assert time.perf_counter() - start < 10.0  # was more than 75 s
    # the mass of (1+z)^128 exp(-z^2/2) lies near z = 11: a range of 10 standard deviations lost half of it
    assert value == pytest.approx(float(_isserlis_even_moment(np.array(coeffs, dtype=object))), rel=1e-11)


def test_monomial_kernels_by_quadrature_cover_the_mass_of_high_degrees():
    X = np.array([[1.0, 0.2], [0.3, 1.0]])
    act = mf.activation("monomial", k=32)
    exact = mf.nngp(X, None, act, depth=1, sigma_w2=1.0, sigma_b2=0.0)
    quad = mf.nngp(X, None, act, depth=1, sigma_w2=1.0, sigma_b2=0.0, method="quadrature")
    np.testing.assert_allclose(np.diag(quad), np.diag(exact), rtol=1e-11)
    assert abs(quad[0, 1] - exact[0, 1]) < 1e-11 * np.sqrt(exact[0, 0] * exact[1, 1])


# ---------------------------------------------------------------------------------------------
# Kernel tables of oscillating activations: panels on the scale of the oscillation
# ---------------------------------------------------------------------------------------------

def _inputs_at_variance(q, n=2, d=3, seed=1):
    X = np.random.default_rng(seed).standard_normal((n, d))
    X *= np.sqrt(q * d) / np.linalg.norm(X, axis=1, keepdims=True)
    X[1:] *= 0.8
    return X


@pytest.mark.slow
def test_typed_fast_sine_kernel_is_right_at_a_layer_variance_of_six():
    X = _inputs_at_variance(6.45)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning, in particular no false accuracy claim
        K = mf.nngp(X, None, "sin(7*x)", depth=1, sigma_w2=1.0, sigma_b2=0.0)
    K0 = X @ X.T / X.shape[1]
    d = np.diag(K0)
    exact = np.exp(-49.0 * (d[:, None] + d[None, :]) / 2) * np.sinh(49.0 * K0)  # E[sin(7u) sin(7u')]
    scale = np.sqrt(np.outer(np.diag(exact), np.diag(exact)))
    assert np.max(np.abs(K - exact) / scale) < 1e-12  # was 1.1e-6 with a warning claiming 3.7e-10


def _gabor_kernel(C, b, k):
    """E[g(u1) g(u2)] for g(u) = exp(-b u^2) sin(k u), (u1, u2) ~ N(0, C), in closed form.

    sin sin = (cos(k a.u) - cos(k a'.u)) / 2 with a = (1, -1), a' = (1, 1), and
    E[exp(-b |u|^2) cos(k a.u)] = det(I + 2 b C)^(-1/2) exp(-k^2 a.(C^-1 + 2 b I)^-1 a / 2).
    """
    M = C @ np.linalg.inv(np.eye(2) + 2 * b * C)  # (C^-1 + 2 b I)^-1, also for a singular C
    pre = 1.0 / np.sqrt(np.linalg.det(np.eye(2) + 2 * b * C))
    a, a2 = np.array([1.0, -1.0]), np.array([1.0, 1.0])
    return 0.5 * pre * (np.exp(-0.5 * k * k * a @ M @ a) - np.exp(-0.5 * k * k * a2 @ M @ a2))


@pytest.mark.slow
def test_damped_oscillation_gets_no_false_warning_and_is_right():
    X = _inputs_at_variance(60.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the old rule warned of 1e-7 errors above q = 50
        K = mf.nngp(X, None, "exp(-x**2/8)*sin(7*x)", depth=1, sigma_w2=1.0, sigma_b2=0.0)
    C = X @ X.T / X.shape[1]
    assert abs(K[0, 1] - _gabor_kernel(C, 1 / 8, 7.0)) < 1e-12 * np.sqrt(K[0, 0] * K[1, 1])
    assert K[0, 0] == pytest.approx(_gabor_kernel(np.full((2, 2), C[0, 0]), 1 / 8, 7.0), rel=1e-12)


# ---------------------------------------------------------------------------------------------
# Very deep runs stop once the answer is determined, or are refused with their cost
# ---------------------------------------------------------------------------------------------

def test_propagate_a_million_layers_stops_at_the_fixed_point():
    deep = mf.propagate("tanh", 1.0, 0.5, 10**6, 1.5, 0.1)
    short = mf.propagate("tanh", 1.0, 0.5, 2000, 1.5, 0.1)
    assert deep.q1.shape == (10**6 + 1,)
    np.testing.assert_array_equal(deep.q1[:2001], short.q1)
    np.testing.assert_array_equal(deep.c[:2001], short.c)
    # the maps are autonomous: the last layer is the fixed point, to the last bit
    assert deep.q1[-1] == short.q1[-1] and deep.c[-1] == short.c[-1]
    assert deep.q1[-1] == pytest.approx(mf.q_star("tanh", 1.5, 0.1), rel=1e-13)


def test_gradient_growth_from_q0_stops_at_the_fixed_point():
    deep = mf.gradient_growth("tanh", 10**6, 1.5, 0.1, q0=3.0)
    short = mf.gradient_growth("tanh", 500, 1.5, 0.1, q0=3.0)
    np.testing.assert_array_equal(deep.per_layer[:500], short.per_layer)
    assert deep.per_layer[-1] == short.per_layer[-1]


@pytest.fixture
def quick_refusal(monkeypatch):
    from meanfield import _bounded

    monkeypatch.setattr(_bounded, "REFUSE_AFTER", 1.5)
    # a bound a fast machine cannot beat on these recursions (10 minutes would need a slow one to trigger)
    monkeypatch.setattr(_bounded, "MAX_RECURSION_SECONDS", 3.0)


@pytest.mark.parametrize("run", [
    lambda: mf.nngp(np.eye(3), None, "relu", depth=10**9, sigma_w2=2.0, sigma_b2=0.0),  # c -> 1 like 1/l^2
    lambda: mf.gradient_growth("tanh", 10**7, 1.5, 0.1, residual=True),  # p grows without end
    lambda: mf.propagate("relu", 1.0, 0.5, 10**7, 3.0, 0.1),  # diverges, c -> 1 like 1/l^2
])
def test_recursions_that_never_settle_are_refused_with_their_cost(run, quick_refusal):
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"has not settled after \d+ of \d+ layers .* would take about .* per layer: "
                                         r"use fewer layers \(depth\)"):
        run()
    assert time.perf_counter() - start < 30.0


# ---------------------------------------------------------------------------------------------
# Command line: expressions and numbers that start with a minus sign
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, phi", [("-x", lambda z: -z), ("-tanh(x)", lambda z: -np.tanh(z)),
                                       ("-0.5*x+tanh(x)", lambda z: -0.5 * z + np.tanh(z))])
def test_expressions_starting_with_minus_work_on_the_command_line(spec, phi, capsys):
    import json

    assert main(["point", spec, "--sigma-w2", "0.8", "--sigma-b2", "0.1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["activation"] == spec
    numeric = mf.activation(phi, kinks=())
    assert out["q_star"] == pytest.approx(mf.q_star(numeric, 0.8, 0.1), rel=1e-10)


def test_numbers_in_exponent_notation_starting_with_minus_are_values(capsys):
    assert main(["point", "tanh", "--sigma-w2", "-1e3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("meanfield: error: sigma_w2 must be finite and >= 0") and "Traceback" not in err


def test_kernel_tables_are_not_built_for_a_layer_whose_variances_overflow():
    # relu(x)**3: q' = sigma_w2 (15/2) q^3 + sigma_b2; from q0 = 2e30 the second layer is near 2e278,
    # the third beyond float64: refused there, in words, before any table of the third layer is built
    X = np.array([[1e15, 0.0], [0.6e15, 0.8e15], [0.0, 0.9e15]]) * np.sqrt(2.0)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(ValueError, match="exceed float64's range at layer 3 of 8"):
            mf.nngp(X, None, "relu(x)**3", depth=8, sigma_w2=2.0, sigma_b2=0.1)
    assert time.perf_counter() - start < 60.0  # was still building tables after 9.7 minutes
    K = mf.nngp(X, None, "relu(x)**3", depth=1, sigma_w2=2.0, sigma_b2=0.1)
    q0 = 2.0 * 2e30 / 2 + 0.1  # sigma_w2 |x|^2 / d_in + sigma_b2
    assert K[0, 0] == pytest.approx(2.0 * 7.5 * q0**3 + 0.1, rel=1e-12)  # E[relu(u)^6] = 15 q^3 / 2
