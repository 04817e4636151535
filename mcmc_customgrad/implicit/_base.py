"""Shared types of the implicit core: problems, solver results, tolerances and errors.

Everything here works on *flat* vectors: the public functions ravel the user's pytrees
once at the boundary, so solvers and linear solves are written for a 1-D array ``y``
and a pytree of parameters ``params`` that they never look inside.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "SolverInfo",
    "SolverResult",
    "Problem",
    "Solver",
    "SolverError",
    "default_tolerances",
    "converged_within",
    "residual_within",
    "step_within",
    "residual_scale",
]

KINDS = ("root", "fixed_point", "argmin")


class SolverError(RuntimeError):
    """An inner solve did not converge and ``on_failure="raise"`` was asked for."""


class SolverInfo(NamedTuple):
    """What an inner solve reports next to its result.

    Attributes
    ----------
    converged : bool array
        True when the optimality residual at the returned point is within tolerance and
        the point is known to tolerance (see
        :func:`~mcmc_customgrad.implicit._base.converged_within`).
    num_steps : int32 array
        Iterations the forward solver took (-1 when a custom solver does not say).
    residual_norm : float array
        Max-norm of the optimality residual at the returned point: ``fun(y)`` for a root,
        ``fun(y) - y`` for a fixed point, the gradient for a minimum.
    """

    converged: Any
    num_steps: Any
    residual_norm: Any


class SolverResult(NamedTuple):
    """What a forward solver returns to the core (flat ``y``)."""

    y: Any
    converged: Any
    num_steps: Any
    residual_norm: Any


def default_tolerances(dtype) -> tuple[float, float]:
    """Return the default ``(rtol, atol)`` for a floating dtype.

    ``1e-10`` in float64 (rule 6 of the design: the implicit gradient is only exact at
    the true solution) and ``1000 * eps`` for lower precisions (``1.2e-4`` in float32),
    which is what can be reached with the residual evaluated in that precision. A
    tolerance this coarse is larger than many residuals themselves, which is why
    :func:`converged_within` also asks for ``y`` to be known to it.
    """
    eps = float(jnp.finfo(dtype).eps)
    tol = max(1e-10, 1000.0 * eps)
    return tol, tol


def residual_within(residual_norm, scale, rtol, atol):
    """The residual test alone: ``|F(y)|_inf <= atol + rtol * scale``.

    Necessary for convergence, never sufficient: see :func:`converged_within`.
    """
    return residual_norm <= atol + rtol * scale


def step_within(step_norm, y_norm, rtol, atol):
    """The step test: ``|delta|_inf <= atol + rtol * |y|_inf``, False for a NaN ``delta``.

    ``delta`` is a solver's estimate of ``y - y*`` at the current point; the test says
    that ``y`` is known to tolerance, in the units of ``y``.
    """
    return step_norm <= atol + rtol * y_norm


def converged_within(kind, residual, y, rtol, atol, *, step_norm, start_norm, value=None):
    """Convergence test shared by every solver: a small residual *and* a known ``y``.

    ``residual`` is the optimality residual at ``y`` (``F(y)``, ``T(y) - y`` or the
    gradient, by ``kind``) and ``value`` the objective there (minima only). Converged
    when

    1. the residual test passes: ``|F(y)|_inf <= atol + rtol * scale`` (``scale`` is
       :func:`residual_scale` at ``y``), **and**
    2. either the step test passes, ``|delta|_inf <= atol + rtol * |y|_inf``, where
       ``delta`` (``step_norm`` is its max-norm) is the solver's own estimate of
       ``y - y*`` at the current point (the undamped Newton step, the quasi-Newton step,
       a secant estimate, a bracket's width; NaN or ``inf`` when it has none yet), or,
       as a secondary test, the residual has fallen below ``rtol`` times its value at
       the start: ``|F(y)|_inf <= rtol * |F(y0)|_inf`` (``start_norm``).

    The residual test alone accepts a point whose residual is small only because the
    function is: ``1e-5 * (y - 2)`` from ``y0 = 0`` has ``|F(y0)| = 2e-5``, within
    float32's default tolerance ``1.2e-4``, and ``1e-12 * (y - 2)`` passes float64's
    ``1e-10``. Neither passes the step test (the Newton step is 2) or the secondary test
    (the residual has not fallen at all), so neither is accepted at ``y0``. A point is
    accepted at the start only if the step it would take is negligible or its residual
    is exactly zero. For a residual that is linear near ``y*``, the secondary test bounds
    the error by about ``rtol * cond(J) * |y0 - y*|``: relative to the distance from the
    start, so it can never replace the step test when ``y0`` is far off, but it accepts
    solutions whose Jacobian is singular (a double root) or that a solver has no
    ``delta`` for.

    The residual tolerance is never relative to ``|F(y0)|`` alone: that would accept a
    wrong answer whenever the start is far off (``exp(y) - 1`` from ``y0 = 30`` has
    ``|F(y0)| = 1e13``).
    """
    residual_norm = max_norm(residual)
    residual_ok = residual_within(residual_norm, residual_scale(kind, y, value), rtol, atol)
    known = step_within(step_norm, max_norm(y), rtol, atol)
    fallen = residual_norm <= rtol * start_norm
    return residual_ok & (known | fallen)


def residual_scale(kind: str, y, value=None):
    """Start-independent scale of the optimality residual at ``y``.

    Root: 0, so the test is absolute (``|F(y)| <= atol``; the residual's units are
    unknown). Fixed point: ``|y|_inf`` (``T(y) - y`` is in units of ``y``). Minimum:
    ``|f(y)|`` (Stan's relative gradient convention: rounding in the gradient grows with
    the objective's magnitude).
    """
    if kind == "root":
        return jnp.zeros((), y.dtype)
    if kind == "fixed_point":
        return max_norm(y)
    return jnp.abs(value)


def max_norm(x):
    """Max-norm of a flat vector; 0 for an empty one."""
    return jnp.max(jnp.abs(x), initial=0.0)


@dataclasses.dataclass(frozen=True, eq=False)
class Problem:
    """A flat view of one implicit problem, built once per call at trace time.

    Parameters
    ----------
    kind : {"root", "fixed_point", "argmin"}
        What ``fn`` means.
    fn : callable
        ``fn(y_flat, params) -> out``: the residual for a root (flat, same size as
        ``y``), the map for a fixed point (flat), the scalar objective for a minimum.
    unravel : callable
        Rebuilds the user's pytree from a flat ``y``.
    user_fun : callable
        ``user_fun(y_tree, params)``: the user's own function on pytrees, for custom and
        host solvers that want to see the problem as the user wrote it.
    n : int
        Size of the flat unknown.
    dtype : numpy dtype
        Floating dtype of the flat unknown.
    """

    kind: str
    fn: Callable
    unravel: Callable
    user_fun: Callable
    n: int
    dtype: Any

    @property
    def symmetric(self) -> bool:
        """True when the tangent operator is symmetric (a Hessian)."""
        return self.kind == "argmin"

    def residual(self, y, params):
        """Optimality residual ``F(y, params)``; zero exactly at a solution."""
        if self.kind == "root":
            return self.fn(y, params)
        if self.kind == "fixed_point":
            return self.fn(y, params) - y
        return jax.grad(self.fn)(y, params)

    def objective(self, y, params):
        """Scalar objective (argmin problems only)."""
        assert self.kind == "argmin"
        return self.fn(y, params)


@dataclasses.dataclass(frozen=True)
class Solver:
    """Base class of forward solvers: a frozen, hashable configuration.

    Subclasses set :attr:`kinds` (the problem kinds they can solve) and implement
    :meth:`run`. ``rtol``/``atol`` of ``None`` mean :func:`default_tolerances` of the
    problem's dtype.
    """

    kinds: ClassVar[tuple[str, ...]] = KINDS

    def run(self, problem: Problem, y0, params) -> SolverResult:  # pragma: no cover
        """Solve ``problem`` from the flat start ``y0``; see :class:`SolverResult`."""
        raise NotImplementedError

    def tolerances(self, dtype) -> tuple[float, float]:
        """Resolve ``(rtol, atol)`` for ``dtype``."""
        rtol_d, atol_d = default_tolerances(dtype)
        rtol = getattr(self, "rtol", None)
        atol = getattr(self, "atol", None)
        return (rtol_d if rtol is None else rtol), (atol_d if atol is None else atol)

    def check_kind(self, kind: str, where: str) -> None:
        """Raise a clear ``ValueError`` when this solver cannot solve ``kind``."""
        if kind not in self.kinds:
            suggestion = {
                "root": "Newton or Chandrupatla",
                "fixed_point": "Newton, Anderson or FixedPointIteration",
                "argmin": "Newton, BFGS or LBFGS",
            }[kind]
            raise ValueError(
                f"{where}: solver {type(self).__name__} solves {', '.join(self.kinds)} "
                f"problems, not {kind!r}. Use {suggestion} (mcmc_customgrad.solvers), or "
                "pass your own callable."
            )


def validate_positive_int(value, name: str, owner: str) -> None:
    """Raise ``ValueError`` unless ``value`` is a positive int."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive integer, got {value!r}.")


def validate_tolerance(value, name: str, owner: str) -> None:
    """Raise ``ValueError`` unless ``value`` is None or a finite number >= 0."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
        raise ValueError(f"{owner}: {name} must be a float or None, got {value!r}.")
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{owner}: {name} must be finite and >= 0, got {value!r}.")
