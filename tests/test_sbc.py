"""Simulation-based calibration: a right density passes, a wrong one fails, bad input is caught.

The model: ``mu ~ N(0, I_2)``, ``y_i ~ N(mu, I_2)`` for ``i = 1..4``; the log-likelihood's
quadratic form comes out of an inner solve, ``-sum r^2 / 2 = min_z sum(z^2 / 2 - z r)``
(``mcg.min_value``, envelope-theorem gradient). Its posterior is ``N(sum y / 5, I / 5)``.

The miscalibrated version simulates the data with noise sd 2 but keeps the density (noise
sd 1): a likelihood scale error by a factor 2. The posterior is then too narrow and
centred too close to ``y``: the true ``mu`` sits ``(mu - m) / s ~ N(0, 1.84^2)`` posterior
sds from the posterior mean, so 37% of its ranks land in the outer 10% (against 10%),
and the log-likelihood of the noisier data at the truth falls below nearly every draw's.
At the 40 simulations run here, that fails the tests in every one of 200 replications
with exact posterior draws (``test_the_miscalibration_has_power``), while the right
posterior fails about 5% of them (the family-wise alpha). Both versions share the
density, so they share one compiled sampler.
"""

import importlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.stats import norm
from scipy import stats

import mcmc_customgrad as mcg
from mcmc_customgrad.diagnostics.calibration import (
    SBCProblem,
    SBCReport,
    _resolve_problem,
    _simulate_one,
    ecdf_bands,
    rank_chi_square,
    sbc,
    sbc_ranks,
)

sbc_module = importlib.import_module("mcmc_customgrad.diagnostics.calibration")

N_OBS, D = 4, 2
NUM_SIMULATIONS = 40
L = 49
SETTINGS = dict(num_draws=L, num_chains=2, num_warmup=150, num_samples=200, batch_size=40, seed=7)
PARAMS = {"mu": mcg.real(shape=(D,))}


def half_square(z, r):
    return jnp.sum(0.5 * z**2 - z * r)


def logdensity(params, data):
    r = data["y"] - params["mu"]
    quadratic = mcg.min_value(half_square, jnp.zeros_like(r), r)  # = -sum(r^2) / 2
    return jnp.sum(norm.logpdf(params["mu"])) + quadratic - 0.5 * r.size * math.log(2 * math.pi)


def log_likelihood(params, data):
    return jnp.sum(norm.logpdf(data["y"], params["mu"]), axis=-1)


def prior_sample(key):
    return {"mu": jax.random.normal(key, (D,))}


def simulate(key, params):
    return {"y": params["mu"] + jax.random.normal(key, (N_OBS, D))}


def simulate_too_noisy(key, params):
    return {"y": params["mu"] + 2.0 * jax.random.normal(key, (N_OBS, D))}


RIGHT = SBCProblem(PARAMS, prior_sample, simulate, logdensity, log_likelihood, name="right")
WRONG = SBCProblem(PARAMS, prior_sample, simulate_too_noisy, logdensity, log_likelihood)


@pytest.fixture(scope="module")
def calibrated():
    return sbc(RIGHT, NUM_SIMULATIONS, **SETTINGS)


@pytest.fixture(scope="module")
def miscalibrated(calibrated):
    del calibrated  # run after it, to reuse its compiled sampler
    return sbc(WRONG, NUM_SIMULATIONS, **SETTINGS)


# ------------------------------------------------------------------ the end-to-end runs


@pytest.mark.slow  # end-to-end SBC runs: statistical calibration and power
def test_calibrated_model_passes(calibrated):
    assert calibrated.passed, str(calibrated)
    assert calibrated.failures == []
    assert [r["quantity"] for r in calibrated.rows] == ["mu[0]", "mu[1]", "log_likelihood"]
    assert all(r["passed"] for r in calibrated.rows)
    assert calibrated.num_tests == 6
    assert calibrated.alpha_test == pytest.approx(0.05 / 6)
    assert calibrated.divergences.shape == (NUM_SIMULATIONS,)
    assert calibrated.divergences.sum() == 0
    assert calibrated.init_failures.sum() == 0
    assert str(calibrated).startswith(
        "PASSED: all 8 checks, simulation-based calibration (6 uniformity tests, 40 simulations"
    )


@pytest.mark.slow  # end-to-end SBC runs: statistical calibration and power
def test_ranks_match_the_exact_posterior(calibrated):
    # Simulation i is fold_in(key(seed), i): rebuild its data, and the exact posterior CDF
    # at the truth. Each rank / L estimates that CDF (Binomial noise, sd <= 0.5 / sqrt(L)
    # = 0.07), which checks every simulation's posterior, not just the ranks' uniformity.
    root = jax.random.key(SETTINGS["seed"])
    truths, cdf = [], []
    for i in range(NUM_SIMULATIONS):
        truth, data = _simulate_one(RIGHT, jax.random.fold_in(root, i))
        mean = np.asarray(data["y"]).sum(axis=0) / (N_OBS + 1)
        truths.append(np.asarray(truth["mu"]))
        cdf.append(stats.norm.cdf(truths[-1], mean, 1 / math.sqrt(N_OBS + 1)))
    truths, cdf = np.array(truths), np.array(cdf)
    for j in range(D):
        np.testing.assert_array_equal(calibrated.truth[f"mu[{j}]"], truths[:, j])
        u = calibrated.ranks[f"mu[{j}]"] / L
        assert np.mean(np.abs(u - cdf[:, j])) < 0.1
        assert np.corrcoef(u, cdf[:, j])[0, 1] > 0.95


@pytest.mark.slow  # end-to-end SBC runs: statistical calibration and power
def test_log_likelihood_is_a_test_quantity(calibrated):
    ranks = calibrated.ranks["log_likelihood"]
    assert ranks.shape == (NUM_SIMULATIONS,)
    assert ranks.dtype.kind == "i"
    assert ranks.min() >= 0 and ranks.max() <= L
    assert len(np.unique(ranks)) > 10  # not a constant or a broken quantity


@pytest.mark.slow  # end-to-end SBC runs: statistical calibration and power
def test_miscalibrated_model_fails(miscalibrated):
    assert not miscalibrated.passed
    assert miscalibrated.compile_seconds < 1.0  # the sampler compiled for the right model
    failed = {r["quantity"] for r in miscalibrated.rows if not r["passed"]}
    assert "log_likelihood" in failed
    assert any("chi-square" in f or "ECDF" in f for f in miscalibrated.failures)
    assert all(any(f.startswith(q + ":") for f in miscalibrated.failures) for q in failed)
    assert str(miscalibrated).startswith("FAILED: ")
    # The ranks of the truth's log-likelihood pile up at the bottom: the noisier data fit
    # the (too narrow) posterior draws better than they fit the truth.
    assert np.mean(miscalibrated.ranks["log_likelihood"] < L / 10) > 0.3


@pytest.mark.slow  # end-to-end SBC runs: statistical calibration and power
def test_eager_simulator_gives_the_same_simulations(calibrated):
    # jit_simulate=False runs prior_sample and simulate in Python, one simulation at a
    # time, with the same keys: the same data, so the same compiled sampler (no compile)
    # and the same ranks.
    eager = sbc(RIGHT, NUM_SIMULATIONS, jit_simulate=False, **SETTINGS)
    assert eager.compile_seconds < 1.0
    for name in calibrated.truth:
        np.testing.assert_allclose(eager.truth[name], calibrated.truth[name], rtol=1e-12)
    for name in calibrated.ranks:
        assert np.mean(eager.ranks[name] == calibrated.ranks[name]) >= 0.9


@pytest.mark.slow  # end-to-end SBC runs: statistical calibration and power
def test_report_shape(calibrated, miscalibrated):
    for report in (calibrated, miscalibrated):
        table = report.table
        assert table.splitlines()[0].startswith("| quantity | chi2 |")
        assert len(table.splitlines()) == 2 + len(report.rows)
        md = report.to_markdown()
        assert md.startswith("### Simulation-based calibration: ")
        assert table in md and table in str(report)
    assert "**Failures**" in miscalibrated.to_markdown()
    assert "Sampler: 0 divergent transitions" in str(calibrated)


@pytest.mark.slow  # end-to-end SBC runs: statistical calibration and power
def test_plot_is_written(miscalibrated, tmp_path):
    path = miscalibrated.plot(tmp_path / "sbc.png")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("n", [0, -3, 2.5, True])
def test_num_simulations_must_be_a_positive_integer(n):
    with pytest.raises(ValueError, match="num_simulations must be an integer >= 1"):
        sbc(RIGHT, n)


def test_num_draws_cannot_exceed_the_draws():
    with pytest.raises(ValueError, match="num_draws = 99 exceeds the 40 draws"):
        sbc(RIGHT, 10, num_draws=99, num_chains=2, num_samples=20)


def test_alpha_and_kernel_are_checked():
    with pytest.raises(ValueError, match="alpha must lie in"):
        sbc(RIGHT, 10, alpha=1.5)
    with pytest.raises(ValueError, match="unknown kernel 'gibbs'"):
        sbc(RIGHT, 10, kernel="gibbs")


class NoSimulate:
    params = PARAMS

    def prior_sample(self, key):
        return prior_sample(key)

    def logdensity(self, params, data):
        return logdensity(params, data)


def test_builder_missing_a_method():
    with pytest.raises(TypeError, match=r"missing \['simulate'\]"):
        sbc(NoSimulate(), 10)
    with pytest.raises(TypeError, match=r"missing \['simulate'\]"):
        sbc(NoSimulate, 10)  # a class is a builder: called, then checked
    with pytest.raises(TypeError, match="simulate must be callable"):
        sbc(SBCProblem(PARAMS, prior_sample, "y", logdensity), 10)
    with pytest.raises(TypeError, match="unknown constraint for 'mu'"):
        sbc(SBCProblem({"mu": "real"}, prior_sample, simulate, logdensity), 10)


def test_builder_function_and_duck_typed_object():
    assert _resolve_problem(lambda: RIGHT) is RIGHT
    duck = NoSimulate()
    duck.simulate = simulate
    problem = _resolve_problem(duck)
    assert isinstance(problem, SBCProblem)
    assert problem.simulate is simulate and problem.log_likelihood is None


def changing_shape(key, params):  # the data's size depends on the key: not traceable
    n = 3 + int(jax.random.bernoulli(key))
    return {"y": params["mu"] + jax.random.normal(key, (n, D))}


def test_data_with_changing_shapes_traced():
    problem = SBCProblem(PARAMS, prior_sample, changing_shape, logdensity)
    with pytest.raises(ValueError, match="fixed shapes"):
        sbc(problem, 10)


def test_data_with_changing_shapes_eager():
    problem = SBCProblem(PARAMS, prior_sample, changing_shape, logdensity)
    with pytest.raises(ValueError, match=r"simulate returned data of shapes .*\[4, 2\]"):
        sbc(problem, 10, jit_simulate=False)


def test_prior_sample_must_match_params():
    wrong_shape = SBCProblem(
        PARAMS, lambda k: {"mu": jax.random.normal(k, (3,))}, simulate, logdensity
    )
    with pytest.raises(ValueError, match=r"'mu' with shape \(3,\), params declares \(2,\)"):
        sbc(wrong_shape, 10)
    wrong_name = SBCProblem(
        PARAMS, lambda k: {"m": jax.random.normal(k, (2,))}, simulate, logdensity
    )
    with pytest.raises(ValueError, match=r"missing \['mu'\], unknown \['m'\]"):
        sbc(wrong_name, 10)


def test_prior_must_respect_the_support():
    problem = SBCProblem(
        {"s": mcg.positive()},
        lambda k: {"s": jax.random.normal(k)},  # half of them negative
        lambda k, p: {"y": p["s"] * jax.random.normal(k, (3,))},
        lambda p, d: -p["s"] + jnp.sum(norm.logpdf(d["y"], 0.0, p["s"])),
    )
    with pytest.raises(ValueError, match=r"outside the support of mcg\.positive\(\)"):
        sbc(problem, 10)


def test_data_must_be_finite():
    def simulate_nan(key, params):
        return {"y": simulate(key, params)["y"].at[1, 0].set(jnp.nan)}

    problem = SBCProblem(PARAMS, prior_sample, simulate_nan, logdensity)
    with pytest.raises(ValueError, match=r"non-finite data\['y'\] in simulation 0"):
        sbc(problem, 10, jit_simulate=False)


def test_logdensity_must_be_scalar():
    problem = SBCProblem(PARAMS, prior_sample, simulate, lambda p, d: norm.logpdf(d["y"], p["mu"]))
    with pytest.raises(ValueError, match=r"logdensity.*real scalar"):
        sbc(problem, NUM_SIMULATIONS, **SETTINGS)  # reuses the compiled simulator


# ------------------------------------------------------------ statistics, pure numpy


def test_ranks_count_the_draws_below():
    draws = np.array([[[0.1], [0.5], [0.9]], [[1.0], [2.0], [3.0]], [[1.0], [2.0], [3.0]]])
    truth = np.array([[0.6], [0.0], [9.0]])
    assert sbc_ranks(draws, truth).tolist() == [[2], [0], [3]]


def test_ties_are_broken_uniformly():
    # Every draw equals the truth: the rank is uniform on 0..L.
    draws = np.zeros((4000, 9))
    ranks = sbc_ranks(draws, np.zeros(4000), seed=1)
    counts = np.bincount(ranks, minlength=10)
    assert ranks.min() == 0 and ranks.max() == 9
    assert stats.chisquare(counts).pvalue > 1e-3
    with pytest.raises(ValueError, match="draws must have shape"):
        sbc_ranks(np.zeros((3, 4)), np.zeros(4))


def test_chi_square_bins_expect_five():
    out = rank_chi_square(np.arange(40) % 100, num_draws=99, bins=20)
    assert out["bins"] == 7 and out["expected"].min() >= 5
    assert out["observed"].sum() == 40 and out["expected"].sum() == pytest.approx(40)
    assert rank_chi_square(np.arange(9), num_draws=99) is None  # fewer than 10 ranks
    piled = np.zeros(100, int)
    assert rank_chi_square(piled, num_draws=99)["pvalue"] < 1e-10


def test_ecdf_band_covers_uniform_ranks_simultaneously():
    # The 95% band must contain the whole ECDF of 95% of uniform samples: pointwise
    # 95% intervals would be left by most of them.
    n, num_draws = 50, 99
    out = ecdf_bands(n, num_draws, alpha=(0.05, 0.01))
    t = out["thresholds"]
    assert len(t) == 49
    rng = np.random.default_rng(123)
    ranks = rng.integers(0, num_draws + 1, size=(2000, n))
    counts = np.sum(ranks[:, :, None] <= t, axis=1)
    for alpha in (0.05, 0.01):
        lower, upper = out["bands"][alpha]
        assert np.all(lower <= n * out["p"]) and np.all(n * out["p"] <= upper)
        outside = np.any((counts < lower) | (counts > upper), axis=1).mean()
        sd = math.sqrt(alpha * (1 - alpha) / 2000)
        assert abs(outside - alpha) < 4 * sd + 0.005, (alpha, outside)
    # The adjusted pointwise level is far below alpha (the multiple-comparison price).
    assert out["gamma"][0.05] < 0.01
    narrow = stats.binom.interval(0.95, n, out["p"])
    assert np.all(out["bands"][0.05][0] <= narrow[0])


def exact_ranks(rng, noise, n=NUM_SIMULATIONS, num_draws=L):
    """Ranks with exact posterior draws of the conjugate model (no MCMC)."""
    mu = rng.normal(size=(n, D))
    y = mu[:, None, :] + noise * rng.normal(size=(n, N_OBS, D))
    mean = y.sum(axis=1) / (N_OBS + 1)
    draws = mean[:, None, :] + rng.normal(size=(n, num_draws, D)) / math.sqrt(N_OBS + 1)
    ll_true = -0.5 * ((y - mu[:, None, :]) ** 2).sum(axis=(-1, -2))
    ll_draws = -0.5 * ((y[:, None] - draws[:, :, None, :]) ** 2).sum(axis=(-1, -2))
    ranks = sbc_ranks(draws, mu)
    return {
        "mu[0]": ranks[:, 0],
        "mu[1]": ranks[:, 1],
        "log_likelihood": sbc_ranks(ll_draws, ll_true),
    }


def test_the_miscalibration_has_power():
    rng = np.random.default_rng(2024)
    right = [SBCReport.from_ranks(exact_ranks(rng, 1.0), L).passed for _ in range(200)]
    wrong = [SBCReport.from_ranks(exact_ranks(rng, 2.0), L).passed for _ in range(200)]
    assert np.mean(wrong) <= 0.02  # fails (nearly) always
    assert np.mean(right) >= 0.9  # family-wise alpha 0.05: about 5% false failures


def test_from_ranks_reports_divergences():
    ranks = {"mu": np.arange(40) % 10}
    report = SBCReport.from_ranks(ranks, 9, divergences=np.array([0] * 38 + [2, 1]))
    assert not report.passed
    assert report.failures == [
        "divergences: 3 post-warmup divergent transitions in 2 of 40 simulations "
        "(threshold 0); raise target_accept or reparameterise; allow_divergences=True "
        "reports them without failing"
    ]
    allowed = SBCReport.from_ranks(
        ranks, 9, divergences=np.array([0] * 38 + [2, 1]), allow_divergences=True
    )
    assert allowed.passed


def test_from_ranks_checks_its_input():
    with pytest.raises(ValueError, match=r"ranks of 'mu' must lie in 0..9, got 0..10"):
        SBCReport.from_ranks({"mu": np.arange(11)}, 9)
    with pytest.raises(ValueError, match="no quantities"):
        SBCReport.from_ranks({}, 9)


@pytest.mark.slow  # needs the end-to-end SBC runs
def test_clear_caches_releases_the_sbc_programs(miscalibrated):
    assert len(sbc_module._CACHE) > 0
    mcg.clear_caches()
    assert len(sbc_module._CACHE) == 0
