"""``fixed_point``: ``y = fun(y, *args)``, differentiable by the IFT."""

from __future__ import annotations

from .root import implicit_solve

__all__ = ["fixed_point"]


def fixed_point(
    fun, y0, *args, solver=None, full_output=False, linear_solver=None, on_failure="nan"
):
    """Find ``y`` with ``y = fun(y, *args)``; derivatives by the IFT.

    The residual is ``T(y) - y``, so ``dy*/dargs = (I - dT/dy)^{-1} dT/dargs``, solved
    with a transposable linear solve (the rule of :func:`~mcmc_customgrad.root`). This is
    seed 001's ``fixed_point`` done once for everyone, with forward mode, Hessians and
    closures over traced values included.

    Parameters
    ----------
    fun : callable
        The map ``T(y, *args)``, returning a pytree like ``y0``.
    y0 : pytree of float arrays
        Starting point (no derivative flows to it).
    *args : pytrees of arrays
        Parameters the result is differentiable in.
    solver : Solver or callable, optional
        :class:`~mcmc_customgrad.solvers.IterateThenNewton` (default up to 500
        unknowns: plain iteration while the map contracts fast, Newton where it does
        not), :class:`~mcmc_customgrad.solvers.Anderson` (default above),
        :class:`~mcmc_customgrad.solvers.Newton`,
        :class:`~mcmc_customgrad.solvers.FixedPointIteration`, or a callable.
    full_output : bool
        If True return ``(y, SolverInfo)``.
    linear_solver : LinearSolver, optional
        Tangent solve; dense up to 1000 unknowns, GMRES above.
    on_failure : {"nan", "raise", "last"}
        See :func:`~mcmc_customgrad.root`.

    Returns
    -------
    y : pytree, or (y, SolverInfo) when ``full_output`` is True.

    Warns
    -----
    Float32Warning
        Once per process in float32; see :func:`~mcmc_customgrad.root`.

    Examples
    --------
    Newton's square root as a fixed point (seed 001):

    >>> import jax
    >>> import mcmc_customgrad as mcg
    >>> sqrt = lambda a: mcg.fixed_point(lambda x, a: 0.5 * (x + a / x), a, a)
    >>> d1, d2 = jax.grad(sqrt), jax.grad(jax.grad(sqrt))
    >>> [round(float(v), 8) for v in (sqrt(2.0), d1(2.0), d2(2.0))]
    [1.41421356, 0.35355339, -0.08838835]
    """
    return implicit_solve(
        "fixed_point",
        "mcmc_customgrad.fixed_point",
        fun,
        y0,
        args,
        solver,
        linear_solver,
        on_failure,
        full_output,
    )
