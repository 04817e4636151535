"""Each forward solver on the problems it solves, with derivatives against closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import conjugate_inner, kepler
from jax.extend import core as jex_core
from jax.scipy.optimize import minimize

import mcmc_customgrad as mcg
from mcmc_customgrad.implicit._sparsity import primitive_names

G3 = conjugate_inner(3.0)
XS = jnp.array([0.31415, -1.7, 0.02, 3.0])


def conjugate_grad(x):
    # d/dx |x|^q/q with q = 3/2 is sign(x) |x|^(1/2): the argmin y*(x).
    return jnp.sign(x) * jnp.sqrt(jnp.abs(x))


@pytest.mark.parametrize(
    "solver",
    [
        mcg.solvers.Newton(),
        mcg.solvers.BFGS(),
        mcg.solvers.LBFGS(memory=4),
        mcg.solvers.scipy_minimize("BFGS"),
    ],
    ids=["newton", "bfgs", "lbfgs", "scipy-bfgs"],
)
def test_minimisers_on_the_conjugate(solver):
    def f(x):
        return -mcg.min_value(G3, jnp.zeros(4), x, solver=solver)

    np.testing.assert_allclose(jax.grad(f)(XS), conjugate_grad(XS), rtol=1e-6)
    y, info = mcg.argmin(G3, jnp.zeros(4), XS, solver=solver, full_output=True)
    assert bool(info.converged)
    np.testing.assert_allclose(y, conjugate_grad(XS), rtol=1e-6)
    # dy*/dx = 1 / (2 sqrt|x|), diagonal
    jac = jax.jacrev(lambda x: mcg.argmin(G3, jnp.zeros(4), x, solver=solver))(XS)
    np.testing.assert_allclose(jac, jnp.diag(0.5 / jnp.sqrt(jnp.abs(XS))), rtol=1e-5, atol=1e-9)


def test_newton_handles_the_singular_seed_start():
    # |y|^3/3 - x y has zero Hessian at y0 = 0: plain Newton stalls there.
    _y, info = mcg.argmin(
        G3, jnp.zeros(1), jnp.array([0.31415]), solver=mcg.solvers.Newton(), full_output=True
    )
    assert bool(info.converged) and int(info.num_steps) < 20


def test_newton_on_a_nonconvex_start():
    # Rosenbrock from a standard hard start: line search and damping get there.
    def rosen(y, a):
        return (a - y[0]) ** 2 + 100 * (y[1] - y[0] ** 2) ** 2

    y, info = mcg.argmin(rosen, jnp.array([-1.2, 1.0]), 1.0, full_output=True)
    assert bool(info.converged)
    np.testing.assert_allclose(y, [1.0, 1.0], rtol=1e-8)
    np.testing.assert_allclose(
        jax.grad(lambda a: mcg.argmin(rosen, jnp.array([-1.2, 1.0]), a)[1])(1.0), 2.0, rtol=1e-6
    )


def kepler_batch(M, e, solver, linear_solver=None):
    return mcg.root(kepler, jnp.zeros_like(M), M, e, solver=solver, linear_solver=linear_solver)


M = jnp.array([0.1, 1.0, 2.5, 4.0, 6.0])


@pytest.mark.parametrize(
    "solver, linear",
    [
        (mcg.solvers.Newton(), None),
        (mcg.solvers.Chandrupatla(bracket=lambda E0, M, e: (M - e, M + e)), mcg.linear.Diagonal()),
        (mcg.solvers.Chandrupatla(), mcg.linear.Diagonal()),
        (mcg.solvers.Chandrupatla(bracket=(-1.0, 8.0)), None),
        (mcg.solvers.scipy_root("hybr"), None),
        (mcg.solvers.scipy_root("lm"), mcg.linear.GMRES()),
    ],
    ids=[
        "newton",
        "chandrupatla-callable",
        "chandrupatla-search",
        "chandrupatla-tuple",
        "scipy-hybr",
        "scipy-lm",
    ],
)
def test_root_solvers_on_kepler(solver, linear):
    e = 0.7
    E, info = mcg.root(
        kepler, jnp.zeros_like(M), M, e, solver=solver, linear_solver=linear, full_output=True
    )
    assert bool(info.converged)
    np.testing.assert_allclose(kepler(E, M, e), 0.0, atol=1e-10)
    dE_dM = jax.jacfwd(kepler_batch)(M, e, solver, linear)
    np.testing.assert_allclose(dE_dM, jnp.diag(1 / (1 - e * jnp.cos(E))), rtol=1e-8, atol=1e-12)
    dE_de = jax.grad(lambda e: jnp.sum(kepler_batch(M, e, solver, linear)))(e)
    np.testing.assert_allclose(dE_de, jnp.sum(jnp.sin(E) / (1 - e * jnp.cos(E))), rtol=1e-8)


def test_chandrupatla_bracket_without_sign_change_fails_cleanly():
    solver = mcg.solvers.Chandrupatla(bracket=(10.0, 20.0))
    E, info = mcg.root(kepler, jnp.array(0.0), 1.0, 0.5, solver=solver, full_output=True)
    assert not bool(info.converged) and np.isnan(E)


def test_chandrupatla_array_bracket_is_hashable_config():
    solver = mcg.solvers.Chandrupatla(bracket=(np.zeros(2), np.full(2, 7.0)))
    assert hash(solver) == hash(mcg.solvers.Chandrupatla(bracket=((0.0, 0.0), (7.0, 7.0))))
    E = mcg.root(kepler, jnp.zeros(2), jnp.array([1.0, 2.0]), 0.3, solver=solver)
    np.testing.assert_allclose(kepler(E, jnp.array([1.0, 2.0]), 0.3), 0.0, atol=1e-10)


SQRT_MAP = lambda x, a: 0.5 * (x + a / x)  # noqa: E731


@pytest.mark.parametrize(
    "solver",
    [
        mcg.solvers.Newton(),
        mcg.solvers.FixedPointIteration(),
        mcg.solvers.Anderson(),
        mcg.solvers.Anderson(memory=1, damping=0.5),
    ],
    ids=["newton", "iteration", "anderson", "anderson-damped"],
)
def test_fixed_point_solvers(solver):
    def sqrt(a):
        return mcg.fixed_point(SQRT_MAP, a, a, solver=solver)

    a = jnp.array([2.0, 9.0, 0.3])
    np.testing.assert_allclose(sqrt(a), jnp.sqrt(a), rtol=1e-10)
    np.testing.assert_allclose(
        jax.jacrev(sqrt)(a), jnp.diag(0.5 / jnp.sqrt(a)), rtol=1e-8, atol=1e-12
    )


def test_anderson_accelerates_a_slow_contraction():
    A = jnp.diag(jnp.linspace(0.5, 0.97, 20))
    T = lambda y, b: A @ y + b  # noqa: E731
    b = jnp.linspace(-1, 1, 20)
    _, plain = mcg.fixed_point(
        T, jnp.zeros(20), b, solver=mcg.solvers.FixedPointIteration(), full_output=True
    )
    y, fast = mcg.fixed_point(T, jnp.zeros(20), b, solver=mcg.solvers.Anderson(), full_output=True)
    assert bool(plain.converged) and bool(fast.converged)
    assert int(fast.num_steps) * 5 < int(plain.num_steps)
    # Converged means |T(y) - y| <= 1e-10 (1 + |y|) ~ 3.4e-9; the error in y is at most
    # that over 1 - 0.97 (the contraction factor): ~1.1e-7.
    exact = jnp.linalg.solve(jnp.eye(20) - A, b)
    bound = 1e-10 * (1 + jnp.max(jnp.abs(exact))) / (1 - 0.97)
    np.testing.assert_allclose(y, exact, rtol=0, atol=float(bound))


def test_defaults_switch_with_size():
    limit = mcg.solvers.ARGMIN_NEWTON_LIMIT
    assert mcg.solvers.default_solver("argmin", 1) == mcg.solvers.Newton()
    assert mcg.solvers.default_solver("argmin", limit) == mcg.solvers.Newton()
    assert mcg.solvers.default_solver("argmin", limit + 1) == mcg.solvers.LBFGS()
    assert mcg.solvers.default_solver("argmin", 2, second_order=False) == mcg.solvers.LBFGS()
    assert mcg.solvers.default_solver("argmin", 10_000) == mcg.solvers.LBFGS()
    assert mcg.solvers.default_solver("fixed_point", 500) == mcg.solvers.IterateThenNewton()
    assert mcg.solvers.default_solver("fixed_point", 501) == mcg.solvers.Anderson()
    assert mcg.solvers.default_solver("root", 10_000) == mcg.solvers.Newton()


def _square_by_host():
    # y**2 whose backward pass runs on the host: gradients work, second derivatives
    # (forward mode over that pass) do not.
    @jax.custom_vjp
    def square(y):
        return y**2

    def bwd(y, ct):
        shape = jax.ShapeDtypeStruct(y.shape, y.dtype)
        grad = jax.pure_callback(lambda y, c: 2 * np.asarray(y) * np.asarray(c), shape, y, ct)
        return (grad,)

    square.defvjp(lambda y: (y**2, y), bwd)
    return square


def test_default_minimiser_needs_only_gradients_when_hessian_cannot_be_traced():
    from mcmc_customgrad.implicit.root import resolve

    square = _square_by_host()

    def host_objective(y, x):
        return jnp.sum(square(y) - x * y)

    def plain_objective(y, x):
        return jnp.sum(y**2 - x * y)

    x = jnp.array([1.0, 2.0])
    for fun, expected in (
        (host_objective, mcg.solvers.LBFGS()),
        (plain_objective, mcg.solvers.Newton()),
    ):
        solver = resolve("argmin", "test", fun, jnp.zeros(2), (x,), None, None, False, "nan")[1]
        assert solver == expected
        # min_y |y|^2 - x.y = -|x|^2/4, gradient -x/2, whichever solver runs.
        np.testing.assert_allclose(
            jax.grad(lambda x, f=fun: mcg.min_value(f, jnp.zeros(2), x))(x), -x / 2
        )


@pytest.mark.parametrize("n", [1, 2, 7, 12, 13, 20])
def test_newton_spd_solve(n):
    from mcmc_customgrad.implicit.newton import ELIMINATION_LIMIT, _spd_solve

    assert ELIMINATION_LIMIT == 12  # n = 13 and 20 take the Cholesky path
    rng = np.random.default_rng(n)
    m = rng.normal(size=(n, n))
    spd = m @ m.T + 0.1 * np.eye(n)
    b = rng.normal(size=n)
    np.testing.assert_allclose(
        jax.jit(_spd_solve)(spd, b), np.linalg.solve(spd, b), rtol=1e-9, atol=1e-12
    )
    # Not positive definite: NaN, as from a failed Cholesky, so Newton falls back to a
    # gradient step instead of following a direction towards a saddle.
    indefinite = spd - (np.linalg.eigvalsh(spd)[0] + 1.0) * np.eye(n)
    assert np.all(np.isnan(jax.jit(_spd_solve)(indefinite, b)))


def test_large_default_minimisation_lbfgs_and_cg():
    n = 600
    d = jnp.linspace(1.0, 3.0, n)

    def f(y, a):
        return jnp.sum(d * (y - a) ** 2 + 0.1 * y**4)

    a = jnp.linspace(-1, 1, n)
    y, info = mcg.argmin(f, jnp.zeros(n), a, full_output=True)
    assert bool(info.converged) and int(info.num_steps) > 1
    g = jax.grad(lambda a: jnp.sum(mcg.argmin(f, jnp.zeros(n), a) ** 2))(a)
    # Implicit derivative, element-wise: dy/da = 2d / (2d + 1.2 y^2).
    np.testing.assert_allclose(g, 2 * y * 2 * d / (2 * d + 1.2 * y**2), rtol=1e-6, atol=1e-10)


# --- user callables -------------------------------------------------------------------


def seed_recipe_solver(g, y0, x):
    # Seed 000's minimiser. jax.scipy's minimize ignores tol=: gtol must be set. Its
    # success flag is not returned: once the gradient is at rounding level (~1e-10 here)
    # its line search reports failure (status 3) although the point is a minimiser to
    # tolerance; the library's residual check is the judge.
    return minimize(lambda y: g(y, x), y0, method="BFGS", options={"gtol": 1e-12}).x


def test_seed000_recipe_as_a_custom_solver():
    def f(x):
        return -mcg.min_value(G3, jnp.zeros(4), x, solver=seed_recipe_solver)

    np.testing.assert_allclose(jax.grad(f)(XS), conjugate_grad(XS), rtol=1e-6)
    np.testing.assert_allclose(
        jax.hessian(f)(XS), jnp.diag(0.5 / jnp.sqrt(jnp.abs(XS))), rtol=1e-5, atol=1e-9
    )


def test_seed000_recipe_with_default_gtol_is_caught():
    # gtol 1e-5 (jax.scipy's default) misses the 1e-10 residual check: NaN, not a wrong number.
    loose = lambda g, y0, x: minimize(lambda y: g(y, x), y0, method="BFGS").x  # noqa: E731
    v, info = mcg.min_value(G3, jnp.zeros(4), XS, solver=loose, full_output=True)
    assert not bool(info.converged) and np.isnan(v)
    v, info = mcg.min_value(
        G3, jnp.zeros(4), XS, solver=mcg.solvers.Custom(loose, atol=1e-4), full_output=True
    )
    assert bool(info.converged)


def while_loop_newton(fun, y0, *args):
    # A hand-written while_loop Newton iteration for a scalar root.
    df = jax.grad(fun)

    def body(state):
        y, k = state
        return y - fun(y, *args) / df(y, *args), k + 1

    y, k = jax.lax.while_loop(
        lambda s: (jnp.abs(fun(s[0], *args)) > 1e-13) & (s[1] < 50), body, (y0, 0)
    )
    return y, mcg.SolverInfo(
        converged=jnp.abs(fun(y, *args)) <= 1e-13, num_steps=k, residual_norm=jnp.abs(fun(y, *args))
    )


def test_hand_written_while_loop_solver():
    def E(M):
        return mcg.root(kepler, M, M, 0.6, solver=while_loop_newton)

    Ms = jnp.array([0.5, 2.0, 5.0])
    Es = jax.vmap(E)(Ms)
    np.testing.assert_allclose(jax.vmap(jax.grad(E))(Ms), 1 / (1 - 0.6 * jnp.cos(Es)), rtol=1e-10)
    _, info = mcg.root(kepler, 1.0, 1.0, 0.6, solver=while_loop_newton, full_output=True)
    assert bool(info.converged) and int(info.num_steps) > 0


def test_custom_solver_claiming_failure_is_a_failure():
    solver = lambda f, y0, *a: (y0 + 1.0, False)  # noqa: E731
    y, info = mcg.root(lambda y: y - 1.0, jnp.array(0.0), solver=solver, full_output=True)
    assert not bool(info.converged) and np.isnan(y)


def test_custom_solver_pytree_unknowns():
    def solver(fun, y0, theta):
        return {"a": jnp.cbrt(theta[:2]), "b": theta[2] * jnp.sum(jnp.cbrt(theta[:2]))}

    def coupled(y, theta):
        return {"a": y["a"] ** 3 - theta[:2], "b": y["b"] - theta[2] * jnp.sum(y["a"])}

    theta = jnp.array([8.0, 27.0, 0.5])
    y = mcg.root(coupled, {"a": jnp.ones(2), "b": jnp.array(0.0)}, theta, solver=solver)
    np.testing.assert_allclose(y["b"], 2.5, rtol=1e-12)
    g = jax.grad(
        lambda t: mcg.root(coupled, {"a": jnp.ones(2), "b": jnp.array(0.0)}, t, solver=solver)["b"]
    )(theta)
    np.testing.assert_allclose(g, [0.5 / 12, 0.5 / 27, 5.0], rtol=1e-10)


# --- host solvers ---------------------------------------------------------------------


def bisect(problem, y0):
    lo, hi = np.zeros_like(y0), np.full_like(y0, 10.0)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        neg = problem.residual(mid) < 0
        lo, hi = np.where(neg, mid, lo), np.where(neg, hi, mid)
    return 0.5 * (lo + hi)


HOST = mcg.solvers.Host(bisect)


def host_cube_root(a):
    return mcg.root(lambda y, a: y**3 - a, jnp.array(1.0), a, solver=HOST)


def test_host_solver_jit_vmap_grad():
    a = jnp.array([8.0, 27.0, 2.0])
    np.testing.assert_allclose(jax.jit(jax.vmap(host_cube_root))(a), jnp.cbrt(a), rtol=1e-12)
    np.testing.assert_allclose(jax.vmap(jax.grad(host_cube_root))(a), a ** (-2 / 3) / 3, rtol=1e-10)
    np.testing.assert_allclose(
        jax.grad(jax.grad(host_cube_root))(8.0), -2 / 9 * 8.0 ** (-5 / 3), rtol=1e-8
    )


def test_host_solver_that_stops_early_is_caught():
    early = mcg.solvers.Host(lambda problem, y0: y0 + 0.01)
    y, info = mcg.root(lambda y, a: y**3 - a, jnp.array(1.0), 8.0, solver=early, full_output=True)
    assert not bool(info.converged) and np.isnan(y)


def test_host_solver_output_size_is_checked():
    wrong = mcg.solvers.Host(lambda problem, y0: np.zeros(3))
    with pytest.raises(Exception, match="returned 3 values; expected 1"):
        jax.block_until_ready(mcg.root(lambda y, a: y**3 - a, jnp.array(1.0), 8.0, solver=wrong))


def test_scipy_minimize_hessian_method_and_pytree():
    solver = mcg.solvers.scipy_minimize("trust-exact")

    def f(y, x):
        return jnp.sum(jnp.abs(y["u"]) ** 3 / 3 - x * y["u"])

    y = mcg.argmin(f, {"u": jnp.zeros(4)}, XS, solver=solver)
    np.testing.assert_allclose(y["u"], conjugate_grad(XS), rtol=1e-8)


def test_scipy_minimize_polishes_bfgs_precision_loss_with_newton():
    # SciPy's BFGS stops with "precision loss" near |grad| ~ 4e-9 at some of these points,
    # short of the 1e-10 residual check; up to 3 Newton steps on the gradient finish it.
    xs = jax.random.uniform(jax.random.key(0), (20, 2), minval=-2.0, maxval=2.0)
    g = lambda y, x: jnp.sum(jnp.abs(y) ** 3 / 3 - x * y)  # noqa: E731

    def solve(solver):
        return jnp.stack([mcg.argmin(g, jnp.zeros(2), x, solver=solver) for x in xs])

    bare = solve(mcg.solvers.scipy_minimize(polish=0))
    assert np.any(np.isnan(bare))
    polished = solve(mcg.solvers.scipy_minimize())
    np.testing.assert_allclose(polished, jnp.sign(xs) * jnp.sqrt(jnp.abs(xs)), rtol=1e-12)
    with pytest.raises(ValueError, match="polish must be an int >= 0"):
        mcg.solvers.scipy_minimize(polish=-1)


def test_scipy_minimize_rejects_root_problems():
    with pytest.raises(Exception, match="argmin/min_value problems only"):
        jax.block_until_ready(
            mcg.root(kepler, jnp.array(1.0), 1.0, 0.5, solver=mcg.solvers.scipy_minimize())
        )


def test_chandrupatla_rejects_a_pole():
    # Regression: the bracket closed on the pole of 1/y + 1 (or tan across pi/2) and
    # reported convergence with a residual of 1e10.
    bracketed = mcg.solvers.Chandrupatla(bracket=(-0.5, 2.0))
    y, info = mcg.root(
        lambda y, a: 1 / y + a, jnp.array(0.5), 1.0, solver=bracketed, full_output=True
    )
    assert not bool(info.converged) and np.isnan(y)
    y, info = mcg.root(
        lambda y, a: jnp.tan(y) - a,
        jnp.array(1.4),
        1.0,
        solver=mcg.solvers.Chandrupatla(),
        full_output=True,
    )
    assert not bool(info.converged)
    # ... while a steep but continuous function is still solved.
    y, info = mcg.root(
        lambda y, a: 1e8 * (y - a),
        jnp.array(0.5),
        1.0,
        solver=mcg.solvers.Chandrupatla(bracket=(0.0, 2.0)),
        full_output=True,
    )
    assert bool(info.converged) and abs(float(y) - 1.0) < 1e-10


def _lapack_calls_wait_for_lu(jaxpr, tainted=frozenset()):
    """Does each Cholesky's input depend on an LU output of the same (sub-)jaxpr?"""
    tainted = set(tainted)
    ok = True
    for eqn in jaxpr.eqns:
        subs = list(jex_core.jaxprs_in_params(eqn.params))
        uses = any(not isinstance(v, jex_core.Literal) and v in tainted for v in eqn.invars)
        inner = set().union(*(primitive_names(s) for s in subs)) if subs else set()
        if eqn.primitive.name == "cholesky" or ("cholesky" in inner and "lu" not in inner):
            ok &= uses
        elif subs and "lu" in inner and "cholesky" in inner:  # a loop body, a jit
            ok &= all(_lapack_calls_wait_for_lu(s) for s in subs)
        if uses or eqn.primitive.name == "lu" or "lu" in inner:
            tainted.update(eqn.outvars)
    return ok


def test_dense_newton_never_runs_two_lapack_kernels_at_once_under_vmap():
    # jaxlib 0.10's batched LAPACK kernels deadlock XLA:CPU's thread pool when as many
    # of them run at once as it has threads (seen as a hang of a Kepler run on 2 cores).
    # Under vmap Newton's Levenberg-Marquardt branch runs too (the cond becomes a
    # select): its Cholesky must wait for the LU step, as JAX's selection of the
    # branch's operands by the predicate makes it. Up to ELIMINATION_LIMIT unknowns the
    # steps use no LAPACK at all (elimination in XLA), from a scalar equation up.
    from mcmc_customgrad.implicit.newton import ELIMINATION_LIMIT

    n = ELIMINATION_LIMIT + 1

    def coupled(y, a):
        return y**3 + 0.5 * jnp.roll(y, 1) - a * jnp.linspace(1.0, 2.0, y.shape[0])

    y0 = jnp.where(jnp.arange(n) % 2 == 0, 5.0, -3.0)
    batched = jax.vmap(lambda a: mcg.root(coupled, y0, a))
    jaxpr = jax.make_jaxpr(batched)(jnp.linspace(1.0, 2.0, 8)).jaxpr
    assert {"lu", "cholesky"} <= primitive_names(jaxpr)
    assert _lapack_calls_wait_for_lu(jaxpr)
    # The check itself: an LU and a Cholesky side by side are caught.
    side_by_side = jax.make_jaxpr(
        lambda m: (jax.scipy.linalg.lu_factor(m)[0], jnp.linalg.cholesky(m @ m.T))
    )(jnp.eye(2)).jaxpr
    assert not _lapack_calls_wait_for_lu(side_by_side)
    y = batched(jnp.linspace(1.0, 2.0, 8))
    np.testing.assert_allclose(jax.vmap(coupled)(y, jnp.linspace(1.0, 2.0, 8)), 0.0, atol=1e-10)

    scalar = jax.vmap(lambda a: mcg.root(lambda y, a: y**3 - a, jnp.array([1.0]), a))
    small = jax.vmap(lambda a: mcg.root(coupled, y0[: n - 1], a))
    for solve in (scalar, small):
        assert not {"lu", "cholesky", "triangular_solve"} & primitive_names(
            jax.make_jaxpr(solve)(jnp.linspace(1.0, 8.0, 4)).jaxpr
        )
    np.testing.assert_allclose(scalar(jnp.array([1.0, 8.0]))[:, 0], [1.0, 2.0], rtol=1e-12)
    a = jnp.array([1.0, 1.5])
    np.testing.assert_allclose(jax.vmap(coupled)(small(a), a), 0.0, atol=1e-10)


def test_small_dense_steps_pivot_and_report_singular_systems():
    # Newton's root steps up to ELIMINATION_LIMIT unknowns: elimination with partial
    # pivoting in XLA, as accurate as LAPACK's LU, non-finite for a singular matrix.
    from mcmc_customgrad.implicit.newton import ELIMINATION_LIMIT, _solve_small

    rng = np.random.default_rng(3)
    for n in (2, 5, ELIMINATION_LIMIT):
        a = rng.normal(size=(n, n))
        a[0, 0] = 0.0  # needs a row exchange
        b = rng.normal(size=n)
        np.testing.assert_allclose(
            _solve_small(jnp.asarray(a), jnp.asarray(b)), np.linalg.solve(a, b), rtol=1e-10
        )
    swap = jnp.array([[0.0, 1.0], [1.0, 0.0]])
    np.testing.assert_array_equal(_solve_small(swap, jnp.array([2.0, 3.0])), [3.0, 2.0])
    singular = jnp.array([[1.0, 2.0], [2.0, 4.0]])
    assert not bool(jnp.all(jnp.isfinite(_solve_small(singular, jnp.array([1.0, 1.0])))))
