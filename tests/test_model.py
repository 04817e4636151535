"""Model builder: constraints, log-Jacobians, validation, per-observation log-likelihood."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.stats import expon, norm

import mcmc_customgrad as mcg

CONSTRAINTS = [mcg.real(shape=(3,)), mcg.positive(shape=(3,)), mcg.interval(-1.5, 4.0, shape=(3,))]
IDS = ["real", "positive", "interval"]


@pytest.mark.parametrize("c", CONSTRAINTS, ids=IDS)
def test_log_jacobian_matches_numerical_jacobian(c):
    for u in (jnp.array([-3.0, 0.1, 2.5]), jnp.array([-30.0, 0.0, 30.0])):
        jac = jax.jacfwd(c.forward)(u)
        _, logdet = jnp.linalg.slogdet(jac)
        np.testing.assert_allclose(c.log_abs_det_jacobian(u), logdet, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("c", CONSTRAINTS, ids=IDS)
def test_inverse_round_trip(c):
    u = jnp.linspace(-15.0, 15.0, 3)
    np.testing.assert_allclose(c.inverse(c.forward(u)), u, rtol=1e-9, atol=1e-12)


def test_interval_is_precise_at_both_edges_in_float64():
    c = mcg.interval(0.0, 1.0)
    u = jnp.array([-30.0, 30.0, -700.0, 700.0])
    x = c.forward(u)
    assert np.all(np.isfinite(np.asarray(c.log_abs_det_jacobian(u))))
    # Near the lower end x ~ exp(u); near the upper end 1 - x ~ exp(-u) (computed from the
    # upper end, so the distance keeps its digits where representable).
    np.testing.assert_allclose(x[0], np.exp(-30.0), rtol=1e-12)
    assert x[1] < 1.0 and x[1] >= 1.0 - 1e-12
    # At u = -700 the distance to the lower end, 1e-304, is still represented; at +700 the
    # value rounds to the bound itself. Never NaN.
    np.testing.assert_allclose(x[2], np.exp(-700.0), rtol=1e-12)
    assert x[3] == 1.0
    np.testing.assert_allclose(c.log_abs_det_jacobian(jnp.array(-700.0)), -700.0, rtol=1e-12)
    np.testing.assert_allclose(jax.grad(c.log_abs_det_jacobian)(jnp.array(700.0)), -1.0, rtol=1e-12)


def test_positive_edges():
    c = mcg.positive()
    assert float(c.forward(-800.0)) == 0.0 and np.isfinite(float(c.log_abs_det_jacobian(-800.0)))


def test_constraint_validation():
    with pytest.raises(ValueError, match="finite lower < upper"):
        mcg.interval(1.0, 1.0)
    with pytest.raises(ValueError, match="finite lower < upper"):
        mcg.interval(0.0, np.inf)
    with pytest.raises(TypeError, match="shape must be a tuple of ints"):
        mcg.real(shape="3")
    with pytest.raises(ValueError, match="non-negative"):
        mcg.positive(shape=(-1,))
    assert mcg.real(shape=4).shape == (4,)


def test_change_of_variables_in_closed_form():
    # Exponential(1) on s = exp(u): density of u is exp(u - e^u). Uniform(a, b) on an
    # interval: density of u is sigmoid(u) sigmoid(-u).
    model = mcg.Model(
        lambda p: expon.logpdf(p["s"]) + jnp.log(1 / 3.0) * 1.0 + 0.0 * p["t"],
        params={"s": mcg.positive(), "t": mcg.interval(2.0, 5.0)},
    )
    u = jnp.array([0.7, -1.3])
    expected = (
        (0.7 - np.exp(0.7))
        + np.log(1 / 3.0)
        + np.log(3.0)
        + np.log(jax.nn.sigmoid(-1.3) * jax.nn.sigmoid(1.3))
    )
    np.testing.assert_allclose(model.logdensity(u), expected, rtol=1e-12)
    # ... and the density of u integrates to 1 (Exponential part, by quadrature).
    grid = jnp.linspace(-30.0, 5.0, 200_001)
    one = mcg.Model(lambda p: expon.logpdf(p["s"]), params={"s": mcg.positive()})
    dens = jnp.exp(jax.vmap(lambda u: one.logdensity(u[None]))(grid))
    np.testing.assert_allclose(jnp.trapezoid(dens, grid), 1.0, rtol=1e-8)


def logdensity_mixed(p):
    return jnp.sum(norm.logpdf(p["f"])) + expon.logpdf(p["rho"]) + expon.logpdf(p["alpha"])


SPEC = {"rho": mcg.positive(), "alpha": mcg.positive(), "f": mcg.real(shape=(11,))}


def test_layout_names_and_round_trip():
    model = mcg.Model(logdensity_mixed, params=SPEC)
    assert model.names == ("rho", "alpha", "f") and model.dim == 13
    params = {"rho": jnp.array(2.0), "alpha": jnp.array(0.5), "f": jnp.arange(11.0)}
    flat = model.to_unconstrained(params)
    np.testing.assert_allclose(flat[:2], [np.log(2.0), np.log(0.5)])
    back = model.to_constrained(flat)
    for name in params:
        np.testing.assert_allclose(back[name], params[name], rtol=1e-12)
    np.testing.assert_allclose(
        model.logdensity(flat), logdensity_mixed(params) + np.log(2.0) + np.log(0.5), rtol=1e-12
    )


def test_logdensity_with_an_inner_solve_under_jit_and_grad():
    def inner(y, x):
        return jnp.sum(jnp.abs(y) ** 3 / 3 - x * y)

    def logdensity(p):
        f = -mcg.min_value(inner, jnp.zeros(3), p["x"])
        return jnp.sum(norm.logpdf(p["x"])) + norm.logpdf(f) + expon.logpdf(p["s"])

    def reference(p):
        f = jnp.sum(jnp.abs(p["x"]) ** 1.5 / 1.5)
        return jnp.sum(norm.logpdf(p["x"])) + norm.logpdf(f) + expon.logpdf(p["s"])

    spec = {"x": mcg.real(shape=(3,)), "s": mcg.positive()}
    model, ref = mcg.Model(logdensity, spec), mcg.Model(reference, spec)
    flat = jnp.array([0.3, -1.2, 2.0, 0.4])
    np.testing.assert_allclose(jax.jit(model.logdensity)(flat), ref.logdensity(flat), rtol=1e-10)
    np.testing.assert_allclose(
        jax.grad(model.logdensity)(flat), jax.grad(ref.logdensity)(flat), rtol=1e-7
    )


def test_init_is_seeded_and_in_range():
    model = mcg.Model(logdensity_mixed, params=SPEC)
    a, b = model.init(jax.random.key(1)), model.init(jax.random.key(1))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (13,) and np.all(np.abs(a) < 2.0)
    assert np.isfinite(model.logdensity(a))


def test_per_observation_log_likelihood():
    y = jnp.array([0.5, -1.0, 2.0, 0.1])

    def loglik(p):
        return norm.logpdf(y, p["mu"], p["sigma"])

    model = mcg.Model(
        lambda p: jnp.sum(loglik(p)) + norm.logpdf(p["mu"]) + expon.logpdf(p["sigma"]),
        params={"mu": mcg.real(), "sigma": mcg.positive()},
        log_likelihood_fn=loglik,
    )
    flat = jnp.array([0.2, 0.0])
    np.testing.assert_allclose(model.log_likelihood(flat), norm.logpdf(y, 0.2, 1.0), rtol=1e-12)
    assert jax.vmap(model.log_likelihood)(jnp.zeros((5, 2))).shape == (5, 4)


def test_bad_models_are_rejected_before_compiling():
    ok = {"s": mcg.positive()}
    with pytest.raises(ValueError, match="must return a real scalar"):
        mcg.Model(lambda p: jnp.stack([p["s"], p["s"]]), ok)
    with pytest.raises(ValueError, match="reads parameter 'sigma'"):
        mcg.Model(lambda p: p["s"] + p["sigma"], ok)
    with pytest.raises(ValueError, match=r"declares \['t'\] but logdensity_fn never reads"):
        mcg.Model(lambda p: -p["s"], {"s": mcg.positive(), "t": mcg.real()})
    with pytest.raises(TypeError, match="unknown constraint for 's'"):
        mcg.Model(lambda p: -p["s"], {"s": "positive"})
    with pytest.raises(TypeError, match="non-empty dict"):
        mcg.Model(lambda p: 0.0, {})
    with pytest.raises(TypeError, match="logdensity_fn must be callable"):
        mcg.Model(3.0, ok)
    with pytest.raises(TypeError, match="log_likelihood_fn must be callable"):
        mcg.Model(lambda p: -p["s"], ok, log_likelihood_fn=1)
    with pytest.raises(ValueError, match="float array of per-observation"):
        mcg.Model(lambda p: -p["s"], ok, log_likelihood_fn=lambda p: jnp.arange(3))


def test_a_keyerror_of_the_users_own_is_not_blamed_on_params():
    data = {"y": jnp.ones(3)}
    with pytest.raises(KeyError, match="'z'") as err:
        mcg.Model(lambda p: jnp.sum(data["z"]) - p["s"], {"s": mcg.positive()})
    assert "does not declare" not in str(err.value)


def test_a_function_that_maps_over_params_is_accepted():
    # tree_map over the params dict needs a real dict; the check falls back gracefully.
    model = mcg.Model(
        lambda p: sum(jax.tree.leaves(jax.tree.map(lambda v: -jnp.sum(v**2), p))),
        {"a": mcg.real(shape=(2,)), "b": mcg.real()},
    )
    np.testing.assert_allclose(model.logdensity(jnp.array([1.0, 2.0, 3.0])), -14.0)


def test_to_unconstrained_checks():
    model = mcg.Model(logdensity_mixed, params=SPEC)
    good = {"rho": 1.0, "alpha": 1.0, "f": jnp.zeros(11)}
    with pytest.raises(ValueError, match=r"missing \['f'\]"):
        model.to_unconstrained({"rho": 1.0, "alpha": 1.0})
    with pytest.raises(ValueError, match=r"unknown \['beta'\]"):
        model.to_unconstrained({**good, "beta": 1.0})
    with pytest.raises(ValueError, match=r"'f' has shape \(3,\)"):
        model.to_unconstrained({**good, "f": jnp.zeros(3)})
    # constraints are named as users write them, not by their private classes
    with pytest.raises(ValueError, match=r"outside the support of mcg\.positive\(\)"):
        model.to_unconstrained({**good, "rho": -1.0})
    assert repr(mcg.real(shape=(2,))) == "mcg.real(shape=(2,))"
    assert repr(mcg.interval(0, 1, shape=3)) == "mcg.interval(0.0, 1.0, shape=(3,))"
    with pytest.raises(ValueError, match=r"shape \(13,\)"):
        model.logdensity(jnp.zeros(4))
