"""The PDE-constrained inverse problem (mcg.models.pde_inverse): a sparse implicit solve
of a steady state on an m x m grid inside the likelihood, against its references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.linalg

import mcmc_customgrad as mcg
from mcmc_customgrad.models.pde import bratu_residual, laplacian_pattern, steady_state

SMALL = 8  # grid points per side of the fast tests (64 unknowns)


def thetas(example, num=4, seed=3):
    """The truth and ``num - 1`` points spread over the sampler's initialisation box."""
    truth = example.model.to_unconstrained(example.data["truth"])
    keys = jax.random.split(jax.random.key(seed), num - 1)
    return jnp.concatenate([truth[None], jax.vmap(example.model.init)(keys)])


def values_and_grads(model, points):
    return jax.jit(jax.vmap(jax.value_and_grad(model.logdensity)))(points)


def assert_close(got, want, rtol):
    """Gradients (one per row) equal, relative to each gradient's largest entry."""
    got, want = np.atleast_2d(got), np.atleast_2d(want)
    error = np.max(np.abs(got - want), axis=-1) / np.max(np.abs(want), axis=-1)
    assert np.all(error < rtol), error


def minus_laplacian(m):
    """-Lap_h as a scipy matrix, built independently of the module (kron of 1-D ones)."""
    h = 1.0 / (m + 1)
    t = scipy.sparse.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(m, m))
    eye = scipy.sparse.identity(m)
    return ((scipy.sparse.kron(t, eye) + scipy.sparse.kron(eye, t)) / h**2).tocsc()


@pytest.fixture(scope="module")
def linear():
    return mcg.models.pde_inverse(m=SMALL)


@pytest.fixture(scope="module")
def nonlinear():
    return mcg.models.pde_inverse(m=SMALL, c=1.0)


@pytest.mark.parametrize("m", [SMALL, pytest.param(12, marks=pytest.mark.slow)])
def test_linear_member_equals_the_closed_form(m, linear):
    example = linear if m == SMALL else mcg.models.pde_inverse(m=m)
    assert example.model.names == example.reference.names == ("theta",)
    points = thetas(example)
    (v, g), (v_ref, g_ref) = (values_and_grads(d, points) for d in example[:2])
    assert np.all(np.isfinite(v_ref))
    np.testing.assert_allclose(v, v_ref, rtol=1e-9)
    assert_close(g, g_ref, 1e-9)


def test_linear_member_equals_the_closed_form_at_m32():
    example = mcg.models.pde_inverse(m=32)
    theta = thetas(example, num=2)[1]
    v, g = jax.jit(jax.value_and_grad(example.model.logdensity))(theta)
    v_ref, g_ref = jax.value_and_grad(example.reference.logdensity)(theta)
    np.testing.assert_allclose(v, v_ref, rtol=1e-9)
    assert_close(g, g_ref, 1e-9)


@pytest.mark.parametrize("c", [0.0, 1.0])
def test_the_field_solves_the_pde_and_matches_the_simulation(c, linear, nonlinear):
    example = linear if c == 0.0 else nonlinear
    data, m = example.data, SMALL
    source = data["basis"] @ data["truth"]["theta"]
    u = steady_state(source, c)
    # The residual, recomputed with scipy's matrix: an independent stencil.
    residual = minus_laplacian(m) @ np.asarray(u) + c * np.exp(np.asarray(u)) - np.asarray(source)
    assert np.max(np.abs(residual)) < 1e-9
    np.testing.assert_allclose(bratu_residual(u, source, c), residual, atol=1e-9)
    # The same field the data were simulated from (the host's sparse Newton).
    np.testing.assert_allclose(u.reshape(m, m), data["u"], rtol=1e-10, atol=1e-12)
    # The observations are that field at the sensors, plus noise of the stated size.
    noise = data["y"] - data["u"].reshape(-1)[data["sensors"]]
    assert 0.5 * data["sigma"] < float(jnp.std(noise)) < 1.5 * data["sigma"]


def test_the_grid_is_not_transposed():
    # Bump 0 sits at (0.25, 0.3): the field is larger at node (i, j) = (x 0.25, y 0.3)
    # than at its mirror image (x 0.3, y 0.25), in the [i, j] = (x_i, x_j) layout.
    example = mcg.models.pde_inverse(m=19, num_params=1)  # h = 0.05
    u = steady_state(example.data["basis"][:, 0]).reshape(19, 19)
    assert float(u[4, 5]) > float(u[5, 4])  # x = 0.25 is node 4, y = 0.3 node 5


def test_pattern_is_the_jacobians_sparsity():
    m = 5
    u = jax.random.normal(jax.random.key(0), (m * m,))
    jac = jax.jacfwd(bratu_residual)(u, jnp.zeros(m * m), 1.0)
    pattern = laplacian_pattern(m).toarray()
    np.testing.assert_array_equal(np.asarray(jac) != 0, pattern != 0)
    np.testing.assert_allclose(jac, minus_laplacian(m).toarray() + np.diag(np.exp(u)), rtol=1e-12)


def test_nonlinear_member_equals_its_dense_reference(nonlinear):
    points = thetas(nonlinear)
    (v, g), (v_ref, g_ref) = (values_and_grads(d, points) for d in nonlinear[:2])
    assert np.all(np.isfinite(v_ref))
    np.testing.assert_allclose(v, v_ref, rtol=1e-9)
    assert_close(g, g_ref, 1e-9)
    # ... and the reaction term matters: the linear member's density is another one (away
    # from the truth, where both members' data are their own field plus the same noise).
    v_lin = values_and_grads(mcg.models.pde_inverse(m=SMALL).model, points)[0]
    assert np.all(np.abs(v - v_lin)[1:] > 1.0)


def test_nonlinear_gradient_matches_central_differences(nonlinear):
    f = jax.jit(nonlinear.model.logdensity)
    eps = 1e-5
    for theta in thetas(nonlinear, num=3, seed=5):
        g = jax.grad(nonlinear.model.logdensity)(theta)
        eye = jnp.eye(theta.shape[0])
        fd = jnp.array([(f(theta + eps * e) - f(theta - eps * e)) / (2 * eps) for e in eye])
        # Central differences: truncation ~ eps^2 f''' and rounding ~ eps_mach |f| / eps.
        np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-6 * float(jnp.max(jnp.abs(g))))


@pytest.mark.slow
def test_second_order_through_the_sparse_solve():
    # jax.hessian is forward over reverse: the tangent solve batched over a second vmap.
    example = mcg.models.pde_inverse(m=6, c=1.0)
    theta = jnp.array([0.5, -1.0, 1.5, 0.2])
    hessian = jax.hessian(example.model.logdensity)(theta)
    hessian_ref = jax.hessian(example.reference.logdensity)(theta)
    assert_close(hessian, hessian_ref, 1e-8)


@pytest.mark.slow
def test_vmap_over_parameters_equals_one_at_a_time(linear, nonlinear):
    for example in (linear, nonlinear):
        points = thetas(example, num=5)
        v, g = values_and_grads(example.model, points)
        one = jax.jit(jax.value_and_grad(example.model.logdensity))
        for i in range(points.shape[0]):
            vi, gi = one(points[i])
            np.testing.assert_allclose(v[i], vi, rtol=1e-12)
            np.testing.assert_allclose(g[i], gi, rtol=1e-10, atol=1e-10 * float(jnp.abs(gi).max()))


def test_linear_member_is_well_identified(linear):
    # The reference is Gaussian: its negative Hessian is the posterior precision.
    hessian = jax.hessian(linear.reference.logdensity)(jnp.zeros(4))
    cov = np.linalg.inv(-np.asarray(hessian))
    sd = np.sqrt(np.diag(cov))
    assert np.all(np.linalg.eigvalsh(cov) > 0)
    assert np.all(sd < 0.2)  # prior sd 1: the data dominate
    assert np.all(sd > 0.01)  # not degenerate
    corr = cov / np.outer(sd, sd)
    # Correlations between neighbouring bumps, but no ridge: NUTS with a diagonal mass
    # matrix needs trajectories of a few steps (condition number of the correlation).
    assert np.linalg.cond(corr) < 30
    # The truth is inside the posterior's bulk.
    mean = cov @ np.asarray(jax.grad(linear.reference.logdensity)(jnp.zeros(4)))
    z = (mean - np.asarray(linear.data["truth"]["theta"])) / sd
    assert np.all(np.abs(z) < 4)


def test_log_likelihood_per_observation(linear):
    theta = linear.model.to_unconstrained(linear.data["truth"])
    ll, ll_ref = linear.model.log_likelihood(theta), linear.reference.log_likelihood(theta)
    assert ll.shape == (36,)
    np.testing.assert_allclose(ll, ll_ref, rtol=1e-9)


def test_options_and_seeded_data():
    a, b, other = (mcg.models.pde_inverse(m=6, seed=s).data["y"] for s in (1, 1, 2))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, other)
    small = mcg.models.pde_inverse(m=4, num_params=3, num_sensors=2)
    assert small.model.dim == 3 and small.data["y"].shape == (4,)
    assert mcg.models.pde_inverse(m=3).data["y"].shape == (9,)  # min(6, m) sensors per side
    assert mcg.models.REGISTRY["pde"] is mcg.models.pde_inverse


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"m": 1}, r"m must be an integer >= 2, got 1\. The grid needs"),
        ({"m": 8.0}, "m must be an integer"),
        ({"m": True}, "m must be an integer"),
        ({"c": -1.0}, r"c must be a finite number >= 0, got -1\.0"),
        ({"c": float("nan")}, "c must be a finite number >= 0"),
        ({"c": float("inf")}, "c must be a finite number >= 0"),
        ({"c": "1"}, "c must be a finite number >= 0"),
        ({"num_params": 0}, r"num_params must be an integer in \[1, 4\]"),
        ({"num_params": 5}, r"num_params must be an integer in \[1, 4\]"),
        ({"m": 4, "num_sensors": 5}, r"num_sensors must be an integer in \[1, 4\].*refine"),
        ({"num_sensors": 0}, "num_sensors must be an integer"),
        ({"sigma": 0.0}, "sigma must be a finite number > 0"),
        ({"prior_sd": -1.0}, "prior_sd must be a finite number > 0"),
        ({"seed": "a"}, "seed must be an integer"),
    ],
)
def test_bad_arguments_say_what_to_do(kwargs, match):
    with pytest.raises(ValueError, match=f"pde_inverse: {match}"):
        mcg.models.pde_inverse(**kwargs)


def test_bad_fields_say_what_to_do():
    with pytest.raises(ValueError, match=r"steady_state: source must be a flat \(m\^2,\) array"):
        steady_state(jnp.ones((4, 4)))
    with pytest.raises(ValueError, match="steady_state: the field must have m\\^2 entries"):
        steady_state(jnp.ones(15))
    with pytest.raises(ValueError, match="steady_state: c must be a finite number >= 0"):
        steady_state(jnp.ones(16), c=-0.5)
    with pytest.raises(ValueError, match="bratu_residual: u must be a flat"):
        bratu_residual(jnp.ones((4, 4)), jnp.ones(16))
    with pytest.raises(ValueError, match="laplacian_pattern: m must be an integer >= 2"):
        laplacian_pattern(1)


# ----------------------------------------------------------------------------- slow tier


@pytest.mark.slow
def test_nonlinear_member_passes_the_gradient_checks_and_couples():
    # Second order through the sparse solve, against the dense reference's hand-written
    # implicit derivative; then coupled NUTS chains on both densities.
    example = mcg.models.pde_inverse(m=SMALL, c=1.0)
    model, reference = example.model, example.reference
    report = mcg.check_gradients(model, model.init, reference, order=2, num_points=10)
    assert report.passed, str(report.failures)
    coupled = mcg.coupled_chains(model, reference, seed=0, num_steps=100, num_warmup=200)
    assert coupled.passed, str(coupled.failures)


@pytest.mark.slow
def test_linear_member_samples_the_reference_posterior_at_m64():
    example = mcg.models.pde_inverse(m=64)
    model, reference = example.model, example.reference
    gradients = mcg.check_gradients(model, model.init, reference, order=1, num_points=5)
    assert gradients.passed, str(gradients.failures)
    run = {"num_chains": 4, "num_warmup": 500, "num_samples": 1000, "seed": 0, "warn": False}
    custom = mcg.sample(model, progress_bar=False, **run)
    ref = mcg.sample(reference, progress_bar=False, **run)
    report = mcg.compare_chains(custom, ref, min_draws=1000, gradients_passed=gradients.passed)
    assert report.passed, report.verdict + "\n" + "\n".join(report.failures)
