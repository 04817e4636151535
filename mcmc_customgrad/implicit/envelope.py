"""``min_value``: ``min_y fun(y, *args)`` by the envelope theorem, right at every order."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..caches import lru_cache
from .root import (
    build_core,
    finish,
    jit_core,
    resolve,
    safe_linearisation,
    warn_float32,
    zero_tangent,
)

__all__ = ["min_value"]


@lru_cache(maxsize=256)
def _compiled_value(problem, solver, linear_solver, on_failure):
    argmin_core = build_core(problem, solver, linear_solver, on_failure)

    def value_at(y, info, params):
        v = problem.objective(y, params)
        return v if on_failure == "last" else jnp.where(info.converged, v, jnp.nan)

    @jax.custom_jvp
    def value(y0, params):
        y, info = argmin_core(y0, params)
        return value_at(y, info, params), info

    # Envelope theorem. v(θ) = f(y*(θ), θ) with ∂_y f(y*, θ) = 0, so
    #     v̇ = ∂_y f · ẏ* + ∂_θ f · θ̇ = ∂_θ f(y*, θ) · θ̇ :
    # a JVP of f in θ at fixed y*, with no linear solve and no ẏ*. The rule obtains y*
    # from `argmin_core`, whose own custom_jvp (the IFT rule) supplies ẏ* whenever the
    # rule itself is differentiated; the second derivative is then
    #     v̈ = ∂²_θθ f + ∂²_θy f · dy*/dθ,
    # the full Hessian (the envelope theorem alone is first-order only). The
    # primal is computed here from the same y* rather than by calling `value` again, so
    # that value_and_grad runs the inner solve once. Where the solve failed the JVP is
    # taken at y0 with the parameter tangents masked first, so no NaN reaches the
    # cotangents of parameters shared with other elements.
    @value.defjvp
    def value_jvp(primals, tangents):
        y0, params = primals
        _, params_dot = tangents
        y, info = argmin_core(y0, params)
        ok, y_lin, params_dot = safe_linearisation(on_failure, y, info, y0, params_dot)
        v, v_dot = jax.jvp(lambda p: problem.objective(y_lin, p), (params,), (params_dot,))
        v = v if on_failure == "last" else jnp.where(ok, v, jnp.nan)
        return (v, info), (jnp.where(ok, v_dot, 0.0), jax.tree.map(zero_tangent, info))

    return jit_core(value)


def min_value(fun, y0, *args, solver=None, full_output=False, linear_solver=None, on_failure="nan"):
    """The minimum value ``v(args) = min_y fun(y, *args)``, differentiable in ``args``.

    First derivatives use the envelope theorem, ``dv/dargs = d fun/d args`` at ``y*``:
    no linear solve, so ``value_and_grad`` costs about what the value does. Second
    derivatives are right too: ``y*`` comes from the IFT-differentiable
    :func:`~mcmc_customgrad.argmin`, so the Hessian of ``v`` includes the
    ``d^2 fun/dargs dy  dy*/dargs`` term that a first-order-only shortcut drops.

    Parameters
    ----------
    fun : callable
        ``fun(y, *args) -> scalar``; may close over traced values.
    y0 : pytree of float arrays
        Starting point (no derivative flows to it).
    *args : pytrees of arrays
        Parameters.
    solver : Solver or callable, optional
        As for :func:`~mcmc_customgrad.argmin`.
    full_output : bool
        If True return ``(value, SolverInfo)``.
    linear_solver : LinearSolver, optional
        Tangent solve used only at second and higher order.
    on_failure : {"nan", "raise", "last"}
        See :func:`~mcmc_customgrad.root`.

    Returns
    -------
    value : scalar array, or (value, SolverInfo) when ``full_output`` is True.

    Warns
    -----
    Float32Warning
        Once per process in float32; see :func:`~mcmc_customgrad.root`.

    Examples
    --------
    Seed 000: the convex conjugate of ``|y|^3/3`` is ``|x|^q/q`` with ``q = 3/2``, and
    its gradient at ``x = 0.31415`` is ``0.5604908``:

    >>> import jax, jax.numpy as jnp
    >>> import mcmc_customgrad as mcg
    >>> g = lambda y, x: jnp.sum(jnp.abs(y) ** 3 / 3 - x * y)
    >>> f = lambda x: -mcg.min_value(g, jnp.zeros(1), x)
    >>> round(float(jax.grad(f)(jnp.array([0.31415]))[0]), 6)
    0.560491
    """
    where = "mcmc_customgrad.min_value"
    problem, solver, linear_solver, y0_flat, params = resolve(
        "argmin", where, fun, y0, args, solver, linear_solver, full_output, on_failure
    )
    value = _compiled_value(problem, solver, linear_solver, on_failure)
    v, info = value(y0_flat, params)
    finish(where, solver, info, on_failure)
    warn_float32(where, stacklevel=3)
    return (v, info) if full_output else v
