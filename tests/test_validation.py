"""Bad input raises a clear TypeError/ValueError at trace time, naming the problem."""

import jax
import jax.numpy as jnp
import pytest
from helpers import kepler

import mcmc_customgrad as mcg

SOLVES = [mcg.root, mcg.fixed_point, mcg.argmin, mcg.min_value]


@pytest.mark.parametrize("solve", SOLVES)
def test_fun_not_callable(solve):
    with pytest.raises(TypeError, match="fun must be callable"):
        solve(3.0, jnp.zeros(2))


@pytest.mark.parametrize("solve", SOLVES)
def test_integer_y0(solve):
    with pytest.raises(TypeError, match="real floating dtype"):
        solve(lambda y: y, jnp.zeros(2, int))


@pytest.mark.parametrize("solve", SOLVES)
def test_empty_y0(solve):
    with pytest.raises(ValueError, match="no elements"):
        solve(lambda y: y, jnp.zeros(0))


def test_mixed_dtype_y0():
    with pytest.raises(TypeError, match="share one dtype"):
        mcg.root(lambda y: y, {"a": jnp.zeros(2), "b": jnp.zeros(2, jnp.float32)})


def test_string_arg():
    with pytest.raises(TypeError, match="args must be pytrees of arrays"):
        mcg.root(lambda y, s: y, jnp.zeros(2), "BFGS")


def test_root_output_shape_mismatch():
    with pytest.raises(ValueError, match=r"shapes and dtypes of y0.*\(3,\)"):
        mcg.root(lambda y: jnp.concatenate([y, y[:1]]), jnp.zeros(2))


def test_root_output_structure_mismatch():
    with pytest.raises(ValueError, match="same pytree structure"):
        mcg.root(lambda y: (y, y), jnp.zeros(2))


def test_root_output_dtype_mismatch():
    with pytest.raises(ValueError, match="float32"):
        mcg.root(lambda y: y.astype(jnp.float32), jnp.zeros(2))


def test_fixed_point_output_mismatch():
    with pytest.raises(ValueError, match="the map"):
        mcg.fixed_point(lambda y: jnp.sum(y), jnp.zeros(2))


@pytest.mark.parametrize("solve", [mcg.argmin, mcg.min_value])
def test_argmin_needs_scalar(solve):
    with pytest.raises(ValueError, match="real scalar objective"):
        solve(lambda y: y**2, jnp.zeros(2))


def test_errors_raised_under_jit_at_trace_time():
    with pytest.raises(ValueError, match="real scalar objective"):
        jax.jit(lambda a: mcg.argmin(lambda y: y * a, jnp.zeros(2)))(1.0)


def test_solver_kind_mismatch():
    with pytest.raises(ValueError, match="BFGS solves argmin problems, not 'root'"):
        mcg.root(kepler, jnp.array(1.0), 1.0, 0.5, solver=mcg.solvers.BFGS())
    with pytest.raises(ValueError, match="not 'argmin'"):
        mcg.argmin(lambda y: jnp.sum(y**2), jnp.zeros(2), solver=mcg.solvers.Anderson())


def test_solver_class_instead_of_instance():
    with pytest.raises(TypeError, match=r"Newton\(\), not the class"):
        mcg.root(kepler, jnp.array(1.0), 1.0, 0.5, solver=mcg.solvers.Newton)


def test_solver_wrong_type():
    with pytest.raises(TypeError, match="solver must be None"):
        mcg.root(kepler, jnp.array(1.0), 1.0, 0.5, solver="newton")


def test_custom_solver_wrong_structure():
    with pytest.raises(ValueError, match="must return y with the structure of y0"):
        mcg.root(kepler, jnp.array(1.0), 1.0, 0.5, solver=lambda f, y0, *a: (y0, y0, y0))


def test_custom_solver_wrong_shape():
    with pytest.raises(ValueError, match=r"shape \(2,\) where y0 has shape \(\)"):
        mcg.root(kepler, jnp.array(1.0), 1.0, 0.5, solver=lambda f, y0, *a: jnp.zeros(2))


def test_custom_solver_bad_info():
    with pytest.raises(ValueError, match="SolverInfo"):
        mcg.root(kepler, jnp.array(1.0), 1.0, 0.5, solver=lambda f, y0, *a: (y0, "ok"))


def test_bad_options():
    with pytest.raises(ValueError, match="on_failure must be one of"):
        mcg.root(kepler, jnp.array(1.0), 1.0, 0.5, on_failure="ignore")
    with pytest.raises(TypeError, match="full_output must be True or False"):
        mcg.root(kepler, jnp.array(1.0), 1.0, 0.5, full_output=1)
    with pytest.raises(TypeError, match="linear_solver must be"):
        mcg.root(kepler, jnp.array(1.0), 1.0, 0.5, linear_solver="cg")


def test_cg_rejects_nonsymmetric_problem():
    with pytest.raises(ValueError, match="CG needs a symmetric operator"):
        mcg.root(kepler, jnp.array(1.0), 1.0, 0.5, linear_solver=mcg.linear.CG())


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: mcg.solvers.Newton(max_steps=0), "max_steps must be an integer >= 1"),
        (lambda: mcg.solvers.Newton(rtol=-1.0), "rtol must be finite and >= 0"),
        (lambda: mcg.solvers.BFGS(atol=float("nan")), "atol must be finite"),
        (lambda: mcg.solvers.LBFGS(memory=0), "memory must be an integer >= 1"),
        (lambda: mcg.solvers.Anderson(damping=1.5), r"damping must be in \(0, 1\]"),
        (lambda: mcg.solvers.Chandrupatla(bracket=(0.0,)), "bracket must be None"),
        (lambda: mcg.linear.Dense("qr"), "method must be 'lu' or 'cholesky'"),
        (lambda: mcg.linear.GMRES(restart=0), "restart must be an integer >= 1"),
    ],
)
def test_solver_config_validation(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_custom_and_host_need_callables():
    with pytest.raises(TypeError, match="fn must be callable"):
        mcg.solvers.Custom(3)
    with pytest.raises(TypeError, match="fn must be callable"):
        mcg.solvers.Host("scipy")


def test_error_inside_fun_is_annotated():
    def bad(y):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom") as err:
        mcg.root(bad, jnp.zeros(2))
    assert any("traced fun(y0, *args)" in note for note in err.value.__notes__)
