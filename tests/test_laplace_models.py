"""Library models built on the embedded Laplace approximation: eight schools, latent GP.

Compile time dominates on CPU: each check batches its points into one jitted ``vmap``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.linalg import solve_triangular
from jax.scipy.special import logsumexp

from mcmc_customgrad.models._base import Example
from mcmc_customgrad.models.eight_schools import eight_schools
from mcmc_customgrad.models.latent_gp import (
    latent_gp_poisson,
    latent_gp_poisson_latents,
    se_kernel,
)

SCHOOLS = eight_schools()
GP = latent_gp_poisson()  # the defaults: 30 counts, seed 0
NUM_DRAWS = 4000  # of the latent field per (rho, alpha), shared so that _sample compiles once


def vg(density):
    return jax.jit(jax.vmap(jax.value_and_grad(density)))


# --------------------------------------------------------------------------- eight schools


def school_points():
    u = jax.random.uniform(jax.random.key(3), (12, 2), minval=-3.0, maxval=3.0)
    extremes = jnp.array([[0.0, -8.0], [25.0, 5.0], [-10.0, 0.0], [4.0, 1.1]])  # tiny/huge tau
    return jnp.concatenate([u, extremes])


def test_eight_schools_matches_the_closed_form():
    model, reference, _ = SCHOOLS
    assert model.names == reference.names == ("mu", "tau") and model.dim == reference.dim == 2
    u = school_points()
    (v, g), (v_ref, g_ref) = vg(model.logdensity)(u), vg(reference.logdensity)(u)
    assert np.all(np.isfinite(v_ref))
    np.testing.assert_allclose(v, v_ref, rtol=1e-8)
    for i in range(u.shape[0]):
        scale = float(jnp.max(jnp.abs(g_ref[i])))
        np.testing.assert_allclose(g[i], g_ref[i], rtol=1e-8, atol=1e-8 * scale)
    # The per-school log-likelihoods: one one-dimensional Laplace marginal each (vmap).
    ll, ll_ref = jax.jit(model.log_likelihood)(u[-1]), reference.log_likelihood(u[-1])
    assert ll.shape == (8,)
    np.testing.assert_allclose(ll, ll_ref, rtol=1e-8)


def test_eight_schools_hessian():
    model, reference, _ = SCHOOLS
    u = jnp.array([3.0, 1.5])
    H = jax.jit(jax.hessian(model.logdensity))(u)
    H_ref = jax.jit(jax.hessian(reference.logdensity))(u)
    np.testing.assert_allclose(H, H_ref, rtol=1e-7, atol=1e-9 * float(jnp.max(jnp.abs(H_ref))))


def test_eight_schools_data():
    _, _, data = SCHOOLS
    assert set(data) == {"y", "sigma"}
    np.testing.assert_array_equal(data["y"], [28, 8, -3, 7, -1, 1, 18, 12])
    np.testing.assert_array_equal(data["sigma"], [15, 10, 16, 11, 9, 11, 10, 18])
    np.testing.assert_array_equal(eight_schools(seed=5).data["y"], data["y"])


# ---------------------------------------------------------------------------- latent GP


def gp_points():
    # The truth and sampler-like starts (uniform on (-2, 2) in log rho, log alpha).
    model, _, data = GP
    u = jax.random.uniform(jax.random.key(11), (3, 2), minval=-2.0, maxval=2.0)
    return jnp.concatenate([model.to_unconstrained(data["truth"])[None], u])


def test_latent_gp_gradient_matches_finite_differences():
    model, _, _ = GP
    u = gp_points()
    eps = 1e-5
    steps = eps * jnp.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    shifted = (u[:, None, :] + steps[None]).reshape(-1, 2)
    v, g = vg(model.logdensity)(jnp.concatenate([u, shifted]))  # one compiled program
    assert np.all(np.isfinite(v)) and np.all(np.isfinite(g))
    vs = np.asarray(v[u.shape[0] :]).reshape(-1, 4)
    fd = np.stack([vs[:, 0] - vs[:, 1], vs[:, 2] - vs[:, 3]], axis=1) / (2 * eps)
    g = np.asarray(g[: u.shape[0]])
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-6 * np.max(np.abs(fd)))


def test_latent_gp_layouts():
    model, reference, data = GP
    n = data["y"].shape[0]
    assert model.names == ("rho", "alpha") and model.dim == 2
    assert reference.names == ("rho", "alpha", "eta") and reference.dim == 2 + n
    assert set(data) == {"x", "y", "f", "truth"} and set(data["truth"]) == {"rho", "alpha"}
    assert data["x"].shape == data["y"].shape == data["f"].shape == (30,)
    assert np.all(np.diff(np.asarray(data["x"])) >= 0)
    assert np.all((data["x"] >= 0) & (data["x"] <= 10))
    assert jnp.issubdtype(data["y"].dtype, jnp.integer) and np.all(data["y"] >= 0)


def test_latent_gp_model_is_the_laplace_marginal_of_the_reference():
    # exp(model(u)) ~ ∫ exp(reference(u, eta)) d eta, by importance sampling with the
    # Laplace Gaussian of eta (the same approximation, in the whitened coordinates).
    model, reference, data = GP
    u = model.to_unconstrained(data["truth"])
    rho, alpha = data["truth"]["rho"], data["truth"]["alpha"]
    key = jax.random.key(0)
    _, post = latent_gp_poisson_latents(data, rho, alpha, key, NUM_DRAWS, full_output=True)
    num = 2000

    @jax.jit
    def estimate(u, f_mode, key):
        L = jnp.linalg.cholesky(se_kernel(data["x"], *jnp.exp(u)))
        eta_mode = solve_triangular(L, f_mode, lower=True)
        n = eta_mode.shape[0]
        precision = jnp.eye(n) + L.T @ (jnp.exp(f_mode)[:, None] * L)  # W = exp(f): Poisson
        C = jnp.linalg.cholesky(precision)
        z = jax.random.normal(key, (num, n))
        eta = eta_mode + solve_triangular(C.T, z.T, lower=False).T
        log_q = jnp.sum(jax.scipy.stats.norm.logpdf(z), axis=1) + jnp.sum(jnp.log(jnp.diag(C)))
        flat = jnp.concatenate([jnp.broadcast_to(u, (num, 2)), eta], axis=1)
        log_w = jax.vmap(reference.logdensity)(flat) - log_q
        return logsumexp(log_w) - np.log(num), model.logdensity(u)

    exact, lp = estimate(u, post.mean, jax.random.key(1))
    assert np.isfinite(lp)
    # The Laplace error here is 0.016 nats (10^5 draws); 2000-draw estimates scatter ~0.01.
    assert abs(float(exact - lp)) < 0.1


def test_latent_draws():
    _, _, data = GP
    n = data["y"].shape[0]
    key = jax.random.key(2)
    rho, alpha = jnp.array([[1.5, 2.5]]), jnp.array(1.2)  # 1 chain x 2 draws
    f = latent_gp_poisson_latents(GP, rho, alpha, key, num_draws=3)
    assert f.shape == (1, 2, 3, n) and np.all(np.isfinite(f))
    np.testing.assert_array_equal(f, latent_gp_poisson_latents(data, rho, alpha, key, 3))

    num = NUM_DRAWS
    f, post = latent_gp_poisson_latents(data, 2.0, 1.0, key, num_draws=num, full_output=True)
    assert f.shape == (num, n) and post.mean.shape == (n,) and post.cov.shape == (n, n)
    assert bool(post.info.converged)
    # The mode is stationary: f* = K grad ll(f*) = K (y - exp(f*)).
    K = se_kernel(data["x"], 2.0, 1.0)
    np.testing.assert_allclose(post.mean, K @ (data["y"] - jnp.exp(post.mean)), atol=1e-8)
    # The draws' mean is the mode, up to Monte Carlo error.
    sd = jnp.sqrt(jnp.diagonal(post.cov))
    assert np.all(np.abs(f.mean(0) - post.mean) < 4.5 * sd / np.sqrt(num))
    np.testing.assert_allclose(f.std(0), sd, rtol=0.1)


def test_latent_gp_data_are_seeded():
    a, b, c = (latent_gp_poisson(num_obs=6, seed=s).data for s in (1, 1, 2))
    for k in ("x", "y", "f"):
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.allclose(a["x"], c["x"])
    assert isinstance(latent_gp_poisson(num_obs=2), Example)


@pytest.mark.parametrize("num_obs", [1, 0, -3, 2.5, True, "30"])
def test_latent_gp_bad_num_obs(num_obs):
    with pytest.raises(ValueError, match="num_obs must be an integer >= 2"):
        latent_gp_poisson(num_obs=num_obs)


def test_bad_arguments():
    with pytest.raises(ValueError, match="seed must be an integer"):
        latent_gp_poisson(seed=1.5)
    with pytest.raises(ValueError, match="seed must be an integer"):
        eight_schools(seed="0")
    _, _, data = GP
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="num_draws must be an integer >= 1"):
        latent_gp_poisson_latents(data, 2.0, 1.0, key, num_draws=0)
    with pytest.raises(ValueError, match="what latent_gp_poisson returned"):
        latent_gp_poisson_latents({"x": data["x"]}, 2.0, 1.0, key)
    with pytest.raises(ValueError, match="what latent_gp_poisson returned"):
        latent_gp_poisson_latents(SCHOOLS, 2.0, 1.0, key)
    with pytest.raises(ValueError, match="same length"):
        latent_gp_poisson_latents({"x": data["x"][:5], "y": data["y"]}, 2.0, 1.0, key)
    with pytest.raises(TypeError, match="full_output"):
        latent_gp_poisson_latents(data, 2.0, 1.0, key, full_output=1)
