"""The one ArviZ module behaves the same on ArviZ 0.23 (Python 3.11) and 1.x (3.12+).

`.ci/run` runs this file (with test_compare.py and test_cli.py) a second time under a
Python 3.12+ interpreter, where ArviZ 1.x installs, when the machine has one.
"""

import jax.numpy as jnp
import numpy as np
import pytest

import mcmc_customgrad as mcg
from mcmc_customgrad import _arviz

RNG = np.random.default_rng(0)
POSTERIOR = {"x": RNG.normal(size=(4, 300, 2)), "mu": RNG.normal(size=(4, 300))}
STATS = {
    "diverging": np.zeros((4, 300), dtype=bool),
    "energy": RNG.normal(size=(4, 300)),
    "n_steps": np.full((4, 300), 3),
}


@pytest.fixture(scope="module")
def run():
    return _arviz.to_inference_data(
        POSTERIOR, STATS, log_likelihood={"y": RNG.normal(size=(4, 300, 5))}, attrs={"seed": 3}
    )


def test_version_flag_matches_the_installed_arviz():
    major = int(_arviz.arviz.__version__.split(".")[0])
    assert (major >= 1) == _arviz.ARVIZ_1


def test_a_run_has_its_groups_values_and_attributes(run):
    assert set(_arviz.groups(run)) == {"posterior", "sample_stats", "log_likelihood"}
    assert _arviz.is_inference_data(run)
    assert not _arviz.is_inference_data({"posterior": 1})
    assert run.posterior["x"].shape == (4, 300, 2)
    np.testing.assert_array_equal(run.posterior["mu"].values, POSTERIOR["mu"])
    assert int(run.posterior.sizes["chain"]) == 4
    assert _arviz.attrs(run)["seed"] == 3


def test_summary_has_the_same_columns_and_rows_on_both_versions(run):
    table = _arviz.summary(run)
    assert list(table.columns) == _arviz.SUMMARY_COLUMNS
    assert list(table.index) == ["x[0]", "x[1]", "mu"]
    np.testing.assert_allclose(table.loc["mu", "mean"], POSTERIOR["mu"].mean())
    assert table.loc["mu", "hdi_3%"] < table.loc["mu", "mean"] < table.loc["mu", "hdi_97%"]
    assert list(_arviz.summary(run, var_names=["mu"]).index) == ["mu"]


def test_ess_rhat_bfmi_per_component(run):
    ess = _arviz.ess(run, "bulk")
    assert set(ess) == {"x[0]", "x[1]", "mu"}
    assert all(600 < v < 2400 for v in ess.values())  # independent draws: about 1200
    rhat = _arviz.rhat(run)
    assert all(0.99 < v < 1.02 for v in rhat.values())
    assert _arviz.bfmi(run).shape == (4,)
    draws = POSTERIOR["x"]
    np.testing.assert_allclose(_arviz.ess_draws(draws, "bulk"), [ess["x[0]"], ess["x[1]"]])
    assert _arviz.rhat_draws(draws).shape == (2,)
    with pytest.raises(ValueError, match="chain, draw"):
        _arviz.ess_draws(np.zeros(5))


def test_save_and_load_keep_draws_and_attributes(run, tmp_path):
    path = _arviz.save(run, tmp_path / "run.nc")
    back = _arviz.load(path)
    np.testing.assert_array_equal(back.posterior["x"].values, POSTERIOR["x"])
    assert _arviz.attrs(back)["seed"] == 3
    assert set(_arviz.groups(back)) == set(_arviz.groups(run))


def test_more_chains_than_draws_is_not_a_warning():
    # Thousands of short chains (a GPU run) are (chain, draw) by contract; ArviZ's guess
    # that such arrays are transposed must not warn (warnings are errors in this suite).
    run = _arviz.to_inference_data({"x": np.zeros((300, 10))}, {"lp": np.ones((300, 10))})
    assert run.posterior["x"].shape == (300, 10)
    assert run.sample_stats["lp"].shape == (300, 10)


def test_kde_is_a_density():
    grid, density = _arviz.kde(RNG.normal(size=2000))
    assert grid.shape == density.shape
    assert abs(np.trapezoid(density, grid) - 1) < 0.02


def test_sample_compare_and_report_end_to_end(tmp_path):
    # The library's own path: mcg.sample builds the run, compare_chains reads it, the
    # report draws its figures, diagnose reads sample_stats.
    kw = dict(num_chains=4, num_warmup=100, num_samples=200, seed=1, warn=False)
    idata = mcg.sample(lambda x: -0.5 * jnp.sum(x**2), jnp.zeros(2), kernel="mala", **kw)
    reference = _arviz.to_inference_data({"x": RNG.normal(size=(4, 800, 2))}, {})
    assert _arviz.attrs(idata)["num_samples"] == 200
    report = mcg.compare_chains(idata, reference, min_draws=200, min_ess=50)
    assert report.checks, report.verdict
    out = mcg.write_report(report, tmp_path)
    for figure in ("densities.png", "ranks.png", "traces.png", "efficiency.png"):
        assert (tmp_path / figure).stat().st_size > 5_000
    assert "Figures" in out.read_text()
    assert isinstance(mcg.diagnose(idata), list)
