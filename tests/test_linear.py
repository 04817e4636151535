"""Tangent solves: every linear solver gives the same derivatives; failures are NaN."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import conjugate_inner
from jax.test_util import check_grads

import mcmc_customgrad as mcg

X = jnp.array([[1.0, 2.0, 0.5], [3.0, -1.0, 2.0], [0.5, 0.3, -1.0], [2.0, 1.0, 1.0]])
T = jnp.array([1.0, -0.5, 2.0, 0.3])


def ridge(b, lam):
    return jnp.sum((X @ b - T) ** 2) + lam * jnp.sum(b**4 + b**2)


def affine(y, s):
    return s * jnp.tanh(
        jnp.array([[0.2, -0.1, 0.05], [0.1, 0.3, -0.2], [0.0, 0.1, 0.25]]) @ y
    ) + jnp.arange(3.0)


SYMMETRIC = [
    mcg.linear.Dense(),
    mcg.linear.Dense("cholesky"),
    mcg.linear.CG(),
    # GMRES's argmin tangents compile for ~8 s: the slow tier (its fixed-point tangents,
    # below, stay in the fast tier).
    pytest.param(mcg.linear.GMRES(), marks=pytest.mark.slow),
]
GENERAL = [mcg.linear.Dense(), mcg.linear.GMRES(), mcg.linear.GMRES(restart=1)]


@pytest.mark.parametrize("linear", SYMMETRIC, ids=repr)
def test_argmin_tangents_agree(linear):
    def solve(lam):
        return mcg.argmin(ridge, jnp.zeros(3), lam, linear_solver=linear)

    reference = jax.jacfwd(
        lambda lam: mcg.argmin(ridge, jnp.zeros(3), lam, linear_solver=mcg.linear.Dense())
    )(0.7)
    np.testing.assert_allclose(jax.jacfwd(solve)(0.7), reference, rtol=1e-8)
    np.testing.assert_allclose(jax.jacrev(solve)(0.7), reference, rtol=1e-8)


@pytest.mark.parametrize("linear", GENERAL, ids=repr)
def test_fixed_point_tangents_agree(linear):
    def solve(s):
        return mcg.fixed_point(affine, jnp.zeros(3), s, linear_solver=linear)

    reference = jax.jacfwd(
        lambda s: mcg.fixed_point(affine, jnp.zeros(3), s, linear_solver=mcg.linear.Dense())
    )(1.3)
    np.testing.assert_allclose(jax.jacfwd(solve)(1.3), reference, rtol=1e-8)
    np.testing.assert_allclose(jax.jacrev(solve)(1.3), reference, rtol=1e-8)


@pytest.mark.parametrize(
    "solve",
    [
        lambda lam: mcg.argmin(ridge, jnp.zeros(3), lam, linear_solver=mcg.linear.CG()),
        lambda s: mcg.fixed_point(affine, jnp.zeros(3), s, linear_solver=mcg.linear.GMRES()),
    ],
    ids=["argmin-cg", "fixed_point-gmres"],
)
@pytest.mark.slow  # order 2 compiles for 12-15 s each; first order: the tangent tests above
def test_iterative_solves_transpose_and_differentiate(solve):
    # Reverse mode runs the transposed solve; second order differentiates the operator.
    check_grads(solve, (0.9,), order=2, modes=("fwd", "rev"))


def test_iterative_tangent_failure_is_nan_not_zero():
    # JAXopt's failed backward CG returned zeros (#466); ours returns NaN.
    d = jnp.logspace(0, 3, 30)

    def f(y, a):
        return jnp.sum(d * (y - a) ** 2) + jnp.sum(jnp.diff(y) ** 2)

    a = jnp.linspace(0, 1, 30)
    capped = mcg.linear.CG(max_steps=2)
    # Newton's own dense steps (solver=None would take its steps with the capped CG too,
    # and then the forward solve fails: NaN value and a zero derivative, by design).
    newton = mcg.solvers.Newton()

    def solve(a, linear_solver):
        return mcg.argmin(f, jnp.zeros(30), a, solver=newton, linear_solver=linear_solver)

    assert np.all(np.isfinite(solve(a, capped)))
    g = jax.grad(lambda a: jnp.sum(solve(a, capped)))(a)
    assert np.all(np.isnan(g))
    g_ok = jax.grad(lambda a: jnp.sum(solve(a, mcg.linear.CG())))(a)
    assert np.all(np.isfinite(g_ok))


def test_auto_linear_solver_resolution():
    auto = mcg.linear.Auto()
    assert auto.resolve(mcg.linear.DENSE_LIMIT, symmetric=False) == mcg.linear.Dense()
    assert auto.resolve(mcg.linear.DENSE_LIMIT + 1, symmetric=False) == mcg.linear.GMRES()
    assert auto.resolve(mcg.linear.DENSE_LIMIT + 1, symmetric=True) == mcg.linear.CG()


@dataclasses.dataclass(frozen=True)
class CountingDense(mcg.linear.Dense):
    """Dense solve that counts how often it is traced."""

    calls: list = dataclasses.field(default_factory=list, compare=False, hash=False)

    def prepare(self, op):
        self.calls.append(op.n)
        return super().prepare(op)


G = conjugate_inner(3.0)


def test_min_value_first_order_needs_no_linear_solve():
    # Envelope theorem: value_and_grad of min_value must not solve a linear system.
    counting = CountingDense()

    def v(x):
        return mcg.min_value(G, jnp.zeros(3), x, linear_solver=counting)

    x = jnp.array([0.3, -1.2, 2.0])
    jax.value_and_grad(v)(x)
    jax.jvp(v, (x,), (jnp.ones(3),))
    assert counting.calls == []
    # ... while the argmin (same problem) does solve one for its gradient,
    jax.grad(lambda x: jnp.sum(mcg.argmin(G, jnp.zeros(3), x, linear_solver=counting)))(x)
    assert len(counting.calls) >= 1
    # ... and the second derivative of min_value needs dy*/dx, hence the solve (rule 3).
    counting.calls.clear()
    H = jax.hessian(v)(x)
    assert len(counting.calls) >= 1
    np.testing.assert_allclose(-H, jnp.diag(0.5 / jnp.sqrt(jnp.abs(x))), rtol=1e-7)


def test_min_value_hessian_includes_the_argmin_term():
    # f(y, a) = (y - a)^2/2 + y^4/4 - a^3 y. Optimality: (y - a)(1 + y^2 + a y + a^2) = 0,
    # so y* = a and v(a) = -3 a^4 / 4 per coordinate: v'' = -9 a^2. The partial second
    # derivative at fixed y* (all a first-order-only envelope rule could give) is
    # 1 - 6 a y* = 1 - 6 a^2: wrong.
    def f(y, a):
        return jnp.sum(0.5 * (y - a) ** 2 + 0.25 * y**4 - a**3 * y)

    v = lambda a: mcg.min_value(f, jnp.zeros(2), a)  # noqa: E731
    a = jnp.array([0.4, -0.9])
    np.testing.assert_allclose(v(a), jnp.sum(-0.75 * a**4), rtol=1e-10)
    np.testing.assert_allclose(jax.grad(v)(a), -3 * a**3, rtol=1e-8)
    H = jax.hessian(v)(a)
    np.testing.assert_allclose(H, jnp.diag(-9 * a**2), rtol=1e-7, atol=1e-12)
    y = mcg.argmin(f, jnp.zeros(2), a)
    partial_only = jax.hessian(lambda a: f(y, a))(a)
    np.testing.assert_allclose(partial_only, jnp.diag(1 - 6 * a**2), rtol=1e-7, atol=1e-12)
