"""Activation functions: phi, phi', phi'' and the points where they are not smooth.

An :class:`Activation` is built from a name in the table (``activation("tanh")``), an
expression string in ``x`` (``activation("x*tanh(softplus(x))")``), a sympy expression in one
symbol, or a Python callable.  For the symbolic kinds, sympy derives phi' and phi'' once; the
numeric functions are made from those expressions, and the kinks (points where phi or phi' is
not smooth) are located so that quadrature can split the integration range there.

Expression strings are parsed with :mod:`ast` into a whitelist of nodes (numbers, ``x``,
``pi``, ``e``, arithmetic, and the functions in :data:`FUNCTIONS`); they are never evaluated as
Python.
"""

from __future__ import annotations

import ast
import difflib
import fractions
import functools
import math
import numbers
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Union

import numpy as np
import sympy as sp
from scipy import special
from sympy.codegen.rewriting import expm1_opt, log1p_opt, optimize

from . import _bounded
from ._bounded import DerivativeWarning
from ._growth import growth_rate

__all__ = [
    "Activation",
    "DerivativeWarning",
    "ActivationLike",
    "activation",
    "activation_names",
    "FUNCTIONS",
    "x",
    "softplus",
    "sigmoid",
    "norm_cdf",
]

#: The symbol every activation expression is written in.
x = sp.Symbol("x", real=True)


class sigmoid(sp.Function):
    """Logistic function 1 / (1 + exp(-a)), evaluated without overflow."""

    def fdiff(self, argindex=1):
        """Derivative: sigmoid (1 - sigmoid)."""
        s = sigmoid(self.args[0])
        return s * (1 - s)

    def _eval_rewrite_as_exp(self, a, **kwargs):
        return 1 / (1 + sp.exp(-a))


class norm_cdf(sp.Function):
    """Standard normal distribution function (1 + erf(a / sqrt(2))) / 2, accurate in both tails."""

    def fdiff(self, argindex=1):
        """The standard normal density."""
        a = self.args[0]
        return sp.exp(-a**2 / 2) / sp.sqrt(2 * sp.pi)

    def _eval_rewrite_as_erf(self, a, **kwargs):
        return (1 + sp.erf(a / sp.sqrt(2))) / 2


class softplus(sp.Function):
    """log(1 + exp(a)), evaluated without overflow."""

    def fdiff(self, argindex=1):
        """Derivative: sigmoid."""
        return sigmoid(self.args[0])

    def _eval_rewrite_as_exp(self, a, **kwargs):
        return sp.log(1 + sp.exp(a))


def _np_heaviside(a, h0=0.5):
    return np.heaviside(a, h0)


def _np_softplus(a):
    return np.logaddexp(0.0, a)


#: Numeric implementations handed to ``sympy.lambdify``.
_NUMERIC = {
    "softplus": _np_softplus,
    "sigmoid": special.expit,
    "norm_cdf": special.ndtr,
    "Heaviside": _np_heaviside,
    "erf": special.erf,
    "erfc": special.erfc,
}

_SELU_LAMBDA = sp.Float("1.0507009873554804934193349852946", 30)
_SELU_ALPHA = sp.Float("1.6732632423543772848170429916717", 30)


def _relu(a):
    return sp.Piecewise((a, a > 0), (0, True))


#: Functions an expression string may call, mapped to sympy.
FUNCTIONS: dict[str, Callable] = {
    "exp": sp.exp,
    "log": sp.log,
    "sqrt": sp.sqrt,
    "sin": sp.sin,
    "cos": sp.cos,
    "tan": sp.tan,
    "sinh": sp.sinh,
    "cosh": sp.cosh,
    "tanh": sp.tanh,
    "asinh": sp.asinh,
    "arcsinh": sp.asinh,
    "atan": sp.atan,
    "arctan": sp.atan,
    "erf": sp.erf,
    "erfc": sp.erfc,
    "abs": sp.Abs,
    "Abs": sp.Abs,
    "max": sp.Max,
    "Max": sp.Max,
    "min": sp.Min,
    "Min": sp.Min,
    "sign": sp.sign,
    "heaviside": sp.Heaviside,
    "Heaviside": sp.Heaviside,
    "sigmoid": sigmoid,
    "softplus": softplus,
    "relu": _relu,
    "norm_cdf": norm_cdf,
}

_CONSTANTS = {"pi": sp.pi, "e": sp.E, "E": sp.E}


# ----------------------------------------------------------------------------------------
# The named table.  Each entry: (expression builder taking the parameters, default params,
# closed-form family or None, one-line description).
# ----------------------------------------------------------------------------------------


def _leaky(alpha):
    return sp.Piecewise((x, x > 0), (alpha * x, True))


def _elu(alpha):
    return sp.Piecewise((x, x > 0), (alpha * (sp.exp(x) - 1), True))


_TABLE: dict[str, tuple[Callable[..., sp.Expr], dict, str]] = {
    "linear": (lambda: x, {}, "identity, phi(x) = x"),
    "relu": (lambda: _relu(x), {}, "max(0, x)"),
    "leaky_relu": (_leaky, {"alpha": 0.01}, "x for x > 0, alpha*x otherwise"),
    "abs": (lambda: sp.Abs(x), {}, "|x|"),
    "hard_tanh": (
        lambda: sp.Piecewise((-1, x < -1), (x, x < 1), (1, True)),
        {},
        "clip(x, -1, 1)",
    ),
    "tanh": (lambda: sp.tanh(x), {}, "tanh(x)"),
    "erf": (lambda: sp.erf(x), {}, "erf(x)"),
    "sigmoid": (lambda: sigmoid(x), {}, "1 / (1 + exp(-x))"),
    "softplus": (lambda: softplus(x), {}, "log(1 + exp(x))"),
    "elu": (_elu, {"alpha": 1.0}, "x for x > 0, alpha*(exp(x) - 1) otherwise"),
    "selu": (lambda: _SELU_LAMBDA * _elu(_SELU_ALPHA), {}, "lambda * elu(x; alpha), Klambauer 2017"),
    "gelu": (lambda: x * norm_cdf(x), {}, "x * Phi(x), Phi the standard normal CDF"),
    "swish": (lambda: x * sigmoid(x), {}, "x * sigmoid(x)"),
    "silu": (lambda: x * sigmoid(x), {}, "x * sigmoid(x) (same as swish)"),
    "mish": (lambda: x * sp.tanh(softplus(x)), {}, "x * tanh(softplus(x))"),
    "sin": (lambda: sp.sin(x), {}, "sin(x)"),
    "cos": (lambda: sp.cos(x), {}, "cos(x)"),
    "exp": (lambda: sp.exp(x), {}, "exp(x)"),
    "monomial": (lambda k: x ** int(k), {"k": 2}, "x**k"),
}


def activation_names() -> list[str]:
    """The names in the activation table, sorted."""
    return sorted(_TABLE)


# ----------------------------------------------------------------------------------------
# Activation
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Activation:
    """A nonlinearity with its derivatives and kinks.

    Attributes
    ----------
    name : str
        Table name, the expression as typed, or the callable's name.
    expr, dexpr, d2expr : sympy.Expr or None
        phi, phi' and phi'' in the symbol :data:`x` (None for callables).  Derivatives are
        pointwise: a kink contributes no Dirac mass (quadrature splits there instead).
    phi, dphi, d2phi : callable or None
        Vectorised numpy functions of one array.
    kinks : tuple of float
        Points where phi or phi' is not smooth, sorted.
    continuous : bool
        False if phi jumps somewhere; then derivative-based quantities are undefined.
    exp_rate : float
        Exponential growth rate of |phi| and |phi'| at large |x| (0 for polynomial growth),
        used to widen the integration range.
    slopes : (float, float) or None
        Limits of phi' at +inf and -inf where they exist (phi asymptotically linear).
    """

    name: str
    phi: Callable
    dphi: Callable | None = None
    d2phi: Callable | None = None
    expr: sp.Expr | None = None
    dexpr: sp.Expr | None = None
    d2expr: sp.Expr | None = None
    kinks: tuple = ()
    continuous: bool = True
    exp_rate: float = 0.0
    slopes: tuple | None = None
    params: dict = field(default_factory=dict)

    def __repr__(self):
        return f"Activation({self.name!r})"

    def __call__(self, xs):
        """Evaluate phi at ``xs``."""
        return self.phi(xs)

    def derivative(self, order: int) -> Callable:
        """Phi (order 0), phi' (1) or phi'' (2); a clear error if it is not available."""
        fn = (self.phi, self.dphi, self.d2phi)[order]
        if fn is None:
            raise ValueError(
                f"activation {self.name!r} has no derivative of order {order}: pass "
                f"{'dphi' if order == 1 else 'd2phi'}= when building it from a callable, "
                "or give it as an expression so sympy can derive it"
            )
        if order >= 1 and not self.continuous:
            raise ValueError(
                f"activation {self.name!r} is discontinuous (at x in {list(self.kinks)}): "
                "its derivative has a Dirac mass, so chi_1, chi_c and the depth scales are undefined"
            )
        return fn


# ----------------------------------------------------------------------------------------
# Building
# ----------------------------------------------------------------------------------------



#: What every function taking an activation accepts: an Activation, a table name, a typed expression,
#: a sympy expression in x, or a Python callable.
ActivationLike = Union[Activation, str, sp.Expr, Callable]  # noqa: UP007 (a runtime alias)

def activation(spec, dphi: Callable | None = None, d2phi: Callable | None = None, *,
               kinks=(), **params) -> Activation:
    """Build an :class:`Activation`.

    Parameters
    ----------
    spec : str, sympy.Expr, callable or Activation
        A name from the table (see :func:`activation_names`; parameters such as ``alpha`` for
        ``leaky_relu``/``elu`` and ``k`` for ``monomial`` as keywords), an expression in ``x``
        such as ``"x*tanh(log(1 + exp(x)))"``, a sympy expression in one symbol, or a numpy-
        vectorised callable.
    dphi, d2phi : callable, optional
        Derivatives of a callable ``spec``.  Needed for chi_1, chi_c and the depth scales.
    kinks : sequence of float, optional
        For a callable: points where it or its derivative is not smooth.
    **params
        Parameters of a table entry.

    Returns
    -------
    Activation

    Raises
    ------
    ValueError
        Unknown name (the message lists the known ones and the closest match), an expression
        that uses anything outside the whitelist, an activation that grows too fast to be
        square-integrable under a Gaussian, or a callable that does not return finite values.
    """
    if isinstance(spec, Activation):
        if params or dphi is not None or d2phi is not None:
            raise ValueError("an Activation object takes no further parameters")
        return spec
    if isinstance(spec, str):
        key = spec.strip()
        if key in _TABLE:
            return _named(key, tuple(sorted(_table_params(key, params).items())))
        if key.isidentifier() and key not in ("x",):
            raise ValueError(_unknown_name(key))
        if _NAME_LIKE.fullmatch(key) and _suggest(key):
            try:  # "leaky-relu" reads as an expression; say which name was probably meant
                parse_expression(key)
            except ValueError:
                raise ValueError(_unknown_name(key)) from None
        if params:
            raise ValueError(f"parameters {sorted(params)} given for {spec!r}, which is not a table name; "
                             "only table entries take parameters (see describe_table)")
        return _guarded(_from_string, key, key)
    if isinstance(spec, sp.Expr):
        if params:
            raise ValueError("parameters are only for table names")
        free = spec.free_symbols
        if len(free) > 1:
            raise ValueError(f"expression {spec} must have one free symbol, has {sorted(map(str, free))}")
        expr = spec.subs({s: x for s in free}) if free else spec
        return _guarded(_from_expr, str(spec), expr, str(spec))
    if callable(spec):
        return _from_callable(spec, dphi, d2phi, kinks)
    raise TypeError(f"cannot make an activation from {type(spec).__name__}: give a name, an expression or a callable")


def _guarded(build, text, *args):
    """``build(*args)``, with failures of the parser or of sympy on odd input turned into a ValueError."""
    try:
        return build(*args)
    except ValueError:
        raise
    except RecursionError:
        raise ValueError(f"expression {text[:60]!r}{'...' if len(text) > 60 else ''} is nested too deeply") from None
    except (OverflowError, ZeroDivisionError, KeyError, TypeError, AttributeError, NotImplementedError,
            sp.SympifyError, sp.PolynomialError) as err:
        raise ValueError(f"cannot use expression {text[:60]!r} as an activation: {type(err).__name__}: {err}") from None


_NAME_LIKE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def _suggest(key: str) -> list[str]:
    """Table names close to ``key``, ignoring case, hyphens and underscores ("ReLU", "leaky-relu")."""
    names = activation_names()
    norm = key.lower().replace("-", "_")
    if norm in names:
        return [norm]
    squashed = {n.replace("_", ""): n for n in names}
    if norm.replace("_", "") in squashed:
        return [squashed[norm.replace("_", "")]]
    return difflib.get_close_matches(norm, names, n=3, cutoff=0.6)


def _unknown_name(key: str) -> str:
    close = _suggest(key)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return (f"unknown activation {key!r}.{hint} Known names: {', '.join(activation_names())}; "
            "or give an expression in x, such as 'x*tanh(softplus(x))'")


def _number(name: str, key: str, value):
    """A parameter value as a plain int or float; booleans, strings and non-finite values are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ValueError(f"parameter {key} of {name!r} must be a finite number, got {value!r}")
    return int(value) if isinstance(value, numbers.Integral) else float(value)


def _table_params(name: str, params: dict) -> dict:
    """The parameters of table entry ``name``, checked: known names only, finite numbers only."""
    defaults = _TABLE[name][1]
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        known = ", ".join(f"{k} (default {v})" for k, v in defaults.items()) or "none"
        raise ValueError(f"activation {name!r} takes parameters: {known}; got unknown {', '.join(unknown)}")
    return {k: _number(name, k, v) for k, v in params.items()}


@functools.lru_cache(maxsize=64)
def _named(name: str, params: tuple) -> Activation:
    build, defaults, _ = _TABLE[name]
    values = {**defaults, **dict(params)}
    if name == "monomial" and (int(values["k"]) != values["k"] or not 0 <= values["k"] <= 32):
        raise ValueError(f"monomial degree k must be an integer in [0, 32], got {values['k']!r}")
    expr = build(**{k: sp.nsimplify(v) if k == "alpha" else v for k, v in values.items()})
    label = name if not params else f"{name}({', '.join(f'{k}={v}' for k, v in values.items())})"
    return _from_expr(expr, label, params=values, table_name=name)


@functools.lru_cache(maxsize=64)
def _from_string(text: str) -> Activation:
    return _from_expr(parse_expression(text), text)


def parse_expression(text: str) -> sp.Expr:
    """Parse an expression in ``x`` into sympy without evaluating any Python.

    Allowed: numbers, ``x``, ``pi``, ``e``, ``+ - * / **`` (``^`` is read as a power), unary
    minus, and calls of the functions in :data:`FUNCTIONS`.  Refused with a ValueError, before any
    symbolic work: deep nesting, division by zero, constants beyond the float range.
    """
    if len(text) > 2000:
        raise ValueError("expression is too long (more than 2000 characters)")
    try:
        tree = ast.parse(text.replace("^", "**"), mode="eval")
    except (SyntaxError, RecursionError, MemoryError) as err:  # "too many nested parentheses" is a SyntaxError
        if isinstance(err, SyntaxError) and "nested" not in str(err.msg):
            raise ValueError(f"cannot parse expression {text!r}: {err.msg}") from None
        tree = None
    if tree is None or _nesting(tree.body) > _MAX_NESTING:
        raise _bad(text, f"the expression is nested too deeply (more than {_MAX_NESTING} levels of calls, parentheses)")
    expr = _convert(tree.body, text)
    nodes = sp.preorder_traversal(expr)
    for node in nodes:  # constants, and functions of constants such as exp(1000), beyond float64
        if node.is_number:
            nodes.skip()
            if node.is_real is False or node.has(sp.I):  # sqrt(-1): the activation must be real
                raise _bad(text, f"the constant {node} is not a real number")
            if (abs(sp.N(node, 17)) > _FLOAT_MAX) is sp.true:
                raise _bad(text, f"the expression overflows (the constant {sp.N(node, 3)} is beyond the float "
                                 "range, about 1.8e308)")
    return expr


_MAX_NESTING = 50  # deepest nesting of calls, signs and parenthesised operations in a typed expression
_FLOAT_MAX = float(np.finfo(float).max)


def _bad(text: str, why: str) -> ValueError:
    return ValueError(f"cannot use expression {text[:60]!r}{'...' if len(text) > 60 else ''} as an activation: {why}")


def _nesting(root) -> int:
    """Depth of an expression tree, not counting the left operand of a chain such as a + b + c + d."""
    deepest, stack = 0, [(root, 0)]
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        if isinstance(node, ast.BinOp):
            stack += [(node.left, level), (node.right, level + 1)]
        else:
            stack.extend((child, level + 1) for child in ast.iter_child_nodes(node))
    return deepest


def _literal(value: float) -> sp.Expr:
    """A typed float: exact if a short decimal (0.1 -> 1/10), else a sympy Float (2.4020563531719796)."""
    if not math.isfinite(value):
        raise ValueError("the expression overflows (a number in it is beyond the float range, about 1.8e308)")
    frac = fractions.Fraction(repr(value))  # long decimals as rationals make sympy's rewriting grow without bound
    return sp.Rational(frac.numerator, frac.denominator) if frac.denominator <= 10**6 else sp.Float(value)


_BINOPS = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.Pow: lambda a, b: a ** b,
}


def _convert(node, text):
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        if isinstance(node.value, float):
            try:
                return _literal(node.value)
            except ValueError as err:
                raise _bad(text, str(err)) from None
        return sp.Integer(node.value)
    if isinstance(node, ast.Name):
        if node.id == "x":
            return x
        if node.id in _CONSTANTS:
            return _CONSTANTS[node.id]
        raise ValueError(f"unknown name {node.id!r} in {text!r}: the variable is x; constants are pi and e")
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        val = _convert(node.operand, text)
        return -val if isinstance(node.op, ast.USub) else val
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        chain = [node]  # a + b + c + ...: walk the left operands without recursion
        while isinstance(chain[-1].left, ast.BinOp) and type(chain[-1].left.op) in _BINOPS:
            chain.append(chain[-1].left)
        a = _convert(chain[-1].left, text)
        for link in reversed(chain):
            a = _binop(link, a, _convert(link.right, text), text)
        return a
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        name = node.func.id
        if name not in FUNCTIONS:
            raise ValueError(f"function {name!r} is not allowed in {text!r}; allowed: {', '.join(sorted(FUNCTIONS))}")
        args = [_convert(arg, text) for arg in node.args]
        n, lower = len(args), name.lower()
        if lower == "heaviside" and not (n == 1 or (n == 2 and args[1].is_number and args[1].is_real)):
            raise _bad(text, f"Heaviside takes one argument (and optionally a number, its value at 0), got {n}")
        if (n == 0 if lower in ("max", "min") else n != 1 and lower != "heaviside"):
            raise _bad(text, f"{name} takes {'at least ' if lower in ('max', 'min') else ''}one argument, got {n}")
        try:
            return _finite(FUNCTIONS[name](*args), node, text)
        except (TypeError, ValueError) as err:  # sympy's own (Max of constants it cannot compare)
            if str(err).startswith("cannot use expression"):
                raise
            raise ValueError(f"bad arguments to {name} in expression {text!r}: {err}") from None
    raise ValueError(
        f"cannot use {ast.unparse(node)!r} in an activation expression {text!r}: only numbers, x, "
        "pi, e, arithmetic and whitelisted functions are allowed"
    )


def _binop(node, a, b, text):
    """``a op b`` for the operator of ``node``; division by zero and huge powers refused."""
    if b.is_zero and isinstance(node.op, ast.Div):
        raise _bad(text, f"division by zero in {ast.unparse(node)!r}")
    if isinstance(node.op, ast.Pow):
        if b.is_number and (not b.is_real or abs(sp.N(b)) > 64):
            raise ValueError(f"exponent {ast.unparse(node.right)!r} in {text!r} is too large (at most 64 in magnitude)")
        if a.is_number and b.is_number and abs(sp.N(a)) > 1e6:
            raise ValueError(f"constant power {ast.unparse(node)!r} in {text!r} is too large")
        if a.is_zero and b.is_negative:
            raise _bad(text, f"division by zero in {ast.unparse(node)!r} (0 to a negative power)")
    return _finite(_BINOPS[type(node.op)](a, b), node, text)


def _finite(value: sp.Expr, node, text: str) -> sp.Expr:
    """``value``, or ValueError if sympy made it infinite or undefined (log(0))."""
    if value.has(sp.zoo, sp.oo, -sp.oo, sp.nan):
        raise _bad(text, f"{ast.unparse(node)!r} is infinite or undefined")
    return value


def _rewrite_stable(expr: sp.Expr) -> sp.Expr:
    """Forms that keep precision in the tails: softplus(a), sigmoid(a), norm_cdf for 1 +- erf(a)."""
    w = sp.Wild("w")
    expr = expr.replace(sp.log(1 + sp.exp(w)), softplus(w))
    expr = expr.replace(1 / (1 + sp.exp(-w)), sigmoid(w))
    expr = expr.replace(1 + sp.erf(w), 2 * norm_cdf(sp.sqrt(2) * w))
    expr = expr.replace(1 - sp.erf(w), 2 * norm_cdf(-sp.sqrt(2) * w))
    return expr


def _pointwise(expr: sp.Expr) -> sp.Expr:
    """Drop Dirac masses: derivatives are taken pointwise away from kinks."""
    return expr.replace(sp.DiracDelta, lambda *a: sp.Integer(0))


def _lambdify(expr: sp.Expr) -> Callable:
    # exp(a) - 1 and log(1 + a) lose all precision for small a: evaluate them as expm1, log1p
    if expr.has(sp.exp, sp.log) and _bounded.small(expr, _bounded.MAX_NODES_REWRITE):
        expr = optimize(expr, [expm1_opt, log1p_opt])
    raw = sp.lambdify(x, expr, modules=[_NUMERIC, "scipy", "numpy"])

    def fn(xs):
        xs = np.asarray(xs, dtype=float)
        with np.errstate(all="ignore"):
            out = raw(xs)
        return np.broadcast_to(np.asarray(out, dtype=float), xs.shape)

    return fn


def _kink_points(expr: sp.Expr) -> set[float]:
    points: set[float] = set()

    def roots(eq):
        if _bounded.small(eq, 40):
            eq = sp.simplify(eq)
        if not eq.has(x):
            return
        sol = sp.solveset(eq, x, domain=sp.S.Reals)
        if sol is sp.S.EmptySet:
            return
        if not isinstance(sol, sp.FiniteSet):
            raise ValueError(f"cannot locate the non-smooth points of the activation {expr}: {eq} = 0 has solution "
                             f"set {sol}")
        for s in sol:
            points.add(float(s))

    for node in sp.preorder_traversal(expr):
        if isinstance(node, (sp.Abs, sp.sign, sp.Heaviside)):
            roots(node.args[0])
        elif isinstance(node, (sp.Max, sp.Min)):
            args = node.args
            for i in range(len(args)):
                for j in range(i + 1, len(args)):
                    roots(args[i] - args[j])
        elif isinstance(node, sp.Piecewise):
            for _, cond in node.args:
                for rel in cond.atoms(sp.core.relational.Relational):
                    roots(rel.lhs - rel.rhs)
        elif isinstance(node, (sp.floor, sp.ceiling, sp.frac)):
            raise ValueError(f"{node.func.__name__} makes infinitely many jumps; it is not supported in {expr}")
    return points


def _from_expr(expr: sp.Expr, name: str, params=None, table_name=None) -> Activation:
    expr = _rewrite_stable(sp.sympify(expr))
    # constants such as sigmoid(0.5): numbers now (compiled code outside this module has no sigmoid)
    expr = expr.replace(lambda n: n.is_number and n.has(sigmoid, softplus, norm_cdf) and not n.is_Atom,
                        lambda n: sp.Float(sp.N(n.rewrite(sp.exp).rewrite(sp.erf), 20), 17))
    bad = expr.free_symbols - {x}
    if bad:
        raise ValueError(f"expression {name!r} has symbols other than x: {sorted(map(str, bad))}")
    if not expr.is_real and expr.is_real is not None:
        raise ValueError(f"expression {name!r} is not real-valued")
    budget = _bounded.Budget()
    dexpr = d2expr = None
    if _bounded.small(expr, _bounded.MAX_NODES_DERIVE):
        dexpr = _pointwise(sp.diff(expr, x))
        if budget.left() and _bounded.small(dexpr, _bounded.MAX_NODES_DERIVE2):
            d2expr = _pointwise(sp.diff(dexpr, x))
    kinks = sorted(_kink_points(expr) | (_kink_points(dexpr) if dexpr is not None else set()))
    phi = _lambdify(expr)
    dphi = _lambdify(dexpr) if dexpr is not None and budget.left() else None
    d2phi = _lambdify(d2expr) if d2expr is not None and dphi is not None and budget.left() else None
    if dphi is None:  # too costly for sympy: numerical derivatives of phi
        dexpr = d2expr = None
        _bounded.warn_numeric(name, "phi' and phi''", "phi is too large to differentiate symbolically")
        dphi = _bounded.numeric_derivative(phi, kinks, order=1)
    if d2phi is None:
        d2expr = None
        if dexpr is not None:
            _bounded.warn_numeric(name, "phi''", "phi' is too large to differentiate symbolically")
            d2phi = _bounded.numeric_derivative(dphi, kinks, order=1)
        else:
            d2phi = _bounded.numeric_derivative(phi, kinks, order=2)
    probe = np.linspace(-5.0, 5.0, 101)
    vals = phi(probe)
    if not np.all(np.isfinite(vals)):
        bad_x = probe[~np.isfinite(vals)][0]
        raise ValueError(f"activation {name!r} is not finite at x = {bad_x:g}: it must be defined on the real line")
    continuous = True
    for k in kinks:
        h = 1e-9 * max(1.0, abs(k))
        left, right = phi(np.array([k - h, k + h]))
        if abs(right - left) > 1e-6 * max(1.0, abs(left), abs(right)):
            continuous = False
    rate = max(growth_rate(phi, name), growth_rate(dphi, name) if continuous else 0.0)
    slopes = None
    if rate == 0.0 and continuous:
        far = dphi(np.array([1e6, -1e6]))
        near = dphi(np.array([1e3, -1e3]))
        if np.all(np.isfinite(far)) and np.allclose(far, near, rtol=1e-6, atol=1e-9):
            slopes = (float(far[0]), float(far[1]))
    return Activation(
        name=name, phi=phi, dphi=dphi, d2phi=d2phi, expr=expr, dexpr=dexpr, d2expr=d2expr,
        kinks=tuple(kinks), continuous=continuous, exp_rate=rate, slopes=slopes,
        params=dict(params or {}, table=table_name),
    )


def _from_callable(fn, dphi, d2phi, kinks) -> Activation:
    name = getattr(fn, "__name__", "callable")
    probe = np.linspace(-5.0, 5.0, 11)
    for label, f in (("phi", fn), ("dphi", dphi), ("d2phi", d2phi)):
        if f is None:
            continue
        if not callable(f):
            raise TypeError(f"{label} must be callable, got {type(f).__name__}")
        try:
            with np.errstate(all="ignore"):
                out = np.asarray(f(probe), dtype=float)
        except Exception as err:  # the user's function failed on a plain array
            raise ValueError(f"{label} {name!r} failed on a numpy array: {err}") from err
        if out.shape != probe.shape or not np.all(np.isfinite(out)):
            raise ValueError(f"{label} {name!r} must map an array to a finite array of the same shape")
    try:
        kinks = tuple(sorted(float(k) for k in kinks))
    except (TypeError, ValueError):
        raise ValueError("kinks must be a sequence of numbers") from None
    if not all(math.isfinite(k) for k in kinks):
        raise ValueError("kinks must be finite")

    def wrap(f):
        if f is None:
            return None

        def g(xs):
            xs = np.asarray(xs, dtype=float)
            with np.errstate(all="ignore"):
                return np.broadcast_to(np.asarray(f(xs), dtype=float), xs.shape)

        return g

    phi = wrap(fn)
    rate = growth_rate(phi, name)
    if dphi is not None:
        rate = max(rate, growth_rate(wrap(dphi), name))
    return Activation(name=name, phi=phi, dphi=wrap(dphi), d2phi=wrap(d2phi), kinks=kinks, exp_rate=rate)


def describe_table() -> list[tuple[str, str, dict]]:
    """(name, description, default parameters) for each table entry."""
    return [(name, desc, dict(defaults)) for name, (_, defaults, desc) in sorted(_TABLE.items())]
