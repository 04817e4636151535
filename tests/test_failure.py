"""Failure is data: NaN and converged=False, never a silently wrong number."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import conjugate_inner, kepler

import mcmc_customgrad as mcg

G3 = conjugate_inner(3.0)
CAPPED = mcg.solvers.Newton(max_steps=1, fallback=False)  # no BFGS rescue


@pytest.mark.parametrize(
    "call",
    [
        lambda: mcg.argmin(G3, jnp.zeros(1), jnp.array([0.7]), solver=CAPPED, full_output=True),
        lambda: mcg.min_value(G3, jnp.zeros(1), jnp.array([0.7]), solver=CAPPED, full_output=True),
        lambda: mcg.root(kepler, jnp.array(0.0), 2.0, 0.9, solver=CAPPED, full_output=True),
        lambda: mcg.fixed_point(
            lambda x, a: 0.5 * (x + a / x),
            jnp.array(9.0),
            2.0,
            solver=mcg.solvers.FixedPointIteration(max_steps=1),
            full_output=True,
        ),
    ],
    ids=["argmin", "min_value", "root", "fixed_point"],
)
def test_capped_solver_gives_nan_and_not_converged(call):
    y, info = call()
    assert np.all(np.isnan(y))
    assert not bool(info.converged)
    assert int(info.num_steps) == 1
    assert float(info.residual_norm) > 1e-6


def test_converged_solve_reports_info():
    _y, info = mcg.root(kepler, jnp.array(0.0), 2.0, 0.9, full_output=True)
    assert bool(info.converged)
    assert 0 < int(info.num_steps) < 100
    assert float(info.residual_norm) <= 1e-10 * 2.5
    assert info.num_steps.dtype == jnp.int32 and info.converged.dtype == jnp.bool_


def sqrt_of(a):
    # No real root for a < 0: Newton cannot converge there.
    return mcg.root(lambda y, a: y**2 - a, jnp.array(1.0), a, full_output=True)


def test_vmap_one_failing_element_does_not_poison_the_others():
    a = jnp.array([4.0, -1.0, 9.0])
    y, info = jax.vmap(sqrt_of)(a)
    assert info.converged.tolist() == [True, False, True]
    # Residual tolerance 1e-10 bounds the error in y by about 1e-10 / (2 y).
    np.testing.assert_allclose(y[jnp.array([0, 2])], [2.0, 3.0], rtol=1e-10)
    assert np.isnan(y[1])

    grads = jax.vmap(jax.grad(lambda a: sqrt_of(a)[0]))(a)
    np.testing.assert_allclose(grads[jnp.array([0, 2])], [0.25, 1 / 6], rtol=1e-10)

    # Masking the failed element must leave a finite gradient for the shared parameter:
    # the "double where" inside the rule keeps the NaN out of the cotangents.
    def masked_total(scale):
        y, info = jax.vmap(sqrt_of)(scale * a)
        return jnp.sum(jnp.where(info.converged, y, 0.0))

    g = jax.grad(masked_total)(1.0)
    # d/ds sum_i sqrt(s a_i) over the converged a_i = 4 / (2 * 2) + 9 / (2 * 3).
    np.testing.assert_allclose(g, 2.5, rtol=1e-10)
    h = jax.hessian(masked_total)(1.0)
    assert np.isfinite(h)


def test_failed_element_has_zero_tangent_and_nan_value():
    y, y_dot = jax.jvp(lambda a: sqrt_of(a)[0], (jnp.array(-1.0),), (jnp.array(1.0),))
    assert np.isnan(y) and y_dot == 0.0


def test_unmasked_failure_has_nan_value_and_zero_gradient():
    # A density that uses a failed solve is NaN, which is what makes HMC reject the
    # proposal. Its reverse-mode gradient is 0, not NaN: the failed element's tangent is
    # zeroed so that masking with where() stays clean (documented in root's docstring).
    f = lambda a: -0.5 * sqrt_of(a)[0] ** 2  # noqa: E731
    assert np.isnan(f(-1.0))
    assert jax.grad(f)(-1.0) == 0.0
    _, f_dot = jax.jvp(f, (-1.0,), (1.0,))  # forward mode: NaN primal times zero tangent
    assert np.isnan(f_dot)


def test_min_value_vmap_failure_isolated():
    x = jnp.array([[0.5], [1.5]])
    solver = mcg.solvers.Newton(max_steps=4, fallback=False)

    def v(x):
        return mcg.min_value(G3, jnp.array([-30.0]), x, solver=solver, full_output=True)

    values, info = jax.vmap(v)(x)
    assert not bool(jnp.all(info.converged)), "the capped solve should fail for some start"
    grads = jax.vmap(jax.grad(lambda x: v(x)[0]))(x)
    for i in range(2):
        if info.converged[i]:
            np.testing.assert_allclose(-grads[i], jnp.sqrt(x[i]), rtol=1e-8)
        else:
            assert np.isnan(values[i]) and np.all(grads[i] == 0.0)


def test_on_failure_raise_eager():
    with pytest.raises(mcg.SolverError, match="did not converge"):
        mcg.root(lambda y, a: y**2 - a, jnp.array(1.0), -1.0, on_failure="raise")


def test_on_failure_raise_under_jit():
    f = jax.jit(lambda a: mcg.root(lambda y, a: y**2 - a, jnp.array(1.0), a, on_failure="raise"))
    np.testing.assert_allclose(f(4.0), 2.0)
    with pytest.raises(Exception, match="did not converge"):
        jax.block_until_ready(f(-1.0))


def test_on_failure_raise_under_vmap():
    with pytest.raises(Exception, match="did not converge"):
        jax.block_until_ready(
            jax.vmap(
                lambda a: mcg.root(lambda y, a: y**2 - a, jnp.array(1.0), a, on_failure="raise")
            )(jnp.array([4.0, -1.0, 9.0]))
        )


def test_on_failure_last_returns_last_iterate():
    y, info = mcg.argmin(
        G3, jnp.zeros(1), jnp.array([0.7]), solver=CAPPED, full_output=True, on_failure="last"
    )
    assert not bool(info.converged)
    assert np.all(np.isfinite(y)) and float(y[0]) != 0.0
    # Its derivative is the IFT tangent at that point: finite, not masked.
    g = jax.grad(lambda x: mcg.argmin(G3, jnp.zeros(1), x, solver=CAPPED, on_failure="last")[0])(
        jnp.array([0.7])
    )
    assert np.all(np.isfinite(g))


def test_nonfinite_objective_is_a_failure_not_a_crash():
    f = lambda y, a: jnp.sum(jnp.log(y - a) ** 2)  # noqa: E731  NaN left of a
    y, info = mcg.argmin(f, jnp.zeros(1), jnp.array([1.0]), full_output=True)
    assert not bool(info.converged) and np.all(np.isnan(y))


def test_far_start_does_not_loosen_the_tolerance():
    # Regression: a tolerance relative to |F(y0)| accepted y = 6 for exp(y) = 1 from
    # y0 = 30 (|F(y0)| = 1e13) and reported convergence.
    y, info = mcg.root(lambda y, a: jnp.exp(y) - a, jnp.array(30.0), 1.0, full_output=True)
    assert bool(info.converged) and abs(float(y)) < 1e-10
    for solver in (mcg.solvers.LBFGS(), mcg.solvers.BFGS(), mcg.solvers.Newton()):
        y = mcg.argmin(lambda y, a: jnp.cosh(y - a), jnp.array(30.0), 0.0, solver=solver)
        assert abs(float(y)) < 1e-9, solver
    np.testing.assert_allclose(
        jax.grad(lambda a: mcg.root(lambda y, a: jnp.exp(y) - a, jnp.array(30.0), a))(1.0),
        1.0,
        rtol=1e-9,
    )


def test_failed_element_with_infinite_parameter_derivative_stays_isolated():
    # Regression: at the fallback point y0, d F / d a = -s / (2 sqrt(a)) is NaN for
    # a = -1; in reverse mode a zero cotangent times it gave NaN for the shared `s`.
    A = jnp.array([4.0, -1.0])
    G = lambda y, a, s: y - s * jnp.sqrt(a)  # noqa: E731

    def loss(s):
        ys, info = jax.vmap(lambda a: mcg.root(G, jnp.array(1.0), a, s, full_output=True))(A)
        return jnp.sum(jnp.where(info.converged, ys, 0.0))

    np.testing.assert_allclose(jax.grad(loss)(1.0), 2.0, rtol=1e-12)
    np.testing.assert_allclose(jax.jacfwd(loss)(1.0), 2.0, rtol=1e-12)

    def value_loss(s):
        f = lambda y, a, s: (y - s * jnp.sqrt(a)) ** 2 + y**2  # noqa: E731
        vs, info = jax.vmap(lambda a: mcg.min_value(f, jnp.array(1.0), a, s, full_output=True))(A)
        return jnp.sum(jnp.where(info.converged, vs, 0.0))

    assert np.isfinite(jax.grad(value_loss)(1.0))
