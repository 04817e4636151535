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
#: Relative change of the merit below which it is treated as flat to rounding when no
#: Armijo step exists (Hager and Zhang's approximate-Wolfe ``epsilon``).
FLAT_RTOL = 1e-6


def backtrack(evaluate, y, merit_y, p, slope, prefer=None, flat=None, noise=None):
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

    ``flat(aux) -> bool``, if given, rescues a search that finds no Armijo step: the
    largest ``alpha`` whose merit is within ``FLAT_RTOL |merit(y)|`` of ``merit(y)`` and
    where ``flat`` holds is taken (the minimisers pass "the gradient norm decreased").
    Near a minimum whose objective is a sum with cancellation (a least-squares
    objective near a small non-zero minimum), rounding in the merit is far above
    ``eps |merit|``: every trial looks like an increase, and without this the solver
    would repeat the same rejected step until ``max_steps``. This is Hager and Zhang's
    approximate Wolfe condition, with the gradient norm as the curvature test; the
    answer is still judged by the solver's convergence test, never by the line search.

    ``noise``, if given, replaces ``8 eps |merit(y)|`` as the rounding tolerance of the
    Armijo test (it is never smaller): a caller whose merit is a sum of large terms that
    cancel knows its rounding better (the GMRF Newton passes ``eps`` times the size of
    the quadratic form's terms).

    Returns
    -------
    alpha, merit_new, aux_new, accepted
        ``accepted`` is False when ``MAX_HALVINGS`` halvings found no acceptable step;
        the caller then keeps ``y`` (and must not use ``aux_new``).
    """
    eps = jnp.finfo(y.dtype).eps
    noise = (
        8 * eps * jnp.abs(merit_y)
        if noise is None
        else jnp.maximum(noise, 8 * eps * jnp.abs(merit_y))
    )
    flat_bound = merit_y + FLAT_RTOL * jnp.abs(merit_y) + noise

    def armijo_at(alpha, m):
        return jnp.isfinite(m) & (m <= merit_y + C1 * alpha * slope + noise)

    def preferred(alpha, m, aux):
        ok = armijo_at(alpha, m)
        return ok if prefer is None else ok & prefer(aux)

    def flat_at(alpha, m, aux):
        if flat is None:
            return jnp.array(False)
        return jnp.isfinite(m) & (m <= flat_bound) & flat(aux)

    def remember(trial, fallback, test):
        # The fallback is the largest step passing `test` evaluated so far (this trial
        # included).
        take = test(*trial) & ~fallback[3]
        return jax.tree.map(lambda new, old: jnp.where(take, new, old), (*trial, True), fallback)

    def armijo_test(alpha, m, aux):
        return armijo_at(alpha, m)

    def cond(state):
        trial, fallback, _, i = state
        stop = preferred(*trial) | (fallback[3] & (i >= PREFER_HALVINGS))
        return ~stop & (i < MAX_HALVINGS)

    def body(state):
        trial, fallback, rescue, i = state
        alpha = 0.5 * trial[0]
        trial = (alpha, *evaluate(y + alpha * p))
        return (
            trial,
            remember(trial, fallback, armijo_test),
            remember(trial, rescue, flat_at),
            i + 1,
        )

    def search(trial):
        empty = (one, *trial[1:], jnp.array(False))
        fallback = remember(trial, empty, armijo_test)
        rescue = remember(trial, empty, flat_at)
        trial, fallback, rescue, _ = lax.while_loop(cond, body, (trial, fallback, rescue, 0))
        use_fallback = ~preferred(*trial) & fallback[3]
        alpha, m, aux = jax.tree.map(
            lambda a, b: jnp.where(use_fallback, a, b), fallback[:3], trial
        )
        accepted = armijo_at(alpha, m)
        if flat is not None:
            use_rescue = ~accepted & rescue[3]
            alpha, m, aux = jax.tree.map(
                lambda a, b: jnp.where(use_rescue, a, b), rescue[:3], (alpha, m, aux)
            )
            accepted = accepted | use_rescue
        return alpha, m, aux, accepted

    def take(trial):
        return (*trial, jnp.array(True))

    one = jnp.ones((), y.dtype)
    trial = (one, *evaluate(y + p))
    # The full step is what a Newton step near the solution takes: accepted without the
    # search's bookkeeping (in a compiled solve, its loop and selects cost more kernels
    # per pass than a small problem's whole step). The result is the same either way.
    return lax.cond(preferred(*trial), take, search, trial)
