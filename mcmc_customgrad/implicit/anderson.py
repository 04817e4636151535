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


@dataclasses.dataclass(frozen=True)
class FixedPointIteration(Solver):
    """Iterate ``y <- y + damping (T(y) - y)`` until ``|T(y) - y|_inf`` is within tolerance.

    Converges linearly for a contraction (quadratically for maps like Newton's square
    root, seed 001). For fixed points only.

    Parameters
    ----------
    rtol, atol : float, optional
        Tolerances: converged when ``|T(y) - y|_inf <= atol + rtol |y|_inf``.
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

        def cond(state):
            y, r, k = state
            going = ~converged_within(max_norm(r), max_norm(y), rtol, atol)
            return (k < self.max_steps) & going & jnp.all(jnp.isfinite(r))

        def body(state):
            y, r, k = state
            y = y + self.damping * r
            return y, residual(y), k + 1

        y, r, k = lax.while_loop(cond, body, (y0, r0, 0))
        ok = converged_within(max_norm(r), max_norm(y), rtol, atol)
        return SolverResult(y, ok, k, max_norm(r))


@dataclasses.dataclass(frozen=True)
class Anderson(Solver):
    """Anderson acceleration (type II) of a fixed-point iteration.

    Keeps the last ``memory`` iterates ``y_i`` and residuals ``r_i = T(y_i) - y_i`` and
    moves to ``sum_i a_i (y_i + damping r_i)`` with weights minimising
    ``|sum_i a_i r_i|`` subject to ``sum_i a_i = 1`` (a ridge-regularised
    ``memory x memory`` solve). Falls back to a plain damped step if that solve breaks
    down. The default for fixed points above 500 unknowns.

    Parameters
    ----------
    rtol, atol : float, optional
        Tolerances: converged when ``|T(y) - y|_inf <= atol + rtol |y|_inf``.
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

        def cond(state):
            ys, _, r, k = state
            going = ~converged_within(max_norm(r), max_norm(ys[k % m]), rtol, atol)
            return (k < self.max_steps) & going & jnp.all(jnp.isfinite(r))

        def body(state):
            ys, rs, _r, k = state
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
            newest = ys[k % m] + beta * rs[k % m]
            y_new = jnp.where(jnp.all(jnp.isfinite(y_new)), y_new, newest)
            r_new = residual(y_new)
            slot = (k + 1) % m
            return ys.at[slot].set(y_new), rs.at[slot].set(r_new), r_new, k + 1

        ys, rs, r, k = lax.while_loop(cond, body, (ys, rs, r0, 0))
        y = ys[k % m]
        ok = converged_within(max_norm(r), max_norm(y), rtol, atol)
        return SolverResult(y, ok, k, max_norm(r))
