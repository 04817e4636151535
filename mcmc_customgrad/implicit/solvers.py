"""Forward solvers: small frozen (hashable) configurations.

=======================  ===========================  =====================================
solver                   problems                      use it for
=======================  ===========================  =====================================
``Newton``               root, fixed_point, argmin     roots (default), small minima
                                                       (default up to 32 unknowns; BFGS
                                                       finishes what it cannot)
``BFGS``                 argmin                        moderate size, no Hessian
``LBFGS``                argmin                        minima (default above 32 unknowns,
                                                       or without second derivatives)
``IterateThenNewton``    fixed_point                   fixed points (default up to 500
                                                       unknowns): iteration, then Newton
                                                       where it is slow
``FixedPointIteration``  fixed_point                   contractions, Newton-type maps
``Anderson``             fixed_point                   large fixed points (default above 500)
``Chandrupatla``         root, fixed_point (element-   scalar equations with a bracket
                         wise)
``Custom(fn)``           any                           your own JAX solver (a plain callable
                                                       is wrapped automatically)
``Host``, ``scipy_*``    any                           solvers that run on the host (SciPy)
=======================  ===========================  =====================================

Every solver's answer is accepted only within its tolerance (``1e-10`` in float64 by
default): the residual must be within it *and* ``y`` must be known to it (a small step
estimate, or a residual fallen by ``rtol`` from the start; see
:func:`~mcmc_customgrad.implicit._base.converged_within`), so a residual that is small
only because the function is small is not accepted. Otherwise the result is NaN and
``info.converged`` is False; ``info.status`` (:class:`Status`) says why.

Examples
--------
>>> import mcmc_customgrad as mcg
>>> mcg.solvers.Newton(max_steps=50)
Newton(rtol=None, atol=None, max_steps=50, linear_solver=None, fallback=True)
>>> mcg.solvers.default_solver("argmin", n=10)
Newton(rtol=None, atol=None, max_steps=100, linear_solver=None, fallback=True)
>>> mcg.solvers.default_solver("argmin", n=100)
LBFGS(rtol=None, atol=None, max_steps=2000, memory=10)
"""

from __future__ import annotations

import dataclasses

from ._base import Solver, SolverInfo, Status
from .anderson import Anderson, FixedPointIteration, IterateThenNewton
from .custom import Custom
from .host import Host, scipy_minimize, scipy_root
from .newton import Newton
from .quasi_newton import BFGS, LBFGS
from .scalar import Chandrupatla

__all__ = [
    "Solver",
    "SolverInfo",
    "Status",
    "Newton",
    "BFGS",
    "LBFGS",
    "FixedPointIteration",
    "Anderson",
    "IterateThenNewton",
    "Chandrupatla",
    "Custom",
    "Host",
    "scipy_root",
    "scipy_minimize",
    "default_solver",
    "resolve_solver",
    "NEWTON_LIMIT",
    "ARGMIN_NEWTON_LIMIT",
]

#: Up to this many unknowns the default for fixed points is IterateThenNewton.
NEWTON_LIMIT = 500


#: Up to this many unknowns the default for minima is Newton, above it L-BFGS.
ARGMIN_NEWTON_LIMIT = 32


def default_solver(kind: str, n: int, *, second_order: bool = True) -> Solver:
    """The solver used when ``solver=None``, for a problem of ``kind`` with ``n`` unknowns.

    Newton for roots. For minima, Newton up to ``ARGMIN_NEWTON_LIMIT`` unknowns and
    L-BFGS above: inside a sampler's vectorized chains Newton's few iterations (6 to 8
    from a cold start, against L-BFGS's 17 to 23) outweigh its Hessian and linear solve
    up to about 30 unknowns, while from about 50 the dense ``n x n`` work per step loses
    to L-BFGS's ``O(n)`` step (measured in ``benchmarks/bench_sampling.py``, table in
    ``docs/benchmarks.md``). ``second_order=False`` (an objective JAX cannot
    differentiate twice, such as one calling a ``custom_vjp`` function whose backward
    pass runs a host callback) always gives L-BFGS, which needs gradients only; the library checks
    this itself when ``solver=None``. For fixed points :class:`IterateThenNewton` up to
    ``NEWTON_LIMIT`` unknowns (plain iteration while the map contracts fast, Newton
    where it does not) and Anderson above.

    Examples
    --------
    >>> import mcmc_customgrad as mcg
    >>> mcg.solvers.default_solver("root", n=3)
    Newton(rtol=None, atol=None, max_steps=100, linear_solver=None, fallback=True)
    >>> mcg.solvers.default_solver("argmin", n=3, second_order=False)
    LBFGS(rtol=None, atol=None, max_steps=2000, memory=10)
    """
    if kind == "argmin":
        return Newton() if n <= ARGMIN_NEWTON_LIMIT and second_order else LBFGS()
    if kind == "root":
        return Newton()
    return IterateThenNewton() if n <= NEWTON_LIMIT else Anderson()


def resolve_solver(
    solver,
    kind: str,
    n: int,
    where: str,
    second_order=lambda: True,
    *,
    linear_solver=None,
    explicit_linear_solver=False,
    why=None,
) -> Solver:
    """Turn the user's ``solver=`` into a :class:`Solver` that can solve ``kind``.

    ``second_order()`` is asked only when the default for a small minimum depends on it.
    With ``solver=None``, a default Newton solves its steps with ``linear_solver`` when
    the user gave one or the default chose a sparse one, and a :class:`Sparse
    <mcmc_customgrad.linear.Sparse>` given by the user makes Newton the default for every
    size (its structure is what makes Newton affordable). A Newton whose steps would be
    dense above ``DENSE_LIMIT`` unknowns is refused before compiling (``why`` says why no
    pattern was used), unless the user asked for ``Newton(linear_solver=Dense())``.
    """
    from .linear import DENSE_LIMIT, Sparse, dense_limit_error

    def newton_steps(newton):
        # The linear solver of a Newton left with linear_solver=None.
        if explicit_linear_solver or isinstance(linear_solver, Sparse):
            return dataclasses.replace(newton, linear_solver=linear_solver)
        if n > DENSE_LIMIT:
            raise dense_limit_error(where, n, kind, why)
        return newton

    if solver is None:
        small_min = kind == "argmin" and n <= ARGMIN_NEWTON_LIMIT
        solver = default_solver(kind, n, second_order=second_order() if small_min else True)
        if explicit_linear_solver and isinstance(linear_solver, Sparse):
            solver = Newton()
        if isinstance(solver, Newton):
            solver = newton_steps(solver)
        elif isinstance(solver, IterateThenNewton):
            solver = dataclasses.replace(solver, newton=newton_steps(solver.second_stage))
    if isinstance(solver, type) and issubclass(solver, Solver):
        raise TypeError(
            f"{where}: solver must be an instance, e.g. {solver.__name__}(), not the class."
        )
    if isinstance(solver, Solver):
        solver.check_kind(kind, where)
        if isinstance(solver, Newton) and solver.linear_solver is None and n > DENSE_LIMIT:
            return newton_steps(solver)
        return solver
    if callable(solver):
        return Custom(solver)
    raise TypeError(
        f"{where}: solver must be None, an mcmc_customgrad.solvers solver, or a callable "
        f"solver(fun, y0, *args) -> y; got {type(solver).__name__}."
    )
