"""mcg.Model.from_numpyro: NumPyro models in (mcmc_customgrad/logdensity/numpyro.py).

The density is NumPyro's, so the oracle is NumPyro itself: ``model.logdensity(u)`` must
equal ``-potential_energy`` at the same unconstrained point, site by site the constrained
values must equal NumPyro's ``constrain_fn``, and the pointwise log-likelihood NumPyro's
``log_likelihood``. Then sampling: a Normal-inverse-gamma model (closed-form posterior)
whose scale comes from an inner ``mcg.root`` solve is sampled by ``mcg.sample`` and by
NumPyro's own NUTS; the first must recover the closed form and the two must agree by
``mcg.compare_chains`` (a short run here, 4 x 2,500 draws in the slow tier).
"""

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

numpyro = pytest.importorskip("numpyro")
import numpyro.distributions as dist  # noqa: E402
from numpyro.distributions import constraints as C  # noqa: E402
from numpyro.infer import MCMC, NUTS  # noqa: E402
from numpyro.infer.util import constrain_fn, log_likelihood, potential_energy  # noqa: E402

import mcmc_customgrad as mcg  # noqa: E402
from mcmc_customgrad.logdensity.numpyro import (  # noqa: E402
    MCMC_EXTRA_FIELDS,
    NumPyroModel,
    NumPyroSupport,
    mcmc_to_inference_data,
)

# ----------------------------------------------------------------------------- models

Y = jnp.array([0.4, -1.1, 2.3, 0.8, 1.7])


def zoo(y, shift=0.0):
    """One latent site per kind of support, two observed sites, a factor, a deterministic."""
    mu = numpyro.sample("mu", dist.Normal(shift, 1.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    numpyro.sample("p", dist.Beta(2.0, 3.0))
    numpyro.sample("angle", dist.VonMises(0.0, 2.0))  # circular: interval(-pi, pi)
    numpyro.sample("width", dist.Uniform(-1.0, jnp.array([1.0, 2.0])))  # bounds by element
    cuts = numpyro.sample("cuts", dist.ImproperUniform(C.ordered_vector, (), (3,)))
    numpyro.sample("floor", dist.Pareto(1.0, 3.0))  # greater_than(1)
    with numpyro.plate("groups", 3):
        rate = numpyro.sample("rate", dist.Gamma(2.0, 2.0))
    z = numpyro.sample("z", dist.MultivariateNormal(jnp.zeros(2), jnp.eye(2)))
    numpyro.factor("cuts_prior", -0.5 * jnp.sum(cuts**2))  # makes the ordered site proper
    numpyro.deterministic("total_rate", rate.sum())
    with numpyro.plate("obs", y.shape[0]):
        numpyro.sample("y", dist.Normal(mu + z[0], sigma), obs=y)
    numpyro.sample("count", dist.Poisson(rate.sum()), obs=jnp.array([2, 5]))


ZOO_KW = {"shift": 0.3}


def flat_to_sites(model, u):
    """The flat vector -> ``{site: unconstrained value}``, as NumPyro's functions take it."""
    out, start = {}, 0
    for name, c in model.constraints.items():
        out[name] = u[start : start + c.size].reshape(c.shape)
        start += c.size
    return out


@pytest.fixture(scope="module")
def zoo_model():
    return mcg.Model.from_numpyro(zoo, Y, **ZOO_KW)


@pytest.fixture(scope="module")
def points(zoo_model):
    return jax.random.uniform(jax.random.key(0), (6, zoo_model.dim), minval=-2.5, maxval=2.5)


# ------------------------------------------------------------------- layout and density


def test_names_shapes_and_constraints(zoo_model):
    m = zoo_model
    assert isinstance(m, mcg.Model) and isinstance(m, NumPyroModel)
    assert m.names == ("mu", "sigma", "p", "angle", "width", "cuts", "floor", "rate", "z")
    c = m.constraints
    assert c["mu"] == mcg.real()
    assert c["sigma"] == mcg.positive()
    assert c["p"] == mcg.interval(0.0, 1.0)
    assert c["angle"] == mcg.interval(-np.pi, np.pi)
    assert c["rate"] == mcg.positive(shape=(3,))
    assert c["z"] == mcg.real(shape=(2,))
    for name, shape in (("width", (2,)), ("cuts", (3,)), ("floor", ())):
        assert isinstance(c[name], NumPyroSupport) and c[name].shape == shape, name
    assert m.dim == 1 + 1 + 1 + 1 + 2 + 3 + 1 + 3 + 2
    assert m.observed == ("y", "count") and m.deterministic == ("total_rate",)
    x = jax.eval_shape(m.to_constrained, jnp.zeros(m.dim))
    assert {n: x[n].shape for n in m.names} == {n: c[n].shape for n in m.names}


def test_logdensity_and_gradient_equal_numpyro_potential_energy(zoo_model, points):
    m = zoo_model

    def numpyro_logdensity(u):
        return -potential_energy(zoo, (Y,), ZOO_KW, flat_to_sites(m, u))

    def both(u):  # one compiled program for everything compared
        x_ours, x_theirs = m.to_constrained(u), constrain_fn(zoo, (Y,), ZOO_KW, flat_to_sites(m, u))
        return (
            jax.value_and_grad(m.logdensity)(u),
            jax.value_and_grad(numpyro_logdensity)(u),
            (x_ours, {n: x_theirs[n] for n in m.names}),
            m.to_unconstrained(x_ours),
        )

    ours, theirs, (x_ours, x_theirs), round_trip = jax.jit(jax.vmap(both))(points)
    assert np.all(np.isfinite(ours[0])) and np.all(np.isfinite(ours[1]))
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-10, atol=1e-10)  # value
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-10, atol=1e-10)  # gradient
    # The unconstrained coordinates are NumPyro's: same constrained values, site by site.
    for name in m.names:
        np.testing.assert_allclose(x_ours[name], x_theirs[name], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(round_trip, points, atol=1e-10)


def test_generic_supports_are_checked():
    def model():
        numpyro.sample("cuts", dist.ImproperUniform(C.ordered_vector, (), (3,)))
        numpyro.sample("floor", dist.Pareto(1.0, 3.0))

    m = mcg.Model.from_numpyro(model)
    good = {"cuts": jnp.array([-1.0, 0.0, 2.0]), "floor": jnp.array(1.5)}
    np.testing.assert_allclose(m.to_constrained(m.to_unconstrained(good))["cuts"], good["cuts"])
    with pytest.raises(ValueError, match="outside the support"):
        m.to_unconstrained({**good, "cuts": jnp.array([1.0, 0.0, 2.0])})  # not ordered
    with pytest.raises(ValueError, match="outside the support"):
        m.to_unconstrained({**good, "floor": jnp.array(0.5)})  # below Pareto's scale 1


def test_log_likelihood_is_numpyros_without_factors(zoo_model, points):
    m = zoo_model

    def both(points):  # NumPyro's log_likelihood with batch_ndims=1: one row per point
        x = jax.vmap(m.to_constrained)(points)
        return jax.vmap(m.log_likelihood)(points), log_likelihood(zoo, x, Y, **ZOO_KW)

    ll, theirs = jax.jit(both)(points)
    assert ll.shape == (len(points), Y.shape[0] + 2)  # 5 normal + 2 Poisson observations
    assert set(theirs) == {"y", "count", "cuts_prior"}  # NumPyro lists factor sites too
    np.testing.assert_allclose(ll, np.concatenate([theirs["y"], theirs["count"]], axis=1))


def test_no_observed_site_means_no_log_likelihood():
    def prior_only():
        numpyro.sample("x", dist.Normal(0.0, 1.0))
        numpyro.factor("tilt", 0.0)

    m = mcg.Model.from_numpyro(prior_only)
    assert m.log_likelihood_fn is None and m.observed == ()


def test_deterministic_sites(zoo_model):
    x = zoo_model.to_constrained(jnp.zeros(zoo_model.dim))
    out = jax.jit(zoo_model.deterministics)(x, jax.random.key(1))
    assert set(out) == {"total_rate"}
    np.testing.assert_allclose(out["total_rate"], jnp.sum(x["rate"]))


def test_arguments_are_bound_at_conversion():
    def model(y, prior_scale=1.0):
        mu = numpyro.sample("mu", dist.Normal(0.0, prior_scale))
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    y = np.array([1.0, 2.0])
    m1 = mcg.Model.from_numpyro(model, y, prior_scale=10.0)
    m2 = mcg.Model.from_numpyro(model, y)
    y[:] = 100.0  # the caller's array changes; the converted model does not
    assert m1.model_args[0].tolist() == [1.0, 2.0] and m1.model_kwargs == {"prior_scale": 10.0}
    u = jnp.array([0.7])
    pe = jax.jit(
        lambda u, s: potential_energy(model, (jnp.array([1.0, 2.0]),), {"prior_scale": s}, u)
    )
    values = jax.jit(lambda u: (m1.logdensity(u), m2.logdensity(u)))(u)
    assert float(values[0]) == pytest.approx(-float(pe({"mu": u[0]}, 10.0)), rel=1e-12)
    assert float(values[1]) == pytest.approx(-float(pe({"mu": u[0]}, 1.0)), rel=1e-12)


# ------------------------------------------------------------------- what is unsupported


def _discrete():
    numpyro.sample("k", dist.Poisson(3.0))
    numpyro.sample("x", dist.Normal(0.0, 1.0))


def _subsampled():
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    with numpyro.plate("data", 100, subsample_size=10):
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=jnp.zeros(10))


def _no_latent():
    numpyro.sample("y", dist.Normal(0.0, 1.0), obs=0.5)
    numpyro.factor("extra", -1.0)


def _simplex():
    numpyro.sample("w", dist.Dirichlet(jnp.ones(3)))


def _corr_cholesky():
    numpyro.sample("L", dist.LKJCholesky(3, 2.0))


def _dynamic():
    theta = numpyro.sample("theta", dist.Exponential(1.0))
    numpyro.sample("x", dist.Uniform(0.0, theta))


def _param():
    loc = numpyro.param("loc", 0.0)
    numpyro.sample("x", dist.Normal(loc, 1.0))


def _delta():
    numpyro.sample("x", dist.Delta(1.0))


@pytest.mark.parametrize(
    "model_fn, error, words",
    [
        (_discrete, NotImplementedError, ["'k' is discrete", "Poisson", "marginalise"]),
        (_subsampled, NotImplementedError, ["plate 'data'", "subsamples 10 of 100"]),
        (_no_latent, ValueError, ["no latent sample site", "nothing to sample"]),
        (_simplex, NotImplementedError, ["'w'", "Simplex", "(2,) to shape (3,)", "Gamma"]),
        (_corr_cholesky, NotImplementedError, ["'L'", "CorrCholesky", "one shape"]),
        (_dynamic, NotImplementedError, ["['x']", "depends on other latent", "Uniform(0, 1)"]),
        (_param, NotImplementedError, ["'loc' is a numpyro.param", "give it a prior"]),
        (_delta, ValueError, ["['x']", "Delta", "numpyro.deterministic"]),
    ],
    ids=lambda v: v.__name__.strip("_") if callable(v) else None,
)
def test_unsupported_models_raise_clear_errors(model_fn, error, words):
    with pytest.raises(error) as info:
        mcg.Model.from_numpyro(model_fn)
    message = str(info.value)
    assert message.startswith("Model.from_numpyro:")
    for word in words:
        assert word in message, (word, message)


def test_dynamic_support_detection_ignores_constant_bounds():
    def model(hi):  # the bound is data, computed inside the model: a fixed support
        numpyro.sample("x", dist.Uniform(0.0, 2.0 * jnp.asarray(hi)))

    m = mcg.Model.from_numpyro(model, 1.5)
    assert m.constraints["x"] == mcg.interval(0.0, 3.0)


def test_not_a_model_and_missing_numpyro(monkeypatch):
    with pytest.raises(TypeError, match="model_fn must be a NumPyro model"):
        mcg.Model.from_numpyro("model")
    monkeypatch.setitem(sys.modules, "numpyro", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"pip install 'mcmc_customgrad\[numpyro\]'"):
        mcg.Model.from_numpyro(_simplex)


# ----------------------------------------------------------------------------- sampling

# Normal-inverse-gamma: sigma2 ~ InvGamma(A0, B0), mu | sigma2 ~ N(M0, sigma2 / K0),
# y_i ~ N(mu, sigma2). The scale sigma = sqrt(sigma2) comes from an inner Newton solve
# (mcg.root of s^2 - sigma2 = 0, implicit-function-theorem gradient).
A0, B0, M0, K0 = 3.0, 2.0, 0.0, 0.5
Y_NIG = jnp.array([1.3, 0.2, 2.1, 1.7, 0.9, 1.1, 2.6, 0.4, 1.5, 1.0])


def nig(y):
    sigma2 = numpyro.sample("sigma2", dist.InverseGamma(A0, B0))
    sigma = numpyro.deterministic("sigma", mcg.root(lambda s, v: s * s - v, 1.0, sigma2))
    mu = numpyro.sample("mu", dist.Normal(M0, sigma / jnp.sqrt(K0)))
    with numpyro.plate("obs", y.shape[0]):
        numpyro.sample("y", dist.Normal(mu, sigma), obs=y)


def nig_posterior(y):
    """Closed-form posterior moments: mu (Student t) and sigma2 (inverse gamma)."""
    y = np.asarray(y)
    n, ybar = y.size, y.mean()
    kn, an = K0 + n, A0 + n / 2
    mn = (K0 * M0 + n * ybar) / kn
    bn = B0 + 0.5 * np.sum((y - ybar) ** 2) + K0 * n * (ybar - M0) ** 2 / (2 * kn)
    sigma2 = stats.invgamma(an, scale=bn)
    return {
        "mu": (mn, np.sqrt(bn / (kn * (an - 1)))),
        "sigma2": (sigma2.mean(), sigma2.std()),
    }


def run_both(num_warmup, num_samples, seed=0, warn=True):
    """The NIG model by mcg.sample and by NumPyro's NUTS (4 chains each), with timings."""
    model = mcg.Model.from_numpyro(nig, Y_NIG)
    start = time.perf_counter()
    ours = mcg.sample(
        model,
        num_chains=4,
        num_warmup=num_warmup,
        num_samples=num_samples,
        seed=seed,
        generated_quantities=model.deterministics,
        warn=warn,
        chain_method="sequential",  # one chain at a time: compiles a fifth faster than vmap
    )
    seconds = {"mcg": time.perf_counter() - start}
    start = time.perf_counter()
    mcmc = MCMC(
        NUTS(nig),
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=4,
        chain_method="sequential",  # the default, "parallel", warns on one device
        progress_bar=False,
    )
    mcmc.run(jax.random.key(seed + 1), Y_NIG, extra_fields=MCMC_EXTRA_FIELDS)
    theirs = mcmc_to_inference_data(mcmc)
    seconds["numpyro"] = time.perf_counter() - start
    return ours, theirs, seconds


def assert_recovers_closed_form(idata, z_max=4.0):
    """Posterior mean and sd of mu and sigma2 within z_max Monte Carlo errors of the truth."""
    summary = mcg.diagnostics.summary(idata, var_names=["mu", "sigma2"])
    z = {}
    for name, (mean, sd) in nig_posterior(Y_NIG).items():
        row = summary.loc[name]
        z[name] = ((row["mean"] - mean) / row["mcse_mean"], (row["sd"] - sd) / row["mcse_sd"])
        assert abs(z[name][0]) < z_max and abs(z[name][1]) < z_max, (name, row, mean, sd)
    return z


@pytest.fixture(scope="module")
def short_runs():
    # A smoke run: sample's R-hat warning (1.01, for 4 x 2,500 draws) is left to the
    # lowered thresholds of the short comparison below.
    return run_both(num_warmup=300, num_samples=400, warn=False)


def test_mcg_sample_recovers_the_closed_form_posterior(short_runs):
    idata, _, _ = short_runs
    posterior = idata.posterior
    assert posterior["mu"].shape == (4, 400) and posterior["sigma2"].shape == (4, 400)
    np.testing.assert_allclose(posterior["sigma"] ** 2, posterior["sigma2"], rtol=1e-9)
    assert idata.log_likelihood["obs"].shape == (4, 400, Y_NIG.size)
    stats_ = idata.sample_stats
    assert int(stats_["diverging"].sum()) == 0
    assert bool(stats_["solver_converged"].all())  # the inner solve, at every draw
    assert_recovers_closed_form(idata)


def test_log_likelihood_group_matches_numpyro(short_runs):
    idata, _, _ = short_runs
    draws = {n: jnp.asarray(idata.posterior[n].values) for n in ("mu", "sigma2")}
    theirs = jax.jit(lambda d: log_likelihood(nig, d, Y_NIG, batch_ndims=2)["y"])(draws)
    np.testing.assert_allclose(idata.log_likelihood["obs"].values, theirs, rtol=1e-12)


def test_mcg_and_numpyro_nuts_agree_short_run(short_runs):
    # A smoke run: the protocol's 4 x 2,500 draws are in the slow test below.
    ours, theirs, _ = short_runs
    assert set(theirs.posterior.data_vars) == {"mu", "sigma2", "sigma"}
    assert theirs.attrs["num_grad_evals"] > 0
    report = mcg.compare_chains(
        ours, theirs, min_draws=400, min_ess=150, rhat_max=1.02, names=("mcg", "numpyro")
    )
    assert report.passed, report.failures


@pytest.mark.slow
def test_mcg_and_numpyro_nuts_agree_full_protocol():
    """4 x 2,500 draws each after 1,000 warmup steps, compare_chains' defaults."""
    ours, theirs, seconds = run_both(num_warmup=1000, num_samples=2500, seed=3)
    report = mcg.compare_chains(ours, theirs, names=("mcg", "numpyro"))
    print(report.verdict)
    print(report.table)
    print(report.efficiency_table)
    print(f"efficiency passed: {report.efficiency_passed}; wall seconds: {seconds}")
    print(f"closed form (mean, sd): {nig_posterior(Y_NIG)}")
    assert report.passed, report.failures
    for name, idata in (("mcg", ours), ("numpyro", theirs)):
        z = assert_recovers_closed_form(idata)
        print(f"{name}: z-scores (mean, sd) against the closed form: {z}")
