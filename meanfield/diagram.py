"""Phase diagrams over (sigma_w2, sigma_b2) grids: every mean-field field, fast and accurate.

:func:`phase_diagram` computes, on a grid of weight and bias variances, the fixed points
``q*`` and ``c*``, ``chi_1``, ``chi_c``, the depth scales ``xi_q`` and ``xi_c``, the trainable
depth ``6 xi_c``, the phase, and the critical line ``chi_1 = 1`` (Poole et al. 2016;
Schoenholz et al. 2017).  The values agree with :func:`meanfield.analyze` (the per-point
reference) to about 1e-12, but are computed for all points at once:

1. **One-dimensional tables.**  ``V(q) = E[phi(sqrt(q) z)^2]``, ``D1(q) = E[phi'(sqrt(q) z)^2]``
   and the q-map slope ``S(q) = dV/dq`` are tabulated once per activation (and process) as
   piecewise Chebyshev series in ``t = ln q`` (patches of unit width, 32 Chebyshev points of the
   first kind; node values from the core adaptive quadrature at ~1e-12).  A patch whose last
   Chebyshev coefficients are not below 1e-14 of its largest is not used: its points are
   integrated directly.  Patches are built lazily, only where a query needs them.  ``q*`` is
   then a vectorised bracketed root (the same bracketing as :func:`meanfield.q_star`).

2. **Mehler (Hermite) expansion of the correlation map at q*** (chaotic points only; the
   ordered phase needs no bivariate integral: ``c* = 1``, ``chi_c = chi_1``).  With
   ``b_k(q) = E[phi(sqrt(q) z) He_k(z)] / sqrt(k!)`` and ``a_k = b_k^2`` (Mehler's formula),
   ``E[phi(u1) phi(u2)] = sum_k a_k c^k`` for ``u1, u2`` of variance q and correlation c, so

   * ``D(q, c) / (1 - c) = sum_{j>=0} A_j c^j``, ``A_j = sum_{k>j} a_k``, where
     ``D = E[(phi(u1) - phi(u2))^2] / 2``: the well-conditioned fixed-point equation
     ``G(c) = 1 - sigma_w2 (V (1/rho - 1) + D) / (q (1 - c)) = 0`` of the core;
   * ``E[phi'(u1) phi'(u2)] = (1/q) sum_{k>=1} k a_k c^(k-1)`` (Price's theorem; Gaussian
     integration by parts ``E[phi'(sqrt(q) z) He_k] = E[phi He_{k+1}] / sqrt(q)``).

   The ``b_k`` of a batch of points are one matrix product: the trapezoidal rule on a half grid
   in z (even and odd parts of phi apart) against the Gaussian-weighted normalised Hermite
   functions from their three-term recurrence.  For phi analytic in a strip (tanh: poles at
   ``+-i pi/2``) the trapezoidal rule converges exponentially.  The truncation order grows with
   q (``30 + 150 q`` terms).  A point is accepted only if the two sum rules
   ``sum_k a_k = V(q)`` and ``sum_k k a_k = q D1(q)`` hold to 1e-11 against the independent
   1-D quadrature; the second bounds the truncation error of both series for every
   ``|c| <= 1``, since ``(1 - c^k)/(1 - c) <= k`` and ``k |c|^(k-1) <= k`` there.  Points that
   fail (kinked or fast-growing activations, very large q*) are computed per point by the
   core (:func:`meanfield.fixed_points.c_star`'s method), which is slow but exact.  Points at
   the limits (q* = inf, or q* = 0 with zero bias) take the core's answer for the equivalent
   homogeneous layer (:meth:`meanfield.layers.Dense.limit`), which does not depend on the
   variances: one computation serves them all.

3. **Root-finding in compiled code.**  The largest attracting root of G below 1 is bracketed
   by the same scan as :func:`meanfield.c_star` and polished by safeguarded Newton in a numba
   kernel that takes only arrays (compiled once, cached on disk).

Every map is the layer rule of :class:`meanfield.layers.Dense`; the engine (tables, Mehler
coefficients, compiled kernel) lives in :mod:`meanfield._diagram_engine`.

Activations with closed forms (erf, the relu family, sin, cos, ...) use them throughout.
Memory: the grid is processed in chunks, so working memory is bounded by the chunk size and
does not grow with the number of quadrature nodes; the result itself takes about 100 bytes
per grid point.
"""

from __future__ import annotations

import os
import warnings
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np
from numpy.typing import ArrayLike

from . import _diagram_norm as norm_fields
from . import _sweeps as sweeps
from . import _validate
from ._diagram_engine import Engine, engine
from ._io import atomic_write
from ._solvers import critical_search
from .activations import Activation, ActivationLike, activation
from .fixed_points import solve_c_star
from .layers import Dense
from .phase import PHASES, analyze, fields_at

__all__ = ["phase_diagram", "phase_diagrams", "PhaseDiagram", "load_phase_diagram", "GridTooLargeError", "PHASES",
           "required_memory"]

_FIELDS = ("q_star", "c_star", "chi_1", "chi_c", "q_slope", "xi_q", "xi_c", "trainable_depth",
           "gradient_factor")
#: Result arrays plus the flat (sigma_w2, sigma_b2) pairs and the phase code, per point.
_BYTES_PER_POINT = 8 * (len(_FIELDS) + 2) + 1 + 4 * 9
_CHUNK = 20000
_CHUNK_BYTES = 64 * 2**20  # bounded working memory of one chunk
_FORMAT = 1


class GridTooLargeError(ValueError):
    """The requested grid does not fit in memory (the message says how much it needs)."""


def _grid(name, values, default):
    if values is None:
        values = default
    arr = np.asarray(values, dtype=float) if not isinstance(values, str) else None
    if arr is None:
        raise TypeError(f"{name} must be a number or a 1-D array of numbers")
    arr = _validate.nonnegative(name, np.atleast_1d(arr))
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D grid, got an array of shape {arr.shape}")
    if arr.size > 1 and np.any(np.diff(arr) <= 0):
        raise ValueError(f"{name} grid must be strictly increasing")
    return arr


def required_memory(n_sigma_w2: int, n_sigma_b2: int) -> int:
    """Bytes a phase diagram of this size needs (results plus bounded working memory)."""
    return int(n_sigma_w2) * int(n_sigma_b2) * _BYTES_PER_POINT + 4 * _CHUNK_BYTES


@dataclass(frozen=True, eq=False)
class PhaseDiagram:
    """Mean-field fields on a (sigma_b2, sigma_w2) grid (Poole et al. 2016; Schoenholz et al. 2017).

    Every field is an array of shape ``(len(sigma_b2), len(sigma_w2))``: ``field[i, j]`` is at
    ``sigma_b2[i]``, ``sigma_w2[j]`` (rows are bias variances, as in Schoenholz et al. 2017,
    Fig. 1, with sigma_w2 on the horizontal axis).

    Attributes
    ----------
    activation : str
        Name of the activation.
    sigma_w2, sigma_b2 : 1-D arrays
        The grid (variances).
    rho : float
        Dropout keep probability.
    q_star : fixed point of ``q -> sigma_w2/rho E[phi(sqrt(q) z)^2] + sigma_b2`` (inf: divergent)
    c_star : attracting fixed point of the correlation map
    chi_1 : ``sigma_w2 E[phi'(sqrt(q*) z)^2]`` (Poole et al. 2016, eq. 7)
    chi_c : ``sigma_w2 E[phi'(u1) phi'(u2)]`` at (q*, c*) (Schoenholz et al. 2017, eq. 8)
    q_slope : slope of the variance map at q*
    xi_q, xi_c : depth scales ``-1/ln(q_slope)`` and ``-1/ln(chi_c)`` (Schoenholz eqs. 5, 9)
    trainable_depth : ``6 xi_c`` (Schoenholz et al. 2017, Sec. 6)
    gradient_factor : per-layer factor of the squared gradient norm, ``chi_1 / rho``
    phase : str array, one of :data:`PHASES` (as :func:`meanfield.analyze`: "critical" where
        ``|chi_1 - 1| < 1e-9``, "divergent" where q* is infinite)
    critical_line : ``sigma_w2`` on ``chi_1 = 1`` for each ``sigma_b2`` (NaN where there is none)
    n_reference : int
        Points whose c* the fast path could not certify and that were computed per point by the
        core instead.
    norm, batch_size : the normalisation before phi (None, "layer" or "batch") and the batch size
    """

    activation: str
    sigma_w2: np.ndarray
    sigma_b2: np.ndarray
    rho: float
    q_star: np.ndarray
    c_star: np.ndarray
    chi_1: np.ndarray
    chi_c: np.ndarray
    q_slope: np.ndarray
    xi_q: np.ndarray
    xi_c: np.ndarray
    trainable_depth: np.ndarray
    gradient_factor: np.ndarray
    phase: np.ndarray
    critical_line: np.ndarray
    n_reference: int = 0
    norm: str | None = None
    batch_size: int | None = None

    @property
    def shape(self):
        """``(len(sigma_b2), len(sigma_w2))``."""
        return (self.sigma_b2.size, self.sigma_w2.size)

    @property
    def phase_code(self):
        """The phase as integer codes into :data:`PHASES`."""
        codes = np.zeros(self.shape, dtype=np.int8)
        for k, name in enumerate(PHASES):
            codes[self.phase == name] = k
        return codes

    def critical_trainable_depth(self, offset=0.05):
        """Trainable depth just off the critical line, for each sigma_b2.

        The trainable depth diverges on the line itself; what a practitioner can use is its value
        at ``sigma_w2 = (1 + offset) * critical sigma_w2`` (chaotic side), interpolated in
        sigma_w2 along each row of the grid.  NaN where that point is outside the grid.
        """
        out = np.full(self.sigma_b2.size, np.nan)
        target = (1.0 + offset) * self.critical_line
        for i, t in enumerate(target):
            if np.isfinite(t) and self.sigma_w2[0] <= t <= self.sigma_w2[-1] and self.sigma_w2.size > 1:
                row = self.trainable_depth[i]
                j = int(np.clip(np.searchsorted(self.sigma_w2, t), 1, self.sigma_w2.size - 1))
                lo, hi = row[j - 1], row[j]
                if np.isfinite(lo) and np.isfinite(hi):
                    out[i] = np.interp(t, self.sigma_w2[j - 1:j + 1], row[j - 1:j + 1])
                else:  # an infinite or undefined neighbour (on the line, or divergent variance)
                    out[i] = hi if t - self.sigma_w2[j - 1] > self.sigma_w2[j] - t else lo
        return out

    def plot(self, ax=None, **kwargs):
        """The phase diagram with critical line and trainable-depth contours.

        See :func:`meanfield.plotting.plot_phase_diagram`; returns ``(fig, ax)``.
        """
        from .plotting import plot_phase_diagram

        return plot_phase_diagram(self, ax=ax, **kwargs)

    def save(self, path):
        """Write every field and parameter to an ``.npz`` file, atomically.

        The data go to a temporary file in the same directory, which is then renamed over
        ``path`` (``os.replace``): the file is complete or absent, never half-written.
        """
        path = os.fspath(path)
        arrays = {name: np.asarray(getattr(self, name), dtype=float) for name in _FIELDS}
        arrays.update(
            format=np.array(_FORMAT), activation=np.array(self.activation), rho=np.array(self.rho),
            sigma_w2=self.sigma_w2, sigma_b2=self.sigma_b2, phase_code=self.phase_code,
            phase_names=np.array(PHASES), critical_line=self.critical_line,
            n_reference=np.array(self.n_reference),
        )
        if self.norm is not None:
            arrays.update(norm=np.array(self.norm), batch_size=np.array(self.batch_size or 0))
        atomic_write(path, lambda fh: np.savez(fh, **arrays), prefix=".phase-diagram-")
        return path

    @classmethod
    def load(cls, path):
        """Read a file written by :meth:`save` (see :func:`load_phase_diagram`: a clear ValueError for bad files)."""
        return load_phase_diagram(path)

    def as_dict(self):
        """Plain Python values (lists, floats, str) for JSON; non-finite floats stay as floats."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.tolist() if isinstance(v, np.ndarray) else v
        return out


def load_phase_diagram(path: str | os.PathLike) -> PhaseDiagram:
    """Load a :class:`PhaseDiagram` written by :meth:`PhaseDiagram.save`.

    The whole file is checked before anything is returned: the format version, the type and
    shape of every field (``(len(sigma_b2), len(sigma_w2))``; ``critical_line``:
    ``len(sigma_b2)``), the grids (strictly increasing, finite, >= 0), ``rho`` in (0, 1], the
    phase codes against the phase names stored in the file (files written before a phase was
    added load with the names they were written with), and the non-finite values each field
    may hold (q* = inf where the variance diverges, c* NaN where it is undefined, infinite or
    undefined depth scales).  Nothing is unpickled.

    Raises
    ------
    FileNotFoundError
        If there is no such file (other errors opening it propagate as :class:`OSError`).
    ValueError
        For anything else: a file that is not a phase-diagram ``.npz`` (empty, truncated,
        garbage, an ``.npy`` array, another archive), an unsupported or missing format
        version, or a field of the wrong type, shape or values; the message names the file
        and what is wrong.
    """
    path = os.fspath(path)
    with open(path, "rb") as fh:
        arrays = _read_members(path, fh)
    return _from_members(path, arrays)


#: Members every phase-diagram file has (``n_reference`` is optional).
_MEMBERS = ("format", "activation", "rho", "sigma_w2", "sigma_b2", *_FIELDS, "phase_code", "phase_names",
            "critical_line")
#: Non-finite values a field may legitimately hold, as (NaN allowed, +inf allowed); -inf never.
_NONFINITE = dict(q_star=(False, True), c_star=(True, False), chi_1=(False, True), chi_c=(True, True),
                  q_slope=(False, True), xi_q=(True, True), xi_c=(True, True), trainable_depth=(True, True),
                  gradient_factor=(False, True))
#: What reading a damaged archive or member can raise (zipfile, zlib and numpy's .npy reader).
_READ_ERRORS = (OSError, EOFError, ValueError, RuntimeError, NotImplementedError, zipfile.BadZipFile, zlib.error)


def _not_ours(path, why):
    return ValueError(f"{path} is not a meanfield phase-diagram file: {why}")


def _bad(path, what):
    return ValueError(f"{path}: {what}")


def _show(arr):
    """A short description of a stored value for error messages."""
    if arr.ndim == 0 and arr.dtype.kind in "biufUS":
        text = repr(arr.item())
        return text if len(text) <= 40 else text[:37] + "..."
    return f"a {arr.dtype} array of shape {arr.shape}"


def _read_members(path, fh):
    """The arrays of an ``.npz`` phase-diagram file open as ``fh``, or ValueError."""
    head = fh.read(8)
    fh.seek(0)
    if not head:
        raise _not_ours(path, "the file is empty")
    if head.startswith(b"\x93NUMPY"):
        raise _not_ours(path, "it is a single .npy array, not an .npz archive")
    if not head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        raise _not_ours(path, "it is not an .npz (zip) archive")
    try:
        npz = np.load(fh, allow_pickle=False)
    except _READ_ERRORS as err:
        raise _not_ours(path, f"damaged or truncated .npz archive ({type(err).__name__}: {err})") from None
    with npz:
        present = set(npz.files)
        if not present.intersection(_MEMBERS):
            found = ", ".join(sorted(present)[:5]) + (", ..." if len(present) > 5 else "")
            raise _not_ours(path, f"none of its fields are there (it holds: {found or 'nothing'})")
        missing = [k for k in _MEMBERS if k not in present]
        if missing and missing != ["format"]:
            raise _not_ours(path, f"missing {', '.join(missing)}")
        out = {}
        for key in (*_MEMBERS, "n_reference", "norm", "batch_size"):
            if key in present:
                try:
                    out[key] = npz[key]
                except _READ_ERRORS as err:
                    raise _not_ours(path, f"member {key} cannot be read ({type(err).__name__}: {err})") from None
                if not isinstance(out[key], np.ndarray):  # numpy returns the raw bytes of a non-.npy member
                    raise _not_ours(path, f"member {key} is not an .npy array")
    return out


def _grid_member(path, name, arr):
    detail = None
    if arr.dtype.kind not in "fiu" or arr.ndim != 1 or arr.size == 0:
        detail = f"got {_show(arr)}"
    else:
        grid = arr.astype(float)
        if not np.all(np.isfinite(grid)):
            detail = f"it has non-finite values ({float(grid[~np.isfinite(grid)][0])!r})"
        elif np.any(grid < 0):
            detail = f"it has negative values ({float(grid[grid < 0][0])!r})"
        elif np.any(np.diff(grid) <= 0):
            detail = "its values are not strictly increasing"
    if detail is not None:
        raise _bad(path, f"{name} must be a strictly increasing 1-D float array of finite variances >= 0; {detail}")
    return grid


def _field_member(path, name, arr, shape):
    if arr.dtype.kind != "f":
        raise _bad(path, f"field {name} must be a float array, got {_show(arr)}")
    if arr.shape != shape:
        raise _bad(path, f"field {name} has shape {arr.shape}, expected {shape} = (len(sigma_b2), len(sigma_w2))")
    values = arr.astype(float)
    nan_ok, inf_ok = _NONFINITE[name]
    for bad, what, ok in ((np.isnan(values), "NaN", nan_ok), (np.isposinf(values), "+inf", inf_ok),
                          (np.isneginf(values), "-inf", False)):
        if not ok and bad.any():
            allowed = " and ".join(w for w, o in (("NaN", nan_ok), ("+inf", inf_ok)) if o)
            i, j = np.argwhere(bad)[0]
            raise _bad(path, f"field {name} has a {what} value at [{i}, {j}]; non-finite values allowed there: "
                             f"{allowed}")
    if name == "q_star" and np.any(values < 0):
        raise _bad(path, "field q_star has negative values (a variance is >= 0)")
    return values


def _from_members(path, a):
    """Validate the arrays of a phase-diagram file and build the diagram."""
    if "format" not in a:
        raise _bad(path, "phase-diagram format version missing (not written by PhaseDiagram.save?)")
    fmt = a["format"]
    if fmt.shape != () or fmt.dtype.kind not in "iu":
        raise _bad(path, f"phase-diagram format version must be an integer, got {_show(fmt)}")
    if int(fmt) != _FORMAT:
        raise _bad(path, f"unsupported phase-diagram format version {int(fmt)} "
                         f"(this meanfield reads version {_FORMAT})")
    act = a["activation"]
    if act.shape != () or act.dtype.kind != "U" or not str(act):
        raise _bad(path, f"activation must be a non-empty string, got {_show(act)}")
    rho = a["rho"]
    if rho.shape != () or rho.dtype.kind not in "fiu" or not 0 < float(rho) <= 1:
        raise _bad(path, f"rho (dropout keep probability) must be a number in (0, 1], got {_show(rho)}")
    sw = _grid_member(path, "sigma_w2", a["sigma_w2"])
    sb = _grid_member(path, "sigma_b2", a["sigma_b2"])
    shape = (sb.size, sw.size)
    values = {name: _field_member(path, name, a[name], shape) for name in _FIELDS}
    names = a["phase_names"]
    if names.ndim != 1 or names.dtype.kind != "U" or names.size == 0:
        raise _bad(path, f"phase_names must be a 1-D array of phase names, got {_show(names)}")
    names = names.tolist()
    if len(set(names)) != len(names) or not set(names) <= set(PHASES):
        raise _bad(path, f"phase_names must be distinct names from meanfield.phase.PHASES {PHASES}, got {names}")
    codes = a["phase_code"]
    expected = f"phase codes must be integers in 0..{len(names) - 1} (indices into phase_names)"
    if codes.dtype.kind not in "iu":
        raise _bad(path, f"{expected}, got {_show(codes)}")
    if codes.shape != shape:
        raise _bad(path, f"field phase_code has shape {codes.shape}, expected {shape} = (len(sigma_b2), len(sigma_w2))")
    out_of_range = (codes < 0) | (codes >= len(names))
    if out_of_range.any():
        raise _bad(path, f"{expected}, got {int(codes[out_of_range][0])}")
    line = a["critical_line"]
    if line.dtype.kind not in "fiu":
        raise _bad(path, f"critical_line must be a float array, got {_show(line)}")
    if line.shape != (sb.size,):
        raise _bad(path, f"critical_line has shape {line.shape}, expected ({sb.size},) = (len(sigma_b2),)")
    line = line.astype(float)
    if np.any(np.isinf(line) | (line < 0)):
        raise _bad(path, "critical_line must hold finite sigma_w2 values >= 0 (NaN where there is none)")
    n_ref = a.get("n_reference", np.array(0))
    if n_ref.shape != () or n_ref.dtype.kind not in "iu" or not 0 <= int(n_ref) <= sb.size * sw.size:
        raise _bad(path, f"n_reference must be a non-negative integer, at most the number of grid points "
                         f"({sb.size * sw.size}), got {_show(n_ref)}")
    phase = np.array(names, dtype=f"U{max(map(len, PHASES))}")[codes]
    norm, batch_size = _norm_members(path, a)
    return PhaseDiagram(activation=str(act), sigma_w2=sw, sigma_b2=sb, rho=float(rho), phase=phase,
                        critical_line=line, n_reference=int(n_ref), norm=norm, batch_size=batch_size, **values)


def _norm_members(path, a):
    """The optional ``norm`` and ``batch_size`` members (absent: a network without normalisation)."""
    if "norm" not in a:
        return None, None
    norm = a["norm"]
    if norm.shape != () or norm.dtype.kind != "U" or str(norm) not in ("layer", "batch"):
        raise _bad(path, f"norm must be 'layer' or 'batch', got {_show(norm)}")
    size = a.get("batch_size", np.array(0))
    if size.shape != () or size.dtype.kind not in "iu" or (str(norm) == "batch" and int(size) <= 3):
        raise _bad(path, f"batch_size must be an integer > 3 for batch norm, got {_show(size)}")
    return str(norm), (int(size) if str(norm) == "batch" else None)


def phase_diagram(act: ActivationLike = "tanh", sigma_w2: ArrayLike | None = None, sigma_b2: ArrayLike | None = None,
                  rho: float = 1.0, *,
                  progress: Callable[[int, int], None] | None = None,
                  memory_limit: float | None = None, norm: str | None = None,
                  batch_size: int | None = None, client=None, workers: int | None = None) -> PhaseDiagram:
    """Every mean-field field on a (sigma_w2, sigma_b2) grid (Schoenholz et al. 2017, Fig. 1).

    For each grid point: ``q*`` solves ``q = sigma_w2/rho E[phi(sqrt(q) z)^2] + sigma_b2``
    (Poole et al. 2016, eq. 3); ``chi_1 = sigma_w2 E[phi'(sqrt(q*) z)^2]`` (eq. 7); ``c*`` is
    the attracting fixed point of the correlation map (eq. 5), 1 in the ordered phase;
    ``chi_c = sigma_w2 E[phi'(u1) phi'(u2)]`` at (q*, c*), ``xi_q``, ``xi_c = -1/ln chi_c`` and
    the trainable depth ``6 xi_c`` (Schoenholz et al. 2017, eqs. 5, 8, 9 and Sec. 6).  The
    values are those of :func:`meanfield.analyze` (see the module docstring for the method and
    its error control).

    Parameters
    ----------
    act : Activation or str
        Default ``"tanh"``.
    sigma_w2, sigma_b2 : 1-D array_like
        Strictly increasing grids of weight and bias variances (>= 0, finite).  Defaults:
        ``linspace(0.5, 5, 200)`` and ``linspace(0, 2, 200)``.
    rho : float
        Dropout keep probability (Schoenholz et al. 2017, Sec. 5).
    progress : callable, optional
        Called as ``progress(done, total)`` (grid points) after each chunk; library code
        prints nothing itself.
    memory_limit : float, optional
        Refuse grids needing more bytes than this (default
        :data:`meanfield._validate.DEFAULT_MEMORY_LIMIT`, 4 GiB).
    norm : {None, "layer", "batch"}
        Normalisation before phi (as :func:`meanfield.analyze`): layer norm is the dense layer
        ``Dense(phi, sigma_w2/q*, sigma_b2/q*)`` at unit variance, with the straight critical line
        ``sigma_b2 = sigma_w2 (E[phi'(z)^2] - E[phi(z)^2])``; batch norm has
        ``chi_1 = lambda_G(phi, B)`` everywhere (Yang et al. 2019) and no critical line.
    batch_size : int
        Batch size B > 3 for ``norm="batch"``.
    client : dask.distributed.Client or str, optional
        Compute blocks of rows (``sigma_b2`` values) on this Dask cluster (a client or a scheduler
        address).  Every row is independent, so the result is the one-process diagram: bit for bit
        but for ``c*`` and ``chi_c`` (and the depth scales from them) at chaotic points, whose
        Mehler sums are matrix products that may round differently for another batch of points
        (differences ~1e-14).
    workers : int, optional
        Without ``client``: local processes for the row blocks (default 1, this process).

    Returns
    -------
    PhaseDiagram

    Raises
    ------
    GridTooLargeError
        If the grid needs more memory than allowed; the message gives the size needed.
    ValueError
        For empty, negative, non-finite or unsorted grids.
    """
    act = activation(act)
    rho = _validate.keep_probability(rho)
    sw = _grid("sigma_w2", sigma_w2, np.linspace(0.5, 5.0, 200))
    sb = _grid("sigma_b2", sigma_b2, np.linspace(0.0, 2.0, 200))
    need = required_memory(sw.size, sb.size)
    limit = _validate.memory_limit(memory_limit)
    if need > limit:
        raise GridTooLargeError(
            f"a {sb.size} x {sw.size} (sigma_b2 x sigma_w2) grid needs about {_validate.format_bytes(need)} of memory "
            f"({_BYTES_PER_POINT} bytes per point), more than memory_limit = {_validate.format_bytes(limit)}; "
            "use a coarser grid or raise memory_limit")
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be a callable progress(done, total), got {type(progress).__name__}")
    act.derivative(1)  # a clear error now if chi_1 is undefined
    if norm is not None or batch_size is not None:
        analyze(act, 1.0, 0.0, norm=norm, batch_size=batch_size, rho=rho)  # validates the architecture
        if np.any(sw <= 0):
            raise ValueError("sigma_w2 must be positive with normalisation: start the sigma_w2 grid above 0")
    if client is not None or (workers is not None and _validate.positive_int("workers", workers) > 1):
        options = dict(memory_limit=memory_limit, norm=norm, batch_size=batch_size)
        return sweeps.diagrams([act], sw, sb, rho, options, client, workers, progress)[0]
    eng = engine(act)
    n = sw.size * sb.size
    out = {name: np.empty(n) for name in _FIELDS}
    code = np.empty(n, dtype=np.int8)
    n_ref = 0
    for start in range(0, n, _CHUNK):
        stop = min(n, start + _CHUNK)
        flat = np.arange(start, stop)
        w = sw[flat % sw.size]
        b = sb[flat // sw.size]
        if norm is None:
            res, c, nr = _chunk(eng, act, w, b, rho)
        else:
            res, c, nr = norm_fields.chunk(eng, act, w, b, norm, batch_size)
        for name in _FIELDS:
            out[name][start:stop] = res[name]
        code[start:stop] = c
        n_ref += nr
        if progress is not None:
            progress(stop, n)
    crit = _critical_sigma_w2(eng, act, sb, rho) if norm is None else norm_fields.critical_line(eng, sb, norm)
    shape = (sb.size, sw.size)
    phase = np.array(PHASES)[code.reshape(shape)]
    return PhaseDiagram(activation=act.name, sigma_w2=sw, sigma_b2=sb, rho=rho, phase=phase,
                        critical_line=crit, n_reference=n_ref, norm=norm, batch_size=batch_size,
                        **{name: out[name].reshape(shape) for name in _FIELDS})


def phase_diagrams(acts, sigma_w2: ArrayLike | None = None, sigma_b2: ArrayLike | None = None,
                   rho: float = 1.0, *, client=None, workers: int | None = None,
                   progress: Callable[[int, int], None] | None = None, memory_limit: float | None = None,
                   norm: str | None = None, batch_size: int | None = None) -> list[PhaseDiagram]:
    """:func:`phase_diagram` of every activation in ``acts`` on one grid, as one parallel sweep.

    The grids of all the activations are cut into blocks of rows, and all the blocks are
    computed together, on the Dask cluster of ``client`` or in ``workers`` local processes; each
    diagram is the one :func:`phase_diagram` computes in one process (see its ``client``).

    Parameters
    ----------
    acts : sequence of Activation or str
        The activations (names, expressions, or activations built from module-level callables).
    sigma_w2, sigma_b2, rho, memory_limit, norm, batch_size, client, workers
        As in :func:`phase_diagram` (``memory_limit`` is per diagram).
    progress : callable, optional
        Called as ``progress(done, total)``, in grid points over all the diagrams.

    Returns
    -------
    list of PhaseDiagram
        In the order of ``acts``.
    """
    if isinstance(acts, (str, Activation)) or not hasattr(acts, "__iter__"):
        raise TypeError(f"acts must be a list of activations, got {type(acts).__name__}; "
                        "for one activation use phase_diagram")
    acts = [activation(a) for a in acts]
    if not acts:
        raise ValueError("acts is empty: give at least one activation")
    if workers is not None:
        workers = _validate.positive_int("workers", workers)
    options = dict(memory_limit=memory_limit, norm=norm, batch_size=batch_size)
    # every check (grids, memory, architecture, derivatives) before any work is sent anywhere
    sw = _grid("sigma_w2", sigma_w2, np.linspace(0.5, 5.0, 200))
    sb = _grid("sigma_b2", sigma_b2, np.linspace(0.0, 2.0, 200))
    for act in acts:
        phase_diagram(act, sw, sb[:1], rho, **options)
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be a callable progress(done, total), got {type(progress).__name__}")
    if client is None and (workers or 1) == 1:
        return [phase_diagram(act, sw, sb, rho, **options) for act in acts]
    need = required_memory(sw.size, sb.size)
    if need > _validate.memory_limit(memory_limit):
        phase_diagram(acts[0], sw, sb, rho, **options)  # raises GridTooLargeError with the sizes
    return sweeps.diagrams(acts, sw, sb, _validate.keep_probability(rho), options, client, workers, progress)


def _chunk(eng: Engine, act: Activation, w, b, rho):
    """All fields for flat arrays of points: the layer rule with the engine's expectations."""
    n = w.size
    layer = Dense(act, w, b, rho)

    def E(kind, q1, q2=None, c=None):  # one-dimensional kinds from the engine's tables
        return eng.one_dim((kind,), q1)[0]

    qs, _ = eng.q_star(w, b, rho)
    fin = np.isfinite(qs)
    chi1 = layer.chi_1(qs, E)
    q_slope = np.full(n, np.inf)
    if fin.any():
        q_slope[fin] = layer.select(fin).q_slope(qs[fin], E)
    cs = np.empty(n)
    chic = np.empty(n)
    # limits: q* = inf, or q* = 0 (zero bias): the equivalent homogeneous layer does not depend on
    # the variances, so one point of each group answers for all (sigma_w2 = 0: every input maps to 0)
    for group in (~fin, fin & (qs == 0) & (w > 0), fin & (qs == 0) & (w == 0)):
        idx = np.flatnonzero(group)
        if idx.size:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                cs[idx], chic[idx] = solve_c_star(layer.select(idx[:1]), qs[idx[:1]])[:2]
    pos = fin & (qs > 0)
    if rho == 1.0:  # ordered: c* = 1 and chi_c = chi_1 (Schoenholz et al. 2017), as in the core
        ordered = pos & (chi1 <= 1.0)
        cs[ordered] = 1.0
        chic[ordered] = chi1[ordered]
        pos &= ~ordered
    n_ref = 0
    idx = np.flatnonzero(pos)
    if idx.size:
        c_i, x_i, ok = eng.c_star(w[idx], qs[idx], rho)
        cs[idx], chic[idx] = c_i, x_i
        bad = idx[~ok]
        if bad.size:  # per point, by the core: slow but exact
            cs[bad], chic[bad] = solve_c_star(layer.select(bad), qs[bad])[:2]
            n_ref += bad.size
    derived, code = fields_at(layer, qs, q_slope, cs, chic, chi1)
    return dict(q_star=qs, c_star=cs, chi_1=chi1, chi_c=chic, **derived), code, n_ref


def _critical_sigma_w2(eng: Engine, act, sb, rho):
    """sigma_w2 on chi_1 = 1 for each sigma_b2, from the tables (see :func:`meanfield.critical_sigma_w2`)."""
    return critical_search(act, lambda q: eng.one_dim(("phi2", "dphi2"), q), sb, rho)
