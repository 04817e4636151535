"""with_solver_stats: per-call statistics of the inner solves in an unchanged function."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mcmc_customgrad as mcg
from mcmc_customgrad.implicit.root import CORE_NAME


def square(y, a):
    return y**2 - a


def sqrt_solve(a):
    return mcg.root(square, jnp.array(1.0), a)


def one_root(a):
    return sqrt_solve(a) ** 2


def no_solve(a):
    return jnp.sin(a) * 2.0


def quartic(y, x):
    return jnp.sum(jnp.abs(y) ** 3 / 3 - x * y)


def one_min_value(x):
    return -mcg.min_value(quartic, jnp.zeros(2), x)


def batched(a):
    return jnp.sum(jax.vmap(sqrt_solve)(a))


def two_solves(a):
    return sqrt_solve(a) + mcg.min_value(quartic, jnp.zeros(1), jnp.reshape(a, (1,)))


def failing(a):
    return mcg.root(lambda y, b: y**2 + b, jnp.array(1.0), a)


def in_scan(a):
    def step(c, ai):
        return c + sqrt_solve(ai), None

    return jax.lax.scan(step, 0.0, a)[0]


def bitwise_equal(x, y):
    x, y = np.asarray(x), np.asarray(y)
    return x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()


A = jnp.array([1.0, 2.0, 4.0, 9.0])


def test_jaxpr_structure():
    eqns = jax.make_jaxpr(jax.vmap(sqrt_solve))(A).jaxpr.eqns
    (core,) = [e for e in eqns if e.params.get("name") == CORE_NAME]
    assert [str(v.aval) for v in core.outvars[1:]] == [
        "bool[4]",
        "int32[4]",
        "float64[4]",
        "int32[4]",  # status
        "float64[4]",  # error_estimate
    ]


def test_no_solves():
    value, stats = mcg.with_solver_stats(no_solve)(jnp.array(0.3))
    assert bitwise_equal(value, no_solve(jnp.array(0.3)))
    assert bool(stats.converged) and int(stats.num_solves) == 0
    assert int(stats.num_steps) == 0 and float(stats.residual_norm) == 0.0
    assert int(stats.num_hidden) == 0


def test_single_root_matches_full_output():
    a = jnp.array(2.0)
    value, stats = mcg.with_solver_stats(one_root)(a)
    _, info = mcg.root(square, jnp.array(1.0), a, full_output=True)
    assert bitwise_equal(value, one_root(a))
    assert bool(stats.converged) and int(stats.num_solves) == 1
    assert int(stats.num_steps) == int(info.num_steps) > 0
    assert float(stats.residual_norm) == float(info.residual_norm)


def test_min_value():
    x = jnp.array([0.3, -0.5])
    value, stats = mcg.with_solver_stats(one_min_value)(x)
    _, info = mcg.min_value(quartic, jnp.zeros(2), x, full_output=True)
    assert bitwise_equal(value, one_min_value(x))
    assert bool(stats.converged) and int(stats.num_solves) == 1
    assert int(stats.num_steps) == int(info.num_steps)


def test_vmapped_solve_counts_every_element():
    value, stats = mcg.with_solver_stats(batched)(A)
    _, info = jax.vmap(lambda a: mcg.root(square, jnp.array(1.0), a, full_output=True))(A)
    assert bitwise_equal(value, batched(A))
    assert int(stats.num_solves) == A.size
    assert int(stats.num_steps) == int(jnp.sum(info.num_steps))
    assert float(stats.residual_norm) == float(jnp.max(info.residual_norm))


def test_solves_inside_a_user_jit_are_found():
    jitted = jax.jit(batched)
    value, stats = mcg.with_solver_stats(jitted)(A)
    assert bitwise_equal(value, jitted(A))
    assert int(stats.num_solves) == A.size and int(stats.num_hidden) == 0


def test_two_solves_are_summed():
    a = jnp.array(3.0)
    value, stats = mcg.with_solver_stats(two_solves)(a)
    _, s1 = mcg.with_solver_stats(one_root)(a)
    _, s2 = mcg.with_solver_stats(lambda x: mcg.min_value(quartic, jnp.zeros(1), x))(a[None])
    assert bitwise_equal(value, two_solves(a))
    assert int(stats.num_solves) == 2
    assert int(stats.num_steps) == int(s1.num_steps) + int(s2.num_steps)


def test_failed_solve():
    value, stats = mcg.with_solver_stats(failing)(jnp.array(1.0))
    assert np.isnan(value)
    assert not bool(stats.converged) and int(stats.num_solves) == 1
    # The reason is counted: the same status full_output reports.
    _, info = mcg.root(lambda y, b: y**2 + b, jnp.array(1.0), 1.0, full_output=True)
    reason = mcg.Status(int(info.status))
    assert not reason.accepted
    assert stats.reasons() == {reason.name: 1}
    assert int(stats.status_counts[reason]) == 1 == int(jnp.sum(stats.status_counts))


def test_status_counts_by_reason_under_vmap():
    # Three elements: two converge, one (b = 4 > 0: no real root of y^2 + b) fails.
    fn = mcg.with_solver_stats(lambda a: jnp.sum(jax.vmap(failing)(a)))
    _, stats = fn(jnp.array([-1.0, 4.0, -4.0]))
    assert stats.status_counts.shape == (len(mcg.Status),)
    assert int(stats.status_counts[mcg.Status.CONVERGED]) == 2
    assert int(jnp.sum(stats.status_counts)) == int(stats.num_solves) == 3
    assert sum(stats.reasons().values()) == 3


def test_degenerate_solutions_are_counted():
    # A quartic minimum: BFGS meets the gradient test long before y is known (DEGENERATE,
    # still accepted, so converged stays True).
    def logp(w):
        quartic4 = lambda y, w: jnp.sum(w**2 * y**4)  # noqa: E731
        return -mcg.min_value(quartic4, jnp.ones(3), w, solver=mcg.solvers.BFGS())

    _, stats = mcg.with_solver_stats(logp)(jnp.array(2.0))
    assert bool(stats.converged)
    assert stats.reasons() == {"DEGENERATE": 1}


def test_no_solves_count_nothing():
    _, stats = mcg.with_solver_stats(no_solve)(jnp.array(0.3))
    assert stats.reasons() == {} and stats.status_counts.tolist() == [0] * len(mcg.Status)


def test_failed_element_under_vmap():
    fn = mcg.with_solver_stats(lambda a: jnp.sum(jax.vmap(failing)(a)))
    _, stats = fn(jnp.array([-1.0, 1.0, -4.0]))  # only the middle one has no root
    assert not bool(stats.converged) and int(stats.num_solves) == 3


def test_jit_vmap_over_a_batch():
    batch = jnp.stack([A, 2 * A, -A])  # the last row fails
    fn_stats = jax.jit(jax.vmap(mcg.with_solver_stats(lambda a: jnp.sum(jax.vmap(failing)(-a)))))
    values, stats = fn_stats(batch)
    expected = jax.jit(jax.vmap(lambda a: jnp.sum(jax.vmap(failing)(-a))))(batch)
    assert bitwise_equal(values, expected)
    assert stats.converged.tolist() == [True, True, False]
    assert stats.num_solves.tolist() == [4, 4, 4]
    for i in range(2):
        _, single = mcg.with_solver_stats(batched)(batch[i])
        assert int(stats.num_steps[i]) == int(single.num_steps)
    # Per batch element by status, and summed over the batch by reasons().
    assert stats.status_counts.shape == (3, len(mcg.Status))
    assert stats.status_counts[:, mcg.Status.CONVERGED].tolist() == [4, 4, 0]
    assert sum(stats.reasons().values()) == 12 and stats.reasons()["CONVERGED"] == 8
    assert mcg.SolverStats(*stats[:5]).reasons() == {}  # built by hand without counts


def test_solve_in_scan_is_hidden():
    value, stats = mcg.with_solver_stats(in_scan)(A)
    assert bitwise_equal(value, in_scan(A))
    assert int(stats.num_hidden) == 1 and int(stats.num_solves) == 0


def test_kwargs_and_pytree_output():
    def fn(a, *, scale):
        return {"y": sqrt_solve(a) * scale, "a": a}

    out, stats = mcg.with_solver_stats(fn)(jnp.array(4.0), scale=2.0)
    assert set(out) == {"y", "a"} and float(out["y"]) == pytest.approx(4.0)
    assert int(stats.num_solves) == 1


@pytest.mark.parametrize(("name", "solves"), [("kepler", 10), ("conjugate", 1)])
def test_library_models(name, solves):
    example = mcg.models.kepler(num_obs=10) if name == "kepler" else mcg.models.conjugate(d=3)
    model = example.model
    u = jax.vmap(model.init)(jax.random.split(jax.random.key(0), 3))
    values, stats = jax.jit(jax.vmap(mcg.with_solver_stats(model.logdensity)))(u)
    assert bitwise_equal(values, jax.jit(jax.vmap(model.logdensity))(u))
    assert stats.num_solves.tolist() == [solves] * 3
    assert bool(jnp.all(stats.converged)) and bool(jnp.all(stats.num_steps > 0))
    assert stats.num_hidden.tolist() == [0] * 3
    value, single = jax.jit(mcg.with_solver_stats(model.logdensity))(u[0])
    assert bitwise_equal(value, jax.jit(model.logdensity)(u[0]))
    assert int(single.num_steps) == int(stats.num_steps[0])
