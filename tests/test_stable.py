import jax
import jax.numpy as jnp
import numpy as np
from jax.test_util import check_grads

from mcmc_customgrad import stable


def test_log1pexp_gradient_at_100_is_exactly_one():
    # Seed 001: autodiff of log(1 + exp(x)) gives nan at 100 in float32 (inf / inf);
    # in float64 the overflow comes at 1000. The custom rule is exactly 1 at both.
    assert float(jax.grad(stable.log1pexp)(100.0)) == 1.0
    assert float(jax.grad(stable.log1pexp)(1000.0)) == 1.0
    assert float(jax.grad(stable.log1pexp)(jnp.float32(100.0))) == 1.0
    naive = jax.grad(lambda x: jnp.log(1.0 + jnp.exp(x)))
    assert np.isnan(naive(1000.0)) and np.isnan(naive(jnp.float32(100.0)))


def test_log1pexp_values_and_derivatives():
    x = jnp.array([-800.0, -30.0, -1.0, 0.0, 2.0, 35.0, 800.0])
    v = stable.log1pexp(x)
    ref = np.logaddexp(0.0, np.asarray(x))
    np.testing.assert_allclose(v, ref, rtol=1e-15)
    np.testing.assert_allclose(
        jax.vmap(jax.grad(stable.log1pexp))(x), jax.nn.sigmoid(x), rtol=1e-15
    )
    check_grads(stable.log1pexp, (jnp.array([-3.0, 0.5, 4.0]),), order=2, modes=("fwd", "rev"))


def test_log1mexp_accuracy_across_the_range():
    x = np.array([1e-300, 1e-20, 1e-8, 0.1, 0.6931, 0.6932, 2.0, 40.0, 800.0])
    got = np.asarray(stable.log1mexp(jnp.asarray(x)))
    # Reference: the same identities evaluated branch by branch in NumPy.
    small = x < np.log(2)
    ref = np.empty_like(x)
    ref[small] = np.log(-np.expm1(-x[small]))
    ref[~small] = np.log1p(-np.exp(-x[~small]))
    np.testing.assert_allclose(got, ref, rtol=1e-14)
    assert np.all(np.isfinite(got))
    with np.errstate(divide="ignore"):
        naive = np.log(1 - np.exp(-x[:2]))
    assert np.all(~np.isfinite(naive))  # what the careful form avoids
    # Away from the log singularity at 0, where finite differences themselves fail.
    check_grads(stable.log1mexp, (jnp.array([0.1, 0.5, 3.0]),), order=2, modes=("fwd", "rev"))


def test_safe_where_keeps_nan_out_of_gradients():
    f_naive = lambda x: jnp.sum(jnp.where(x > 0, jnp.log(x), 0.0))  # noqa: E731
    f_safe = lambda x: jnp.sum(stable.safe_where(x > 0, jnp.log, x, 1.0))  # noqa: E731
    x = jnp.array([2.0, -1.0, 0.0])
    assert np.isnan(jax.grad(f_naive)(x)[2]) or np.isinf(jax.grad(f_naive)(x)[2])
    np.testing.assert_array_equal(jax.grad(f_safe)(x), [0.5, 0.0, 0.0])
    np.testing.assert_allclose(f_safe(x), np.log(2.0) + 1.0 + 1.0)


def test_x_over_one_plus_sqrt_boundary_convention():
    f = stable.x_over_one_plus_sqrt
    assert float(jax.grad(f)(0.0)) == 1.0
    assert np.isnan(jax.grad(lambda x: x / (1 + jnp.sqrt(x)))(0.0))
    x = jnp.array([0.5, 2.0, 9.0])
    np.testing.assert_allclose(
        jax.vmap(jax.grad(f))(x), jax.vmap(jax.grad(lambda x: x / (1 + jnp.sqrt(x))))(x), rtol=1e-14
    )
