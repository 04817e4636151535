"""mcg.sample: output, reproducibility, compilation reuse, inits, failures, kernels, checks."""

import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import chain_programs, traced_programs
from jax.scipy.stats import norm

import mcmc_customgrad as mcg
from mcmc_customgrad.diagnostics import load, save

# One model object for the whole module: compiled programs are cached per model.
EXAMPLE = mcg.models.conjugate(d=2)
SMALL = dict(num_chains=2, num_warmup=100, num_samples=60, seed=7, warn=False)
STANDARD_STATS = {
    "diverging",
    "energy",
    "lp",
    "acceptance_rate",
    "step_size",
    "n_steps",
    "tree_depth",
    "reached_max_treedepth",
}


@pytest.fixture(scope="module")
def run():
    return mcg.sample(EXAMPLE.model, **SMALL)


def test_inference_data_has_the_standard_groups_names_and_attrs(run):
    assert run.posterior["x"].shape == (2, 60, 2)
    stats = set(run.sample_stats.data_vars)
    assert STANDARD_STATS | {"solver_failure", "solver_converged", "solver_steps"} <= stats
    assert run.sample_stats["diverging"].dtype == bool
    assert bool(run.sample_stats["solver_converged"].all())
    assert int(run.sample_stats["solver_steps"].min()) > 0
    # Per-draw counts by status: every solve at every draw converged.
    status = run.sample_stats["solver_status"]
    assert status.dims == ("chain", "draw", "status") and status.shape == (2, 60, len(mcg.Status))
    solves = status.values.sum(axis=-1)
    assert solves.min() > 0
    np.testing.assert_array_equal(status.values[..., mcg.Status.CONVERGED], solves)
    assert np.all(run.sample_stats["n_steps"] >= 1)
    np.testing.assert_array_equal(
        run.sample_stats["reached_max_treedepth"], run.sample_stats["tree_depth"] >= 10
    )
    attrs = run.posterior.attrs
    for key in ("seed", "kernel", "jax_version", "inference_library_version", "num_grad_evals"):
        assert key in attrs
    assert attrs["seed"] == "7" and attrs["num_samples"] == 60
    assert attrs["num_grad_evals"] == int(run.sample_stats["n_steps"].sum())
    assert attrs["num_grad_evals_warmup"] > 0


def test_lp_is_the_log_density_of_the_draws(run):
    # The stored lp is the unconstrained log-density at the reported draw.
    x = jnp.asarray(run.posterior["x"].values[1, 5])
    lp = float(run.sample_stats["lp"].values[1, 5])
    assert lp == pytest.approx(float(EXAMPLE.model.logdensity(x)), rel=1e-12)


def test_same_seed_is_bitwise_identical_and_second_call_does_not_retrace(run):
    with traced_programs() as traced:
        again = mcg.sample(EXAMPLE.model, **SMALL)
    assert chain_programs(traced) == []  # compiled programs were reused, nothing retraced
    np.testing.assert_array_equal(run.posterior["x"].values, again.posterior["x"].values)
    other = mcg.sample(EXAMPLE.model, **{**SMALL, "seed": 8})
    assert not np.array_equal(run.posterior["x"].values, other.posterior["x"].values)


def test_netcdf_round_trip(run, tmp_path):
    path = save(run, tmp_path / "run.nc")
    back = load(path)
    np.testing.assert_array_equal(back.posterior["x"].values, run.posterior["x"].values)
    for name in run.sample_stats.data_vars:
        np.testing.assert_array_equal(back.sample_stats[name].values, run.sample_stats[name].values)
    assert back.posterior.attrs["kernel"] == "nuts"


def test_model_draws_are_on_the_constrained_scale_with_log_likelihood():
    def logdensity(p):
        return norm.logpdf(p["mu"]) + jnp.sum(norm.logpdf(DATA, p["mu"], p["sigma"]))

    def log_likelihood(p):
        return norm.logpdf(DATA, p["mu"], p["sigma"])

    spec = {"mu": mcg.real(), "sigma": mcg.positive()}
    model = mcg.Model(logdensity, spec, log_likelihood_fn=log_likelihood)
    idata = mcg.sample(model, **SMALL)
    assert float(idata.posterior["sigma"].min()) > 0
    assert idata.log_likelihood["obs"].shape == (2, 60, DATA.size)
    # No inner solve: no solver statistics, but the failure count is always there.
    assert "solver_steps" not in idata.sample_stats
    assert int(idata.sample_stats["solver_failure"].sum()) == 0


DATA = jnp.array([0.3, -1.2, 0.8, 2.1, 0.0])


def _gauss(x):
    return -0.5 * jnp.sum(x["a"] ** 2) - 0.5 * jnp.sum((x["b"] - 1.0) ** 2)


def test_plain_logdensity_with_a_pytree_init():
    init = {"a": jnp.zeros(3), "b": jnp.array(0.5)}
    idata = mcg.sample(_gauss, init, **SMALL)
    assert idata.posterior["a"].shape == (2, 60, 3)
    assert idata.posterior["b"].shape == (2, 60)
    # Stacked per-chain starts and a callable init give the same layout.
    stacked = jax.tree.map(lambda x: jnp.stack([x, x + 0.1]), init)
    per_chain = mcg.sample(_gauss, stacked, init_per_chain=True, **SMALL)
    assert per_chain.posterior["a"].shape == (2, 60, 3)

    def draw(key):
        return {"a": jax.random.normal(key, (3,)), "b": jnp.array(1.0)}

    assert mcg.sample(_gauss, draw, **SMALL).posterior["b"].shape == (2, 60)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_samples": 0}, "num_samples must be an integer >= 1"),
        ({"num_chains": 2.5}, "num_chains"),
        ({"kernel": "gibbs"}, "unknown kernel 'gibbs'"),
        ({"chain_method": "threads"}, "unknown chain_method 'threads'"),
        ({"target_accept": 1.0}, "target_accept must lie in"),
        ({"progress_bar": "yes"}, "progress_bar"),
    ],
)
def test_bad_settings_are_rejected_before_compiling(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mcg.sample(EXAMPLE.model, **{**SMALL, **kwargs})


def test_bad_targets_and_inits_are_rejected_before_compiling():
    with pytest.raises(ValueError, match="must return a real scalar"):
        mcg.sample(lambda x: x**2, jnp.zeros(3), **SMALL)
    with pytest.raises(ValueError, match="needs init"):
        mcg.sample(lambda x: -jnp.sum(x**2), **SMALL)
    with pytest.raises(TypeError, match=r"expected an mcg\.Model or a callable"):
        mcg.sample("conjugate", **SMALL)
    with pytest.raises(ValueError, match="flat unconstrained vector of shape"):
        mcg.sample(EXAMPLE.model, jnp.zeros(3), **SMALL)
    with pytest.raises(ValueError, match="leading axis of length num_chains=2"):
        mcg.sample(_gauss, {"a": jnp.zeros(3), "b": jnp.zeros(3)}, init_per_chain=True, **SMALL)
    with pytest.raises(TypeError, match="float arrays"):
        mcg.sample(lambda x: -jnp.sum(x**2), jnp.zeros(3, int), **SMALL)
    with pytest.raises(TypeError, match="seed"):
        mcg.sample(EXAMPLE.model, **{**SMALL, "seed": 1.5})


def _half_line(x):
    # Finite only for x > 0; log(0) = -inf at the start x = 0.
    return jnp.sum(jnp.log(x) - x)


def test_a_bad_start_is_jittered_until_finite():
    idata = mcg.sample(_half_line, jnp.zeros(1), **SMALL)
    assert float(idata.posterior["x"].min()) > 0


def test_a_hopeless_start_names_the_chain_parameter_and_value():
    def far(x):
        return jnp.where(x[1] > 5.0, -jnp.sum((x - 6.0) ** 2), -jnp.inf)

    with pytest.raises(mcg.InitializationError, match=r"chain 0: .* log-density is -inf.*x\[0\]"):
        mcg.sample(far, jnp.zeros(2), **SMALL)


def _never(x):
    # y^2 = -1 - x^2 has no real root: every inner solve fails, the log-density is NaN.
    y = mcg.root(lambda y, a: y**2 - a, jnp.array(1.0), -1.0 - x[0] ** 2)
    return norm.logpdf(x[0]) + y


def test_a_start_where_the_inner_solve_fails_says_so():
    with pytest.raises(mcg.InitializationError) as err:
        mcg.sample(_never, jnp.zeros(1), **SMALL)
    message = str(err.value)
    assert "log-density is NaN" in message and "nan" not in message.replace("'nan'", "")
    assert "An inner solve did not converge there (1 solve," in message
    assert "largest residual" in message and "max_steps" in message


def _truncated(x):
    # sqrt(1 - x) by Newton's root: no root for x > 1, so the solve fails there and the
    # core returns NaN. The posterior is N(0, 1) truncated to x < 1.
    y = mcg.root(lambda y, a: y**2 - a, jnp.array(1.0), 1.0 - x[0])
    return norm.logpdf(x[0]) + 0.0 * y


def test_failed_inner_solves_are_rejected_counted_and_warned():
    with pytest.warns(mcg.SamplingWarning, match="inner solves failed in"):
        idata = mcg.sample(
            _truncated, jnp.zeros(1), num_chains=2, num_warmup=300, num_samples=1000, seed=3
        )
    x = idata.posterior["x"].values
    assert x.max() < 1.0  # no draw beyond the failure boundary
    failures = idata.sample_stats["solver_failure"].values
    assert failures.sum() > 0
    assert idata.posterior.attrs["num_warmup_solver_failures"] > 0
    # Truncated normal mean: -phi(1) / Phi(1) = -0.2876, within 5 MC standard errors.
    ess = float(mcg._arviz.ess(idata)["x[0]"])
    mean, sd = float(x.mean()), float(x.std())
    assert abs(mean + 0.287600) < 5 * sd / np.sqrt(ess)
    # The failures are not reported as divergences.
    problems = {d.name for d in mcg.diagnose(idata)}
    assert "solver_failures" in problems and "divergences" not in problems


def _flat_inner(x):
    # The inner minimum is quartic (DEGENERATE for BFGS at every draw); its value, which
    # is all the density uses, is exact: min_y (y^4 + (x - 1)^2) = (x - 1)^2.
    inner = mcg.min_value(
        lambda y, x: jnp.sum(y**4) + (x[0] - 1.0) ** 2, jnp.ones(2), x, solver=mcg.solvers.BFGS()
    )
    return -0.5 * inner


@pytest.mark.slow
def test_degenerate_inner_solutions_are_counted_and_warned():
    with pytest.warns(mcg.SamplingWarning, match="DEGENERATE"):
        idata = mcg.sample(
            _flat_inner, jnp.zeros(1), num_chains=2, num_warmup=200, num_samples=400, seed=5
        )
    status = idata.sample_stats["solver_status"].values
    assert np.all(status[..., mcg.Status.DEGENERATE] == 1)
    assert bool(idata.sample_stats["solver_converged"].all())  # accepted: nothing rejected
    assert int(idata.sample_stats["solver_failure"].sum()) == 0
    names = {d.name for d in mcg.diagnose(idata)}
    assert "degenerate_solutions" in names and "unconverged_draws" not in names


@pytest.mark.parametrize("kernel", ["hmc", "mala"])
def test_hmc_and_mala_kernels(kernel):
    idata = mcg.sample(_gauss, {"a": jnp.zeros(3), "b": jnp.array(0.0)}, kernel=kernel, **SMALL)
    steps = idata.sample_stats["n_steps"].values
    assert np.all(steps == (16 if kernel == "hmc" else 1))
    assert "tree_depth" not in idata.sample_stats
    assert idata.posterior.attrs["kernel"] == kernel


@pytest.mark.slow  # one chain at a time: four compiles' worth of runs (issue 19 moved it)
def test_sequential_chains_run_one_at_a_time_with_the_same_keys():
    # Same keys and starts: the sequential and the vectorized programs agree up to
    # rounding (they are different programs: batched and unbatched code may round the
    # last bit differently), which accept/reject and step-size adaptation amplify over
    # the warmup: after 100 warmup steps the first draws differ by ~1e-7 even on the
    # closed form, after 10 by ~1e-14. A short warmup keeps the comparison tight.
    short = dict(SMALL, num_warmup=10)
    vec = mcg.sample(EXAMPLE.model, **short)
    seq = mcg.sample(EXAMPLE.model, chain_method="sequential", **short)
    assert seq.posterior["x"].shape == vec.posterior["x"].shape
    np.testing.assert_allclose(
        seq.posterior["x"].values[:, :10], vec.posterior["x"].values[:, :10], rtol=0, atol=1e-10
    )


def test_post_run_warnings_name_the_problem_and_the_remedy():
    with pytest.warns(mcg.SamplingWarning) as record:
        mcg.sample(EXAMPLE.model, **{**SMALL, "warn": True, "num_samples": 20})
    text = " ".join(str(w.message) for w in record)
    assert "effective sample size is below 100 per chain" in text
    assert "Draw more samples" in text


def test_progress_bar_writes_to_stderr_only_when_asked(capsys, monkeypatch):
    import re

    idata = mcg.sample(EXAMPLE.model, **{**SMALL, "progress_bar": True})
    err = capsys.readouterr().err
    # Each compilation is announced with its time, then the draws (plain lines: stderr is
    # not a terminal here), at most four lines, not one per chunk.
    for phase in ("compiling the log-density", "compiling the warmup", "compiling the draws"):
        assert re.search(rf"{phase}.* \.\.\. \(\d+\.\d s\)", err), err
    draws = [line for line in err.splitlines() if line.startswith("draws:")]
    assert len(draws) == 4 and draws[-1].startswith("draws: 60/60 x 2 chains (100%)")
    # The rate counts sampling time only (compilation and the per-draw pass left out).
    rate = int(re.search(r"(\d+) draws/s per chain", draws[-1]).group(1))
    expected = 60 / idata.posterior.attrs["sampling_seconds"]
    assert abs(rate - expected) <= 0.5 + 1e-6 * expected
    monkeypatch.setenv("CI", "1")
    mcg.sample(EXAMPLE.model, **SMALL)
    assert capsys.readouterr().err == ""


def test_sample_sets_up_the_persistent_compilation_cache(monkeypatch):
    import sys

    calls = []
    module = sys.modules["mcmc_customgrad.sampling.sample"]  # the name is the function's
    monkeypatch.setattr(module, "configure_cache", lambda: calls.append(1))
    mcg.sample(EXAMPLE.model, **SMALL)
    assert calls == [1]


def test_rhat_warning_prints_three_decimals():
    from mcmc_customgrad import _arviz

    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 1000)) + np.array([0.0, 0.0, 0.0, 0.5])[:, None]
    idata = _arviz.to_inference_data({"x": x}, {})
    (message,) = [d.message for d in mcg.diagnose(idata) if d.name == "rhat"]
    assert re.search(r"R-hat is above 1.01 for x \(1\.\d{3}\)", message), message


# Chains sharded over four CPU devices, against the vectorized run with the same keys:
# docs/howto.md ("Run chains on several devices"), which tests/test_docs_markdown.py runs
# in a process with XLA_FLAGS=--xla_force_host_platform_device_count=4.


@pytest.mark.slow  # its own compile; tests/test_distributed.py runs the parallel path fast
def test_parallel_with_one_device_warns_and_runs_vectorized():
    with pytest.warns(mcg.SamplingWarning, match="run vectorized"):
        idata = mcg.sample(EXAMPLE.model, chain_method="parallel", **SMALL)
    assert idata.posterior.attrs["num_devices"] == 1


def _maps():
    with open(f"/proc/{os.getpid()}/maps") as f:
        return sum(1 for _ in f)


@pytest.mark.slow  # compiles, releases and compiles again (moved for the fast tier's budget)
def test_clear_caches_releases_the_compiled_programs():
    from mcmc_customgrad.sampling import _chains

    mcg.clear_caches()
    before = _maps()
    with traced_programs() as traced:
        mcg.sample(_gauss, {"a": jnp.zeros(2), "b": jnp.array(0.0)}, **SMALL)
    held = _maps()
    # The trace counter the retrace tests rely on sees the sampler's programs.
    assert {"chains_warmup", "chains_draws"} <= set(chain_programs(traced)), traced
    assert held > before + 100  # machine code of the sampler programs
    assert 0 < len(_chains._CACHE) <= _chains._CACHE.maxsize
    mcg.clear_caches()
    assert len(_chains._CACHE) == 0
    assert _maps() < held - 100


def _shifted_x(params, key):
    return {"x_plus_noise": params["x"] + jax.random.normal(key, params["x"].shape)}


def test_generated_quantities_are_in_the_posterior_and_do_not_depend_on_chunks(tmp_path):
    run = dict(SMALL, generated_quantities=_shifted_x)
    whole = mcg.sample(EXAMPLE.reference, **run)
    noise = whole.posterior["x_plus_noise"].values - whole.posterior["x"].values
    assert noise.shape == (2, 60, 2)
    assert 0.7 < noise.std() < 1.3 and abs(noise.mean()) < 0.3  # N(0, 1) per draw
    assert len(np.unique(noise)) == noise.size  # a fresh key per chain and draw
    chunked = mcg.sample(EXAMPLE.reference, **run, checkpoint=tmp_path / "ck", checkpoint_every=7)
    np.testing.assert_array_equal(
        chunked.posterior["x_plus_noise"].values, whole.posterior["x_plus_noise"].values
    )


def test_generated_quantities_errors():
    with pytest.raises(TypeError, match="generated_quantities must be a callable"):
        mcg.sample(EXAMPLE.model, **SMALL, generated_quantities=3)
    with pytest.raises(ValueError, match=r"returns \['x'\], which are parameter names"):
        mcg.sample(EXAMPLE.model, **SMALL, generated_quantities=lambda p, k: {"x": p["x"]})


# --------------------------------------------- issue 15: nothing silent, nothing late


def test_a_jittered_given_init_is_reported():
    with pytest.warns(mcg.SamplingWarning) as record:
        idata = mcg.sample(_half_line, jnp.zeros(1), **{**SMALL, "warn": True})
    messages = [str(w.message) for w in record]
    jitter = [m for m in messages if "given init is not a valid start" in m]
    assert len(jitter) == 1, messages
    assert "chains 0, 1" in jitter[0] and "log-density is -inf" in jitter[0]
    assert "jittered by U(-1, 1)" in jitter[0]
    assert float(idata.posterior["x"].min()) > 0
    assert record[0].filename == __file__  # points at the caller's line


def test_an_init_where_the_inner_solve_fails_says_why_it_was_jittered():
    def partly(x):
        y = mcg.root(lambda y, a: y**2 - a, jnp.array(1.0), x[0])  # no root for x < 0
        return norm.logpdf(x[0], 2.0) + 0.0 * y

    with pytest.warns(mcg.SamplingWarning) as record:
        mcg.sample(partly, jnp.array([-0.2]), **{**SMALL, "warn": True, "kernel": "mala"})
    jitter = [str(w.message) for w in record if "given init" in str(w.message)]
    assert len(jitter) == 1
    assert re.search(r"chains 0, 1: at chain 0's start the log-density is NaN", jitter[0])
    assert "An inner solve did not converge there (1 solve" in jitter[0]


def test_bool_settings_must_be_bools():
    for name in ("dense_mass", "solver_stats", "warn", "init_per_chain"):
        with pytest.raises(TypeError, match=f"{name} must be True or False, got 'no'"):
            mcg.sample(EXAMPLE.model, **{**SMALL, name: "no"})


def test_broken_generated_quantities_fail_before_anything_is_compiled():
    def reads_a_missing_name(p, key):
        return {"r": p["radius"]}

    with traced_programs() as traced:
        with pytest.raises(ValueError, match=r"checked before sampling\): KeyError: 'radius'"):
            mcg.sample(EXAMPLE.model, **SMALL, generated_quantities=reads_a_missing_name)
        with pytest.raises(TypeError, match="must return a dict of name -> array, got list"):
            mcg.sample(EXAMPLE.model, **SMALL, generated_quantities=lambda p, k: [p["x"]])
        with pytest.raises(TypeError, match=r"checked before sampling\): TypeError"):
            mcg.sample(EXAMPLE.model, **SMALL, generated_quantities=lambda p, k: {"r": "text"})
    assert chain_programs(traced) == []  # neither warmup nor draws were traced


def _raises_beyond_one(x):
    # The inner solve fails for x > 1; on_failure="raise" asks for an error there.
    solve = mcg.root(lambda y, a: y**2 - a, jnp.array(1.0), 1.0 - x[0], on_failure="raise")
    return norm.logpdf(x[0]) + 0.0 * solve


def test_on_failure_raise_inside_sample_is_a_solver_error(capfd):
    with pytest.raises(mcg.SolverError, match=r"^mcmc_customgrad\.root did not converge"):
        mcg.sample(_raises_beyond_one, jnp.zeros(1), **SMALL, kernel="mala")
    assert "jax.debug.callback failed" not in capfd.readouterr().err
    with pytest.raises(mcg.SolverError, match="did not converge"):
        mcg.check_gradients(_raises_beyond_one, jnp.array([3.0]))


def test_draw_pass_parts_are_ordered_without_changing_values():
    # The per-draw pass orders its parts (generated quantities, solver statistics,
    # log-likelihood), which XLA:CPU would otherwise run at once: two batched LAPACK
    # kernels of jaxlib 0.10 at once deadlock a 2-thread pool (check_gradients orders its
    # value, gradient and Hessians the same way). The values are unchanged, whatever the
    # dependencies hold.
    from jax.extend import core as jex_core

    from mcmc_customgrad._order import after as _after

    tree = {"a": jnp.array([1.5, -2.0, 0.0]), "n": jnp.array([3, 4])}
    for deps in (
        {"x": jnp.array([jnp.nan, jnp.inf])},
        {"x": jnp.array([-1e308, -1e308])},
        {"k": jnp.array(7), "y": jnp.array([2.0])},
    ):
        out = _after(tree, deps)
        np.testing.assert_array_equal(out["a"], tree["a"])
        np.testing.assert_array_equal(out["n"], tree["n"])
    jaxpr = jax.make_jaxpr(lambda x, d: _after(x, d))(jnp.ones(2), jnp.ones(3)).jaxpr
    reached = {jaxpr.invars[1]}
    for eqn in jaxpr.eqns:
        if any(not isinstance(v, jex_core.Literal) and v in reached for v in eqn.invars):
            reached.update(eqn.outvars)
    assert jaxpr.outvars[0] in reached
    assert _after(tree, {"k": jnp.array(7)}) is tree
