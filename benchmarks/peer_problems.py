"""Optimistix's own test problems, ported to this library's conventions.

Source: https://github.com/patrick-kidger/optimistix, ``tests/helpers.py`` at commit
``6415ab15480ebdb7386e17850105ce0dba6786ec`` (2026-05-12); which solver runs which problem,
and what the tests check, from ``tests/test_minimise.py``, ``tests/test_least_squares.py``,
``tests/test_fixed_point.py`` and ``tests/test_root_find.py`` at the same commit.

Licence: the problems (functions, starting points, parameters, random data) are ported from
Optimistix, Copyright (c) Patrick Kidger and the Optimistix authors, licensed under the
Apache License, Version 2.0 (http://www.apache.org/licenses/LICENSE-2.0). The code here is
a rewrite in plain JAX: Optimistix's ``ω`` tree arithmetic, Equinox MLPs and pytree
unknowns are replaced by flat arrays; the numbers are the same (checked against
Optimistix's helpers when written). This library is also Apache-2.0.

Each problem is a :class:`PeerProblem`. ``all_problems()`` builds them (float64 only: call
``jax.config.update("jax_enable_x64", True)`` first; the random data of the helpers, drawn
with ``jax.random`` in float64, differ in float32). Optimistix is imported only inside
:func:`optimistix_solve` and the reference factories, so this module imports without it.

The groups, as in ``helpers.py``:

- ``min_*`` (kind ``"argmin"``, ``minimisation_fn_minima_init_args``; Optimistix runs them
  with every minimiser, the reference here is ``optx.BFGS``);
- ``lsq_*`` (kind ``"least_squares"``, ``least_squares_fn_minima_init_args``; reference
  ``optx.LevenbergMarquardt``). ``fn`` is ``0.5 * sum(residual**2)`` for ``mcg.argmin``,
  ``residual`` is kept for Optimistix. The four problems that ``helpers.py`` comments out
  ("Skipped for being hard!") are included with ``optx_skipped=True``; their pytree
  variants flatten to the same arrays as the plain ones, so each appears once;
- ``fp_*`` (kind ``"fixed_point"``, ``fixed_point_fn_init_args``; reference
  ``optx.FixedPointIteration``);
- ``root_*`` (kind ``"root"``: the same ten maps as ``F(y) = T(y) - y``, as
  ``test_root_find.py`` builds them; reference ``optx.Newton``);
- ``bisect_*`` (kind ``"root"`` with a ``bracket``, ``bisection_fn_init_options_args``;
  reference ``optx.Bisection``): scalar roots, ``F(y) = T(y) - y`` except ``trivial``
  (``y - 1``), used as is.

Pytree unknowns flattened with ``jax.flatten_util.ravel_pytree`` (leaf order of the
helpers' trees, so the flat vectors equal Optimistix's raveled ones):

- ``diagonal_bowl_init = ({"a": 0.05 * ones((2, 3, 3))}, 0.05 * ones(2))``, 20 unknowns
  (``lsq_diagonal_bowl_20``; its weights, the same tree, are flattened too) and
  ``bowl_init`` (same tree, ``min_bowl_20``);
- ``[y, z]`` scalar pairs of Himmelblau, Matyas and Beale: a 2-vector ``(y, z)``;
- ``[1.5, 1.5]`` and ``(1.45 * ones((2, 4)), {"a": 1.45 * ones((2, 3, 2))}, ())``
  (``lsq_rosenbrock_2``, ``lsq_rosenbrock_20``);
- the Equinox MLP of ``simple_nn`` (``lsq_simple_nn_25``): ``(W1 (8, 1), b1 (8,), W2
  (1, 8), b2 (1,))`` in that order, 25 unknowns (row-major);
- ``ones_pytree = ({"a": 0.5 * ones((3, 2, 4))}, 0.5 * ones(4))``, 28 unknowns (every
  ``fp_*``/``root_*`` problem except the heat equation and Robertson);
- ``ones_robertson = (ones(2), {"b": 1.0})``, 3 unknowns (the Robertson problems).

Parameters (``args`` in Optimistix) are the ``params`` tuple, what the benchmark
differentiates with respect to. Where Optimistix's ``args`` is ``None`` the tuple is empty
(``min_square_minus_one``, ``bisect_trivial``); for ``simple_nn`` only the data array is a
parameter (the MLP's static part is code here), as in ``eqx.partition(args, eqx.is_array)``
in Optimistix's JVP tests.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
from jax.flatten_util import ravel_pytree

__all__ = [
    "PeerProblem",
    "all_problems",
    "get_problem",
    "mcg_solve",
    "optimistix_solve",
    "KINDS",
    "TOL",
    "OPTX_MAX_STEPS",
]

KINDS = ("argmin", "least_squares", "fixed_point", "root")

#: rtol = atol of the Optimistix reference solvers (this library's float64 default).
TOL = 1e-10

#: max_steps of every Optimistix solve, as in Optimistix's tests.
OPTX_MAX_STEPS = 10_000

#: The Dottie number, the fixed point of cos: cos(d) = d.
DOTTIE = 0.7390851332151606416553120876738734040134117589007574649656806357732846548835

#: The omega constant, the fixed point of exp(-y): W(1).
OMEGA = 0.5671432904097838729999686622103555497538157871865125081351310792230457930866


@dataclasses.dataclass(frozen=True, eq=False)
class PeerProblem:
    """One ported Optimistix test problem.

    Attributes
    ----------
    name : str
        Unique name, ``<group>_<helper>[_<n>]``.
    kind : {"argmin", "least_squares", "fixed_point", "root"}
        What ``fn`` means (least squares are solved with ``mcg.argmin``).
    fn : callable
        In this library's convention: ``f(y, *params) -> scalar`` (argmin, least squares:
        ``0.5 * sum(residual**2)``), ``T(y, *params)`` (fixed point) or ``F(y, *params)``
        (root).
    y0 : jax.Array
        Starting point (flat; 0-d for the scalar problems, as in Optimistix).
    params : tuple of jax.Array
        Parameters, what derivatives are taken with respect to (may be empty).
    solution : jax.Array or None
        The known solution ``y*`` (from Optimistix's tests or in closed form), else None.
    reference : str
        The Optimistix solver used in Optimistix's tests for this problem class, as
        ``optx.<Name>``; built by :meth:`reference_solver` with ``rtol = atol = TOL``.
    source : str
        The helper in ``tests/helpers.py`` and the tuple it is listed in.
    residual : callable or None
        Least squares only: ``r(y, *params) -> 1-D array``.
    bracket : tuple of float or None
        Bisection only: ``(lower, upper)``, Optimistix's ``options``.
    pytree : str or None
        The helper's pytree ``y0``, when it was flattened.
    optx_skipped : bool
        True when ``helpers.py`` comments the problem out ("Skipped for being hard!").
    optx_well_posed : bool or None
        ``well_posed`` of the ``lx.AutoLinearSolver`` in Optimistix's ``ImplicitAdjoint``
        (``False`` where its tests use that, ``simple_nn``); None for the default adjoint.
    note : str
        Anything worth knowing about the port.
    """

    name: str
    kind: str
    fn: Callable
    y0: Any
    params: tuple
    solution: Any
    reference: str
    source: str
    residual: Callable | None = None
    bracket: tuple[float, float] | None = None
    pytree: str | None = None
    optx_skipped: bool = False
    optx_well_posed: bool | None = None
    note: str = ""

    @property
    def n(self) -> int:
        """Number of unknowns."""
        return int(jnp.size(self.y0))

    def reference_solver(self):
        """The Optimistix reference solver (imports Optimistix)."""
        import optimistix as optx

        return getattr(optx, self.reference.removeprefix("optx."))(rtol=TOL, atol=TOL)

    def reference_adjoint(self):
        """Optimistix's ``ImplicitAdjoint`` for this problem (imports Optimistix)."""
        import optimistix as optx

        if self.optx_well_posed is None:
            return optx.ImplicitAdjoint()
        import lineax as lx

        return optx.ImplicitAdjoint(linear_solver=lx.AutoLinearSolver(well_posed=False))


# ----------------------------------------------------------------------------- solving


def mcg_solve(problem: PeerProblem, *params, solver=None, full_output=False, y0=None):
    """Solve ``problem`` with this library (defaults unless ``solver`` is given).

    Parameters
    ----------
    problem : PeerProblem
        The problem.
    *params : arrays
        Parameters (``problem.params`` when none are given and the problem has some).
    solver : optional
        Passed on; None is the library's default.
    full_output : bool
        Return ``(y, SolverInfo)``.
    y0 : array, optional
        Start (``problem.y0`` by default).

    Returns
    -------
    y, or (y, SolverInfo)
    """
    import mcmc_customgrad as mcg

    params = params if params else problem.params
    y0 = problem.y0 if y0 is None else y0
    call = {
        "argmin": mcg.argmin,
        "least_squares": mcg.argmin,
        "fixed_point": mcg.fixed_point,
        "root": mcg.root,
    }[problem.kind]
    return call(problem.fn, y0, *params, solver=solver, full_output=full_output)


def optimistix_solve(problem: PeerProblem, *params, solver=None, adjoint=None, y0=None):
    """Solve ``problem`` with Optimistix (its reference solver unless ``solver`` is given).

    ``throw=False``, ``max_steps=OPTX_MAX_STEPS``, ``adjoint`` Optimistix's
    ``ImplicitAdjoint`` (:meth:`PeerProblem.reference_adjoint`) unless given.

    Returns
    -------
    optimistix.Solution
        ``.value`` the answer, ``.result`` and ``.stats["num_steps"]`` the outcome.
    """
    import optimistix as optx

    params = params if params else problem.params
    y0 = problem.y0 if y0 is None else y0
    solver = problem.reference_solver() if solver is None else solver
    adjoint = problem.reference_adjoint() if adjoint is None else adjoint
    common = dict(args=tuple(params), max_steps=OPTX_MAX_STEPS, adjoint=adjoint, throw=False)
    fn = problem.fn

    if problem.kind == "argmin":
        return optx.minimise(lambda y, a: fn(y, *a), solver, y0, **common)
    if problem.kind == "least_squares":
        res = problem.residual
        return optx.least_squares(lambda y, a: res(y, *a), solver, y0, **common)
    if problem.kind == "fixed_point":
        return optx.fixed_point(lambda y, a: fn(y, *a), solver, y0, **common)
    options = None
    if problem.bracket is not None:
        lower, upper = problem.bracket
        options = {"lower": jnp.asarray(lower), "upper": jnp.asarray(upper)}
    return optx.root_find(lambda y, a: fn(y, *a), solver, y0, options=options, **common)


# ---------------------------------------------------------------- minimisation problems


def bowl(y, matrix):
    """``y' M y`` (helpers ``bowl``): minimum 0 at ``y = 0``."""
    return y @ matrix @ y


def himmelblau(y, const1, const2):
    """Himmelblau's function (helpers ``_himmelblau``) on ``y = (y, z)``."""
    a, b = y[0], y[1]
    return (a**2 + b - const1) ** 2 + (a + b**2 - const2) ** 2


def matyas(y, const1, const2):
    """Matyas' function (helpers ``matyas``): ``c1 (y^2 + z^2) - c2 y z``."""
    a, b = y[0], y[1]
    return const1 * (a**2 + b**2) - const2 * a * b


def beale(y, const1, const2, const3):
    """Beale's function (helpers ``beale``)."""
    a, b = y[0], y[1]
    return (const1 - a + a * b) ** 2 + (const2 - a + a * b**2) ** 2 + (const3 - a + a * b**3) ** 2


def square_minus_one(y):
    """``|y|^2 - 1`` (helpers ``square_minus_one``): minimum -1 at 0."""
    return jnp.sum(jnp.square(y)) - 1.0


# ------------------------------------------------------------------ least-squares residuals


def diagonal_quadratic_bowl_residual(y, weight):
    """``y**2 * (0.1 + w)`` element-wise (helpers ``diagonal_quadratic_bowl``).

    As a least-squares residual it is quadratic in ``y``: the objective is quartic and its
    minimiser ``y = 0`` degenerate (zero Hessian).
    """
    return jnp.square(y) * (0.1 + weight)


def rosenbrock_residual(y, const):
    """``(100 (y[1:] - y[:-1]), c - y[:-1])`` (helpers ``rosenbrock``).

    As written in Optimistix's helpers: the first residual has ``y[:-1]``, not
    ``y[:-1]**2``, so this "Rosenbrock" is *linear* least squares, solved by
    ``y = c * ones`` (Optimistix's JVP test uses exactly that).
    """
    return jnp.concatenate([100 * (y[1:] - y[:-1]), const - y[:-1]])


def variably_dimensioned_residual(y, const):
    """TUOS problem 25 (helpers ``variably_dimensioned``); minimiser ``y = c * ones``."""
    increasing = jnp.arange(1, jnp.size(y) + 1)
    term2 = jnp.sum(increasing * (y - const))
    return jnp.concatenate([y - const, term2[None], (term2**2)[None]])


def trigonometric_residual(y, const):
    """TUOS problem 26 (helpers ``trigonometric``)."""
    sumcos = jnp.sum(jnp.cos(y))
    increasing = jnp.arange(1, jnp.size(y) + 1, dtype=jnp.float32)
    return jnp.size(y) - sumcos + increasing * (const - jnp.cos(y)) - jnp.sin(y)


_NN_WIDTH = 8


def _unpack_mlp(theta):
    """``(W1 (8, 1), b1 (8,), W2 (1, 8), b2 (1,))`` from the flat 25 parameters."""
    w = _NN_WIDTH
    return (
        theta[:w].reshape(w, 1),
        theta[w : 2 * w],
        theta[2 * w : 3 * w].reshape(1, w),
        theta[3 * w :],
    )


def simple_nn_residual(theta, data):
    """Squared errors of a 1-8-1 ReLU MLP fitting ``data**2`` (helpers ``simple_nn``).

    ``theta`` is the flat MLP (see :func:`_unpack_mlp`), ``data`` the ``(100, 1)`` targets'
    square roots. As in the helpers the residual is ``(pred - data**2) ** 2`` (already
    squared), so the least-squares objective sums fourth powers.
    """
    w1, b1, w2, b2 = _unpack_mlp(theta)
    x = jnp.linspace(0, 1, 100)[..., None]
    hidden = jax.nn.relu(x @ w1.T + b1)
    pred = hidden @ w2.T + b2
    return jnp.ravel((pred - data**2) ** 2)


def _least_squares_objective(residual):
    def objective(y, *params):
        return 0.5 * jnp.sum(residual(y, *params) ** 2)

    objective.__name__ = f"half_sum_squares_of_{residual.__name__}"
    objective.__qualname__ = objective.__name__
    return objective


# ---------------------------------------------------------------- fixed-point maps

_DT_LINEAR = 1 / (2**4)
_DT_ROBERTSON = 1e-8


def cos_map(y, const):
    """``cos(c y)`` element-wise (helpers ``_cos``)."""
    return jnp.cos(const * y)


def exponential_map(y, const):
    """``exp(-c y)`` element-wise (helpers ``_exponential``)."""
    return jnp.exp(-const * y)


def nn_map(y, w1, b1, w2, b2):
    """``0.1 * MLP(y)``: one softplus hidden layer of width 8 (helpers ``_nn``)."""
    return 0.1 * (w2 @ jax.nn.softplus(w1 @ y + b1) + b2)


def heat_pde_map(y, const):
    """One Crank-Nicolson step of the "nonlinear heat equation" (helpers ``_nonlinear_heat_pde``).

    Ported as written: the helpers' ``_laplacian`` builds the stencil and then returns
    its *input* (``return unflatten(y)``), so ``f(y) = (1 - y) * y`` point-wise and the
    map is ``c (x^2 + 0.5 ((1 - y) y + (1 - x^2) x^2))`` on ``x = linspace(-1, 1, 100)``.
    """
    x = jnp.linspace(-1, 1, 100)
    y_start = x**2
    f0 = (1 - y_start) * y_start
    f_val = (1 - y) * y
    stepsize = 1.0
    return const * (y_start + 0.5 * stepsize * (f_val + f0))


def _linear_field(matrix, x):
    return jnp.reshape(jnp.dot(matrix, jnp.ravel(x)), jnp.shape(x))


def midpoint_y_linear_map(y, matrix):
    """Implicit midpoint in y-space for ``y' = M y`` from 0 (helpers ``_midpoint_y_linear``)."""
    y_start = jnp.zeros_like(y)
    return y_start + _DT_LINEAR * _linear_field(matrix, 0.5 * (y_start + y))


def midpoint_f_linear_map(y, matrix):
    """Implicit midpoint in f-space for ``y' = M y`` from 0 (helpers ``_midpoint_f_linear``)."""
    y_start = jnp.zeros_like(y)
    return _linear_field(matrix, y_start + _DT_LINEAR * y)


def midpoint_k_linear_map(y, matrix):
    """Implicit midpoint in k-space for ``y' = M y`` from 0 (helpers ``_midpoint_k_linear``)."""
    y_start = jnp.zeros_like(y)
    return _linear_field(matrix, y_start + y) * _DT_LINEAR


def robertson(y, k1, k2, k3):
    """Robertson's stiff chemical kinetics (helpers ``Robertson``, no ``t``)."""
    f0 = -k1 * y[0] + k3 * y[1] * y[2]
    f1 = k1 * y[0] - k2 * y[1] ** 2 - k3 * y[1] * y[2]
    f2 = k2 * y[1] ** 2
    return jnp.stack([f0, f1, f2])


def midpoint_y_nonlinear_map(y, k1, k2, k3):
    """Implicit midpoint in y-space for Robertson from 0, dt = 1e-8."""
    y_start = jnp.zeros_like(y)
    return y_start + _DT_ROBERTSON * robertson(0.5 * (y_start + y), k1, k2, k3)


def midpoint_f_nonlinear_map(y, k1, k2, k3):
    """Implicit midpoint in f-space for Robertson from 0, dt = 1e-8."""
    y_start = jnp.zeros_like(y)
    return robertson(y_start + _DT_ROBERTSON * y, k1, k2, k3)


def midpoint_k_nonlinear_map(y, k1, k2, k3):
    """Implicit midpoint in k-space for Robertson from 0, dt = 1e-8."""
    y_start = jnp.zeros_like(y)
    return robertson(y_start + y, k1, k2, k3) * _DT_ROBERTSON


def trivial(y):
    """``y - 1`` (helpers ``trivial``), a root (bisection only)."""
    return y - 1


@functools.cache
def _root_of(fixed_point_map):
    """``F(y, *params) = T(y, *params) - y``, as Optimistix's root-find tests build it.

    Cached so that each map has one residual function object (the library caches its
    compiled solves per function object).
    """

    def residual(y, *params):
        return fixed_point_map(y, *params) - y

    residual.__name__ = f"{fixed_point_map.__name__}_minus_identity"
    residual.__qualname__ = residual.__name__
    return residual


# ------------------------------------------------------------------------- the data


def _mlp_weights(key, in_size, width, out_size, dtype):
    """Weights of ``eqx.nn.MLP(in_size, out_size, width, depth=1, key=key)``.

    Equinox's initialisation (``eqx.nn.Linear``: uniform on ``+-1/sqrt(fan_in)``, one
    ``split`` per layer and one per weight/bias), reproduced so the problems need no
    Equinox.
    """
    keys = jr.split(key, 2)
    out = []
    for k, (fan_in, fan_out) in zip(keys, ((in_size, width), (width, out_size)), strict=True):
        wkey, bkey = jr.split(k, 2)
        lim = 1 / math.sqrt(fan_in)
        out.append(jr.uniform(wkey, (fan_out, fan_in), dtype, minval=-lim, maxval=lim))
        out.append(jr.uniform(bkey, (fan_out,), dtype, minval=-lim, maxval=lim))
    return tuple(out)


def _simple_nn_init():
    # helpers.py: new_ffn_init, the 1-8-1 MLP with explicitly set weights and biases.
    weight1 = [3.39958394, -0.00648151, -0.57178741, -0.9259611, 0.43010087, 0.74950293]
    weight1 += [-0.35932756, 1.28393738]
    bias1 = [-0.14702571, 3.61400359, -1.01404942, 0.3223137, 2.19991259, -0.51860872]
    bias1 += [0.4717813, 0.9449359]
    weight2 = [0.26476087, 0.05913492, 0.40830152, 0.704758, 0.64347694, 0.85807767]
    weight2 += [0.54285774, 0.05507022]
    bias2 = [-2.16578771]
    return jnp.array(weight1 + bias1 + weight2 + bias2)


def _check_x64():
    if not jax.config.jax_enable_x64:
        raise RuntimeError(
            "peer_problems needs float64: call jax.config.update('jax_enable_x64', True) "
            "before building the problems (Optimistix's tests run in float64)."
        )


@functools.cache
def all_problems() -> tuple[PeerProblem, ...]:
    """Build every ported problem (float64).

    Returns
    -------
    tuple of PeerProblem
        In the order of ``helpers.py``: minimisation, least squares, fixed points, the
        same maps as roots, bisection.
    """
    _check_x64()
    f64 = jnp.float64
    problems = []

    # --- minimisation_fn_minima_init_args ---------------------------------------------
    bowl_init = ({"a": 0.05 * jnp.ones((2, 3, 3))}, 0.05 * jnp.ones(2))
    flat_bowl, _ = ravel_pytree(bowl_init)
    matrix = jr.normal(jr.PRNGKey(17), (flat_bowl.size, flat_bowl.size))
    src = "minimisation_fn_minima_init_args"
    problems += [
        PeerProblem(
            "min_bowl_20",
            "argmin",
            bowl,
            flat_bowl,
            (matrix.T @ matrix,),
            jnp.zeros(20),
            "optx.BFGS",
            f"bowl, {src}",
            pytree="bowl_init = ({'a': 0.05 * ones((2, 3, 3))}, 0.05 * ones(2))",
            note="M = A'A, A ~ N(0, 1) 20x20 (key 17); y* = 0, dy*/dM = 0",
        ),
        PeerProblem(
            "min_himmelblau",
            "argmin",
            himmelblau,
            jnp.array([2.0, 2.5]),
            (jnp.array(11.0), jnp.array(7.0)),
            jnp.array([3.0, 2.0]),
            "optx.BFGS",
            f"_himmelblau, {src}",
            pytree="[y, z] of scalars",
        ),
        PeerProblem(
            "min_matyas",
            "argmin",
            matyas,
            jnp.array([6.0, 6.0]),
            (jnp.array(0.26), jnp.array(0.48)),
            jnp.zeros(2),
            "optx.BFGS",
            f"matyas, {src}",
            pytree="[y, z] of scalars",
        ),
        PeerProblem(
            "min_beale",
            "argmin",
            beale,
            jnp.array([2.0, 0.0]),
            (jnp.array(1.5), jnp.array(2.25), jnp.array(2.625)),
            jnp.array([3.0, 0.5]),
            "optx.BFGS",
            f"beale, {src}",
            pytree="[y, z] of scalars",
        ),
        PeerProblem(
            "min_square_minus_one",
            "argmin",
            square_minus_one,
            jnp.array(1.0),
            (),
            jnp.array(0.0),
            "optx.BFGS",
            f"square_minus_one, {src}",
            note="args=None in Optimistix: no parameters, so no derivative to compare",
        ),
    ]

    # --- least_squares_fn_minima_init_args ---------------------------------------------
    src = "least_squares_fn_minima_init_args"
    diag_init = ({"a": 0.05 * jnp.ones((2, 3, 3))}, 0.05 * jnp.ones(2))
    leaves, treedef = jax.tree.flatten(diag_init)
    key = jr.PRNGKey(17)  # the same key for both leaves, as in helpers.py
    diag_args = treedef.unflatten([jr.normal(key, x.shape, x.dtype) ** 2 for x in leaves])
    rosen_tree = (1.45 * jnp.ones((2, 4)), {"a": 1.45 * jnp.ones((2, 3, 2))}, ())
    lsq = [
        (
            "lsq_diagonal_bowl_20",
            diagonal_quadratic_bowl_residual,
            ravel_pytree(diag_init)[0],
            (ravel_pytree(diag_args)[0],),
            jnp.zeros(20),
            "diagonal_quadratic_bowl",
            "({'a': 0.05 * ones((2, 3, 3))}, 0.05 * ones(2)); weights flattened alike",
            False,
            "residual y^2 (0.1 + w): quartic objective, degenerate minimiser 0 (zero "
            "Hessian); Optimistix skips its JVP test",
        ),
        (
            "lsq_rosenbrock_2",
            rosenbrock_residual,
            jnp.array([1.5, 1.5]),
            (jnp.array(1.0),),
            jnp.ones(2),
            "rosenbrock",
            "[1.5, 1.5] of scalars",
            False,
            "helpers' 'rosenbrock' is linear (y[:-1], not y[:-1]**2): y* = c * ones",
        ),
        (
            "lsq_rosenbrock_20",
            rosenbrock_residual,
            ravel_pytree(rosen_tree)[0],
            (jnp.array(1.0),),
            jnp.ones(20),
            "rosenbrock",
            "(1.45 * ones((2, 4)), {'a': 1.45 * ones((2, 3, 2))}, ())",
            False,
            "linear least squares, y* = c * ones",
        ),
        (
            "lsq_simple_nn_25",
            simple_nn_residual,
            _simple_nn_init(),
            (jnp.linspace(0, 1, 100)[..., None],),
            None,
            "simple_nn",
            "eqx.nn.MLP(1, 1, width 8, depth 1, relu): (W1, b1, W2, b2), 25",
            False,
            "residual (pred - data^2)^2 (squared twice); hidden unit 3 is dead on "
            "[0, 1] (relu), so the Hessian is singular; Optimistix's adjoint uses "
            "AutoLinearSolver(well_posed=False) and skips the JVP test",
        ),
        (
            "lsq_variably_dimensioned_10",
            variably_dimensioned_residual,
            1 - jnp.arange(1, 11) / 10,
            (jnp.array(1.0),),
            jnp.ones(10),
            "variably_dimensioned",
            None,
            True,
            "TUOS 25; commented out in helpers.py as hard (its pytree twin flattens to "
            "the same problem)",
        ),
        (
            "lsq_trigonometric_70",
            trigonometric_residual,
            jnp.ones(70) / 70,
            (jnp.array(1.0),),
            None,
            "trigonometric",
            None,
            True,
            "TUOS 26; commented out in helpers.py as hard (its pytree twin flattens to "
            "the same problem)",
        ),
    ]
    for name, res, y0, params, sol, helper, tree, skipped, note in lsq:
        problems.append(
            PeerProblem(
                name,
                "least_squares",
                _least_squares_objective(res),
                y0,
                params,
                sol,
                "optx.LevenbergMarquardt",
                f"{helper}, {src}",
                residual=res,
                pytree=tree,
                optx_skipped=skipped,
                optx_well_posed=False if helper == "simple_nn" else None,
                note=note,
            )
        )

    # --- fixed_point_fn_init_args --------------------------------------------------------
    ones_pytree = ({"a": 0.5 * jnp.ones((3, 2, 4))}, 0.5 * jnp.ones(4))
    ones_flat, _ = ravel_pytree(ones_pytree)
    size = ones_flat.size
    fp_matrix = jr.normal(jr.PRNGKey(19), (size, size))
    nn_args = _mlp_weights(jr.PRNGKey(42), size, _NN_WIDTH, size, f64)
    robertson_args = (jnp.array(0.04), jnp.array(3e7), jnp.array(1e4))
    ones_robertson, _ = ravel_pytree((jnp.ones(2), {"b": jnp.array(1.0)}))
    x = jnp.linspace(-1, 1, 100)
    heat_solution = (-1 + jnp.sqrt(1 + 4 * (2 * x**2 + (1 - x**2) * x**2))) / 2
    ones_tree = "ones_pytree = ({'a': 0.5 * ones((3, 2, 4))}, 0.5 * ones(4))"
    robertson_tree = "ones_robertson = (ones(2), {'b': 1.0})"
    fixed = [
        ("cos_28", cos_map, ones_flat, (jnp.array(1.0),), jnp.full(size, DOTTIE), "_cos",
         ones_tree, "y* = Dottie number"),
        ("exponential_28", exponential_map, ones_flat, (jnp.array(1.0),),
         jnp.full(size, OMEGA), "_exponential", ones_tree, "y* = omega constant W(1)"),
        ("nn_28", nn_map, ones_flat, nn_args, None, "_nn", ones_tree,
         "MLP weights of eqx.nn.MLP(28, 28, 8, 1, softplus, key 42)"),
        ("heat_pde_100", heat_pde_map, jnp.ones(100), (jnp.array(1.0),), heat_solution,
         "_nonlinear_heat_pde", None,
         "helpers' _laplacian returns its input: point-wise; y* in closed form"),
        ("midpoint_y_linear_28", midpoint_y_linear_map, ones_flat, (fp_matrix,),
         jnp.zeros(size), "_midpoint_y_linear", ones_tree, "M ~ N(0, 1) (key 19); y* = 0"),
        ("midpoint_f_linear_28", midpoint_f_linear_map, ones_flat, (fp_matrix,),
         jnp.zeros(size), "_midpoint_f_linear", ones_tree,
         "y* = 0; with y0 = 0 the f- and k-space maps coincide"),
        ("midpoint_k_linear_28", midpoint_k_linear_map, ones_flat, (fp_matrix,),
         jnp.zeros(size), "_midpoint_k_linear", ones_tree, "y* = 0"),
        ("midpoint_y_nonlinear_3", midpoint_y_nonlinear_map, ones_robertson,
         robertson_args, jnp.zeros(3), "_midpoint_y_nonlinear", robertson_tree,
         "Robertson, dt = 1e-8; y* = 0"),
        ("midpoint_f_nonlinear_3", midpoint_f_nonlinear_map, ones_robertson,
         robertson_args, jnp.zeros(3), "_midpoint_f_nonlinear", robertson_tree,
         "Robertson, dt = 1e-8; y* = 0"),
        ("midpoint_k_nonlinear_3", midpoint_k_nonlinear_map, ones_robertson,
         robertson_args, jnp.zeros(3), "_midpoint_k_nonlinear", robertson_tree,
         "Robertson, dt = 1e-8; y* = 0 (the root may have other solutions)"),
    ]  # fmt: skip
    for name, fn, y0, params, sol, helper, tree, note in fixed:
        problems.append(
            PeerProblem(
                f"fp_{name}",
                "fixed_point",
                fn,
                y0,
                params,
                sol,
                "optx.FixedPointIteration",
                f"{helper}, fixed_point_fn_init_args",
                pytree=tree,
                note=note,
            )
        )
    for name, fn, y0, params, sol, helper, tree, note in fixed:
        problems.append(
            PeerProblem(
                f"root_{name}",
                "root",
                _root_of(fn),
                y0,
                params,
                sol,
                "optx.Newton",
                f"{helper} as T(y) - y, fixed_point_fn_init_args (test_root_find.py)",
                pytree=tree,
                note=note,
            )
        )

    # --- bisection_fn_init_options_args --------------------------------------------------
    single = jnp.array(1.0)
    unit = (0.0, 1.0)
    bisect = [
        ("trivial", trivial, (), jnp.array(1.0), (0.5, 2.0), "trivial"),
        ("cos", _root_of(cos_map), (jnp.array(1.0),), jnp.array(DOTTIE), unit, "_cos"),
        ("exponential", _root_of(exponential_map), (jnp.array(1.0),), jnp.array(OMEGA),
         unit, "_exponential"),
        ("midpoint_y_linear", _root_of(midpoint_y_linear_map), (jnp.array([0.5]),),
         jnp.array(0.0), unit, "_midpoint_y_linear"),
        ("midpoint_f_linear", _root_of(midpoint_f_linear_map), (jnp.array([0.625]),),
         jnp.array(0.0), unit, "_midpoint_f_linear"),
        ("midpoint_k_linear", _root_of(midpoint_k_linear_map), (jnp.array([-0.137]),),
         jnp.array(0.0), unit, "_midpoint_k_linear"),
    ]  # fmt: skip
    for name, fn, params, sol, bracket, helper in bisect:
        note = "root at the bracket's lower end" if "midpoint" in name else ""
        if name == "trivial":
            note = "args=None in Optimistix: no parameters, so no derivative to compare"
        problems.append(
            PeerProblem(
                f"bisect_{name}",
                "root",
                fn,
                single,
                params,
                sol,
                "optx.Bisection",
                f"{helper}, bisection_fn_init_options_args",
                bracket=bracket,
                note=note,
            )
        )

    names = [p.name for p in problems]
    assert len(set(names)) == len(names), "duplicate problem names"
    return tuple(problems)


def get_problem(name: str) -> PeerProblem:
    """The problem called ``name``."""
    for problem in all_problems():
        if problem.name == name:
            return problem
    raise KeyError(f"no peer problem {name!r}; see all_problems()")
