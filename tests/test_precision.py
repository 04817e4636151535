"""float32 is named when it is the cause: one warning per process, hints in failures."""

import jax.numpy as jnp
import pytest

import mcmc_customgrad as mcg
from mcmc_customgrad import _precision

# The float32 fixture (conftest.py) runs a test in float32 with a fresh warning flag.


def _model():
    example = mcg.models.conjugate(d=2)
    return example.model, example.reference


def test_float32_warns_once_naming_float64_and_the_fix(float32):
    with pytest.warns(mcg.Float32Warning, match=r"float32.*jax_enable_x64.*True\)") as caught:
        model, _ = _model()
        with pytest.raises(ValueError):  # the warning comes before the settings check
            mcg.sample(model, num_chains=0)
    assert len(caught) == 1  # Model, Model and sample: warned once
    assert "mcg.Model" in str(caught[0].message)


def test_sample_and_check_gradients_warn_too(float32):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mcg.Float32Warning)
        model, _ = _model()
    for call in (
        lambda: mcg.sample(model, num_chains=0),
        lambda: mcg.check_gradients(model, model.init, num_points=0),
    ):
        _precision._warned = False
        with pytest.warns(mcg.Float32Warning) as caught, pytest.raises(ValueError):
            call()
        assert len(caught) == 1


def test_float32_gradient_failure_says_float32(float32):
    with pytest.warns(mcg.Float32Warning):
        model, reference = _model()
        report = mcg.check_gradients(model, model.init, reference, order=1, num_points=3)
    assert not report.passed  # 1e-7 errors against 1e-8 tolerances
    assert any("float32" in f and "jax_enable_x64" in f for f in report.failures)


def test_solver_error_names_float32_and_inexact_values(float32):
    def fails(a):
        solver = mcg.solvers.Newton(max_steps=1)
        return mcg.root(lambda y, a: y**3 - a, jnp.ones(()), a, solver=solver, on_failure="raise")

    with pytest.raises(mcg.SolverError) as err:
        fails(jnp.float32(27.0))
    text = str(err.value)
    assert "float32" in text
    assert "exact only to that tolerance" in text  # a looser tolerance has a price


def test_float64_says_nothing_of_float32(recwarn):
    _model()
    assert _precision.float32_hint() == ""
    with pytest.raises(mcg.SolverError) as err:
        solver = mcg.solvers.Newton(max_steps=1)
        mcg.root(lambda y, a: y**3 - a, 1.0, 27.0, solver=solver, on_failure="raise")
    assert "float32" not in str(err.value)
    assert not [w for w in recwarn if issubclass(w.category, mcg.Float32Warning)]
