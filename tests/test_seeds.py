"""The seed documents' numbers, computed by the library."""

import jax
import jax.numpy as jnp
import numpy as np
from helpers import conjugate_closed, conjugate_inner

import mcmc_customgrad as mcg


def test_seed000_conjugate_gradient_matches_closed_form():
    # Seed 000: f(x) = -min_y |y|^3/3 - x y has gradient 0.5604908 at x = 0.31415.
    g = conjugate_inner(3.0)

    def f(x):
        return -mcg.min_value(g, jnp.zeros(1), x)

    x = jnp.array([0.31415])
    grad = jax.grad(f)(x)[0]
    closed = jax.grad(conjugate_closed(3.0))(x)[0]
    assert abs(grad - closed) <= 1e-6 * abs(closed)
    # The seed prints 0.5604908 (7 decimals of the float32 closed form 0.56049085).
    assert abs(grad - 0.5604908) < 1e-7
    # The seed's float32 recipe was off by 8e-6; float64 with tight tolerances is not.
    assert abs(grad - closed) < 1e-9


def test_seed000_value_is_the_conjugate():
    g = conjugate_inner(3.0)
    x = jnp.array([0.31415])
    value = -mcg.min_value(g, jnp.zeros(1), x)
    np.testing.assert_allclose(value, conjugate_closed(3.0)(x), rtol=1e-12)


def test_seed001_newton_sqrt_derivatives():
    def sqrt(a):
        return mcg.fixed_point(lambda x, a: 0.5 * (x + a / x), a, a)

    # Within the solver's tolerance (atol + rtol |y|, 1e-10 each): plain Newton steps
    # converge quadratically and stop at 1.6e-12 here.
    assert abs(sqrt(2.0) - np.sqrt(2.0)) < 1e-10 * (1 + np.sqrt(2.0))
    assert abs(jax.grad(sqrt)(2.0) - 0.35355339) < 5e-9
    assert abs(jax.grad(jax.grad(sqrt))(2.0) - -0.08838835) < 5e-9
    np.testing.assert_allclose(jax.grad(jax.grad(sqrt))(2.0), -0.25 * 2.0**-1.5, rtol=1e-12)


def test_seed003_closure_over_traced_value():
    # Seed 003: fun closes over a value that is being differentiated.
    def cube_root(a):
        return mcg.root(lambda y: y**3 - a, jnp.array(1.0))

    np.testing.assert_allclose(jax.grad(cube_root)(8.0), 1 / 12, rtol=1e-12)
    np.testing.assert_allclose(
        jax.grad(jax.grad(cube_root))(8.0), -2 / 9 * 8.0 ** (-5 / 3), rtol=1e-10
    )
