"""Coupled chains (validation protocol, section 2): right densities coincide, wrong ones part."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mcmc_customgrad as mcg
from mcmc_customgrad.diagnostics.coupled import CoupledReport, coupled_chains

NUM_STEPS = 60


@pytest.fixture(scope="module")
def conj():
    return mcg.models.conjugate(d=3)


@pytest.fixture(scope="module")
def base(conj):
    """The inner-solve model against its closed form, NUTS, adapted on the reference."""
    return coupled_chains(conj.model, conj.reference, num_steps=NUM_STEPS, num_warmup=100)


def _adapted(report):
    """Reuse one adaptation (skips the warmup): the same start, step size, mass matrix."""
    return dict(
        init=report.start,
        step_size=report.step_size,
        inverse_mass_matrix=report.inverse_mass_matrix,
        num_steps=NUM_STEPS,
    )


def _with_gradient(logdensity, change):
    """``logdensity`` with its exact value and the derivative ``change(gradient)``."""

    @jax.custom_jvp
    def f(x):
        return logdensity(x)

    @f.defjvp
    def _jvp(primals, tangents):
        (x,), (dx,) = primals, tangents
        value, grad = jax.value_and_grad(logdensity)(x)
        return value, jnp.dot(change(grad), dx)

    return f


# ----------------------------------------------------------------------------- coincide


def test_conjugate_model_couples_with_reference(base):
    assert isinstance(base, CoupledReport)
    assert base.passed, str(base)
    assert base.failures == []
    assert base.first_divergence is None
    assert base.step_agreement == 1.0
    np.testing.assert_array_equal(base.num_integration_steps, base.reference_num_integration_steps)
    assert base.max_scaled_difference <= 1e-6
    assert base.positions.shape == base.reference_positions.shape == (NUM_STEPS, 3)
    assert base.labels == ["x[0]", "x[1]", "x[2]"]
    # the chain explored: the comparison is not vacuous
    assert np.ptp(base.reference_positions, axis=0).min() > 0.5
    # the model's inner solve runs at 1e-10: the values agree along the whole path
    assert np.max(np.abs(base.value_difference)) < 1e-8
    # the default scale is the adapted mass matrix
    np.testing.assert_allclose(base.sd, np.sqrt(base.inverse_mass_matrix))


def test_report_shape(base, tmp_path):
    text = str(base)
    assert text.startswith("PASSED: all 3 checks, coupled chains")
    assert base.table in text
    assert base.table.splitlines()[0].startswith("| check |")
    assert len(base.table.splitlines()) == len(base.rows) + 2
    assert sum(r["passed"] is not None for r in base.rows) == 3
    assert base.to_markdown().startswith("## Coupled chains")
    path = base.plot(tmp_path / "coupled.png")
    with open(path, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow  # long coupled NUTS run on Kepler
def test_kepler_model_couples_with_reference():
    ex = mcg.models.kepler(num_obs=15)
    report = coupled_chains(ex.model, ex.reference, ex.data["truth"], num_steps=40, num_warmup=60)
    assert report.passed, str(report)
    assert report.first_divergence is None
    assert report.labels == list(ex.model.names)
    assert np.max(np.abs(report.value_difference)) < 1e-6


def test_identical_density_is_bitwise_identical_on_a_pytree():
    def logdensity(p):
        return -0.5 * jnp.sum(p["a"] ** 2) - 0.5 * (p["b"] - 1.0) ** 2 / 4.0

    init = {"a": jnp.zeros(2), "b": jnp.array(1.0)}
    report = coupled_chains(
        logdensity,
        logdensity,
        init,
        step_size=0.8,
        inverse_mass_matrix=jnp.array([1.0, 1.0, 4.0]),
        num_steps=40,
        sd="reference",
    )
    assert report.passed
    assert report.labels == ["a[0]", "a[1]", "b"]
    np.testing.assert_array_equal(report.positions, report.reference_positions)
    assert np.all(report.scaled_difference == 0)
    np.testing.assert_allclose(report.sd, np.std(report.reference_positions, axis=0, ddof=1))
    assert report.sd_source == "reference"


def test_hmc_kernel(conj):
    report = coupled_chains(
        conj.model,
        conj.reference,
        kernel="hmc",
        num_integration_steps=8,
        num_steps=40,
        num_warmup=60,
    )
    assert report.passed, str(report)
    assert report.kernel == "hmc"
    assert np.all(report.num_integration_steps == 8)
    assert report.max_scaled_difference <= 1e-6


# ----------------------------------------------------------------------------- part


@pytest.mark.parametrize(
    "change",
    [lambda g: 1.001 * g, lambda g: jnp.clip(g, -0.5, 0.5)],
    ids=["scaled by 1.001", "clipped"],
)
def test_wrong_gradient_does_not_couple(conj, base, change):
    wrong = _with_gradient(conj.reference.logdensity, change)
    report = coupled_chains(wrong, conj.reference, **_adapted(base))
    assert not report.passed
    first = report.first_divergence
    assert first is not None and first < report.num_compare
    assert any(f"first diverging transition: {first} " in f for f in report.failures)
    assert report.max_scaled_difference > 1e-6
    # the value is right: only the gradient differs
    assert np.max(np.abs(report.value_difference)) < 1e-12
    assert str(report).startswith("FAILED: ")


def test_wrong_value_does_not_couple(conj, base):
    def wrong(x):
        return 1.05 * conj.reference.logdensity(x)

    report = coupled_chains(wrong, conj.reference, **_adapted(base))
    assert not report.passed
    assert report.first_divergence is not None
    assert report.first_divergence < report.num_compare
    assert np.max(np.abs(report.value_difference)) > 1e-3
    assert any("first diverging transition" in f for f in report.failures)


# ----------------------------------------------------------------------------- errors


def _gauss(x):
    return -0.5 * jnp.sum(x**2)


def test_models_of_different_dimensions():
    a, b = mcg.models.conjugate(d=3), mcg.models.conjugate(d=2)
    with pytest.raises(ValueError, match=r"different dimensions \(3 .* 2"):
        coupled_chains(a.model, b.reference)


def test_callables_of_different_dimensions():
    def two(x):
        return -0.5 * jnp.dot(x, jnp.ones(2))

    with pytest.raises(ValueError, match="logdensity cannot be evaluated at the start"):
        coupled_chains(two, _gauss, jnp.zeros(3))


@pytest.mark.parametrize("num_steps", [0, -3, 2.5, True])
def test_bad_num_steps(num_steps):
    with pytest.raises(ValueError, match="num_steps must be an integer >= 1"):
        coupled_chains(_gauss, _gauss, jnp.zeros(2), num_steps=num_steps)


def test_unknown_kernel():
    with pytest.raises(ValueError, match="unknown kernel 'mala'"):
        coupled_chains(_gauss, _gauss, jnp.zeros(2), kernel="mala")


def test_unknown_sd():
    with pytest.raises(ValueError, match="unknown sd"):
        coupled_chains(_gauss, _gauss, jnp.zeros(2), sd="prior")


def test_non_scalar_density():
    with pytest.raises(ValueError, match="logdensity must return a real scalar"):
        coupled_chains(lambda x: -0.5 * x**2, _gauss, jnp.zeros(2))
    with pytest.raises(ValueError, match="reference_logdensity must return a real scalar"):
        coupled_chains(_gauss, lambda x: -0.5 * x**2, jnp.zeros(2))


def test_not_a_density():
    with pytest.raises(
        TypeError, match=r"reference_logdensity must be an mcg\.Model or a callable"
    ):
        coupled_chains(_gauss, 3.0, jnp.zeros(2))


def test_callables_need_init():
    with pytest.raises(ValueError, match="init is required"):
        coupled_chains(_gauss, _gauss)


def test_integer_init():
    with pytest.raises(TypeError, match="float"):
        coupled_chains(_gauss, _gauss, jnp.zeros(2, int))


def test_step_size_without_mass_matrix():
    with pytest.raises(ValueError, match="give both step_size and inverse_mass_matrix"):
        coupled_chains(_gauss, _gauss, jnp.zeros(2), step_size=0.5)


def test_mass_matrix_of_wrong_shape():
    with pytest.raises(ValueError, match=r"inverse_mass_matrix must have shape \(2,\)"):
        coupled_chains(_gauss, _gauss, jnp.zeros(2), step_size=0.5, inverse_mass_matrix=jnp.ones(3))


def test_model_init_of_wrong_shape(conj):
    with pytest.raises(ValueError, match=r"flat unconstrained vector of shape \(3,\)"):
        coupled_chains(conj.model, conj.reference, jnp.zeros(2))


def test_reference_not_finite_at_start():
    def log_only_positive(x):
        return jnp.sum(jnp.log(x))

    with pytest.raises(ValueError, match="reference log-density at the start is nan"):
        coupled_chains(_gauss, log_only_positive, -jnp.ones(2))
