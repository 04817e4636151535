"""mcmc_customgrad: implicit derivatives for inner solves inside log-densities.

Put a piece JAX cannot differentiate through (an inner minimisation, a root or fixed
point found by a ``while_loop``, a SciPy solver on the host) behind a ``custom_jvp`` rule
derived from its optimality condition, then sample the log-density with Blackjax.

Examples
--------
>>> import jax, jax.numpy as jnp
>>> import mcmc_customgrad as mcg
>>> g = lambda y, x: jnp.sum(jnp.abs(y) ** 3 / 3 - x * y)
>>> conjugate = lambda x: -mcg.min_value(g, jnp.zeros(1), x)
>>> round(float(jax.grad(conjugate)(jnp.array([0.31415]))[0]), 6)
0.560491
"""

from . import gmrf, laplace, models, stable
from ._precision import Float32Warning
from ._version import __version__
from .caches import clear_caches
from .diagnostics import (
    ComparisonReport,
    CoupledReport,
    Diagnostic,
    GradientReport,
    SamplingWarning,
    SBCProblem,
    SBCReport,
    check_gradients,
    compare_chains,
    coupled_chains,
    diagnose,
    sbc,
    write_report,
)
from .gmrf import gmrf_latent_draws, gmrf_log_marginal
from .implicit import (
    SolverError,
    SolverInfo,
    SolverStats,
    Status,
    argmin,
    fixed_point,
    linear,
    min_value,
    root,
    solvers,
    with_solver_stats,
)
from .laplace import laplace_latent_draws, laplace_log_marginal, latent_gaussian_log_marginal
from .logdensity import Constraint, Model, interval, positive, real
from .sampling import CheckpointError, DistributedError, InitializationError, sample

__all__ = [
    "root",
    "fixed_point",
    "argmin",
    "min_value",
    "SolverInfo",
    "Status",
    "SolverError",
    "Float32Warning",
    "with_solver_stats",
    "SolverStats",
    "solvers",
    "linear",
    "laplace_log_marginal",
    "latent_gaussian_log_marginal",
    "laplace_latent_draws",
    "laplace",
    "gmrf",
    "gmrf_log_marginal",
    "gmrf_latent_draws",
    "Model",
    "Constraint",
    "real",
    "positive",
    "interval",
    "sample",
    "diagnose",
    "Diagnostic",
    "SamplingWarning",
    "check_gradients",
    "GradientReport",
    "coupled_chains",
    "CoupledReport",
    "compare_chains",
    "ComparisonReport",
    "write_report",
    "sbc",
    "SBCProblem",
    "SBCReport",
    "InitializationError",
    "CheckpointError",
    "DistributedError",
    "clear_caches",
    "models",
    "stable",
    "__version__",
]
