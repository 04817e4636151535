"""Statuses: why a solve ended, its error estimate, and the robustness they report.

Issue 20's findings on Optimistix's test problems, each as a behaviour: Newton goes on
until a degenerate solution is known, a degenerate answer a solver cannot improve is
reported, a stalled solve stops early with its own status, a minimisation
Newton cannot finish is finished by BFGS, a singular but consistent tangent system has
the minimum-norm derivative, and fixed points iterate before they pay for Newton.
"""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mcmc_customgrad as mcg
from mcmc_customgrad.implicit import _linesearch
from mcmc_customgrad.implicit._base import STALL_QUASI_NEWTON, Tracker

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from peer_problems import get_problem

S = mcg.Status


def status(info):
    return S(int(info.status))


# ------------------------------------------------------------------------- the type


def test_status_enum_accepts_exactly_the_returned_outcomes():
    assert [s for s in S if s.accepted] == [S.CONVERGED, S.DEGENERATE]
    for s in S:
        assert s.message and s.message.endswith(".")
    assert S.describe(np.int32(3)).startswith("STAGNATED: ")
    required = {"CONVERGED", "MAX_STEPS", "NONFINITE", "LINEAR_SOLVE_FAILED"}
    assert required | {"NOT_SEPARABLE", "NOT_LOG_CONCAVE"} <= {s.name for s in S}


def test_converged_root_has_status_and_a_small_error_estimate():
    y, info = mcg.root(lambda y, a: y**2 - a, jnp.array(1.0), 2.0, full_output=True)
    assert status(info) == S.CONVERGED and bool(info.converged)
    assert info.status.dtype == jnp.int32
    assert 0.0 <= float(info.error_estimate) <= 1e-10 * (1 + abs(float(y)))


def test_converged_is_status_accepted_under_vmap():
    def sqrt_of(a):
        return mcg.root(lambda y, a: y**2 - a, jnp.array(1.0), a, full_output=True)

    _, info = jax.vmap(sqrt_of)(jnp.array([4.0, -1.0, 9.0]))
    assert info.converged.tolist() == [True, False, True]
    assert [S(int(s)) for s in info.status] == [S.CONVERGED, S.STAGNATED, S.CONVERGED]


@pytest.mark.parametrize("fallback", [False])
def test_capped_newton_is_max_steps(fallback):
    newton = mcg.solvers.Newton(max_steps=1, fallback=fallback)
    _, info = mcg.argmin(
        lambda y, a: jnp.sum((y - a) ** 4 + (y - a) ** 2),
        jnp.zeros(2),
        jnp.array([3.0, -2.0]),
        solver=newton,
        full_output=True,
    )
    assert status(info) == S.MAX_STEPS and not bool(info.converged)


def test_nonfinite_objective_is_nonfinite():
    f = lambda y, a: jnp.sum(jnp.log(y - a) ** 2)  # noqa: E731  NaN left of a
    y, info = mcg.argmin(f, jnp.zeros(1), jnp.array([1.0]), full_output=True)
    assert status(info) == S.NONFINITE and bool(jnp.all(jnp.isnan(y)))


def test_raise_names_the_reason():
    with pytest.raises(mcg.SolverError, match="STAGNATED: the solver stopped early"):
        mcg.root(lambda y, a: y**2 - a, jnp.array(1.0), -1.0, on_failure="raise")


def test_custom_solver_without_a_reason_gets_one():
    def bad(fun, y0, *args):
        return y0, mcg.SolverInfo(jnp.array(False), jnp.int32(3), jnp.array(1.0))

    _, info = mcg.root(lambda y: y - 1.0, jnp.array(0.0), solver=bad, full_output=True)
    assert status(info) == S.NOT_CONVERGED and np.isnan(float(info.error_estimate))


# ------------------------------------------------------------- degenerate solutions


def quartic(y, w):
    return jnp.sum(w**2 * y**4)  # minimiser 0 for every w, Hessian 0 there


@pytest.mark.parametrize(
    "solver",
    [mcg.solvers.BFGS(), mcg.solvers.LBFGS(), mcg.solvers.Newton(max_steps=25, fallback=False)],
    ids=["bfgs", "lbfgs", "capped-newton"],
)
def test_degenerate_minimum_is_reported_with_its_accuracy(solver):
    # The gradient test passes (the gradient ~ y^3 falls by 1e-10 while y falls by
    # 1e-3), but y is not known to tolerance and the solver cannot go on.
    w = jnp.array([1.0, 2.0, 3.0])
    y, info = mcg.argmin(quartic, jnp.ones(3), w, solver=solver, full_output=True)
    error = float(jnp.max(jnp.abs(y)))
    assert bool(info.converged) and status(info) == S.DEGENERATE
    assert error > 1e-6  # what it reports is real: y is far from 0
    # An order-of-magnitude estimate of the error actually achieved.
    assert error / 30 <= float(info.error_estimate) <= 30 * error
    # The value (what a log-density uses) is exact to far below y's error: the
    # minimum value is 0.
    assert float(quartic(y, w)) < 1e-12


def test_newton_keeps_going_until_a_degenerate_minimum_is_known():
    # Newton converges linearly here (y shrinks by 2/3 a step): it goes on while its
    # steps improve y, past the point where the gradient test alone would stop.
    w = jnp.array([1.0, 2.0, 3.0])
    y, info = mcg.argmin(quartic, jnp.ones(3), w, full_output=True)
    assert status(info) == S.CONVERGED and float(jnp.max(jnp.abs(y))) < 1e-9
    assert float(info.error_estimate) <= 1e-10


def test_double_root_is_solved_to_tolerance():
    y, info = mcg.root(lambda y, a: y**2 - a, jnp.array(1.0), 0.0, full_output=True)
    assert status(info) == S.CONVERGED and 0 < float(y) < 1e-9
    assert float(y) / 10 <= float(info.error_estimate) <= 10 * float(y)


def test_peer_quartic_bowl_is_solved():
    # Optimistix's diagonal_quadratic_bowl as a least-squares problem: sum y^4 w^2.
    # Before, the gradient test stopped Newton 4.7e-5 from the minimiser.
    p = get_problem("lsq_diagonal_bowl_20")
    y, info = mcg.argmin(p.fn, p.y0, *p.params, full_output=True)
    assert status(info) == S.CONVERGED
    assert float(jnp.max(jnp.abs(y - p.solution))) < 1e-8


# ----------------------------------------------------------------------- stagnation


def test_stalled_lbfgs_stops_early_with_its_own_status():
    # The gradient of this least-squares objective has a rounding floor near 1e-10:
    # L-BFGS used to repeat a rejected step until max_steps (2,000 steps).
    p = get_problem("lsq_trigonometric_70")
    y, info = mcg.argmin(p.fn, p.y0, *p.params, solver=mcg.solvers.LBFGS(), full_output=True)
    assert status(info) == S.STAGNATED and np.isnan(float(y[0]))
    assert int(info.num_steps) < 200
    assert 1e-10 < float(info.residual_norm) < 1e-7


def _stalled_tracker():
    # Progress, then STALL_QUASI_NEWTON passes without it (no fall in the residual).
    tracker = Tracker.start(jnp.asarray(1e-3), jnp.asarray(1.0))
    tracker = tracker.update(True, jnp.asarray(4e-12), jnp.asarray(1e-4), jnp.asarray(0.5))
    for _ in range(STALL_QUASI_NEWTON):
        tracker = tracker.update(True, jnp.asarray(4e-12), jnp.asarray(1e-9), jnp.asarray(0.5))
    assert bool(tracker.stagnated(STALL_QUASI_NEWTON))
    return tracker


@pytest.mark.parametrize("residual_ok", [True, False])
def test_a_stall_within_the_residual_tolerance_is_accepted_as_degenerate(residual_ok):
    # Where no step makes progress and the optimality residual passes its test, y is
    # a solution the solver cannot pin down (a continuum of minima): accepted, flagged,
    # with an unknown error. Above the tolerance a stall stays a failure.
    res = _stalled_tracker().result(
        jnp.ones(3),
        jnp.array(False),
        40,
        jnp.full(3, 4e-12),
        rtol=1e-10,
        atol=1e-10,
        window=STALL_QUASI_NEWTON,
        residual_ok=jnp.asarray(residual_ok),
    )
    if residual_ok:
        assert S(int(res.status)) == S.DEGENERATE and bool(res.converged)
        assert float(res.error_estimate) == np.inf
    else:
        assert S(int(res.status)) == S.STAGNATED and not bool(res.converged)


def test_a_nonfinite_stall_is_never_accepted():
    res = _stalled_tracker().result(
        jnp.ones(3),
        jnp.array(False),
        40,
        jnp.full(3, 4e-12),
        rtol=1e-10,
        atol=1e-10,
        window=STALL_QUASI_NEWTON,
        finite=jnp.array(False),
        residual_ok=jnp.array(True),
    )
    assert S(int(res.status)) == S.NONFINITE and not bool(res.converged)


def test_line_search_rescues_a_step_where_the_merit_is_flat_to_rounding():
    # Every trial point looks 1e-9 (relative) worse, as rounding makes it near a small
    # non-zero minimum; the gradient norm decreases at the full step.
    y = jnp.array([1.0])

    def evaluate(t):
        return jnp.asarray(1.0 + 1e-9), 0.5 * (t - 1.0) + 0.5 * (y - 1.0)

    g = jnp.array([1e-6])
    p = -g
    alpha, _, _, accepted = _linesearch.backtrack(evaluate, y, jnp.asarray(1.0), p, -1e-12)
    assert not bool(accepted)
    alpha, _, _, accepted = _linesearch.backtrack(
        evaluate,
        y,
        jnp.asarray(1.0),
        p,
        -1e-12,
        flat=lambda g_t: jnp.linalg.norm(g_t) < jnp.linalg.norm(g),
    )
    assert bool(accepted) and float(alpha) == 1.0


# ------------------------------------------------------------------ Newton fallback


def test_newton_hands_a_stalled_minimisation_to_bfgs():
    # Optimistix's 1-8-1 ReLU network (25 unknowns, so Newton by default): the Hessian
    # is singular and indefinite along the way, Newton alone does not converge.
    p = get_problem("lsq_simple_nn_25")
    alone = mcg.solvers.Newton(fallback=False)
    _, info = mcg.argmin(p.fn, p.y0, *p.params, solver=alone, full_output=True)
    assert not bool(info.converged)
    y, info = mcg.argmin(p.fn, p.y0, *p.params, full_output=True)
    assert bool(info.converged) and int(info.num_steps) > 100  # Newton's steps count
    # Its minima are not isolated (a dead unit leaves directions free): depending on
    # the CPU's rounding, BFGS's steps either become small (CONVERGED) or stop making
    # progress with the gradient within tolerance (DEGENERATE, error unknown).
    assert status(info) in (S.CONVERGED, S.DEGENERATE)
    assert float(jnp.max(jnp.abs(jax.grad(p.fn)(y, *p.params)))) <= 1e-10
    jac = jax.jacfwd(lambda d: mcg.argmin(p.fn, p.y0, d))(*p.params)
    assert bool(jnp.all(jnp.isfinite(jac)))


def test_newton_fallback_validation():
    with pytest.raises(TypeError, match="fallback must be True or False"):
        mcg.solvers.Newton(fallback=1)


# --------------------------------------------------------- singular tangent systems


def test_flat_direction_has_the_minimum_norm_derivative():
    # The example: converged, dy0/da = 1 well determined, y1 undetermined.
    def y_of(a):
        return mcg.argmin(lambda y, a: (y[0] - a) ** 2 + 0.0 * y[1], jnp.array([0.0, 0.5]), a)

    assert jax.jacfwd(y_of)(2.0).tolist() == [1.0, 0.0]
    assert jax.jacrev(y_of)(2.0).tolist() == [1.0, 0.0]
    batched = jax.vmap(jax.jacfwd(y_of))(jnp.array([1.0, 2.0]))
    assert batched.tolist() == [[1.0, 0.0], [1.0, 0.0]]


def test_singular_dense_solve_is_minimum_norm_when_consistent_and_nan_when_not():
    a = jnp.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 0.0]])
    solve = mcg.linear.Dense()

    def matvec(v):
        return a @ v

    x = solve(matvec, jnp.array([1.0, 4.0, 0.0]), symmetric=False)
    assert x.tolist() == [1.0, 2.0, 0.0]
    x = solve(matvec, jnp.array([1.0, 4.0, 1.0]), symmetric=False)
    assert bool(jnp.all(jnp.isnan(x)))
    # A regular system is solved as before (the fallback does not run).
    x = solve(lambda v: (a + jnp.eye(3)) @ v, jnp.array([2.0, 3.0, 1.0]), symmetric=False)
    np.testing.assert_allclose(x, [1.0, 1.0, 1.0], rtol=1e-15)


# ------------------------------------------------------------------------ fixed points


def test_fast_contraction_never_pays_for_newton():
    T = lambda y, c: c * jnp.cos(y)  # noqa: E731  contraction factor about 0.2
    y_default, info = mcg.fixed_point(T, jnp.zeros(3), 0.5, full_output=True)
    solver = mcg.solvers.FixedPointIteration()
    y_plain, plain = mcg.fixed_point(T, jnp.zeros(3), 0.5, solver=solver, full_output=True)
    assert int(info.num_steps) == int(plain.num_steps)
    assert bool(jnp.all(y_default == y_plain))


def test_slow_and_divergent_maps_go_to_newton():
    slow = lambda y, c: y - 0.01 * (y**3 - c)  # noqa: E731  factor about 0.95
    y, info = mcg.fixed_point(slow, jnp.ones(2), 2.0, full_output=True)
    assert bool(info.converged) and int(info.num_steps) < 20
    cbrt2 = 2.0 ** (1 / 3)
    np.testing.assert_allclose(y, cbrt2, rtol=0, atol=1e-10 * (1 + cbrt2))
    diverging = lambda y, c: 2.0 * y - c  # noqa: E731  iteration runs away from y = c
    y, info = mcg.fixed_point(diverging, jnp.zeros(2), 1.0, full_output=True)
    assert bool(info.converged) and y.tolist() == [1.0, 1.0]
    d = jax.grad(lambda c: mcg.fixed_point(slow, jnp.ones(1), c)[0])(2.0)
    np.testing.assert_allclose(d, 1 / (3 * 2.0 ** (2 / 3)), rtol=1e-9)
    # The iteration 0.5 -> 2 -> -1 leaves the map's domain (sqrt of a negative number):
    # Newton starts from the last point where the map was finite, y = 2, not from -1.
    leaves = lambda y, c: c - 2.0 * y + 0.0 * jnp.sqrt(y)  # noqa: E731  fixed point c / 3
    y, info = mcg.fixed_point(leaves, jnp.array([0.5]), 3.0, full_output=True)
    assert bool(info.converged) and abs(float(y[0]) - 1.0) < 1e-12


def test_hybrid_under_vmap_mixes_both_stages():
    def solve(c):
        return mcg.fixed_point(lambda y, c: y - c * (y**3 - 2.0), jnp.ones(1), c, full_output=True)

    c = jnp.array([0.2, 0.001])  # contraction factors 0.05 (iteration) and 0.995 (Newton)
    y, info = jax.vmap(solve)(c)
    assert info.converged.tolist() == [True, True]
    cbrt2 = 2.0 ** (1 / 3)
    np.testing.assert_allclose(y[:, 0], cbrt2, rtol=0, atol=1e-10 * (1 + cbrt2))
    for i in range(2):  # each element takes the path it takes alone
        y_i, info_i = solve(c[i])
        np.testing.assert_allclose(y_i[0], y[i, 0], rtol=1e-14)
        assert int(info_i.num_steps) == int(info.num_steps[i]) < 20


def test_iterate_then_newton_validation():
    with pytest.raises(ValueError, match="rate must be in"):
        mcg.solvers.IterateThenNewton(rate=1.0)
    with pytest.raises(ValueError, match="patience must be an integer >= 1"):
        mcg.solvers.IterateThenNewton(patience=0)
    with pytest.raises(TypeError, match="newton must be None or a Newton"):
        mcg.solvers.IterateThenNewton(newton=mcg.solvers.BFGS())
    with pytest.raises(ValueError, match="solves fixed_point problems, not 'root'"):
        mcg.root(lambda y: y, jnp.zeros(1), solver=mcg.solvers.IterateThenNewton())
