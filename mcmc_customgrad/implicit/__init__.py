"""The implicit-differentiation core: inner solves behind ``custom_jvp`` rules.

No Blackjax or ArviZ imports here: this is pure JAX (plus SciPy on the host, lazily).
"""

from . import linear, solvers
from ._base import SolverError, SolverInfo, Status
from .argmin import argmin
from .envelope import min_value
from .fixed_point import fixed_point
from .root import root
from .stats import SolverStats, with_solver_stats

__all__ = [
    "root",
    "fixed_point",
    "argmin",
    "min_value",
    "SolverInfo",
    "Status",
    "SolverError",
    "with_solver_stats",
    "SolverStats",
    "solvers",
    "linear",
]
