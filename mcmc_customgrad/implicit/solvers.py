"""Forward solvers: small frozen (hashable) configurations.

=====================  =============================  =====================================
solver                 problems                        use it for
=====================  =============================  =====================================
``Newton``             root, fixed_point, argmin       roots (default), small fixed points
                                                       (default up to 500 unknowns), minima
                                                       with awkward curvature
``BFGS``               argmin                          moderate size, no Hessian
``LBFGS``              argmin                          minima (the default)
``FixedPointIteration`` fixed_point                    contractions, Newton-type maps
``Anderson``           fixed_point                     large fixed points (default above 500)
``Chandrupatla``       root, fixed_point (element-     scalar equations with a bracket
                       wise)
``Custom(fn)``         any                             your own JAX solver (a plain callable
                                                       is wrapped automatically)
``Host``, ``scipy_*``  any                             solvers that run on the host (SciPy)
=====================  =============================  =====================================

Every solver's answer is accepted only within its tolerance (``1e-10`` in float64 by
default); otherwise the result is NaN and ``info.converged`` is False.

Examples
--------
>>> import mcmc_customgrad as mcg
>>> mcg.solvers.Newton(max_steps=50)
Newton(rtol=None, atol=None, max_steps=50)
>>> mcg.solvers.default_solver("argmin", n=10)
LBFGS(rtol=None, atol=None, max_steps=2000, memory=10)
"""

from __future__ import annotations

from ._base import Solver, SolverInfo
from .anderson import Anderson, FixedPointIteration
from .custom import Custom
from .host import Host, scipy_minimize, scipy_root
from .newton import Newton
from .quasi_newton import BFGS, LBFGS
from .scalar import Chandrupatla

__all__ = [
    "Solver",
    "SolverInfo",
    "Newton",
    "BFGS",
    "LBFGS",
    "FixedPointIteration",
    "Anderson",
    "Chandrupatla",
    "Custom",
    "Host",
    "scipy_root",
    "scipy_minimize",
    "default_solver",
    "resolve_solver",
    "NEWTON_LIMIT",
]

#: Up to this many unknowns the default for fixed points is Newton.
NEWTON_LIMIT = 500


def default_solver(kind: str, n: int) -> Solver:
    """The solver used when ``solver=None``, for a problem of ``kind`` with ``n`` unknowns.

    Newton for roots; L-BFGS for minima (``O(n)`` per step: on CPU a dense ``n x n``
    factorisation costs about 30 µs at ``n = 100``, more than L-BFGS's whole step, so it
    wins from a handful of unknowns up; see ``docs/benchmarks.md``); for fixed points
    Newton up to ``NEWTON_LIMIT`` unknowns and Anderson above.

    Examples
    --------
    >>> import mcmc_customgrad as mcg
    >>> mcg.solvers.default_solver("root", n=3)
    Newton(rtol=None, atol=None, max_steps=100)
    """
    if kind == "argmin":
        return LBFGS()
    if kind == "root" or n <= NEWTON_LIMIT:
        return Newton()
    return Anderson()


def resolve_solver(solver, kind: str, n: int, where: str) -> Solver:
    """Turn the user's ``solver=`` into a :class:`Solver` that can solve ``kind``."""
    if solver is None:
        return default_solver(kind, n)
    if isinstance(solver, type) and issubclass(solver, Solver):
        raise TypeError(
            f"{where}: solver must be an instance, e.g. {solver.__name__}(), not the class."
        )
    if isinstance(solver, Solver):
        solver.check_kind(kind, where)
        return solver
    if callable(solver):
        return Custom(solver)
    raise TypeError(
        f"{where}: solver must be None, an mcmc_customgrad.solvers solver, or a callable "
        f"solver(fun, y0, *args) -> y; got {type(solver).__name__}."
    )
