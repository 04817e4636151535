"""Backtracking Armijo line search shared by the Newton and quasi-Newton solvers."""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

#: Sufficient-decrease constant of the Armijo condition.
C1 = 1e-4
#: Halvings before a direction is rejected (2**-40 ~ 1e-12).
MAX_HALVINGS = 40


def backtrack(merit, y, merit_y, p, slope):
    """Largest ``alpha`` in ``1, 1/2, 1/4, ...`` with sufficient decrease along ``p``.

    The test is ``merit(y + alpha p) <= merit(y) + C1 alpha slope + 8 eps |merit(y)|``:
    the last term tolerates rounding noise in the merit, without which Newton stalls one
    step short of convergence (the decrease it predicts there is below ``eps |merit|``).
    A non-finite trial value (an overflow, a NaN) always fails, which is what keeps a
    Newton step on a Poisson log-likelihood from jumping to ``exp(huge)``.

    Returns
    -------
    alpha, merit_new, accepted
        ``accepted`` is False when ``MAX_HALVINGS`` halvings found no decrease; the
        caller then keeps ``y``.
    """
    eps = jnp.finfo(y.dtype).eps
    noise = 8 * eps * jnp.abs(merit_y)

    def ok(alpha, m):
        return jnp.isfinite(m) & (m <= merit_y + C1 * alpha * slope + noise)

    def cond(state):
        alpha, m, i = state
        return (~ok(alpha, m)) & (i < MAX_HALVINGS)

    def body(state):
        alpha, _, i = state
        alpha = 0.5 * alpha
        return alpha, merit(y + alpha * p), i + 1

    one = jnp.ones((), y.dtype)
    alpha, m, _ = lax.while_loop(cond, body, (one, merit(y + p), 0))
    return alpha, m, ok(alpha, m)
