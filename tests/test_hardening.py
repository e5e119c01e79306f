"""What a hostile but ordinary user types: clear ValueErrors (command line: exit 2, no traceback), quickly."""

import time

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
