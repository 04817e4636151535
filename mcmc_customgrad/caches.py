"""Compiled-program caches, and how to empty them.

The library keeps compiled programs so that repeated calls do not recompile: inner-solve
cores (per problem, solver and options), samplers (per log-density, settings and
shapes), the per-draw statistics pass, the initialisation check, the Laplace marginals,
the diagnostics' simulation-based calibration fits, and the sparsity patterns and sparse
factorisations of :class:`mcmc_customgrad.linear.Sparse`. Each compiled XLA:CPU program
holds operating-system memory mappings for its machine code, roughly 3 per small kernel
and 1,500 per sampler configuration, and Linux caps a process at ``vm.max_map_count``
mappings (65,530 by default); past it, compilation crashes the process. The caches are
bounded well below that, but a long session that samples many different models can also
fill JAX's own caches: call :func:`clear_caches` between unrelated jobs.
"""

from __future__ import annotations

import collections
import functools
import gc
import sys
from collections.abc import Callable

import jax

__all__ = ["clear_caches", "LRU", "lru_cache", "register"]

# What clear_caches empties: one zero-argument function per cache, registered by the
# cache itself when its module is imported (so this module imports nothing of the
# package, and a new cache cannot be forgotten here).
_CLEARERS: list[Callable[[], None]] = []


def register(clear: Callable[[], None]) -> Callable[[], None]:
    """Have :func:`clear_caches` call ``clear`` (a function that empties one cache).

    Returns ``clear``. For caches that are neither an :class:`LRU` nor built by
    :func:`lru_cache`, which register themselves.

    Examples
    --------
    >>> import weakref
    >>> from mcmc_customgrad.caches import register
    >>> seen = weakref.WeakKeyDictionary()
    >>> _ = register(seen.clear)
    """
    _CLEARERS.append(clear)
    return clear


class LRU:
    """A bounded least-recently-used map of compiled programs that registers itself.

    Parameters
    ----------
    maxsize : int
        Entries kept; the least recently used is dropped beyond it.

    Examples
    --------
    >>> from mcmc_customgrad.caches import LRU
    >>> cache = LRU(2)
    >>> cache.put("a", 1); cache.put("b", 2); cache.put("c", 3)
    >>> cache.get("a"), cache.get("c"), len(cache), "b" in cache
    (None, 3, 2, True)
    >>> cache.get_or_build("d", lambda: 4)
    4
    """

    def __init__(self, maxsize: int):
        self.maxsize = int(maxsize)
        self.data: collections.OrderedDict = collections.OrderedDict()
        register(self.clear)

    def get(self, key):
        """The value stored under ``key`` (now the most recently used), or None."""
        value = self.data.get(key)
        if value is not None:
            self.data.move_to_end(key)
        return value

    def put(self, key, value) -> None:
        """Store ``value`` under ``key``, dropping the least recently used beyond ``maxsize``."""
        self.data[key] = value
        self.data.move_to_end(key)
        while len(self.data) > self.maxsize:
            self.data.popitem(last=False)

    def get_or_build(self, key, build: Callable[[], object]):
        """The value under ``key``, built by ``build()`` and stored if there is none."""
        value = self.get(key)
        if value is None:
            value = build()
            self.put(key, value)
        return value

    def clear(self) -> None:
        """Drop every entry."""
        self.data.clear()

    def __len__(self) -> int:
        return len(self.data)

    def __contains__(self, key) -> bool:
        return key in self.data


def lru_cache(maxsize: int):
    """:func:`functools.lru_cache` whose cache :func:`clear_caches` empties.

    Examples
    --------
    >>> from mcmc_customgrad.caches import lru_cache
    >>> @lru_cache(maxsize=8)
    ... def square(x):
    ...     return x * x
    >>> square(3), square.cache_info().currsize
    (9, 1)
    """

    def decorate(fn):
        cached = functools.lru_cache(maxsize=maxsize)(fn)
        register(cached.cache_clear)
        return cached

    return decorate


def clear_caches() -> None:
    """Drop every compiled program held by mcmc_customgrad and by JAX.

    The next call of each function recompiles. Use it between unrelated jobs in a long
    session (see the module notes on memory mappings).

    Examples
    --------
    >>> import mcmc_customgrad as mcg
    >>> mcg.clear_caches()
    """
    for clear in _CLEARERS:
        clear()
    jax.clear_caches()
    # SuiteSparse's symbolic analyses and LU/Cholesky factors of mcg.linear.Sparse
    # (docs/large.md, Memory); gigabytes at 10^6 unknowns. Not imported for this alone.
    if "sparsax" in sys.modules:
        sys.modules["sparsax"].clear_cache()
    gc.collect()
