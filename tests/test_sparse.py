"""Large and sparse inner problems: mcg.linear.Sparse, pluggable Newton steps,
preconditioned Newton-Krylov and the dense limit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp
import sparsax
from jax.experimental import sparse as jsparse
from jax.test_util import check_grads

import mcmc_customgrad as mcg
from mcmc_customgrad.implicit.root import resolve

N = 40


def steady_state(u, a):
    """A 1-D Bratu-type steady state: tridiagonal Jacobian, SPD for a >= 0."""
    up = jnp.concatenate([u[1:], jnp.zeros(1)])
    um = jnp.concatenate([jnp.zeros(1), u[:-1]])
    x = jnp.linspace(0.0, 1.0, u.shape[0])
    return 2 * u - up - um + 0.1 * jnp.exp(u) - a * jnp.sin(jnp.pi * x)


def tridiagonal(n):
    return sp.diags([1.0, 1.0, 1.0], [-1, 0, 1], shape=(n, n))


def solve(a, linear_solver, n=N, **kw):
    return mcg.root(steady_state, jnp.zeros(n), a, linear_solver=linear_solver, **kw)


@pytest.mark.parametrize(
    "pattern",
    [
        tridiagonal(N),
        jsparse.BCOO.fromdense(jnp.asarray(tridiagonal(N).toarray())),
        tridiagonal(N).toarray() != 0,
        None,
    ],
    ids=["scipy", "bcoo", "bool", "detected"],
)
def test_sparse_equals_dense_value_and_derivatives(pattern):
    sparse = mcg.linear.Sparse(pattern=pattern)
    for a in (0.5, 2.0):
        np.testing.assert_allclose(
            solve(a, sparse), solve(a, mcg.linear.Dense()), rtol=1e-12, atol=1e-13
        )
        dense_grad = jax.grad(lambda a: solve(a, mcg.linear.Dense()) @ jnp.arange(N))(a)
        sparse_grad = jax.grad(lambda a: solve(a, sparse) @ jnp.arange(N))(a)
        np.testing.assert_allclose(sparse_grad, dense_grad, rtol=1e-11)


@pytest.mark.slow
def test_sparse_transposes_and_differentiates_to_second_order():
    # Slow tier (compiles second-order programs), as is the PDE model's second order
    # (tests/test_pde_model.py); the fast tier checks Sparse's first derivatives.
    sparse = mcg.linear.Sparse(pattern=tridiagonal(8))

    def f(a):
        return jnp.sum(solve(a, sparse, n=8) ** 2)

    check_grads(f, (1.3,), order=2, modes=("fwd", "rev"))


def test_colouring_needs_a_few_jvps_not_n():
    assert mcg.linear.Sparse(pattern=tridiagonal(1000)).structure.num_colors == 3
    # The 5-point stencil: a handful of colours (5 is optimal; a greedy colouring may use a
    # few more), the same for every grid size.
    counts = []
    for m in (20, 40):
        lap = sp.kronsum(tridiagonal(m), tridiagonal(m))
        structure = mcg.linear.Sparse(pattern=lap).structure
        assert structure.nnz == lap.nnz
        counts.append(structure.num_colors)
    assert counts[0] == counts[1] <= 8


def test_newton_takes_its_steps_with_the_sparse_solver():
    sparse = mcg.linear.Sparse(pattern=tridiagonal(N))
    _problem, solver, linear_solver, _, _ = resolve(
        "root", "t", steady_state, jnp.zeros(N), (1.0,), None, sparse, False, "nan"
    )
    assert solver == mcg.solvers.Newton(linear_solver=sparse)
    assert linear_solver is sparse
    _, info_sparse = solve(1.0, sparse, full_output=True)
    _, info_dense = solve(1.0, None, full_output=True)
    assert bool(info_sparse.converged)
    # The dense path damps after a shortened step, the sparse one does not: within a step.
    assert abs(int(info_sparse.num_steps) - int(info_dense.num_steps)) <= 1


def test_sparse_minimum_with_cholesky_factorises_once_for_the_derivative():
    # A convex objective with a tridiagonal Hessian. sparsax counts CHOLMOD's numeric
    # factorisations: the gradient adds exactly one (at y*) to the value's Newton steps,
    # shared by the tangent solve and its transpose.
    n = 30

    def objective(y, a):
        return jnp.sum((y - a) ** 2) + jnp.sum(jnp.diff(y) ** 2) + 0.1 * jnp.sum(jnp.exp(y))

    chol = mcg.linear.Sparse(pattern=tridiagonal(n), method="cholesky")

    def value(a):
        return jnp.sum(mcg.argmin(objective, jnp.zeros(n), a, linear_solver=chol) ** 2)

    a = jnp.linspace(-1.0, 1.0, n)
    f_value, f_value_and_grad = jax.jit(value), jax.jit(jax.value_and_grad(value))
    f_value(a - 0.5)  # compile
    f_value_and_grad(a - 0.5)

    def factorisations(f, a):
        # Fresh parameters each time: CHOLMOD's value-keyed cache cannot hit.
        before = sparsax.factorization_count()
        out = jax.block_until_ready(f(a))
        count = sparsax.factorization_count() - before
        steps = mcg.argmin(objective, jnp.zeros(n), a, linear_solver=chol, full_output=True)[1]
        return out, count, int(steps.num_steps)

    _, in_value, steps = factorisations(f_value, a + 0.01)
    assert steps >= 2 and in_value == steps  # one per Newton step
    (_, g), in_value_and_grad, steps = factorisations(f_value_and_grad, a)
    assert in_value_and_grad == steps + 1  # and one at y*, for the derivative
    dense = jax.grad(
        lambda a: jnp.sum(mcg.argmin(objective, jnp.zeros(n), a, linear_solver=None) ** 2)
    )(a)
    np.testing.assert_allclose(g, dense, rtol=1e-10)


def test_singular_consistent_tangent_is_solved():
    # A flat direction at the minimum: the Hessian is singular, but the tangent system's
    # right-hand side lies in its range, and dy0/da = 1 is well determined.
    def flat(y, a):
        return (y[0] - a) ** 2 + 0.0 * y[1]

    sparse = mcg.linear.Sparse(pattern=np.ones((2, 2), bool))
    newton = mcg.solvers.Newton()
    jac = jax.jacfwd(
        lambda a: mcg.argmin(flat, jnp.array([0.0, 0.5]), a, solver=newton, linear_solver=sparse)
    )(2.0)
    np.testing.assert_allclose(jac, [1.0, 0.0], atol=1e-12)


def test_inconsistent_singular_tangent_gives_nan_not_an_error():
    # F(y, a) = (y0^2 - 0, y1 - a) at y = (0, a): dF/dy = diag(0, 1) is singular, and
    # dF/da = (1, -1) has a component outside its range (the first row). NaN derivative.
    def fun(y, a):
        return jnp.array([y[0] ** 2 + (a - 1.0) * 1.0, y[1] - a])

    exact = mcg.solvers.Custom(lambda f, y0, a: jnp.array([0.0, a]))
    sparse = mcg.linear.Sparse(pattern=np.eye(2, dtype=bool))
    y, dy = jax.jvp(
        lambda a: mcg.root(fun, jnp.zeros(2), a, solver=exact, linear_solver=sparse),
        (1.0,),
        (1.0,),
    )
    np.testing.assert_allclose(y, [0.0, 1.0])
    assert np.all(np.isnan(dy))


def test_sparse_under_vmap_of_gradients():
    sparse = mcg.linear.Sparse(pattern=tridiagonal(N))
    grad = jax.grad(lambda a: solve(a, sparse) @ jnp.arange(N))
    a = jnp.array([0.3, 1.0, 2.5])
    np.testing.assert_allclose(jax.jit(jax.vmap(grad))(a), [grad(x) for x in a], rtol=1e-12)


def test_bad_patterns_and_problems_are_refused_clearly():
    with pytest.raises(ValueError, match="square"):
        mcg.linear.Sparse(pattern=np.ones((3, 4), bool))
    with pytest.raises(ValueError, match="2-D"):
        mcg.linear.Sparse(pattern=np.ones(3, bool))
    with pytest.raises(ValueError, match="method"):
        mcg.linear.Sparse(method="qr")
    with pytest.raises(ValueError, match="10 x 10 but the problem has 40 unknowns"):
        solve(1.0, mcg.linear.Sparse(pattern=tridiagonal(10)))
    with pytest.raises(TypeError, match="linear_solver must be None or an mcmc_customgrad"):
        mcg.solvers.Newton(linear_solver=mcg.linear.Sparse)


def test_sparse_refuses_float32(float32):
    with pytest.raises(ValueError, match="float64"):
        mcg.root(
            steady_state,
            jnp.zeros(4, jnp.float32),
            jnp.float32(1.0),
            linear_solver=mcg.linear.Sparse(pattern=tridiagonal(4)),
        )


def test_sparse_solvers_compare_by_pattern():
    a, b = mcg.linear.Sparse(tridiagonal(5)), mcg.linear.Sparse(tridiagonal(5).tocsr())
    assert a == b and hash(a) == hash(b)
    assert a != mcg.linear.Sparse(np.eye(5, dtype=bool))
    assert a != mcg.linear.Sparse(tridiagonal(5), method="cholesky")
    assert "nnz=13" in repr(a)


# ------------------------------------------------------------------------ the dense limit


def big(n):
    return mcg.linear.DENSE_LIMIT + n


def test_large_default_root_detects_its_pattern():
    n = big(200)
    _, solver, linear_solver, _, _ = resolve(
        "root", "t", steady_state, jnp.zeros(n), (1.0,), None, None, False, "nan"
    )
    assert isinstance(linear_solver, mcg.linear.Sparse)
    assert linear_solver.structure.num_colors == 3
    assert solver.linear_solver is linear_solver
    y, info = mcg.root(steady_state, jnp.zeros(n), 1.0, full_output=True)
    assert bool(info.converged)
    np.testing.assert_allclose(steady_state(y, 1.0), 0.0, atol=1e-10)


def test_large_root_without_a_detectable_pattern_is_refused_before_compiling():
    n = big(1)

    def opaque(u, a):
        # A host callback: no sparsity detector can see through it.
        shape = jax.ShapeDtypeStruct(u.shape, u.dtype)
        return jax.pure_callback(lambda v: np.asarray(v) * 2.0, shape, u) - a

    with pytest.raises(ValueError) as err:
        mcg.root(opaque, jnp.zeros(n), 1.0)
    message = str(err.value)
    assert "mcg.linear.Sparse(pattern=P)" in message
    assert "GMRES(preconditioner=" in message
    assert "pure_callback" in message
    # An explicit dense Newton is still allowed (the user asked for it).
    with pytest.raises(ValueError, match="dense limit"):
        mcg.root(opaque, jnp.zeros(n), 1.0, solver=mcg.solvers.Newton())


def test_large_fixed_point_and_minimum_keep_their_matrix_free_defaults():
    n = big(10)
    _, solver, linear_solver, _, _ = resolve(
        "argmin",
        "t",
        lambda y, a: jnp.sum((y - a) ** 2) + jnp.sum(jnp.diff(y) ** 2),
        jnp.zeros(n),
        (1.0,),
        None,
        None,
        False,
        "nan",
    )
    assert isinstance(solver, mcg.solvers.LBFGS)
    assert isinstance(linear_solver, mcg.linear.Sparse)


# ----------------------------------------------------------- preconditioned Newton-Krylov


def tridiagonal_preconditioner(u, a):
    # The exact Jacobian's tridiagonal solve, built at the current point.
    d = 2.0 + 0.1 * jnp.exp(u)
    off = -jnp.ones(u.shape[0] - 1)

    def apply(v):
        dl = jnp.concatenate([jnp.zeros(1), off])
        du = jnp.concatenate([off, jnp.zeros(1)])
        return jax.lax.linalg.tridiagonal_solve(dl, d, du, v[:, None])[:, 0]

    return apply


@pytest.mark.slow
def test_unpreconditioned_gmres_fails_loudly_preconditioned_gmres_is_exact():
    n = 200
    exact = jax.grad(lambda a: solve(a, mcg.linear.Dense(), n=n) @ jnp.ones(n))(1.0)
    newton = mcg.solvers.Newton()
    plain = mcg.linear.GMRES(restart=5, max_steps=4)
    g_plain = jax.grad(lambda a: solve(a, plain, n=n, solver=newton) @ jnp.ones(n))(1.0)
    assert np.isnan(g_plain)
    for preconditioner in (
        tridiagonal_preconditioner,
        mcg.linear.Sparse(pattern=tridiagonal(n)),
    ):
        gmres = mcg.linear.GMRES(restart=5, max_steps=4, preconditioner=preconditioner)
        g = jax.grad(lambda a, gmres=gmres: solve(a, gmres, n=n, solver=newton) @ jnp.ones(n))(1.0)
        np.testing.assert_allclose(g, exact, rtol=1e-8)


@pytest.mark.parametrize("scale", [1e-3, pytest.param(1e3, marks=pytest.mark.slow)])
def test_gmres_stops_on_the_true_residual_whatever_the_preconditioner_scale(scale):
    # M^-1 and c M^-1 give the same Krylov iterates; a stopping test on the
    # preconditioned residual (JAX's own) stopped too early at c = 1e-3 (NaN here) and ran
    # every restart at c = 1e3.
    n = 200

    def jacobi(u, a):
        return lambda v: scale * v / (2.0 + 0.1 * jnp.exp(u))

    exact = jax.grad(lambda a: solve(a, mcg.linear.Dense(), n=n) @ jnp.ones(n))(1.0)
    gmres = mcg.linear.GMRES(restart=50, preconditioner=jacobi)
    y, info = solve(1.0, gmres, n=n, full_output=True)
    assert bool(info.converged)
    np.testing.assert_allclose(y, solve(1.0, mcg.linear.Dense(), n=n), rtol=1e-9, atol=1e-11)
    g = jax.grad(lambda a: solve(a, gmres, n=n) @ jnp.ones(n))(1.0)
    np.testing.assert_allclose(g, exact, rtol=1e-8)


def test_newton_krylov_with_forcing_terms_converges_to_the_dense_answer():
    n = 200
    gmres = mcg.linear.GMRES(restart=10, preconditioner=tridiagonal_preconditioner)
    y, info = solve(2.0, gmres, n=n, full_output=True)
    assert bool(info.converged)
    np.testing.assert_allclose(y, solve(2.0, mcg.linear.Dense(), n=n), rtol=1e-10, atol=1e-12)
    g = jax.grad(lambda a: solve(a, gmres, n=n) @ jnp.ones(n))(2.0)
    exact = jax.grad(lambda a: solve(a, mcg.linear.Dense(), n=n) @ jnp.ones(n))(2.0)
    np.testing.assert_allclose(g, exact, rtol=1e-8)


def test_newton_krylov_minimum_with_preconditioned_cg():
    n = 50

    def objective(y, a):
        return jnp.sum((y - a) ** 2) + 10 * jnp.sum(jnp.diff(y) ** 2) + jnp.sum(y**4)

    def jacobi(y, a):
        d = 2.0 + 12 * y**2 + 40.0
        return lambda v: v / d

    pcg = mcg.linear.CG(preconditioner=jacobi)
    a = jnp.linspace(-1.0, 1.0, n)
    y, info = mcg.argmin(objective, jnp.zeros(n), a, linear_solver=pcg, full_output=True)
    assert bool(info.converged)
    np.testing.assert_allclose(y, mcg.argmin(objective, jnp.zeros(n), a), atol=1e-9)
    g = jax.grad(lambda a: jnp.sum(mcg.argmin(objective, jnp.zeros(n), a, linear_solver=pcg)))(a)
    exact = jax.grad(lambda a: jnp.sum(mcg.argmin(objective, jnp.zeros(n), a)))(a)
    np.testing.assert_allclose(g, exact, rtol=1e-8)


def test_preconditioner_is_validated():
    with pytest.raises(TypeError, match="preconditioner"):
        mcg.linear.GMRES(preconditioner=3)
    with pytest.raises(TypeError, match="preconditioner"):
        mcg.linear.CG(preconditioner=mcg.linear.Dense)

    def not_a_function(y, a):
        return 3.0

    with pytest.raises(TypeError, match="must return a function"):
        jax.grad(lambda a: solve(a, mcg.linear.GMRES(preconditioner=not_a_function)).sum())(1.0)


def test_diagonal_newton_steps_for_elementwise_roots():
    a = jnp.array([8.0, 27.0, 64.0])
    y, info = mcg.root(
        lambda y, a: y**3 - a,
        jnp.ones(3),
        a,
        linear_solver=mcg.linear.Diagonal(),
        full_output=True,
    )
    np.testing.assert_allclose(y, [2.0, 3.0, 4.0], rtol=1e-12)
    assert bool(info.converged)


@pytest.mark.slow
def test_nested_batching_hessian_and_vmap_of_jacfwd():
    # SuiteSparse's batched kernel has a rule for one vmap level; the library folds the
    # others into it (jax.hessian and check_gradients' vmap(jacfwd) nest two).
    n = 10
    sparse = mcg.linear.Sparse(pattern=tridiagonal(n))

    def f(a, linear_solver):
        return jnp.sum(solve(a, linear_solver, n=n) ** 3)

    def pair(a, linear_solver):
        return f(a[0], linear_solver) * f(a[1], linear_solver)

    a = jnp.array([0.3, 0.5])
    for transform in (
        lambda ls: jax.hessian(lambda a: pair(a, ls))(a),
        lambda ls: jax.vmap(jax.jacfwd(lambda a: f(a, ls)))(a),
        lambda ls: jax.vmap(jax.vmap(jax.grad(lambda a: f(a, ls))))(jnp.full((2, 3), 0.4)),
    ):
        np.testing.assert_allclose(transform(sparse), transform(mcg.linear.Dense()), rtol=1e-10)


def test_clear_caches_frees_the_sparse_factorisations():
    # docs/large.md, Memory: sparsax keeps factors per pattern; mcg.clear_caches frees them.
    jax.grad(lambda a: solve(a, mcg.linear.Sparse()).sum())(1.0)
    assert sparsax.cache_size() > 0
    mcg.clear_caches()
    assert sparsax.cache_size() == 0
