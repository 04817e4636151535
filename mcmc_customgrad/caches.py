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

import gc
import sys

import jax

__all__ = ["clear_caches"]


def clear_caches() -> None:
    """Drop every compiled program held by mcmc_customgrad and by JAX.

    The next call of each function recompiles. Use it between unrelated jobs in a long
    session (see the module notes on memory mappings).

    Examples
    --------
    >>> import mcmc_customgrad as mcg
    >>> mcg.clear_caches()
    """
    from .diagnostics.calibration import _CACHE as _SBC_CACHE
    from .diagnostics.calibration import _ecdf_null
    from .implicit._sparsity import _DETECTED
    from .implicit.envelope import _compiled_value
    from .implicit.root import _PROBLEMS, _compiled_core
    from .implicit.stats import _nested
    from .laplace import _CACHE as _LAPLACE_CACHE
    from .laplace import _CHECKED, _compiled_generic
    from .sampling._chains import _CACHE
    from .sampling.sample import _draw_one, _draw_pass, _value_and_grad_batched

    _PROBLEMS.data.clear()
    _DETECTED.clear()
    for cached in (
        _compiled_core,
        _compiled_value,
        _nested,
        _draw_one,
        _draw_pass,
        _value_and_grad_batched,
    ):
        cached.cache_clear()
    _CACHE.clear()
    _SBC_CACHE.clear()
    _LAPLACE_CACHE.data.clear()
    _CHECKED.data.clear()
    _compiled_generic.cache_clear()
    _ecdf_null.cache_clear()
    jax.clear_caches()
    # SuiteSparse's symbolic analyses and LU/Cholesky factors of mcg.linear.Sparse
    # (docs/large.md, Memory); gigabytes at 10^6 unknowns. Not imported for this alone.
    if "sparsax" in sys.modules:
        sys.modules["sparsax"].clear_cache()
    gc.collect()
