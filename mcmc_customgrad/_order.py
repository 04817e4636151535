"""Ordering independent computations inside one compiled program (XLA:CPU workaround)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["after"]


def after(tree, dependencies):
    """``tree`` unchanged, but computed only once ``dependencies`` are.

    Independent parts of one program (the pieces of a draw's pass in the sampler: generated
    quantities, solver statistics, the log-likelihood; the value, gradient and Hessians
    that :func:`~mcmc_customgrad.check_gradients` takes at its points) each evaluate the
    density, and XLA:CPU runs independent parts at once. Two batched LAPACK kernels of
    jaxlib 0.10 running at once on a 2-thread pool can deadlock it (each blocks a thread
    waiting for batch chunks queued behind the other), so where the parts contain batched
    solves they are chained: adding a zero computed from ``dependencies`` to ``tree``'s
    floating leaves makes XLA finish the dependencies first. The values are unchanged (the
    zero is exact, whatever the dependencies hold, NaN and infinity included).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from mcmc_customgrad._order import after
    >>> float(after(jnp.array(2.0), {"a": jnp.array([jnp.nan, 1.0])}))
    2.0
    """
    sums = [
        jnp.sum(jnp.where(jnp.isfinite(x), x, 0.0))
        for x in jax.tree.leaves(dependencies)
        if jnp.issubdtype(jnp.result_type(x), jnp.floating)
    ]
    if not sums:
        return tree
    total = sum(sums)
    zero = jnp.minimum(jnp.abs(jnp.where(jnp.isfinite(total), total, 0.0)), 0.0)

    def add(x):
        return x + zero.astype(x.dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x

    return jax.tree.map(add, tree)
