"""Shared types of the implicit core: problems, solver results, tolerances and errors.

Everything here works on *flat* vectors: the public functions ravel the user's pytrees
once at the boundary, so solvers and linear solves are written for a 1-D array ``y``
and a pytree of parameters ``params`` that they never look inside.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._args import check_int

__all__ = [
    "Status",
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


class Status(enum.IntEnum):
    """Why an inner solve ended: ``SolverInfo.status``, one int32 per solve element.

    ``CONVERGED`` and ``DEGENERATE`` are the *accepted* outcomes (``info.converged`` is
    True and the result is returned); every other status is a failure, whose result is
    NaN (``on_failure="nan"``), so that a sampler rejects the proposal. ``message`` says
    what each means and what to try; ``docs/core.md`` (section *Statuses*) says what
    each means for a log-density and for sampling.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import mcmc_customgrad as mcg
    >>> y, info = mcg.root(lambda y: y**2 - 2.0, jnp.array(1.0), full_output=True)
    >>> mcg.Status(int(info.status)).name
    'CONVERGED'
    >>> mcg.Status.MAX_STEPS.accepted
    False
    """

    CONVERGED = 0
    DEGENERATE = 1
    MAX_STEPS = 2
    STAGNATED = 3
    NONFINITE = 4
    LINEAR_SOLVE_FAILED = 5
    NOT_CONVERGED = 6
    NOT_SEPARABLE = 7
    NOT_LOG_CONCAVE = 8

    @property
    def accepted(self) -> bool:
        """True for the outcomes whose result is returned (``CONVERGED``, ``DEGENERATE``)."""
        return self <= Status.DEGENERATE

    @property
    def message(self) -> str:
        """What the status means, and what to try."""
        return _STATUS_MESSAGES[self]

    @classmethod
    def describe(cls, status) -> str:
        """``"NAME: message"`` for an int (or 0-d array) status."""
        s = cls(int(status))
        return f"{s.name}: {s.message}"


_STATUS_MESSAGES = {
    Status.CONVERGED: "the optimality residual is within tolerance and y is known to it.",
    Status.DEGENERATE: (
        "the residual is within tolerance, but y is known only to info.error_estimate, "
        "more than 10 times the step tolerance: the Jacobian (Hessian) is singular or "
        "nearly so at the solution (a double root, a flat or quartic minimum), where y "
        "converges slowly and the solver could not go on (Newton goes on where it can), "
        "or a continuum of solutions (a network with a dead unit), where the solver "
        "stopped making progress with the residual within tolerance (the error estimate "
        "is then inf). The objective's value there is still accurate (its error is of "
        "higher order than y's), y itself is not."
    ),
    Status.MAX_STEPS: (
        "the solver ran out of max_steps while still making progress: raise max_steps, "
        "or start nearer the solution."
    ),
    Status.STAGNATED: (
        "the solver stopped early: neither the residual nor the objective improved over "
        "its last steps, above the tolerance (usually rounding in the objective or its "
        "gradient). A looser rtol/atol is acceptable where the value's accuracy allows: "
        "for a minimum, a gradient tolerance g changes the value by about g^2 / (2 h) "
        "(h the smallest curvature); for a root, the error in y is about tol / |J|."
    ),
    Status.NONFINITE: (
        "the residual or the iterate became NaN or infinite: check the function's "
        "domain (a log or sqrt of a negative number, an overflow) or start elsewhere."
    ),
    Status.LINEAR_SOLVE_FAILED: (
        "a linear solve in the solver failed (a singular or indefinite matrix, or an "
        "iterative solve that missed its tolerance): try another linear_solver or a "
        "preconditioner."
    ),
    Status.NOT_CONVERGED: (
        "a custom or host solver reported no convergence, or its answer failed this "
        "library's own residual test."
    ),
    Status.NOT_SEPARABLE: (
        "the Laplace log-likelihood is not separable in the latent field (its Hessian "
        "is not diagonal): use a dense Laplace path or a separable likelihood."
    ),
    Status.NOT_LOG_CONCAVE: (
        "the Laplace log-likelihood's curvature is positive somewhere (W < 0): the "
        "Laplace approximation there is not a Gaussian; use a log-concave likelihood."
    ),
}


class SolverInfo(NamedTuple):
    """What an inner solve reports next to its result.

    Attributes
    ----------
    converged : bool array
        True when the result is accepted: ``status`` is ``CONVERGED`` or ``DEGENERATE``
        (see :class:`Status`).
    num_steps : int32 array
        Iterations the forward solver took (-1 when a custom solver does not say).
    residual_norm : float array
        Max-norm of the optimality residual at the returned point: ``fun(y)`` for a root,
        ``fun(y) - y`` for a fixed point, the gradient for a minimum.
    status : int32 array
        A :class:`Status`: why the solve ended. ``None`` in a custom solver's own
        ``SolverInfo(converged, num_steps, residual_norm)``; the library fills it in.
    error_estimate : float array
        Estimated max-norm error of ``y`` (NaN where the solver has none, as for a
        custom solver): at most the step tolerance ``atol + rtol |y|_inf`` for
        ``CONVERGED``, larger for ``DEGENERATE``.
    """

    converged: Any
    num_steps: Any
    residual_norm: Any
    status: Any = None
    error_estimate: Any = None


class SolverResult(NamedTuple):
    """What a forward solver returns to the core (flat ``y``).

    ``status`` and ``error_estimate`` may be left ``None``; the core then derives the
    status from ``converged`` (see :func:`status_of`).
    """

    y: Any
    converged: Any
    num_steps: Any
    residual_norm: Any
    status: Any = None
    error_estimate: Any = None


#: A converged answer whose estimated error exceeds this many step tolerances is
#: reported ``DEGENERATE``.
DEGENERATE_FACTOR = 10.0


def secant_error(residual_norm, previous_norm, step_norm, delta, step_tol):
    """Estimated max-norm error of ``y`` at the end of a solve.

    ``delta`` is the solver's own estimate of ``y - y*`` (its next step; ``inf`` when it
    has none). Where it passes the step test (``delta <= step_tol``) it is the estimate.
    Otherwise the solve was accepted by the fallen-residual test, or failed, and the
    estimate is the larger of ``delta`` and the secant estimate
    ``|F_k| |s_k| / (|F_{k-1}| - |F_k|)`` (max-norms; ``s_k`` the last step): the
    residual over its rate of decrease along the last step. It tracks the error where
    convergence is slow: for ``y^2 = 0`` (Newton halves ``y`` each step) it is about
    ``y``, although the residual fell by ``rtol`` long before ``y`` was known to it.
    Scalars only, so that solvers carry two numbers, not two vectors, through their
    loops. 0 when the residual is exactly zero.
    """
    fall = previous_norm - residual_norm
    ok = fall > 0
    secant = jnp.where(ok, residual_norm * step_norm / jnp.where(ok, fall, 1.0), jnp.inf)
    secant = jnp.where(residual_norm == 0, 0.0, secant)
    known = delta <= step_tol
    finite_delta = jnp.where(jnp.isfinite(delta), delta, 0.0)
    return jnp.where(known, delta, jnp.maximum(finite_delta, secant))


#: Passes without progress after which Newton stops (``STAGNATED``), and quasi-Newton.
STALL_NEWTON = 10
STALL_QUASI_NEWTON = 25
#: Progress is a new best merit by more than this many ``eps |merit|``, or a new best
#: residual max-norm below ``1 - STALL_RTOL`` times the previous best.
STALL_MERIT_EPS = 100.0
STALL_RTOL = 1e-3


class Tracker(NamedTuple):
    """What a solver carries to report its end: the error estimate and stagnation.

    Scalars only (a loop's per-step cost on a CPU is mostly its number of operations):
    ``residual`` is the residual max-norm at the current point, ``previous`` the one
    before the last accepted step and ``step`` that step's max-norm (for
    :func:`secant_error`); ``best_merit``/``best_residual`` the best merit and residual
    so far, and ``stall`` the passes since either improved.
    """

    residual: Any
    previous: Any
    step: Any
    best_merit: Any
    best_residual: Any
    stall: Any

    @classmethod
    def start(cls, residual_norm, merit) -> Tracker:
        """The tracker at the start point."""
        r = jnp.asarray(residual_norm)
        return cls(r, r, jnp.zeros_like(r), merit, r, jnp.zeros((), jnp.int32))

    def update(self, accepted, residual_norm, step_norm, merit_new) -> Tracker:
        """The tracker after a pass that moved (when ``accepted``) by a step.

        ``step_norm`` is the step's max-norm, ``residual_norm`` and ``merit_new`` the
        residual max-norm and merit at the new point.
        """
        eps = jnp.finfo(jnp.result_type(residual_norm)).eps
        noise = STALL_MERIT_EPS * eps * jnp.abs(self.best_merit)
        better = accepted & (
            (merit_new < self.best_merit - noise)
            | (residual_norm < (1.0 - STALL_RTOL) * self.best_residual)
        )
        return Tracker(
            jnp.where(accepted, residual_norm, self.residual),
            jnp.where(accepted, self.residual, self.previous),
            jnp.where(accepted, step_norm, self.step),
            jnp.where(accepted, jnp.minimum(self.best_merit, merit_new), self.best_merit),
            jnp.where(accepted, jnp.minimum(self.best_residual, residual_norm), self.best_residual),
            jnp.where(better, 0, self.stall + 1),
        )

    def stagnated(self, window):
        """True once ``window`` passes in a row made no progress."""
        return self.stall >= window

    def result(
        self,
        y,
        ok,
        num_steps,
        residual,
        *,
        rtol,
        atol,
        window,
        delta=jnp.inf,
        finite=True,
        residual_ok=False,
    ):
        """The :class:`SolverResult` with status and error estimate.

        ``residual_ok`` says whether the residual test alone
        (:func:`residual_within`) passes at ``y``. A solve that stagnated there is
        accepted: no step improves ``y`` any more, and the optimality condition holds to
        tolerance, which is what a solution whose Jacobian (Hessian) is singular looks
        like at the end (a minimum in a continuum of minima, as a network with a dead
        unit has). Its status is ``DEGENERATE`` unless the error estimate says that ``y``
        is known to tolerance after all; the estimate is ``inf`` where the last steps
        made no progress (``y`` is then not determined by the residual).
        """
        y_norm = max_norm(y)
        r = max_norm(residual)
        error = secant_error(r, self.previous, self.step, delta, atol + rtol * y_norm)
        ok = ok | (self.stagnated(window) & residual_ok & jnp.asarray(finite))
        status = status_of(
            ok,
            finite=jnp.asarray(finite) & jnp.isfinite(r),
            error_estimate=error,
            y_norm=y_norm,
            rtol=rtol,
            atol=atol,
            stagnated=self.stagnated(window),
        )
        return SolverResult(y, ok, num_steps, r, status, error.astype(y.dtype))


def continue_where(active, first: SolverResult, second) -> SolverResult:
    """``second(first)`` where ``active``, else ``first``: a hybrid solver's next stage.

    ``second(first) -> SolverResult`` runs the next stage from ``first.y`` for the
    ``active`` elements (its loop starts stopped for the others). ``active`` may be a
    function of ``first``: it is then computed again inside the stage's branch rather
    than passed in (one kernel less when the stage does not run). A ``lax.cond``, so
    that without ``vmap`` an unneeded stage costs nothing: even a loop that never runs
    costs its loop-invariant setup, which XLA hoists before the loop (an identity
    matrix to build a Jacobian, 30 µs at 100 unknowns). Under ``vmap`` with a batched
    ``active`` both branches run, and the stage's loop runs while some element needs it.
    Steps add up.
    """

    def normalise(res, steps):
        return SolverResult(
            jnp.asarray(res.y, first.y.dtype),
            jnp.asarray(res.converged, bool),
            jnp.asarray(steps, jnp.int32),
            jnp.asarray(res.residual_norm, first.y.dtype),
            jnp.asarray(res.status, jnp.int32),
            jnp.asarray(res.error_estimate, first.y.dtype),
        )

    def run(first):
        act = active(first) if callable(active) else active
        more = second(first)
        merged = jax.tree.map(lambda a, b: jnp.where(act, a, b), more, first)
        return normalise(merged, first.num_steps + jnp.where(act, more.num_steps, 0))

    predicate = active(first) if callable(active) else active
    return jax.lax.cond(predicate, run, lambda first: normalise(first, first.num_steps), first)


def status_of(
    converged,
    *,
    finite,
    error_estimate=None,
    y_norm=None,
    rtol=None,
    atol=None,
    stagnated=False,
    linear_failed=False,
    failure=None,
):
    """The :class:`Status` (int32) of a solve from what a solver knows at its end.

    Accepted (``converged``) solves are ``DEGENERATE`` when ``error_estimate`` exceeds
    :data:`DEGENERATE_FACTOR` step tolerances, else ``CONVERGED``; failures are
    ``NONFINITE``, ``LINEAR_SOLVE_FAILED``, ``STAGNATED`` or else ``failure``
    (``MAX_STEPS`` by default), in that order.
    """
    degenerate = jnp.array(False)
    if error_estimate is not None:
        tol = atol + rtol * y_norm
        degenerate = ~(error_estimate <= DEGENERATE_FACTOR * tol)
    failure = Status.MAX_STEPS if failure is None else failure
    status = jnp.select(
        [converged & degenerate, converged, ~finite, linear_failed, stagnated],
        [
            Status.DEGENERATE,
            Status.CONVERGED,
            Status.NONFINITE,
            Status.LINEAR_SOLVE_FAILED,
            Status.STAGNATED,
        ],
        failure,
    )
    return status.astype(jnp.int32)


def default_tolerances(dtype) -> tuple[float, float]:
    """Return the default ``(rtol, atol)`` for a floating dtype.

    ``1e-10`` in float64 (the implicit gradient is only exact at the true solution, so
    the tolerance decides its accuracy, not only the speed) and ``1000 * eps`` for lower
    precisions (``1.2e-4`` in float32), which is what can be reached with the residual
    evaluated in that precision. A tolerance this coarse is larger than many residuals
    themselves, which is why :func:`converged_within` also asks for ``y`` to be known
    to it.
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
    """Max-norm of a flat vector; 0 for an empty one (NaN if any entry is NaN).

    The empty case is decided from the static shape: ``jnp.max(..., initial=0.0)`` would
    add a ``maximum`` after the reduction, which XLA:CPU runs as a kernel of its own
    wherever the norm has several users (a solver loop's tests).
    """
    a = jnp.abs(x)
    return jnp.zeros((), a.dtype) if a.size == 0 else jnp.max(a)


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
    """Raise ``ValueError`` unless ``value`` is a positive int (a solver's setting)."""
    check_int(owner, name, value, 1)


def validate_tolerance(value, name: str, owner: str) -> None:
    """Raise ``ValueError`` unless ``value`` is None or a finite number >= 0."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
        raise ValueError(f"{owner}: {name} must be a float or None, got {value!r}.")
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{owner}: {name} must be finite and >= 0, got {value!r}.")
