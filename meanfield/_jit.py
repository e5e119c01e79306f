r"""Compiled kernels whose on-disk cache lives in the user's cache directory, never in the package.

numba's default cache goes to ``__pycache__`` beside the source file, that is into
``site-packages/meanfield``; a later ``pip install -e .`` removes the package but leaves that
folder behind, and Python then imports it as an empty namespace package.  :func:`jit` compiles
with ``cache=True`` through a cache locator that serves only this package's files and writes to
:func:`cache_dir`: ``$MEANFIELD_CACHE_DIR`` if set, else the platform's user cache directory
(``$XDG_CACHE_HOME/meanfield`` or ``~/.cache/meanfield`` on Linux, ``~/Library/Caches/meanfield``
on macOS, ``%LOCALAPPDATA%\\meanfield`` on Windows).  Where that directory cannot be written, the
kernels are compiled without a disk cache (slower start, same results).
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
import tempfile

import numba

__all__ = ["jit", "cache_dir"]

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def cache_dir() -> str:
    """The directory compiled kernels are cached in (see the module docstring)."""
    env = os.environ.get("MEANFIELD_CACHE_DIR")
    if env:
        return os.path.abspath(os.path.expanduser(env))
    if sys.platform == "win32":  # pragma: no cover - platform specific
        base = os.environ.get("LOCALAPPDATA") or os.path.expanduser("~\\AppData\\Local")
    elif sys.platform == "darwin":  # pragma: no cover - platform specific
        base = os.path.expanduser("~/Library/Caches")
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "meanfield")


def _writable(path: str) -> bool:
    try:
        os.makedirs(path, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError:
        return False
    return True


class _Locator:
    """numba cache locator for the functions of this package (the interface of numba's locators)."""

    def __init__(self, py_func, py_file):
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        folder = os.path.dirname(os.path.abspath(py_file))
        tag = hashlib.sha1(folder.encode()).hexdigest()[:16]
        self._path = os.path.join(cache_dir(), f"numba-{numba.__version__}", tag)

    def ensure_cache_path(self):
        os.makedirs(self._path, exist_ok=True)
        tempfile.TemporaryFile(dir=self._path).close()

    def get_cache_path(self):
        return self._path

    def get_source_stamp(self):
        st = os.stat(self._py_file)
        return st.st_mtime, st.st_size

    def get_disambiguator(self):
        return str(self._lineno)

    @classmethod
    def from_function(cls, py_func, py_file):
        if os.path.dirname(os.path.abspath(py_file)) != _PACKAGE_DIR:
            return None  # not ours: numba's own locators decide
        self = cls(py_func, py_file)
        try:
            self.ensure_cache_path()
        except OSError:  # never fall back to numba's default, which writes into the package
            self._path = tempfile.mkdtemp(prefix="meanfield-numba-")
        return self


@functools.lru_cache(maxsize=1)
def _install_locator() -> bool:
    """Put :class:`_Locator` first in numba's list; False if that list cannot be reached."""
    from numba.core import caching

    impl = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl", None)
    classes = getattr(impl, "_locator_classes", None)
    if not isinstance(classes, list):  # pragma: no cover - a numba without this hook
        return False
    if _Locator not in classes:
        classes.insert(0, _Locator)
    return True


def jit(**options):
    """``numba.njit(**options)`` with the on-disk cache in :func:`cache_dir`.

    Without a usable cache directory (or numba's locator hook) the kernel is compiled in each
    process instead of being cached: never written into the installed package.
    """
    cache = _install_locator() and _writable(cache_dir())
    return numba.njit(cache=cache, **options)
