"""mcg.diagnostics.quadrature_reference: exact reference draws for models of <= 3 coordinates.

Tolerances. The draws are exact (rejection against the density itself), so their
statistics differ from the closed forms by Monte Carlo error only: every check on draws
allows 4 standard errors of the statistic (computed from the closed form), which a
correct implementation misses with probability about 6e-5 per check, and the seeds are
fixed, so the tests are deterministic. The grid's own trapezoid-rule moments (in the
attributes) are deterministic and far more accurate: they are held to 1e-6 sd, the
order of the truncation that the edge check allows (edge_tol = 1e-6 of the mass).
"""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.stats import gamma, multivariate_normal, norm
from scipy import special, stats

import mcmc_customgrad as mcg
from mcmc_customgrad import _arviz
from mcmc_customgrad.diagnostics import quadrature
from mcmc_customgrad.diagnostics.quadrature import quadrature_reference

Z = 4.0  # standard errors allowed on draws (see the module notes)

# A 3-d correlated Gaussian (correlations 0.6, 0.3, -0.5 before scaling).
MU3 = np.array([1.0, -2.0, 0.5])
COV3 = np.array([[1.0, 0.6, 0.3], [0.6, 2.0, -0.5], [0.3, -0.5, 0.7]])
SD3 = np.sqrt(np.diag(COV3))


def gamma_model(shape=3.0, rate=2.0):
    return mcg.Model(
        lambda p: gamma.logpdf(p["rate"], shape, scale=1.0 / rate), {"rate": mcg.positive()}
    )


def normal_model(logdensity=None):
    return mcg.Model(logdensity or (lambda p: norm.logpdf(p["x"])), {"x": mcg.real()})


def gaussian3_model():
    return mcg.Model(
        lambda p: multivariate_normal.logpdf(p["x"], MU3, COV3), {"x": mcg.real(shape=(3,))}
    )


def draws_of(run, name):
    values = np.asarray(run.posterior[name].values)
    return values.reshape(values.shape[0] * values.shape[1], *values.shape[2:])


def assert_quantiles(x, dist, probs=(0.05, 0.5, 0.95)):
    """Empirical quantiles within Z standard errors, sqrt(p (1 - p) / n) / density."""
    for p in probs:
        q = dist.ppf(p)
        se = math.sqrt(p * (1 - p) / x.size) / dist.pdf(q)
        assert abs(np.quantile(x, p) - q) < Z * se, (p, np.quantile(x, p), q, se)


# --------------------------------------------------------------------------------------
# Accuracy against closed forms
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_points", [None, 16])
def test_gamma_on_a_positive_parameter_is_exact(num_points):
    # Gamma(3, rate 2): mean 1.5, sd 0.866, skewed; the grid is in log(rate) and the
    # log-Jacobian is part of model.logdensity. On 16 points (cells 0.78 unconstrained
    # units wide, 1.35 sd of log(rate)) jittering within cells would add h**2 / 12 to the
    # variance of log(rate), 15% (30 standard errors at this size); rejection against
    # the density keeps the draws exact.
    dist = stats.gamma(3.0, scale=0.5)
    run = quadrature_reference(gamma_model(), num_points=num_points, num_draws=25_000)
    assert run.posterior["rate"].dims == ("chain", "draw")
    assert run.posterior["rate"].shape == (4, 25_000)
    x = draws_of(run, "rate")
    n, sd = x.size, dist.std()
    assert abs(x.mean() - dist.mean()) < Z * sd / math.sqrt(n)
    # sd of the sample sd: sd * sqrt((kurtosis - 1) / (4 n)), kurtosis 3 + 6 / shape = 5
    assert abs(x.std() - sd) < Z * sd * math.sqrt(4 / (4 * n))
    assert_quantiles(x, dist)
    assert stats.kstest(x, dist.cdf).pvalue > 1e-3
    attrs = _arviz.attrs(run)
    assert attrs["quadrature_edge_mass"] < 1e-6
    if num_points is None:
        assert attrs["quadrature_num_points"] == [256]
        assert abs(attrs["quadrature_mean"][0] - dist.mean()) < 1e-6 * sd
        assert abs(attrs["quadrature_sd"][0] - sd) < 1e-6 * sd
        assert attrs["quadrature_acceptance"] > 0.9
        # the normaliser of a normalised density is 1, up to the truncated tail
        assert abs(attrs["quadrature_log_normaliser"]) < 1e-6


def test_correlated_gaussian_in_3d_and_compare_chains_accepts_it():
    run = quadrature_reference(gaussian3_model(), seed=1)
    attrs = _arviz.attrs(run)
    assert attrs["quadrature_num_points"] == [32, 32, 32]
    np.testing.assert_allclose(attrs["quadrature_mean"], MU3, atol=1e-6 * SD3.min())
    np.testing.assert_allclose(attrs["quadrature_sd"], SD3, rtol=1e-6)
    x = draws_of(run, "x")
    assert x.shape == (10_000, 3)
    n = len(x)
    assert np.all(np.abs(x.mean(axis=0) - MU3) < Z * SD3 / math.sqrt(n))
    # covariance entries: var(x_i x_j) = S_ii S_jj + S_ij^2 for a Gaussian
    se = np.sqrt((np.outer(np.diag(COV3), np.diag(COV3)) + COV3**2) / n)
    assert np.all(np.abs(np.cov(x.T) - COV3) < Z * se)

    # compare_chains takes it as the reference, unchanged: independent exact draws pass
    rng = np.random.default_rng(7)

    def exact(cov):
        return _arviz.to_inference_data(
            {"x": rng.multivariate_normal(MU3, cov, size=(4, 2500))}, {}
        )

    report = mcg.compare_chains(exact(COV3), run)
    assert report.passed, report.failures
    sanity = [c for c in report.checks if c["kind"] == "sanity" and c["side"] == "reference"]
    assert sanity and all(c["passed"] for c in sanity)
    # ... and a 5% scale error fails (power)
    wrong = mcg.compare_chains(exact(1.05**2 * COV3), run)
    assert not wrong.passed


# --------------------------------------------------------------------------------------
# Bounds
# --------------------------------------------------------------------------------------


def test_too_narrow_user_bounds_raise_naming_the_parameter_and_edge():
    model = mcg.Model(
        lambda p: norm.logpdf(p["mu"]) + gamma.logpdf(p["sigma"], 4.0, scale=0.25),
        {"mu": mcg.real(), "sigma": mcg.positive()},
    )
    with pytest.raises(ValueError, match=r"upper edge of sigma \(bound 2\b.*bounds\['sigma'\]"):
        quadrature_reference(model, bounds={"mu": (-8.0, 8.0), "sigma": (0.01, 2.0)})
    with pytest.raises(ValueError, match=r"lower edge of mu \(bound -1\b"):
        quadrature_reference(model, bounds={"mu": (-1.0, 8.0)})
    # wide enough user bounds pass; the other sides are automatic
    run = quadrature_reference(model, bounds={"mu": (-8.0, 8.0), "sigma": (None, 6.0)})
    attrs = _arviz.attrs(run)
    assert attrs["quadrature_bounds_source"] == (
        "mu lower user, mu upper user, sigma lower auto, sigma upper user"
    )
    np.testing.assert_allclose(attrs["quadrature_lower_constrained"][0], -8.0)
    np.testing.assert_allclose(attrs["quadrature_upper_constrained"], [8.0, 6.0])
    assert attrs["quadrature_edge_mass"] < 1e-6
    np.testing.assert_allclose(attrs["quadrature_mean"], [0.0, 1.0], atol=1e-6)


def test_automatic_bounds_widen_a_long_tail():
    # Gamma(1.5) in log space has an exponential left tail, e ** (1.5 u): the Laplace box
    # (mode +- 6.5 sd) holds too little of it, and the automatic lower face moves out.
    dist = stats.gamma(1.5)
    run = quadrature_reference(gamma_model(1.5, 1.0))
    attrs = _arviz.attrs(run)
    assert attrs["quadrature_attempts"] >= 2
    assert attrs["quadrature_edge_masses"][0] < 1e-6  # lower face of log(rate)
    assert attrs["quadrature_lower_constrained"][0] < dist.ppf(1e-6)
    assert abs(attrs["quadrature_mean"][0] - dist.mean()) < 1e-6 * dist.std()
    assert abs(attrs["quadrature_sd"][0] - dist.std()) < 1e-5 * dist.std()


def test_automatic_bounds_trim_a_box_far_wider_than_the_mass():
    # exp(-x**8) is flat at its mode (Hessian 0): the first box is +-6.5 around 0, the
    # mass is within +-1.6, and the box is trimmed once, keeping the resolution.
    run = quadrature_reference(normal_model(lambda p: -(p["x"] ** 8)))
    attrs = _arviz.attrs(run)
    assert attrs["quadrature_attempts"] == 2
    assert attrs["quadrature_upper"][0] < 3.0 and attrs["quadrature_lower"][0] > -3.0
    assert attrs["quadrature_edge_mass"] < 1e-6
    second = special.gamma(3 / 8) / special.gamma(1 / 8)  # E x**2 under exp(-x**8)
    assert abs(attrs["quadrature_sd"][0] - math.sqrt(second)) < 1e-6
    x = draws_of(run, "x")
    se = math.sqrt((special.gamma(5 / 8) / special.gamma(1 / 8) - second**2) / x.size)
    assert abs(np.mean(x**2) - second) < Z * se


# --------------------------------------------------------------------------------------
# Failure: NaN (a failed inner solve) and -inf (zero density)
# --------------------------------------------------------------------------------------


def test_nan_in_the_negligible_tail_counts_as_zero_and_is_recorded():
    model = normal_model(lambda p: jnp.where(p["x"] > 5.0, jnp.nan, norm.logpdf(p["x"])))
    run = quadrature_reference(model)
    attrs = _arviz.attrs(run)
    assert attrs["quadrature_nan_count"] > 0
    assert 0.0 < attrs["quadrature_nan_mass"] < 1e-6
    x = draws_of(run, "x")
    assert x.max() < 5.0
    assert abs(x.mean()) < Z / math.sqrt(x.size)


def test_nan_where_the_posterior_has_mass_raises_with_count_and_place():
    model = normal_model(
        lambda p: jnp.where((p["x"] > 0.5) & (p["x"] < 0.7), jnp.nan, norm.logpdf(p["x"]))
    )
    with pytest.raises(ValueError, match=r"NaN \(a failed inner solve\) at \d+ of 256 grid") as e:
        quadrature_reference(model, bounds={"x": (-7.0, 7.0)})
    assert "x in [0.5" in str(e.value) and "converge" in str(e.value)


def test_nan_between_grid_points_in_the_mass_raises_when_a_proposal_hits_it():
    # 256 nodes on (-7, 7): a node at -7 + 134 h = 0.357; the NaN band lies inside a cell.
    h = 14.0 / 255
    lo = -7.0 + 134 * h + 0.2 * h
    model = normal_model(
        lambda p: jnp.where((p["x"] > lo) & (p["x"] < lo + 0.5 * h), jnp.nan, norm.logpdf(p["x"]))
    )
    with pytest.raises(ValueError, match="inside the posterior's mass"):
        quadrature_reference(model, bounds={"x": (-7.0, 7.0)})


def test_minus_inf_is_zero_density():
    # A half-normal written as a truncated normal on the real line: -inf below 0.
    model = normal_model(lambda p: jnp.where(p["x"] < 0.0, -jnp.inf, norm.logpdf(p["x"])))
    run = quadrature_reference(model, bounds={"x": (-2.0, 7.0)}, num_draws=5000)
    attrs = _arviz.attrs(run)
    assert attrs["quadrature_nan_count"] == 0
    x = draws_of(run, "x")
    assert x.min() >= 0.0
    dist = stats.halfnorm()
    assert abs(x.mean() - dist.mean()) < Z * dist.std() / math.sqrt(x.size)
    assert stats.kstest(x, dist.cdf).pvalue > 1e-3


def test_envelope_violations_widen_the_envelope_or_raise(monkeypatch):
    # With the curvature term all but switched off, proposals near the mode exceed the
    # envelope: sampling restarts with a wider one, and the draws stay exact.
    monkeypatch.setattr(quadrature, "_SAFETY", 0.1)
    run = quadrature_reference(normal_model(), num_points=8, num_draws=5000)
    assert _arviz.attrs(run)["quadrature_envelope_escalations"] >= 1
    x = draws_of(run, "x")
    assert abs(x.std() - 1.0) < Z * math.sqrt(0.5 / x.size)
    assert stats.kstest(x, stats.norm.cdf).pvalue > 1e-3
    monkeypatch.setattr(quadrature, "_SAFETY", 1e-9)
    with pytest.raises(ValueError, match="varies faster than the grid resolves"):
        quadrature_reference(normal_model(), num_points=8, num_draws=5000)


# --------------------------------------------------------------------------------------
# An inner solve, seeds, attributes
# --------------------------------------------------------------------------------------


def test_inner_solve_model_matches_its_closed_form():
    # The README's density: x ~ N(0, I) tilted by N(f(x)), f(x) = -min_y sum |y|^3/3 - x.y
    # = sum |x|^1.5 / 1.5 in closed form.
    def custom(p):
        x = p["x"]
        g = lambda y, x: jnp.sum(jnp.abs(y) ** 3 / 3 - x * y)  # noqa: E731
        return jnp.sum(norm.logpdf(x)) + norm.logpdf(-mcg.min_value(g, jnp.zeros_like(x), x))

    def closed(p):
        x = p["x"]
        return jnp.sum(norm.logpdf(x)) + norm.logpdf(jnp.sum(jnp.abs(x) ** 1.5 / 1.5))

    spec = {"x": mcg.real(shape=(2,))}
    a = quadrature_reference(mcg.Model(custom, spec), num_points=32)
    b = quadrature_reference(mcg.Model(closed, spec), num_points=32, seed=1)
    attrs_a, attrs_b = _arviz.attrs(a), _arviz.attrs(b)
    np.testing.assert_allclose(attrs_a["quadrature_sd"], attrs_b["quadrature_sd"], rtol=1e-8)
    assert attrs_a["quadrature_grid_evaluations"] == 32**2
    assert attrs_a["quadrature_mode_search_evaluations"] > 0
    report = mcg.compare_chains(a, b)
    assert report.passed, report.failures


def test_fixed_seeds_and_attributes_survive_netcdf(tmp_path):
    model = gamma_model()
    one, two = quadrature_reference(model), quadrature_reference(model)
    np.testing.assert_array_equal(one.posterior["rate"].values, two.posterior["rate"].values)
    other = quadrature_reference(model, seed=1)
    assert not np.array_equal(one.posterior["rate"].values, other.posterior["rate"].values)
    lp = np.asarray(one.sample_stats["lp"].values)
    u = np.log(one.posterior["rate"].values)
    np.testing.assert_allclose(lp, stats.gamma(3.0, scale=0.5).logpdf(np.exp(u)) + u)
    back = _arviz.load(_arviz.save(one, tmp_path / "reference.nc"))
    attrs = _arviz.attrs(back)
    assert attrs["reference_method"] == "quadrature"
    assert attrs["quadrature_seed"] == 0
    assert attrs["quadrature_num_evaluations"] == (
        attrs["quadrature_grid_evaluations"]
        + attrs["quadrature_proposals"]
        + attrs["quadrature_mode_search_evaluations"]
    )
    np.testing.assert_array_equal(back.posterior["rate"].values, one.posterior["rate"].values)


# --------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------


def test_more_than_three_coordinates_raise_and_say_what_to_do():
    model = mcg.Model(
        lambda p: jnp.sum(norm.logpdf(p["x"])) + norm.logpdf(p["y"]),
        {"x": mcg.real(shape=(3,)), "y": mcg.real()},
    )
    with pytest.raises(ValueError, match=r"4 unconstrained coordinates .*closed-form"):
        quadrature_reference(model)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_points": 0}, ValueError, "at least 4"),
        ({"num_points": -3}, ValueError, "at least 4"),
        ({"num_points": [16, 16]}, ValueError, "one per coordinate"),
        ({"num_points": 2.5}, ValueError, "integer"),
        ({"num_draws": 0}, ValueError, "num_draws must be an integer >= 1"),
        ({"edge_tol": 0.0}, ValueError, "edge_tol must be in"),
        ({"bounds": [(0.1, 2.0)]}, TypeError, "dict from parameter name"),
        ({"bounds": {"scale": (0.1, 2.0)}}, ValueError, r"names \['scale'\].*\['rate'\]"),
        ({"bounds": {"rate": (2.0, 1.0)}}, ValueError, "lower >= upper"),
        ({"bounds": {"rate": (1.0, 1.0)}}, ValueError, "lower >= upper"),
        ({"bounds": {"rate": (0.0, 1.0)}}, ValueError, "not inside the support"),
        ({"bounds": {"rate": (0.1,)}}, ValueError, "must be a pair"),
        ({"bounds": {"rate": (float("nan"), 1.0)}}, ValueError, "must be finite"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        quadrature_reference(gamma_model(), **kwargs)


def test_a_plain_function_is_not_a_model():
    with pytest.raises(TypeError, match=r"needs an mcg.Model .*mcg.Model\(logdensity_fn"):
        quadrature_reference(lambda x: -0.5 * jnp.sum(x**2))


def test_helpers_sample_and_integrate_the_envelope_exactly():
    # the truncated exponential's inverse CDF and its log-normaliser, against numbers
    rng = np.random.default_rng(0)
    u = 1.0 - rng.random(200_000)
    for g in (-30.0, -1.0, 1e-9, 0.0, 2.5, 800.0):
        t = quadrature._truncated_exponential(u, np.full_like(u, g), 0.4)
        assert np.all(np.abs(t) <= 0.2 + 1e-12)
        grid = np.linspace(-0.2, 0.2, 200_001)
        integral = np.trapezoid(np.exp(g * grid - abs(g) * 0.2), grid)
        assert math.isclose(
            float(quadrature._log_integral(np.array(g), 0.4)),
            math.log(integral) + abs(g) * 0.2,
            rel_tol=1e-6,
            abs_tol=1e-9,
        )
        if abs(g) < 100:  # mean of the truncated exponential, within 4 standard errors
            w = np.exp(g * grid - abs(g) * 0.2)
            mean = np.trapezoid(grid * w, grid) / np.trapezoid(w, grid)
            assert abs(t.mean() - mean) < Z * t.std() / math.sqrt(t.size) + 1e-12


# --------------------------------------------------------------------------------------
# Accuracy at a million draws (the numbers in the module notes and docs/diagnostics.md)
# --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_accuracy_at_a_million_draws():
    """Prints the accuracy table: ``pytest -m slow -s -k million tests/test_quadrature.py``."""
    cases = [
        ("Gamma(3, rate 2), positive()", gamma_model(), "rate", [stats.gamma(3.0, scale=0.5)]),
        (
            "3-d correlated Gaussian",
            gaussian3_model(),
            "x",
            [stats.norm(m, s) for m, s in zip(MU3, SD3, strict=True)],
        ),
    ]
    print()
    for label, model, name, dists in cases:
        for num_points, num_draws in ((None, 250_000), (16, 62_500)):
            run = quadrature_reference(model, num_points=num_points, num_draws=num_draws)
            attrs = _arviz.attrs(run)
            x = draws_of(run, name).reshape(4 * num_draws, -1)
            n = len(x)
            print(
                f"{label}, {attrs['quadrature_num_points']} points, {n:,} draws: acceptance "
                f"{attrs['quadrature_acceptance']:.3f}, {attrs['quadrature_num_evaluations']:,} "
                f"evaluations, {attrs['quadrature_seconds']:.1f} s"
            )
            for k, dist in enumerate(dists):
                sd = dist.std()
                kurtosis = dist.stats(moments="k") + 3.0
                z_mean = (x[:, k].mean() - dist.mean()) / (sd / math.sqrt(n))
                z_sd = (x[:, k].std() - sd) / (sd * math.sqrt((kurtosis - 1) / (4 * n)))
                quantiles = [
                    (np.quantile(x[:, k], p) - dist.ppf(p)) / sd for p in (0.05, 0.5, 0.95)
                ]
                p_ks = stats.kstest(x[:, k], dist.cdf).pvalue
                grid_mean = (attrs["quadrature_mean"][k] - dist.mean()) / sd
                grid_sd = attrs["quadrature_sd"][k] / sd - 1
                print(
                    f"  [{k}] draws: mean z {z_mean:+.2f}, sd z {z_sd:+.2f}, 5/50/95% quantile "
                    f"errors {', '.join(f'{q:+.4f}' for q in quantiles)} sd, KS p {p_ks:.3f}; "
                    f"grid: mean error {grid_mean:+.1e} sd, sd error {grid_sd:+.1e}"
                )
                assert abs(z_mean) < Z and abs(z_sd) < Z and p_ks > 1e-3
                assert_quantiles(x[:, k], dist)
                if num_points is None:
                    assert abs(grid_mean) < 1e-6 and abs(grid_sd) < 1e-6
