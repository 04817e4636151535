"""Fixed-point iteration, plain and Anderson-accelerated."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from jax import lax

from ._base import (
    Problem,
    Solver,
    SolverResult,
    continue_where,
    converged_within,
    max_norm,
    residual_within,
    status_of,
    step_within,
    validate_positive_int,
    validate_tolerance,
)

__all__ = ["FixedPointIteration", "Anderson", "IterateThenNewton"]


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


def _result(y, ok, k, r, y_prev, r_prev, rtol, atol):
    """The result with status: the secant distance estimate is the error estimate."""
    distance = _secant_step_norm(y, r, y_prev, r_prev)
    return _result_from_norms(y, ok, k, max_norm(r), distance, max_norm(y), rtol, atol)


def _result_from_norms(y, ok, k, r_norm, distance, y_norm, rtol, atol):
    """:func:`_result` from the max-norms of the residual and of ``y`` (NaN-sticky)."""
    error = jnp.where(r_norm == 0, 0.0, distance)
    error = jnp.where(jnp.isnan(error), jnp.inf, error)
    status = status_of(
        ok, finite=jnp.isfinite(r_norm), error_estimate=error, y_norm=y_norm, rtol=rtol, atol=atol
    )
    return SolverResult(y, ok, k, r_norm, status, error.astype(y.dtype))


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
        y, r, y_prev, r_prev, k = state
        return _result(y, done(state), k, r, y_prev, r_prev, rtol, atol)


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
        ys, _, r, y_prev, r_prev, k = state
        return _result(ys[k % m], done(state), k, r, y_prev, r_prev, rtol, atol)


@dataclasses.dataclass(frozen=True)
class IterateThenNewton(Solver):
    """Plain iteration while the map contracts fast, Newton from where it does not.

    The default for fixed points of up to 500 unknowns. Most maps brought to a fixed
    point solver are contractions, where an iteration costs one evaluation of the map
    and Newton's ``n``-column Jacobian and ``n x n`` factorisation per step are wasted
    (Optimistix's test maps of 28 and 100 unknowns: 4 to 24 times slower by Newton).
    Newton pays off where the iteration is slow or diverges. So this iterates
    ``y <- T(y)`` (:class:`FixedPointIteration`'s convergence test) while the residual
    ``T(y) - y`` falls by at least the factor ``rate`` per step, and hands over to
    :class:`Newton` once it has not for ``patience`` steps in a row (a contraction
    factor above ``rate``: at ``rate = 0.9`` the iteration would need more than 200
    steps to gain 10 digits), when the map leaves its domain (a NaN), or after
    ``max_steps`` iterations. Newton starts from the better of the last two points (the
    one before a step that left the domain or made the residual grow). Under ``vmap``
    the Newton stage runs only for the elements that need it.

    Parameters
    ----------
    rtol, atol : float, optional
        Tolerances of both stages; ``None`` means ``1e-10`` in float64 (``1000 eps`` in
        lower precisions).
    max_steps : int
        Iterations of the first stage.
    rate : float
        In ``(0, 1)``: the largest per-step residual ratio the iteration may keep.
    patience : int
        Consecutive steps above ``rate`` before switching.
    newton : Newton, optional
        The second stage (``Newton()`` by default; its ``linear_solver`` solves the
        steps).

    Examples
    --------
    A slow contraction (factor 0.95 near the solution): plain iteration takes 433
    steps, this 7 (three iterations, then Newton):

    >>> import jax.numpy as jnp
    >>> import mcmc_customgrad as mcg
    >>> T = lambda y, c: y - 0.01 * (y**3 - c)
    >>> for solver in (mcg.solvers.FixedPointIteration(), mcg.solvers.IterateThenNewton()):
    ...     y, info = mcg.fixed_point(T, jnp.ones(2), 2.0, solver=solver, full_output=True)
    ...     print(int(info.num_steps), bool(jnp.allclose(y**3, 2.0, rtol=1e-9)))
    433 True
    7 True
    """

    rtol: float | None = None
    atol: float | None = None
    max_steps: int = 1000
    rate: float = 0.9
    patience: int = 3
    newton: Solver | None = None
    kinds = ("fixed_point",)

    def __post_init__(self):
        from .newton import Newton

        validate_tolerance(self.rtol, "rtol", "IterateThenNewton")
        validate_tolerance(self.atol, "atol", "IterateThenNewton")
        validate_positive_int(self.max_steps, "max_steps", "IterateThenNewton")
        validate_positive_int(self.patience, "patience", "IterateThenNewton")
        if (
            isinstance(self.rate, bool)
            or not isinstance(self.rate, int | float)
            or not (0 < self.rate < 1)
        ):
            raise ValueError(f"IterateThenNewton: rate must be in (0, 1), got {self.rate!r}.")
        if self.newton is not None and not isinstance(self.newton, Newton):
            raise TypeError(
                f"IterateThenNewton: newton must be None or a Newton(...), got {self.newton!r}."
            )

    @property
    def second_stage(self):
        """The Newton stage, with this solver's tolerances where it has none."""
        from .newton import Newton

        newton = Newton() if self.newton is None else self.newton
        return dataclasses.replace(
            newton,
            rtol=self.rtol if newton.rtol is None else newton.rtol,
            atol=self.atol if newton.atol is None else newton.atol,
        )

    def run(self, problem: Problem, y0, params) -> SolverResult:
        """Iterate from ``y0``, then Newton where needed."""
        rtol, atol = self.tolerances(problem.dtype)

        def residual(y):
            return problem.residual(y, params)

        start, first = _iterate_while_fast(
            residual, y0, rtol, atol, self.max_steps, self.rate, self.patience
        )
        newton = self.second_stage

        def unconverged(result):
            return ~result.converged

        def second(result):
            return newton.run(problem, start(), params, active=unconverged(result))

        return continue_where(unconverged, first, second)


# The first stage's scalars, carried as one small vector (see _iterate_while_fast).
_R, _Y, _DISTANCE, _PREVIOUS, _SLOW, _K = range(6)


def _iterate_while_fast(residual, y0, rtol, atol, max_steps, rate, patience):
    """:class:`IterateThenNewton`'s first stage: ``y <- T(y)`` while the residual falls fast.

    The convergence test is :class:`FixedPointIteration`'s. Stops when converged, after
    ``patience`` consecutive passes whose residual fell by less than the factor
    ``rate``, at a non-finite residual, or after ``max_steps``. Returns ``start()``,
    where Newton should start (the better of the last two points: the one before a step
    that left the map's domain or made the residual grow; a function, so that it is
    computed in Newton's branch only), and the result at the last point.

    On a CPU a small solve's time is the number of kernels XLA runs per pass (about
    60 ns each), not their size. So each pass evaluates the map once and updates every
    scalar the tests need (``|r|``, ``|y|``, the secant distance, the last residual,
    the count of slow passes, the step count) in one vector of statistics, which XLA
    computes in one fused kernel together with the reductions; the loop's condition
    reads it in one more. Carried separately (one kernel each), the scalars doubled the
    time per pass on Optimistix's 28-unknown midpoint maps; so did keeping the best
    point seen (a select and three buffer copies per pass), which is why only the last
    residual is kept (its buffer is copied in any case, for the secant). The step count
    is a float in that vector: exact up to ``2**24`` passes even in float32.
    """
    stats_dtype = jnp.promote_types(y0.dtype, jnp.float32)
    r0 = residual(y0)
    r0_norm = max_norm(r0).astype(stats_dtype)
    nan, zero = jnp.full((), jnp.nan, stats_dtype), jnp.zeros((), stats_dtype)
    stats0 = jnp.stack([r0_norm, max_norm(y0).astype(stats_dtype), nan, nan, zero, zero])

    def done(stats):
        return _done_from_norms(stats[_R], stats[_Y], stats[_DISTANCE], r0_norm, rtol, atol)

    def cond(carry):
        stats = carry[3]
        # A max-norm is NaN when any entry is, so this also stops at a NaN residual.
        going = (stats[_K] < max_steps) & (stats[_SLOW] < patience)
        return going & jnp.isfinite(stats[_R]) & ~done(stats)

    def body(carry):
        y, r, _, stats = carry
        y = y + r
        r_new = residual(y)
        r_norm = max_norm(r_new).astype(stats_dtype)
        # _secant_step_norm: the step |y - y_prev| is the last residual's norm.
        distance = r_norm * stats[_R] / max_norm(r_new - r).astype(stats_dtype)
        stats = jnp.stack(
            [
                r_norm,
                max_norm(y).astype(stats_dtype),
                distance,
                stats[_R],
                jnp.where(r_norm <= rate * stats[_R], 0, stats[_SLOW] + 1),  # NaN: slow
                stats[_K] + 1,
            ]
        )
        return y, r_new, r, stats

    y, _, r_prev, stats = lax.while_loop(cond, body, (y0, r0, r0, stats0))
    k = stats[_K].astype(jnp.int32)
    result = _result_from_norms(
        y, done(stats), k, stats[_R], stats[_DISTANCE], stats[_Y], rtol, atol
    )

    # y - r_prev is the point before the last step (up to rounding). False for NaNs.
    def start():
        last_better = ~(stats[_R] > stats[_PREVIOUS]) & jnp.isfinite(stats[_R])
        return jnp.where(last_better | (k == 0), y, y - r_prev)

    return start, result


def _done_from_norms(r_norm, y_norm, distance, r0_norm, rtol, atol):
    """:func:`_done` from max-norms: ``converged_within`` for a fixed point."""
    residual_ok = residual_within(r_norm, y_norm, rtol, atol)
    known = step_within(distance, y_norm, rtol, atol)
    return residual_ok & (known | (r_norm <= rtol * r0_norm))
