"""BFGS and L-BFGS for minima, with an Armijo line search and curvature-safe updates."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax import lax

from ._base import (
    STALL_QUASI_NEWTON,
    Problem,
    Solver,
    SolverResult,
    Tracker,
    converged_within,
    max_norm,
    residual_scale,
    residual_within,
    validate_positive_int,
    validate_tolerance,
)
from ._linesearch import backtrack

__all__ = ["BFGS", "LBFGS"]


def _validate(self, name):
    validate_tolerance(self.rtol, "rtol", name)
    validate_tolerance(self.atol, "atol", name)
    validate_positive_int(self.max_steps, "max_steps", name)


def _initial_scale(g):
    # First step -g / max(|g|, 1): a unit-length first move when the gradient is large.
    return 1.0 / jnp.maximum(jnp.linalg.norm(g), 1.0)


def _curvature_ok(s, yv):
    # Skip the update unless s.y > 0 clearly: an Armijo-only line search does not
    # guarantee the curvature condition, and a bad pair ruins the inverse Hessian.
    sy = jnp.vdot(s, yv)
    return sy > 1e-10 * jnp.linalg.norm(s) * jnp.linalg.norm(yv), sy


def _convergence_test(rtol, atol, g0_norm):
    """``done(y, f(y), g, p, informed)``: the shared test with the quasi-Newton step ``p``.

    ``p = -H g`` estimates ``y - y*`` only once ``H`` has learnt the curvature from at
    least one accepted ``(s, y)`` pair (``informed``); before that it is ``-g`` up to a
    guessed scale, and a small gradient must not be mistaken for a small step.
    """

    def done(y, fy, g, p, informed):
        delta = jnp.where(informed & jnp.all(jnp.isfinite(p)), max_norm(p), jnp.inf)
        return converged_within(
            "argmin", g, y, rtol, atol, step_norm=delta, start_norm=g0_norm, value=fy
        )

    return done


def _gradient_decreased(g):
    # The line search's rescue where the objective is flat to rounding: accept a step
    # that reduces the gradient norm (see backtrack).
    gnorm = jnp.linalg.norm(g)
    return lambda g_t: jnp.linalg.norm(g_t) < gnorm


def _skip_if_inactive(state, active, max_steps, *, k_index):
    # An inactive start (a Newton fallback not needed for this element) begins with its
    # step counter at max_steps, so the loop does nothing for it, even under vmap.
    if active is None:
        return state
    k = jnp.where(active, state[k_index], max_steps)
    return (*state[:k_index], k, *state[k_index + 1 :])


def _result(done, rtol, atol, y, fy, g, p, informed, k, tracker):
    delta = jnp.where(informed & jnp.all(jnp.isfinite(p)), max_norm(p), jnp.inf)
    ok = done(y, fy, g, p, informed) & jnp.isfinite(fy)
    return tracker.result(
        y,
        ok,
        k,
        g,
        rtol=rtol,
        atol=atol,
        window=STALL_QUASI_NEWTON,
        delta=delta,
        finite=jnp.isfinite(fy),
        residual_ok=residual_within(max_norm(g), residual_scale("argmin", g, fy), rtol, atol),
    )


@dataclasses.dataclass(frozen=True)
class BFGS(Solver):
    """Dense BFGS (inverse-Hessian form) for minima; ``O(n^2)`` per step.

    No Hessian is formed, so it suits objectives whose second derivatives are costly;
    for small smooth problems :class:`~mcmc_customgrad.solvers.Newton` usually needs far
    fewer steps. Converged when ``|grad|_inf <= atol + rtol |f(y)|`` and the next
    quasi-Newton step ``-H grad`` is below ``atol + rtol |y|_inf`` once ``H`` has learnt
    the curvature from an accepted step (so never at ``y0``), or the gradient has fallen
    below ``rtol`` times its value at ``y0``
    (:func:`~mcmc_customgrad.implicit._base.converged_within`).

    Parameters
    ----------
    rtol, atol : float, optional
        Tolerances; ``None`` means ``1e-10`` in float64 (``1000 eps`` in lower
        precisions).
    max_steps : int
        Iterations before giving up.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import mcmc_customgrad as mcg
    >>> f = lambda y, a: jnp.sum((y - a) ** 2) + jnp.sum(y) ** 2
    >>> y = mcg.argmin(f, jnp.zeros(2), jnp.array([1.0, 2.0]), solver=mcg.solvers.BFGS())
    >>> [round(v, 10) for v in y.tolist()]
    [0.0, 1.0]
    """

    rtol: float | None = None
    atol: float | None = None
    max_steps: int = 1000
    kinds = ("argmin",)

    def __post_init__(self):
        _validate(self, "BFGS")

    def run(self, problem: Problem, y0, params, active=None) -> SolverResult:
        """Minimise from ``y0``; ``active=False`` returns ``y0`` unsolved (a fallback's skip)."""
        rtol, atol = self.tolerances(problem.dtype)

        def f(y):
            return problem.objective(y, params)

        value_and_grad = jax.value_and_grad(f)
        n = y0.shape[0]
        eye = jnp.eye(n, dtype=y0.dtype)
        f0, g0 = value_and_grad(y0)
        done = _convergence_test(rtol, atol, max_norm(g0))

        def cond(state):
            y, fy, g, _, p, informed, k, tracker = state
            finite = jnp.isfinite(fy) & jnp.all(jnp.isfinite(g))
            going = (k < self.max_steps) & ~tracker.stagnated(STALL_QUASI_NEWTON)
            return going & ~done(y, fy, g, p, informed) & finite

        def body(state):
            y, fy, g, hinv, p, informed, k, tracker = state
            slope = jnp.vdot(g, p)
            descent = jnp.all(jnp.isfinite(p)) & (slope < 0)
            # Not a descent direction: restart from a scaled identity.
            hinv = jnp.where(descent, hinv, _initial_scale(g) * eye)
            p = jnp.where(descent, p, -hinv @ g)
            slope = jnp.where(descent, slope, jnp.vdot(g, p))
            alpha, f_new, g_new, accepted = backtrack(
                value_and_grad, y, fy, p, slope, flat=_gradient_decreased(g)
            )
            y_new = jnp.where(accepted, y + alpha * p, y)
            f_new, g_new = jnp.where(accepted, f_new, fy), jnp.where(accepted, g_new, g)
            s, yv = y_new - y, g_new - g
            good, sy = _curvature_ok(s, yv)
            rho = jnp.where(good, 1.0 / jnp.where(good, sy, 1.0), 0.0)
            # Nocedal & Wright's first-step rescaling of H0 before the first update.
            gamma = jnp.where(good, sy / jnp.vdot(yv, yv), 1.0)
            hinv = jnp.where((k == 0) & good, gamma * eye, hinv)
            # H+ = (I - rho s y')H(I - rho y s') + rho s s', expanded to O(n^2):
            # H+ = H - rho (s (Hy)' + (Hy) s') + (rho^2 y'Hy + rho) s s'.
            hy = hinv @ yv
            hinv_new = (
                hinv
                - rho * (jnp.outer(s, hy) + jnp.outer(hy, s))
                + (rho**2 * jnp.vdot(yv, hy) + rho) * jnp.outer(s, s)
            )
            hinv = jnp.where(good, hinv_new, hinv)
            # The next step, computed here so that the convergence test at y_new sees it.
            p_new = -hinv @ g_new
            tracker = tracker.update(accepted, max_norm(g_new), max_norm(s), f_new)
            return y_new, f_new, g_new, hinv, p_new, informed | good, k + 1, tracker

        hinv0 = _initial_scale(g0) * eye
        tracker0 = Tracker.start(max_norm(g0), f0)
        start = (y0, f0, g0, hinv0, -hinv0 @ g0, jnp.array(False), 0, tracker0)
        state = _skip_if_inactive(start, active, self.max_steps, k_index=6)
        y, fy, g, _, p, informed, k, tracker = lax.while_loop(cond, body, state)
        return _result(done, rtol, atol, y, fy, g, p, informed, k, tracker)


@dataclasses.dataclass(frozen=True)
class LBFGS(Solver):
    """Limited-memory BFGS for large minima; ``O(memory * n)`` per step.

    The default for ``argmin``/``min_value`` above 32 unknowns (or without second
    derivatives). Converged as :class:`BFGS` is: ``|grad|_inf <= atol + rtol |f(y)|``
    and a next step below ``atol + rtol |y|_inf`` (once a curvature pair is stored), or
    a gradient fallen below ``rtol`` times its value at ``y0``. Unlike Blackjax's
    Laplace marginal it never stops silently: running out of ``max_steps`` gives NaN
    and ``converged=False`` (status ``MAX_STEPS``), and ``STALL_QUASI_NEWTON = 25``
    steps in a row without progress in the objective or the gradient stop it early
    (``STAGNATED``), where a gradient has hit its rounding floor above the tolerance;
    a stall with the gradient within its tolerance is accepted as ``DEGENERATE`` (the
    minimiser is not unique, or not determined to rounding).
    Where the objective is flat to rounding the line search accepts a step that lowers
    the gradient norm (see :func:`~mcmc_customgrad.implicit._linesearch.backtrack`).

    Parameters
    ----------
    rtol, atol : float, optional
        Tolerances; ``None`` means ``1e-10`` in float64 (``1000 eps`` in lower
        precisions).
    max_steps : int
        Iterations before giving up.
    memory : int
        Number of curvature pairs kept.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import mcmc_customgrad as mcg
    >>> f = lambda y, a: jnp.sum((y - a) ** 2 * jnp.arange(1.0, 6.0))
    >>> y = mcg.argmin(f, jnp.zeros(5), jnp.ones(5), solver=mcg.solvers.LBFGS(memory=3))
    >>> bool(jnp.allclose(y, 1.0, atol=1e-9))
    True
    """

    rtol: float | None = None
    atol: float | None = None
    max_steps: int = 2000
    memory: int = 10
    kinds = ("argmin",)

    def __post_init__(self):
        _validate(self, "LBFGS")
        validate_positive_int(self.memory, "memory", "LBFGS")

    def run(self, problem: Problem, y0, params, active=None) -> SolverResult:
        """Minimise from ``y0``; ``active=False`` returns ``y0`` unsolved (a fallback's skip)."""
        rtol, atol = self.tolerances(problem.dtype)
        m = self.memory

        def f(y):
            return problem.objective(y, params)

        value_and_grad = jax.value_and_grad(f)
        n = y0.shape[0]
        f0, g0 = value_and_grad(y0)
        done = _convergence_test(rtol, atol, max_norm(g0))

        def direction(g, s_hist, y_hist, rho, count, gamma):
            # Two-loop recursion over the valid pairs. The history is a shift register
            # (slot m - 1 newest), so the slot is the loop counter and never batched:
            # under vmap a batched index into the history becomes a gather and a
            # scatter per pair, which made a batch of 4 solves 5x slower than one.
            def first(i, carry):
                q, a = carry
                j = m - 1 - i
                ai = jnp.where(i < count, rho[j] * jnp.vdot(s_hist[j], q), 0.0)
                return q - ai * y_hist[j], a.at[j].set(ai)

            q, a = lax.fori_loop(0, m, first, (g, jnp.zeros(m, g.dtype)))

            def second(i, r):
                j = i  # oldest first
                b = rho[j] * jnp.vdot(y_hist[j], r)
                return r + jnp.where(m - 1 - j < count, a[j] - b, 0.0) * s_hist[j]

            return -lax.fori_loop(0, m, second, gamma * q)

        def cond(state):
            y, fy, g, p, informed, k, tracker = (state[i] for i in (0, 1, 2, 8, 9, 10, 11))
            finite = jnp.isfinite(fy) & jnp.all(jnp.isfinite(g))
            going = (k < self.max_steps) & ~tracker.stagnated(STALL_QUASI_NEWTON)
            return going & ~done(y, fy, g, p, informed) & finite

        def body(state):
            y, fy, g, s_hist, y_hist, rho, count, gamma, p, informed, k, tracker = state
            slope = jnp.vdot(g, p)
            descent = jnp.all(jnp.isfinite(p)) & (slope < 0)
            p_restart = -_initial_scale(g) * g
            p = jnp.where(descent, p, p_restart)
            slope = jnp.where(descent, slope, jnp.vdot(g, p_restart))
            count = jnp.where(descent, count, 0)
            alpha, f_new, g_new, accepted = backtrack(
                value_and_grad, y, fy, p, slope, flat=_gradient_decreased(g)
            )
            y_new = jnp.where(accepted, y + alpha * p, y)
            f_new, g_new = jnp.where(accepted, f_new, fy), jnp.where(accepted, g_new, g)
            s, yv = y_new - y, g_new - g
            good, sy = _curvature_ok(s, yv)
            rho_new = 1.0 / jnp.where(good, sy, 1.0)

            def push(hist, new):
                return jnp.where(good, jnp.concatenate([hist[1:], new[None]]), hist)

            s_hist, y_hist, rho = push(s_hist, s), push(y_hist, yv), push(rho, rho_new)
            gamma = jnp.where(good, sy / jnp.vdot(yv, yv), gamma)
            count = jnp.where(good, jnp.minimum(count + 1, m), count)
            # The next step, computed here so that the convergence test at y_new sees it.
            p_new = direction(g_new, s_hist, y_hist, rho, count, gamma)
            informed = informed | good
            tracker = tracker.update(accepted, max_norm(g_new), max_norm(s), f_new)
            return (
                y_new,
                f_new,
                g_new,
                s_hist,
                y_hist,
                rho,
                count,
                gamma,
                p_new,
                informed,
                k + 1,
                tracker,
            )

        zeros = jnp.zeros((m, n), y0.dtype)
        gamma0 = _initial_scale(g0)
        state = (
            y0,
            f0,
            g0,
            zeros,
            zeros,
            jnp.zeros(m, y0.dtype),
            0,
            gamma0,
            -gamma0 * g0,
            jnp.array(False),
            0,
            Tracker.start(max_norm(g0), f0),
        )
        state = _skip_if_inactive(state, active, self.max_steps, k_index=10)
        final = lax.while_loop(cond, body, state)
        y, fy, g, p, informed, k, tracker = (final[i] for i in (0, 1, 2, 8, 9, 10, 11))
        return _result(done, rtol, atol, y, fy, g, p, informed, k, tracker)
