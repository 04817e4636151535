"""examples/rust_bus_engine.py: the Bellman fixed point, its implicit derivative, the
choice probabilities and the command-line entry point (docs/rust-bus-engine.md)."""

import io
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mcmc_customgrad as mcg
from mcmc_customgrad import cli

EXAMPLE = pathlib.Path(__file__).resolve().parent.parent / "examples" / "rust_bus_engine.py"
BETA = 0.995


@pytest.fixture(scope="module")
def rb():
    """The example as a module (``examples/`` on ``sys.path`` for its ``_common``)."""
    sys.path.insert(0, str(EXAMPLE.parent))
    import rust_bus_engine

    yield rust_bus_engine
    sys.path.remove(str(EXAMPLE.parent))


@pytest.fixture(scope="module")
def probs(rb):
    return jnp.asarray(rb.INCREMENT_PROBS)


def test_transitions_are_stochastic_and_never_go_down(rb, probs):
    P = rb.transition_matrix(90)
    assert P.shape == (90, 90)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=0, atol=1e-15)
    assert jnp.all(jnp.tril(P, -1) == 0)  # keeping an engine never lowers its mileage
    assert P[-1, -1] == 1.0  # the top bin is absorbing
    W = jnp.sin(jnp.arange(90.0))
    np.testing.assert_allclose(rb.expected_next(W, probs), P @ W, rtol=0, atol=1e-14)


@pytest.mark.parametrize("RC, theta1", [(10.0, 2.5), (3.0, 8.0), (25.0, 0.5)])
def test_fixed_point_satisfies_the_bellman_equation_at_beta_0995(rb, probs, RC, theta1):
    W, info = rb.value_function(RC, theta1, 90, BETA, full_output=True)
    assert bool(info.converged) and 1 <= int(info.num_steps) <= 12
    T = rb.bellman(W, RC, theta1, probs, BETA)
    assert float(jnp.max(jnp.abs(T - W))) <= 1e-12 * (1 + float(jnp.max(jnp.abs(W))))
    assert W[0] == 0.0 and float(jnp.max(jnp.abs(W))) < 2 * RC  # relative values: O(RC)
    # The absolute value function V = T(V) (contraction factor beta) differs by a constant.
    iteration = mcg.solvers.FixedPointIteration(max_steps=20_000)
    V, vinfo = mcg.fixed_point(
        rb.bellman_absolute,
        jnp.zeros(90),
        RC,
        theta1,
        probs,
        BETA,
        solver=iteration,
        full_output=True,
    )
    assert bool(vinfo.converged) and int(vinfo.num_steps) > 1000  # plain iteration crawls
    np.testing.assert_allclose(V - V[0], W, rtol=0, atol=1e-7)
    v_keep, v_replace = rb.choice_values(V, RC, theta1, probs, BETA)
    np.testing.assert_allclose(jnp.logaddexp(v_keep, v_replace), V, rtol=0, atol=1e-8)


def test_every_solver_finds_the_same_fixed_point(rb):
    solvers = [
        rb.policy_iteration,
        rb.newton_kantorovich,
        mcg.solvers.Newton(),
        mcg.solvers.FixedPointIteration(max_steps=5000),
    ]
    results = [rb.value_function(10.0, 2.5, 90, BETA, solver=s, full_output=True) for s in solvers]
    steps = [int(info.num_steps) for _, info in results]
    assert all(bool(info.converged) for _, info in results)
    # Newton-Kantorovich = policy iteration; the library's Newton takes undamped steps
    # here too (it damps only after a shortened step), with the same quadratic finish.
    assert steps[0] == steps[1] and abs(steps[2] - steps[1]) <= 2 and steps[3] > 500
    for W, _ in results[1:3]:  # Newton's last step leaves a residual near rounding
        np.testing.assert_allclose(W, results[0][0], rtol=0, atol=1e-10)
    # Plain iteration stops at a residual r ~ 1e-9, an error up to r / (1 - 0.981).
    np.testing.assert_allclose(results[3][0], results[0][0], rtol=0, atol=1e-7)


def _unrolled_log_probs(rb, RC, theta1, probs, num_steps=3000):
    """Plain iteration of the relative Bellman operator, unrolled: JAX differentiates the
    iterations themselves (the error after k steps shrinks like 0.981^k)."""
    W = jax.lax.fori_loop(
        0, num_steps, lambda _, W: rb.bellman(W, RC, theta1, probs, BETA), jnp.zeros(90)
    )
    v_keep, v_replace = rb.choice_values(W, RC, theta1, probs, BETA)
    return jax.nn.log_sigmoid(v_replace - v_keep)


@pytest.mark.slow  # an unrolled iteration and finite differences (fast tier's budget)
def test_implicit_gradient_matches_unrolled_iteration_and_finite_differences(rb, probs):
    weights = jnp.linspace(1.0, 2.0, 90)

    def implicit(theta):
        return jnp.sum(weights * rb.choice_log_probs(theta[0], theta[1], 90, BETA)[:, 1])

    def unrolled(theta):
        return jnp.sum(weights * _unrolled_log_probs(rb, theta[0], theta[1], probs))

    theta = jnp.array([10.0, 2.5])
    value, grad = jax.jit(jax.value_and_grad(implicit))(theta)
    value_u, grad_u = jax.jit(jax.value_and_grad(unrolled))(theta)
    np.testing.assert_allclose(value, value_u, rtol=1e-10)
    np.testing.assert_allclose(grad, grad_u, rtol=1e-8)
    h, value_only = 1e-5, jax.jit(implicit)
    fd = [(value_only(theta + h * e) - value_only(theta - h * e)) / (2 * h) for e in jnp.eye(2)]
    np.testing.assert_allclose(grad, jnp.array(fd), rtol=1e-7)
    # Second order: the same rule applied again, against forward over reverse unrolled.
    hess = jax.jit(jax.hessian(implicit))(theta)
    hess_u = jax.jit(jax.jacfwd(jax.grad(unrolled)))(theta)
    np.testing.assert_allclose(hess, hess_u, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("RC, theta1", [(10.0, 2.5), (0.5, 40.0), (200.0, 0.01)])
def test_choice_probabilities_sum_to_one(rb, RC, theta1):
    logp = rb.choice_log_probs(RC, theta1, 90, BETA)
    assert logp.shape == (90, 2) and bool(jnp.all(logp <= 0.0))
    np.testing.assert_allclose(jnp.exp(logp).sum(axis=1), 1.0, rtol=0, atol=1e-14)


def test_model_likelihood_per_bus_and_simulation(rb):
    data = rb.simulate(20, 30, seed=3)
    again = rb.simulate(20, 30, seed=3)
    assert data["x"].shape == data["d"].shape == (20, 30)
    assert np.array_equal(data["x"], again["x"]) and np.array_equal(data["d"], again["d"])
    model = rb.make_model(data)
    assert model.names == ("RC", "theta1") and model.dim == 2
    u = model.to_unconstrained({"RC": 9.0, "theta1": 3.0})
    per_bus = model.log_likelihood(u)
    assert per_bus.shape == (20,)
    prior_only = rb.make_model({**data, "x": data["x"][:0], "d": data["d"][:0]})
    np.testing.assert_allclose(
        model.logdensity(u), prior_only.logdensity(u) + per_bus.sum(), rtol=1e-12
    )


# ~12 s of compiles: the slow tier (check-grad on a file's builder: tests/test_cli.py).
@pytest.mark.slow
def test_cli_check_grad_on_the_example(rb):
    out = io.StringIO()
    code = cli.main(["check-grad", f"{EXAMPLE}:build", "--points", "2"], out=out)
    text = out.getvalue()
    assert code == 0, text
    assert "finite differences" in text and "| hessian_fd |" in text
    assert text.rstrip().endswith("PASSED")
