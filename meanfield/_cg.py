"""Linear solves with a kernel matrix that may not fit in memory: preconditioned conjugate gradients.

The kernel ``K`` is a numpy array, a dask array, or the path of a zarr store holding it (an
array at the store's root, or a group with one array named ``"K"``).  CG touches it only through
products ``K V`` (computed by dask block by block when ``K`` is a dask array or a store, on the
Dask cluster of the active client if there is one), its diagonal, its diagonal blocks and a few
of its rows (for the preconditioners), so the matrix is never held whole.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

PRECONDITIONERS = ("pivoted-cholesky", "block-jacobi", "jacobi", None)
DEFAULT_RANK = 100
DEFAULT_BLOCK = 500


def _dask():
    try:
        import dask.array as da
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("kernels as dask arrays or zarr stores need dask: "
                          "pip install 'meanfield[distributed]'") from err
    return da


def _open_store(path):
    try:
        import zarr
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("kernels in zarr stores need zarr: pip install 'meanfield[distributed]'") from err
    if not os.path.exists(path):
        raise FileNotFoundError(f"no zarr store at {path!r}")
    try:
        node = zarr.open(path, mode="r")
    except Exception as err:  # noqa: BLE001 - zarr raises many kinds for a store that is not one
        raise ValueError(f"{path!r} is not a readable zarr store ({type(err).__name__}: {err})") from None
    if hasattr(node, "shape") and hasattr(node, "dtype"):
        return node
    names = list(node.array_keys())
    if "K" in names:
        return node["K"]
    if len(names) == 1:
        return node[names[0]]
    raise ValueError(f"zarr group {path!r} holds arrays {names}: expected one array, or one named 'K'")


@dataclass(frozen=True)
class Kernel:
    """A kernel matrix behind the few operations CG needs; ``data`` is a numpy or dask array."""

    data: object
    in_memory: bool

    @property
    def shape(self):
        return tuple(int(s) for s in self.data.shape)

    def dot(self, V):
        if self.in_memory:
            return self.data @ V
        return np.asarray((self.data @ V).compute())

    def diag(self):
        if self.in_memory:
            return np.diag(self.data).copy()
        return np.asarray(_dask().diagonal(self.data).compute())

    def row(self, i):
        return np.asarray(self.data[i]) if self.in_memory else np.asarray(self.data[i].compute())

    def block(self, a, b):
        blk = self.data[a:b, a:b]
        return np.array(blk if self.in_memory else blk.compute(), dtype=float)


def as_kernel(name: str, K, shape=None) -> Kernel:
    """``K`` (numpy array, dask array or zarr store path) as a :class:`Kernel`, checked.

    ``shape`` is the required shape (an entry None: any).  A numpy kernel is checked finite; the
    others are checked as they are read (a non-finite product stops the solve).
    """
    if isinstance(K, (str, os.PathLike)):
        K = _dask().from_zarr(_open_store(os.fspath(K)))
    mod = type(K).__module__.split(".")[0]
    if mod == "dask":
        kern = Kernel(K, False)
        if K.dtype.kind not in "fiu":
            raise TypeError(f"{name} must hold real numbers, got dtype {K.dtype}")
    else:
        if mod == "zarr":
            raise TypeError(f"{name}: give the path of the zarr store, not the opened array")
        try:
            arr = np.asarray(K, dtype=float)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be a real matrix, a dask array or a zarr store path, "
                            f"got {type(K).__name__}") from None
        if arr.ndim == 2 and not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} must be finite (it has NaN or infinite entries)")
        kern = Kernel(arr, True)
    if len(kern.data.shape) != 2:
        raise ValueError(f"{name} must be a matrix (2-D), got shape {tuple(kern.data.shape)}")
    if shape is not None:
        for got, want in zip(kern.shape, shape, strict=True):
            if want is not None and got != want:
                raise ValueError(f"{name} must have shape {tuple('any' if s is None else s for s in shape)}, "
                                 f"got {kern.shape}")
    return kern


# ----------------------------------------------------------------------------------------
# Preconditioners: functions R -> M^{-1} R for R of shape (n, k)
# ----------------------------------------------------------------------------------------


def jacobi(kern: Kernel, shift: float):
    """``M = diag(K) + shift``."""
    d = kern.diag() + shift
    if not np.all(d > 0):
        raise ValueError("the kernel's diagonal plus noise must be positive for CG")
    return lambda R: R / d[:, None]


def block_jacobi(kern: Kernel, shift: float, block: int = DEFAULT_BLOCK):
    """``M`` = the diagonal blocks of ``K + shift I`` (Cholesky factor of each)."""
    from scipy.linalg import cho_factor, cho_solve

    n = kern.shape[0]
    factors = []
    for a in range(0, n, block):
        b = min(n, a + block)
        B = kern.block(a, b)
        B[np.diag_indices_from(B)] += shift
        j = 0.0
        scale = max(float(np.mean(np.diag(B))), np.finfo(float).tiny)
        while True:  # a singular diagonal block (alike inputs) gets a small ridge of its own
            try:
                factors.append((a, b, cho_factor(B + j * np.eye(b - a), lower=True)))
                break
            except np.linalg.LinAlgError:
                j = max(10 * j, 1e-12 * scale)

    def apply(R):
        out = np.empty_like(R)
        for a, b, f in factors:
            out[a:b] = cho_solve(f, R[a:b])
        return out

    return apply


def pivoted_cholesky(kern: Kernel, shift: float, rank: int = DEFAULT_RANK):
    """``M = L L^T + D``, ``L`` a rank-``rank`` pivoted Cholesky factor of ``K``.

    ``L`` is greedy on the largest remaining diagonal (Harbrecht, Peters & Schneider 2012), ``D``
    the diagonal that ``L L^T`` leaves out plus ``shift``; ``M^{-1}`` by the Woodbury identity
    (Gardner et al. 2018).
    """
    d = kern.diag()
    n = d.size
    rank = min(rank, n)
    L = np.zeros((n, rank))
    res = d.copy()
    scale = float(np.max(d)) if n else 1.0
    k = 0
    for k in range(rank):
        i = int(np.argmax(res))
        if res[i] <= 1e-12 * scale:
            break
        col = (kern.row(i) - L[:, :k] @ L[i, :k]) / np.sqrt(res[i])
        L[:, k] = col
        res = np.maximum(res - col * col, 0.0)
        res[i] = 0.0
    else:
        k = rank
    L = L[:, :k]
    D = res + shift
    D = np.maximum(D, 1e-12 * max(scale, np.finfo(float).tiny) + shift)
    LD = L / D[:, None]
    C = np.linalg.cholesky(np.eye(k) + L.T @ LD)
    from scipy.linalg import cho_solve

    def apply(R):
        RD = R / D[:, None]
        return RD - LD @ cho_solve((C, True), L.T @ RD) if k else RD

    return apply


def preconditioner(kern: Kernel, shift: float, kind, rank: int = DEFAULT_RANK, block: int = DEFAULT_BLOCK):
    if kind == "jacobi":
        return jacobi(kern, shift)
    if kind == "block-jacobi":
        return block_jacobi(kern, shift, block)
    if kind == "pivoted-cholesky":
        return pivoted_cholesky(kern, shift, rank)
    if kind is None:
        return lambda R: R
    raise ValueError(f"preconditioner must be one of {PRECONDITIONERS}, got {kind!r}")


# ----------------------------------------------------------------------------------------
# Conjugate gradients
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SolveInfo:
    """How a kernel system was solved.

    Attributes
    ----------
    solver : str
        "cg" or "cholesky".
    iterations : int
        CG iterations (products with the kernel); 0 for Cholesky.
    residual : float
        Largest relative residual ``||b - A x|| / ||b||`` over the right-hand sides, recomputed
        from the solution at the end (not the recursive estimate).
    preconditioner : str or None
    """

    solver: str
    iterations: int
    residual: float
    preconditioner: str | None = None


def cg(kern: Kernel, B: np.ndarray, shift: float, tol: float, max_iter: int, precond):
    """Solve ``(K + shift I) X = B`` for every column of ``B`` (n, k) by preconditioned CG.

    Each column is its own CG (Hestenes & Stiefel 1952; Saad 2003, Algorithm 9.1), frozen once
    its recursive residual is below ``tol ||b||``; the true residual is then recomputed, and
    CG restarted from the current solution where it is not below ``tol``.

    Returns (X, iterations, residual) with ``residual`` the largest true relative residual.
    Raises np.linalg.LinAlgError if the product is not finite or the matrix is not positive
    definite along the search direction.
    """
    n, m = B.shape
    bnorm = np.linalg.norm(B, axis=0)
    bnorm[bnorm == 0] = 1.0
    X = np.zeros_like(B)

    def A(V):
        out = kern.dot(V) + shift * V
        if not np.all(np.isfinite(out)):
            raise np.linalg.LinAlgError("the kernel-vector product is not finite: the kernel has NaN or "
                                        "infinite entries")
        return out

    R = B.copy()
    it = 0
    for _ in range(3):  # restarts after the true residual is checked
        active = np.flatnonzero(np.linalg.norm(R, axis=0) > tol * bnorm)
        if active.size == 0:
            break
        Z = precond(R[:, active])
        P = Z.copy()
        rz = np.einsum("ij,ij->j", R[:, active], Z)
        while active.size and it < max_iter:
            AP = A(P)
            it += 1
            pap = np.einsum("ij,ij->j", P, AP)
            if not np.all(pap > 0):
                raise np.linalg.LinAlgError("K + noise I is not positive definite (p^T A p <= 0 in CG): "
                                            "give a positive noise or check the kernel")
            alpha = rz / pap
            X[:, active] += alpha * P
            R[:, active] -= alpha * AP
            rn = np.linalg.norm(R[:, active], axis=0)
            keep = rn > tol * bnorm[active]
            if not keep.any():
                active = active[:0]
                break
            Z = precond(R[:, active[keep]])
            rz_new = np.einsum("ij,ij->j", R[:, active[keep]], Z)
            P = Z + (rz_new / rz[keep]) * P[:, keep]
            rz = rz_new
            active = active[keep]
        R = B - A(X)
        if it >= max_iter:
            break
    residual = float(np.max(np.linalg.norm(R, axis=0) / bnorm))
    return X, it, residual
