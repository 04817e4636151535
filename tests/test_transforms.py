"""Every piece against a closed form, under every transformation.

Each case maps a parameter vector theta to an output computed by the library (`solve`)
and by an independent closed form (`closed`). The same battery runs on all of them:
values, jacfwd/jacrev, Hessians, check_grads at order 2 in both modes, jit and vmap.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import conjugate_closed, conjugate_inner, kepler
from jax.test_util import check_grads

import mcmc_customgrad as mcg

# --- Kepler: E - e sin E = M, reference with the hand-derived derivative -------------


@jax.custom_jvp
def kepler_reference(M, e):
    E = jax.lax.fori_loop(0, 60, lambda i, E: E - kepler(E, M, e) / (1 - e * jnp.cos(E)), M)
    return E


@kepler_reference.defjvp
def _kepler_reference_jvp(primals, tangents):
    (M, e), (dM, de) = primals, tangents
    E = kepler_reference(M, e)
    # dE/dM = 1/(1 - e cos E), dE/de = sin E/(1 - e cos E)
    return E, (dM + jnp.sin(E) * de) / (1 - e * jnp.cos(E))


def kepler_solve(theta):
    M, e = theta[0], theta[1]
    return jnp.atleast_1d(mcg.root(kepler, M, M, e))


def kepler_closed(theta):
    return jnp.atleast_1d(kepler_reference(theta[0], theta[1]))


# --- Ridge regression argmin ----------------------------------------------------------

X = jnp.array([[1.0, 2.0, 0.5], [3.0, -1.0, 2.0], [0.5, 0.3, -1.0], [2.0, 1.0, 1.0]])
T = jnp.array([1.0, -0.5, 2.0, 0.3])


def ridge_loss(b, lam, shift):
    return jnp.sum((X @ b - T - shift) ** 2) + lam * jnp.sum(b**2)


def ridge_solve(theta):
    return mcg.argmin(ridge_loss, jnp.zeros(3), theta[0], theta[1])


def ridge_closed(theta):
    lam, shift = theta[0], theta[1]
    return jnp.linalg.solve(X.T @ X + lam * jnp.eye(3), X.T @ (T + shift))


# --- Linear fixed point y = A(theta) y + c(theta) -------------------------------------

B = jnp.array([[0.2, -0.1, 0.05], [0.1, 0.3, -0.2], [0.0, 0.1, 0.25]])


def affine_map(y, s, c):
    return s * (B @ y) + c * jnp.arange(1.0, 4.0)


def affine_solve(theta):
    return mcg.fixed_point(affine_map, jnp.zeros(3), theta[0], theta[1])


def affine_closed(theta):
    s, c = theta[0], theta[1]
    return jnp.linalg.solve(jnp.eye(3) - s * B, c * jnp.arange(1.0, 4.0))


# --- Convex conjugate by min_value ----------------------------------------------------

P = 2.7
CONJUGATE_INNER = conjugate_inner(P)  # one function object, so compiled solves are reused


def conjugate_solve(theta):
    return jnp.atleast_1d(-mcg.min_value(CONJUGATE_INNER, jnp.zeros(2), theta))


def conjugate_closed_case(theta):
    return jnp.atleast_1d(conjugate_closed(P)(theta))


# --- Pytree unknowns, a root of a coupled system --------------------------------------


def coupled(y, theta):
    return {"a": y["a"] ** 3 - theta[:2], "b": y["b"] - theta[2] * jnp.sum(y["a"])}


def pytree_solve(theta):
    y0 = {"a": jnp.ones(2), "b": jnp.array(0.0)}
    y = mcg.root(coupled, y0, theta)
    return jnp.concatenate([y["a"], y["b"][None]])


def pytree_closed(theta):
    a = jnp.cbrt(theta[:2])
    return jnp.concatenate([a, (theta[2] * jnp.sum(a))[None]])


CASES = {
    "kepler_root": (
        kepler_solve,
        kepler_closed,
        jnp.array([1.1, 0.4]),
        jnp.array([[0.3, 0.1], [2.5, 0.7], [4.0, 0.2]]),
    ),
    "ridge_argmin": (
        ridge_solve,
        ridge_closed,
        jnp.array([0.7, 0.2]),
        jnp.array([[0.1, 0.0], [2.0, -1.0], [5.0, 0.5]]),
    ),
    "affine_fixed_point": (
        affine_solve,
        affine_closed,
        jnp.array([0.9, 1.3]),
        jnp.array([[0.5, 1.0], [1.2, -2.0], [0.1, 0.3]]),
    ),
    "conjugate_min_value": (
        conjugate_solve,
        conjugate_closed_case,
        jnp.array([0.31415, -1.2]),
        jnp.array([[0.5, 0.2], [-2.0, 1.5], [0.05, -0.7]]),
    ),
    "pytree_root": (
        pytree_solve,
        pytree_closed,
        jnp.array([8.0, 2.0, 0.5]),
        jnp.array([[1.0, 27.0, 2.0], [0.5, 3.0, -1.0], [5.0, 4.0, 0.1]]),
    ),
}
case_names = list(CASES)


def scalarise(fn):
    # A scalar of every output component, so Hessians see all of them.
    return lambda theta: jnp.sum(jnp.sin(fn(theta)) + fn(theta) ** 2)


@pytest.mark.parametrize("name", case_names)
def test_value(name):
    solve, closed, theta, batch = CASES[name]
    np.testing.assert_allclose(solve(theta), closed(theta), rtol=1e-9, atol=1e-12)
    for t in batch:
        np.testing.assert_allclose(solve(t), closed(t), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", case_names)
@pytest.mark.parametrize("jac", [jax.jacfwd, jax.jacrev], ids=["jacfwd", "jacrev"])
def test_jacobian(name, jac):
    solve, closed, theta, _ = CASES[name]
    np.testing.assert_allclose(jac(solve)(theta), jax.jacfwd(closed)(theta), rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("name", case_names)
def test_jvp(name):
    solve, closed, theta, _ = CASES[name]
    tangent = jnp.linspace(0.3, -0.7, theta.shape[0])
    out, out_dot = jax.jvp(solve, (theta,), (tangent,))
    ref, ref_dot = jax.jvp(closed, (theta,), (tangent,))
    np.testing.assert_allclose(out, ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(out_dot, ref_dot, rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("name", case_names)
def test_hessian(name):
    solve, closed, theta, _ = CASES[name]
    np.testing.assert_allclose(
        jax.hessian(scalarise(solve))(theta),
        jax.hessian(scalarise(closed))(theta),
        rtol=1e-6,
        atol=1e-9,
    )


@pytest.mark.parametrize("name", case_names)
def test_grad_of_grad(name):
    solve, closed, theta, _ = CASES[name]
    f, g = scalarise(solve), scalarise(closed)
    first = lambda fn: lambda t: jax.grad(fn)(t)[0]  # noqa: E731
    np.testing.assert_allclose(
        jax.grad(first(f))(theta), jax.grad(first(g))(theta), rtol=1e-6, atol=1e-9
    )


# Finite-difference checks of every second-order mode: slow tier (about 23 s cold). The
# fast tier keeps second order through test_hessian and test_grad_of_grad, which compare
# against the closed form.
@pytest.mark.slow
@pytest.mark.parametrize("name", case_names)
def test_check_grads_order_2(name):
    solve, _, theta, _ = CASES[name]
    check_grads(solve, (theta,), order=2, modes=("fwd", "rev"))


@pytest.mark.parametrize("name", case_names)
def test_jit_equals_eager(name):
    solve, _, theta, _ = CASES[name]
    np.testing.assert_allclose(jax.jit(solve)(theta), solve(theta), rtol=1e-13, atol=1e-14)
    f = scalarise(solve)
    np.testing.assert_allclose(
        jax.jit(jax.grad(f))(theta), jax.grad(f)(theta), rtol=1e-12, atol=1e-14
    )


@pytest.mark.parametrize("name", case_names)
def test_vmap_equals_loop(name):
    solve, closed, _, batch = CASES[name]
    looped = jnp.stack([solve(t) for t in batch])
    np.testing.assert_allclose(jax.vmap(solve)(batch), looped, rtol=1e-12, atol=1e-14)
    f = scalarise(solve)
    grads = jnp.stack([jax.grad(f)(t) for t in batch])
    np.testing.assert_allclose(jax.jit(jax.vmap(jax.grad(f)))(batch), grads, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        jax.vmap(jax.grad(f))(batch),
        jax.vmap(jax.grad(scalarise(closed)))(batch),
        rtol=1e-6,
        atol=1e-9,
    )


@pytest.mark.parametrize("name", case_names)
def test_is_a_function_of_its_input(name):
    # No state carried between calls: the same input gives the same output whatever was
    # evaluated before (design rule 8).
    solve, _, theta, batch = CASES[name]
    first = solve(theta)
    for t in batch:
        solve(t)
    np.testing.assert_array_equal(solve(theta), first)


def test_closure_and_explicit_args_agree():
    # A closure over a traced value must give the same derivatives as passing it as an arg.
    def explicit(theta):
        return mcg.root(kepler, theta[0], theta[0], theta[1])

    def closure(theta):
        return mcg.root(lambda E: kepler(E, theta[0], theta[1]), theta[0])

    theta = jnp.array([0.8, 0.6])
    for transform in (jax.grad, jax.hessian, partial(jax.jacfwd)):
        np.testing.assert_allclose(
            transform(closure)(theta), transform(explicit)(theta), rtol=1e-12
        )
    np.testing.assert_allclose(
        jax.vmap(jax.grad(closure))(jnp.array([[0.8, 0.6], [2.0, 0.1]])),
        jax.vmap(jax.grad(explicit))(jnp.array([[0.8, 0.6], [2.0, 0.1]])),
        rtol=1e-12,
    )


def test_closure_under_vmap_without_differentiation():
    # Under plain vmap the closed-over batch tracer is not hoisted; it must still work.
    def cube_root(a):
        return mcg.root(lambda y: y**3 - a, jnp.array(1.0))

    np.testing.assert_allclose(
        jax.vmap(cube_root)(jnp.array([8.0, 27.0, 64.0])), [2.0, 3.0, 4.0], rtol=1e-12
    )


def test_no_derivative_flows_to_y0():
    def solve(y0, M):
        return mcg.root(kepler, y0, M, 0.3)

    assert jax.grad(solve, 0)(jnp.array(1.0), 1.0) == 0.0
    # ... and the result does not depend on y0 beyond the tolerance.
    np.testing.assert_allclose(solve(jnp.array(0.0), 1.0), solve(jnp.array(3.0), 1.0), atol=1e-12)


def test_integer_args_are_allowed_and_not_differentiated():
    def f(x, p):
        return mcg.min_value(
            lambda y, x, p: jnp.sum(jnp.abs(y) ** p / p - x * y), jnp.zeros(1), x, p
        )

    x = jnp.array([0.5])
    np.testing.assert_allclose(jax.grad(f)(x, 3), -jnp.sqrt(x), rtol=1e-9)


def test_closure_over_batched_data_under_vmap_of_grad():
    # Regression: jax.closure_convert left batched (and integer) tracers in the closure,
    # and vmap(grad) over a closure on per-observation data crashed.
    Ms = jnp.array([0.5, 1.0, 2.0])

    def total(e, closure):
        if closure:
            one = lambda M: mcg.root(lambda E, e: kepler(E, M, e), jnp.array(1.0), e)  # noqa: E731
        else:
            one = lambda M: mcg.root(kepler, jnp.array(1.0), M, e)  # noqa: E731
        return jnp.sum(jax.vmap(one)(Ms))

    np.testing.assert_allclose(jax.grad(total)(0.3, True), jax.grad(total)(0.3, False), rtol=1e-12)
    f = jax.jit(jax.grad(lambda a, n: mcg.root(lambda y, a: y**n - a, jnp.array(1.0), a)))
    np.testing.assert_allclose(f(8.0, 3), 1 / 12, rtol=1e-10)


def test_bound_method_state_is_not_stale():
    # Regression: the cache keyed on the function object reused a bound method's old
    # attribute value.
    class Model:
        def __init__(self, c):
            self.c = c

        def residual(self, y, a):
            return y - a * self.c

    m = Model(2.0)
    np.testing.assert_allclose(mcg.root(m.residual, jnp.array(0.0), 1.0), 2.0)
    m.c = 3.0
    np.testing.assert_allclose(mcg.root(m.residual, jnp.array(0.0), 1.0), 3.0)
    m.c = jnp.array([1.0, 2.0])
    np.testing.assert_allclose(mcg.root(m.residual, jnp.zeros(2), 1.0), [1.0, 2.0])
