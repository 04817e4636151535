"""Embedded Laplace approximation: mcmc_customgrad.laplace.

Compile time dominates on CPU, so the models are module-level functions shared by the
tests (each compiled program is reused) and latent sizes are small (n <= 20).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.stats import multivariate_normal

import mcmc_customgrad as mcg
from mcmc_customgrad.laplace import (
    bernoulli,
    gaussian,
    laplace_latent_draws,
    laplace_log_marginal,
    latent_gaussian_log_marginal,
    negative_binomial,
    poisson,
)

N = 10
X = jnp.linspace(0.0, 1.0, N)
ZEROS = jnp.zeros(N)
Y_REAL = jnp.sin(2 * jnp.pi * X) + 0.3 * jnp.cos(7.0 * X)
Y_COUNTS = jnp.array([0, 1, 3, 2, 5, 4, 1, 0, 2, 7])
Y_BINARY = jnp.array([0, 0, 1, 0, 1, 1, 1, 0, 1, 1])
OFFSET = jnp.log(jnp.linspace(0.5, 2.0, N))


def se_cov(rho, alpha, x=X, jitter=1e-6):
    d = x[:, None] - x[None, :]
    return alpha**2 * jnp.exp(-0.5 * d**2 / rho**2) + jitter * jnp.eye(x.shape[0])


def fd_grad(f, h, eps=1e-5):
    """Central differences of a scalar function of a vector."""
    h = np.asarray(h, float)
    out = []
    for i in range(h.size):
        e = np.zeros_like(h)
        e[i] = eps
        out.append((f(h + e) - f(h - e)) / (2 * eps))
    return np.array(out)


# ----------------------------------------------------------------------------- the models
# Gaussian: h = (rho, alpha, sigma, mu), mean = mu + 0.5 x.


def gauss_mean(mu):
    return mu + 0.5 * X


def gauss_latent(h, theta0=ZEROS):
    rho, alpha, sigma, mu = h
    return latent_gaussian_log_marginal(
        gaussian(Y_REAL), se_cov(rho, alpha), theta0, sigma, mean=gauss_mean(mu)
    )


def gauss_generic(h):
    def log_joint(theta, h):
        rho, alpha, sigma, mu = h
        prior = multivariate_normal.logpdf(theta, gauss_mean(mu), se_cov(rho, alpha))
        return jnp.sum(gaussian(Y_REAL)(theta, sigma)) + prior

    return laplace_log_marginal(log_joint, ZEROS, h)


def gauss_exact(h):
    rho, alpha, sigma, mu = h
    cov = se_cov(rho, alpha) + sigma**2 * jnp.eye(N)
    return multivariate_normal.logpdf(Y_REAL, gauss_mean(mu), cov)


# The generic path works with the dense Hessian cov^-1 + W, whose rounding grows with
# cond(cov): jitter 1e-4 keeps the two paths' agreement at the 1e-9 level.
JITTER_POISSON = 1e-4

# Poisson GP with an offset and an exposure parameter s (a likelihood argument, so that
# its gradient is the args path): h = (rho, alpha, mu, log_s).


def poisson_exposure(theta, s):
    return poisson(Y_COUNTS, log_offset=OFFSET)(theta + jnp.log(s))


def poisson_latent(h, solver=None, full_output=False):
    rho, alpha, mu, log_s = h
    s = jnp.where(log_s > 5, -1.0, jnp.exp(log_s))  # log_s > 5: s = -1, a NaN likelihood
    return latent_gaussian_log_marginal(
        poisson_exposure,
        se_cov(rho, alpha, jitter=JITTER_POISSON),
        ZEROS,
        s,
        mean=mu,
        solver=solver,
        full_output=full_output,
    )


def poisson_generic(h):
    def log_joint(theta, h):
        rho, alpha, mu, log_s = h
        prior = multivariate_normal.logpdf(
            theta, mu * jnp.ones(N), se_cov(rho, alpha, jitter=JITTER_POISSON)
        )
        return jnp.sum(poisson_exposure(theta, jnp.exp(log_s))) + prior

    return laplace_log_marginal(log_joint, ZEROS, h)


def bernoulli_latent(h):
    rho, alpha, mu = h
    return latent_gaussian_log_marginal(bernoulli(Y_BINARY), se_cov(rho, alpha), ZEROS, mean=mu)


def negbin_latent(h):
    rho, alpha, mu, log_phi = h
    ll = negative_binomial(Y_COUNTS, log_offset=OFFSET)
    return latent_gaussian_log_marginal(ll, se_cov(rho, alpha), ZEROS, jnp.exp(log_phi), mean=mu)


VG = {
    name: jax.jit(jax.value_and_grad(f))
    for name, f in [
        ("gauss_generic", gauss_generic),
        ("gauss_exact", gauss_exact),
        ("poisson_latent", poisson_latent),
        ("poisson_generic", poisson_generic),
        ("bernoulli_latent", bernoulli_latent),
        ("negbin_latent", negbin_latent),
    ]
}
#: Gradient in (h, theta0): the start must get exactly zero.
GAUSS_LATENT_VG = jax.jit(jax.value_and_grad(gauss_latent, argnums=(0, 1)))
H_GAUSS = jnp.array([0.3, 1.2, 0.4, 0.2])
H_POISSON = jnp.array([0.25, 1.1, 0.4, 0.3])


# ------------------------------------------------------------------------------ exactness


def test_gaussian_likelihood_is_exact_value_and_gradient():
    v_exact, g_exact = VG["gauss_exact"](H_GAUSS)
    v, (g, _) = GAUSS_LATENT_VG(H_GAUSS, ZEROS)
    np.testing.assert_allclose(v, v_exact, rtol=1e-8)
    np.testing.assert_allclose(g, g_exact, rtol=1e-8)
    v, g = VG["gauss_generic"](H_GAUSS)
    np.testing.assert_allclose(v, v_exact, rtol=1e-8)
    np.testing.assert_allclose(g, g_exact, rtol=1e-8)


def test_start_is_a_constant_and_does_not_change_the_answer():
    v_exact, g_exact = VG["gauss_exact"](H_GAUSS)
    v, (g, g_start) = GAUSS_LATENT_VG(H_GAUSS, 0.7 * jnp.cos(3 * X))
    np.testing.assert_allclose(v, v_exact, rtol=1e-8)
    np.testing.assert_allclose(g, g_exact, rtol=1e-8)
    assert np.all(np.asarray(g_start) == 0.0)


def test_generic_equals_latent_gaussian_on_poisson():
    v1, g1 = VG["poisson_latent"](H_POISSON)
    v2, g2 = VG["poisson_generic"](H_POISSON)
    np.testing.assert_allclose(v1, v2, rtol=1e-8)
    np.testing.assert_allclose(g1, g2, rtol=1e-8)


# -------------------------------------------------------------------- finite differences


@pytest.mark.parametrize(
    ("name", "h"),
    [
        ("poisson_latent", H_POISSON),  # last: the exposure, an argument
        ("bernoulli_latent", jnp.array([0.3, 1.5, 0.2])),
        ("negbin_latent", jnp.array([0.25, 1.1, 0.4, jnp.log(3.0)])),  # last: dispersion
    ],
)
def test_gradient_matches_finite_differences(name, h):
    vg = VG[name]
    value, grad = vg(h)
    assert np.isfinite(value)
    fd = fd_grad(lambda h: float(vg(h)[0]), h)
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)


# ----------------------------------------------------- vmap, failures and NaN masking
# One vmapped program over Poisson models h = (rho, alpha, mu, log_s) with a shared mean
# shift c and few Newton steps: element 1 needs more steps (fails), element 3 has s = -1
# (a NaN likelihood: fails), the others converge.

FEW_STEPS = mcg.solvers.Newton(max_steps=3, fallback=False)
H_BATCH = jnp.array(
    [[0.3, 0.05, 0.0, 0.3], [0.3, 2.0, -3.0, 0.3], [0.25, 0.01, 0.0, -0.2], [0.3, 0.5, 0.0, 9.0]]
)


def poisson_batch(hs, c):
    shift = jnp.array([0.0, 0.0, 1.0, 0.0]) * c
    v, info = jax.vmap(lambda h: poisson_latent(h + shift, FEW_STEPS, full_output=True))(hs)
    return jnp.sum(jnp.where(info.converged, v, 0.0)), (v, info)


POISSON_BATCH_VG = jax.jit(jax.value_and_grad(poisson_batch, argnums=(0, 1), has_aux=True))


def test_failed_solve_is_nan_with_masked_gradients_under_vmap():
    (_, (v, info)), (g_h, g_c) = POISSON_BATCH_VG(H_BATCH, 0.1)
    v, g_h = np.asarray(v), np.asarray(g_h)
    assert info.converged.tolist() == [True, False, True, False]
    assert np.all(np.isnan(v[[1, 3]])) and np.all(np.isfinite(v[[0, 2]]))
    assert np.all(info.num_steps <= 3)
    assert np.all(np.isfinite(g_h)) and np.all(g_h[[1, 3]] == 0.0) and np.isfinite(g_c)
    # The shared parameter's gradient is that of the converged elements alone.
    np.testing.assert_allclose(g_c, g_h[0, 2] + g_h[2, 2], rtol=1e-12)


def test_vmap_over_hyperparameters_equals_a_loop():
    (_, (v, _)), (g_h, _) = POISSON_BATCH_VG(H_BATCH, 0.1)
    for i in (0, 2):
        vi, gi = VG["poisson_latent"](H_BATCH[i] + jnp.array([0.0, 0.0, 0.1, 0.0]))
        np.testing.assert_allclose(v[i], vi, rtol=1e-10)
        np.testing.assert_allclose(g_h[i], gi, rtol=1e-8)


def test_on_failure_raise():
    with pytest.raises(mcg.SolverError, match="did not converge"):
        latent_gaussian_log_marginal(
            poisson(Y_COUNTS),
            se_cov(0.3, 2.0),
            ZEROS,
            mean=-3.0,
            solver=FEW_STEPS,
            on_failure="raise",
        )


def test_non_separable_likelihood_fails_under_jit():
    def coupled(theta):
        return -0.5 * jnp.sum((theta[1:] - theta[:-1]) ** 2) - 0.5 * jnp.sum(theta**2)

    with pytest.raises(ValueError, match="not separable"):
        latent_gaussian_log_marginal(coupled, se_cov(0.3, 1.0), ZEROS)
    v, info = jax.jit(lambda K: latent_gaussian_log_marginal(coupled, K, ZEROS, full_output=True))(
        se_cov(0.3, 1.0)
    )
    assert np.isnan(v) and not bool(info.converged)


# --------------------------------------------------------------------------------- draws


@jax.jit
def gauss_posterior_exact(h):
    rho, alpha, sigma, mu = h
    K, m = se_cov(rho, alpha), gauss_mean(mu)
    S = K + sigma**2 * jnp.eye(N)
    return K, m, m + K @ jnp.linalg.solve(S, Y_REAL - m), K - K @ jnp.linalg.solve(S, K)


def test_latent_draws_gaussian_exact_posterior():
    K, m, exact_mean, exact_cov = gauss_posterior_exact(H_GAUSS)
    draws, post = laplace_latent_draws(
        jax.random.key(3),
        gaussian(Y_REAL),
        K,
        ZEROS,
        H_GAUSS[2],
        mean=m,
        num_draws=4000,
        full_output=True,
    )
    assert bool(post.info.converged)
    np.testing.assert_allclose(post.mean, exact_mean, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(post.cov, exact_cov, rtol=1e-8, atol=1e-10)
    draws, exact_mean, exact_cov = np.asarray(draws), np.asarray(exact_mean), np.asarray(exact_cov)
    assert draws.shape == (4000, N)
    sd = np.sqrt(np.diag(exact_cov))
    assert np.all(np.abs(draws.mean(0) - exact_mean) < 4.5 * sd / np.sqrt(4000))
    np.testing.assert_allclose(np.cov(draws.T), exact_cov, atol=0.1 * float(sd.max()) ** 2)


# ---------------------------------------------------------------------------- bad input


def test_bad_input_errors():
    K = se_cov(0.3, 1.0)
    ll = poisson(Y_COUNTS)
    f = latent_gaussian_log_marginal
    with pytest.raises(ValueError, match="square"):
        f(ll, K[:, :-1], ZEROS)
    with pytest.raises(ValueError, match="matching theta0"):
        f(ll, K, jnp.zeros(N + 1))
    with pytest.raises(ValueError, match="1-D"):
        f(ll, K, jnp.zeros((N, 1)))
    with pytest.raises(ValueError, match="mean"):
        f(ll, K, ZEROS, mean=jnp.zeros(N - 1))
    with pytest.raises(TypeError, match="floating"):
        f(ll, K, jnp.zeros(N, int))
    with pytest.raises(TypeError, match="floating"):
        f(ll, K.astype(int), ZEROS)
    with pytest.raises(ValueError, match="per-observation"):
        f(lambda t: jnp.concatenate([t, t]), K, ZEROS)
    with pytest.raises(ValueError, match="per-observation"):
        f(lambda t: (t > 0).astype(int), K, ZEROS)
    with pytest.raises(TypeError, match="callable"):
        f("poisson", K, ZEROS)
    with pytest.raises(TypeError, match="Newton"):
        f(ll, K, ZEROS, solver=mcg.solvers.LBFGS())
    with pytest.raises(ValueError, match="on_failure"):
        f(ll, K, ZEROS, on_failure="ignore")
    with pytest.raises(TypeError, match="num_draws"):
        laplace_latent_draws(jax.random.key(0), ll, K, ZEROS, num_draws=2.0)
    with pytest.raises(ValueError, match="counts"):
        poisson(jnp.array([1.0, -2.0]))
    with pytest.raises(ValueError, match="0 and 1"):
        bernoulli(jnp.array([0, 2]))
    with pytest.raises(ValueError, match="real scalar"):
        laplace_log_marginal(lambda t: t, ZEROS)


# ------------------------------------------------------------------------------ blackjax


def test_agrees_with_converged_blackjax_laplace_marginal():
    from blackjax.mcmc.laplace_marginal import laplace_marginal_factory

    n = 20
    x = jnp.linspace(0.0, 1.0, n)
    y = jnp.array([1, 0, 2, 3, 1, 4, 6, 5, 3, 2, 2, 1, 0, 1, 3, 4, 2, 5, 7, 4])
    ll = poisson(y)

    def cov(phi):
        return se_cov(phi[0], phi[1], x=x, jitter=1e-4)

    def log_joint(theta, phi):
        return jnp.sum(ll(theta)) + multivariate_normal.logpdf(theta, jnp.zeros(n), cov(phi))

    phi = jnp.array([0.3, 1.2])
    bj = laplace_marginal_factory(log_joint, jnp.zeros(n), maxiter=2000, gtol=1e-10, ftol=0.0)
    lp_bj, _ = jax.jit(bj)(phi)
    lp = latent_gaussian_log_marginal(ll, cov(phi), jnp.zeros(n))
    np.testing.assert_allclose(lp, lp_bj, rtol=1e-6)
