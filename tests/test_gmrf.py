"""Sparse-precision (GMRF) embedded Laplace: mcmc_customgrad.gmrf.

Every result is compared with a dense computation: the closed form for a Gaussian
likelihood (the Laplace approximation is exact there), and the dense embedded Laplace
(``latent_gaussian_log_marginal`` with ``cov = Q^-1``) for the other likelihoods. Sizes
are small in the fast tier; the slow tier repeats the comparisons at n = 2,000.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import sparse as jsparse
from jax.scipy.stats import multivariate_normal

import mcmc_customgrad as mcg
from mcmc_customgrad.laplace import (
    bernoulli,
    gaussian,
    latent_gaussian_log_marginal,
    negative_binomial,
    poisson,
)

RNG = np.random.default_rng(20261204)


def _ar1(h, n):
    return mcg.gmrf.ar1(n, jnp.tanh(h[0]), jnp.exp(h[1]))


def _matern(h, shape):
    return mcg.gmrf.matern_grid(shape, jnp.exp(h[0]), jnp.exp(h[1]))


BUILDERS = {"ar1": (_ar1, 60), "matern": (_matern, (6, 7))}


def _size(arg):
    return arg if isinstance(arg, int) else arg[0] * arg[1]


def _gaussian_pair(builder, arg, y):
    n = _size(arg)

    def sparse(h):
        Q = builder(h, arg)
        return mcg.gmrf_log_marginal(gaussian(y), Q, jnp.zeros(n), jnp.exp(h[2]), mean=h[3])

    def exact(h):
        Q = builder(h, arg).todense()
        C = jnp.linalg.inv(Q) + jnp.exp(2 * h[2]) * jnp.eye(n)
        return multivariate_normal.logpdf(y, jnp.full(n, h[3]), C)

    return sparse, exact


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_gaussian_likelihood_is_exact_value_and_gradient(name):
    builder, arg = BUILDERS[name]
    y = jnp.asarray(RNG.normal(size=_size(arg)))
    sparse, exact = _gaussian_pair(builder, arg, y)
    h = jnp.array([0.4, 0.3, -0.5, 0.2])
    v, g = jax.value_and_grad(sparse)(h)
    v_ref, g_ref = jax.value_and_grad(exact)(h)
    assert abs(float(v - v_ref)) <= 1e-8 * abs(float(v_ref))
    np.testing.assert_allclose(g, g_ref, rtol=1e-8, atol=1e-10 * float(jnp.abs(g_ref).max()))


LIKELIHOODS = {
    "poisson": (lambda n: poisson(jnp.asarray(RNG.poisson(2.0, n))), ()),
    "bernoulli": (lambda n: bernoulli(jnp.asarray(RNG.integers(0, 2, n))), ()),
    "negative_binomial": (
        lambda n: negative_binomial(jnp.asarray(RNG.poisson(3.0, n))),
        (jnp.asarray(2.5),),
    ),
}


def _dense_pair(builder, arg, ll, extra):
    n = _size(arg)

    def sparse(h, *a):
        return mcg.gmrf_log_marginal(ll, builder(h, arg), jnp.zeros(n), *a, mean=h[2])

    def dense(h, *a):
        cov = jnp.linalg.inv(builder(h, arg).todense())
        return latent_gaussian_log_marginal(ll, cov, jnp.zeros(n), *a, mean=h[2])

    return sparse, dense


# Every likelihood on AR(1) in the fast tier, and on the Matern grid in the slow one (its
# Gaussian exactness and log-determinant tests cover the grid in the fast tier).
@pytest.mark.parametrize("likelihood", sorted(LIKELIHOODS))
@pytest.mark.parametrize("name", ["ar1", pytest.param("matern", marks=pytest.mark.slow)])
def test_agrees_with_the_dense_embedded_laplace(name, likelihood):
    builder, arg = BUILDERS[name]
    make, extra = LIKELIHOODS[likelihood]
    sparse, dense = _dense_pair(builder, arg, make(_size(arg)), extra)
    h = jnp.array([0.3, -0.2, 0.4])
    argnums = tuple(range(1 + len(extra)))
    v, g = jax.value_and_grad(sparse, argnums)(h, *extra)
    v_ref, g_ref = jax.value_and_grad(dense, argnums)(h, *extra)
    assert abs(float(v - v_ref)) <= 1e-8 * abs(float(v_ref))
    for a, b in zip(g, g_ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-9 * float(jnp.abs(b).max()))


def test_full_output_reports_the_newton_solve():
    y = jnp.asarray(RNG.poisson(2.0, 30))
    Q = mcg.gmrf.ar1(30, 0.6, 1.5)
    value, info = mcg.gmrf_log_marginal(poisson(y), Q, jnp.zeros(30), full_output=True)
    assert bool(info.converged) and int(info.status) == mcg.Status.CONVERGED
    assert 2 <= int(info.num_steps) <= 20 and float(info.residual_norm) < 1e-8
    assert np.isfinite(float(value))


def test_a_failed_solve_is_nan_with_a_reason_and_finite_gradients():
    y = jnp.asarray(RNG.poisson(5.0, 30))

    def f(h):
        Q = mcg.gmrf.ar1(30, jnp.tanh(h[0]), jnp.exp(h[1]))
        solver = mcg.solvers.Newton(max_steps=1)
        return mcg.gmrf_log_marginal(poisson(y), Q, jnp.zeros(30), solver=solver, full_output=True)

    h = jnp.array([0.5, 0.0])
    value, info = f(h)
    assert np.isnan(float(value)) and int(info.status) == mcg.Status.MAX_STEPS
    grad = jax.grad(lambda h: f(h)[0])(h)
    assert np.all(np.asarray(grad) == 0.0)  # masked, never NaN


def test_vmap_over_chains_equals_a_loop_and_needs_no_host_callback():
    builder, arg = BUILDERS["ar1"]
    y = jnp.asarray(RNG.normal(size=arg))
    sparse, _ = _gaussian_pair(builder, arg, y)
    hs = jnp.asarray(RNG.normal(size=(3, 4)) * 0.3)
    batched = jax.jit(jax.vmap(jax.value_and_grad(sparse)))
    v, g = batched(hs)
    for k in range(3):
        v_k, g_k = jax.value_and_grad(sparse)(hs[k])
        np.testing.assert_allclose(v[k], v_k, rtol=1e-12)
        np.testing.assert_allclose(g[k], g_k, rtol=1e-10)
    text = jax.jit(jax.value_and_grad(sparse)).lower(hs[0]).as_text()
    assert "callback" not in text  # sparse factorisations are FFI calls, not host callbacks


# The slow tier: the fast tier checks GMRF gradients against closed forms above, and
# test_models.py the disease map's against its reference.
@pytest.mark.slow
def test_check_gradients_passes_on_a_gmrf_density():
    y = jnp.asarray(RNG.poisson(2.0, 25))

    def logdensity(h):
        Q = mcg.gmrf.ar1(25, jnp.tanh(h[0]), jnp.exp(h[1]))
        return mcg.gmrf_log_marginal(poisson(y), Q, jnp.zeros(25)) - 0.5 * jnp.sum(h**2)

    report = mcg.check_gradients(logdensity, points=RNG.normal(size=(4, 2)) * 0.5, order=1)
    assert report.passed, str(report)


# ------------------------------------------------------------ intrinsic priors, constrained


def _ring_with_chord(n):
    return np.array([[i, (i + 1) % n] for i in range(n)] + [[0, n // 2]])


INTRINSIC = {
    "rw1": (lambda h, n: mcg.gmrf.rw1(n, jnp.exp(h[0])), 30),
    "rw2": (lambda h, n: mcg.gmrf.rw2(n, jnp.exp(h[0])), 30),
    "icar": (lambda h, n: mcg.gmrf.icar(_ring_with_chord(n), jnp.exp(h[0])), 20),
    # two connected parts: one sum-to-zero constraint each
    "icar_two_parts": (
        lambda h, n: mcg.gmrf.icar(
            np.concatenate([_ring_with_chord(n // 2), n // 2 + _ring_with_chord(n // 2)]),
            jnp.exp(h[0]),
        ),
        20,
    ),
}


# Each intrinsic prior is in the fast tier once, here or in the count test below.
FAST_EXACT = ["rw2", "icar"]
FAST_COUNTS = ["rw1", "icar_two_parts"]


def _tiered(names, fast):
    return [n if n in fast else pytest.param(n, marks=pytest.mark.slow) for n in names]


@pytest.mark.parametrize("name", _tiered(sorted(INTRINSIC), FAST_EXACT))
def test_intrinsic_priors_are_exact_under_their_constraints(name):
    # The constrained intrinsic field has covariance pinv(Q): with a Gaussian likelihood
    # the marginal is log N(y; mean, pinv(Q) + sigma^2 I), exactly.
    build, n = INTRINSIC[name]
    y = jnp.asarray(RNG.normal(size=n))

    def sparse(h):
        return mcg.gmrf_log_marginal(
            gaussian(y), build(h, n), jnp.zeros(n), jnp.exp(h[1]), mean=h[2]
        )

    def exact(h):
        C = jnp.linalg.pinv(build(h, n).todense(), hermitian=True) + jnp.exp(2 * h[1]) * jnp.eye(n)
        return multivariate_normal.logpdf(y, jnp.full(n, h[2]), C)

    h = jnp.array([0.3, -0.4, 0.2])
    v, g = jax.value_and_grad(sparse)(h)
    v_ref, g_ref = jax.value_and_grad(exact)(h)
    assert abs(float(v - v_ref)) <= 1e-8 * abs(float(v_ref))
    np.testing.assert_allclose(g, g_ref, rtol=1e-8, atol=1e-10 * float(jnp.abs(g_ref).max()))


@pytest.mark.parametrize("name", _tiered(sorted(INTRINSIC), FAST_COUNTS))
def test_intrinsic_priors_agree_with_the_dense_path_on_counts(name):
    build, n = INTRINSIC[name]
    ll = poisson(jnp.asarray(RNG.poisson(2.0, n)))

    def sparse(h):
        return mcg.gmrf_log_marginal(ll, build(h, n), jnp.zeros(n), mean=h[1])

    def dense(h):
        cov = jnp.linalg.pinv(build(h, n).todense(), hermitian=True)
        return latent_gaussian_log_marginal(ll, cov, jnp.zeros(n), mean=h[1])

    h = jnp.array([0.5, 0.6])
    v, g = jax.value_and_grad(sparse)(h)
    v_ref, g_ref = jax.value_and_grad(dense)(h)
    assert abs(float(v - v_ref)) <= 1e-8 * abs(float(v_ref))
    np.testing.assert_allclose(g, g_ref, rtol=1e-7)
    draws, post = mcg.gmrf_latent_draws(
        jax.random.key(1),
        ll,
        build(h, n),
        jnp.zeros(n),
        mean=h[1],
        num_draws=4,
        full_output=True,
    )
    # Every draw, and the mode, satisfies the constraints: V' (x - mean) = 0.
    V = build(h, n).null_space.basis
    assert np.abs(V.T @ (np.asarray(draws) - 0.6).T).max() < 1e-8
    assert np.abs(V.T @ (np.asarray(post.mean) - 0.6)).max() < 1e-10


def test_intrinsic_builder_errors():
    with pytest.raises(ValueError, match=r"areas \[3\] have no neighbours"):
        mcg.gmrf.icar(np.array([[0, 1, 1, 0], [1, 0, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]]), 1.0)
    with pytest.raises(ValueError, match="n must be at least 3"):
        mcg.gmrf.rw2(2, 1.0)
    with pytest.raises(ValueError, match="symmetric"):
        mcg.gmrf.icar(np.array([[0, 1, 0], [0, 0, 1], [0, 1, 0]]), 1.0)
    idx = np.array([[0, 0], [1, 1], [0, 1], [1, 0]])
    values = jnp.array([1.0, 1.0, -1.0, -1.0])
    with pytest.raises(ValueError, match="needs log_det"):
        mcg.gmrf.Precision(values, idx, 2, null_space=np.ones(2))
    with pytest.raises(ValueError, match=r"null_space must have shape \(2, k\) with k < 2"):
        mcg.gmrf.Precision(values, idx, 2, log_det=0.0, null_space=np.ones((2, 2)))
    three = mcg.gmrf.rw1(3, 1.0)
    with pytest.raises(ValueError, match="linearly dependent columns"):
        mcg.gmrf.Precision(three.data, three.pattern, 3, log_det=0.0, null_space=np.ones((3, 2)))


def test_icar_takes_a_matrix_or_an_edge_list():
    edges = _ring_with_chord(6)
    A = np.zeros((6, 6))
    A[edges[:, 0], edges[:, 1]] = A[edges[:, 1], edges[:, 0]] = 1
    Q1, Q2 = mcg.gmrf.icar(edges, 2.0), mcg.gmrf.icar(A, 2.0)
    np.testing.assert_array_equal(np.asarray(Q1.todense()), np.asarray(Q2.todense()))
    lam = np.linalg.eigvalsh(np.asarray(Q1.todense()))
    assert float(Q1.log_det) == pytest.approx(np.sum(np.log(lam[1:])), rel=1e-12)


# ------------------------------------------------------------------------- latent draws


def test_latent_draws_follow_the_exact_gaussian_posterior():
    n, sigma = 12, 0.6
    y = jnp.asarray(RNG.normal(size=n))
    Q = mcg.gmrf.ar1(n, 0.7, 1.5)
    draws, post = mcg.gmrf_latent_draws(
        jax.random.key(3),
        gaussian(y),
        Q,
        jnp.zeros(n),
        sigma,
        mean=0.2,
        num_draws=20_000,
        full_output=True,
    )
    A = np.asarray(Q.todense()) + np.eye(n) / sigma**2
    cov = np.linalg.inv(A)
    mode = np.linalg.solve(A, np.asarray(y) / sigma**2 + np.asarray(Q.todense()) @ np.full(n, 0.2))
    np.testing.assert_allclose(post.mean, mode, rtol=1e-10)
    np.testing.assert_allclose(post.variance, np.diag(cov), rtol=1e-10)
    assert draws.shape == (20_000, n) and bool(post.info.converged)
    # Monte Carlo: means within 5 standard errors, covariance entries within 0.05.
    se = np.sqrt(np.diag(cov) / draws.shape[0])
    assert np.all(np.abs(np.asarray(draws.mean(0)) - mode) <= 5 * se)
    np.testing.assert_allclose(np.cov(np.asarray(draws).T), cov, atol=0.05 * cov.max())


def test_latent_draws_are_nan_when_the_solve_fails_and_check_num_draws():
    y = poisson(jnp.asarray(RNG.poisson(5.0, 10)))
    Q = mcg.gmrf.ar1(10, 0.5, 1.0)
    bad = mcg.solvers.Newton(max_steps=1)
    draws = mcg.gmrf_latent_draws(jax.random.key(0), y, Q, jnp.zeros(10), solver=bad, num_draws=2)
    assert draws.shape == (2, 10) and bool(jnp.all(jnp.isnan(draws)))
    assert mcg.gmrf_latent_draws(jax.random.key(0), y, Q, jnp.zeros(10), num_draws=0).shape == (
        0,
        10,
    )
    with pytest.raises(TypeError, match="num_draws must be an int"):
        mcg.gmrf_latent_draws(jax.random.key(0), y, Q, jnp.zeros(10), num_draws=2.0)


# ------------------------------------------------------------------------- the builders


def test_ar1_has_the_stated_correlations_and_log_determinant():
    n, rho, tau = 6, 0.7, 2.5
    Q = np.asarray(mcg.gmrf.ar1(n, rho, tau).todense())
    C = np.linalg.inv(Q)
    lags = np.abs(np.subtract.outer(np.arange(n), np.arange(n)))
    np.testing.assert_allclose(C, rho**lags / tau, rtol=1e-12)
    expected = n * np.log(tau) - (n - 1) * np.log(1 - rho**2)
    assert np.linalg.slogdet(Q)[1] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_the_builders_closed_form_log_determinant_is_exact(name):
    builder, arg = BUILDERS[name]
    h = jnp.array([0.4, 0.3])
    Q = builder(h, arg)
    assert float(Q.log_det) == pytest.approx(
        np.linalg.slogdet(np.asarray(Q.todense()))[1], rel=1e-12
    )
    # Without it the marginal factorises Q and takes its selected inverse: same answer.
    y = poisson(jnp.asarray(RNG.poisson(2.0, _size(arg))))
    n = _size(arg)

    def with_closed_form(h):
        return mcg.gmrf_log_marginal(y, builder(h, arg), jnp.zeros(n))

    def without(h):
        Q = builder(h, arg)
        return mcg.gmrf_log_marginal(y, mcg.gmrf.Precision(Q.data, Q.pattern, n), jnp.zeros(n))

    v, g = jax.value_and_grad(with_closed_form)(h)
    v_ref, g_ref = jax.value_and_grad(without)(h)
    assert float(v) == pytest.approx(float(v_ref), rel=1e-12)
    np.testing.assert_allclose(g, g_ref, rtol=1e-9)


def test_matern_grid_is_the_square_of_the_shifted_laplacian():
    shape, kappa, tau = (4, 5), 0.8, 1.3
    Q = np.asarray(mcg.gmrf.matern_grid(shape, kappa, tau).todense())
    n = shape[0] * shape[1]
    G = np.zeros((n, n))
    index = np.arange(n).reshape(shape)
    for a, b in [(index[:, :-1], index[:, 1:]), (index[:-1, :], index[1:, :])]:
        for i, j in zip(a.ravel(), b.ravel(), strict=True):
            G[i, j] = G[j, i] = -1.0
    G -= np.diag(G.sum(axis=1))
    K = kappa**2 * np.eye(n) + G
    np.testing.assert_allclose(Q, tau**2 * K @ K, atol=1e-12)
    assert mcg.gmrf.matern_grid(shape, kappa, tau).nse <= 13 * n


def test_precision_keeps_its_pattern_static_under_jit_and_vmap():
    idx = np.array([[0, 0], [1, 1], [0, 1], [1, 0]])

    def value(a):
        Q = mcg.gmrf.Precision(jnp.stack([2.0, 3.0, a, a]), idx, 2)
        return mcg.gmrf_log_marginal(poisson(jnp.array([1, 2])), Q, jnp.zeros(2))

    v = jax.jit(jax.vmap(value))(jnp.array([0.1, -0.4]))
    assert v.shape == (2,) and bool(jnp.all(jnp.isfinite(v)))
    cov = jnp.linalg.inv(jnp.array([[2.0, 0.1], [0.1, 3.0]]))
    ref = latent_gaussian_log_marginal(poisson(jnp.array([1, 2])), cov, jnp.zeros(2))
    assert float(v[0]) == pytest.approx(float(ref), rel=1e-10)


# ----------------------------------------------------------------------------- errors


def test_bad_input_errors():
    y = poisson(jnp.array([1, 2, 3]))
    Q = mcg.gmrf.ar1(3, 0.5, 1.0)
    with pytest.raises(TypeError, match=r"must be an mcg\.gmrf\.Precision"):
        mcg.gmrf_log_marginal(y, jnp.eye(3), jnp.zeros(3))
    with pytest.raises(ValueError, match=r"theta0 must have shape \(3,\)"):
        mcg.gmrf_log_marginal(y, Q, jnp.zeros(4))
    with pytest.raises(ValueError, match="not symmetric"):
        mcg.gmrf.Precision(jnp.ones(2), np.array([[0, 0], [0, 1]]), 2)
    with pytest.raises(ValueError, match="repeat an entry"):
        mcg.gmrf.Precision(jnp.ones(2), np.array([[0, 0], [0, 0]]), 2)
    with pytest.raises(ValueError, match=r"values must have shape \(2,\)"):
        mcg.gmrf.Precision(jnp.ones(3), np.array([[0, 0], [1, 1]]), 2)
    singular = mcg.gmrf.Precision(
        jnp.array([1.0, 1.0, -1.0, -1.0]), np.array([[0, 0], [1, 1], [0, 1], [1, 0]]), 2
    )
    with pytest.raises(ValueError, match=r"not positive definite.*intrinsic"):
        mcg.gmrf_log_marginal(poisson(jnp.array([1, 2])), singular, jnp.zeros(2))
    with pytest.raises(ValueError, match="not separable"):
        mcg.gmrf_log_marginal(lambda x: -(jnp.sum(x) ** 2), Q, jnp.zeros(3))
    with pytest.raises(ValueError, match=r"rho must be a scalar"):
        mcg.gmrf.ar1(3, jnp.ones(2), 1.0)
    with pytest.raises(ValueError, match="n must be an integer >= 2"):
        mcg.gmrf.ar1(1, 0.5, 1.0)


def test_float32_is_refused_with_the_fix(float32):
    Q = mcg.gmrf.ar1(3, 0.5, 1.0)
    with pytest.raises(ValueError, match=r"works in float64.*jax_enable_x64"):
        mcg.gmrf_log_marginal(poisson(jnp.array([1, 2, 3])), Q, jnp.zeros(3))


def test_a_bcoo_built_inside_jit_is_refused_with_the_fix():
    idx = np.array([[0, 0], [1, 1]])

    def f(a):
        Q = jsparse.BCOO((jnp.stack([a, a]), idx), shape=(2, 2))
        return mcg.gmrf_log_marginal(poisson(jnp.array([1, 2])), Q, jnp.zeros(2))

    assert np.isfinite(float(f(2.0)))  # eagerly the indices are concrete
    with pytest.raises(ValueError, match=r"mcg.gmrf.Precision\(values, indices, n\)"):
        jax.jit(f)(2.0)


# ------------------------------------------------------------------------- at n = 2,000


@pytest.mark.slow
@pytest.mark.parametrize("likelihood", ["gaussian", *sorted(LIKELIHOODS)])
def test_agreement_at_two_thousand_latents(likelihood):
    n = 2000
    builder = _ar1
    if likelihood == "gaussian":
        y = jnp.asarray(RNG.normal(size=n))
        sparse, exact = _gaussian_pair(builder, n, y)
        h, extra = jnp.array([0.8, 0.3, -0.5, 0.2]), ()
    else:
        make, extra = LIKELIHOODS[likelihood]
        sparse, exact = _dense_pair(builder, n, make(n), extra)
        h = jnp.array([0.8, -0.2, 0.4])
    argnums = tuple(range(1 + len(extra)))
    v, g = jax.value_and_grad(sparse, argnums)(h, *extra)
    v_ref, g_ref = jax.value_and_grad(exact, argnums)(h, *extra)
    assert abs(float(v - v_ref)) <= 1e-8 * abs(float(v_ref))
    for a, b in zip(g, g_ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-9 * float(jnp.abs(b).max()))


# ---------------------------------------------------------------------------------- BYM2


def _lattice(rows, cols, offset=0):
    index = np.arange(rows * cols).reshape(rows, cols) + offset
    across = np.stack([index[:, :-1].ravel(), index[:, 1:].ravel()], 1)
    down = np.stack([index[:-1].ravel(), index[1:].ravel()], 1)
    return np.concatenate([across, down])


#: Two connected parts (a 3 x 3 and a 2 x 4 lattice): one constraint each.
TWO_PARTS = np.concatenate([_lattice(3, 3), _lattice(2, 4, offset=9)])
N_TWO = 17


def _bym2_dense(tau, phi):
    """b's covariance ((1 - phi) I + phi pinv(R*)) / tau, from the dense precision."""
    Q = np.asarray(mcg.gmrf.bym2(TWO_PARTS, tau, phi).todense())
    R_star = Q[N_TWO:, N_TWO:] - phi / (1 - phi) * np.eye(N_TWO)
    return Q, R_star


def test_bym2_is_the_scaled_mixture_with_its_constraint_and_log_determinant():
    tau, phi = 2.5, 0.3
    Q, R_star = _bym2_dense(tau, phi)
    precision = mcg.gmrf.bym2(TWO_PARTS, tau, phi)
    assert precision.shape == (2 * N_TWO, 2 * N_TWO) and precision.null_space.k == 2
    V = precision.null_space.basis
    assert np.all(V[:N_TWO] == 0)  # the constraint is on u only
    # Each part's scaled structure has geometric-mean constrained variance 1.
    S = np.linalg.pinv(R_star, hermitian=True)
    for part in (np.arange(9), np.arange(9, N_TWO)):
        np.testing.assert_allclose(np.exp(np.mean(np.log(np.diag(S)[part]))), 1.0, rtol=1e-12)
        assert np.allclose(S[np.ix_(part, np.setdiff1d(np.arange(N_TWO), part))], 0)
    # log_det is log|U' Q U| on the constraint's subspace.
    U = np.linalg.svd(V.T)[2][V.shape[1] :].T
    np.testing.assert_allclose(float(precision.log_det), np.linalg.slogdet(U.T @ Q @ U)[1])
    # Conditioned on the constraint, b's covariance is ((1 - phi) I + phi S) / tau.
    cov = U @ np.linalg.inv(U.T @ Q @ U) @ U.T
    np.testing.assert_allclose(
        cov[:N_TWO, :N_TWO], ((1 - phi) * np.eye(N_TWO) + phi * S) / tau, atol=1e-12
    )
    assert np.allclose(Q, Q.T) and np.all(np.diag(Q) > 0)


def _bym2_pair(likelihood):
    """The sparse BYM2 marginal over (b, u) and the dense one over b alone.

    Both in ``h = (log tau, logit phi, mu)``, the likelihood's arguments after ``h``.
    """
    n = N_TWO

    def prior(h):
        return jnp.exp(h[0]), jax.nn.sigmoid(h[1])

    def sparse(h, *a):
        tau, phi = prior(h)
        mean = jnp.concatenate([jnp.full(n, h[2]), jnp.zeros(n)])

        def ll(x, *a):
            return jnp.sum(likelihood(x[:n], *a))

        return mcg.gmrf_log_marginal(
            ll, mcg.gmrf.bym2(TWO_PARTS, tau, phi), jnp.zeros(2 * n), *a, mean=mean
        )

    S = jnp.asarray(np.linalg.pinv(_bym2_dense(1.0, 0.5)[1], hermitian=True))

    def dense(h, *a):
        tau, phi = prior(h)
        cov = ((1 - phi) * jnp.eye(n) + phi * S) / tau
        return latent_gaussian_log_marginal(likelihood, cov, jnp.zeros(n), *a, mean=h[2])

    return sparse, dense


def test_bym2_gaussian_marginal_is_exact():
    y = jnp.asarray(RNG.normal(size=N_TWO))
    sparse, _ = _bym2_pair(gaussian(y))
    S = jnp.asarray(np.linalg.pinv(_bym2_dense(1.0, 0.5)[1], hermitian=True))

    def exact(h):
        tau, phi = jnp.exp(h[0]), jax.nn.sigmoid(h[1])
        cov = ((1 - phi) * jnp.eye(N_TWO) + phi * S) / tau + 0.16 * jnp.eye(N_TWO)
        return multivariate_normal.logpdf(y, jnp.full(N_TWO, h[2]), cov)

    vg = jax.jit(jax.value_and_grad(lambda h: sparse(h, 0.4)))
    vg_ref = jax.jit(jax.value_and_grad(exact))
    for h in (jnp.array([0.3, -0.5, 0.2]), jnp.array([-1.0, 2.0, -0.4])):
        v, g = vg(h)
        v_ref, g_ref = vg_ref(h)
        assert abs(float(v - v_ref)) <= 1e-10 * abs(float(v_ref))
        np.testing.assert_allclose(g, g_ref, rtol=1e-8, atol=1e-10 * float(jnp.abs(g_ref).max()))


# The slow tier: the fast tier has BYM2's exact Gaussian marginal (above) and its
# Poisson model against the full joint (tests/test_disease_map.py).
@pytest.mark.slow
def test_bym2_counts_agree_with_the_dense_path():
    y = jnp.asarray(RNG.poisson(3.0, N_TWO))
    sparse, dense = _bym2_pair(poisson(y))
    h = jnp.array([0.4, 0.7, 0.9])
    v, g = jax.value_and_grad(sparse)(h)
    v_ref, g_ref = jax.value_and_grad(dense)(h)
    assert abs(float(v - v_ref)) <= 1e-8 * abs(float(v_ref))
    np.testing.assert_allclose(g, g_ref, rtol=1e-7)


def test_stiff_bym2_near_its_margin_is_still_exact():
    # tau up to 400 and phi within 1e-6 of 1 (or of 0): Q's entries reach 1e8 and cancel.
    # The refined solves, the rounding-aware line search and the step test still place
    # the mode. (Nearer the margin, at tau = 400 and 1 - phi = 3e-7, entries of 1e9, the
    # value is off by up to 4e-8 relative: docs/laplace.md.)
    y = jnp.asarray(np.random.default_rng(5).normal(size=N_TWO) * 0.3)
    sparse, _ = _bym2_pair(gaussian(y))
    S = jnp.asarray(np.linalg.pinv(_bym2_dense(1.0, 0.5)[1], hermitian=True))
    for h in ([6.0, 12.0, 0.1], [3.0, 14.0, 0.0], [0.0, 15.0, 0.1], [6.0, -12.0, 0.1]):
        h = jnp.array(h)
        tau, phi = jnp.exp(h[0]), jax.nn.sigmoid(h[1])
        cov = ((1 - phi) * jnp.eye(N_TWO) + phi * S) / tau + 0.04 * jnp.eye(N_TWO)
        exact = multivariate_normal.logpdf(y, jnp.full(N_TWO, h[2]), cov)
        value = jax.jit(sparse)(h, 0.2)
        assert abs(float(value - exact)) <= 1e-8 * abs(float(exact)), h


#: Each builder at a hyperparameter out of its range, and the message it raises.
OUT_OF_RANGE = {
    "ar1": (lambda a: mcg.gmrf.ar1(6, a, 1.0), 1.5, r"rho must be in \(-1, 1\)"),
    "rw1": (lambda a: mcg.gmrf.rw1(6, a), -1.0, "tau must be > 0"),
    "icar": (lambda a: mcg.gmrf.icar(_ring_with_chord(6), a), 0.0, "tau must be > 0"),
    "matern": (lambda a: mcg.gmrf.matern_grid((2, 3), a, 1.0), -0.5, "kappa must be > 0"),
    "bym2": (lambda a: mcg.gmrf.bym2(_ring_with_chord(6), 1.0, a), 1.0, r"phi must be in"),
}


def test_builders_raise_outside_their_range_when_concrete():
    for build, bad, message in OUT_OF_RANGE.values():
        with pytest.raises(ValueError, match=message):
            build(bad)
    with pytest.raises(ValueError, match=r"phi must be in"):
        mcg.gmrf.bym2(_ring_with_chord(6), 1.0, 0.0)  # phi = 0: the independent model


# One compile per builder: BYM2 (the one with two hyperparameter ranges) in the fast tier.
@pytest.mark.parametrize("name", _tiered(sorted(OUT_OF_RANGE), ["bym2"]))
def test_builders_are_nan_outside_their_range_under_trace(name):
    build, bad, _ = OUT_OF_RANGE[name]
    y = jnp.asarray(np.random.default_rng(6).poisson(2.0, 6))
    Q = jax.jit(build)(bad)
    assert np.all(np.isnan(np.asarray(Q.data))) and np.isnan(float(Q.log_det))
    n = Q.shape[0]

    def f(a):
        def ll(x):
            return jnp.sum(poisson(y)(x[:6]))

        return mcg.gmrf_log_marginal(ll, build(a), jnp.zeros(n), full_output=True)

    value, info = jax.jit(f)(bad)
    assert np.isnan(float(value)) and int(info.status) == mcg.Status.NONFINITE
    grad = jax.jit(jax.grad(lambda a: f(a)[0]))(bad)
    assert float(grad) == 0.0  # masked, never NaN


def test_an_overflowing_likelihood_is_nan_not_a_crash():
    # mean = 800: exp(800) overflows, W is inf at the start; nothing reaches CHOLMOD.
    y = jnp.asarray(RNG.poisson(2.0, 20))
    f = jax.jit(
        lambda m: mcg.gmrf_log_marginal(
            poisson(y), mcg.gmrf.rw1(20, 1.0), jnp.zeros(20), mean=m, full_output=True
        )
    )
    value, info = f(800.0)
    assert np.isnan(float(value)) and not bool(info.converged)


def test_a_factorisation_failure_inside_a_driver_is_explained():
    # A precision of the user's own that is indefinite at a traced value: CHOLMOD cannot
    # return NaN from inside the program; the drivers say what happened and what to do.
    from mcmc_customgrad._errors import surface_solver_errors

    idx = np.array([[0, 0], [1, 1], [0, 1], [1, 0]])
    y = jnp.array([1, 2])

    def logdensity(a):
        Q = mcg.gmrf.Precision(jnp.stack([1.0, 1.0, a, a]), idx, 2)
        return mcg.gmrf_log_marginal(poisson(y), Q, jnp.zeros(2))

    run = surface_solver_errors(lambda a: jax.jit(logdensity)(a))
    assert np.isfinite(float(run(0.5)))
    with pytest.raises(mcg.SolverError, match=r"sparse factorisation failed.*\n.*NaN"):
        run(3.0)


def test_bym2_built_first_under_jit():
    # The scaling is computed once per graph, eagerly, even when the first call is traced.
    mcg.clear_caches()
    values = jax.jit(lambda t: mcg.gmrf.bym2(TWO_PARTS, t, 0.5).data)(2.0)
    np.testing.assert_array_equal(values, mcg.gmrf.bym2(TWO_PARTS, 2.0, 0.5).data)
