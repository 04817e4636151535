"""Backtracking Armijo line search shared by the Newton and quasi-Newton solvers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

#: Sufficient-decrease constant of the Armijo condition.
C1 = 1e-4
#: Halvings before a direction is rejected (2**-40 ~ 1e-12).
MAX_HALVINGS = 40
#: Halvings during which a step must also satisfy ``prefer`` (see :func:`backtrack`).
PREFER_HALVINGS = 4


def backtrack(evaluate, y, merit_y, p, slope, prefer=None):
    """Largest ``alpha`` in ``1, 1/2, 1/4, ...`` with sufficient decrease along ``p``.

    ``evaluate(y) -> (merit, aux)``; ``aux`` (say the gradient at the trial point) is
    returned for the accepted point so the caller need not evaluate it again.

    The Armijo test is ``merit(y + alpha p) <= merit(y) + C1 alpha slope + 8 eps
    |merit(y)|``: the last term tolerates rounding noise in the merit, without which
    Newton stalls one step short of convergence (the decrease it predicts there is below
    ``eps |merit|``). A non-finite trial value (an overflow, a NaN) always fails, which
    keeps a Newton step on a Poisson log-likelihood from jumping to ``exp(huge)``.

    ``prefer(aux) -> bool``, if given, must also hold during the first
    ``PREFER_HALVINGS`` halvings; if no such step is found the largest Armijo step is
    taken. The Newton minimiser prefers steps that do not increase the gradient norm,
    which stops the overshoot-and-return oscillation of Newton on objectives whose
    curvature blows up near the solution (``|y|^p`` with ``p < 2`` near 0).

    Returns
    -------
    alpha, merit_new, aux_new, accepted
        ``accepted`` is False when ``MAX_HALVINGS`` halvings found no decrease; the
        caller then keeps ``y`` (and must not use ``aux_new``).
    """
    eps = jnp.finfo(y.dtype).eps
    noise = 8 * eps * jnp.abs(merit_y)

    def armijo_at(alpha, m):
        return jnp.isfinite(m) & (m <= merit_y + C1 * alpha * slope + noise)

    def preferred(alpha, m, aux):
        ok = armijo_at(alpha, m)
        return ok if prefer is None else ok & prefer(aux)

    def remember(trial, fallback):
        # The fallback is the largest Armijo step evaluated so far (this trial included).
        take = armijo_at(trial[0], trial[1]) & ~fallback[3]
        return jax.tree.map(lambda new, old: jnp.where(take, new, old), (*trial, True), fallback)

    def cond(state):
        trial, fallback, i = state
        stop = preferred(*trial) | (fallback[3] & (i >= PREFER_HALVINGS))
        return ~stop & (i < MAX_HALVINGS)

    def body(state):
        trial, fallback, i = state
        alpha = 0.5 * trial[0]
        trial = (alpha, *evaluate(y + alpha * p))
        return trial, remember(trial, fallback), i + 1

    one = jnp.ones((), y.dtype)
    trial = (one, *evaluate(y + p))
    fallback = remember(trial, (one, *trial[1:], jnp.array(False)))
    trial, fallback, _ = lax.while_loop(cond, body, (trial, fallback, 0))
    use_fallback = ~preferred(*trial) & fallback[3]
    alpha, m, aux = jax.tree.map(lambda a, b: jnp.where(use_fallback, a, b), fallback[:3], trial)
    return alpha, m, aux, armijo_at(alpha, m)
