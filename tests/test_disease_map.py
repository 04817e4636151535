"""The BYM2 disease map (mcg.models.disease_map*): the sparse embedded Laplace as a model.

The Gaussian member against its closed form is in test_models.py (every library model
against its reference); here: the Poisson member against its full joint reference, the
latent draws, the data and the argument checks. The NUTS comparison of the Poisson member
with its full joint (4 x 2,500 draws each) is examples/disease_map.py, run in CI's slow
tier through test_examples_laplace.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.special import logsumexp
from jax.scipy.stats import multivariate_normal

import mcmc_customgrad as mcg
from mcmc_customgrad.models.disease_map import _structured, lattice_edges

POISSON = mcg.models.disease_map()  # the defaults: an 8 x 8 lattice, seed 0
GAUSSIAN = mcg.models.disease_map_gaussian(rows=4, cols=5)
N = 64


def test_data_and_layouts():
    model, reference, data = POISSON
    assert model.names == ("mu", "sigma", "phi") and model.dim == 3
    assert reference.names == ("mu", "sigma", "phi", "v", "eta") and reference.dim == 3 + N + N - 1
    assert data["y"].shape == data["expected"].shape == data["b"].shape == (N,)
    assert jnp.issubdtype(data["y"].dtype, jnp.integer) and np.all(data["y"] >= 0)
    assert np.all((data["expected"] >= 5) & (data["expected"] <= 50))
    assert data["likelihood"] == "poisson" and set(data["truth"]) == {"mu", "sigma", "phi"}
    assert data["edges"].shape == (2 * 8 * 7, 2)
    g = GAUSSIAN.data
    assert g["likelihood"] == "gaussian" and g["se"].shape == (20,)
    np.testing.assert_allclose(g["se"], 1 / np.sqrt(g["expected"]))
    a, b, c = (mcg.models.disease_map(3, 3, seed=s).data["y"] for s in (1, 1, 2))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_lattice_edges():
    edges = lattice_edges(2, 3)
    assert sorted(map(tuple, edges.tolist())) == [
        (0, 1),
        (0, 3),
        (1, 2),
        (1, 4),
        (2, 5),
        (3, 4),
        (4, 5),
    ]
    with pytest.raises(ValueError, match="rows must be an integer >= 1"):
        lattice_edges(0, 3)
    with pytest.raises(ValueError, match="needs two areas"):
        lattice_edges(1, 1)


def test_the_structured_square_root_is_the_constrained_covariance():
    S, B = _structured(lattice_edges(3, 4))
    np.testing.assert_allclose(B @ B.T, S, atol=1e-12)
    assert B.shape == (12, 11)
    np.testing.assert_allclose(B.sum(axis=0), 0, atol=1e-12)  # u = B eta sums to zero
    np.testing.assert_allclose(np.exp(np.mean(np.log(np.diag(S)))), 1.0, rtol=1e-12)


def test_the_model_is_the_laplace_marginal_of_the_full_joint():
    # exp(model(u)) ~ integral of exp(reference(u, z)) dz over z = (v, eta), estimated by
    # importance sampling from the Laplace Gaussian of z (dense: the 127 coordinates).
    model, reference, data = POISSON
    truth = data["truth"]
    u = model.to_unconstrained(truth)
    mu, sigma, phi = (float(truth[k]) for k in ("mu", "sigma", "phi"))
    _, post = mcg.models.disease_map_latents(POISSON, mu, sigma, phi, jax.random.key(0), 1, True)
    _, B = _structured(data["edges"])
    k = B.shape[1]
    T = np.zeros((2 * N, N + k))  # (v, eta) -> (b, u)
    T[:N, :N] = sigma * np.sqrt(1 - phi) * np.eye(N)
    T[:N, N:] = sigma * np.sqrt(phi) * B
    T[N:, N:] = B
    x_mode = np.asarray(post.mean)  # the Laplace mean of (b, u)
    z_mode = np.linalg.lstsq(T, x_mode, rcond=None)[0]
    np.testing.assert_allclose(T @ z_mode, x_mode, atol=1e-10)  # the mode is on the subspace
    W = np.asarray(data["expected"]) * np.exp(mu + x_mode[:N])
    L = np.linalg.cholesky(np.eye(N + k) + T[:N].T @ (W[:, None] * T[:N]))
    num = 4000
    eps = np.asarray(jax.random.normal(jax.random.key(1), (num, N + k)))
    z = z_mode + np.linalg.solve(L.T, eps.T).T
    log_q = multivariate_normal.logpdf(eps, np.zeros(N + k), np.eye(N + k)) + np.sum(
        np.log(np.diag(L))
    )
    flat = jnp.concatenate([jnp.broadcast_to(u, (num, 3)), jnp.asarray(z)], axis=1)
    log_w = jax.jit(jax.vmap(reference.logdensity))(flat) - log_q
    exact = float(logsumexp(log_w) - np.log(num))
    laplace = float(jax.jit(model.logdensity)(u))
    # The Laplace error at the truth is 0.041 nats (2 x 10^4 draws); 4,000-draw
    # estimates scatter by about 0.01.
    assert 0.0 < exact - laplace < 0.1, (exact, laplace)


def test_latent_draws_follow_the_exact_posterior_in_the_gaussian_member():
    data = GAUSSIAN.data
    n = 20
    mu, sigma, phi = 0.2, 0.7, 0.6
    num = 3000
    b, post = mcg.models.disease_map_latents(GAUSSIAN, mu, sigma, phi, jax.random.key(3), num, True)
    assert b.shape == (num, n) and post.mean.shape == (2 * n,) and bool(post.info.converged)
    S, _ = _structured(data["edges"])
    prior = sigma**2 * ((1 - phi) * np.eye(n) + phi * S)
    noise = np.diag(np.asarray(data["se"]) ** 2)
    gain = prior @ np.linalg.inv(prior + noise)
    mean = gain @ (np.asarray(data["y"]) - mu)
    cov = prior - gain @ prior
    np.testing.assert_allclose(post.mean[:n], mean, atol=1e-9)
    np.testing.assert_allclose(post.variance[:n], np.diag(cov), rtol=1e-9)
    sd = np.sqrt(np.diag(cov))
    assert np.all(np.abs(np.asarray(b).mean(0) - mean) < 4.5 * sd / np.sqrt(num))
    np.testing.assert_allclose(np.asarray(b).std(0), sd, rtol=0.1)


@pytest.mark.slow  # a batched program of its own (~5 s); the draws are checked above
def test_latent_draws_batch_and_are_reproducible():
    key = jax.random.key(2)
    mu, sigma, phi = 0.1, jnp.array([[0.4, 0.6, 0.8]]), jnp.array(0.5)  # 1 chain x 3 draws
    b = mcg.models.disease_map_latents(POISSON, mu, sigma, phi, key, num_draws=2)
    assert b.shape == (1, 3, 2, N) and np.all(np.isfinite(b))
    np.testing.assert_array_equal(
        b, mcg.models.disease_map_latents(POISSON.data, mu, sigma, phi, key, 2)
    )


# A sampler run compiles for ~10 s: the slow tier (the fast tier draws the latents
# directly above; docs/laplace.md's example and examples/disease_map.py sample with them).
@pytest.mark.slow
def test_latent_draws_as_a_generated_quantity_of_sample():
    model, _, data = mcg.models.disease_map(3, 3)

    def gq(params, key):
        b = mcg.models.disease_map_latents(data, params["mu"], params["sigma"], params["phi"], key)
        return {"b": b[0]}

    run = mcg.sample(
        model,
        num_chains=2,
        num_warmup=30,
        num_samples=10,
        seed=1,
        warn=False,
        progress_bar=False,
        generated_quantities=gq,
    )
    assert run.posterior["b"].shape == (2, 10, 9) and np.all(np.isfinite(run.posterior["b"]))


def test_argument_checks():
    with pytest.raises(ValueError, match="rows must be an integer >= 2"):
        mcg.models.disease_map(rows=1)
    with pytest.raises(ValueError, match=r"more than 2500: the reference"):
        mcg.models.disease_map(rows=60, cols=50)
    with pytest.raises(ValueError, match="seed must be an integer"):
        mcg.models.disease_map_gaussian(seed=0.5)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="what disease_map or disease_map_gaussian returned"):
        mcg.models.disease_map_latents({"y": 1}, 0.0, 1.0, 0.5, key)
    with pytest.raises(ValueError, match="num_draws must be an integer >= 1"):
        mcg.models.disease_map_latents(POISSON, 0.0, 1.0, 0.5, key, num_draws=0)
    with pytest.raises(TypeError, match="full_output must be True or False"):
        mcg.models.disease_map_latents(POISSON, 0.0, 1.0, 0.5, key, full_output=1)
    bad = {**POISSON.data, "y": POISSON.data["y"][:10]}
    with pytest.raises(ValueError, match=r"must have shape \(64,\)"):
        mcg.models.disease_map_latents(bad, 0.0, 1.0, 0.5, key)
    with pytest.raises(ValueError, match="'poisson' or 'gaussian'"):
        mcg.models.disease_map_latents(
            {**POISSON.data, "likelihood": "binomial"}, 0.0, 1.0, 0.5, key
        )


def test_far_tails_are_nan_with_a_reason_never_a_crash():
    # Warmup's first proposals go far: a tiny sigma with phi near 1, a rate of e^-20,
    # phi beyond the BYM2 margin. Each is NaN (a rejected proposal), never CHOLMOD's
    # runtime error, which would stop the whole run.
    model = POISSON.model
    f = jax.jit(jax.value_and_grad(model.logdensity))
    points = jnp.array(
        [[0.0, -40.0, 10.0], [-20.0, -8.0, 0.0], [0.0, 0.0, 25.0], [0.0, -12.0, 18.0]]
    )
    for u in points:
        value, grad = f(u)
        assert np.isnan(float(value)) or np.all(np.isfinite(grad)), u
    assert np.isnan(float(f(points[2])[0]))  # logit(phi) = 25: beyond 1 - 1e-8
