"""Gaussian-process prediction with the NNGP and NTK kernels, scikit-learn style.

:class:`NNGPRegressor` is the posterior of a Gaussian process whose prior covariance is the NNGP
kernel of :func:`meanfield.kernels.nngp` (Lee et al. 2018, Sec. 2.2), or the mean predictor of an
infinitely wide network trained by gradient flow with the NTK of :func:`meanfield.kernels.ntk`
(Jacot et al. 2018; Lee et al. 2019).  :class:`NNGPClassifier` does classification as regression
on one-hot targets (Lee et al. 2018, Sec. 2.4).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from . import _cg as cg
from . import _validate
from ._cg import SolveInfo
from .activations import ActivationLike, activation
from .expectations import expectation
from .kernels import KernelWarning, nngp, ntk
from .layers import Dense

__all__ = ["NNGPRegressor", "NNGPClassifier", "predict_from_kernel", "SolveInfo"]

_KERNELS = {"nngp": nngp, "ntk": ntk}


def _cholesky(A, jitter):
    """Cholesky of ``A + j I``, with ``j`` grown from ``jitter`` (x10) until the factor is sound.

    ``j`` grows while the factorisation fails or is numerically singular (reciprocal condition
    estimate ``(min L_ii / max L_ii)^2 < n eps``).

    Returns (L, j).
    """
    n = A.shape[0]
    scale = float(np.mean(np.diag(A)))
    if not np.isfinite(scale) or scale <= 0:
        scale = 1.0
    j = float(jitter)
    eye = np.eye(n)
    for _ in range(40):
        try:
            L = np.linalg.cholesky(A + j * eye)
            d = np.diag(L)
            if np.all(np.isfinite(L)) and (d.min() / d.max()) ** 2 >= n * np.finfo(float).eps:
                return L, j
        except np.linalg.LinAlgError:
            pass
        j = max(10.0 * j, 1e-12 * scale)
    raise np.linalg.LinAlgError("kernel matrix is not positive definite even with a large diagonal regulariser")


def _targets(y, n):
    """Regression targets as a finite float array (n,) or (n, n_targets), or ValueError naming y."""
    arr = np.asarray(y)
    kind = arr.dtype.kind
    try:
        if kind not in "biufO":
            raise TypeError
        arr = arr.astype(float)
    except (TypeError, ValueError):
        what = {"U": "strings", "S": "bytes", "c": "complex numbers"}.get(kind, f"{arr.ravel()[:3]!r}")
        hint = "; for class labels use NNGPClassifier" if kind in "USO" else ""
        raise ValueError(f"y must be real numbers (regression targets), got {what}{hint}") from None
    if arr.ndim not in (1, 2) or arr.shape[0] != n:
        raise ValueError(f"y must have shape ({n},) or ({n}, n_targets), one row per row of X, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("y must be finite")
    return arr


def _solver_options(solver, tol, max_iter, preconditioner, n):
    """Checked (solver, tol, max_iter, preconditioner); ``max_iter`` None becomes ``n``."""
    if solver not in ("cholesky", "cg"):
        raise ValueError(f"solver must be 'cholesky' or 'cg', got {solver!r}")
    tol = _validate.number("tol", tol, low=0.0, high=1.0, low_open=True, what="a relative residual in (0, 1]")
    max_iter = max(n, 1) if max_iter is None else _validate.positive_int("max_iter", max_iter)
    if preconditioner not in cg.PRECONDITIONERS:
        raise ValueError(f"preconditioner must be one of {cg.PRECONDITIONERS}, got {preconditioner!r}")
    return solver, tol, max_iter, preconditioner


def _cg_solve(kern, B, shift, tol, max_iter, preconditioner):
    """``(K + shift I)^{-1} B`` by preconditioned CG, or np.linalg.LinAlgError if it does not converge."""
    M = cg.preconditioner(kern, shift, preconditioner)
    X, it, res = cg.cg(kern, B, shift, tol, max_iter, M)
    if not res <= tol:
        raise np.linalg.LinAlgError(
            f"conjugate gradients did not converge: relative residual {res:.3g} > tol = {tol:g} after {it} "
            f"iterations (max_iter = {max_iter}). K + noise I is ill-conditioned: give a larger noise, raise "
            "max_iter, or use solver='cholesky' if the kernel fits in memory")
    return X, SolveInfo("cg", it, res, preconditioner)


def predict_from_kernel(K_train, y: ArrayLike, K_test_train, *, noise: float = 0.0, solver: str = "cg",
                        tol: float = 1e-10, max_iter: int | None = None,
                        preconditioner: str | None = "pivoted-cholesky", return_info: bool = False):
    """GP posterior mean from precomputed kernels, which may be larger than memory.

    ``mean = K(X*, X) (K(X, X) + noise I)^{-1} y`` (Rasmussen & Williams 2006, eq. 2.25; Lee et
    al. 2018, eq. 2).  With ``solver="cg"`` the system is solved by preconditioned conjugate
    gradients (Hestenes & Stiefel 1952), which needs only products of ``K(X, X)`` with blocks of
    vectors, its diagonal and a few of its rows: a kernel stored as a dask array or in a zarr store
    (as written by ``meanfield kernel ... --out K.zarr``) is read block by block and never held
    whole, and its products run on the Dask cluster of the active ``dask.distributed.Client``.
    A dask array is used as given: persist it (``client.persist(K)``) or store it in zarr first,
    or every iteration computes it again.
    The iteration stops when every column's relative residual ``||y - A alpha|| / ||y||`` is below
    ``tol`` (checked on the true residual); if it is not reached in ``max_iter`` iterations, an
    error says so (no unconverged answer is returned).

    Parameters
    ----------
    K_train : array (n, n), dask array or str
        ``K(X, X)``: a numpy array, a dask array, or the path of a zarr store holding it (an array
        at the root, or a group with one array named "K").
    y : array (n,) or (n, n_targets)
    K_test_train : array (m, n), dask array or str
        ``K(X*, X)``, in any of the same forms.
    noise : float
        Observation-noise variance added to the diagonal (> 0 keeps CG well-conditioned).
    solver : {"cg", "cholesky"}
        "cholesky" reads the kernel into memory and factorises it (the reference, for kernels
        that fit).
    tol : float
        Relative residual at which CG stops (default 1e-10).
    max_iter : int, optional
        CG iterations allowed (default n).
    preconditioner : {"pivoted-cholesky", "block-jacobi", "jacobi", None}
        "pivoted-cholesky": rank-100 pivoted Cholesky of ``K`` plus the diagonal it leaves out
        (Gardner et al. 2018), fastest on NNGP kernels of real data, whose spectra decay fast;
        "block-jacobi": the diagonal blocks (500 x 500); "jacobi": the diagonal.
    return_info : bool
        Also return a :class:`SolveInfo` (iterations, final residual).

    Returns
    -------
    mean : ndarray (m,) or (m, n_targets), or (mean, info)

    Raises
    ------
    ValueError, TypeError
        Shapes that do not match, non-finite values, unknown options.
    numpy.linalg.LinAlgError
        CG did not converge, or the kernel is not positive definite.
    """
    kern = cg.as_kernel("K_train", K_train)
    n = kern.shape[0]
    if kern.shape != (n, n):
        raise ValueError(f"K_train must be square (n, n), got shape {kern.shape}")
    y = _targets(y, n)
    test = cg.as_kernel("K_test_train", K_test_train, shape=(None, n))
    noise = _validate.number("noise", noise, low=0.0, what="a variance >= 0")
    solver, tol, max_iter, preconditioner = _solver_options(solver, tol, max_iter, preconditioner, n)
    if not isinstance(return_info, (bool, np.bool_)):
        raise ValueError(f"return_info must be True or False, got {return_info!r}")
    B = y.reshape(n, -1)
    if solver == "cholesky":
        from scipy.linalg import cho_solve

        A = kern.data if kern.in_memory else np.asarray(kern.data.compute(), dtype=float)
        L, j = _cholesky(A + noise * np.eye(n), 0.0)
        if j > 0:
            warnings.warn(f"K_train + noise I is numerically singular; added {j:.3g} to its diagonal. Remedy: a "
                          "positive noise", KernelWarning, stacklevel=2)
        alpha = cho_solve((L, True), B)
        info = SolveInfo("cholesky", 0, float(np.max(np.linalg.norm(B - A @ alpha - noise * alpha, axis=0)
                                                     / np.maximum(np.linalg.norm(B, axis=0), 1e-300))))
    else:
        alpha, info = _cg_solve(kern, B, noise, tol, max_iter, preconditioner)
    mean = test.dot(alpha)
    mean = mean.reshape(-1) if y.ndim == 1 else mean
    return (mean, info) if return_info else mean


class NNGPRegressor:
    """Gaussian-process regression with the NNGP (or NTK) kernel, scikit-learn style.

    The posterior of a GP with prior covariance ``K`` and observation noise variance ``noise``
    (Lee et al. 2018, eq. 2; Rasmussen & Williams 2006, eqs. 2.25-2.26):

        mean(x*) = K(x*, X) (K(X, X) + noise I)^{-1} y
        cov(x*)  = K(x*, x*) - K(x*, X) (K(X, X) + noise I)^{-1} K(X, x*)

    With ``kernel="ntk"`` the mean is that of an infinitely wide network trained to convergence by
    gradient flow on the squared loss (Jacot et al. 2018; Lee et al. 2019, eq. 16, initial output
    averaged out); its variance is not the GP formula, so only the mean is offered.

    Singular kernels: deep networks in the ordered phase map all inputs towards one point, so
    ``K(X, X)`` approaches a constant matrix and becomes numerically singular.  Then the Cholesky
    factorisation retries with a diagonal regulariser ``jitter`` multiplied by 10 until it
    succeeds; the value used is ``jitter_`` and a :class:`~meanfield.kernels.KernelWarning` says
    so.  The remedy is a positive ``noise`` (a ridge term, also the observation-noise variance),
    fewer layers, or parameters nearer the critical line.

    Parameters
    ----------
    act, depth, sigma_w2, sigma_b2
        Network, as in :func:`meanfield.kernels.nngp`.
    kernel : {"nngp", "ntk"}
    noise : float
        Observation-noise variance added to the diagonal of ``K(X, X)``.
    jitter : float
        First diagonal regulariser tried if the factorisation fails (default 0: try none).
    method : {"auto", "exact", "quadrature"}
        As in :func:`meanfield.kernels.nngp`.
    solver : {"cholesky", "cg"}
        Factorise ``K(X, X) + noise I`` (Rasmussen & Williams 2006, Algorithm 2.1), or solve with
        it by preconditioned conjugate gradients (no factor is stored: predictive variances then
        take one CG solve per test point; see :func:`predict_from_kernel`).  CG needs a positive
        ``noise`` in practice, and raises np.linalg.LinAlgError if it does not converge.
    tol, max_iter, preconditioner
        CG's relative residual, iteration limit and preconditioner, as in
        :func:`predict_from_kernel`.

    Attributes
    ----------
    X_train_ : ndarray (n, d_in)
    alpha_ : ndarray (n,) or (n, n_targets)
        ``(K(X, X) + (noise + jitter_) I)^{-1} y``.
    L_ : ndarray (n, n) or None
        Its lower Cholesky factor (None with ``solver="cg"``).
    jitter_ : float
        The diagonal regulariser used.
    solve_info_ : SolveInfo
        The solver, its iterations and the final relative residual of ``alpha_``.
    n_features_in_ : int
    """

    _PARAMS = ("act", "depth", "sigma_w2", "sigma_b2", "kernel", "noise", "jitter", "method", "solver", "tol",
               "max_iter", "preconditioner")

    def __init__(self, act: ActivationLike = "relu", depth: int = 1, sigma_w2: float = 2.0,
                 sigma_b2: float = 0.0, *, kernel: str = "nngp", noise: float = 0.0, jitter: float = 0.0,
                 method: str = "auto", solver: str = "cholesky", tol: float = 1e-10, max_iter: int | None = None,
                 preconditioner: str | None = "pivoted-cholesky"):
        self.solver = solver
        self.tol = tol
        self.max_iter = max_iter
        self.preconditioner = preconditioner
        self.act = act
        self.depth = depth
        self.sigma_w2 = sigma_w2
        self.sigma_b2 = sigma_b2
        self.kernel = kernel
        self.noise = noise
        self.jitter = jitter
        self.method = method

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor parameters, by name (scikit-learn's estimator interface)."""
        return {k: getattr(self, k) for k in self._PARAMS}

    def set_params(self, **params) -> NNGPRegressor:
        """Set constructor parameters by name; ValueError for an unknown one."""
        for k, v in params.items():
            if k not in self.get_params():
                raise ValueError(f"unknown parameter {k!r}")
            setattr(self, k, v)
        return self

    def _k(self, A, B=None):
        fn = _KERNELS.get(self.kernel)
        if fn is None:
            raise ValueError(f"kernel must be 'nngp' or 'ntk', got {self.kernel!r}")
        return fn(A, B, self.act, depth=self.depth, sigma_w2=self.sigma_w2, sigma_b2=self.sigma_b2,
                  method=self.method)

    def fit(self, X: ArrayLike, y: ArrayLike) -> NNGPRegressor:
        """Factorise ``K(X, X) + noise I`` and solve for the weights of the posterior mean.

        Parameters
        ----------
        X : array (n, d_in)
        y : array (n,) or (n, n_targets)

        Returns
        -------
        self
        """
        X = _validate.inputs("X", X)
        y = _targets(y, X.shape[0])
        noise = _validate.number("noise", self.noise, low=0.0, what="a variance >= 0")
        jitter = _validate.number("jitter", self.jitter, low=0.0, what="a regulariser >= 0")
        solver, tol, max_iter, precond = _solver_options(self.solver, self.tol, self.max_iter, self.preconditioner,
                                                         X.shape[0])
        K = self._k(X)
        self.X_train_ = X
        self.n_features_in_ = X.shape[1]
        if solver == "cg":
            self._cg = (cg.as_kernel("K(X, X)", K), noise + jitter, tol, max_iter, precond)
            self.jitter_, self.L_ = jitter, None
            alpha, self.solve_info_ = _cg_solve(*self._cg[:1], y.reshape(X.shape[0], -1), *self._cg[1:])
            self.alpha_ = alpha.reshape(y.shape)
            return self
        L, j = _cholesky(K + noise * np.eye(X.shape[0]), jitter)
        if j > jitter:
            warnings.warn(
                f"K(X, X) + noise I is numerically singular (typical deep in the ordered phase, where all inputs "
                f"become alike); added {j:.3g} to its diagonal (jitter_). Remedy: a positive noise, fewer layers, "
                "or parameters nearer the critical line", KernelWarning, stacklevel=2)
        self.jitter_ = j
        self.L_ = L
        from scipy.linalg import cho_solve

        self.alpha_ = cho_solve((L, True), y)
        self.solve_info_ = SolveInfo("cholesky", 0, float(np.max(
            np.linalg.norm((K + (noise + j) * np.eye(X.shape[0])) @ self.alpha_ - y, axis=0)
            / np.maximum(np.linalg.norm(y, axis=0), 1e-300))))
        return self

    def predict(self, X: ArrayLike, return_std: bool = False,
                return_cov: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Posterior mean, and optionally its standard deviation or covariance (NNGP kernel only).

        ``mean = K(X, X_train) alpha_``; ``cov = K(X, X) - V^T V`` with ``V = L_^{-1} K(X_train, X)``
        (Rasmussen & Williams 2006, Algorithm 2.1).  The standard deviation needs only the prior
        variances ``K^L(x, x)``, from the one-dimensional variance map.

        Parameters
        ----------
        X : array (m, d_in)
        return_std, return_cov : bool
            Also return the posterior standard deviation (m,) or covariance (m, m); not both.

        Returns
        -------
        mean, or (mean, std), or (mean, cov)
        """
        if not hasattr(self, "alpha_"):
            raise ValueError("call fit before predict")
        for name, flag in (("return_std", return_std), ("return_cov", return_cov)):
            if not isinstance(flag, (bool, np.bool_)):
                raise ValueError(f"{name} must be True or False, got {flag!r}")
        X = _validate.inputs("X", X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, the training data had {self.n_features_in_}")
        if (return_std or return_cov) and self.kernel != "nngp":
            raise ValueError("predictive variances are the GP posterior of the NNGP kernel; use kernel='nngp'")
        if return_std and return_cov:
            raise ValueError("give return_std or return_cov, not both")
        Ks = self._k(X, self.X_train_)
        mean = Ks @ self.alpha_
        if not (return_std or return_cov):
            return mean
        from scipy.linalg import solve_triangular

        if self.L_ is None:  # CG: V^T V = Ks A^{-1} Ks^T with W = A^{-1} Ks^T solved column by column
            W, _ = _cg_solve(self._cg[0], np.ascontiguousarray(Ks.T), *self._cg[1:])
            quad, VtV = np.einsum("ji,ij->j", Ks, W), (lambda: Ks @ W)
        else:
            V = solve_triangular(self.L_, Ks.T, lower=True)
            quad, VtV = np.einsum("ij,ij->j", V, V), (lambda: V.T @ V)
        if return_cov:
            cov = self._k(X) - VtV()
            return mean, 0.5 * (cov + cov.T)
        prior = self._prior_var(X)
        var = np.maximum(prior - quad, 0.0)
        return mean, np.sqrt(var)

    def _prior_var(self, X):
        # K^L(x, x) by the one-dimensional variance map of the layer (Poole et al. 2016, eq. 3)
        layer = Dense(activation(self.act), float(self.sigma_w2), float(self.sigma_b2))
        d = layer.sigma_b2 + layer.sigma_w2 * np.einsum("ij,ij->i", X, X) / X.shape[1]
        for _ in range(int(self.depth)):
            d = layer.variance(expectation(layer.act, "phi2", d, method=self.method))
        return d

    def score(self, X: ArrayLike, y: ArrayLike) -> float:
        """Coefficient of determination ``R^2 = 1 - sum (y - mean)^2 / sum (y - ybar)^2`` of the posterior mean."""
        pred = self.predict(X)
        y = _targets(y, pred.shape[0])
        ss_res = np.sum((y - pred) ** 2)
        ss_tot = np.sum((y - y.mean(axis=0)) ** 2)
        return float(1.0 - ss_res / ss_tot) if ss_tot > 0 else 0.0


class NNGPClassifier(NNGPRegressor):
    """Classification as regression on one-hot targets (Lee et al. 2018, Sec. 2.4).

    Each class ``k`` gets the target ``on`` (default 0.9) for its samples and ``off`` (default -0.1)
    for the others; the prediction is the class of the largest posterior mean
    ``K(x*, X) (K(X, X) + noise I)^{-1} Y``.

    Parameters
    ----------
    act, depth, sigma_w2, sigma_b2, kernel, noise, jitter, method, solver, tol, max_iter, preconditioner
        As in :class:`NNGPRegressor`.
    targets : (float, float)
        ``(off, on)`` values of the one-hot targets.

    Attributes
    ----------
    classes_ : ndarray
        The class labels seen in ``fit``, sorted; column ``k`` of the targets is ``classes_[k]``.
    X_train_, alpha_, L_, jitter_, n_features_in_
        As in :class:`NNGPRegressor`.
    """

    _PARAMS = NNGPRegressor._PARAMS + ("targets",)

    def __init__(self, act: ActivationLike = "relu", depth: int = 1, sigma_w2: float = 2.0,
                 sigma_b2: float = 0.0, *, kernel: str = "nngp", noise: float = 0.0, jitter: float = 0.0,
                 method: str = "auto", targets: tuple[float, float] = (-0.1, 0.9), solver: str = "cholesky",
                 tol: float = 1e-10, max_iter: int | None = None, preconditioner: str | None = "pivoted-cholesky"):
        super().__init__(act, depth, sigma_w2, sigma_b2, kernel=kernel, noise=noise, jitter=jitter, method=method,
                         solver=solver, tol=tol, max_iter=max_iter, preconditioner=preconditioner)
        self.targets = targets

    def fit(self, X: ArrayLike, y: ArrayLike) -> NNGPClassifier:
        """Fit the one-hot targets of the labels ``y`` (a 1-D array of class labels)."""
        y = np.asarray(y)
        if y.ndim != 1:
            raise ValueError("y must be a 1-D array of class labels")
        if y.dtype.kind == "c":
            raise ValueError("class labels must not be complex numbers")
        if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
            raise ValueError("class labels must not be NaN or infinite")
        if y.size != np.shape(X)[0]:
            raise ValueError(f"y has {y.size} labels, X has {np.shape(X)[0]} rows: give one label per row of X")
        if any(isinstance(t, (bool, np.bool_, str, bytes)) for t in np.ravel(np.asarray(self.targets, dtype=object))):
            raise ValueError(f"targets must be two numbers (off, on), got {self.targets!r}")
        try:
            off, on = (float(t) for t in self.targets)
        except (TypeError, ValueError):
            raise ValueError(f"targets must be two numbers (off, on), got {self.targets!r}") from None
        if not (np.isfinite(off) and np.isfinite(on) and on > off):
            raise ValueError(f"targets must be finite with on > off (Lee et al. 2018 use -0.1, 0.9), "
                             f"got {self.targets!r}")
        try:
            self.classes_, codes = np.unique(y, return_inverse=True)
        except TypeError:
            raise ValueError("class labels must be of one kind (all numbers or all strings), got mixed types") from None
        if self.classes_.size < 2:
            raise ValueError(f"y has only one class ({self.classes_[0].item()!r}): classification needs at least two")
        Y = np.full((y.size, self.classes_.size), off)
        Y[np.arange(y.size), codes] = on
        return super().fit(X, Y)

    def decision_function(self, X: ArrayLike) -> np.ndarray:
        """Posterior means of the one-hot targets, shape (n, n_classes)."""
        return NNGPRegressor.predict(self, X)

    def predict(self, X: ArrayLike) -> np.ndarray:
        """The class of the largest posterior mean, for every row of ``X``."""
        return self.classes_[np.argmax(self.decision_function(X), axis=1)]

    def score(self, X: ArrayLike, y: ArrayLike) -> float:
        """Accuracy: the fraction of rows of ``X`` whose predicted class is ``y``."""
        pred, y = self.predict(X), np.asarray(y)
        if y.shape != pred.shape:
            raise ValueError(f"y must have one label per row of X, shape {pred.shape}, got shape {y.shape}")
        return float(np.mean(pred == y))
