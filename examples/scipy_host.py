"""A SciPy solver on the host, inside a log-density that NUTS samples.

Some inner solves only exist outside JAX: a SciPy optimiser, a Fortran routine, a legacy
NumPy model. ``mcg.solvers.scipy_minimize`` runs ``scipy.optimize.minimize`` on the host
(in a ``jax.pure_callback``); JAX never sees inside it, yet the gradient is exact, because
it comes from the optimality condition evaluated in JAX (the envelope theorem for a
minimum value). After SciPy returns, a few Newton steps in NumPy polish the answer, and
the residual is checked in JAX: an answer that misses the tolerance becomes NaN, a
rejected proposal, never a silently wrong gradient.

The density is seed 000's conjugate (``examples/conjugate.py``) with BFGS from SciPy as the
inner solver; the reference is the closed form. Expect it to be much slower than the JAX
solvers (one host round trip per gradient, and NUTS takes several per draw): this is the
price of a solver JAX cannot see.

    .venv/bin/python examples/scipy_host.py            # 4 x 2,500 draws each
    .venv/bin/python examples/scipy_host.py --quick    # a smoke run (what the tests do)
"""

from __future__ import annotations

import jax.numpy as jnp
from _common import exit_code, parse_args, sample_and_compare
from jax.scipy.stats import norm

import mcmc_customgrad as mcg

D, P = 2, 3.0
Q = P / (P - 1)


def inner(y, x):
    """``g(x, y) = sum |y|^p / p - <x, y>``; SciPy minimises it over ``y``."""
    return jnp.sum(jnp.abs(y) ** P / P - x * y)


def logdensity(params):
    """``sum N(x_i) + N(f(x))`` with ``f(x) = -min_y g(x, y)`` found by SciPy's BFGS."""
    x = params["x"]
    f = -mcg.min_value(inner, jnp.zeros_like(x), x, solver=mcg.solvers.scipy_minimize("BFGS"))
    return jnp.sum(norm.logpdf(x)) + norm.logpdf(f)


def logdensity_closed(params):
    """The same density with ``f(x) = sum |x|^q / q``."""
    x = params["x"]
    return jnp.sum(norm.logpdf(x)) + norm.logpdf(jnp.sum(jnp.abs(x) ** Q / Q))


def main(argv=None) -> int:
    """Sample and compare; exit status 0 when the comparison passed."""
    args = parse_args("scipy_host", __doc__, argv)
    spec = {"x": mcg.real(shape=(D,))}
    _, _, report = sample_and_compare(
        mcg.Model(logdensity, spec),
        mcg.Model(logdensity_closed, spec),
        args,
        # Every gradient is a SciPy solve per chain: the quick run is 2 x 150 draws.
        quick={"num_chains": 2, "num_warmup": 150, "num_samples": 150},
    )
    return exit_code(report)


if __name__ == "__main__":
    raise SystemExit(main())
