"""Gaussian expectations derived by rules, over a class of activations closed under them.

The class: finite sums of terms

    coef * x^p * exp(a x + b x^2) * Phi(g_1 x + d_1) * ... * [x > 0 or x < 0]

with ``Phi`` the standard normal distribution function.  It contains polynomials (Hermite
polynomials among them), ``exp``, ``sin``, ``cos``, ``sinh``, ``cosh`` of affine maps (the
trigonometric ones as complex exponentials), ``erf``, ``erfc`` and ``norm_cdf`` of affine maps
(``erf(y) = 2 Phi(sqrt(2) y) - 1``), products of these (gelu ``x Phi(x)``, gabor
``exp(-x^2/2) sin(x)``), and pieces on the two half-lines with the kink at 0 (``relu(x)**n``,
``sign``, ``Heaviside``, ``abs``, leaky variants, any ``Piecewise`` split at 0).
:func:`terms` decomposes a sympy expression into such terms, or raises :class:`Unsupported`.

:func:`expect` gives ``E[prod_i f_i(u_i)]`` for a zero-mean Gaussian vector ``u`` (one or two
variables) with a symbolic covariance ``S`` and terms ``f_i``, by four rules:

* tilting: ``exp(alpha.u + u^T B u) N(u; 0, S) = Z N(u; m, S')`` with ``S' = (I - 2 S B)^{-1} S``,
  ``m = S' alpha``, ``Z = det(I - 2 S B)^{-1/2} exp(alpha^T S' alpha / 2)`` (valid for a singular
  ``S``);
* Stein's lemma under the tilted measure, ``E[u_k h(u)] = m_k E[h] + sum_l S'_kl E[d h/d u_l]``,
  which lowers the polynomial degree; ``d Phi(g u + d)/du = g phi(g u + d)`` is again a tilt;
* ``E[Phi(g u + d)] = Phi((g m + d) / sqrt(1 + g^2 S'))`` and, for two factors, the bivariate normal
  distribution function ``Phi2(h, k; rho)`` (``1/4 + asin(rho) / (2 pi)`` when ``h = k = 0``);
* orthant moments of a zero-mean pair (the arc-cosine kernels of Cho & Saul 2009 for any
  integer powers): ``E[u1^i u2^j 1{u1 > 0} 1{u2 > 0}] = sqrt(S'11)^i sqrt(S'22)^j
  2^{(i+j)/2} Gamma(1 + (i+j)/2) / (2 pi) int_{theta - pi/2}^{pi/2} cos^i(t) cos^j(t - theta) dt``
  with ``theta = arccos(rho)``, the integral done term by term in complex exponentials.

Each step checks a deadline and a size bound (:class:`Budget`).  Nothing here is numerical: the
results are verified against quadrature by the caller.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import sympy as sp

from .activations import norm_cdf, x

__all__ = ["Unsupported", "Budget", "Term", "terms", "expect", "bvn_cdf", "derivative_terms"]

MAX_TERMS = 400  # terms of a decomposed activation (after expanding products)
MAX_POWER = 16  # largest integer power expanded
MAX_STEPS = 200_000  # recursion steps of one expectation


class Unsupported(Exception):
    """The expression is outside the class of the rules."""


class Budget(Exception):
    """The derivation exceeded its time or size bound."""


class bvn_cdf(sp.Function):
    """Bivariate standard normal distribution function ``Phi2(h, k; rho) = P(z1 < h, z2 < k)``."""

    nargs = 3

    def fdiff(self, argindex=1):
        """``d/dh = phi(h) Phi((k - rho h)/sqrt(1 - rho^2))`` (h, k alike); ``d/drho`` the bivariate density."""
        h, k, r = self.args
        s = sp.sqrt(1 - r**2)
        if argindex == 3:
            return sp.exp(-(h**2 - 2 * r * h * k + k**2) / (2 * s**2)) / (2 * sp.pi * s)
        a, b = (h, k) if argindex == 1 else (k, h)
        return sp.exp(-a**2 / 2) / sp.sqrt(2 * sp.pi) * norm_cdf((b - r * a) / s)


@dataclass(frozen=True)
class Term:
    """``coef x^power exp(a x + b x^2) prod Phi(g x + d) [region]`` (region 0: everywhere, +-1: sign(x))."""

    coef: sp.Expr
    power: int = 0
    a: sp.Expr = sp.Integer(0)
    b: sp.Expr = sp.Integer(0)
    cdfs: tuple = ()  # ((g, d), ...)
    region: int = 0

    def key(self):
        return (self.power, self.a, self.b, tuple(sorted(self.cdfs, key=str)), self.region)


def _times(s: Term, t: Term) -> Term | None:
    if s.region and t.region and s.region != t.region:
        return None
    return Term(s.coef * t.coef, s.power + t.power, s.a + t.a, s.b + t.b, s.cdfs + t.cdfs, s.region or t.region)


def _merge(ts: list[Term]) -> list[Term]:
    out: dict = {}
    for t in ts:
        k = t.key()
        out[k] = (out[k][0] + t.coef, t) if k in out else (t.coef, t)
    res = [Term(sp.nsimplify(cf) if cf.is_Float else cf, t.power, t.a, t.b, t.cdfs, t.region)
           for cf, t in out.values()]
    res = [t for t in res if t.coef != 0]
    if len(res) > MAX_TERMS:
        raise Budget(f"more than {MAX_TERMS} terms")
    return res


def product(A: list[Term], B: list[Term]) -> list[Term]:
    """The terms of the product of two sums of terms."""
    if len(A) * len(B) > 4 * MAX_TERMS:
        raise Budget(f"more than {MAX_TERMS} terms")
    return _merge([p for s in A for t in B if (p := _times(s, t)) is not None])


def _const(v) -> list[Term]:
    return [Term(sp.sympify(v))]


def _affine(arg) -> tuple[sp.Expr, sp.Expr]:
    """(g, d) with arg = g x + d, or Unsupported."""
    p = _poly(arg, 1)
    return p[1], p[0]


def _poly(arg, degree) -> list:
    """Coefficients c_0..c_degree of a polynomial in x of at most that degree, or Unsupported."""
    if not arg.has(x):
        return [arg] + [sp.Integer(0)] * degree
    try:
        P = sp.Poly(sp.expand(arg), x)
    except sp.PolynomialError:
        raise Unsupported(f"{arg} is not a polynomial in x") from None
    if P.degree() > degree or any(cf.has(x) or not cf.is_real for cf in P.all_coeffs()):
        raise Unsupported(f"{arg} is not a real polynomial of degree <= {degree}")
    cs = P.all_coeffs()[::-1]
    return cs + [sp.Integer(0)] * (degree + 1 - len(cs))


def _sign_of_linear(arg) -> int:
    """The sign of k in arg = k x; Unsupported for other arguments (a kink away from 0)."""
    g, d = _affine(arg)
    if d != 0 or g == 0 or not g.is_number:
        raise Unsupported(f"the kink of {arg} is not at 0")
    return 1 if g > 0 else -1


def _half(s: int) -> list[Term]:
    return [Term(sp.Integer(1), region=s)]


def _half_lines(cond) -> set:
    """The half-lines (+1, -1) on which a Piecewise condition holds; it may depend on sign(x) only."""
    if cond is sp.true:
        return {1, -1}
    if cond is sp.false:
        return set()
    for rel in cond.atoms(sp.core.relational.Relational):
        _sign_of_linear(rel.lhs - rel.rhs)
    out = set()
    for s in (1, -1):
        v = cond.subs(x, s)
        if v not in (sp.true, sp.false):
            raise Unsupported(f"cannot decide {cond} on a half-line")
        if v is sp.true:
            out.add(s)
    return out


def terms(expr: sp.Expr) -> list[Term]:
    """Decompose ``expr`` (in :data:`x`) into terms of the class, or raise :class:`Unsupported`."""
    if not expr.has(x):
        if not (expr.is_number and expr.is_real):
            raise Unsupported(f"{expr} is not a real constant")
        return _const(expr)
    if expr == x:
        return [Term(sp.Integer(1), power=1)]
    if isinstance(expr, sp.Add):
        return _merge([t for a in expr.args for t in terms(a)])
    if isinstance(expr, sp.Mul):
        out = _const(1)
        for a in expr.args:
            out = product(out, terms(a))
        return out
    if isinstance(expr, sp.Pow):
        base, n = expr.args
        if base == sp.E:
            return terms(sp.exp(n))
        if not (n.is_Integer and 0 <= n <= MAX_POWER):
            raise Unsupported(f"power {n} is not a small non-negative integer")
        b, out = terms(base), _const(1)
        for _ in range(int(n)):
            out = product(out, b)
        return out
    if isinstance(expr, sp.exp):
        c0, a, b = _poly(expr.args[0], 2)
        return [Term(sp.exp(c0), 0, a, b)]
    if isinstance(expr, (sp.sin, sp.cos, sp.sinh, sp.cosh)):
        g, d = _affine(expr.args[0])
        i = sp.I if isinstance(expr, (sp.sin, sp.cos)) else sp.Integer(1)
        up, down = Term(sp.exp(i * d) / 2, 0, i * g), Term(sp.exp(-i * d) / 2, 0, -i * g)
        if isinstance(expr, sp.sin):
            return [Term(up.coef / sp.I, 0, up.a), Term(-down.coef / sp.I, 0, down.a)]
        if isinstance(expr, sp.sinh):
            return [up, Term(-down.coef, 0, down.a)]
        return [up, down]
    if isinstance(expr, (sp.erf, sp.erfc, norm_cdf)):
        g, d = _affine(expr.args[0])
        if isinstance(expr, norm_cdf):
            return [Term(sp.Integer(1), cdfs=((g, d),))]
        r2 = sp.sqrt(2)
        if isinstance(expr, sp.erf):
            return [Term(sp.Integer(2), cdfs=((r2 * g, r2 * d),)), Term(sp.Integer(-1))]
        return [Term(sp.Integer(2), cdfs=((-r2 * g, -r2 * d),))]
    if isinstance(expr, sp.Heaviside):
        return _half(_sign_of_linear(expr.args[0]))
    if isinstance(expr, sp.sign):
        s = _sign_of_linear(expr.args[0])
        return _merge(_half(s) + [Term(sp.Integer(-1), region=-s)])
    if isinstance(expr, sp.Abs):
        s = _sign_of_linear(expr.args[0])
        return product(terms(expr.args[0]), _merge(_half(s) + [Term(sp.Integer(-1), region=-s)]))
    if isinstance(expr, (sp.Max, sp.Min)):
        if len(expr.args) != 2:
            raise Unsupported("Max/Min of more than two arguments")
        f, g = expr.args
        s = _sign_of_linear(f - g)  # Max(f, g) = f on {s x > 0}, g elsewhere
        hi, lo = (f, g) if isinstance(expr, sp.Max) else (g, f)
        return _merge(product(terms(hi), _half(s)) + product(terms(lo), _half(-s)))
    if isinstance(expr, sp.Piecewise):
        left, out = {1, -1}, []
        for e, cond in expr.args:
            here = _half_lines(cond) & left
            left -= here
            if here:
                te = terms(e)
                out += te if len(here) == 2 else product(te, _half(here.pop()))
        if left:
            raise Unsupported(f"{expr} is undefined on part of the line")
        return _merge(out)
    raise Unsupported(f"{type(expr).__name__} is outside the class of the rules")


def derivative_terms(ts: list[Term]) -> list[Term]:
    """Terms of the pointwise derivative (a kink at 0 contributes no Dirac mass)."""
    out = []
    for t in ts:
        if t.power:
            out.append(Term(t.coef * t.power, t.power - 1, t.a, t.b, t.cdfs, t.region))
        if t.a != 0:
            out.append(Term(t.coef * t.a, t.power, t.a, t.b, t.cdfs, t.region))
        if t.b != 0:
            out.append(Term(2 * t.coef * t.b, t.power + 1, t.a, t.b, t.cdfs, t.region))
        for k, (g, d) in enumerate(t.cdfs):
            rest = t.cdfs[:k] + t.cdfs[k + 1:]
            # g phi(g x + d) = g / sqrt(2 pi) exp(-d^2/2) exp(-g d x - g^2 x^2 / 2)
            out.append(Term(t.coef * g * sp.exp(-d**2 / 2) / sp.sqrt(2 * sp.pi), t.power, t.a - g * d,
                            t.b - g**2 / 2, rest, t.region))
    return _merge(out)


# ----------------------------------------------------------------------------------------
# Expectations of products over a zero-mean Gaussian vector (one or two variables)
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Joint:
    """A product term in n variables: coef prod u_i^p_i exp(sum a_i u_i + b_i u_i^2) prod Phi(g u_v + d) [regions]."""

    coef: sp.Expr
    powers: tuple
    a: tuple
    b: tuple
    cdfs: tuple  # ((variable, g, d), ...)
    regions: tuple


class _Engine:
    def __init__(self, S: sp.Matrix, deadline: float):
        self.S, self.n, self.deadline, self.steps = S, S.shape[0], deadline, 0
        self.tilts: dict = {}
        self.placeholders: dict = {}

    def real(self, e: sp.Expr) -> sp.Expr:
        """The real part of a sum of complex exponentials (the expectation of a real function)."""
        if e.has(sp.I):
            e = sp.re(sp.expand_complex(e))
        return e.subs(self.placeholders)

    def tick(self):
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise Budget(f"more than {MAX_STEPS} steps")
        if self.steps % 64 == 0 and time.monotonic() > self.deadline:
            raise Budget("the derivation took too long")

    def tilt(self, a, b):
        """(Z, m, S') of the tilt by exp(a.u + u^T diag(b) u)."""
        key = (a, b)
        if key not in self.tilts:
            if all(v == 0 for v in a + b):
                self.tilts[key] = (sp.Integer(1), sp.zeros(self.n, 1), self.S)
            else:
                Sp, det = _tilted(self.S, b)
                if any(v.has(sp.I) for v in a):  # a positive placeholder keeps the complex parts separable
                    D = sp.Dummy("D", positive=True)
                    self.placeholders[D] = det
                    Sp, det = Sp * det / D, D
                av = sp.Matrix(a)
                m = Sp * av
                Z = sp.exp((av.T * Sp * av)[0, 0] / 2) / sp.sqrt(det)
                self.tilts[key] = (Z, m, Sp)
        return self.tilts[key]

    def expect(self, t: _Joint) -> sp.Expr:
        self.tick()
        if any(t.regions):
            return self.orthant(t)
        k = next((i for i, p in enumerate(t.powers) if p), None)
        if k is None:
            return self.base(t)
        Z, m, Sp = self.tilt(t.a, t.b)
        lower = list(t.powers)
        lower[k] -= 1
        h = _Joint(t.coef, tuple(lower), t.a, t.b, t.cdfs, t.regions)
        total = m[k] * self.expect(h) if m[k] != 0 else sp.Integer(0)
        for v in range(self.n):
            if Sp[k, v] == 0:
                continue
            for d in self.partial(h, v):
                total += Sp[k, v] * self.expect(d)
        return total

    def partial(self, h: _Joint, v: int) -> list[_Joint]:
        """d/du_v of the polynomial and Phi factors of h (the exponential is the measure's)."""
        out = []
        if h.powers[v]:
            p = list(h.powers)
            p[v] -= 1
            out.append(_Joint(h.coef * h.powers[v], tuple(p), h.a, h.b, h.cdfs, h.regions))
        for j, (var, g, d) in enumerate(h.cdfs):
            if var != v:
                continue
            a, b = list(h.a), list(h.b)
            a[v] -= g * d
            b[v] -= g**2 / 2
            out.append(_Joint(h.coef * g * sp.exp(-d**2 / 2) / sp.sqrt(2 * sp.pi), h.powers, tuple(a), tuple(b),
                              h.cdfs[:j] + h.cdfs[j + 1:], h.regions))
        return out

    def base(self, t: _Joint) -> sp.Expr:
        Z, m, Sp = self.tilt(t.a, t.b)
        if not t.cdfs:
            return t.coef * Z
        if any(not (v.is_real is not False and sp.im(v) == 0) for v in list(m) + list(t.a)):
            raise Unsupported("a normal distribution function of a complex argument")
        args = []
        for var, g, d in t.cdfs:
            s = sp.sqrt(1 + g**2 * Sp[var, var])
            args.append((var, g, (g * m[var] + d) / s, s))
        if len(args) == 1:
            h = args[0][2]
            return t.coef * Z * ((1 + sp.erf(h / sp.sqrt(2))) / 2 if h.is_number else norm_cdf(h))
        if len(args) > 2:
            raise Unsupported("a product of more than two normal distribution functions")
        (v1, g1, h1, s1), (v2, g2, h2, s2) = args
        rho = g1 * g2 * Sp[v1, v2] / (s1 * s2)
        if sp.simplify(h1) == 0 and sp.simplify(h2) == 0:
            # Sheppard: 1/4 + asin(rho)/(2 pi), as atan(num / sqrt(s1^2 s2^2 - num^2)) with the radicand
            # cancelled symbolically: asin near rho = 1 (large variances) would lose half the digits
            num = g1 * g2 * Sp[v1, v2]
            rad = sp.factor(sp.cancel(sp.expand(s1**2 * s2**2 - num**2)))
            return t.coef * Z * (sp.Rational(1, 4) + sp.atan(num / sp.sqrt(rad)) / (2 * sp.pi))
        return t.coef * Z * bvn_cdf(h1, h2, rho)

    def orthant(self, t: _Joint) -> sp.Expr:
        if t.cdfs:
            raise Unsupported("a normal distribution function on a half-line")
        Z, m, Sp = self.tilt(t.a, t.b)
        if any(v != 0 for v in m):
            raise Unsupported("a shifted Gaussian on a half-line")
        if self.n == 1 or not all(t.regions):
            free = [v for v in range(self.n) if not t.regions[v]]
            if free:  # split the unconstrained variable at 0
                v = free[0]
                parts = []
                for s in (1, -1):
                    r = list(t.regions)
                    r[v] = s
                    parts.append(self.orthant(_Joint(t.coef, t.powers, t.a, t.b, (), tuple(r))))
                return parts[0] + parts[1]
            k, s = t.powers[0], t.regions[0]
            return t.coef * Z * s**k * Sp[0, 0] ** sp.Rational(k, 2) * _half_moment(k)
        (i, j), (s1, s2) = t.powers, t.regions
        rho = s1 * s2 * Sp[0, 1] / (sp.sqrt(Sp[0, 0]) * sp.sqrt(Sp[1, 1]))
        return (t.coef * Z * s1**i * s2**j * sp.sqrt(Sp[0, 0]) ** i * sp.sqrt(Sp[1, 1]) ** j
                * orthant_moment(i, j, rho))


def _tilted(S: sp.Matrix, b) -> tuple[sp.Matrix, sp.Expr]:
    """``S' = (S^{-1} - 2 diag(b))^{-1}`` and ``det(I - 2 S diag(b))``, written out (S may be singular)."""
    if S.shape[0] == 1:
        det = 1 - 2 * b[0] * S[0, 0]
        return sp.Matrix([[S[0, 0] / det]]), det
    s11, s12, s22 = S[0, 0], S[0, 1], S[1, 1]
    dS = sp.expand(s11 * s22 - s12**2)
    det = 1 - 2 * b[0] * s11 - 2 * b[1] * s22 + 4 * b[0] * b[1] * dS
    return sp.Matrix([[s11 - 2 * b[1] * dS, s12], [s12, s22 - 2 * b[0] * dS]]) / det, det


def _half_moment(k: int) -> sp.Expr:
    """E[z^k 1{z > 0}] for a standard normal z: 2^(k/2 - 1) Gamma((k + 1)/2) / sqrt(pi)."""
    return sp.nsimplify(2 ** sp.Rational(k - 2, 2) * sp.gamma(sp.Rational(k + 1, 2)) / sp.sqrt(sp.pi))


def orthant_moment(i: int, j: int, rho: sp.Expr) -> sp.Expr:
    """E[z1^i z2^j 1{z1 > 0} 1{z2 > 0}] for standard normals of correlation rho (Cho & Saul 2009).

    ``2^{(i+j)/2} Gamma(1 + (i+j)/2) / (2 pi) int_{theta-pi/2}^{pi/2} cos^i(t) cos^j(t-theta) dt``,
    ``theta = arccos rho``, the integral expanded in exponentials ``e^{i m t} e^{-i n theta}``.
    """
    th = sp.Symbol("theta", positive=True)
    total = sp.Integer(0)
    for k in range(i + 1):
        for ll in range(j + 1):
            mm, nn = 2 * k - i + 2 * ll - j, 2 * ll - j
            w = sp.binomial(i, k) * sp.binomial(j, ll)
            if mm == 0:
                total += w * (sp.pi - th) * sp.cos(nn * th)
            else:  # Re[(e^{i m pi/2} - e^{i m (theta - pi/2)}) e^{-i n theta} / (i m)]
                total += w * (sp.sin(mm * sp.pi / 2 - nn * th) - sp.sin(mm * (th - sp.pi / 2) - nn * th)) / mm
    total = sp.expand(sp.expand_trig(sp.expand(total / 2 ** (i + j))))
    cth, sth = sp.Symbol("cth", real=True), sp.Symbol("sth", positive=True)
    total = total.subs({sp.sin(th): sth, sp.cos(th): cth})
    total = sp.expand(total).subs(sth**2, 1 - cth**2)
    total = sp.collect(sp.expand(total), [th, sth])
    radial = 2 ** sp.Rational(i + j, 2) * sp.gamma(1 + sp.Rational(i + j, 2)) / (2 * sp.pi)
    return radial * total.subs({th: sp.acos(rho), cth: rho, sth: sp.sqrt(1 - rho**2)})


def expect(factors: list[list[Term]], S: sp.Matrix, seconds: float = 10.0) -> sp.Expr:
    """``E[prod_i f_i(u_i)]`` for ``u ~ N(0, S)``; ``factors[i]`` are the terms of ``f_i``.

    For one variable with two factors (``E[f(u) g(u)]``) pass ``S`` 1 x 1 and the product terms
    as a single factor.  Raises :class:`Unsupported` outside the class, :class:`Budget` past
    ``seconds`` or the size bounds.
    """
    eng = _Engine(S, time.monotonic() + seconds)
    n = S.shape[0]
    if len(factors) != n:
        raise ValueError("one factor per variable")
    joint = [_Joint(sp.Integer(1), (0,) * n, (sp.Integer(0),) * n, (sp.Integer(0),) * n, (), (0,) * n)]
    for v, ts in enumerate(factors):
        new = []
        for J in joint:
            for t in ts:
                def put(seq, val, v=v):
                    return tuple(val if i == v else s for i, s in enumerate(seq))
                new.append(_Joint(J.coef * t.coef, put(J.powers, t.power), put(J.a, t.a), put(J.b, t.b),
                                  J.cdfs + tuple((v, g, d) for g, d in t.cdfs), put(J.regions, t.region)))
        joint = new
    if len(joint) > 4 * MAX_TERMS:
        raise Budget("too many product terms")
    merged: dict = {}
    for J in joint:
        k = (J.powers, J.a, J.b, J.cdfs, J.regions)
        merged[k] = merged.get(k, 0) + J.coef
    # a real function's complex exponentials come in conjugate pairs: E[J] + E[conj J] = 2 Re E[J]
    total, done = [], set()
    for k, coef in merged.items():
        if k in done or coef == 0:
            continue
        J = _Joint(coef, *k)
        ck = (k[0], tuple(sp.conjugate(v) for v in k[1]), *k[2:])
        if not (coef.has(sp.I) or any(v.has(sp.I) for v in k[1])):
            total.append(eng.expect(J))
        elif ck != k and ck in merged and sp.expand(merged[ck] - sp.conjugate(coef)) == 0:
            done.add(ck)
            total.append(2 * eng.real(eng.expect(J)))
        else:
            total.append(eng.real(eng.expect(J)))
    return sp.Add(*total)
