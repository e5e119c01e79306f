"""Seeded fuzzing of what users type: the contract of every entry point, within a time bound.

Each case is a valid call with one argument replaced by a generated value (typed expressions
from a small grammar and random junk, odd numbers, wrong types and shapes).  The contract: a
result whose numbers are finite (inf or NaN only where documented: a diverging variance, the
correlation of a diverged network), or a ValueError/TypeError of the package's own that names the
argument; never a hang, and never an exception of numpy, scipy, sympy or numba (nor a subclass of
ValueError of theirs, such as sympy's SympifyError or numpy's LinAlgError).
"""

import math
import signal
import threading
import time
import warnings

import numpy as np
import pytest

import meanfield as mf

SEED = 20261202
#: Seconds one call may take (generous: the machine may be loaded).
CALL_LIMIT = 30.0

_FUNCS = ["exp", "log", "sqrt", "sin", "cos", "tan", "tanh", "erf", "abs", "sigmoid", "softplus", "relu",
          "sign", "atan", "asinh", "max", "min", "Heaviside", "cosh", "norm_cdf"]
_LEAVES = ["x", "x", "x", "1", "2", "0.5", "0", "pi", "e", "1e-300", "1e308", "3.7", "2.4020563531719796", "-1"]
_JUNK = "x()+-*/^.,0123456789e_abcfhijklmnopstuvwyz[]= "


def _expression(rng, depth=0):
    r = rng.random()
    if depth >= 4 or r < 0.25:
        return str(rng.choice(_LEAVES))
    if r < 0.6:
        f = str(rng.choice(_FUNCS))
        if f in ("max", "min"):
            return f"{f}({_expression(rng, depth + 1)}, {_expression(rng, depth + 1)})"
        return f"{f}({_expression(rng, depth + 1)})"
    if r < 0.65:
        return f"-{_expression(rng, depth + 1)}"
    op = str(rng.choice(["+", "-", "*", "/", "**", "*"]))
    if op == "**":
        return f"({_expression(rng, depth + 1)})**{rng.choice(['2', '3', '0.5', '-1', '7', '64', 'x'])}"
    return f"({_expression(rng, depth + 1)}){op}({_expression(rng, depth + 1)})"


def expressions(n):
    rng = np.random.default_rng(SEED)
    out = []
    for _ in range(n):
        if rng.random() < 0.2:
            out.append("".join(rng.choice(list(_JUNK), size=int(rng.integers(1, 14)))))
        else:
            out.append(_expression(rng))
    return out


class _Timeout(Exception):
    pass


def _call(fn):
    """``fn()`` under the time limit (an alarm in the main thread; elsewhere only measured)."""
    main = threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGALRM")
    if main:
        def ring(*_):
            raise _Timeout
        old = signal.signal(signal.SIGALRM, ring)
        signal.setitimer(signal.ITIMER_REAL, CALL_LIMIT)
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # QuadratureWarning, KernelWarning, DerivativeWarning
            return fn(), None
    except _Timeout:
        pytest.fail(f"call took more than {CALL_LIMIT} s")
    except Exception as err:  # noqa: BLE001 - the contract is checked by the caller
        return None, err
    finally:
        if main:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
        assert time.perf_counter() - start < CALL_LIMIT


def _ours(err):
    """Whether ``err`` is a plain ValueError/TypeError raised by the package itself."""
    own = type(err).__module__.startswith("meanfield") and isinstance(err, (ValueError, TypeError))
    if type(err) not in (ValueError, TypeError) and not own:
        return False
    tb = err.__traceback__
    last = None
    while tb is not None:
        last = tb.tb_frame.f_code.co_filename
        tb = tb.tb_next
    return last is not None and "meanfield" in last.replace("\\", "/").split("/site-packages/")[-1]


def _check_error(err, names, context):
    assert _ours(err), f"{context}: raw {type(err).__module__}.{type(err).__name__}: {err}"
    text = str(err)
    assert any(n in text for n in names), f"{context}: the message does not name {names}: {text}"


def _finite_or_documented(value, context, allow_inf=False):
    arr = np.asarray(value, dtype=float)
    bad = np.isnan(arr) | (np.isinf(arr) & (not allow_inf))
    assert not bad.any(), f"{context}: got {value!r}"


# ---------------------------------------------------------------------------------------------
# Typed expressions: refused in words, or an activation whose q-map is a number
# ---------------------------------------------------------------------------------------------

_EXPR_WORDS = ("expression", "activation", "function", "exponent", "constant", "parse", "name", "argument",
               "allowed", "power", "nested")


@pytest.mark.parametrize("text", expressions(60))
def test_typed_expressions_keep_the_contract(text):
    act, err = _call(lambda: mf.activation(text))
    if err is not None:
        _check_error(err, _EXPR_WORDS, f"activation({text!r})")
        return
    for q in (0.3, 4.0):
        value, err = _call(lambda q=q: mf.q_map(q, act, 1.5, 0.1))
        if err is not None:  # an expectation that does not exist (a non-integrable singularity), said in words
            _check_error(err, _EXPR_WORDS + ("infinite", "integrable", "diverge", "singular"), f"q_map(.., {text!r})")
            continue
        _finite_or_documented(value, f"q_map({q}, {text!r})", allow_inf=True)  # inf: E[phi^2] diverges
        assert value >= 0.1 or math.isinf(value)


# ---------------------------------------------------------------------------------------------
# Secondary arguments: one odd value at a time in an otherwise valid call
# ---------------------------------------------------------------------------------------------

ODD = [0, -1, 1e-300, 1e300, float("nan"), float("inf"), -float("inf"), True, "1", [1.0, 2.0], None, 1j,
       np.array([0.5, 2.0]), np.array([[1.0]]), 2.5, 10**12]

X4 = np.array([[1.0, 0.0], [0.3, 1.0], [-0.5, 0.2], [0.0, 0.0]])

CALLS = {
    "q_map": (lambda **k: mf.q_map(**{"q": 1.0, "act": "tanh", "sigma_w2": 1.5, "sigma_b2": 0.1, **k}),
              ["q", "sigma_w2", "sigma_b2", "rho", "method"]),
    "c_map": (lambda **k: mf.c_map(**{"c": 0.3, "act": "erf", "sigma_w2": 1.5, "sigma_b2": 0.1, **k}),
              ["c", "q", "rho"]),
    "chi_1": (lambda **k: mf.chi_1(**{"act": "relu", "sigma_w2": 1.5, "sigma_b2": 0.1, **k}), ["q", "rho"]),
    "propagate": (lambda **k: mf.propagate(**{"act": "tanh", "q0": 1.0, "c0": 0.5, "depth": 5, "sigma_w2": 1.5,
                                              "sigma_b2": 0.1, **k}),
                  ["q0", "c0", "depth", "rho", "memory_limit"]),
    "gradient_growth": (lambda **k: mf.gradient_growth(**{"act": "tanh", "depth": 5, "sigma_w2": 1.5, "sigma_b2": 0.1,
                                                          **k}),
                        ["depth", "q0", "sigma_v2", "sigma_a2", "memory_limit", "batch_size"]),
    "residual": (lambda **k: mf.gradient_growth(**{"act": "tanh", "depth": 5, "sigma_w2": 1.5, "sigma_b2": 0.1,
                                                   "residual": True, **k}),
                 ["sigma_v2", "q0"]),
    "nngp": (lambda **k: mf.nngp(**{"X1": X4, "X2": None, "act": "relu", "depth": 2, **k}),
             ["X1", "X2", "depth", "sigma_w2", "sigma_b2", "method"]),
    "ntk": (lambda **k: mf.ntk(**{"X1": X4, "X2": None, "act": "erf", "depth": 2, **k}),
            ["X2", "depth", "sigma_b2"]),
    "regressor": (lambda **k: mf.NNGPRegressor(**{k2: v for k2, v in k.items() if k2 != "y"}).fit(
                      X4, k.get("y", [1.0, 2.0, 3.0, 4.0])).predict(X4),
                  ["noise", "jitter", "depth", "y"]),
    "classifier": (lambda **k: mf.NNGPClassifier(**{k2: v for k2, v in k.items() if k2 != "y"}).fit(
                       X4, k.get("y", [0, 1, 0, 1])).predict(X4),
                   ["targets", "noise", "y"]),
    "phase_diagram": (lambda **k: mf.phase_diagram(**{"act": "erf", "sigma_w2": np.array([0.5, 1.5]),
                                                      "sigma_b2": np.array([0.0, 0.1]), **k}),
                      ["rho", "progress", "memory_limit", "sigma_w2"]),
    "sampled": (lambda **k: mf.empirical.simulate(
                    mf.empirical.NetworkSpec("tanh", sigma_w2=1.5, sigma_b2=0.1, width=8, depth=2,
                                             **{k2: v for k2, v in k.items() if k2 in ("dtype", "weights")}),
                    X4[:3], 2, k.get("rng", 0), memory_limit=k.get("memory_limit")),
                ["rng", "dtype", "memory_limit", "weights"]),
}

# arguments whose odd values make documented inf/NaN (a diverging variance, an undefined correlation)
_MAY_BE_INF = {"q", "sigma_w2", "sigma_b2", "q0", "sigma_v2", "sigma_a2", "depth", "X1"}


@pytest.fixture(autouse=True)
def _quick_refusal(monkeypatch):
    """Recursions that never settle are judged after 2 s, not 10."""
    from meanfield import _bounded

    monkeypatch.setattr(_bounded, "REFUSE_AFTER", 2.0)


def _cases(n_per_arg=4):
    rng = np.random.default_rng(SEED + 1)
    cases = []
    for name, (_, args) in CALLS.items():
        for arg in args:
            for k in rng.choice(len(ODD), size=n_per_arg, replace=False):
                cases.append((name, arg, int(k)))
    return cases


def _names(arg):
    aliases = {"X1": ("X", "input"), "X2": ("X", "input"), "y": ("y", "label", "target", "class"),
               "q0": ("q0", "q1", "q2"), "rng": ("seed", "rng", "Generator"), "c": ("c",)}
    return (arg,) + aliases.get(arg, ())


@pytest.mark.parametrize("name, arg, k", _cases())
def test_secondary_arguments_keep_the_contract(name, arg, k):
    fn, _ = CALLS[name]
    value = ODD[k]
    if arg in ("X1", "X2"):
        value = np.full((2, 2), value) if np.ndim(value) == 0 and not isinstance(value, (str, type(None))) else value
    if arg == "progress":
        value = value if value is not None else (lambda done, total: None)
    result, err = _call(lambda: fn(**{arg: value}))
    context = f"{name}({arg}={value!r})"
    if err is not None:
        _check_error(err, _names(arg), context)
        return
    numbers = []
    for item in (result if isinstance(result, tuple) else (result,)):
        if isinstance(item, np.ndarray) and item.dtype.kind in "fc":
            numbers.append(item)
        elif hasattr(item, "__dataclass_fields__"):
            for f in item.__dataclass_fields__:
                v = getattr(item, f)
                if isinstance(v, np.ndarray) and v.dtype.kind == "f" and f in ("q", "q1", "q2", "per_layer", "K"):
                    numbers.append(v)
        elif isinstance(item, float):
            numbers.append(np.asarray(item))
    for v in numbers:
        assert not np.isnan(v).any() or arg in _MAY_BE_INF, f"{context}: NaN in the result"
