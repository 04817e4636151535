"""Optimistix's test problems (``benchmarks/peer_problems.py``) with the default solvers.

Every problem of Optimistix's ``tests/helpers.py`` (minimisation, least squares, fixed
points, roots, bisection), solved with ``solver=None``: the answer is right, or its
status says why not; every converged solve has finite derivatives that agree with
reverse mode and with central finite differences. Optimistix itself is not needed here
(``benchmarks/bench_peer_suite.py`` runs both side by side). A few cheap problems of
each class run in the fast tier, the rest in the slow one.
"""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import mcmc_customgrad as mcg

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from peer_problems import all_problems, mcg_solve

FAST = {
    "min_beale",
    "lsq_rosenbrock_2",
    "lsq_diagonal_bowl_20",
    "fp_cos_28",
    "root_exponential_28",
    "root_midpoint_k_nonlinear_3",
    "bisect_cos",
}
#: Problems whose defaults end with a documented failure status instead of an answer:
#: the trigonometric least-squares problem's gradient has a rounding floor above the
#: tolerance 1e-10 (Optimistix skips it as hard; its own answer has gradient 1.9e-10).
EXPECTED_FAILURE = {"lsq_trigonometric_70": mcg.Status.STAGNATED}
#: Problems with a continuum of minimisers: the ReLU network's dead units leave 17 of
#: its 25 Hessian eigenvalues at rounding level. Its derivative is the minimum-norm one
#: (checked in forward and reverse mode); finite differences of the minimiser itself
#: follow the solver's path along the flat directions and are not a reference.
NON_UNIQUE = {"lsq_simple_nn_25"}
SOLVED_ERR = 1e-6
STATIONARY_TOL = 1e-8


def _cases():
    for problem in all_problems():
        marks = () if problem.name in FAST else (pytest.mark.slow,)
        yield pytest.param(problem, id=problem.name, marks=marks)


def optimality_residual(problem, y):
    p = problem.params
    if problem.kind in ("argmin", "least_squares"):
        return float(jnp.max(jnp.abs(jax.grad(problem.fn)(y, *p))))
    if problem.kind == "fixed_point":
        return float(jnp.max(jnp.abs(problem.fn(y, *p) - y)))
    return float(jnp.max(jnp.abs(problem.fn(y, *p))))


@pytest.mark.parametrize("problem", list(_cases()))
def test_defaults_solve_or_say_why(problem):
    flat_p, unravel = ravel_pytree(problem.params)

    def value(p):
        return mcg_solve(problem, *unravel(p))

    y, info = jax.jit(lambda p: mcg_solve(problem, *unravel(p), full_output=True))(flat_p)
    status = mcg.Status(int(info.status))
    if problem.name in EXPECTED_FAILURE:
        assert status == EXPECTED_FAILURE[problem.name] and not bool(info.converged)
        assert int(info.num_steps) < 200  # stopped early, not at max_steps
        return
    assert bool(info.converged), status.describe(status)
    degenerate = status == mcg.Status.DEGENERATE
    if problem.solution is not None:
        error = float(jnp.max(jnp.abs(y - problem.solution)))
        if degenerate:  # never silently wrong: the status and the estimate say so
            assert float(info.error_estimate) >= error / 30
        else:
            assert error <= SOLVED_ERR
    else:
        assert optimality_residual(problem, y) <= STATIONARY_TOL
    if flat_p.size == 0:
        return
    jac = jax.jit(jax.jacfwd(value))(flat_p).reshape(problem.n, -1)
    assert bool(jnp.all(jnp.isfinite(jac)))
    jac_rev = jax.jit(jax.jacrev(value))(flat_p).reshape(problem.n, -1)
    scale = max(float(jnp.max(jnp.abs(jac))), 1.0)
    np.testing.assert_allclose(jac_rev, jac, rtol=0, atol=1e-8 * scale)
    if degenerate or problem.name in NON_UNIQUE:
        return  # finite differences of y are noise (DEGENERATE) or follow the flat path
    solve = jax.jit(value)
    h = 6e-6 * np.maximum(1.0, np.abs(np.asarray(flat_p)))
    columns = [
        jnp.ravel(solve(flat_p.at[i].add(hi)) - solve(flat_p.at[i].add(-hi))) / (2 * hi)
        for i, hi in enumerate(h)
    ]
    fd = jnp.stack(columns, axis=1)
    np.testing.assert_allclose(jac, fd, rtol=0, atol=1e-4 * scale)
