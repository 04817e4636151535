"""Any user callable as a forward solver, with the residual checked afterwards."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from ._base import (
    Problem,
    Solver,
    SolverInfo,
    SolverResult,
    converged_within,
    max_norm,
    validate_tolerance,
)

__all__ = ["Custom", "checked_result"]


def _traceable(fn, *args) -> bool:
    """Whether JAX can trace ``fn(*args)`` (abstractly: nothing is computed)."""
    shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)), args)
    try:
        jax.eval_shape(fn, *shapes)
    except Exception:  # no forward-mode rule (a host callback, a custom_vjp): no estimate
        return False
    return True


def _step_estimate(problem: Problem, params, y, residual):
    """Max-norm of a one-directional Newton step at ``y``, or ``inf`` without one.

    A custom or host solver reports no step, so the step test of
    :func:`~mcmc_customgrad.implicit._base.converged_within` uses the curvature along the
    residual ``r`` from one Jacobian-vector product: ``|r|^2 / (r . H r) |r|_inf`` for a
    minimum (the Cauchy step; ``inf`` unless the curvature is positive),
    ``|r|_2 / |J r|_2 |r|_inf`` otherwise. Exact when the Jacobian is a multiple of the
    identity, and it scales with the function as the Newton step does (a residual that
    is small only because the function is gives a large estimate); for a badly
    conditioned Jacobian it can be shorter than the Newton step (for a convex minimum
    the Cauchy step is never longer in the 2-norm). Where JAX cannot take the product
    (an objective whose gradient runs on the host) it is ``inf``, which leaves the
    secondary, fallen-residual test.
    """
    fn = jax.grad(problem.objective) if problem.kind == "argmin" else problem.residual

    def product(y, params, r):
        return jax.jvp(lambda v: fn(v, params), (y,), (r,))[1]

    if not _traceable(product, y, params, residual):
        return jnp.asarray(jnp.inf, y.dtype)
    jr = product(y, params, residual)
    rr = jnp.vdot(residual, residual)
    if problem.kind == "argmin":
        curvature = jnp.vdot(residual, jr)
        gain = jnp.where(curvature > 0, curvature / rr, jnp.nan)
    else:
        gain = jnp.linalg.norm(jr) / jnp.sqrt(rr)
    return max_norm(residual) / gain


def checked_result(problem: Problem, params, y, y0, claimed, num_steps, rtol, atol):
    """Recompute the optimality residual at ``y`` and decide convergence.

    A solver's own claim is necessary but not sufficient: ``y`` must also pass the test
    of :func:`~mcmc_customgrad.implicit._base.converged_within`, with the scale of
    :func:`~mcmc_customgrad.implicit._base.residual_scale`, the step estimate of
    :func:`_step_estimate` and the residual at the start ``y0``.
    """
    if problem.kind == "argmin":  # value and gradient in one pass
        value, residual = jax.value_and_grad(problem.objective)(y, params)
        start = jax.grad(problem.objective)(y0, params)
    else:
        value, residual = None, problem.residual(y, params)
        start = problem.residual(y0, params)
    ok = claimed & converged_within(
        problem.kind,
        residual,
        y,
        rtol,
        atol,
        step_norm=_step_estimate(problem, params, y, residual),
        start_norm=max_norm(start),
        value=value,
    )
    return SolverResult(y, ok, num_steps, max_norm(residual))


def _claims(extra):
    """Read ``(converged, num_steps)`` from what a custom solver returned beside ``y``."""
    if isinstance(extra, SolverInfo):
        return extra.converged, extra.num_steps
    converged = getattr(extra, "converged", getattr(extra, "success", None))
    steps = getattr(extra, "num_steps", getattr(extra, "nit", None))
    if converged is None and isinstance(extra, bool | jax.Array):
        converged = extra
    if converged is None:
        raise ValueError(
            "a custom solver may return y, or (y, info) where info is a SolverInfo, a "
            "boolean 'converged', or an object with .converged/.success (and optionally "
            f".num_steps/.nit); got (y, {type(extra).__name__})."
        )
    steps = -1 if steps is None else steps
    return jnp.asarray(converged, bool), jnp.asarray(steps, jnp.int32)


@dataclasses.dataclass(frozen=True)
class Custom(Solver):
    """Wrap your own solver: ``fn(fun, y0, *args) -> y`` or ``(y, info)``.

    ``fun``, ``y0`` and ``args`` are what you passed to ``mcg.root``/``argmin``/
    ``fixed_point``/``min_value`` (``fun`` with its closed-over values bound). ``fn`` may
    be anything JAX can trace: a ``lax.while_loop``, ``jax.scipy.optimize.minimize`` (the
    seed-000 recipe), a call to another library. JAX never differentiates it: the
    derivative comes from the optimality condition. A plain callable passed as
    ``solver=`` is wrapped in ``Custom`` with default tolerances.

    The result is trusted only if ``info`` does not report a failure, the optimality
    residual at ``y`` is within tolerance (``|F(y)|_inf <= atol`` for a root,
    ``atol + rtol |y|_inf`` for a fixed point, ``atol + rtol |f(y)|`` for a minimum)
    and ``y`` is known to tolerance: a Newton step along the residual, from one
    Jacobian- (Hessian-) vector product at ``y``, is below ``atol + rtol |y|_inf``, or
    the residual has fallen below ``rtol`` times its value at ``y0`` (see
    :func:`~mcmc_customgrad.implicit._base.converged_within`); otherwise the solve
    counts as failed.

    Parameters
    ----------
    fn : callable
        The solver.
    rtol, atol : float, optional
        Tolerances of the check; ``None`` means ``1e-10`` in float64 (``1000 eps`` in
        lower precisions).

    Examples
    --------
    The seed-000 recipe, BFGS from ``jax.scipy``. It ignores ``tol=`` (set ``gtol`` in
    ``options``), and near rounding level its line search reports failure although the
    point is a minimiser to tolerance, so return ``res.x`` alone and let the residual
    check judge:

    >>> import jax, jax.numpy as jnp
    >>> from jax.scipy.optimize import minimize
    >>> import mcmc_customgrad as mcg
    >>> def scipy_bfgs(g, y0, x):
    ...     return minimize(lambda y: g(y, x), y0, method="BFGS", options={"gtol": 1e-12}).x
    >>> g = lambda y, x: jnp.sum(jnp.abs(y) ** 3 / 3 - x * y)
    >>> f = lambda x: -mcg.min_value(g, jnp.zeros(1), x, solver=scipy_bfgs)
    >>> round(float(jax.grad(f)(jnp.array([0.31415]))[0]), 6)
    0.560491
    """

    fn: Callable
    rtol: float | None = None
    atol: float | None = None

    def __post_init__(self):
        if not callable(self.fn):
            raise TypeError(f"Custom: fn must be callable, got {type(self.fn).__name__}.")
        validate_tolerance(self.rtol, "rtol", "Custom")
        validate_tolerance(self.atol, "atol", "Custom")

    def run(self, problem: Problem, y0, params) -> SolverResult:
        """Call ``fn`` and check its answer."""
        rtol, atol = self.tolerances(problem.dtype)
        args, consts = params

        def fun(y, *a):
            return problem.user_fun(y, (a, consts))

        y0_tree = problem.unravel(y0)
        out = self.fn(fun, y0_tree, *args)
        name = getattr(self.fn, "__name__", type(self.fn).__name__)
        structure = jax.tree.structure(y0_tree)
        if jax.tree.structure(out) == structure:
            y_tree, claimed, steps = out, jnp.array(True), jnp.array(-1, jnp.int32)
        elif isinstance(out, tuple) and len(out) == 2 and jax.tree.structure(out[0]) == structure:
            y_tree = out[0]
            claimed, steps = _claims(out[1])
        else:
            raise ValueError(
                f"custom solver {name!r} must return y with the structure of y0, or "
                f"(y, info); y0 is {structure} but the solver returned "
                f"{jax.tree.structure(out)}."
            )
        for got, want in zip(jax.tree.leaves(y_tree), jax.tree.leaves(y0_tree), strict=True):
            if jnp.shape(got) != want.shape:
                raise ValueError(
                    f"custom solver {name!r} returned an array of shape {jnp.shape(got)} "
                    f"where y0 has shape {want.shape}."
                )
        y = ravel_pytree(jax.tree.map(lambda a, b: jnp.asarray(a, b.dtype), y_tree, y0_tree))[0]
        return checked_result(problem, params, y, y0, claimed, steps, rtol, atol)
