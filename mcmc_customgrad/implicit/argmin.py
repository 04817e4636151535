"""``argmin``: the minimiser of ``fun(y, *args)``, differentiable by the IFT."""

from __future__ import annotations

from .root import implicit_solve

__all__ = ["argmin"]


def argmin(fun, y0, *args, solver=None, full_output=False, linear_solver=None, on_failure="nan"):
    """Minimise ``fun(y, *args)`` over ``y``; derivatives of the minimiser by the IFT.

    The optimality condition is ``grad_y fun(y*, args) = 0``, so
    ``dy*/dargs = -H^{-1} d(grad_y fun)/dargs`` with ``H`` the Hessian in ``y``: a
    symmetric solve (Cholesky-friendly, CG-friendly) done by the one rule of
    :func:`~mcmc_customgrad.root`.

    Parameters
    ----------
    fun : callable
        ``fun(y, *args) -> scalar``; may close over traced values.
    y0 : pytree of float arrays
        Starting point (no derivative flows to it).
    *args : pytrees of arrays
        Parameters the result is differentiable in.
    solver : Solver or callable, optional
        :class:`~mcmc_customgrad.solvers.Newton` (default up to 32 unknowns; BFGS
        finishes a minimisation it cannot),
        :class:`~mcmc_customgrad.solvers.LBFGS` (default above, or when JAX cannot
        differentiate ``fun`` twice), :class:`~mcmc_customgrad.solvers.BFGS`,
        a host solver, or a callable ``solver(fun, y0, *args) -> y``.
    full_output : bool
        If True return ``(y, SolverInfo)``.
    linear_solver : LinearSolver, optional
        Tangent solve; dense up to 1000 unknowns, CG above.
    on_failure : {"nan", "raise", "last"}
        See :func:`~mcmc_customgrad.root`.

    Returns
    -------
    y : pytree, or (y, SolverInfo) when ``full_output`` is True.

    Warns
    -----
    Float32Warning
        Once per process in float32; see :func:`~mcmc_customgrad.root`.

    Notes
    -----
    Convergence is judged on the gradient (and on the step the solver would take from
    there), so a start where the gradient is exactly zero is accepted as it is, even a
    maximum or a saddle (``(y^2 - 1)^2`` from ``y0 = 0``). Start from a point that is not
    a stationary point of a non-convex objective.

    Examples
    --------
    Ridge regression, whose minimiser is ``(X'X + lam I)^{-1} X'y``:

    >>> import jax, jax.numpy as jnp
    >>> import mcmc_customgrad as mcg
    >>> X = jnp.array([[1.0, 2.0], [3.0, 4.0], [5.0, 7.0]]); t = jnp.array([1.0, 0.0, 2.0])
    >>> loss = lambda b, lam: jnp.sum((X @ b - t) ** 2) + lam * jnp.sum(b**2)
    >>> b = mcg.argmin(loss, jnp.zeros(2), 0.5)
    >>> bool(jnp.allclose(b, jnp.linalg.solve(X.T @ X + 0.5 * jnp.eye(2), X.T @ t)))
    True
    """
    return implicit_solve(
        "argmin",
        "mcmc_customgrad.argmin",
        fun,
        y0,
        args,
        solver,
        linear_solver,
        on_failure,
        full_output,
    )
