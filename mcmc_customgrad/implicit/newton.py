"""Damped Newton for roots, fixed points and minima: dense, sparse or matrix-free steps."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax import lax

from ._base import (
    STALL_NEWTON,
    STALL_QUASI_NEWTON,
    Problem,
    Solver,
    SolverResult,
    Tracker,
    continue_where,
    converged_within,
    max_norm,
    residual_scale,
    residual_within,
    secant_error,
    validate_positive_int,
    validate_tolerance,
)
from ._linesearch import backtrack
from .linear import Dense, LinearSolver, Operator

__all__ = ["Newton"]


@dataclasses.dataclass(frozen=True)
class Newton(Solver):
    """Newton with an Armijo line search and Levenberg-Marquardt damping when needed.

    For a minimum the step solves ``(H + mu I) p = -g`` (Cholesky; elimination for
    up to 12 unknowns) with ``mu = lam |g|``, vanishing once the gradient passes its
    test (``lam`` starts at ``DAMPING_START = 1e-3``). For a root (and a fixed point,
    as the root of ``T(y) - y``) the step is the plain Newton step ``J p = -F`` (one LU
    factorisation; elimination with partial pivoting for up to 12 unknowns), and the
    Levenberg-Marquardt step ``(J'J + mu I) p = -J'F`` with ``mu = lam |F|`` replaces
    it when the Newton step is not finite or not a descent direction for ``|F|^2``, or
    when the last step had to be shortened (a poor Newton model). So convergence is
    quadratic near a regular solution, while a singular Hessian or Jacobian (the
    seed-000 start ``y0 = 0`` of ``|y|^3/3 - x y``, where plain Newton stalls) still
    gives a well-defined descent step. ``lam`` shrinks after full steps and grows after
    shortened ones. The line search rejects non-finite trial points.

    With ``linear_solver`` (any :mod:`mcmc_customgrad.linear` solver but ``Dense``) the
    steps are solved by it instead, with the operator given as JVPs (Hessian-vector
    products for a minimum), so nothing of size ``n x n`` is formed: ``Sparse``
    assembles and factorises the sparse Jacobian at each iterate, ``GMRES``/``CG`` run
    an inexact Newton-Krylov iteration whose tolerance follows Eisenstat and Walker's
    forcing terms (``eta_k = 0.9 (|F_k| / |F_{k-1}|)^2``, safeguarded, at most 0.9), and
    a minimum's damping becomes a shift ``H + mu I``. Where such a step is not a descent
    direction the step is a Cauchy (steepest-descent) step instead.

    Converged (:func:`~mcmc_customgrad.implicit._base.converged_within`) when the
    residual is within tolerance (``|F(y)|_inf <= atol`` for a root,
    ``|T(y) - y|_inf <= atol + rtol |y|_inf`` for a fixed point,
    ``|grad|_inf <= atol + rtol |f(y)|`` for a minimum) *and* ``y`` is known to
    tolerance: the Newton step at ``y`` (undamped wherever the residual passes) is below
    ``atol + rtol |y|_inf``, or, as a secondary test, the residual has fallen below
    ``rtol`` times its value at ``y0``. A small residual alone is not enough:
    ``1e-5 (y - 2)`` from ``y0 = 0`` is within float32's tolerance, but its Newton step
    is 2. Also converged when a full undamped step taken was below
    ``atol + rtol |y|_inf`` (``y`` is then known to that accuracy even if rounding keeps
    the residual above its tolerance). The step at ``y`` is the one the next iteration
    would take, so the test costs one Jacobian (Hessian), solve and evaluation at the
    last point, not an iteration.

    The status (``info.status``, :class:`~mcmc_customgrad.Status`) is ``STAGNATED``
    when the loop stopped for lack of progress with the residual above its tolerance,
    ``MAX_STEPS`` when it ran out, and ``DEGENERATE`` when it converged slowly to a
    singular solution, or stopped for lack of progress with the residual within its
    tolerance (a minimum in a continuum of minima, as a network with a dead unit has;
    the error estimate is then ``inf``). See :class:`~mcmc_customgrad.Status`.

    Parameters
    ----------
    rtol, atol : float, optional
        Tolerances; ``None`` means ``1e-10`` in float64 (``1000 eps`` in lower
        precisions).
    max_steps : int
        Newton iterations before giving up (then NaN and ``converged == False``).
    linear_solver : LinearSolver, optional
        Solves each step; ``None`` (default) or ``Dense()`` is the built-in dense path
        above (for up to ``mcg.linear.DENSE_LIMIT`` unknowns when chosen by default).
    fallback : bool
        Minima only. Where Newton cannot finish (``max_steps`` spent, or
        ``STALL_NEWTON = 10`` steps in a row without progress in the objective or the
        gradient: an indefinite or singular Hessian, where the damped step crawls),
        continue from its last point with BFGS for up to ``FALLBACK_STEPS = 1000``
        more steps: with dense steps in the same loop and line search, the BFGS
        approximation taking the Hessian's place (so the compiled program has no second
        loop); with matrix-free or sparse steps by :class:`LBFGS` afterwards. BFGS
        builds its curvature from gradients and so is not misled by a singular
        Hessian. On Optimistix's 25-unknown ReLU network Newton alone stalls at a
        gradient of 5e-6; with the fallback the gradient falls below the tolerance
        (below 1e-11). ``False`` makes ``max_steps`` a hard cap.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import mcmc_customgrad as mcg
    >>> g = lambda y, x: jnp.sum(jnp.abs(y) ** 3 / 3 - x * y)
    >>> y, info = mcg.argmin(g, jnp.zeros(1), jnp.array([0.31415]),
    ...                      solver=mcg.solvers.Newton(), full_output=True)
    >>> bool(info.converged), round(float(y[0]), 6)
    (True, 0.560491)
    """

    rtol: float | None = None
    atol: float | None = None
    max_steps: int = 100
    linear_solver: LinearSolver | None = None
    fallback: bool = True

    def __post_init__(self):
        if not isinstance(self.fallback, bool):
            raise TypeError(f"Newton: fallback must be True or False, got {self.fallback!r}.")
        validate_tolerance(self.rtol, "rtol", "Newton")
        validate_tolerance(self.atol, "atol", "Newton")
        validate_positive_int(self.max_steps, "max_steps", "Newton")
        ls = self.linear_solver
        if ls is not None and (isinstance(ls, type) or not isinstance(ls, LinearSolver)):
            raise TypeError(
                "Newton: linear_solver must be None or an mcmc_customgrad.linear solver "
                f"instance (Sparse(), GMRES(), CG(), Diagonal(), Dense()), got {ls!r}."
            )

    @property
    def dense_steps(self) -> bool:
        """True when the steps use the built-in dense factorisations."""
        return self.linear_solver is None or isinstance(self.linear_solver, Dense)

    def run(self, problem: Problem, y0, params, active=None) -> SolverResult:
        """Solve ``problem`` from ``y0``.

        ``active`` (a bool array, roots and fixed points only) marks the elements that
        need solving; the others are returned unsolved, at no cost under ``vmap``
        (a hybrid solver's Newton stage).
        """
        if active is not None and problem.kind == "argmin":
            raise ValueError("Newton: active= is for roots and fixed points.")
        rtol, atol = self.tolerances(problem.dtype)
        if not self.dense_steps:
            self.linear_solver.check(problem.symmetric)
            if problem.kind == "argmin":
                res = _newton_min_operator(
                    problem, y0, params, rtol, atol, self.max_steps, self.linear_solver
                )
                return self._fall_back(problem, res, params) if self.fallback else res
            return _newton_root_operator(
                problem, y0, params, rtol, atol, self.max_steps, self.linear_solver, active
            )
        if problem.kind == "argmin":
            return _newton_min(problem, y0, params, rtol, atol, self.max_steps, self.fallback)
        return _newton_root(problem, y0, params, rtol, atol, self.max_steps, active)

    def _fall_back(self, problem, res, params):
        """Continue a matrix-free or sparse minimisation Newton could not finish (L-BFGS).

        Runs only for the elements Newton left unconverged with a finite iterate
        (:func:`~mcmc_customgrad.implicit._base.continue_where`).
        """
        from .quasi_newton import LBFGS

        second = LBFGS(rtol=self.rtol, atol=self.atol)
        active = ~res.converged & jnp.all(jnp.isfinite(res.y))
        return continue_where(
            active, res, lambda first: second.run(problem, first.y, params, active=active)
        )


#: Up to this many unknowns the damped Newton system is solved by Gauss-Jordan elimination
#: in XLA rather than by LAPACK's Cholesky: for 4 vectorized 10 x 10 systems on CPU it
#: costs 2.4 µs against 3.6 µs (three LAPACK calls), at 2 x 2 0.2 µs against 1.5 µs; from
#: about 16 unknowns the O(n^3) elimination loses (``docs/benchmarks.md``).
ELIMINATION_LIMIT = 12


def _spd_solve(a, b):
    """``a^-1 b`` for symmetric ``a``; NaN unless ``a`` is numerically positive definite.

    Small systems: Gauss-Jordan without pivoting. For a symmetric matrix its pivots are
    those of ``L D L'``, all positive exactly when the matrix is positive definite, so a
    non-positive pivot gives NaN, the answer Cholesky gives (the caller then falls back to
    a gradient step). Elimination without pivoting is backward stable for positive
    definite matrices, and the step is only a search direction: its rounding changes the
    path to the minimum, never the minimum or its derivatives.
    """
    n = a.shape[0]
    if n > ELIMINATION_LIMIT:
        return jax.scipy.linalg.cho_solve((jnp.linalg.cholesky(a), True), b)
    x, positive = _gauss_jordan(a, b, pivoting=False)
    return jnp.where(positive, x, jnp.nan)


def _gauss_jordan(a, b, pivoting):
    """``(a^-1 b, all pivots > 0)`` by Gauss-Jordan elimination in XLA (``a`` small).

    With ``pivoting`` each column's pivot is its largest entry at or below the diagonal
    (partial pivoting; a singular ``a`` gives a non-finite answer, as LAPACK's LU does);
    without, the pivots are the diagonal's, whose signs :func:`_spd_solve` reads.
    """
    n = a.shape[0]
    rows = jnp.arange(n)

    def eliminate(k, carry):
        m, positive = carry
        if pivoting:
            pivot_at = jnp.argmax(jnp.where(rows >= k, jnp.abs(m[:, k]), -1.0))
            m = m[jnp.where(rows == k, pivot_at, jnp.where(rows == pivot_at, k, rows))]
        pivot_row = lax.dynamic_index_in_dim(m, k, 0, keepdims=False)
        pivot = pivot_row[k]
        row = pivot_row / pivot
        column = lax.dynamic_index_in_dim(m, k, 1, keepdims=True)
        m = jnp.where(rows[:, None] == k, row[None, :], m - column * row[None, :])
        return m, positive & (pivot > 0)

    augmented = jnp.concatenate([a, b[:, None]], axis=1)
    m, positive = lax.fori_loop(0, n, eliminate, (augmented, jnp.array(True)))
    return m[:, n], positive


def _solve_small(a, b):
    """``a^-1 b`` for a general square ``a``: LU by LAPACK, or elimination when small.

    Up to ``ELIMINATION_LIMIT`` unknowns Gauss-Jordan elimination with partial pivoting
    in XLA (a singular ``a`` gives a non-finite answer, as LAPACK's LU does): in a
    compiled solve a LAPACK call costs about a microsecond of dispatch whatever its
    size, several times the whole elimination of a 3 x 3 system.
    """
    n = a.shape[0]
    if n > ELIMINATION_LIMIT:
        return jax.scipy.linalg.lu_solve(jax.scipy.linalg.lu_factor(a), b)
    return _gauss_jordan(a, b, pivoting=True)[0]


def _drop_nonfinite_curvature(h):
    # Rows/columns of the Hessian that are not finite (|y|^p with p < 2 at y = 0, where
    # the curvature is infinite) carry no usable information: zero them, so that only
    # the damping acts there. Newton stays quadratic in the other coordinates.
    bad = ~jnp.all(jnp.isfinite(h), axis=1)
    return jnp.where(bad[:, None] | bad[None, :], 0.0, h)


def _finite_norm(a):
    norm = jnp.linalg.norm(a)
    return jnp.where(jnp.isfinite(norm), norm, 0.0)


def _lam_update(lam, alpha):
    return jnp.clip(jnp.where(alpha == 1.0, 0.25 * lam, 4.0 * lam), 1e-6, 1e6)


def _newton_loop(
    direction,
    backtrack_at,
    done,
    finite,
    parts,
    state0,
    max_steps,
    rtol,
    atol,
    active=None,
    switch=None,
    lam0=1.0,
):
    """The Newton iteration shared by minima and roots.

    Each pass computes the step at the current point first (``direction``), then decides
    convergence there (``done``, which needs that step for the step test) and only then
    moves: the Jacobian (Hessian) and its solve appear once in the program, and the pass
    that finds convergence takes no step (its line search is along a zero step: one
    evaluation). Before a pass, convergence that needs no step at ``y`` (``settled``:
    a residual fallen by ``rtol`` from the start, or a small full step just taken) ends
    the loop at once, which is how most solves end. ``state0 = (y, aux)`` with ``aux``
    what ``direction``, ``backtrack_at`` and ``finite`` need (the value and gradient, or
    the residual); ``parts(aux) -> (merit, residual)``. The loop also stops after
    ``STALL_NEWTON`` passes without progress (:class:`~._base.Tracker`). ``lam0`` is
    the damping parameter's start (a root's Newton step is undamped unless ``lam > 1``).

    ``switch = (to_fallback, extra_steps)``, if given, changes method once instead of
    stopping: where the loop would stop for ``max_steps`` or stagnation, ``aux`` becomes
    ``to_fallback(aux)`` (``direction`` and ``backtrack_at`` read the mode from it), the
    stagnation count restarts with window ``STALL_QUASI_NEWTON`` and ``extra_steps``
    more passes are allowed. The same loop and line search serve both methods, so the
    fallback costs no second loop in the compiled program.

    Returns ``(y, aux, num_steps, ok, tracker, delta)``: ``delta`` is the estimate of
    ``y - y*`` at the returned ``y`` (the step there, the last full step when that was
    small, else ``inf``) for the error estimate.
    """
    y0, aux0 = state0
    no_step = jnp.asarray(jnp.inf, y0.dtype)
    false = jnp.array(False)

    def known(y, aux, delta, small, tracker):
        # Inside the loop the fallen-residual test is trusted only where the secant
        # estimate of the error agrees: at a singular solution (a double root, a quartic
        # minimum) the residual falls by rtol long before y is known, and Newton keeps
        # going while its steps still improve y. What the loop ends with is judged by
        # `done` alone, and reported DEGENERATE if y is not known (secant_error).
        step_tol = atol + rtol * max_norm(y)
        r = max_norm(parts(aux)[1])
        error = secant_error(r, tracker.previous, tracker.step, delta, step_tol)
        return small | (error <= step_tol)

    def settled(y, aux, small, tracker):
        # Converged without the step at y: the residual passes and has fallen by rtol from
        # the start, or the last full undamped step was small. Checked before a pass, so
        # the usual end of a solve costs no Jacobian (Hessian) at the last point.
        return done(y, aux, no_step, small) & known(y, aux, no_step, small, tracker)

    def window(switched):
        return jnp.where(switched, STALL_QUASI_NEWTON, STALL_NEWTON)

    def cond(state):
        y, aux, _lam, _k, small, _ok, stop, tracker, _delta, switched, _limit = state
        stalled = tracker.stagnated(window(switched))
        if switch is not None:
            stalled = stalled & switched
        return ~stop & ~stalled & finite(aux) & ~settled(y, aux, small, tracker)

    def body(state):
        y, aux, lam, k, small, _, _, tracker, _, switched, limit = state
        if switch is not None:
            to_fallback, extra_steps = switch
            go = ~switched & (tracker.stagnated(STALL_NEWTON) | (k >= limit))
            aux = lax.cond(go, to_fallback, lambda aux: aux, aux)
            tracker = tracker._replace(stall=jnp.where(go, 0, tracker.stall))
            limit = jnp.where(go, k + extra_steps, limit)
            switched = switched | go
        p, slope, light, delta = direction(y, aux, lam)
        ok = done(y, aux, delta, small) & known(y, aux, delta, small, tracker)
        stop = ok | (k >= limit)
        p = jnp.where(stop, 0.0, p)
        slope = jnp.where(stop, 0.0, slope)
        alpha, aux_new, accepted = backtrack_at(y, aux, p, slope)
        accepted = accepted & ~stop
        y_new = jnp.where(accepted, y + alpha * p, y)
        aux_new = jax.tree.map(lambda a, b: jnp.where(accepted, a, b), aux_new, aux)
        # A full, (nearly) undamped Newton step this small: y is known to tolerance even
        # if rounding keeps the residual above its tolerance.
        small = accepted & light & (alpha == 1.0)
        small = small & (max_norm(p) <= atol + rtol * max_norm(y_new))
        lam = jnp.where(stop, lam, _lam_update(lam, alpha))
        merit_new, r_new = parts(aux_new)
        # The pass that stops takes no step and is not counted against progress.
        moved = tracker.update(accepted, max_norm(r_new), max_norm(alpha * p), merit_new)
        tracker = jax.tree.map(lambda a, b: jnp.where(stop, a, b), tracker, moved)
        delta_here = jnp.where(stop, delta, jnp.where(small, max_norm(alpha * p), no_step))
        k = jnp.where(stop, k, k + 1)
        return y_new, aux_new, lam, k, small, ok, stop, tracker, delta_here, switched, limit

    one = jnp.ones((), y0.dtype)
    merit0, r0 = parts(aux0)
    # An inactive element (a hybrid solver's Newton stage it does not need) starts stopped.
    stop0 = false if active is None else ~active
    tracker0 = Tracker.start(max_norm(r0), merit0)
    limit0 = jnp.asarray(max_steps, jnp.int32)
    zero = jnp.zeros((), jnp.int32)
    state = (y0, aux0, lam0 * one, zero, false, false, stop0, tracker0, no_step, false, limit0)
    y, aux, _, k, small, ok, _, tracker, delta, switched, _ = lax.while_loop(cond, body, state)
    ok = (ok | done(y, aux, delta, small)) & finite(aux)
    return y, aux, k, ok, tracker, delta, switched


def _finish(y, aux, k, ok, tracker, delta, switched, *, kind, parts, rtol, atol, finite):
    """The :class:`SolverResult` of a Newton loop (status and error estimate)."""
    merit, residual = parts(aux)
    # For a minimum the merit is the objective, whose size scales the gradient's test;
    # roots and fixed points do not use it.
    scale = residual_scale(kind, y, merit)
    return tracker.result(
        y,
        ok,
        k,
        residual,
        rtol=rtol,
        atol=atol,
        window=jnp.where(switched, STALL_QUASI_NEWTON, STALL_NEWTON),
        delta=delta,
        finite=finite(aux),
        residual_ok=residual_within(max_norm(residual), scale, rtol, atol),
    )


#: Starting ``lam`` of a minimum's damping ``mu = lam |g|``. Small, so that the first
#: step on a convex objective is nearly Newton's own: with ``lam = 1`` a gradient of 0.34
#: against a smallest curvature of 0.04 (Matyas' function from ``(6, 6)``) shortens the
#: first step tenfold, and six passes instead of three follow. Where the Hessian is
#: singular or indefinite, shortened steps raise ``lam`` fourfold per pass.
DAMPING_START = 1e-3

#: Passes the BFGS fallback of the dense Newton minimiser may take (BFGS's own default).
FALLBACK_STEPS = 1000

# Modes of the dense Newton minimiser (``aux[3]``): Newton; BFGS before its first
# curvature pair (its step is no estimate of y - y* yet); BFGS.
_NEWTON, _BFGS_FRESH, _BFGS = 0, 1, 2


def _bfgs_update(b, mode, s, v, accepted, eye):
    """The dense Newton minimiser's BFGS fallback: ``B`` after the step ``s``, ``v = dg``.

    ``B+ = B - B s s'B / s'B s + v v' / s'v``, kept only where the curvature condition
    holds (it keeps ``B`` positive definite); before the first update ``B`` is rescaled
    to ``v'v / s'v`` (Nocedal and Wright). Returns ``(B, mode)``.
    """
    sv = jnp.vdot(s, v)
    good = accepted & (sv > 1e-10 * jnp.linalg.norm(s) * jnp.linalg.norm(v))
    safe_sv = jnp.where(good, sv, 1.0)
    b = jnp.where(good & (mode == _BFGS_FRESH), (jnp.vdot(v, v) / safe_sv) * eye, b)
    bs = b @ s
    sbs = jnp.vdot(s, bs)
    updated = b - jnp.outer(bs, bs) / jnp.where(good, sbs, 1.0) + jnp.outer(v, v) / safe_sv
    b = jnp.where(good & (sbs > 0), updated, b)
    return b, jnp.where(good, jnp.int32(_BFGS), mode)


def _newton_min(problem, y0, params, rtol, atol, max_steps, fallback=True):
    def f(y):
        return problem.objective(y, params)

    value_and_grad = jax.value_and_grad(f)
    hessian = jax.hessian(f)
    n = y0.shape[0]
    eye = jnp.eye(n, dtype=y0.dtype)

    def residual_ok(g, fy):
        return residual_within(max_norm(g), residual_scale("argmin", g, fy), rtol, atol)

    def direction(y, aux, lam):
        # The step from y. Where the residual passes it is undamped: the Newton estimate
        # of y - y*, which the step test asks to be within tolerance (a small gradient
        # alone may just be a flat objective). In the BFGS fallback the matrix is the
        # BFGS approximation of the Hessian instead, undamped.
        fy, g, b, mode = aux
        quasi = mode != _NEWTON
        if fallback:
            h = lax.cond(quasi, lambda: b, lambda: _drop_nonfinite_curvature(hessian(y)))
        else:
            h = _drop_nonfinite_curvature(hessian(y))
        mu = jnp.where(residual_ok(g, fy) | quasi, 0.0, lam * jnp.linalg.norm(g))
        p = -_spd_solve(h + mu * eye, g)
        slope = jnp.vdot(g, p)
        finite = jnp.all(jnp.isfinite(p))
        newton_ok = finite & (slope < 0)
        delta = jnp.where(finite & (mode != _BFGS_FRESH), max_norm(p), jnp.inf)

        # Indefinite or broken Hessian: a gradient step scaled by the curvature bound
        # (none where the Hessian is not finite, as for |y|^1.5 at 0).
        def gradient_step(_):
            p_grad = -g / (_finite_norm(h) + mu + jnp.finfo(y.dtype).tiny)
            return p_grad, jnp.vdot(g, p_grad)

        p, slope = lax.cond(newton_ok, lambda _: (p, slope), gradient_step, None)
        light = newton_ok & (mu <= 1e-3 * jnp.linalg.norm(h)) & ~quasi
        return p, slope, light, delta

    def backtrack_at(y, aux, p, slope):
        fy, g, b, mode = aux
        gnorm = jnp.linalg.norm(g)
        quasi = mode != _NEWTON
        alpha, f_new, g_new, accepted = backtrack(
            value_and_grad,
            y,
            fy,
            p,
            slope,
            prefer=lambda g_t: quasi | (jnp.linalg.norm(g_t) <= gnorm),
            flat=lambda g_t: jnp.linalg.norm(g_t) < gnorm,
        )
        if not fallback:
            return alpha, (f_new, g_new, b, mode), accepted
        # In Newton mode nothing more (a lax.cond: the update's dozen small kernels per
        # pass were a third of a 2-unknown Newton pass).
        b, mode = lax.cond(
            mode == _NEWTON,
            lambda: (b, mode),
            lambda: _bfgs_update(b, mode, alpha * p, g_new - g, accepted, eye),
        )
        return alpha, (f_new, g_new, b, mode), accepted

    def to_bfgs(aux):
        # Start BFGS from the identity scaled like its first step, -g / max(|g|, 1).
        fy, g, _, _ = aux
        return (
            fy,
            g,
            jnp.maximum(jnp.linalg.norm(g), 1.0) * eye,
            jnp.asarray(_BFGS_FRESH, jnp.int32),
        )

    f0, g0 = value_and_grad(y0)
    g0_norm = max_norm(g0)

    def done(y, aux, delta, step_small):
        fy, g = aux[:2]
        ok = converged_within(
            "argmin", g, y, rtol, atol, step_norm=delta, start_norm=g0_norm, value=fy
        )
        return ok | step_small

    def finite(aux):
        fy, g = aux[:2]
        return jnp.isfinite(fy) & jnp.all(jnp.isfinite(g))

    def parts(aux):
        return aux[0], aux[1]

    aux0 = (f0, g0, eye, jnp.asarray(_NEWTON, jnp.int32))
    out = _newton_loop(
        direction,
        backtrack_at,
        done,
        finite,
        parts,
        (y0, aux0),
        max_steps,
        rtol,
        atol,
        switch=(to_bfgs, FALLBACK_STEPS) if fallback else None,
        lam0=DAMPING_START,
    )
    return _finish(*out, kind=problem.kind, parts=parts, rtol=rtol, atol=atol, finite=finite)


def _newton_root(problem, y0, params, rtol, atol, max_steps, active=None):
    def F(y):
        return problem.residual(y, params)

    def merit(y):
        r = F(y)
        return 0.5 * jnp.vdot(r, r), r

    jacobian = jax.jacfwd(F)
    n = y0.shape[0]
    eye = jnp.eye(n, dtype=y0.dtype)

    def residual_ok(y, r):
        return residual_within(max_norm(r), residual_scale(problem.kind, y), rtol, atol)

    def direction(y, r, lam):
        # The Newton step by LU; it is also the estimate of y - y* for the step test. A
        # scalar equation (one per element under vmap, as in Kepler's) divides instead.
        j = jnp.where(jnp.isfinite(j := jacobian(y)), j, 0.0)
        grad_merit = j.T @ r
        p_newton = -r / j[0] if n == 1 else -_solve_small(j, r)
        newton_finite = jnp.all(jnp.isfinite(p_newton))
        newton_ok = newton_finite & (jnp.vdot(grad_merit, p_newton) < 0)
        # Levenberg-Marquardt where the Newton step is unusable or the last step was cut
        # short, by the normal equations (J'J + mu I) p = -J'F: the step is a search
        # direction only, and mu > 0 bounds the squared condition number.
        damp = ~residual_ok(y, r) & (~newton_ok | (lam > 1.0))
        mu = lam * jnp.linalg.norm(r)

        def levenberg_marquardt(_):
            if n == 1:
                return -grad_merit / (j[0] * j[0] + mu)
            # Under vmap both branches run (the cond becomes a select), but never at once:
            # JAX selects each branch's operands by the predicate, which needs the LU
            # step, so this Cholesky waits for it. That matters: jaxlib 0.10's batched
            # LAPACK kernels deadlock XLA:CPU's thread pool when as many of them run at
            # once as it has threads (test_solvers.py checks the order).
            return -_spd_solve(j.T @ j + mu * eye, grad_merit)

        p = lax.cond(damp, levenberg_marquardt, lambda _: p_newton, None)
        slope = jnp.vdot(grad_merit, p)
        step_ok = jnp.all(jnp.isfinite(p)) & (slope < 0)
        delta = jnp.where(newton_finite, max_norm(p_newton), jnp.inf)

        def gradient_step(_):
            p_grad = -grad_merit / (_finite_norm(j) ** 2 + mu + jnp.finfo(y.dtype).tiny)
            return p_grad, jnp.vdot(grad_merit, p_grad)

        p, slope = lax.cond(step_ok, lambda _: (p, slope), gradient_step, None)
        light = step_ok & ~damp
        return p, slope, light, delta

    def backtrack_at(y, r, p, slope):
        alpha, _, r_new, accepted = backtrack(merit, y, 0.5 * jnp.vdot(r, r), p, slope)
        return alpha, r_new, accepted

    r0 = F(y0)
    r0_norm = max_norm(r0)

    def done(y, r, delta, step_small):
        ok = converged_within(problem.kind, r, y, rtol, atol, step_norm=delta, start_norm=r0_norm)
        return ok | step_small

    def finite(r):
        return jnp.all(jnp.isfinite(r))

    def parts(r):
        return 0.5 * jnp.vdot(r, r), r

    out = _newton_loop(
        direction, backtrack_at, done, finite, parts, (y0, r0), max_steps, rtol, atol, active
    )
    return _finish(*out, kind=problem.kind, parts=parts, rtol=rtol, atol=atol, finite=finite)


# ------------------------------------------------------------------ operator (pluggable) path

#: Eisenstat-Walker forcing (their choice 2): ``eta_k = GAMMA (|F_k| / |F_{k-1}|)^ALPHA``,
#: safeguarded by ``GAMMA eta_{k-1}^ALPHA`` when that exceeds 0.1, at most ``ETA_MAX``.
EW_GAMMA, EW_ALPHA, ETA_MAX, ETA_0 = 0.9, 2.0, 0.9, 0.5


def _forcing(eta, norm_new, norm_old):
    ratio = norm_new / jnp.where(norm_old > 0, norm_old, 1.0)
    eta_new = EW_GAMMA * ratio**EW_ALPHA
    safeguard = EW_GAMMA * eta**EW_ALPHA
    eta_new = jnp.where(safeguard > 0.1, jnp.maximum(eta_new, safeguard), eta_new)
    return jnp.clip(eta_new, 0.0, ETA_MAX)


def _cauchy_step(g, curvature):
    """The steepest-descent step ``-t g`` minimising the quadratic model (unit length if none)."""
    gg = jnp.vdot(g, g)
    t = jnp.where(curvature > 0, gg / jnp.where(curvature > 0, curvature, 1.0), 0.0)
    unit = 1.0 / jnp.maximum(jnp.sqrt(gg), jnp.finfo(g.dtype).tiny)
    return -jnp.where(t > 0, t, unit) * g


def _newton_root_operator(problem, y0, params, rtol, atol, max_steps, linear_solver, active=None):
    n, dtype = problem.n, problem.dtype

    def F(y):
        return problem.residual(y, params)

    def merit(y):
        r = F(y)
        return 0.5 * jnp.vdot(r, r), r

    def operator(y):
        def matvec(v):
            return jax.jvp(F, (y,), (v,))[1]

        return Operator(matvec, n, dtype, False, problem, y, params)

    def residual_ok(y, r):
        return residual_within(max_norm(r), residual_scale(problem.kind, y), rtol, atol)

    def direction(y, aux, lam):
        r, eta = aux
        op = operator(y)
        forcing = jnp.where(residual_ok(y, r), 0.0, eta)
        p_newton = linear_solver.step(op, -r, forcing=forcing)
        newton_finite = jnp.all(jnp.isfinite(p_newton))
        slope_newton = jnp.vdot(r, op.matvec(jnp.where(newton_finite, p_newton, 0.0)))
        newton_ok = newton_finite & (slope_newton < 0)

        def cauchy(_):
            # The Cauchy step of 0.5 |F|^2 along -J'F (one VJP and one JVP), computed only
            # where the Newton step is unusable (both branches run under vmap).
            grad_merit = jax.vjp(F, y)[1](r)[0]
            p_grad = _cauchy_step(grad_merit, jnp.sum(op.matvec(grad_merit) ** 2))
            return p_grad, jnp.vdot(grad_merit, p_grad)

        p, slope = lax.cond(newton_ok, lambda _: (p_newton, slope_newton), cauchy, None)
        delta = jnp.where(newton_finite, max_norm(p_newton), jnp.inf)
        return p, slope, newton_ok, delta

    def backtrack_at(y, aux, p, slope):
        r, eta = aux
        alpha, _, r_new, accepted = backtrack(merit, y, 0.5 * jnp.vdot(r, r), p, slope)
        eta_new = _forcing(eta, jnp.linalg.norm(r_new), jnp.linalg.norm(r))
        return alpha, (r_new, eta_new), accepted

    r0 = F(y0)
    r0_norm = max_norm(r0)

    def done(y, aux, delta, step_small):
        r, _ = aux
        ok = converged_within(problem.kind, r, y, rtol, atol, step_norm=delta, start_norm=r0_norm)
        return ok | step_small

    def finite(aux):
        return jnp.all(jnp.isfinite(aux[0]))

    def parts(aux):
        r = aux[0]
        return 0.5 * jnp.vdot(r, r), r

    eta0 = jnp.asarray(ETA_0, dtype)
    out = _newton_loop(
        direction,
        backtrack_at,
        done,
        finite,
        parts,
        (y0, (r0, eta0)),
        max_steps,
        rtol,
        atol,
        active,
    )
    return _finish(*out, kind=problem.kind, parts=parts, rtol=rtol, atol=atol, finite=finite)


def _newton_min_operator(problem, y0, params, rtol, atol, max_steps, linear_solver):
    n, dtype = problem.n, problem.dtype

    def f(y):
        return problem.objective(y, params)

    value_and_grad = jax.value_and_grad(f)
    grad = jax.grad(f)

    def operator(y):
        def matvec(v):
            return jax.jvp(grad, (y,), (v,))[1]

        return Operator(matvec, n, dtype, True, problem, y, params)

    def residual_ok(g, fy):
        return residual_within(max_norm(g), residual_scale("argmin", g, fy), rtol, atol)

    def direction(y, aux, lam):
        fy, g, eta = aux
        op = operator(y)
        passes = residual_ok(g, fy)
        mu = jnp.where(passes, 0.0, lam * jnp.linalg.norm(g))
        forcing = jnp.where(passes, 0.0, eta)
        p_newton = -linear_solver.step(op, g, shift=mu, forcing=forcing)
        newton_finite = jnp.all(jnp.isfinite(p_newton))
        slope_newton = jnp.vdot(g, p_newton)
        newton_ok = newton_finite & (slope_newton < 0)

        def cauchy(_):
            p_grad = _cauchy_step(g, jnp.vdot(g, op.matvec(g)))
            return p_grad, jnp.vdot(g, p_grad)

        p, slope = lax.cond(newton_ok, lambda _: (p_newton, slope_newton), cauchy, None)
        delta = jnp.where(newton_finite, max_norm(p_newton), jnp.inf)
        return p, slope, newton_ok & passes, delta

    def backtrack_at(y, aux, p, slope):
        fy, g, eta = aux
        gnorm = jnp.linalg.norm(g)
        alpha, f_new, g_new, accepted = backtrack(
            value_and_grad,
            y,
            fy,
            p,
            slope,
            prefer=lambda g_t: jnp.linalg.norm(g_t) <= gnorm,
            flat=lambda g_t: jnp.linalg.norm(g_t) < gnorm,
        )
        eta_new = _forcing(eta, jnp.linalg.norm(g_new), gnorm)
        return alpha, (f_new, g_new, eta_new), accepted

    f0, g0 = value_and_grad(y0)
    g0_norm = max_norm(g0)

    def done(y, aux, delta, step_small):
        fy, g, _ = aux
        ok = converged_within(
            "argmin", g, y, rtol, atol, step_norm=delta, start_norm=g0_norm, value=fy
        )
        return ok | step_small

    def finite(aux):
        fy, g, _ = aux
        return jnp.isfinite(fy) & jnp.all(jnp.isfinite(g))

    def parts(aux):
        return aux[0], aux[1]

    eta0 = jnp.asarray(ETA_0, dtype)
    out = _newton_loop(
        direction,
        backtrack_at,
        done,
        finite,
        parts,
        (y0, (f0, g0, eta0)),
        max_steps,
        rtol,
        atol,
        lam0=DAMPING_START,
    )
    return _finish(*out, kind=problem.kind, parts=parts, rtol=rtol, atol=atol, finite=finite)
