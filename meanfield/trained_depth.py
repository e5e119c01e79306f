"""Trainable depth, tested by training (Schoenholz et al. 2017, Figs. 5-6).

Schoenholz, Gilmer, Ganguli & Sohl-Dickstein (2017), "Deep information propagation", trained fully
connected tanh networks over a grid of weight variance ``sigma_w2`` and depth ``L`` at
``sigma_b2 = 0.05`` and found that they train only where ``L`` is below about ``6 xi_c``, with
``xi_c = -1 / ln chi_c`` the depth scale of correlations (eq. 9), which diverges on the critical
line ``chi_1 = 1``.  :func:`trainability` repeats the experiment: every grid point is a network
drawn as :class:`meanfield.empirical.NetworkSpec` says, trained by :func:`meanfield.training.train`
for a fixed budget of steps on a held-out split of scikit-learn's digits, and the measured
boundary is set against ``xi_c`` from the theory.  The training knows nothing of the theory; only
this module brings the two together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike

from . import _validate, runner
from ._io import atomic_write

__all__ = ["Trainability", "trainability", "digits", "plot_trainability"]

#: The depth-scale multiple of Schoenholz et al. 2017 (Fig. 6): networks train to about 6 xi_c.
PAPER_CONSTANT = 6.0


def digits(rng: np.random.Generator | int = 0, test_fraction: float = 0.3) -> tuple:
    """scikit-learn's 8x8 digits (1797 images, 10 classes), split and standardised.

    A stratified split (``test_fraction`` held out, drawn from ``rng``); every pixel is shifted and
    scaled by the training set's mean and standard deviation (constant pixels are left at 0), so
    that ``|x|^2 / d_in`` is about 1 and ``q^0 = sigma_w2 |x|^2 / d_in + sigma_b2`` is of order one.

    Returns
    -------
    (X_train, y_train, X_test, y_test)

    Raises
    ------
    ImportError
        Without scikit-learn (``pip install 'meanfield[train]'``).
    """
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as err:
        raise ImportError("the digits data set comes with scikit-learn: pip install 'meanfield[train]'") from err
    test_fraction = _validate.number("test_fraction", test_fraction, low=0.0, high=1.0, low_open=True,
                                     what="a fraction in (0, 1)")
    if test_fraction >= 1.0:
        raise ValueError(f"test_fraction must be a fraction in (0, 1), got {test_fraction!r}")
    data = load_digits()
    seed = int(np.random.default_rng(rng).integers(2**31 - 1))
    X_tr, X_te, y_tr, y_te = train_test_split(data.data, data.target, test_size=test_fraction, random_state=seed,
                                              stratify=data.target)
    mean, sd = X_tr.mean(axis=0), X_tr.std(axis=0)
    sd[sd == 0] = 1.0
    return (X_tr - mean) / sd, y_tr.astype(np.int64), (X_te - mean) / sd, y_te.astype(np.int64)


@dataclass(frozen=True)
class Trainability:
    """Test accuracy over a (depth, sigma_w2) grid, and how it compares with ``6 xi_c``.

    Attributes
    ----------
    activation : str
        Name of phi.
    sigma_w2 : ndarray (n_w,)
        Weight variances (columns); ``sigma_b2`` the bias variance.
    depths : ndarray (n_d,)
        Numbers of hidden layers ``L`` (rows).
    accuracy, train_accuracy : ndarray (n_d, n_w)
        Held-out and training-set accuracy after training (NaN where the run diverged).
    loss : ndarray (n_d, n_w, steps)
        Mini-batch training loss over the steps.
    diverged : ndarray of bool (n_d, n_w)
    chance, threshold : float
        Accuracy of guessing the most common test class, and the accuracy above which a network
        counts as trained.
    xi_c : ndarray (n_w,)
        ``xi_c = -1/ln chi_c`` at each ``sigma_w2`` (Schoenholz et al. 2017, eq. 9; from the theory).
    critical_sigma_w2 : float
        ``sigma_w2`` on the critical line ``chi_1 = 1`` at this ``sigma_b2``.
    boundary : ndarray (n_w,)
        Measured trainable depth per column: the geometric mean of the deepest trained depth and
        the next, untrained, one (NaN when the grid does not bracket it).
    k : float
        Fitted constant of ``boundary = k xi_c``: ``exp(mean(ln(boundary / xi_c)))`` over the
        bracketed columns (NaN if none).
    agreement : float
        Fraction of grid cells where "trained" equals "``L < 6 xi_c``".
    agreement_fitted : float
        The same with ``k xi_c``.
    theory_sigma_w2, theory_xi_c : ndarray
        ``xi_c`` on a fine grid, for drawing the curve.
    settings : dict
        The training settings (width, steps, batch size, learning rate, momentum, dtype, seed).
    """

    activation: str
    sigma_w2: np.ndarray
    sigma_b2: float
    depths: np.ndarray
    accuracy: np.ndarray
    train_accuracy: np.ndarray
    loss: np.ndarray
    diverged: np.ndarray
    chance: float
    threshold: float
    xi_c: np.ndarray
    critical_sigma_w2: float
    boundary: np.ndarray
    k: float
    agreement: float
    agreement_fitted: float
    theory_sigma_w2: np.ndarray
    theory_xi_c: np.ndarray
    settings: dict = field(default_factory=dict)

    @property
    def trained(self) -> np.ndarray:
        """Cells that trained above chance: ``accuracy > threshold`` (diverged cells did not)."""
        return np.nan_to_num(self.accuracy, nan=-1.0) > self.threshold

    def summary(self) -> str:
        """One paragraph: the fitted constant and the agreement with ``6 xi_c``."""
        n = int(np.isfinite(self.boundary).sum())
        head = (f"{self.activation}, sigma_b2 = {self.sigma_b2:g}: trained above chance (test accuracy > "
                f"{self.threshold:.3g}) agrees with depth < 6 xi_c in {100 * self.agreement:.0f}% of "
                f"{self.accuracy.size} cells; ")
        if not math.isfinite(self.k):
            return head + "no column of the grid brackets the boundary, so k in boundary = k xi_c is not measured"
        return head + (f"the measured boundary is k xi_c with k = {self.k:.3g} ({n} of {len(self.sigma_w2)} columns "
                       f"bracketed; Schoenholz et al. 2017: k ~ 6), with which the agreement is "
                       f"{100 * self.agreement_fitted:.0f}%")

    def save(self, path) -> str:
        """Write the grid, the theory and the settings to an ``.npz`` file, completely or not at all."""
        arrays = {name: np.asarray(getattr(self, name)) for name in (
            "sigma_w2", "depths", "accuracy", "train_accuracy", "loss", "diverged", "xi_c", "boundary",
            "theory_sigma_w2", "theory_xi_c", "trained")}
        for name in ("sigma_b2", "chance", "threshold", "critical_sigma_w2", "k", "agreement", "agreement_fitted"):
            arrays[name] = np.array(float(getattr(self, name)))
        arrays["activation"] = np.array(self.activation)
        for key, value in self.settings.items():
            arrays[f"settings_{key}"] = np.array(value)
        atomic_write(path, lambda fh: np.savez(fh, **arrays), prefix=".trainability-")
        return str(path)


def _grid(name, values, integer=False):
    arr = np.atleast_1d(np.asarray(values, dtype=float))
    if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"{name} must be a non-empty list of positive numbers, got {values!r}")
    if np.any(np.diff(arr) <= 0):
        raise ValueError(f"{name} must be strictly increasing, got {arr.tolist()}")
    if integer:
        if np.any(arr != np.round(arr)):
            raise ValueError(f"{name} must be whole numbers of layers, got {arr.tolist()}")
        return arr.astype(np.int64)
    return arr


def train_cell(task: dict) -> tuple:
    """One grid point: draw and train one network; ``(test acc., train acc., loss curve, diverged)``.

    Module-level so that :func:`meanfield.runner.run` can send it to other processes.
    """
    from .empirical import NetworkSpec
    from .training import train

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - comes with scikit-learn
        threadpool_limits = None
    spec = NetworkSpec(task["act"], sigma_w2=task["sigma_w2"], sigma_b2=task["sigma_b2"], width=task["width"],
                       depth=task["depth"], dtype=task["dtype"])
    X, y, Xt, yt = task["data"]
    args = dict(steps=task["steps"], lr=task["lr"], momentum=task["momentum"], batch_size=task["batch_size"],
                X_test=Xt, y_test=yt, n_outputs=task["n_outputs"])
    rng = np.random.default_rng(task["seed"])
    if threadpool_limits is None:
        run = train(spec, X, y, rng, **args)
    else:
        with threadpool_limits(1):  # small products: one BLAS thread per run, runs in parallel
            run = train(spec, X, y, rng, **args)
    return run.test_accuracy, run.train_accuracy, run.loss, run.diverged


def _theory(phi, sw, sigma_b2):
    """``xi_c`` at the grid's sigma_w2 and on a fine grid (with the critical point), and the critical sigma_w2.

    One call of :func:`meanfield.phase_diagram` (compiled) on the union of both grids; the critical
    point from :func:`meanfield.critical_sigma_w2`.
    """
    from .diagram import phase_diagram
    from .phase import critical_sigma_w2

    crit = float(critical_sigma_w2(phi, sigma_b2))
    fine = np.linspace(sw[0], sw[-1], 300)
    if sw[0] < crit < sw[-1]:
        fine = np.append(fine, crit)
    every = np.unique(np.concatenate([fine, sw]))
    with np.errstate(divide="ignore", invalid="ignore"):
        xi = np.asarray(phase_diagram(phi, every, [sigma_b2]).xi_c[0], dtype=float)
    return xi[np.searchsorted(every, sw)], crit, every, xi


def _boundary(depths, trained):
    """Per column: sqrt(deepest trained depth x next untrained depth), NaN if not bracketed."""
    out = np.full(trained.shape[1], np.nan)
    for j in range(trained.shape[1]):
        ok = np.flatnonzero(trained[:, j])
        if ok.size == 0 or ok[-1] == len(depths) - 1:
            continue
        out[j] = math.sqrt(depths[ok[-1]] * depths[ok[-1] + 1])
    return out


def trainability(act="tanh", sigma_w2: ArrayLike | None = None, depths: ArrayLike | None = None, *,
                 sigma_b2: float = 0.05, width: int = 100, steps: int = 300, batch_size: int = 64,
                 lr: float = 0.003, momentum: float = 0.9, dtype: str = "float32", data: tuple | None = None,
                 threshold: float | None = None, rng: np.random.Generator | int = 0, client=None,
                 workers: int | None = None, progress=None) -> Trainability:
    """Train a network at every (depth, sigma_w2) and compare where it trains with ``6 xi_c``.

    Every cell is one network drawn from ``NetworkSpec(act, sigma_w2, sigma_b2, width, depth)``
    plus a linear readout, trained with :func:`meanfield.training.train` for ``steps`` SGD steps
    (Schoenholz et al. 2017, sec. 6 and Figs. 5-6, who found the trainable region bounded by
    ``L ~ 6 xi_c``).  The cells run in parallel through :func:`meanfield.runner.run`, each from its
    own seed, so the result does not depend on where they ran.

    Parameters
    ----------
    act : activation, default "tanh"
        Anything :func:`meanfield.activation` accepts (a name or expression for parallel runs).
    sigma_w2 : array, optional
        Weight variances, increasing (default: 12 values from 1 to 4).
    depths : array of int, optional
        Numbers of hidden layers, increasing (default: 10 values from 4 to 100, geometric).
    sigma_b2 : float, default 0.05
        Bias variance (0.05 as in the paper).
    width, steps, batch_size, lr, momentum, dtype
        The network width and the training budget (:func:`meanfield.training.train`).
    data : (X_train, y_train, X_test, y_test), optional
        Default: :func:`digits` (needs scikit-learn).
    threshold : float, optional
        Test accuracy above which a cell counts as trained (default: twice chance).
    rng : numpy.random.Generator or int
        Source of the split and of every cell's seed.
    client, workers, progress
        As in :func:`meanfield.runner.run` (a Dask client or address; local processes; a
        ``progress(done, total)`` callback).

    Returns
    -------
    Trainability

    Raises
    ------
    ImportError
        Without scikit-learn and without ``data``: ``pip install 'meanfield[train]'``.
    ValueError
        Bad grids or settings (checked before any training).
    """
    from .activations import activation
    from .empirical import NetworkSpec

    sw = _grid("sigma_w2", np.linspace(1.0, 4.0, 12) if sigma_w2 is None else sigma_w2)
    ds = _grid("depths", np.unique(np.geomspace(4, 100, 10).round()) if depths is None else depths, integer=True)
    phi = activation(act)
    # the first and last cells' specs check every setting before anything runs
    for s, d in ((sw[0], ds[0]), (sw[-1], ds[-1])):
        NetworkSpec(phi, sigma_w2=s, sigma_b2=sigma_b2, width=width, depth=int(d), dtype=dtype)
    sigma_b2 = float(sigma_b2)
    steps = _validate.positive_int("steps", steps)
    lr = _validate.number("lr", lr, low=0.0, low_open=True, what="a learning rate > 0")
    momentum = _validate.number("momentum", momentum, low=0.0, high=np.nextafter(1.0, 0.0), what="in [0, 1)")
    batch_size = _validate.positive_int("batch_size", batch_size)
    gen = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    if data is None:
        data = digits(gen)
    X, y, Xt, yt = data
    from .training import train

    n_outputs = int(max(np.max(y), np.max(yt))) + 1
    # train()'s checks of the data and settings (a softmax regression, no step), before the grid starts
    train(None, X, y, 0, steps=0, lr=lr, momentum=momentum, batch_size=batch_size, X_test=Xt, y_test=yt,
          n_outputs=n_outputs)
    counts = np.bincount(np.asarray(yt, dtype=np.int64), minlength=n_outputs)
    chance = float(counts.max() / counts.sum())
    threshold = 2 * chance if threshold is None else _validate.number("threshold", threshold, low=0.0, high=1.0)
    seeds = runner.task_seeds(gen, len(ds) * len(sw))
    act_arg = act if isinstance(act, str) else phi
    cells = [(i, j) for i in range(len(ds)) for j in range(len(sw))]
    tasks = [dict(act=act_arg, sigma_w2=float(sw[j]), sigma_b2=sigma_b2, width=width, depth=int(ds[i]),
                  dtype=dtype, steps=steps, lr=lr, momentum=momentum, batch_size=batch_size, n_outputs=n_outputs,
                  data=(X, y, Xt, yt), seed=seeds[n]) for n, (i, j) in enumerate(cells)]
    order = sorted(range(len(tasks)), key=lambda n: -tasks[n]["depth"])  # longest first: better packing
    results = runner.run(train_cell, [tasks[n] for n in order], client=client, workers=workers, progress=progress)
    acc = np.full((len(ds), len(sw)), np.nan)
    train_acc = np.full_like(acc, np.nan)
    loss = np.full((len(ds), len(sw), steps), np.nan)
    diverged = np.zeros(acc.shape, dtype=bool)
    for n, res in zip(order, results, strict=True):
        i, j = cells[n]
        acc[i, j], train_acc[i, j], loss[i, j], diverged[i, j] = res
    xic, crit, fine, fine_xi = _theory(phi, sw, sigma_b2)
    trained = np.nan_to_num(acc, nan=-1.0) > threshold
    boundary = _boundary(ds, trained)
    use = np.isfinite(boundary) & np.isfinite(xic) & (xic > 0)
    k = float(np.exp(np.mean(np.log(boundary[use] / xic[use])))) if use.any() else math.nan
    below = ds[:, None] < PAPER_CONSTANT * xic[None, :]
    agreement = float(np.mean(trained == below))
    fitted = float(np.mean(trained == (ds[:, None] < k * xic[None, :]))) if math.isfinite(k) else math.nan
    settings = dict(width=int(width), steps=steps, batch_size=batch_size, lr=lr, momentum=momentum,
                    dtype=str(np.dtype(dtype)), n_train=int(len(y)), n_test=int(len(yt)),
                    seed=int(rng) if isinstance(rng, (int, np.integer)) else -1)
    return Trainability(activation=phi.name, sigma_w2=sw, sigma_b2=sigma_b2, depths=ds, accuracy=acc,
                        train_accuracy=train_acc, loss=loss, diverged=diverged, chance=chance, threshold=threshold,
                        xi_c=xic, critical_sigma_w2=crit, boundary=boundary, k=k, agreement=agreement,
                        agreement_fitted=fitted, theory_sigma_w2=fine, theory_xi_c=fine_xi, settings=settings)


def plot_trainability(result: Trainability, ax=None, *, constant: float = PAPER_CONSTANT, fitted: bool = True):
    """Heat map of test accuracy over (sigma_w2, depth) with ``constant * xi_c`` and the critical line.

    Like Schoenholz et al. 2017, Fig. 5: the curve ``L = 6 xi_c`` from the theory, the critical
    line ``chi_1 = 1`` (vertical, dotted), the measured boundary per column (points) and, if
    ``fitted``, the fitted ``k xi_c`` (dashed).  Draws what it is given; computes nothing.

    Returns
    -------
    matplotlib.axes.Axes
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 5.6), layout="constrained")
    sw, ds = result.sigma_w2, result.depths
    acc = np.ma.masked_invalid(result.accuracy)
    cmap = plt.get_cmap("viridis").with_extremes(bad="0.6")
    mesh = ax.pcolormesh(_edges(sw), _edges(ds, log=True), acc, cmap=cmap, vmin=result.chance, vmax=1.0,
                         shading="flat")
    ax.figure.colorbar(mesh, ax=ax, label="test accuracy")
    ax.set_yscale("log")
    top = _edges(ds, log=True)[-1]
    ax.plot(result.theory_sigma_w2, np.minimum(constant * result.theory_xi_c, 10 * top), color="white", lw=2,
            label=f"{constant:g} $\\xi_c$ (theory)")
    if fitted and math.isfinite(result.k):
        ax.plot(result.theory_sigma_w2, np.minimum(result.k * result.theory_xi_c, 10 * top), color="white", lw=1.5,
                ls="--", label=f"{result.k:.2g} $\\xi_c$ (fitted)")
    ok = np.isfinite(result.boundary)
    if ok.any():
        ax.plot(sw[ok], result.boundary[ok], "o", color="tab:red", ms=4, label="measured boundary")
    ax.axvline(result.critical_sigma_w2, color="white", ls=":", lw=1.2, label="critical line $\\chi_1 = 1$")
    ax.set_ylim(_edges(ds, log=True)[0], top)
    ax.set_xlim(_edges(sw)[0], _edges(sw)[-1])
    ax.set_xlabel("$\\sigma_w^2$")
    ax.set_ylabel("depth $L$")
    ax.set_title(f"{result.activation}, $\\sigma_b^2$ = {result.sigma_b2:g}: "
                 f"{result.settings.get('steps', '?')} SGD steps, width {result.settings.get('width', '?')}")
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_yticks(ds)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, fontsize="small", facecolor="0.3",
              labelcolor="white", framealpha=1.0)
    return ax


def _edges(v, log=False):
    v = np.log(v) if log else np.asarray(v, dtype=float)
    if len(v) == 1:
        e = np.array([v[0] - 0.5, v[0] + 0.5])
    else:
        mid = (v[1:] + v[:-1]) / 2
        e = np.concatenate([[2 * v[0] - mid[0]], mid, [2 * v[-1] - mid[-1]]])
    return np.exp(e) if log else e
