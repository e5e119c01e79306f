"""Sampled finite random networks: the observables of the mean-field theory, measured.

This module is the independent check of the theory.  It uses only
:mod:`meanfield.activations` (to evaluate phi and phi'), the plain-data network descriptions of
:mod:`meanfield.architecture` and plain argument checks, and never calls the maps, fixed points
or kernels that it is used to test.

Conventions (Poole et al. 2016; Schoenholz et al. 2017; Lee et al. 2018)
-------------------------------------------------------------------------
Layer ``l`` is the pre-activation after ``l`` nonlinear layers; layer 0 is the input layer's
pre-activation.  A network of depth ``L`` (``L`` weight matrices, layers ``0..L-1``) with widths
``N_0, ..., N_{L-1}`` maps an input ``x`` in ``R^{d_in}`` (``N_{-1} = d_in``) to

    h^0 = W^0 x + b^0,                                W^0_ij ~ N(0, sigma_w2 / d_in)
    h^l = W^l (m^l / rho * phi(h^{l-1})) + b^l,      W^l_ij ~ N(0, sigma_w2 / N_{l-1}),  l = 1..L-1

with ``b^l_i ~ N(0, sigma_b2)`` and optional dropout masks ``m^l_i ~ Bernoulli(rho)`` on
``phi(h^{l-1})`` before ``W^l``, drawn independently for every input (inverted dropout, keep
probability ``rho``).  The output is ``h^{L-1}`` (pre-activations; there is no final
nonlinearity).  So ``q^0 = sigma_w2 |x|^2 / d_in + sigma_b2`` (Lee et al. 2018, eq. 6) and, at
large width, ``q^l = sigma_w2 / rho * E[phi(sqrt(q^{l-1}) z)^2] + sigma_b2``: layer ``l`` here is
index ``l`` of :func:`meanfield.propagate` started from ``q0 = q^0`` and the kernel ``K^l`` of
:func:`meanfield.nngp` with ``depth=l``.

Residual networks (Yang & Schoenholz 2017) have constant width ``N = d_in`` and, for
``l = 0..L-1``,

    h^l = W^l x^{l-1} + b^l,   x^l = x^{l-1} + V^l (m^l / rho * phi(h^l)) + a^l,   x^{-1} = x

with ``V^l_ij ~ N(0, sigma_v2 / N)`` and ``a^l_i ~ N(0, sigma_a2)``; the output is ``x^{L-1}``.

Orthogonal weights are scaled Haar partial isometries (QR of a Gaussian matrix with the sign of
the diagonal of R fixed, Mezzadri 2007), scaled so that every entry has variance
``sigma_w2 / N_in`` as in the Gaussian case: ``W = sqrt(sigma_w2) O`` for square layers.

Variances everywhere (``sigma_w2``, ``sigma_b2``), never standard deviations.

What is here
------------
:class:`NetworkSpec` (the distribution), :func:`sample_network` (one network with explicit
parameters), :func:`run` (one sampled network's pass over a batch, recorded in a
:class:`NetworkRun`), :func:`simulate` (many independent networks, a :class:`Simulation`),
:func:`empirical_nngp` and :func:`empirical_ntk` (Monte Carlo kernels, a
:class:`KernelEstimate`), :func:`compare` (theory against simulation, a :class:`Comparison`) and
:func:`measure_gradient_scales` (dense, batch-norm, layer-norm and residual networks described by
:mod:`meanfield.architecture`: gradient scales, a :class:`SampledGradientScales`).

Memory
------
The forward pass over a batch keeps one layer at a time.  Backpropagation needs phi' of
every layer (the "tape"), and the Jacobian needs a ``d_in x N`` matrix per input; both are
bounded by ``memory_limit`` (``None``: the package default, 4 GiB): the weights are kept only
when they fit, otherwise they are regenerated from per-layer seeds, and the inputs are
processed in chunks.  Results do not depend on the chunking (all random numbers come from
per-layer streams).  A request that cannot fit is refused before any work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike

from . import _architecture_pass as arch_pass
from . import _empirical_checks as checks
from . import _empirical_tasks as tasks
from . import _network_pass as engine
from . import _validate
from ._comparison import Comparison, compare
from ._empirical_results import KernelEstimate, NetworkRun, Simulation
from ._gradient_scales import SampledGradientScales, estimate
from .activations import Activation, activation

__all__ = [
    "NetworkSpec",
    "SampledNetwork",
    "NetworkRun",
    "Simulation",
    "KernelEstimate",
    "Comparison",
    "sample_network",
    "run",
    "simulate",
    "empirical_nngp",
    "empirical_ntk",
    "compare",
    "SampledGradientScales",
    "measure_gradient_scales",
]


# ----------------------------------------------------------------------------------------
# Architecture
# ----------------------------------------------------------------------------------------


class NetworkSpec:
    """Architecture and initialisation distribution of a random fully connected network.

    A spec holds no weights: :func:`run` and :func:`simulate` sample them (layer by layer, so
    that deep wide networks never need all their weights in memory); :func:`sample_network`
    draws one network with explicit parameters.

    Parameters
    ----------
    act : str, Activation or callable
        Nonlinearity phi, anything :func:`meanfield.activations.activation` accepts.
    sigma_w2 : float
        Weight variance: ``W^l_ij ~ N(0, sigma_w2 / N_{l-1})`` (``N_{-1} = d_in``).
    sigma_b2 : float, default 0
        Bias variance: ``b^l_i ~ N(0, sigma_b2)``.
    widths : sequence of int, optional
        Widths ``N_0, ..., N_{L-1}`` of the layers ``h^0 .. h^{L-1}``; the last is the output width.
    width, depth : int, optional
        Shorthand for ``widths = [width] * depth`` (give either ``widths`` or both of these).
        ``depth = L`` is the number of weight matrices; the layers are numbered ``0..L-1``.
    weights : {"gaussian", "orthogonal"}
        Gaussian entries, or scaled Haar-orthogonal matrices (Pennington et al. 2017).
    rho : float in (0, 1], default 1
        Dropout keep probability; masks ``m^l`` are applied, divided by ``rho``, to ``phi(h^{l-1})``
        before ``W^l`` (residual: to ``phi(h^l)`` before ``V^l``; Schoenholz et al. 2017, sec. 5).
    residual : bool, default False
        Residual blocks ``x^l = x^{l-1} + V^l phi(W^l x^{l-1} + b^l) + a^l``, ``l = 0..L-1``, from
        ``x^{-1} = x`` (Yang & Schoenholz 2017); needs equal widths, equal to the input dimension.
    sigma_v2, sigma_a2 : float
        Residual branch variances: ``V_ij ~ N(0, sigma_v2 / N)``, ``a_i ~ N(0, sigma_a2)``.
    dtype : {"float64", "float32"}
        Precision of the sampled weights and activations (recorded statistics are float64).

    Raises
    ------
    ValueError
        Non-positive widths, depth 0, negative or non-finite variances, ``rho`` outside
        (0, 1], unknown weight distribution or dtype, unequal widths for a residual network.
    """

    def __init__(self, act: str | Activation | Callable, *, sigma_w2: float, sigma_b2: float = 0.0,
                 widths: Sequence[int] | None = None, width: int | None = None,
                 depth: int | None = None, weights: str = "gaussian", rho: float = 1.0, residual: bool = False,
                 sigma_v2: float = 1.0, sigma_a2: float = 0.0, dtype: str | np.dtype = "float64"):
        self.act = activation(act)
        self.sigma_w2 = checks.variance(sigma_w2, "sigma_w2", positive=True)
        self.sigma_b2 = checks.variance(sigma_b2, "sigma_b2", positive=False)
        if widths is not None:
            if width is not None or depth is not None:
                raise ValueError("give either widths=[N_0, ..., N_{L-1}] or width= and depth=, not both")
            if isinstance(widths, (int, np.integer)):
                raise ValueError("widths must be a sequence of layer widths; for equal widths use width= and depth=")
            widths = [_validate.positive_int("every width", n) for n in widths]
            if not widths:
                raise ValueError("depth must be at least 1: widths is empty")
        else:
            if width is None or depth is None:
                raise ValueError("give widths=[N_0, ..., N_{L-1}], or both width= and depth=")
            widths = [_validate.positive_int("width", width)] * _validate.positive_int("depth", depth)
        self.widths = tuple(widths)
        if weights not in ("gaussian", "orthogonal"):
            raise ValueError(f"weights must be 'gaussian' or 'orthogonal', got {weights!r}")
        self.weights = weights
        try:
            rho = float(rho)
        except (TypeError, ValueError):
            raise ValueError(f"rho (keep probability) must be a number in (0, 1], got {rho!r}") from None
        if not (0.0 < rho <= 1.0):
            raise ValueError(f"rho is a keep probability and must lie in (0, 1], got {rho!r}")
        self.rho = rho
        self.residual = bool(residual)
        self.sigma_v2 = checks.variance(sigma_v2, "sigma_v2", positive=True)
        self.sigma_a2 = checks.variance(sigma_a2, "sigma_a2", positive=False)
        if self.residual and len(set(self.widths)) != 1:
            raise ValueError(f"a residual network needs equal widths, got {list(self.widths)}")
        try:
            dt = np.dtype(dtype)
        except (TypeError, ValueError):
            raise ValueError(f"dtype must be float64 or float32, got {dtype!r}") from None
        if dt not in (np.dtype(np.float64), np.dtype(np.float32)):
            raise ValueError(f"dtype must be float64 or float32, got {dtype!r}")
        self.dtype = dt

    @property
    def depth(self) -> int:
        """Number of layers L (weight matrices); the layers are numbered ``0..L-1``."""
        return len(self.widths)

    def __repr__(self):
        w = (f"width={self.widths[0]}, depth={self.depth}" if len(set(self.widths)) == 1
             else f"widths={list(self.widths)}")
        extra = ""
        if self.weights != "gaussian":
            extra += f", weights={self.weights!r}"
        if self.rho != 1.0:
            extra += f", rho={self.rho}"
        if self.residual:
            extra += f", residual=True, sigma_v2={self.sigma_v2}, sigma_a2={self.sigma_a2}"
        if self.dtype != np.float64:
            extra += ", dtype='float32'"
        return (f"NetworkSpec({self.act.name!r}, sigma_w2={self.sigma_w2}, sigma_b2={self.sigma_b2}, "
                f"{w}{extra})")


# ----------------------------------------------------------------------------------------
# Sampled networks with explicit parameters
# ----------------------------------------------------------------------------------------


class SampledNetwork:
    """One sampled network with explicit parameters (for small and moderate sizes).

    Made by :func:`sample_network`; calling it on inputs gives the output.

    Parameters
    ----------
    spec : NetworkSpec
        The distribution it was drawn from.
    d_in : int
        Input dimension.
    layers, res_layers : list of (Z, s, b)
        The layers as drawn, at index ``l = 0..L-1``: ``W^l = (s Z)^T``, ``b^l = b`` (and ``V^l``,
        ``a^l`` of residual networks).

    Attributes
    ----------
    weights : list of ndarray
        ``W^l`` at index ``l``, with shape ``(N_l, N_{l-1})`` (``N_{-1} = d_in``), including the
        scale (``Var W_ij = sigma_w2 / N_{l-1}``).
    biases : list of ndarray
        ``b^l`` with shape ``(N_l,)``.
    res_weights, res_biases : list of ndarray or None
        Residual networks: ``V^l`` (N, N) and ``a^l`` (N,).
    """

    def __init__(self, spec: NetworkSpec, d_in: int, layers: list, res_layers: list | None = None):
        self.spec, self.d_in = spec, d_in
        self._params = engine.StoredParams(layers, res_layers)

    @property
    def weights(self) -> list[np.ndarray]:
        """``W^l``, shape ``(N_l, N_{l-1})``."""
        return [(Z * s).T for Z, s, _ in self._params.layers]

    @property
    def biases(self) -> list[np.ndarray]:
        """``b^l``, shape ``(N_l,)``."""
        return [b for _, _, b in self._params.layers]

    @property
    def res_weights(self) -> list[np.ndarray] | None:
        """Residual ``V^l``, shape (N, N), or None."""
        rl = self._params.res_layers
        return None if rl is None else [(V * s).T for V, s, _ in rl]

    @property
    def res_biases(self) -> list[np.ndarray] | None:
        """Residual ``a^l``, shape (N,), or None."""
        rl = self._params.res_layers
        return None if rl is None else [a for _, _, a in rl]

    def __repr__(self):
        return f"SampledNetwork({self.spec!r}, d_in={self.d_in})"

    def __call__(self, X: ArrayLike) -> np.ndarray:
        """The output of the network, without dropout.

        Parameters
        ----------
        X : array (B, d_in)
            Inputs, one per row.

        Returns
        -------
        ndarray (B, N_{L-1})
            ``h^{L-1}`` (residual: ``x^{L-1}``).
        """
        X = self._inputs(X)
        spec = self.spec
        nl = engine.Nonlinearity(spec.act)
        a = X
        for l in range(spec.depth):
            Z, s, b = self._params.get(l, 0)
            h = (a @ Z) * s + b
            if spec.residual:
                V, sv, ab = self._params.get(l, 1)
                a = a + (nl(h, False)[0] @ V) * sv + ab
            elif l < spec.depth - 1:
                a = nl(h, False)[0]
        return a if spec.residual else h

    def _inputs(self, X):
        X = checks.check_inputs(self.spec, X)
        if X.shape[1] != self.d_in:
            raise ValueError(f"this network takes inputs of dimension {self.d_in}, got {X.shape[1]}")
        return X


def sample_network(spec: NetworkSpec, d_in: int, rng: np.random.Generator | int | None, *,
                   memory_limit: float | None = None) -> SampledNetwork:
    """Draw one network with explicit parameters from the distribution ``spec``.

    The weights are the same as :func:`run` would draw for the same state of ``rng``.

    Parameters
    ----------
    spec : NetworkSpec
        The distribution.
    d_in : int
        Input dimension ``N_{-1}``.
    rng : numpy.random.Generator or int
        Source of the parameters (one draw: the seed of the per-layer streams).
    memory_limit : float, optional
        Refuse (ValueError) if the parameters would take more bytes than this (``None``: the
        package default, 4 GiB).

    Returns
    -------
    SampledNetwork
    """
    if not isinstance(spec, NetworkSpec):
        raise TypeError("spec must be a NetworkSpec")
    d_in = _validate.positive_int("d_in", d_in)
    if spec.residual and d_in != spec.widths[0]:
        raise ValueError(f"a residual network needs d_in equal to the width {spec.widths[0]}, got {d_in}")
    checks.check_parameters_fit(spec, d_in, _validate.memory_limit(memory_limit))
    params = engine.LayerParams(spec, d_in, engine.new_base(checks.as_rng(rng)), store=True)
    layers = [params.get(l, 0) for l in range(spec.depth)]
    res = [params.get(l, 1) for l in range(spec.depth)] if spec.residual else None
    return SampledNetwork(spec, d_in, layers, res)


# ----------------------------------------------------------------------------------------
# One network's pass, and Monte Carlo over networks
# ----------------------------------------------------------------------------------------


def run(network: NetworkSpec | SampledNetwork, X: ArrayLike, rng: np.random.Generator | int | None, *,
        gradients: bool = True, pairs: str | ArrayLike | None = "all", jacobian: bool | str = False,
        jvp: bool | ArrayLike = False, keep_activations: bool = False, output_gradient: ArrayLike | None = None,
        memory_limit: float | None = None) -> NetworkRun:
    """Pass a batch of inputs through one sampled network and record the observables.

    Records, for every layer ``l = 0..L-1`` at index ``l`` (Poole et al. 2016; Schoenholz et al.
    2017): ``q^l = (1/N_l) sum_i (h^l_i)^2`` per input (``q^0 = sigma_w2 |x|^2 / d_in + sigma_b2``
    at large width); ``q12^l = (1/N_l) sum_i h^l_i(x_a) h^l_i(x_b)`` (and ``c^l``) per pair; the
    squared norms ``||delta^l||^2`` of a random output gradient ``g ~ N(0, I_{N_{L-1}})``
    backpropagated to ``h^l``, whose ratio ``||delta^l||^2 / ||delta^{l+1}||^2`` estimates
    ``chi_1 / rho = sigma_w2 E[phi'(h^l)^2] / rho``; optionally ``||J^l u||^2`` (forward mode) and
    the singular values of the input-output Jacobian ``J = dh^{L-1}/dx`` (Pennington et al. 2017).

    Parameters
    ----------
    network : NetworkSpec or SampledNetwork
        A spec draws a fresh network from ``rng`` (layer by layer); a sampled network is used as is.
    X : array (B, d_in)
        Inputs, one per row; must be finite.
    rng : numpy.random.Generator or int
        Source of the weights, dropout masks, output gradients and tangents.
    gradients : bool
        Backpropagate a random output gradient (``grad_sq``, ``grad_input_sq``, ``grad_w_sq``).
    pairs : "all", None or int array (P, 2)
        Which input pairs to record ``q12`` for: all (a (B, B) matrix per layer), none, or a list.
    jacobian : False, True/"pre" or "post"
        Singular values of ``dh^{L-1}/dx`` ("pre"), or of ``d phi(h^{L-1})/dx`` ("post", the convention of
        Pennington et al. 2017).  Needs ``3 d_in max(N)`` numbers per input: too large a request is
        refused (ValueError stating the memory) before any work.
    jvp : bool or array
        Forward-mode tangents: True draws a uniform unit vector per input; or give them, shape
        (d_in,) or (B, d_in).  Records ``jvp_sq[l] = ||J^l u||^2``, ``J^l = dh^l/dx`` (Hanin 2018).
    keep_activations : bool
        Also return every layer's ``h^l`` (memory ``B sum N_l``).
    output_gradient : array (B, N_{L-1}) or (N_{L-1},), optional
        The gradient ``g`` to backpropagate instead of a random one (e.g. of a loss).
    memory_limit : float, optional
        Bytes of working memory allowed (``None``: the package default, 4 GiB); the weights are
        kept only if they fit, and the backward pass and Jacobian are chunked over inputs.

    Returns
    -------
    NetworkRun

    Raises
    ------
    ValueError
        NaN or infinite inputs, bad shapes, a request that cannot fit in ``memory_limit``, or an
        activation without phi' when gradients, tangents or the Jacobian are requested.
    """
    if isinstance(network, SampledNetwork):
        spec, X, params = network.spec, network._inputs(X), network._params
    elif isinstance(network, NetworkSpec):
        spec, X, params = network, checks.check_inputs(network, X), None
    else:
        raise TypeError("network must be a NetworkSpec or a SampledNetwork")
    memory_limit = _validate.memory_limit(memory_limit)
    opt = checks.options(spec, X, pairs, jacobian, gradients, keep_activations)
    B, d_in = X.shape
    engine.plan(spec, B, d_in, opt, memory_limit, can_store=params is None)  # refuse before drawing anything
    base, out_grad, tangents = tasks.draws(spec, checks.as_rng(rng), B, d_in, gradients, jvp, output_gradient)
    return engine.run_batch(spec, X, params, base, out_grad, tangents, opt, memory_limit)


def simulate(spec: NetworkSpec, X: ArrayLike, n_networks: int, rng: np.random.Generator | int | None, *,
             gradients: bool = True, pairs: str | ArrayLike | None = "all", jacobian: bool | str = False,
             jvp: bool | ArrayLike = False, outputs: bool = False, memory_limit: float | None = None,
             client=None, workers: int | None = None) -> Simulation:
    """Monte Carlo over independently sampled networks: :func:`run` ``n_networks`` times.

    The networks can run in parallel, in local processes (``workers``) or on a Dask cluster
    (``client``), with the same numbers as here: network ``i`` draws from ``rng`` exactly what
    it would after networks ``0..i-1`` in one process (each task starts from the generator state
    where its first network begins; see :mod:`meanfield.runner`).

    Parameters
    ----------
    spec : NetworkSpec
        The distribution of the networks.
    X : array (B, d_in)
        Inputs, one per row, the same for every network.
    n_networks : int
        Number of independent networks.
    rng : numpy.random.Generator or int
        Source of all the networks (drawn one after the other, wherever they run).
    gradients, pairs, jacobian, jvp, memory_limit
        As in :func:`run` (``memory_limit`` also bounds the stacked records).
    outputs : bool
        Keep every network's output ``h^{L-1}`` (``n_networks * B * N_{L-1}`` numbers).
    client : dask.distributed.Client or str, optional
        Run the networks on this Dask cluster (a client or a scheduler address).
    workers : int, optional
        Without ``client``: local processes (default 1, this process).

    Returns
    -------
    Simulation
        Records stacked along a first axis of length ``n_networks``; ``sim.q[:, l, a]`` is ``q^l``
        of input ``a``.  Feed per-network values to :func:`compare`, e.g.
        ``compare(propagate(act, q0=q^0, ...).q, sim.q[:, :, 0])`` (index ``l`` of both is layer
        ``l``) or ``compare(theory_chi, sim.gradient_ratio())``.
    """
    if not isinstance(spec, NetworkSpec):
        raise TypeError("simulate takes a NetworkSpec (it samples the networks)")
    n_networks = _validate.positive_int("n_networks", n_networks)
    X = checks.check_inputs(spec, X)
    memory_limit = _validate.memory_limit(memory_limit)
    opt = checks.options(spec, X, pairs, jacobian, gradients, False)
    B, d_in = X.shape
    checks.check_stacked_records(spec, d_in, B, n_networks, opt, jvp, outputs, memory_limit)
    workers = None if workers is None else _validate.positive_int("workers", workers)
    kwargs = dict(gradients=gradients, pairs=opt.pairs, jacobian=jacobian, jvp=jvp, memory_limit=memory_limit)
    runs = tasks.simulate_runs(spec, X, n_networks, checks.as_rng(rng), kwargs, client, workers)

    def stack(name):
        vals = [getattr(r, name) for r in runs]
        return None if vals[0] is None else np.stack(vals)

    return Simulation(
        spec=spec, q=stack("q"), output=stack("output") if outputs else None, q12=stack("q12"),
        pairs=runs[0].pairs, p=stack("p"), grad_sq=stack("grad_sq"), grad_input_sq=stack("grad_input_sq"),
        grad_w_sq=stack("grad_w_sq"), jvp_sq=stack("jvp_sq"), jacobian_sv=stack("jacobian_sv"),
    )


# ----------------------------------------------------------------------------------------
# Monte Carlo kernels
# ----------------------------------------------------------------------------------------


def empirical_nngp(spec: NetworkSpec, X: ArrayLike, n_networks: int, rng: np.random.Generator | int | None, *,
                   layer: int | None = None, return_samples: bool = False,
                   memory_limit: float | None = None) -> KernelEstimate:
    """Empirical NNGP kernel: the output covariance over sampled networks (Lee et al. 2018).

    ``K_hat(x_a, x_b) = mean over networks of (1/N_l) sum_i h^l_i(x_a) h^l_i(x_b)``: the units of a
    layer are exchangeable, so each network contributes the average over its units.  The mean of
    ``h`` is zero, so this second moment is the covariance.  As ``N -> inf`` it tends to the NNGP
    kernel ``K^l`` of Lee et al. 2018, eqs. 5-6 (``K^0 = sigma_w2 x.x'/d_in + sigma_b2``), i.e.
    :func:`meanfield.nngp` with ``depth=l``.

    Parameters
    ----------
    spec : NetworkSpec
        The distribution of the networks.
    X : array (B, d_in)
        Inputs, one per row.
    n_networks : int
        Number of independent networks.
    rng : numpy.random.Generator or int
        Source of the networks.
    layer : int, optional
        Layer ``0..L-1`` whose kernel to estimate (default: the output layer ``L-1``).
    return_samples : bool
        Keep the per-network kernels.
    memory_limit : float, optional
        Bytes of working memory per network (``None``: the package default, 4 GiB).

    Returns
    -------
    KernelEstimate
        ``mean`` and ``sem`` of shape (B, B).
    """
    if not isinstance(spec, NetworkSpec):
        raise TypeError("spec must be a NetworkSpec")
    n_networks = _validate.positive_int("n_networks", n_networks)
    layer = spec.depth - 1 if layer is None else checks.layer_number(layer, spec.depth)
    X = checks.check_inputs(spec, X)
    memory_limit = _validate.memory_limit(memory_limit)
    rng = checks.as_rng(rng)
    acc = engine.RunningMean(return_samples)
    for _ in range(n_networks):
        r = run(spec, X, rng, gradients=False, pairs="all", memory_limit=memory_limit)
        acc.add(r.q12[layer])
    return acc.result()


def empirical_ntk(spec: NetworkSpec | SampledNetwork, X: ArrayLike, n_networks: int,
                  rng: np.random.Generator | int | None, *, parametrization: str = "ntk",
                  return_samples: bool = False, memory_limit: float | None = None) -> KernelEstimate:
    """Empirical neural tangent kernel of the scalar output ``f(x) = h^{L-1}_1(x)`` (Jacot et al. 2018).

    ``Theta(x, x') = sum_theta df(x)/dtheta df(x')/dtheta``, computed exactly and without autodiff
    from the layer-wise form (``delta^l = df/dh^l``, ``a^{l-1}`` the input of layer l:
    ``a^{-1} = x``, ``a^{l-1} = phi(h^{l-1})``), summed over the layers ``l = 0..L-1``:

        Theta = sum_l [ c_w^l (delta^l(x) . delta^l(x')) (a^{l-1}(x) . a^{l-1}(x')) + c_b (delta^l(x) . delta^l(x')) ]

    In the NTK parametrisation (``W = sqrt(sigma_w2 / N_{l-1}) Z``, ``b = sqrt(sigma_b2) beta``,
    derivatives in ``Z`` and ``beta``) ``c_w^l = sigma_w2 / N_{l-1}`` and ``c_b = sigma_b2``, and
    ``Theta`` tends to the infinite-width NTK ``Theta^l = K^l + sigma_w2 E[phi'(u) phi'(u')] Theta^{l-1}``,
    ``Theta^0 = K^0``, at ``l = L-1`` (:func:`meanfield.ntk` with ``depth=L-1``; Jacot et al. 2018;
    Lee et al. 2019).  In the standard parametrisation
    (derivatives in ``W`` and ``b``) ``c_w = c_b = 1``; it grows with the width.  Residual blocks add
    the analogous ``V``, ``a`` terms.  The output unit is the first of the last layer (all are
    exchangeable; use a last width of 1 to skip computing the others).

    Parameters
    ----------
    spec : NetworkSpec or SampledNetwork
        Without dropout (``rho = 1``).  For a SampledNetwork the kernel of that one network is
        returned (``n_networks`` is ignored and ``sem`` is NaN).
    X : array (B, d_in)
        Inputs, one per row.
    n_networks : int
        Number of independent networks.
    rng : numpy.random.Generator or int
        Source of the networks.
    parametrization : {"ntk", "standard"}
        Derivatives in the standardised parameters ``Z``, ``beta`` or in ``W``, ``b``.
    return_samples : bool
        Keep the per-network kernels.
    memory_limit : float, optional
        Bytes of working memory per network (``None``: the package default, 4 GiB); the
        backpropagation tape of all B inputs must fit at once.

    Returns
    -------
    KernelEstimate
        ``mean`` and ``sem`` of shape (B, B).
    """
    if isinstance(spec, SampledNetwork):
        networks = [spec]
        spec = spec.spec
    elif isinstance(spec, NetworkSpec):
        networks = None
        n_networks = _validate.positive_int("n_networks", n_networks)
    else:
        raise TypeError("spec must be a NetworkSpec or a SampledNetwork")
    if spec.rho != 1.0:
        raise ValueError("the empirical NTK is defined here for networks without dropout (rho = 1)")
    coef = engine.ntk_coefficients(spec, parametrization)
    X = networks[0]._inputs(X) if networks is not None else checks.check_inputs(spec, X)
    memory_limit = _validate.memory_limit(memory_limit)
    opt = checks.options(spec, X, None, False, False, False, grams=True)
    rng = checks.as_rng(rng)
    B = X.shape[0]
    delta = np.zeros((B, spec.widths[-1]), dtype=spec.dtype)
    delta[:, 0] = 1
    acc = engine.RunningMean(return_samples)
    for k in range(len(networks) if networks is not None else n_networks):
        params = networks[k]._params if networks is not None else None
        r = engine.run_batch(spec, X, params, engine.new_base(rng), delta, None, opt, memory_limit, ntk_coef=coef)
        acc.add(r.ntk)
    return acc.result()


# ----------------------------------------------------------------------------------------
# Gradient scales of the architectures of meanfield.architecture
# ----------------------------------------------------------------------------------------


def measure_gradient_scales(layers, width: int, batch_size: int, n_networks: int,
                            rng: np.random.Generator | int | None, *, q0: float = 1.0, c0: float = 0.0,
                            dtype: str | np.dtype = "float64", memory_limit: float | None = None
                            ) -> SampledGradientScales:
    """Forward and exact backward passes of sampled networks of :mod:`meanfield.architecture` layers.

    All layers have width N.  The batch ``h^0`` is B vectors with entries N(0, q0), independent
    across units, any two of them with correlation c0 (``h^0 = sqrt(q0) Z C^{1/2}``,
    ``C = (1 - c0) I + c0 1 1^T``: for c0 >= 0 the same as ``sqrt(q0)(sqrt(c0) z + sqrt(1 - c0) z_b)``),
    drawn afresh for every network.  Layer ``k = 1..L`` maps ``h^{k-1}`` to ``h^k``:

    * ``"dense"``      ``h^k = W (m * phi(h^{k-1})) / rho + b`` (inverted dropout, masks per unit and input);
    * ``"batch_norm"`` ``h^k = W phi(BN(h^{k-1})) + b``, per unit over the batch, biased variance, eps = 0
      (Yang et al. 2019);
    * ``"layer_norm"`` ``h^k = W phi(LN(h^{k-1})) + b``, per input over the units (Ba et al. 2016);
    * ``"residual"``   ``h^k = h^{k-1} + V phi(W h^{k-1} + b) + a`` (Yang & Schoenholz 2017),

    with ``W_ij ~ N(0, sigma_w2/N)``, ``V_ij ~ N(0, sigma_v2/N)``, ``b_i ~ N(0, sigma_b2)``,
    ``a_i ~ N(0, sigma_a2)``.  The loss ``E = sum(u * h^L)``, ``u_ib ~ N(0, 1)``, is backpropagated
    exactly (batch norm through the batch mean and variance,
    ``dh = (dy - mean_B dy - y mean_B(dy y)) / sigma``; layer norm likewise over the units), so
    ``E_u ||g^l||^2 = ||J_{L,l}||_F^2`` for ``g^l = dE/dh^l`` and the batch Jacobian
    ``J_{L,l} = dh^L/dh^l``.  The gradient scale coefficient (Philipp et al. 2018) follows as
    ``GSC(L, l)^2 = grad2[l] q[l] / q[L]``.

    Parameters
    ----------
    layers : sequence of meanfield.architecture.Layer
        The network, e.g. ``architecture.network("relu", 50, sigma_w2=2.0, norm="batch", batch_size=16)``.
    width : int
        N, the width of every layer (and the input dimension).
    batch_size : int
        B >= 2; must equal the ``batch_size`` of every batch_norm layer.
    n_networks : int
        Independent networks (each with its own input batch and u).
    rng : numpy.random.Generator or int
        Source of everything: each network draws one seed, from which every layer's parameters and
        masks come (the results do not depend on whether the weights are kept or regenerated).
    q0 : float
        Input variance, > 0.
    c0 : float
        Input correlation: in [-1/(B-1), 1], or in [0, 1) when there is batch norm (c0 = 1 makes the
        batch elements equal and batch norm divides by zero).
    dtype : {"float64", "float32"}
        Precision of the weights and the passes (the records are float64).  float32 weights come
        from numpy's float32 normal sampler: the same seed gives the same inputs but other weights.
    memory_limit : float, optional
        Bytes of working memory (``None``: the package default, 4 GiB): the weights
        (``width^2`` numbers per matrix) are kept when they fit and regenerated layer by layer
        otherwise; the backward tape (one or two ``width x B`` arrays per layer) must fit.

    Returns
    -------
    SampledGradientScales
        ``q``, ``c``, ``grad2``, ``gsc`` (length L + 1), ``factor``, ``gsc_layer``,
        ``sign_diversity``, ``nonlinearity`` (length L), standard errors ``*_se`` across networks,
        the per-network records and the number of networks that overflowed (``n_diverged``; left
        out of the means).  ``factor`` and the GSCs are ratios of means, with delta-method errors.

    Raises
    ------
    ValueError
        Naming the argument, before any sampling: a bad layer list, widths or counts, ``batch_size``
        below 2 or different from a batch_norm layer's, q0 not positive and finite, c0 outside its
        range, an unknown dtype, an activation without phi', or a request larger than
        ``memory_limit`` (the message states the size).
    TypeError
        ``rng`` is not a Generator, a seed or None.

    Notes
    -----
    Mean-field values to compare with (Yang et al. 2019; Philipp et al. 2018; Schoenholz et al.
    2017): dense ``factor = chi_1 / rho = sigma_w2 E[phi'(h)^2] / rho``; residual
    ``1 + sigma_v2 sigma_w2 E[phi'(z)^2]``; layer norm with ``sigma_b2 = 0``
    ``E[phi'(z)^2] / E[phi(z)^2]``; batch norm ``(B-2)/(B-3)`` for linear phi and
    ``E[phi'(z)^2] / Var phi(z)`` as ``B -> inf`` (z ~ N(0, 1)).  Batch norm needs B > 3 for a
    finite expected factor: each unit contributes ``1/sigma^2`` with ``sigma^2 ~ chi^2_{B-1}``, so
    at B = 3 the mean is infinite and at B = 4 the per-network gradients have infinite variance
    (heavy tails: the standard errors are not to be trusted; use B >= 8 for estimates).  At B = 2
    a batch-norm layer passes no gradient (its output is +-1 whatever its input; what is measured
    is rounding error).
    Networks where a value overflows keep inf/NaN in ``per_network`` and are counted in
    ``n_diverged``; no warnings are raised.

    Examples
    --------
    >>> from meanfield.architecture import network
    >>> net = network("linear", 10, sigma_w2=1.0, norm="batch", batch_size=8)
    >>> res = measure_gradient_scales(net, 200, 8, 4, rng=0)
    >>> res.factor.shape, float(res.gsc[-1]), res.n_diverged
    ((10,), 1.0, 0)
    >>> print(res.summary())  # doctest: +ELLIPSIS
    10 batch_norm(B=8) linear layers, width 200, batch 8, 4 networks: GSC(L, 0) = ...
    """
    setup = arch_pass.check_arguments(layers, width, batch_size, n_networks, q0, c0, dtype, memory_limit)
    rng = checks.as_rng(rng)
    return estimate(setup, arch_pass.measure_records(setup, rng))
