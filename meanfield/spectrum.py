"""Singular-value spectrum of the input-output Jacobian (Pennington, Schoenholz & Ganguli 2017, 2018).

For a depth-``L`` network at the fixed point ``q*``, the Jacobian is ``J = prod_l D^l W^l`` with
``D^l = diag(phi'(h^l))``, ``h^l ~ N(0, q*)`` i.i.d. over units, and ``W^l`` either Gaussian
(``W_ij ~ N(0, sigma_w2 / N)``) or scaled orthogonal (``sqrt(sigma_w2) O``, O Haar).  At large
width the factors are asymptotically free, so the S-transform of ``J J^T`` is a product
(Pennington et al. 2017; 2018)::

    S_{JJ^T}(z) = S_{WW^T}(z)^L S_{D^2}(z)^L,   S_{WW^T} = 1/(sigma_w2 (1 + z))  (Gaussian),
                                                          1/sigma_w2             (orthogonal).

With ``d = phi'(h)^2`` and ``w(t) = E[d / (t - d)]`` (the moment generating function of D^2,
``M_{D^2}(t) = w(t)``), the inverse of ``J J^T``'s moment generating function ``M(lambda) =
lambda G(lambda) - 1`` is, parametrised by t (Pennington et al. 2018)::

    lambda(t) = sigma_w2^L ((1 + w)/w) (w t)^L                (Gaussian)
    lambda(t) = sigma_w2^L ((1 + w)/w) (w t / (1 + w))^L      (orthogonal)

so that ``M(lambda(t)) = w(t)``.  From it:

* moments ``m_k`` of the squared singular values from the series of S (series reversion); the
  mean ``m_1 = (sigma_w2 mu_1)^L = chi_1^L`` and the variance
  ``m_1^2 L (mu_2/mu_1^2 - 1 + v_W)``, ``mu_k = E[d^k]``, ``v_W = 1`` Gaussian, 0 orthogonal
  (normalised variances add under free multiplication, for any ``chi_1``; at criticality
  ``m_1 = 1`` and this is Pennington et al. 2017's ``L (1-p)/p`` and ``L/p`` for relu and hard tanh);
* the largest squared singular value, ``min_{t > max d} lambda(t)`` (Pennington et al. 2017), in closed
  form when d takes the two values 0 and a (relu, hard tanh, linear: ``t = ((L+1) +
  sqrt((L+1)^2 - 4L(1-p)))/2`` Gaussian, ``t = L(1-p)`` orthogonal, in units of a);
* atoms: at 0 with mass ``P(d = 0)`` (J has the rank of its ``D`` factors); with orthogonal weights, at
  ``(sigma_w2 v)^L`` for every atom v of d with mass ``1 - L P(d != v)`` where positive (the
  vectors that every layer maps within its ``phi' = sqrt(v)`` eigenspace: for relu and hard tanh
  at ``p^{-L}`` when ``L (1 - p) < 1`` at criticality);
* the density ``rho(lambda) = -Im G(lambda + i0)/pi = -Im w(t)/(pi lambda)`` where
  ``lambda(t) = lambda`` is solved for complex t (Im t > 0) by Newton's method, continued from
  the top of the continuous part downwards (below an orthogonal network's top atom, for
  two-valued d, that top is the local minimum of lambda(t) at ``t = a L (1 - p)``, inside the gap
  ``a (1 - p) < t < a`` where lambda(t) is real).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike

from . import _validate
from ._spectrum_law import D2Law, d2_law
from .activations import ActivationLike, activation
from .fixed_points import q_star as _q_star_of
from .layers import Dense

__all__ = ["JacobianSpectrum", "JacobianMoments", "SpectrumWarning", "jacobian_spectrum", "jacobian_moments",
           "free_power_moments", "free_product_moments", "WEIGHTS"]

#: The weight ensembles: Gaussian (Ginibre) and scaled Haar orthogonal.
WEIGHTS = ("gaussian", "orthogonal")
_NEWTON_TOL = 1e-10


class SpectrumWarning(UserWarning):
    """The density could not be followed to some of the requested lambdas."""
#: Largest step in log lambda when following the root t(lambda) down from the edge.
_MAX_STEP = 0.5


@dataclass(frozen=True)
class JacobianSpectrum:
    """Spectrum of ``J J^T`` for a deep network at its fixed point (infinite width).

    Attributes
    ----------
    activation : str
    depth : int
    sigma_w2, sigma_b2 : float
    weights : {"gaussian", "orthogonal"}
    q_star : float
        Fixed point of the variance map the pre-activations sit at.
    chi_1 : float
        ``sigma_w2 mu_1``, the mean squared singular value per layer.
    mu : (K,) array
        ``mu_k = E[phi'(h)^{2k}]``, ``h ~ N(0, q*)``, k = 1..K.
    moments : (K,) array
        ``m_k = E[lambda^k]`` of the squared singular values (atoms included), k = 1..K.
    mean, variance : float
        ``m_1 = chi_1^L`` and ``m_2 - m_1^2 = m_1^2 L (mu_2/mu_1^2 - 1 + v_W)``.
    edge : float
        The largest squared singular value (the top of the support, atoms included).
    edge_t : float
        The t > max d at which ``lambda(t)`` is minimal (NaN if the minimum is at ``t = max d``,
        where orthogonal weights put an atom).
    bulk_edge, bulk_edge_t : float
        The top of the continuous part and its t: ``edge`` and ``edge_t``, except below an
        orthogonal network's top atom, where for two-valued d (relu, hard tanh) it is the local
        minimum of ``lambda(t)`` at ``t = a L (1 - p)`` in the gap ``a (1 - p) < t < a`` (NaN where
        not known: the density is then not available).
    atoms : tuple of (location, mass)
        Point masses of the spectrum of ``J J^T``.
    """

    activation: str
    depth: int
    sigma_w2: float
    sigma_b2: float
    weights: str
    q_star: float
    chi_1: float
    mu: np.ndarray
    moments: np.ndarray
    mean: float
    variance: float
    edge: float
    edge_t: float
    bulk_edge: float
    bulk_edge_t: float
    atoms: tuple
    law: D2Law = field(repr=False)

    @property
    def continuous_mass(self) -> float:
        """``1 - sum of the atoms' masses``: what the density integrates to."""
        return 1.0 - sum(m for _, m in self.atoms)

    def lam_of_t(self, t):
        """``lambda(t)`` and ``d log lambda / dt`` at complex or real t (the inverse of M)."""
        return _lam(*self.law.w(t), np.asarray(t, dtype=complex), self.depth, self.sigma_w2, self.weights)

    def density(self, lam: ArrayLike) -> np.ndarray:
        """Density of the continuous part of the squared singular values at ``lam`` (> 0).

        ``rho(lambda) = -Im w(t)/(pi lambda)`` with ``lambda(t) = lambda``, Im t > 0, found by
        Newton's method in t continued from the spectral edge down through ``lam`` (in
        decreasing order, with substeps where a step does not converge).  Zero above the edge;
        atoms are not included (see :attr:`atoms`).

        Raises
        ------
        ValueError
            If some ``lam`` is not positive and finite.
        NotImplementedError
            Where the top of the continuous part is not known (:attr:`bulk_edge_t` is NaN: an
            orthogonal network with ``L P(d < max d) = 1`` exactly, or with a top atom and a law
            of d other than two-valued): the continuation has no starting point.
        """
        lam = np.asarray(lam, dtype=float)
        if lam.size and (not np.all(np.isfinite(lam)) or np.any(lam <= 0)):
            raise ValueError("lam must be positive and finite")
        if not np.isfinite(self.bulk_edge_t):
            raise NotImplementedError(
                "the top of the continuous part of this spectrum is not known (an orthogonal network "
                "with an atom at the top of its spectrum and d not two-valued, or L P(d < max d) = 1)")
        out = np.zeros(lam.shape)
        flat = lam.ravel()
        order = np.argsort(-flat)
        t_edge = self.bulk_edge_t
        h_edge = float(np.log(self.bulk_edge))
        # second derivative of log lambda at the edge, from its (analytic) first derivative
        eps = 1e-5 * max(abs(t_edge), 1.0)
        d2 = (self.lam_of_t(t_edge + eps)[1] - self.lam_of_t(t_edge - eps)[1]).real / (2 * eps)
        t = None
        log_prev = h_edge
        res = out.ravel()
        for pos, i in enumerate(order):
            target = np.log(flat[i])
            if target >= h_edge:
                continue
            try:
                if t is None:  # first step below the edge: t = t_edge + i sqrt(2 (h_edge - h)/h'')
                    log_prev = h_edge - min(h_edge - target, 1e-3)
                    t = complex(t_edge, np.sqrt(2 * (h_edge - log_prev) / d2))
                    t = self._newton(t, log_prev)
                t = self._continue(t, log_prev, target, d2)
            except ArithmeticError:
                res[order[pos:]] = np.nan
                warnings.warn(
                    f"the root of lambda(t) = lambda could not be followed below lambda = {np.exp(log_prev):.6g} "
                    "(the density there is NaN); this happens where the density is negligible, in the far "
                    "lower tail, or where the continuous part carries almost no mass", SpectrumWarning, stacklevel=2)
                break
            log_prev = target
            w = self.law.w(t)[0]
            res[i] = max(0.0, -complex(w).imag / (np.pi * flat[i]))
        return out

    def singular_value_density(self, s: ArrayLike) -> np.ndarray:
        """Density of the singular values ``s = sqrt(lambda)``: ``2 s rho(s^2)``."""
        s = np.asarray(s, dtype=float)
        return 2 * s * self.density(s * s)

    # ------------------------------------------------------------------------------------
    def _residual(self, t, target):
        t_arr = np.asarray(t, dtype=complex)
        logl, dlog = _lam(*self.law.w(t), t_arr, self.depth, self.sigma_w2, self.weights, log=True)
        r = complex(logl) - target
        r -= 2j * np.pi * np.round(r.imag / (2 * np.pi))
        return r, complex(dlog)

    def _newton(self, t, target, max_iter=60):
        tol = 1e-14 * max(1.0, abs(target))
        for _ in range(max_iter):
            r, d = self._residual(t, target)
            if abs(r) <= tol and t.imag > 0:
                return t
            step = r / d
            t_new = t - step
            if t_new.imag <= 0:  # stay in the upper half plane (the physical branch)
                t_new = complex(t_new.real, 0.5 * t.imag)
            t = t_new
            if abs(step) <= _NEWTON_TOL * max(1.0, abs(t)) and abs(self._residual(t, target)[0]) <= 1e-9:
                return t
        raise ArithmeticError("Newton's method for lambda(t) = lambda did not converge")

    def _continue(self, t, start, target, curvature, depth=0):
        """Follow the root from log lambda = start to target in steps of at most _MAX_STEP.

        A step whose Newton iteration fails or jumps (to another branch) is halved.  A jump is a
        move by more than a quarter of |t| and more than twice the square-root move that a step
        makes next to the edge (``curvature`` is d^2 log lambda / dt^2 there).
        """
        n = max(1, int(np.ceil(abs(target - start) / _MAX_STEP)))
        for k in range(1, n + 1):
            a, b = start + (k - 1) * (target - start) / n, start + k * (target - start) / n
            t = self._step(t, a, b, curvature, depth)
        return t

    def _step(self, t, start, target, curvature, depth):
        try:
            t_new = self._newton(t, target, max_iter=12)
            if abs(t_new - t) <= max(0.25 * abs(t), 2 * np.sqrt(2 * abs(target - start) / curvature)):
                return t_new
        except ArithmeticError:
            pass
        if depth > 8:
            raise ArithmeticError("could not follow lambda(t) = lambda from the spectral edge")
        mid = 0.5 * (start + target)
        t = self._step(t, start, mid, curvature, depth + 1)
        return self._step(t, mid, target, curvature, depth + 1)


def _lam(w, dw, w1, t, depth, sigma_w2, weights, log=False):
    """lambda(t) (or log lambda) and d log lambda / dt from w = M_{D^2}(t), w' and w1 = 1 + w."""
    L = depth
    if weights == "gaussian":
        logl = L * np.log(sigma_w2) + np.log(w1) - np.log(w) + L * (np.log(w) + np.log(t))
        dlog = dw / w1 - dw / w + L * (dw / w + 1 / t)
    else:
        logl = L * np.log(sigma_w2) + np.log(w1) - np.log(w) + L * (np.log(w) + np.log(t) - np.log(w1))
        dlog = dw / w1 - dw / w + L * (dw / w + 1 / t - dw / w1)
    return (logl if log else np.exp(logl)), dlog


def jacobian_spectrum(act: ActivationLike, depth: int, sigma_w2: float, sigma_b2: float,
                      weights: str = "gaussian", n_moments: int = 4) -> JacobianSpectrum:
    """Spectrum of the squared singular values of a deep network's input-output Jacobian.

    Free-probability theory of Pennington, Schoenholz & Ganguli (2017, "Resurrecting the sigmoid
    in deep learning through dynamical isometry"; 2018, "The emergence of spectral universality in
    deep networks") for ``J = prod_{l=1}^L D^l W^l`` at the fixed
    point ``q*`` of the variance map (every layer's pre-activations ``~ N(0, q*)``, the last
    layer's ``D`` included).  See the module docstring for the formulas.

    Parameters
    ----------
    act : activation
    depth : int
        Number of layers L >= 1.
    sigma_w2, sigma_b2 : float
        Weight and bias variances (sigma_w2 > 0).
    weights : {"gaussian", "orthogonal"}
        ``W_ij ~ N(0, sigma_w2/N)`` or ``W = sqrt(sigma_w2) O`` with O Haar orthogonal.
    n_moments : int
        How many moments ``m_k`` (and ``mu_k``) to compute (>= 2).

    Returns
    -------
    JacobianSpectrum
        Moments, variance, spectral edge and atoms; ``.density(lam)`` for the continuous part.

    Raises
    ------
    ValueError
        For a depth that is not a positive integer, unknown ``weights``, ``n_moments < 2``, or a
        point whose variance map has no finite fixed point (``q* = inf``).
    """
    act, depth, sw, sb, n_moments = _arguments(act, depth, sigma_w2, sigma_b2, weights, n_moments)
    qs = float(_q_star_of(act, sw, sb))
    if not np.isfinite(qs):
        raise ValueError(
            f"the variance map of {act.name} at sigma_w2={sw}, sigma_b2={sb} has no finite fixed point "
            "(q* = inf): the Jacobian spectrum at q* is undefined")
    law = d2_law(act, qs)
    if law.dmax <= 0:
        raise ValueError(f"phi'(h) = 0 almost surely for {act.name} at q* = {qs}: the Jacobian is zero")
    mu = law.moments(n_moments)
    chi = sw * mu[0]
    v_w = 1.0 if weights == "gaussian" else 0.0
    norm_var = depth * (mu[1] / mu[0] ** 2 - 1.0 + v_w)
    m1 = chi ** depth
    moments = m1 ** np.arange(1, n_moments + 1) * free_power_moments(mu / mu[0] ** np.arange(1, n_moments + 1),
                                                                      depth, v_w)
    edge, edge_t, bulk_edge, bulk_t, atoms = _edge_and_atoms(law, depth, sw, weights)
    return JacobianSpectrum(act.name, depth, sw, sb, weights, qs, float(chi), mu, moments, float(m1),
                            float(m1 * m1 * norm_var), edge, edge_t, bulk_edge, bulk_t, atoms, law)


def _arguments(act, depth, sigma_w2, sigma_b2, weights, n_moments):
    """The checked arguments of :func:`jacobian_spectrum` and :func:`jacobian_moments`, or a clear error."""
    depth = _validate.positive_int("depth", depth)
    if not isinstance(weights, str) or weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
    n_moments = _validate.positive_int("n_moments", n_moments)
    if n_moments < 2:
        raise ValueError(f"n_moments must be at least 2, got {n_moments}")
    sw = _validate.number("sigma_w2", sigma_w2, low=0.0, low_open=True, what="a positive variance")
    sb = _validate.number("sigma_b2", sigma_b2, low=0.0, what="a non-negative variance")
    act = activation(act)
    act.derivative(1)  # a clear error if phi' is not available
    return act, depth, sw, sb, n_moments


def free_power_moments(mu: ArrayLike, depth: int, v_w: float) -> np.ndarray:
    """Moments of ``(D^2 W W^T)^{⊠ L}`` for unit-mean D^2 and unit-variance weights.

    ``mu`` are the moments ``E[d^k]`` (k = 1..K, ``mu_1 = 1``); ``v_w = 1`` multiplies each
    layer by a free Marchenko-Pastur (Wishart) factor, ``S = 1/(1 + z)``, ``v_w = 0`` by the
    identity.  The S-transform ``S(z) = (1 + z) u(z)/z``, ``u`` the compositional inverse of
    ``M(u) = sum_k mu_k u^k``, is raised to the power L and inverted back to the moments
    (Voiculescu's multiplicative free convolution, as in Pennington et al. 2018).

    Returns the (K,) moments ``m_k``; ``m_1 = 1`` and ``m_2 = 1 + L (mu_2 - 1 + v_w)``.
    """
    return free_product_moments([(np.asarray(mu, dtype=float), depth)], v_w)


def free_product_moments(layers, v_w: float) -> np.ndarray:
    """Moments of ``D_1^2 W_1 W_1^T ⊠ ... ⊠ D_L^2 W_L W_L^T`` with a law of ``d`` per layer.

    ``layers`` is a sequence of ``(mu, repeat)``: the unit-mean moments ``E[d^k]`` (k = 1..K) of
    a layer's ``D^2`` and how many consecutive layers share them.  The S-transforms multiply
    (asymptotic freeness; Pennington et al. 2018, eq. 10): ``S_J = prod_l S_{D_l^2} S_W``, then
    ``J J^T``'s moments follow by series reversion as in :func:`free_power_moments`.
    """
    layers = [(np.asarray(mu, dtype=float), int(r)) for mu, r in layers]
    K = layers[0][0].size
    total = np.zeros(K + 1)
    total[0] = 1.0
    depth = 0
    for mu, repeat in layers:
        u = _revert(np.concatenate([[0.0], mu]))  # u(z), z = M(u)
        s = np.convolve(np.concatenate([u[1:], [0.0]]), [1.0, 1.0])[:K + 1]  # (1 + z) u(z) / z
        s = s / s[0]
        total = np.convolve(total, _series_power(s, repeat, K + 1))[:K + 1]
        depth += repeat
    if v_w:
        total = np.convolve(total, _series_power((-1.0) ** np.arange(K + 1), depth, K + 1))[:K + 1]  # / (1 + z)^L
    # u_J(z) = z S_J(z) / (1 + z)
    uj = np.concatenate([[0.0], np.convolve(total, (-1.0) ** np.arange(K + 1))[:K]])
    return _revert(uj)[1:]


@dataclass(frozen=True)
class JacobianMoments:
    """Moments of ``J J^T`` with every layer at its own variance, from the input on (infinite width).

    Attributes
    ----------
    activation : str
    depth : int
    sigma_w2, sigma_b2 : float
    weights : {"gaussian", "orthogonal"}
    q : (L,) array
        The variance of each layer's pre-activations, ``q^0 = q0``, ``q^{l+1} = q_map(q^l)``.
    chi_1 : (L,) array
        ``sigma_w2 E[phi'(h^l)^2]`` per layer.
    moments : (K,) array
        ``m_k = E[lambda^k]`` of the squared singular values.
    mean, variance : float
        ``m_1 = prod_l chi_1^l`` and ``m_1^2 sum_l (mu_2^l / (mu_1^l)^2 - 1 + v_W)``.
    """

    activation: str
    depth: int
    sigma_w2: float
    sigma_b2: float
    weights: str
    q: np.ndarray
    chi_1: np.ndarray
    moments: np.ndarray
    mean: float
    variance: float


def jacobian_moments(act: ActivationLike, depth: int, sigma_w2: float, sigma_b2: float, q0: float | None = None,
                     weights: str = "gaussian", n_moments: int = 4) -> JacobianMoments:
    """Moments of the squared singular values of ``J = D^{L-1} W^{L-1} ... D^0 W^0``, layer by layer.

    As :func:`jacobian_spectrum`, but the pre-activations of layer ``l`` have the variance ``q^l``
    that the variance map gives from the input's ``q^0 = q0`` (default: ``q*``, where this is
    :func:`jacobian_spectrum`'s moments), not the fixed point: the spectrum of a network whose
    input is not yet at ``q*`` (Pennington, Schoenholz & Ganguli 2018, eq. 10 with a law of
    ``D_l^2`` per layer).  Each layer's ``D_l^2`` law enters through its moments
    ``mu_k^l = E[phi'(h)^{2k}]``, ``h ~ N(0, q^l)``; the S-transforms multiply.  Only the moments
    are given here: the edge and the density need each layer's moment generating function
    inverted at every point.

    Parameters
    ----------
    act, depth, sigma_w2, sigma_b2, weights, n_moments
        As in :func:`jacobian_spectrum`.
    q0 : float, optional
        Variance of the first layer's pre-activations (> 0), ``sigma_w2 |x|^2 / d_in + sigma_b2``.

    Returns
    -------
    JacobianMoments
    """
    act, depth, sw, sb, n_moments = _arguments(act, depth, sigma_w2, sigma_b2, weights, n_moments)
    if q0 is None:
        q0 = float(_q_star_of(act, sw, sb))
        if not np.isfinite(q0):
            raise ValueError(f"the variance map of {act.name} at sigma_w2={sw}, sigma_b2={sb} has no finite fixed "
                             "point (q* = inf): give q0")
    q0 = _validate.number("q0", q0, low=0.0, what="a non-negative variance")
    layer = Dense(act, sw, sb)
    q = np.empty(depth)
    q[0] = q0
    for l in range(1, depth):
        if l > 1 and q[l - 1] == q[l - 2]:  # a fixed point in float64: every later layer is the same
            q[l:] = q[l - 1]
            break
        with np.errstate(over="ignore", invalid="ignore"):  # a diverging variance is reported below
            q[l] = float(layer.q_map(q[l - 1]))
        if not np.isfinite(q[l]):
            raise ValueError(f"the variance diverges at layer {l} ({act.name}, sigma_w2={sw}, sigma_b2={sb}, "
                             f"q0={q0}): no Jacobian spectrum")
    groups = []  # (q, repeat) of consecutive equal variances
    for ql in q:
        if groups and groups[-1][0] == ql:
            groups[-1][1] += 1
        else:
            groups.append([ql, 1])
    mus = [d2_law(act, float(ql)).moments(n_moments) for ql, _ in groups]
    if any(mu[0] <= 0 for mu in mus):
        raise ValueError(f"phi'(h) = 0 almost surely at some layer ({act.name}): the Jacobian is zero")
    v_w = 1.0 if weights == "gaussian" else 0.0
    ks = np.arange(1, n_moments + 1)
    chi = np.concatenate([np.full(r, sw * mu[0]) for mu, (_, r) in zip(mus, groups)])
    m1 = float(np.prod(chi))
    norm = free_product_moments([(mu / mu[0] ** ks, r) for mu, (_, r) in zip(mus, groups)], v_w)
    var = m1 * m1 * sum(r * (mu[1] / mu[0] ** 2 - 1.0 + v_w) for mu, (_, r) in zip(mus, groups))
    return JacobianMoments(act.name, depth, sw, sb, weights, q, chi, m1 ** ks * norm, m1, float(var))


def _revert(a):
    """Compositional inverse b of the series a (a[0] = 0, a[1] != 0), to the same order."""
    n = a.size
    b = np.zeros(n)
    b[1] = 1.0 / a[1]
    for k in range(2, n):
        c = _compose(a, b)
        b[k] -= c[k] / a[1]
    return b


def _compose(a, b):
    """a(b(z)) truncated to len(a) terms (b[0] = 0)."""
    n = a.size
    out = np.zeros(n)
    p = np.zeros(n)
    p[0] = 1.0
    for k in range(1, n):
        p = np.convolve(p, b)[:n]
        out += a[k] * p
    return out


def _series_power(s, power, n):
    out = np.zeros(n)
    out[0] = 1.0
    base = s[:n].copy()
    while power:
        if power & 1:
            out = np.convolve(out, base)[:n]
        power >>= 1
        if power:
            base = np.convolve(base, base)[:n]
    return out


def _edge_and_atoms(law: D2Law, depth, sw, weights):
    """Largest squared singular value and its t, the top of the continuous part and its t, the atoms."""
    L = depth
    atoms = []
    if law.p_zero > 0:
        atoms.append((0.0, law.p_zero))
    top_atom = None
    if weights == "orthogonal":
        for v, p in zip(law.values, law.probs):
            mass = 1.0 - L * (1.0 - p)
            if v > 0 and mass > 1e-15:
                atoms.append((float((sw * v) ** L), float(mass)))
                if v == law.dmax:
                    top_atom = float((sw * v) ** L)
    two_valued = law.discrete and (law.values.size == 1 or (law.values.size == 2 and law.values[0] == 0))
    if two_valued:
        a = law.dmax
        tau = _two_value_edge(L, float(law.probs[-1]), weights)
        t = None if tau is None else a * tau
    else:
        t = _edge_t(law, L, sw, weights)
    if t is None or not np.isfinite(t):
        if top_atom is None:
            # minimum at the boundary without an atom: the limit lambda(max d +)
            d = law.dmax
            edge = float(_lam(*law.w(d * (1 + 1e-12) + 1e-300), complex(d), L, sw, weights)[0].real)
            return edge, np.nan, np.nan, np.nan, tuple(atoms)
        edge = top_atom
        bulk_t, bulk_edge = np.nan, np.nan
        p = float(law.probs[-1])
        if two_valued and L > 1 and 1 - p < L * (1 - p) < 1:
            # below the top atom: lambda(t) is real on the gap a(1-p) < t < a, infinite at its left
            # end, sigma_w2^L a^L at its right end, and minimal at t = a L (1 - p)
            bulk_t = law.dmax * L * (1 - p)
            bulk_edge = float(_lam(*law.w(bulk_t), complex(bulk_t), L, sw, weights)[0].real)
        return edge, np.nan, bulk_edge, bulk_t, tuple(atoms)
    edge = float(_lam(*law.w(t), complex(t), L, sw, weights)[0].real)
    bulk_edge = edge
    if top_atom is not None:
        edge = max(edge, top_atom)
    return edge, float(t), bulk_edge, float(t), tuple(atoms)


def _two_value_edge(L, p, weights):
    """T of the edge when d is 0 (mass 1-p) or a (mass p), in units of t = a tau: closed forms.

    Gaussian: ``tau^2 - (L+1) tau + L(1-p) = 0`` (the larger root); orthogonal: ``tau = L(1-p)``
    if it exceeds 1, else the minimum is at the boundary (None).
    """
    if weights == "gaussian":
        return ((L + 1) + np.sqrt((L + 1) ** 2 - 4 * L * (1 - p))) / 2
    tau = L * (1 - p)
    return tau if tau > 1 else None


def _edge_t(law: D2Law, L, sw, weights):
    """Argmin over t > max d of log lambda(t): grid in log(t - max d), then brentq on the derivative."""
    from scipy import optimize

    d = law.dmax
    scale = max(d, 1e-300)
    s = np.linspace(np.log(1e-10), np.log(20.0 * (L + 2)), 49)
    ts = d + scale * np.exp(s)
    wts = law.w(ts)
    logl, dlog = _lam(*wts, ts.astype(complex), L, sw, weights, log=True)
    g = dlog.real
    sign = np.flatnonzero((g[:-1] < 0) & (g[1:] >= 0))
    if sign.size == 0:
        return None

    def deriv(x):
        return float(_lam(*law.w(np.array([x])), np.array([x], dtype=complex), L, sw, weights, log=True)[1][0].real)

    k = sign[np.argmin(logl.real[sign])]
    return optimize.brentq(deriv, ts[k], ts[k + 1], xtol=1e-14 * ts[k + 1], rtol=1e-15)
