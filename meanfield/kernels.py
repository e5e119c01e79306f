"""NNGP and NTK kernels of deep fully connected networks on data.

Conventions
-----------
A network of ``depth`` L hidden layers maps ``x`` in ``R^{d_in}`` through

    h^0 = W^0 x + b^0,                      W^0_ij ~ N(0, sigma_w2 / d_in)
    h^l = W^l phi(h^{l-1}) + b^l,           W^l_ij ~ N(0, sigma_w2 / N_{l-1}),   l = 1..L

with ``b^l_i ~ N(0, sigma_b2)``; ``h^L`` is the (linear) readout.  ``depth`` counts the
nonlinearities (hidden layers); the readout is not counted.  So ``depth=0`` is the linear
kernel and ``depth=L`` here is :class:`meanfield.empirical.NetworkSpec` with ``depth=L + 1``
(whose layers are ``0..L``, layer ``l`` being ``h^l`` above, and whose output ``h^L`` is the readout).

NNGP (Lee et al. 2018, eqs. 5-6):

    K^0(x, x') = sigma_b2 + sigma_w2 x.x' / d_in
    K^l(x, x') = sigma_b2 + sigma_w2 E[phi(u) phi(u')],   (u, u') ~ N(0, [[K^{l-1}(x,x), K^{l-1}(x,x')],
                                                                          [K^{l-1}(x,x'), K^{l-1}(x',x')]])

NTK in the NTK parametrisation (``W = sqrt(sigma_w2 / N) Z``, ``b = sqrt(sigma_b2) beta``, gradients
with respect to ``Z`` and ``beta``; Jacot et al. 2018, Thm. 1; Arora et al. 2019, eq. 9; Lee et al.
2019, eq. 7):

    Theta^0 = K^0,    Theta^l = K^l + sigma_w2 E[phi'(u) phi'(u')] Theta^{l-1}

This is :func:`meanfield.empirical.empirical_ntk` with ``parametrization="ntk"`` at infinite width.
Each step is the layer rule of :class:`meanfield.layers.Dense` (without dropout):
``K^l = Dense.covariance(E[phi phi])``, its diagonal ``Dense.variance(E[phi^2])`` and
``Theta^l = Dense.ntk_from(K^l, E[phi' phi'], Theta^{l-1})``.  Gaussian-process prediction with
these kernels is in :mod:`meanfield.gp`.

Numerical method
----------------
``method`` means what it means in :func:`meanfield.expectation`: ``"auto"`` uses the closed form
where one exists (:mod:`meanfield.symbolic`: the ReLU family, erf, sin, cos, exp, polynomials, and
the closed forms it derives: gelu, relu^n, sign, step, Gaussians, gabor, erf of affine maps),
evaluated directly, entry by entry, and the tables below otherwise; ``"exact"`` insists on the
closed form; ``"quadrature"`` never uses it (every expectation by quadrature: for cross-checks).
Without a closed form every layer is done in three steps:

1. The diagonal ``K^l(x, x)`` is a one-dimensional integral, computed directly for every input by
   :func:`meanfield.expectations.expectation` (adaptive Gauss-Kronrod).
2. Off the diagonal, ``E[phi(u) phi(u')]`` depends on the entry only through the two variances and
   the angle ``theta = arccos c``.  Inputs are grouped by their variance (exactly equal values, to
   1e-12 relative, form one group; normalised inputs form a single group).  For every pair of
   groups the map ``theta -> E[phi(u) phi(u')]`` is tabulated on the range of angles that occur,
   as a piecewise Chebyshev interpolant of degree 16 in ``theta`` (not ``c``: the half-integer
   powers of ``1 - c`` that kinks produce are odd powers of ``theta``, and the boundary layer of
   large variances becomes wide), with pieces bisected until the trailing Chebyshev coefficients
   of every table fall below ``1e-13`` of its scale (an a-posteriori estimate).
   With more than 5 distinct variances, the tables are instead built at Chebyshev-Lobatto nodes
   in ``log q`` and interpolated (barycentric) in both variances.  What is interpolated is the
   normalised ``E[phi(u) phi(u')] / sqrt(E[phi(u)^2] E[phi(u')^2])``.  Tables at 5 nodes give the
   rate at which its Chebyshev coefficients along the variance axes decay; the number of nodes
   that brings the trailing ones below ``1e-12`` is predicted from it and rounded up to 9, 17, 33
   or 65 (nested node sets, so the integrals already done are reused).
   After the first layer the variances contract towards ``q*``, so few nodes are needed; a wide
   spread of input norms costs most in layer 1 (:mod:`meanfield._kernel_tables`).
3. Table nodes are bivariate integrals by a fixed-order rule: ``u`` outer, ``u' | u`` inner,
   composite 12-point Gauss-Legendre on panels cut at multiples of the standard deviations, at
   fixed points on the activation's scale, at kinks and (outer) around the points where the
   conditional mean crosses a kink.  Given ``u / sqrt(q)``, the inner integral does not depend on
   the outer variance ``q``, so it is computed once and shared by all outer variances.  Compiled
   code (numba, cached) lays out the nodes; phi is evaluated on them in large vectorised batches
   (:mod:`meanfield._bivariate`).
   Its accuracy is checked in the tests: 1e-13 against mpmath (hard tanh), and within 1e-11 of
   adaptive Gauss-Kronrod quadrature (tolerance 1e-12) for tanh, softplus, gelu, mish, selu, swish
   and erf at variances 0.05 to 400 and all angles.  A compiled kernel evaluates the tables for
   all entries (the upper triangle only when ``X2`` is ``X1``), block by block; memory stays
   O(n1 n2).  Table nodes and blocks of rows are spread over threads (the CPUs the process may
   use, at most 8; :mod:`meanfield._threads`).

The panels resolve the activation's features near the origin (within about 12), the Gaussian on
the scale of its standard deviation and, for an activation that oscillates, its waves: where it
oscillates, panels are at most 1.2 times the shortest distance between its extrema (so the cost
grows with frequency times standard deviation, squared).  Typed ``sin(7*x)`` at q = 6.45 is exact
to rounding; past 2000 such panels per axis a KernelWarning says the error may exceed the
tolerance.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from . import _bounded
from ._kernel_args import check
from ._kernel_steps import Moments, affine_power, input_layer
from ._kernel_tables import KernelWarning, angle_range
from .activations import ActivationLike
from .layers import Dense

__all__ = ["nngp", "ntk", "KernelWarning", "MAX_LAYERS"]


def nngp(X1: ArrayLike, X2: ArrayLike | None = None, act: ActivationLike = "relu", depth: int = 1,
         sigma_w2: float = 2.0, sigma_b2: float = 0.0, *, method: str = "auto",
         memory_limit: float | None = None) -> np.ndarray:
    """NNGP kernel ``K^L(x, x')`` of a deep fully connected network (Lee et al. 2018, eqs. 5-6).

    ``K^0 = sigma_b2 + sigma_w2 x.x'/d_in`` and
    ``K^l = sigma_b2 + sigma_w2 E[phi(u) phi(u')]`` with ``(u, u')`` Gaussian with the 2 x 2
    covariance of ``K^{l-1}`` on ``{x, x'}`` (the layer rule :meth:`meanfield.layers.Dense.covariance`);
    inputs of different norms are handled exactly.

    Parameters
    ----------
    X1 : array (n1, d_in)
    X2 : array (n2, d_in), optional
        Defaults to ``X1`` (then the result is exactly symmetric).
    act : str, Activation or callable
        The nonlinearity phi (see :func:`meanfield.activation`).
    depth : int
        Number of hidden layers L (nonlinearities), >= 0; the linear readout is not counted.
        ``depth=L`` corresponds to ``meanfield.empirical.NetworkSpec(depth=L + 1)``.  The
        recursion stops early once a layer leaves the kernel bitwise unchanged (every later layer
        would too), so very deep kernels cost what convergence costs; past :data:`MAX_LAYERS`
        layers without convergence it stops with a ValueError.
    sigma_w2, sigma_b2 : float
        Weight and bias variances (``W_ij ~ N(0, sigma_w2 / fan_in)``, ``b_i ~ N(0, sigma_b2)``).
    method : {"auto", "exact", "quadrature"}
        As in :func:`meanfield.expectation`: the closed form where one exists, else the tables
        (``"auto"``); only closed forms (``"exact"``, ValueError without one); or the tables built
        by quadrature for every activation (``"quadrature"``, for cross-checks).  See the module
        docstring for the method and its accuracy.
    memory_limit : float, optional
        Bytes the kernel arrays may use (None: :data:`meanfield._validate.DEFAULT_MEMORY_LIMIT`,
        4 GiB); a larger request raises ValueError before any work.

    Returns
    -------
    ndarray (n1, n2)

    Raises
    ------
    ValueError
        Inputs not 2-D, empty, non-finite or of different feature dimensions; depth < 0;
        negative variances; an unknown method; a kernel larger than ``memory_limit``.

    Notes
    -----
    Cost (1000 x 1000, depth 10, on a shared 2-core machine; ``benchmarks/README.md``): closed
    forms 0.2 s for any inputs.  Without a closed form (tanh) the cost depends on the norms of the
    inputs: 0.5 s when they share one norm (one set of tables per layer), but about 2.7 s when
    they have many distinct norms, because then every layer's tables are also interpolated over
    the variances (most nodes in layer 1, fewer as the variances contract).  Normalising the
    inputs to a common norm, where the application allows it, is the fast path.
    """
    X1, X2, same, act, depth, sw, sb = check(X1, X2, act, depth, sigma_w2, sigma_b2, method, memory_limit, 3)
    return _recursion(X1, X2, same, Dense(act, sw, sb), depth, method, want_ntk=False)[0]


def ntk(X1: ArrayLike, X2: ArrayLike | None = None, act: ActivationLike = "relu", depth: int = 1,
        sigma_w2: float = 2.0, sigma_b2: float = 0.0, *, method: str = "auto", memory_limit: float | None = None,
        return_nngp: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Neural tangent kernel ``Theta^L(x, x')`` in the NTK parametrisation (Jacot et al. 2018, Thm. 1).

    ``Theta^0 = K^0`` and ``Theta^l = K^l + sigma_w2 E[phi'(u) phi'(u')] Theta^{l-1}`` (Arora et
    al. 2019, eq. 9; Lee et al. 2019, eq. 7, with ``sigma_w2``, ``sigma_b2`` variances; the layer
    rule :meth:`meanfield.layers.Dense.ntk_from`), with ``K^l`` the NNGP kernel of :func:`nngp`.
    In a finite network with ``W^l = sqrt(sigma_w2 / N_{l-1}) Z^l`` and
    ``b^l = sqrt(sigma_b2) beta^l``, this is the limit of ``sum_theta df(x)/dtheta df(x')/dtheta``
    over ``theta = (Z, beta)`` of all layers, readout included
    (:func:`meanfield.empirical.empirical_ntk` with ``parametrization="ntk"``).

    Parameters
    ----------
    X1, X2, act, depth, sigma_w2, sigma_b2, method, memory_limit
        As in :func:`nngp`.  ``act`` needs phi' (a kink contributes no Dirac mass).
    return_nngp : bool
        Also return the NNGP kernel ``K^L`` (computed on the way).

    Returns
    -------
    ndarray (n1, n2), or (Theta, K) with ``return_nngp``

    Raises
    ------
    ValueError
        As :func:`nngp`; the NTK holds twice as many arrays against ``memory_limit``.

    Notes
    -----
    The NTK needs a second set of tables (for phi') and costs about twice the NNGP: 1.0 s for
    1000 x 1000 tanh at depth 10 on a common norm, about 5.5 s with many distinct norms
    (see :func:`nngp`).
    """
    X1, X2, same, act, depth, sw, sb = check(X1, X2, act, depth, sigma_w2, sigma_b2, method, memory_limit, 5)
    K, Theta = _recursion(X1, X2, same, Dense(act, sw, sb), depth, method, want_ntk=True)
    return (Theta, K) if return_nngp else Theta


# ----------------------------------------------------------------------------------------
# The recursion
# ----------------------------------------------------------------------------------------


#: Kernels deeper than this are computed only if they reach their fixed point (bitwise) by then.
MAX_LAYERS = 10**6


def _recursion(X1, X2, same, layer: Dense, depth, method, want_ntk):
    """``(K^L, Theta^L)`` (``Theta`` None without ``want_ntk``); each step is the layer rule.

    At most 3 (NNGP) or 5 (NTK) ``n1 x n2`` arrays are alive at a time.  When ``X2`` is ``X1`` the
    diagonal is set from the one-dimensional variance map and every array stays exactly symmetric.

    Once a layer leaves ``K`` (and the diagonals) bitwise unchanged, every later layer would too:
    the NNGP is final, and the NTK's remaining layers are the elementwise affine recursion
    ``Theta' = K + a Theta`` with fixed ``a = sigma_w2 E[phi'(u) phi'(u')]``, summed in closed form
    (``Theta^L = a^n Theta + K (1 - a^n)/(1 - a)``), so very deep kernels cost what convergence costs.
    """
    K, d1, d2 = input_layer(X1, X2, same, layer.sigma_w2, layer.sigma_b2)
    Theta, t1, t2 = (K.copy(), d1.copy(), d2.copy()) if want_ntk else (None, None, None)
    phi = Moments(layer.act, 0, method, same)
    dphi = Moments(layer.act, 1, method, same) if want_ntk else None
    clock = _bounded.LayerClock("the kernel recursion", depth, horizon=MAX_LAYERS)
    for layer_number in range(1, depth + 1):
        clock.tick(layer_number - 1)
        closed = phi.closed is not None and (dphi is None or dphi.closed is not None)
        angles = None if closed else angle_range(K, d1, d2, same)
        V1, V2 = phi.second(d1, d2)  # E[phi(u)^2] on the diagonals
        with np.errstate(over="ignore"):  # the next variances must be finite before any table is built
            if not (np.all(np.isfinite(layer.variance(V1))) and np.all(np.isfinite(layer.variance(V2)))):
                raise _beyond_float(layer_number, depth, layer)
        with np.errstate(over="ignore"):  # an overflow is caught below, with the layer it happened at
            C = phi.products(K, d1, d2, V1, V2, angles)  # E[phi(u) phi(u')] at every entry
        if want_ntk:
            D1, D2 = dphi.second(d1, d2)  # E[phi'(u)^2]
            Dc = dphi.products(K, d1, d2, D1, D2, angles)  # E[phi'(u) phi'(u')]
        K_prev, d_prev = K, (d1, d2)
        K = layer.covariance(C)  # K^l = sigma_b2 + sigma_w2 E[phi(u) phi(u')]
        del C
        with np.errstate(over="ignore"):
            d1 = layer.variance(V1)  # K^l(x, x) = sigma_b2 + sigma_w2 E[phi(u)^2]
            d2 = d1 if same else layer.variance(V2)
        if same:
            np.fill_diagonal(K, d1)
        fixed = (np.array_equal(K, K_prev) and np.array_equal(d1, d_prev[0])
                 and np.array_equal(d2, d_prev[1]))
        del K_prev, d_prev
        if not (np.all(np.isfinite(d1)) and np.all(np.isfinite(d2)) and np.isfinite(K).all()):
            raise _beyond_float(layer_number, depth, layer)
        if want_ntk:
            Theta = layer.ntk_from(K, Dc, Theta)  # Theta^l = K^l + sigma_w2 E[phi'(u) phi'(u')] Theta^{l-1}
            t1 = layer.ntk_from(d1, D1, t1)
            t2 = t1 if same else layer.ntk_from(d2, D2, t2)
            if same:
                np.fill_diagonal(Theta, t1)
            if fixed and layer_number < depth:  # the same affine step for the remaining layers
                n = depth - layer_number
                Theta = affine_power(Theta, K, layer.sigma_w2 * Dc, n)
                t1 = affine_power(t1, d1, layer.sigma_w2 * D1, n)
                t2 = t1 if same else affine_power(t2, d2, layer.sigma_w2 * D2, n)
                if same:
                    np.fill_diagonal(Theta, t1)
                if not (np.isfinite(Theta).all() and np.all(np.isfinite(t1)) and np.all(np.isfinite(t2))):
                    raise ValueError(f"the NTK exceeds float64's range by layer {depth}: it grows by "
                                     f"sigma_w2 E[phi'(u) phi'(u')] >= 1 per layer; use fewer layers")
            del Dc
        if fixed:  # every later layer repeats this one exactly
            break
        if layer_number == MAX_LAYERS and depth > MAX_LAYERS:
            raise ValueError(f"the kernel is still changing after {MAX_LAYERS} layers (for example on the critical "
                             f"line, where correlations approach 1 like 1/l^2), so depth {depth} would need "
                             f"{depth - MAX_LAYERS} more layers of the recursion: use depth <= {MAX_LAYERS}")
    return K, Theta


def _beyond_float(layer_number, depth, layer) -> ValueError:
    return ValueError(f"the kernel's variances exceed float64's range at layer {layer_number} of {depth}: "
                      f"the network diverges at sigma_w2 = {layer.sigma_w2:g}, sigma_b2 = "
                      f"{layer.sigma_b2:g}; use fewer layers or a smaller sigma_w2")
