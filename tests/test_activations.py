"""Activations: the table, expression parsing (never evaluated), derivatives, kinks, errors."""

import os
import re

import numpy as np
import pytest
import sympy as sp

import meanfield as mf
from meanfield.activations import describe_table, parse_expression, x

# hand-written references, independent of the sympy table
HAND = {
    "linear": lambda t: t,
    "relu": lambda t: np.maximum(t, 0),
    "abs": np.abs,
    "hard_tanh": lambda t: np.clip(t, -1, 1),
    "tanh": np.tanh,
    "sigmoid": lambda t: 1 / (1 + np.exp(-t)),
    "softplus": lambda t: np.log1p(np.exp(t)),
    "elu": lambda t: np.where(t > 0, t, np.expm1(t)),
    "selu": lambda t: 1.0507009873554805 * np.where(t > 0, t, 1.6732632423543772 * np.expm1(t)),
    "swish": lambda t: t / (1 + np.exp(-t)),
    "silu": lambda t: t / (1 + np.exp(-t)),
    "mish": lambda t: t * np.tanh(np.log1p(np.exp(t))),
    "sin": np.sin,
    "cos": np.cos,
    "exp": np.exp,
}


@pytest.mark.parametrize("name", sorted(HAND))
def test_table_matches_hand_written(name):
    t = np.linspace(-6, 6, 1201)
    np.testing.assert_allclose(mf.activation(name).phi(t), HAND[name](t), rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("name", mf.activation_names())
def test_derivatives_match_finite_differences(name):
    act = mf.activation(name)
    t = np.linspace(-4.3, 4.1, 157)  # avoids the kinks at 0 and +-1
    h = 1e-5
    fd1 = (act.phi(t + h) - act.phi(t - h)) / (2 * h)
    fd2 = (act.phi(t + h) - 2 * act.phi(t) + act.phi(t - h)) / h**2
    scale = 1 + np.abs(act.phi(t))
    assert np.max(np.abs(act.dphi(t) - fd1) / scale) < 1e-8
    assert np.max(np.abs(act.d2phi(t) - fd2) / scale) < 1e-4


def test_gelu_and_parameters():
    t = np.linspace(-5, 5, 101)
    from scipy.stats import norm

    np.testing.assert_allclose(mf.activation("gelu").phi(t), t * norm.cdf(t), rtol=1e-14, atol=1e-16)
    leaky = mf.activation("leaky_relu", alpha=0.2)
    np.testing.assert_allclose(leaky.phi(t), np.where(t > 0, t, 0.2 * t), rtol=1e-15)
    elu = mf.activation("elu", alpha=0.5)
    np.testing.assert_allclose(elu.phi(t), np.where(t > 0, t, 0.5 * np.expm1(t)), rtol=1e-14)
    np.testing.assert_allclose(mf.activation("monomial", k=3).phi(t), t**3, rtol=1e-15)


def test_kinks_are_located():
    assert mf.activation("relu").kinks == (0.0,)
    assert mf.activation("hard_tanh").kinks == (-1.0, 1.0)
    assert mf.activation("abs").kinks == (0.0,)
    assert mf.activation("tanh").kinks == ()
    assert mf.activation("max(x, 2*x - 3)").kinks == (3.0,)
    assert mf.activation("Abs(x - 1) + Abs(x + 2)").kinks == (-2.0, 1.0)


def test_expression_forms_agree():
    mish_typed = mf.activation("x*tanh(log(1 + exp(x)))")
    t = np.linspace(-30, 30, 301)
    np.testing.assert_allclose(mish_typed.phi(t), HAND["mish"](t), rtol=1e-13, atol=1e-300)
    s = sp.Symbol("y")
    from_sympy = mf.activation(s * sp.tanh(s))
    np.testing.assert_allclose(from_sympy.phi(t), t * np.tanh(t), rtol=1e-15)
    assert mf.activation("x^2").phi(np.array([3.0]))[0] == 9.0


def test_overflow_free_evaluation_far_out():
    t = np.array([-900.0, -700.0, 700.0, 900.0])
    for name in ("softplus", "sigmoid", "swish", "mish", "gelu", "elu", "selu"):
        act = mf.activation(name)
        for f in (act.phi, act.dphi, act.d2phi):
            assert np.all(np.isfinite(f(t))), name
    np.testing.assert_allclose(mf.activation("softplus").phi(np.array([800.0])), [800.0])
    np.testing.assert_allclose(mf.activation("x*tanh(log(1 + exp(x)))").dphi(np.array([800.0])), [1.0])


def test_callable_activation_with_and_without_derivative():
    act = mf.activation(np.tanh, dphi=lambda t: 1 - np.tanh(t) ** 2)
    assert mf.chi_1(act, 1.5, 0.05) == pytest.approx(mf.chi_1("tanh", 1.5, 0.05), rel=1e-12)
    bare = mf.activation(np.tanh)
    assert mf.q_star(bare, 1.5, 0.05) == pytest.approx(mf.q_star("tanh", 1.5, 0.05), rel=1e-12)
    with pytest.raises(ValueError, match="dphi="):
        mf.chi_1(bare, 1.5, 0.05)


def test_unknown_name_suggests_closest():
    with pytest.raises(ValueError, match=r"'tanhh'.*Did you mean 'tanh'.*Known names: abs"):
        mf.activation("tanhh")
    with pytest.raises(ValueError, match="takes parameters"):
        mf.activation("relu", alpha=2)


@pytest.mark.parametrize("text", [
    "__import__('os').system('touch /tmp/meanfield_pwned')",
    "x.__class__",
    "(lambda y: y)(x)",
    "open('/etc/passwd')",
    "[x for x in ()]",
    "eval('1')",
    "y + 1",
    "tanh(x, x=1)",
])
def test_expressions_are_parsed_never_evaluated(text):
    if os.path.exists("/tmp/meanfield_pwned"):
        os.remove("/tmp/meanfield_pwned")
    with pytest.raises(ValueError):
        mf.activation(text)
    assert not os.path.exists("/tmp/meanfield_pwned")


def test_huge_constants_are_refused_quickly():
    with pytest.raises(ValueError, match="too large"):
        parse_expression("2**(10**10)")
    with pytest.raises(ValueError, match="too large"):
        parse_expression("x**1000")


def test_not_square_integrable_is_refused():
    with pytest.raises(ValueError, match="square-integrable"):
        mf.activation("exp(x**2)")
    with pytest.raises(ValueError, match="square-integrable"):
        mf.activation("exp(x**2/1000)")


def test_discontinuous_activation():
    step = mf.activation("heaviside(x)")
    assert not step.continuous
    assert mf.q_map(1.0, step, 1.0, 0.0) == pytest.approx(0.5, rel=1e-12)
    with pytest.raises(ValueError, match="discontinuous"):
        mf.chi_1(step, 1.0, 0.1)


def test_bad_callable():
    with pytest.raises(ValueError, match="finite"):
        mf.activation(lambda t: np.log(t))
    with pytest.raises(TypeError):
        mf.activation(3.0)


def test_table_description_lists_every_name():
    assert [row[0] for row in describe_table()] == mf.activation_names()
    assert parse_expression("sigmoid(x)").has(x)


@pytest.mark.parametrize("typed, meant", [("ReLU", "relu"), ("Relu", "relu"), ("GELU", "gelu"), ("Tanh", "tanh"),
                                          ("leaky-relu", "leaky_relu"), ("LeakyReLU", "leaky_relu"),
                                          ("hardtanh", "hard_tanh"), ("sigmod", "sigmoid")])
def test_near_misses_name_the_table_entry(typed, meant):
    with pytest.raises(ValueError, match=rf"unknown activation '{typed}'\. Did you mean '{meant}'"):
        mf.activation(typed)


def test_hyphenated_expressions_still_parse():
    np.testing.assert_allclose(mf.activation("x-1").phi(np.array([3.0])), [2.0])
    with pytest.raises(ValueError, match="unknown name 'foo'"):  # not close to any table name
        mf.activation("foo-bar")


def test_parameter_errors_name_the_known_parameters():
    with pytest.raises(ValueError, match=r"'leaky_relu' takes parameters: alpha \(default 0\.01\); got unknown beta"):
        mf.activation("leaky_relu", beta=1)
    with pytest.raises(ValueError, match=r"'monomial' takes parameters: k \(default 2\); got unknown alpha"):
        mf.activation("monomial", alpha=1)
    with pytest.raises(ValueError, match="'relu' takes parameters: none; got unknown alpha"):
        mf.activation("relu", alpha=0.1)
    for bad in (True, "0.2", float("inf"), None, [1]):
        with pytest.raises(ValueError, match="must be a finite number"):
            mf.activation("leaky_relu", alpha=bad)
    with pytest.raises(ValueError, match="only table entries take parameters"):
        mf.activation("x*tanh(x)", alpha=0.1)


def test_numpy_parameter_values():
    t = np.linspace(-2, 2, 9)
    np.testing.assert_allclose(mf.activation("leaky_relu", alpha=np.float64(0.3)).phi(t), np.where(t > 0, t, 0.3 * t))
    np.testing.assert_allclose(mf.activation("monomial", k=np.int64(3)).phi(t), t**3, rtol=1e-15)


def test_quadrature_warning_says_how_large_the_error_is():
    from meanfield.quadrature import QuadratureWarning

    rng = np.random.default_rng(1)

    def noisy(t):  # no adaptive rule can integrate noise to 1e-12
        return np.sin(200 * t) + 1e-3 * rng.standard_normal(np.shape(t))

    act = mf.activation(noisy)
    with pytest.warns(QuadratureWarning) as record:
        value = mf.q_map(1.0, act, 1.0, 0.0)  # E[phi(z)^2], about 1/2
    text = str(record[0].message)
    m = re.search(r"1 of 1 integrals did not reach the requested tolerance \(rtol 1e-12\); estimated error up to "
                  r"(\S+) absolute, (\S+) relative to the value", text)
    assert m, text
    absolute, relative = float(m.group(1)), float(m.group(2))
    assert 1e-12 * abs(value) < absolute < 1.0
    assert relative == pytest.approx(absolute / abs(value), rel=0.06)  # both printed to 2 digits


@pytest.mark.parametrize("spec, match", [
    ("-" * 999 + "x", "nested too deeply"), ("tanh(" * 200 + "x" + ")" * 200, "nested too deeply"),
    ("1e308*x*1e308", "cannot use expression"), ("Heaviside(x, x)", "cannot use expression"),
    ("erf(x)/0", "cannot use expression"),
])
def test_odd_expressions_give_a_value_error(spec, match):
    with pytest.raises(ValueError, match=match):
        mf.activation(spec)


@pytest.mark.parametrize("k", [2.0, 3.6, 4.0])
def test_fast_exponentials_are_measured_not_refused(k):
    # E[exp(k u)^2] = exp(2 k^2 q) for u ~ N(0, q): exp(8x) overflows at x = 100 but its integrals are finite
    assert mf.activation(f"exp({k}*x)").exp_rate == pytest.approx(k, rel=1e-9)
    assert mf.q_map(1.0, f"exp({k}*x)", 1.0, 0.0) == pytest.approx(np.exp(2 * k * k), rel=1e-10)
