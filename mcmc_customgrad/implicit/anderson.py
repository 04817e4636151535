"""Fixed-point iteration, plain and Anderson-accelerated."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from jax import lax

from ._base import (
    Problem,
    Solver,
    SolverResult,
    converged_within,
    max_norm,
    validate_positive_int,
    validate_tolerance,
)

__all__ = ["FixedPointIteration", "Anderson"]


def _validate_common(self, name):
    validate_tolerance(self.rtol, "rtol", name)
    validate_tolerance(self.atol, "atol", name)
    validate_positive_int(self.max_steps, "max_steps", name)
    if not (isinstance(self.damping, int | float) and 0 < self.damping <= 1):
        raise ValueError(f"{name}: damping must be in (0, 1], got {self.damping!r}.")


def _secant_step_norm(y, r, y_prev, r_prev):
    """``|r|_inf / sigma`` with ``sigma = |r - r_prev|_inf / |y - y_prev|_inf``.

    ``sigma`` is the secant estimate, along the last step, of how fast the residual
    ``T(y) - y`` changes with ``y`` (``1 - L`` for a contraction with factor ``L``), so
    the result estimates the Newton step ``|(I - T')^-1 (T(y) - y)|``, the distance to
    the fixed point, which is ``1 / (1 - L)`` times the residual: a map that contracts
    slowly has small residuals far from its fixed point. NaN (no estimate) before the
    first step.
    """
    return max_norm(r) * max_norm(y - y_prev) / max_norm(r - r_prev)


def _done(y, r, y_prev, r_prev, r0_norm, rtol, atol):
    step = _secant_step_norm(y, r, y_prev, r_prev)
    return converged_within("fixed_point", r, y, rtol, atol, step_norm=step, start_norm=r0_norm)


@dataclasses.dataclass(frozen=True)
class FixedPointIteration(Solver):
    """Iterate ``y <- y + damping (T(y) - y)`` until ``y`` is known to tolerance.

    Converges linearly for a contraction (quadratically for maps like Newton's square
    root, seed 001). For fixed points only. A slowly contracting map has small residuals
    far from its fixed point (the error is about ``|T(y) - y| / (1 - L)`` for a
    contraction factor ``L``), so the residual test is joined by a step test on that
    estimate, with ``1 - L`` from the secant along the last step (see
    :func:`~mcmc_customgrad.implicit._base.converged_within`); a map with ``L`` near 1
    then takes more steps, or fails, instead of stopping early.

    Parameters
    ----------
    rtol, atol : float, optional
        Tolerances: converged when ``|T(y) - y|_inf <= atol + rtol |y|_inf`` and the
        estimated distance to the fixed point is below ``atol + rtol |y|_inf`` (or the
        residual has fallen below ``rtol`` times its value at ``y0``).
    max_steps : int
        Iterations before giving up.
    damping : float
        Relaxation in ``(0, 1]``; below 1 can tame an oscillating map.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import mcmc_customgrad as mcg
    >>> newton_sqrt = lambda x, a: 0.5 * (x + a / x)
    >>> s = lambda a: mcg.fixed_point(newton_sqrt, a, a,
    ...                               solver=mcg.solvers.FixedPointIteration())
    >>> round(float(s(2.0)), 10), round(float(jax.grad(s)(2.0)), 8)
    (1.4142135624, 0.35355339)
    """

    rtol: float | None = None
    atol: float | None = None
    max_steps: int = 1000
    damping: float = 1.0
    kinds = ("fixed_point",)

    def __post_init__(self):
        _validate_common(self, "FixedPointIteration")

    def run(self, problem: Problem, y0, params) -> SolverResult:
        """Iterate from ``y0``."""
        rtol, atol = self.tolerances(problem.dtype)

        def residual(y):
            return problem.residual(y, params)

        r0 = residual(y0)
        r0_norm = max_norm(r0)

        def done(state):
            y, r, y_prev, r_prev, _ = state
            return _done(y, r, y_prev, r_prev, r0_norm, rtol, atol)

        def cond(state):
            k, r = state[4], state[1]
            return (k < self.max_steps) & ~done(state) & jnp.all(jnp.isfinite(r))

        def body(state):
            y, r, _, _, k = state
            y_new = y + self.damping * r
            return y_new, residual(y_new), y, r, k + 1

        state = lax.while_loop(cond, body, (y0, r0, y0, r0, 0))
        y, r, k = state[0], state[1], state[4]
        return SolverResult(y, done(state), k, max_norm(r))


@dataclasses.dataclass(frozen=True)
class Anderson(Solver):
    """Anderson acceleration (type II) of a fixed-point iteration.

    Keeps the last ``memory`` iterates ``y_i`` and residuals ``r_i = T(y_i) - y_i`` and
    moves to ``sum_i a_i (y_i + damping r_i)`` with weights minimising
    ``|sum_i a_i r_i|`` subject to ``sum_i a_i = 1`` (a ridge-regularised
    ``memory x memory`` solve). Falls back to a plain damped step if that solve breaks
    down. The default for fixed points above 500 unknowns.

    Converged as :class:`FixedPointIteration` is: a small residual and a small secant
    estimate of the distance to the fixed point.

    Parameters
    ----------
    rtol, atol : float, optional
        Tolerances: converged when ``|T(y) - y|_inf <= atol + rtol |y|_inf`` and the
        estimated distance to the fixed point is below ``atol + rtol |y|_inf`` (or the
        residual has fallen below ``rtol`` times its value at ``y0``).
    max_steps : int
        Iterations before giving up.
    memory : int
        History length.
    damping : float
        Mixing parameter in ``(0, 1]``.
    ridge : float
        Relative Tikhonov regularisation of the weights' normal equations.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import mcmc_customgrad as mcg
    >>> T = lambda y, b: 0.5 * jnp.cos(y) + b
    >>> y = mcg.fixed_point(T, jnp.zeros(3), jnp.arange(3.0), solver=mcg.solvers.Anderson())
    >>> bool(jnp.allclose(y, T(y, jnp.arange(3.0)), atol=1e-10))
    True
    """

    rtol: float | None = None
    atol: float | None = None
    max_steps: int = 500
    memory: int = 5
    damping: float = 1.0
    ridge: float = 1e-10
    kinds = ("fixed_point",)

    def __post_init__(self):
        _validate_common(self, "Anderson")
        validate_positive_int(self.memory, "memory", "Anderson")
        validate_tolerance(self.ridge, "ridge", "Anderson")

    def run(self, problem: Problem, y0, params) -> SolverResult:
        """Iterate from ``y0``."""
        rtol, atol = self.tolerances(problem.dtype)
        m, beta = self.memory, self.damping

        def residual(y):
            return problem.residual(y, params)

        r0 = residual(y0)
        n = y0.shape[0]
        ys = jnp.zeros((m, n), y0.dtype).at[0].set(y0)
        rs = jnp.zeros((m, n), y0.dtype).at[0].set(r0)

        r0_norm = max_norm(r0)

        def done(state):
            ys, _, r, y_prev, r_prev, k = state
            return _done(ys[k % m], r, y_prev, r_prev, r0_norm, rtol, atol)

        def cond(state):
            k, r = state[5], state[2]
            return (k < self.max_steps) & ~done(state) & jnp.all(jnp.isfinite(r))

        def body(state):
            ys, rs, r, _, _, k = state
            count = jnp.minimum(k + 1, m)
            valid = jnp.arange(m) < count
            gram = rs @ rs.T
            both = valid[:, None] & valid[None, :]
            diag_scale = jnp.max(jnp.where(valid, jnp.diag(gram), 0.0))
            gram = jnp.where(both, gram, 0.0)
            gram = gram + jnp.diag(jnp.where(valid, self.ridge * diag_scale + 1e-300, 1.0))
            w = jnp.linalg.solve(gram, valid.astype(y0.dtype))
            a = w / jnp.sum(w)
            y_new = a @ (ys + beta * rs)
            y = ys[k % m]
            newest = y + beta * r
            y_new = jnp.where(jnp.all(jnp.isfinite(y_new)), y_new, newest)
            r_new = residual(y_new)
            slot = (k + 1) % m
            return ys.at[slot].set(y_new), rs.at[slot].set(r_new), r_new, y, r, k + 1

        state = lax.while_loop(cond, body, (ys, rs, r0, y0, r0, 0))
        ys, r, k = state[0], state[2], state[5]
        return SolverResult(ys[k % m], done(state), k, max_norm(r))
