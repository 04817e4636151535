"""The validation protocol on real NUTS runs: what each kind of bug looks like.

``docs/diagnostics.md`` explains the pattern these tests pin down. A gradient that is
wrong but depends on the position only (seed 001's clipped rule, seed 002's
straight-through rule) leaves HMC exact: ``check_gradients`` fails it, the comparison of
the draws passes, and the efficiency checks fail. A wrong *value* (an inner solver
stopped after too few steps, its last iterate kept) shifts the posterior, and the
comparison fails.
"""

import jax
import jax.numpy as jnp
import pytest
from jax.scipy.stats import norm

import mcmc_customgrad as mcg
from mcmc_customgrad.models.conjugate import conjugate_inner

# Statistical power on real NUTS runs (three 4 x 3,500-step runs): CI's slow tier.
pytestmark = pytest.mark.slow

Q = 1.5  # conjugate exponent of p = 3
RUN = dict(num_chains=4, num_warmup=1000, num_samples=2500, seed=0, warn=False)
SPEC = {"x": mcg.real(shape=(2,))}


def f_closed(x):
    return jnp.sum(jnp.abs(x) ** Q / Q)


@jax.custom_jvp
def f_clipped(x):
    return f_closed(x)


@f_clipped.defjvp
def _clipped_jvp(primals, tangents):
    # Seed 001's clip_gradient idea applied to f' = sign(x) |x|^(1/2): wrong beyond 0.1.
    (x,), (t,) = primals, tangents
    return f_closed(x), jnp.sum(jnp.clip(jnp.sign(x) * jnp.sqrt(jnp.abs(x)), -0.1, 0.1) * t)


def f_stopped_early(x):
    # One L-BFGS step from y0 = 0, the last iterate kept: f is 2% to 13% low.
    solver = mcg.solvers.LBFGS(max_steps=1)
    return -mcg.min_value(conjugate_inner, jnp.zeros(2), x, 3.0, solver=solver, on_failure="last")


def density(f):
    return mcg.Model(lambda p: jnp.sum(norm.logpdf(p["x"])) + norm.logpdf(f(p["x"])), SPEC)


@pytest.fixture(scope="module")
def reference():
    return mcg.sample(mcg.models.conjugate(d=2).reference, **RUN)


def test_the_demo_passes_both_lines_by_design(reference):
    # The demo's settings and seed: the correct density passes the verdict and the
    # efficiency line, whose interval covers a ratio of 1.
    custom = mcg.sample(mcg.models.conjugate(d=2).model, **RUN)
    report = mcg.compare_chains(custom, reference, gradients_passed=True)
    assert report.passed, report.failures
    assert report.efficiency_passed is True, report.efficiency_failures
    ratio = {e["key"]: e for e in report.efficiency}["ess_per_grad"]
    assert ratio["interval"][0] < 1.0 < ratio["interval"][1]


# Seed 002's straight-through rule behaves the same (step size 0.31x, ESS per gradient
# evaluation 0.04x of the reference's, distribution passed); only the clipped rule runs
# here, to keep CI within its time budget.
@pytest.mark.parametrize("f", [f_clipped], ids=["clipped"])
def test_wrong_position_only_gradient_shows_in_gradients_and_efficiency(f, reference):
    model = density(f)
    closed = mcg.models.conjugate(d=2).reference
    gradients = mcg.check_gradients(model, model.init, closed, order=1, num_points=5)
    assert not gradients.passed
    assert {"grad", "grad_fd"} <= {r["check"] for r in gradients.rows if not r["passed"]}
    report = mcg.compare_chains(mcg.sample(model, **RUN), reference)
    assert report.passed, report.failures  # HMC stays exact: the posterior is right
    assert report.efficiency_passed is False  # ... at a cost
    assert any("step size" in f for f in report.efficiency_failures)
    assert any("ESS per gradient evaluation" in f for f in report.efficiency_failures)


def test_inner_solver_stopped_early_shifts_the_posterior(reference):
    model = density(f_stopped_early)
    report = mcg.compare_chains(mcg.sample(model, **RUN), reference)
    assert not report.passed
    # f is too low, so N(f(x)) is flatter and the draws wider: the joint second-moment
    # test sees it at z ~ 7 (per-parameter tests only at 3 to 5).
    assert any("wider overall" in f for f in report.failures), report.failures
