"""Training sampled networks: does a network the theory calls trainable actually train? Test it.

A classifier here is a random network drawn from a :class:`meanfield.empirical.NetworkSpec`,
initialised exactly as the spec says (so the mean-field theory describes it at step 0), plus a
linear readout, trained by mini-batch stochastic gradient descent on the softmax cross-entropy
(Schoenholz et al. 2017, "Deep information propagation", sec. 6).  Like
:mod:`meanfield.empirical`, this module is independent of the theory: it uses only
:mod:`meanfield.activations` (phi, phi') and the sampled-network streams.

The model
---------
For a spec of depth ``L`` (layers ``h^0 .. h^{L-1}`` as in :mod:`meanfield.empirical`) and
``C`` outputs, the logits are

    z = W^L phi(h^{L-1}) + b^L,     W^L_ij ~ N(0, sigma_w2^out / N_{L-1}),  b^L_i ~ N(0, sigma_b2^out)

with the readout variances defaulting to the spec's ``sigma_w2`` and ``sigma_b2`` (the readout is
one more layer of the same distribution).  With no spec (depth zero) ``z = W x + b``: softmax
(multinomial logistic) regression.  The loss of a batch is the mean cross-entropy
``-(1/B) sum_a log softmax(z_a)_{y_a}``; a step updates every parameter ``w`` as
``u <- mu u + dLoss/dw``, ``w <- w - lr u`` (plain SGD when ``mu = momentum = 0``).

Hidden weights come from the same per-layer streams as :func:`meanfield.empirical.sample_network`
(the same ``rng`` state gives the same ``W^0 .. W^{L-1}``); the readout and the mini-batch order
come from two further streams of the same seed, so a run is reproducible from its seed alone.
A run whose loss or parameters become NaN or infinite is stopped and reported as diverged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from . import _empirical_checks as checks
from . import _network_pass as net_pass
from . import _training_pass as engine
from . import _validate
from .empirical import NetworkSpec

__all__ = ["Classifier", "TrainingRun", "classifier", "train"]


class Classifier:
    """A sampled network with a linear readout; its parameters are arrays it owns.

    Made by :func:`classifier` (at initialisation) or returned by :func:`train` (trained).

    Parameters
    ----------
    spec : NetworkSpec or None
        The distribution the hidden layers were drawn from (None: no hidden layer).
    d_in : int
        Input dimension.
    Ws, bs : lists of arrays
        Parameters ``0..L`` (the readout last), ``Ws[l] = (W^l)^T`` of shape ``(N_{l-1}, N_l)`` and
        ``bs[l] = b^l``, all of one dtype; the classifier owns them (they are updated in place by
        training).

    Attributes
    ----------
    spec : NetworkSpec or None
        The distribution of the hidden layers (None: no hidden layer, softmax regression).
    d_in, n_outputs : int
        Input dimension and number of logits ``C``.
    dtype : numpy.dtype
        Precision of the parameters and of all arithmetic.
    """

    def __init__(self, spec: NetworkSpec | None, d_in: int, Ws: list, bs: list):
        self.spec, self.d_in = spec, d_in
        self.n_outputs = Ws[-1].shape[1]
        self.dtype = Ws[0].dtype
        self._Ws, self._bs = Ws, bs
        self._nl = None if spec is None else net_pass.Nonlinearity(spec.act)

    @property
    def depth(self) -> int:
        """Number of hidden layers ``L`` (the readout is parameter index ``L``)."""
        return len(self._Ws) - 1

    @property
    def weights(self) -> list[np.ndarray]:
        """``W^0 .. W^L`` (read-only views), ``W^l`` of shape ``(N_l, N_{l-1})``, the readout last."""
        return [_frozen(W.T) for W in self._Ws]

    @property
    def biases(self) -> list[np.ndarray]:
        """``b^0 .. b^L`` (read-only views), the readout's last."""
        return [_frozen(b) for b in self._bs]

    def copy(self) -> Classifier:
        """An independent copy (training a copy leaves this one unchanged)."""
        return Classifier(self.spec, self.d_in, [W.copy() for W in self._Ws], [b.copy() for b in self._bs])

    def __repr__(self):
        return f"Classifier({self.spec!r}, d_in={self.d_in}, n_outputs={self.n_outputs})"

    def logits(self, X: ArrayLike) -> np.ndarray:
        """The logits ``z`` (n, C) of the inputs ``X`` (n, d_in)."""
        with np.errstate(over="ignore", invalid="ignore"):
            return engine.logits(self._nl, self._Ws, self._bs, self._inputs(X, "X"))

    def predict(self, X: ArrayLike) -> np.ndarray:
        """Predicted labels ``argmax_k z_k`` (n,)."""
        return np.argmax(self.logits(X), axis=1)

    def loss_and_gradients(self, X: ArrayLike, y: ArrayLike) -> tuple:
        """Mean softmax cross-entropy on ``(X, y)`` and its gradients, by backpropagation.

        Returns
        -------
        (loss, grad_weights, grad_biases)
            ``loss = -(1/n) sum_a log softmax(z_a)_{y_a}`` (a float), and lists shaped like
            :attr:`weights` and :attr:`biases` with ``dLoss/dW^l`` and ``dLoss/db^l``.
        """
        X = self._inputs(X, "X")
        y = _labels(y, X.shape[0], self.n_outputs, "y")
        buf = engine.Buffers(self._Ws, X.shape[0], self.dtype)
        with np.errstate(over="ignore", invalid="ignore"):
            z = engine.forward(self._nl, self._Ws, self._bs, X, buf)
            loss, _ = engine.loss_and_delta(z, y, 1.0)
            engine.backward(self._Ws, buf, z)
        return loss, [g.T.copy() for g in buf.gW], [g.copy() for g in buf.gb]

    def _inputs(self, X, name):
        X = _validate.inputs(name, X)
        if X.shape[1] != self.d_in:
            raise ValueError(f"{name} has inputs of dimension {X.shape[1]}; this classifier takes {self.d_in}")
        return np.ascontiguousarray(X, dtype=self.dtype)


def _frozen(a):
    v = a.view()
    v.flags.writeable = False
    return v


def _labels(y, n, n_outputs, name) -> np.ndarray:
    """Class labels as an int array (n,) in ``0..n_outputs-1``, or ValueError naming ``name``."""
    arr = np.asarray(y)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{name} must be one label per input, shape ({n},), got shape {arr.shape}")
    if arr.dtype.kind == "b" or arr.dtype.kind not in "iuf":
        raise ValueError(f"{name} must hold integer class labels 0, 1, ..., got dtype {arr.dtype}")
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            raise ValueError(f"{name} must hold integer class labels, got {name}[{np.flatnonzero(bad)[0]}] = "
                             f"{arr[bad][0]!r}")
    arr = arr.astype(np.int64)
    if arr.min() < 0:
        raise ValueError(f"{name} must hold class labels >= 0, got {arr.min()}")
    if arr.max() >= n_outputs:
        raise ValueError(f"{name} has label {arr.max()}, i.e. at least {arr.max() + 1} classes, more than the "
                         f"{n_outputs} outputs of the classifier: raise n_outputs")
    return arr


def _dtype(spec, dtype):
    if dtype is None:
        return np.dtype(np.float64) if spec is None else spec.dtype
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float64), np.dtype(np.float32)):
        raise ValueError(f"dtype must be float64 or float32, got {dtype!r}")
    if spec is not None and dt != spec.dtype:
        raise ValueError(f"dtype={dt.name} differs from the spec's dtype {spec.dtype.name}; set it in the NetworkSpec")
    return dt


def _check_spec(network):
    if network is None:
        return None
    if not isinstance(network, NetworkSpec):
        raise TypeError(f"network must be a NetworkSpec, a Classifier or None (no hidden layer), "
                        f"got {type(network).__name__}")
    if network.residual or network.rho != 1.0:
        raise ValueError("training covers plain fully connected networks: residual=True and dropout (rho < 1) "
                         "are not supported")
    net_pass.Nonlinearity(network.act).check_derivative()  # phi' is needed; a clear error if it is not
    return network


def _draw(spec, d_in, n_outputs, base, sigma_w2, sigma_b2, dtype):
    """Hidden layers from the per-layer streams of ``base``, the readout from its own stream."""
    Ws, bs = [], []
    if spec is not None:
        params = net_pass.LayerParams(spec, d_in, base, store=False)
        for l in range(spec.depth):
            Z, s, b = params.get(l, 0)
            W = np.array(Z, dtype=dtype)  # a copy: LayerParams may reuse its buffer
            W *= dtype.type(s)
            Ws.append(W)
            bs.append(np.array(b, dtype=dtype))
    n_in = d_in if spec is None else spec.widths[-1]
    gen, _ = engine.streams(base, 0 if spec is None else spec.depth)
    W = gen.standard_normal((n_in, n_outputs), dtype=dtype)
    W *= dtype.type(np.sqrt(sigma_w2 / n_in))
    b = gen.standard_normal(n_outputs, dtype=dtype) * dtype.type(np.sqrt(sigma_b2))
    return Ws + [W], bs + [b]


def _readout_variances(spec, readout_sigma_w2, readout_sigma_b2):
    sw = (1.0 if spec is None else spec.sigma_w2) if readout_sigma_w2 is None else readout_sigma_w2
    sb = (0.0 if spec is None else spec.sigma_b2) if readout_sigma_b2 is None else readout_sigma_b2
    return (checks.variance(sw, "readout_sigma_w2", positive=True),
            checks.variance(sb, "readout_sigma_b2", positive=False))


def classifier(network: NetworkSpec | None, d_in: int, n_outputs: int, rng: np.random.Generator | int | None, *,
               readout_sigma_w2: float | None = None, readout_sigma_b2: float | None = None,
               dtype: str | None = None) -> Classifier:
    """Draw a classifier: the hidden layers from ``network``, plus a linear readout to ``n_outputs`` logits.

    Parameters
    ----------
    network : NetworkSpec or None
        Hidden layers ``h^0 .. h^{L-1}`` (plain fully connected; no residual blocks or dropout).
        None: no hidden layer, the logits are ``z = W x + b`` (softmax regression).
    d_in : int
        Input dimension.
    n_outputs : int
        Number of logits ``C`` (at least the number of classes).
    rng : numpy.random.Generator or int
        Source of the parameters (one draw: the seed of every stream of the run).
    readout_sigma_w2, readout_sigma_b2 : float, optional
        Readout variances, ``W^L_ij ~ N(0, readout_sigma_w2 / N_{L-1})``, ``b^L_i ~ N(0, readout_sigma_b2)``
        (default: the spec's ``sigma_w2`` and ``sigma_b2``; without a spec 1 and 0).
    dtype : {"float64", "float32"}, optional
        The precision (default: the spec's; float64 without a spec).

    Returns
    -------
    Classifier
    """
    spec = _check_spec(network)
    d_in = _validate.positive_int("d_in", d_in)
    n_outputs = _validate.positive_int("n_outputs", n_outputs)
    dt = _dtype(spec, dtype)
    sw, sb = _readout_variances(spec, readout_sigma_w2, readout_sigma_b2)
    base = net_pass.new_base(checks.as_rng(rng))
    Ws, bs = _draw(spec, d_in, n_outputs, base, sw, sb, dt)
    return Classifier(spec, d_in, Ws, bs)


@dataclass(frozen=True)
class TrainingRun:
    """One training run (Schoenholz et al. 2017, sec. 6: does the network train at all?).

    Attributes
    ----------
    loss, accuracy : ndarray (steps,)
        Mini-batch cross-entropy and accuracy at each step, before its update (NaN from the step
        at which the run diverged on).
    train_accuracy : float
        Accuracy on the whole training set after the last step (NaN if diverged).
    test_accuracy, test_loss : float
        On the held-out set (NaN without one, or if diverged).
    diverged : bool
        Whether the loss or a parameter became NaN or infinite (training stopped there).
    diverged_at : int or None
        The step at which it was seen.
    classifier : Classifier
        The trained classifier (as it was when training stopped).
    """

    loss: np.ndarray
    accuracy: np.ndarray
    train_accuracy: float
    test_accuracy: float
    test_loss: float
    diverged: bool
    diverged_at: int | None
    classifier: Classifier


def train(network: NetworkSpec | Classifier | None, X: ArrayLike, y: ArrayLike,
          rng: np.random.Generator | int | None, *, steps: int, lr: float, batch_size: int = 128,
          momentum: float = 0.0, X_test: ArrayLike | None = None, y_test: ArrayLike | None = None,
          n_outputs: int | None = None, readout_sigma_w2: float | None = None,
          readout_sigma_b2: float | None = None, dtype: str | None = None) -> TrainingRun:
    """Train a classifier by mini-batch SGD on the softmax cross-entropy.

    Every argument is checked before any training.

    Parameters
    ----------
    network : NetworkSpec, Classifier or None
        A spec draws a fresh classifier from ``rng`` (see :func:`classifier`); a classifier is
        trained as a copy (``rng`` then only orders the mini-batches); None: softmax regression.
    X : array (n, d_in)
        Training inputs (finite).
    y : array (n,)
        Integer class labels ``0 .. C-1``.
    rng : numpy.random.Generator or int
        Source of the parameters and the mini-batch order; the same seed gives the same run.
    steps : int
        Number of SGD steps (0: evaluate at initialisation).
    lr : float
        Learning rate, > 0.
    batch_size : int
        Inputs per step, at most ``n``; batches are drawn without replacement, epoch by epoch.
    momentum : float in [0, 1)
        Heavy-ball momentum ``mu``: ``u <- mu u + g``, ``w <- w - lr u``.
    X_test, y_test : arrays, optional
        Held-out data for ``test_accuracy`` and ``test_loss``.
    n_outputs : int, optional
        Number of logits (default: ``max(y) + 1``, or the classifier's).
    readout_sigma_w2, readout_sigma_b2, dtype
        As in :func:`classifier` (only with a spec or None).

    Returns
    -------
    TrainingRun

    Raises
    ------
    ValueError
        Labels that are not integers or not in ``0 .. n_outputs-1`` (more classes than outputs),
        inputs with NaN or infinity, ``lr <= 0``, momentum outside [0, 1), ``batch_size > n``,
        mismatched shapes.
    """
    given = network if isinstance(network, Classifier) else None
    spec = given.spec if given is not None else _check_spec(network)
    X = _validate.inputs("X", X)
    d_in = X.shape[1]
    if given is not None:
        if any(v is not None for v in (readout_sigma_w2, readout_sigma_b2, dtype)):
            raise ValueError("readout_sigma_w2, readout_sigma_b2 and dtype describe a new classifier; "
                             "a given Classifier already has them")
        if d_in != given.d_in:
            raise ValueError(f"X has inputs of dimension {d_in}; the classifier takes {given.d_in}")
        if n_outputs is not None and _validate.positive_int("n_outputs", n_outputs) != given.n_outputs:
            raise ValueError(f"n_outputs = {n_outputs} differs from the classifier's {given.n_outputs}")
        n_out, dt = given.n_outputs, given.dtype
    else:
        dt = _dtype(spec, dtype)
        y_arr = np.asarray(y)
        guess = (int(np.max(y_arr)) + 1 if y_arr.size and y_arr.dtype.kind in "iu" else 1)
        n_out = guess if n_outputs is None else _validate.positive_int("n_outputs", n_outputs)
    y = _labels(y, X.shape[0], n_out, "y")
    steps = _nonnegative_int("steps", steps)
    lr = _validate.number("lr", lr, low=0.0, low_open=True, what="a learning rate > 0")
    momentum = _validate.number("momentum", momentum, low=0.0, high=np.nextafter(1.0, 0.0), what="in [0, 1)")
    batch_size = _validate.positive_int("batch_size", batch_size)
    if batch_size > X.shape[0]:
        raise ValueError(f"batch_size = {batch_size} is more than the {X.shape[0]} training inputs")
    test = None
    if (X_test is None) != (y_test is None):
        raise ValueError("give both X_test and y_test, or neither")
    if X_test is not None:
        Xt = _validate.inputs("X_test", X_test)
        if Xt.shape[1] != d_in:
            raise ValueError(f"X_test has inputs of dimension {Xt.shape[1]}, X of {d_in}")
        test = (Xt.astype(dt), _labels(y_test, Xt.shape[0], n_out, "y_test"))
    rng = checks.as_rng(rng)
    if given is not None:
        model = given.copy()
        base = net_pass.new_base(rng)
    else:
        sw, sb = _readout_variances(spec, readout_sigma_w2, readout_sigma_b2)
        base = net_pass.new_base(rng)
        model = Classifier(spec, d_in, *_draw(spec, d_in, n_out, base, sw, sb, dt))
    _, batches = engine.streams(base, model.depth)
    X = np.ascontiguousarray(X, dtype=dt)
    rec = engine.run(model._nl, model._Ws, model._bs, X, y, batch_size, steps, lr, momentum, batches)
    diverged = rec.diverged_at is not None
    nan = float("nan")
    train_acc = nan if diverged else _accuracy(model, X, y)
    test_acc, test_loss = (nan, nan) if diverged or test is None else (_accuracy(model, *test), _loss(model, *test))
    return TrainingRun(loss=rec.loss, accuracy=rec.accuracy, train_accuracy=train_acc, test_accuracy=test_acc,
                       test_loss=test_loss, diverged=diverged, diverged_at=rec.diverged_at, classifier=model)


def _nonnegative_int(name, value):
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)) and value >= 0:
        return int(value)
    raise ValueError(f"{name} must be a non-negative integer, got {value!r}")


def _accuracy(model, X, y):
    return float(np.mean(np.argmax(model.logits(X), axis=1) == y))


def _loss(model, X, y):
    with np.errstate(over="ignore", invalid="ignore"):
        z = model.logits(X).astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(y)), y]))
