"""check_gradients: passes on correct densities, fails on wrong gradients and hidden state."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.stats import norm

import mcmc_customgrad as mcg
from mcmc_customgrad import _arviz
from mcmc_customgrad.diagnostics.gradients import GradientReport, check_gradients
from mcmc_customgrad.models.conjugate import conjugate_inner

CONJ = mcg.models.conjugate(d=3)
KEPLER = mcg.models.kepler()
CHECKS_ORDER2 = [
    "value",
    "grad",
    "hessian",
    "grad_fd",
    "hessian_fd",
    "fwd_rev",
    "fwd_rev_hessian",
    "jit_vmap",
    "repeat",
]


def conjugate_prior(key):
    return {"x": 1.5 * jax.random.normal(key, (3,))}


def kepler_prior(key):
    """The model's prior: what a prior-predictive check would draw."""
    k = jax.random.split(key, 6)
    return {
        "period": 12.3 * jnp.exp(0.2 * jax.random.normal(k[0])),
        "amplitude": 5.0 * jnp.exp(jax.random.normal(k[1])),
        "ecc": jax.random.uniform(k[2], maxval=0.9),
        "omega": jax.random.uniform(k[3], minval=-jnp.pi, maxval=jnp.pi),
        "phase": jax.random.uniform(k[4], maxval=2 * jnp.pi),
        "jitter": 0.5 * jnp.exp(jax.random.normal(k[5])),
    }


def wrong_conjugate(rule):
    """Seed 000's density, inner Newton solve included, with a deliberately wrong derivative.

    The value is right; the derivative of ``f(x) = -min_y g(y; x)`` should be the argmin
    ``y*(x)`` (envelope theorem). ``"clip"`` clips it to [-0.5, 0.5], ``"straight"`` uses 1.
    """

    @jax.custom_jvp
    def f(x):
        return -mcg.min_value(conjugate_inner, jnp.zeros_like(x), x, 3.0)

    @f.defjvp
    def _jvp(primals, tangents):
        (x,), (dx,) = primals, tangents
        y = mcg.argmin(conjugate_inner, jnp.zeros_like(x), x, 3.0)
        slope = jnp.clip(y, -0.5, 0.5) if rule == "clip" else jnp.ones_like(x)
        return f(x), jnp.sum(slope * dx)

    def density(params):
        return jnp.sum(norm.logpdf(params["x"])) + norm.logpdf(f(params["x"]))

    return mcg.Model(density, {"x": mcg.real(shape=(3,))})


WRONG = {rule: wrong_conjugate(rule) for rule in ("clip", "straight")}
# Flat points for the conjugate model where the clipped derivative is wrong: |x_i| > 0.25.
WRONG_POINTS = np.array([[0.9, -1.4, 0.5], [-2.0, 0.7, 1.3], [1.1, 1.6, -0.8], [0.3, -0.6, 2.2]])


def failed(report):
    return [r["check"] for r in report.rows if not r["passed"]]


@pytest.fixture(scope="module")
def conj_report():
    return check_gradients(CONJ.model, conjugate_prior, CONJ.reference, order=2)


@pytest.fixture(scope="module")
def kepler_report():
    # 8 prior draws: compilation, not the number of points, is what costs here.
    return check_gradients(KEPLER.model, kepler_prior, KEPLER.reference, order=2, num_points=8)


# ----------------------------------------------------------------------------- correct


def test_conjugate_passes_at_second_order(conj_report):
    assert isinstance(conj_report, GradientReport)
    assert conj_report.passed, str(conj_report)
    assert conj_report.failures == []
    assert [r["check"] for r in conj_report.rows] == CHECKS_ORDER2
    for row in conj_report.rows:
        assert row["max_rel_error"] <= row["threshold"]
        assert row["compared"] > 0 and row["skipped"] == 0
    assert set(conj_report.max_abs_error) == set(CHECKS_ORDER2) == set(conj_report.max_rel_error)
    # Inner Newton at 1e-10: the gradient is far tighter than the protocol's 1e-6.
    assert conj_report.max_rel_error["grad"] < 1e-8
    assert conj_report.max_rel_error["hessian"] < 1e-8


def test_sampler_points_are_the_prior_draws(conj_report):
    keys = jax.random.split(jax.random.key(0), 20)
    expected = np.stack([np.asarray(conjugate_prior(k)["x"]) for k in keys])
    np.testing.assert_array_equal(conj_report.points, expected)
    assert conj_report.labels == ["x[0]", "x[1]", "x[2]"]
    v_ref = float(CONJ.reference.logdensity(expected[7]))
    assert conj_report.reference_values[7] == pytest.approx(v_ref, rel=1e-12)
    assert conj_report.fd_grads.shape == (20, 3) and conj_report.hessians.shape == (20, 3, 3)


@pytest.mark.slow  # Kepler at second order compiles for 25 s
def test_kepler_passes_at_second_order(kepler_report):
    # Root solve (Kepler's equation) inside; reference with a hand-derived derivative.
    assert kepler_report.passed, str(kepler_report)
    assert kepler_report.labels == ["period", "amplitude", "ecc", "omega", "phase", "jitter"]
    assert kepler_report.max_rel_error["hessian"] < 1e-7
    # Plain central differences would be off by ~1e-5 here (large third derivatives in
    # the period); the Richardson step keeps the finite-difference check tight.
    assert kepler_report.max_rel_error["grad_fd"] < 1e-6


# ----------------------------------------------------------------------------- power


@pytest.mark.parametrize("rule", ["clip", "straight"])
def test_wrong_derivative_fails_against_reference(rule):
    report = check_gradients(WRONG[rule], WRONG_POINTS, CONJ.reference, order=1)
    assert not report.passed
    assert "grad" in failed(report) and "grad_fd" in failed(report)
    assert "value" not in failed(report)  # the value is right: only derivatives tell
    assert report.max_rel_error["grad"] > 1e-2
    assert any(f.startswith("grad (") and "x[" in f for f in report.failures)
    assert str(report).startswith(f"FAILED: {len(failed(report))} of {len(report.rows)} checks")


@pytest.mark.parametrize("rule", ["clip", "straight"])
def test_wrong_derivative_fails_against_finite_differences_alone(rule):
    report = check_gradients(WRONG[rule], WRONG_POINTS, order=1)
    assert failed(report) == ["grad_fd"]
    assert report.max_rel_error["grad_fd"] > 1e-2
    assert "value" not in report.max_rel_error  # no reference, no reference checks


def first_order_only():
    """The conjugate with its envelope derivative y*(x) frozen by stop_gradient.

    The gradient is right, the Hessian misses dy*/dx: the shortcut that is wrong only at
    second order.
    """

    @jax.custom_jvp
    def f(x):
        return jnp.sum(jnp.abs(x) ** 1.5 / 1.5)

    @f.defjvp
    def _jvp(primals, tangents):
        (x,), (dx,) = primals, tangents
        y = jax.lax.stop_gradient(jnp.sign(x) * jnp.sqrt(jnp.abs(x)))
        return f(x), jnp.sum(y * dx)

    def density(params):
        return jnp.sum(norm.logpdf(params["x"])) + norm.logpdf(f(params["x"]))

    return mcg.Model(density, {"x": mcg.real(shape=(3,))})


def test_second_order_shortcut_fails_only_at_second_order():
    model = first_order_only()
    report = check_gradients(model, WRONG_POINTS, CONJ.reference, order=2)
    assert set(failed(report)) == {"hessian", "hessian_fd"}
    assert report.max_rel_error["grad"] < 1e-10
    assert report.max_rel_error["hessian"] > 1e-2


def test_tolerances_are_applied(conj_report):
    # Same model, points and order as conj_report: the compiled programs are reused.
    tight = check_gradients(
        CONJ.model, conjugate_prior, CONJ.reference, grad_rtol=1e-14, hessian_rtol=1e-14
    )
    assert set(failed(tight)) == {"grad", "hessian"}
    assert tight.max_rel_error["grad"] == conj_report.max_rel_error["grad"]
    assert any(f.startswith("grad (") and "tolerance 1e-14" in f for f in tight.failures)
    with pytest.raises(ValueError, match="fd_rtol must be a positive number"):
        check_gradients(quadratic, np.zeros((2, 3)), fd_rtol=0.0)


def test_non_finite_value_where_reference_is_finite_fails():
    ref = CONJ.reference.logdensity

    def nan_beyond_one(x):
        return jnp.where(x[0] > 1.0, jnp.nan, ref(x))

    report = check_gradients(nan_beyond_one, WRONG_POINTS, ref, order=1)
    assert "value" in failed(report)
    message = next(f for f in report.failures if f.startswith("value"))
    assert "non-finite" in message and "NaN" in message and "point 2" in message


def test_a_density_that_is_nan_everywhere_fails_without_a_reference():
    report = check_gradients(lambda x: jnp.sum(x) * jnp.nan, WRONG_POINTS, order=1)
    assert not report.passed
    assert "grad_fd" in failed(report)
    assert any("nothing compared" in f for f in report.failures)


# ----------------------------------------------------------------------------- state


def test_host_callback_state_fails_consistency():
    calls = []

    def counter(_):
        calls.append(1)
        return np.float64(len(calls))

    def stateful(x):
        shape = jax.ShapeDtypeStruct((), x.dtype)
        n = jax.pure_callback(counter, shape, jax.lax.stop_gradient(x), vmap_method="sequential")
        return -0.5 * jnp.sum(x**2) + 1e-6 * n

    report = check_gradients(stateful, WRONG_POINTS[:2], order=1)
    assert "repeat" in failed(report) and "jit_vmap" in failed(report)


def test_trace_time_state_fails_jit_vs_eager():
    traces = []

    def retraced(x):
        traces.append(1)  # Python state: eager calls see a new count, jit the traced one
        return -0.5 * jnp.sum(x**2) * (1.0 + 1e-3 * len(traces))

    report = check_gradients(retraced, WRONG_POINTS[:2], order=1)
    assert "jit_vmap" in failed(report)
    assert any(f.startswith("jit_vmap") and "relative error" in f for f in report.failures)


# ----------------------------------------------------------------------------- inputs


def quadratic(x):
    return -0.5 * jnp.sum(x**2 * jnp.arange(1.0, x.shape[0] + 1)) + jnp.sum(jnp.sin(x))


def test_ndarray_points_and_a_single_point():
    points = np.array([[0.1, -0.4], [1.5, 2.0], [-3.0, 0.2]])
    many = check_gradients(quadratic, points, order=2)
    assert many.passed, str(many)
    np.testing.assert_array_equal(many.points, points)
    assert many.labels == ["x[0]", "x[1]"]
    assert "value" not in many.max_rel_error and "grad_fd" in many.max_rel_error
    expected = np.asarray(jax.vmap(jax.grad(quadratic))(points))
    np.testing.assert_allclose(many.grads, expected, rtol=1e-14)
    np.testing.assert_allclose(many.fd_grads, expected, rtol=1e-8, atol=1e-8)
    one = check_gradients(quadratic, points[1], order=1)
    assert one.passed and one.points.shape == (1, 2)
    assert "hessian_fd" not in one.max_rel_error


def test_inference_data_points():
    rng = np.random.default_rng(1)
    draws = rng.normal(size=(2, 50, 3))
    idata = _arviz.to_inference_data({"x": draws}, {"diverging": np.zeros((2, 50), bool)})
    # 20 points at order 2, as for conj_report: the compiled programs are reused.
    report = check_gradients(CONJ.model, idata, CONJ.reference, seed=3)
    assert report.passed, str(report)
    assert report.points.shape == (20, 3)
    flat = draws.reshape(100, 3)  # the model's x is unconstrained: flat == constrained
    rows = [int(np.nonzero((flat == p).all(axis=1))[0][0]) for p in report.points]
    assert [r // 5 for r in rows] == list(range(20))  # one draw from each fifth-of-a-slice
    assert {r // 50 for r in rows} == {0, 1}  # both chains
    assert "20 of 100 posterior draws" in report.source
    # The same seed picks the same draws; another seed others.
    same = check_gradients(CONJ.model, idata, seed=3)
    np.testing.assert_array_equal(same.points, report.points)
    other = check_gradients(CONJ.model, idata, seed=4)
    assert not np.array_equal(other.points, report.points)
    short = _arviz.to_inference_data({"x": draws[:1, :20]}, {"diverging": np.zeros((1, 20))})
    every = check_gradients(CONJ.model, short, num_points=50)
    np.testing.assert_array_equal(every.points, draws[0, :20])  # at most every draw


def test_flat_sampler_for_a_plain_callable():
    report = check_gradients(
        quadratic, lambda key: jax.random.normal(key, (4,)), order=1, num_points=3, seed=5
    )
    assert report.passed and report.points.shape == (3, 4)
    keys = jax.random.split(jax.random.key(5), 3)
    np.testing.assert_array_equal(report.points[2], np.asarray(jax.random.normal(keys[2], (4,))))


# ----------------------------------------------------------------------------- report


def test_report_text_and_markdown(conj_report):
    text = str(conj_report)
    assert text.startswith("PASSED: all 9 checks, gradient checks")
    assert "| check |" in text and "| hessian_fd |" in text
    md = conj_report.to_markdown()
    assert md.startswith("## Gradient checks")
    assert "| x[2] |" in conj_report.parameter_table and "| x[2] |" in md
    assert conj_report.table.count("\n") == 1 + len(CHECKS_ORDER2)


def test_plot_writes_a_png(conj_report, tmp_path):
    path = conj_report.plot(tmp_path / "grad.png")
    assert path == str(tmp_path / "grad.png")
    with open(path, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- errors


def test_fn_not_callable():
    with pytest.raises(TypeError, match=r"fn must be an mcg\.Model or a callable"):
        check_gradients(3.0, np.zeros((2, 3)))
    with pytest.raises(TypeError, match="reference must be"):
        check_gradients(quadratic, np.zeros((2, 3)), reference="closed form")


def test_points_of_the_wrong_dimension():
    with pytest.raises(ValueError, match=r"dimension 2, expected 3"):
        check_gradients(CONJ.model, np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"shape \(2,\); expected a flat vector of shape \(3,\)"):
        check_gradients(CONJ.model, lambda key: jnp.zeros(2))
    with pytest.raises(ValueError, match=r"shape \(num_points, dim\)"):
        check_gradients(quadratic, np.zeros((2, 3, 1)))
    with pytest.raises(ValueError, match="reference has dimension 3, expected 6"):
        check_gradients(KEPLER.model, np.zeros((1, 6)), CONJ.reference)


def test_inference_data_without_a_model():
    idata = _arviz.to_inference_data({"x": np.zeros((1, 4, 3))}, {"diverging": np.zeros((1, 4))})
    with pytest.raises(TypeError, match=r"InferenceData.*fn must be an mcg\.Model"):
        check_gradients(quadratic, idata)


def test_dict_points_need_a_model():
    with pytest.raises(TypeError, match=r"dict of constrained values, but fn is not an mcg\.Model"):
        check_gradients(quadratic, lambda key: {"x": jnp.zeros(3)})


def test_non_scalar_log_density():
    with pytest.raises(ValueError, match="must return a real scalar log-density"):
        check_gradients(lambda x: x**2, np.zeros((2, 3)))
    with pytest.raises(ValueError, match="reference must return a real scalar"):
        check_gradients(quadratic, np.zeros((2, 3)), reference=lambda x: x)


@pytest.mark.parametrize("bad", [0, -3, 2.5])
def test_num_points_must_be_positive(bad):
    with pytest.raises(ValueError, match="num_points must be"):
        check_gradients(quadratic, np.zeros((2, 3)), num_points=bad)


def test_order_and_non_finite_points():
    with pytest.raises(ValueError, match="order must be 1 or 2"):
        check_gradients(quadratic, np.zeros((2, 3)), order=3)
    with pytest.raises(ValueError, match=r"points \[1\] have non-finite"):
        check_gradients(quadratic, np.array([[0.0, 1.0], [np.nan, 0.0]]))
