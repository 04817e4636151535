"""The one implicit-function-theorem rule, and :func:`root`.

:func:`argmin` and :func:`fixed_point` are the same rule with another optimality residual
(the gradient, and ``T(y) - y``); :func:`min_value` builds on the argmin rule.
"""

from __future__ import annotations

import weakref
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .._args import typeof
from .._precision import float32_hint, warn_if_float32
from ..caches import LRU, lru_cache
from ._base import KINDS, Problem, SolverError, SolverInfo, Status, status_of
from ._sparsity import detect_structure
from .linear import resolve_linear_solver
from .solvers import resolve_solver

__all__ = ["root", "prepare", "build_core", "finish", "resolve", "safe_linearisation"]

ON_FAILURE = ("nan", "raise", "last")


# --------------------------------------------------------------------------- validation


def _describe(tree) -> str:
    leaves = jax.tree.leaves(tree)
    shapes = ", ".join(f"{tuple(x.shape)} {x.dtype}" for x in leaves)
    return f"{jax.tree.structure(tree)} with leaves [{shapes}]"


def _as_y0(y0, where: str):
    def convert(x):
        try:
            x = jnp.asarray(x)
        except TypeError as err:
            raise TypeError(
                f"{where}: y0 must be a pytree of float arrays; got a leaf of type "
                f"{type(x).__name__}."
            ) from err
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise TypeError(
                f"{where}: y0 must have a real floating dtype, got {x.dtype} (write 0.0 "
                "rather than 0, or cast with .astype(float))."
            )
        return x

    y0 = jax.tree.map(convert, y0)
    leaves = jax.tree.leaves(y0)
    if not leaves or sum(x.size for x in leaves) == 0:
        raise ValueError(f"{where}: y0 has no elements; there is nothing to solve for.")
    dtypes = {x.dtype for x in leaves}
    if len(dtypes) > 1:
        raise TypeError(
            f"{where}: all leaves of y0 must share one dtype, got {sorted(map(str, dtypes))}."
        )
    return y0


def _as_args(args, where: str):
    def convert(x):
        if isinstance(x, str | bytes) or callable(x):
            raise TypeError(
                f"{where}: args must be pytrees of arrays (they are what derivatives flow "
                f"to); got a {type(x).__name__}. Capture static settings in fun's "
                "closure instead, e.g. functools.partial(fun, option=...)."
            )
        try:
            return jnp.asarray(x)
        except TypeError as err:
            raise TypeError(
                f"{where}: args must be pytrees of arrays; got a leaf of type {type(x).__name__}."
            ) from err

    return jax.tree.map(convert, tuple(args))


def _check_output(kind: str, out, y0, where: str) -> None:
    if kind == "argmin":
        leaves = jax.tree.leaves(out)
        ok = (
            len(leaves) == 1
            and jax.tree.structure(out).num_leaves == 1
            and leaves[0].shape == ()
            and jnp.issubdtype(leaves[0].dtype, jnp.floating)
        )
        if not ok:
            raise ValueError(
                f"{where}: fun(y0, *args) must return a real scalar objective, got "
                f"{_describe(out)}. Sum or reduce it to one number."
            )
        return
    what = "fun(y, *args)" if kind == "root" else "the map fun(y, *args)"
    if jax.tree.structure(out) != jax.tree.structure(y0):
        raise ValueError(
            f"{where}: {what} must return the same pytree structure as y0.\n"
            f"  y0:       {_describe(y0)}\n  fun(y0):  {_describe(out)}"
        )
    for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(y0), strict=True):
        if a.shape != b.shape or a.dtype != b.dtype:
            raise ValueError(
                f"{where}: {what} must return arrays with the shapes and dtypes of y0; "
                f"got {tuple(a.shape)} {a.dtype} where y0 has {tuple(b.shape)} {b.dtype}."
            )


def prepare(kind: str, where: str, fun, y0, args):
    """Validate the user's call and closure-convert ``fun``.

    ``fun`` is traced once to a jaxpr and *every* constant it captures (traced values of
    an enclosing ``jit``/``vmap``/``grad``, integer or batched tracers, concrete arrays,
    attributes of a bound method's object) is hoisted into an explicit argument:
    derivatives must reach closed-over values (seed 003), and nothing
    captured can go stale in the cache. ``jax.closure_convert`` hoists only values that
    may carry a derivative, which breaks ``vmap(grad)`` over a closure on batched data.

    Returns ``(problem, y0_flat, params)`` with ``params = (args, consts)``.
    """
    assert kind in KINDS
    if not callable(fun):
        raise TypeError(f"{where}: fun must be callable, got {type(fun).__name__}.")
    y0 = _as_y0(y0, where)
    args = _as_args(args, where)
    try:
        closed, out_shape = jax.make_jaxpr(fun, return_shape=True)(y0, *args)
    except Exception as err:
        err.add_note(f"(raised while {where} traced fun(y0, *args) to check it)")
        raise
    consts = tuple(closed.consts)
    params = (args, consts)
    # The jaxpr's text (constants hoisted, so it is a pure function of its inputs) plus
    # the input structure identify the problem: equal keys compute the same function.
    avals = tuple(typeof(x) for x in jax.tree.leaves((y0, params)))
    key = (kind, where, str(closed.jaxpr), jax.tree.structure((y0, params)), avals)
    problem = _PROBLEMS.get(key)
    if problem is None:
        _check_output(kind, out_shape, y0, where)
        problem = _build_problem(kind, closed.jaxpr, jax.tree.structure(out_shape), y0)
        _PROBLEMS.put(key, problem)
    return problem, ravel_pytree(y0)[0], params


_PROBLEMS = LRU(256)


def _build_problem(kind, jaxpr, out_tree, y0):
    """The flat :class:`Problem` of a closure-converted ``fun`` (once per cache key)."""

    def user_fun(y_tree, params):
        a, c = params
        out = jax.core.eval_jaxpr(jaxpr, list(c), *jax.tree.leaves((y_tree, *a)))
        return jax.tree.unflatten(out_tree, out)

    flat, unravel = ravel_pytree(jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), y0))
    if kind == "argmin":

        def fn(y, params):
            return user_fun(unravel(y), params)
    else:

        def fn(y, params):
            return ravel_pytree(user_fun(unravel(y), params))[0]

    return Problem(
        kind=kind, fn=fn, unravel=unravel, user_fun=user_fun, n=int(flat.size), dtype=flat.dtype
    )


_SECOND_ORDER: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _twice_differentiable(problem, y0_flat, params) -> bool:
    """Whether JAX can form the Hessian of a minimum's objective (forward over reverse).

    Decided once per cached :class:`Problem` by tracing ``jax.hessian`` abstractly (no
    computation). It fails for objectives whose derivative rules call host callbacks or
    other code without a forward-mode rule; the default solver is then L-BFGS, which needs gradients
    only.
    """
    known = _SECOND_ORDER.get(problem)
    if known is None:
        shapes = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)), (y0_flat, params)
        )
        try:
            jax.eval_shape(jax.hessian(problem.objective), *shapes)
            known = True
        except Exception:  # any failure to trace second derivatives: gradients only
            known = False
        _SECOND_ORDER[problem] = known
    return known


def safe_linearisation(on_failure, y, info, y0, params_dot):
    """Where to linearise a rule, and the tangents to push through it.

    Returns ``(ok, y_lin, params_dot)``: ``ok`` says the solve succeeded (for
    ``on_failure="last"``: its last iterate is finite); where it did not, ``y_lin`` is
    the finite start ``y0`` instead of NaN and every float parameter tangent is zero.
    Masking the tangents *before* they meet ``d F / d theta`` matters in reverse mode:
    the transpose of ``where`` selects, while a zero cotangent times an infinite
    derivative would be NaN.
    """
    ok = jnp.all(jnp.isfinite(y)) if on_failure == "last" else info.converged

    def mask(t):
        if t.dtype == jax.dtypes.float0:
            return t
        return jnp.where(ok, t, jnp.zeros_like(t))

    return ok, jnp.where(ok, y, y0), jax.tree.map(mask, params_dot)


def zero_tangent(x):
    """Zero tangent of a primal output (``float0`` for integer and boolean arrays)."""
    if jnp.issubdtype(x.dtype, jnp.inexact):
        return jnp.zeros_like(x)
    return np.zeros(np.shape(x), dtype=jax.dtypes.float0)


# ------------------------------------------------------------------------------ the rule


def build_core(problem: Problem, solver, linear_solver, on_failure: str):
    """Build ``core(y0_flat, params) -> (y_flat, SolverInfo)`` with its ``custom_jvp``.

    The forward solve runs ``solver`` (any while-loop, host callback or user code; JAX
    never differentiates it). The derivative comes from the optimality condition alone.
    """

    @jax.custom_jvp
    def core(y0, params):
        res = solver.run(problem, y0, params)
        y = jnp.asarray(res.y, problem.dtype)
        residual_norm = jnp.asarray(res.residual_norm, problem.dtype)
        finite = jnp.all(jnp.isfinite(y))
        ok = jnp.asarray(res.converged, bool) & finite
        if res.status is None:  # a solver that gives no reason
            status = status_of(
                ok, finite=finite & jnp.isfinite(residual_norm), failure=Status.NOT_CONVERGED
            )
        else:
            status = jnp.asarray(res.status, jnp.int32)
            # An accepted status with a non-finite y (or a failed one claimed accepted)
            # is made consistent with `ok`, which is what the result obeys.
            status = jnp.where(ok | (status > Status.DEGENERATE), status, Status.NONFINITE)
            status = jnp.where(~ok | (status <= Status.DEGENERATE), status, Status.CONVERGED)
        error = res.error_estimate
        error = jnp.full((), jnp.nan, problem.dtype) if error is None else error
        if on_failure != "last":
            # Failure is data: a NaN value makes the density reject the proposal.
            y = jnp.where(ok, y, jnp.nan)
        info = SolverInfo(
            converged=ok,
            num_steps=jnp.asarray(res.num_steps, jnp.int32),
            residual_norm=residual_norm,
            status=status.astype(jnp.int32),
            error_estimate=jnp.asarray(error, problem.dtype),
        )
        return y, info

    # Implicit function theorem. At a solution y*(θ) the optimality residual vanishes,
    #     F(y*(θ), θ) = 0          (root: F = fun; fixed point: F = T(y) - y;
    #                               argmin: F = ∇_y f, the first-order condition).
    # Differentiating along a tangent θ̇:
    #     ∂_y F(y*, θ) ẏ + ∂_θ F(y*, θ) θ̇ = 0   ⇒   ẏ = -[∂_y F]^{-1} ∂_θ F θ̇.
    # The solve is a lax.custom_linear_solve, linear in θ̇, so JAX can transpose it
    # (reverse mode) and differentiate it (its operator closes over y* and θ). The rule
    # obtains y* by calling `core` itself, so at higher orders this same rule gives
    # the derivatives of y* that appear inside ∂_y F and ∂_θ F. The derivative
    # with respect to y0 is zero: y* does not depend on where the search started.
    #
    # Failed solves (the "double where"): where the solve failed, the linearisation point
    # is y0 instead of NaN, the parameter tangents are masked to zero *before* they meet
    # ∂_θ F (which may be infinite at y0: in reverse mode a zero cotangent times inf is
    # NaN, while the transpose of `where` selects), the operator is the identity and the
    # right-hand side zero. The tangent is exactly zero and no NaN reaches the
    # cotangents of parameters shared with other elements.
    @core.defjvp
    def core_jvp(primals, tangents):
        y0, params = primals
        _, params_dot = tangents
        y, info = core(y0, params)
        ok, y_lin, params_dot = safe_linearisation(on_failure, y, info, y0, params_dot)

        _, rhs = jax.jvp(lambda p: problem.residual(y_lin, p), (params,), (params_dot,))
        _, jvp_y = jax.linearize(lambda v: problem.residual(v, params), y_lin)

        def matvec(v):
            return jnp.where(ok, jvp_y(v), v)

        y_dot = linear_solver(
            matvec,
            jnp.where(ok, -rhs, 0.0),
            symmetric=problem.symmetric,
            at=(problem, y_lin, params),
        )
        y_dot = jnp.where(ok, y_dot, 0.0)
        return (y, info), (y_dot, jax.tree.map(zero_tangent, info))

    return core


# ------------------------------------------------------------------------ public helpers


def _raise_if_failed(where, solver_repr, converged, residual_norm, num_steps, status):
    # Called with concrete values: eagerly, or from a host callback (once per element
    # under vmap).
    converged, status = np.asarray(converged), np.asarray(status)
    if bool(np.all(converged)):
        return
    reasons = sorted({int(s) for s in np.ravel(status[~converged])})
    why = " ".join(Status.describe(s) for s in reasons)
    raise SolverError(
        f"{where} did not converge: residual norm {float(np.max(residual_norm)):.3e} after "
        f"{int(np.max(num_steps))} steps of {solver_repr}. {why} Try a start y0 nearer "
        "the solution, a larger max_steps, or another solver. A looser rtol/atol also "
        "makes it converge, but then the value is exact only to that tolerance, and an "
        "inexact value biases the posterior (an inexact gradient only slows HMC down); "
        "on_failure='nan' (the default) returns NaN instead so that a sampler rejects "
        f"the proposal.{float32_hint()}"
    )


def finish(where: str, solver, info: SolverInfo, on_failure: str) -> None:
    """Apply ``on_failure="raise"``: a Python error eagerly, a host callback under ``jit``."""
    if on_failure != "raise":
        return
    check = partial(_raise_if_failed, where, repr(solver))
    fields = (info.converged, info.residual_norm, info.num_steps, info.status)
    if isinstance(info.converged, jax.core.Tracer):
        jax.debug.callback(check, *fields)
    else:
        check(*fields)


def warn_float32(where: str, stacklevel: int) -> None:
    """:func:`~mcmc_customgrad._precision.warn_if_float32` for a public solve.

    Called after the solve and :func:`finish`, so that a failure raised with
    ``on_failure="raise"`` (whose message already names float32) comes first. The
    warning points at the user's call (``stacklevel`` counted from this function: 3 for
    the caller of its caller).
    """
    warn_if_float32(where.replace("mcmc_customgrad.", "mcg."), stacklevel=stacklevel + 1)


def check_options(where: str, full_output, on_failure) -> None:
    """Validate the keyword options shared by every public solve."""
    if not isinstance(full_output, bool):
        raise TypeError(f"{where}: full_output must be True or False, got {full_output!r}.")
    if on_failure not in ON_FAILURE:
        raise ValueError(
            f"{where}: on_failure must be one of {ON_FAILURE}, got {on_failure!r}: 'nan' "
            "returns NaN (default), 'raise' raises SolverError, 'last' returns the last "
            "iterate."
        )


#: Name of every jitted inner-solve core: the ``name`` parameter of its ``jit`` equation
#: in a jaxpr, whose last three outputs are the :class:`SolverInfo` fields. This is how
#: :func:`~mcmc_customgrad.with_solver_stats` recognises a solve; keep it distinctive.
CORE_NAME = "mcg_implicit_core"


def jit_core(core):
    """``jax.jit(core)`` under the name :data:`CORE_NAME`.

    ``core(y0_flat, params)`` must return ``(out, SolverInfo)``.
    """

    def mcg_implicit_core(y0, params):
        return core(y0, params)

    mcg_implicit_core.__name__ = mcg_implicit_core.__qualname__ = CORE_NAME
    return jax.jit(mcg_implicit_core)


@lru_cache(maxsize=256)
def _compiled_core(problem, solver, linear_solver, on_failure):
    return jit_core(build_core(problem, solver, linear_solver, on_failure))


def resolve(kind, where, fun, y0, args, solver, linear_solver, full_output, on_failure):
    """Validate everything and return ``(problem, solver, linear_solver, y0_flat, params)``."""
    check_options(where, full_output, on_failure)
    problem, y0_flat, params = prepare(kind, where, fun, y0, args)
    explicit = linear_solver
    linear_solver, why = resolve_linear_solver(
        linear_solver,
        problem.n,
        problem.symmetric,
        where,
        detect=lambda: detect_structure(problem, y0_flat, params),
    )
    for candidate in (solver, getattr(solver, "linear_solver", None)):
        if candidate is not None and hasattr(candidate, "check_problem"):
            candidate.check_problem(problem.n, problem.dtype, where)
    linear_solver.check_problem(problem.n, problem.dtype, where)
    solver = resolve_solver(
        solver,
        kind,
        problem.n,
        where,
        lambda: _twice_differentiable(problem, y0_flat, params),
        linear_solver=linear_solver,
        explicit_linear_solver=explicit is not None,
        why=why,
    )
    return problem, solver, linear_solver, y0_flat, params


def implicit_solve(kind, where, fun, y0, args, solver, linear_solver, on_failure, full_output):
    """Shared body of :func:`root`, :func:`fixed_point` and :func:`argmin`."""
    problem, solver, linear_solver, y0_flat, params = resolve(
        kind, where, fun, y0, args, solver, linear_solver, full_output, on_failure
    )
    core = _compiled_core(problem, solver, linear_solver, on_failure)
    y_flat, info = core(y0_flat, params)
    finish(where, solver, info, on_failure)
    warn_float32(where, stacklevel=4)
    y = problem.unravel(y_flat)
    return (y, info) if full_output else y


def root(
    fun,
    y0,
    *args,
    solver=None,
    full_output=False,
    linear_solver=None,
    on_failure="nan",
):
    """Solve ``fun(y, *args) = 0`` for ``y``, differentiable in ``args`` by the IFT.

    Parameters
    ----------
    fun : callable
        ``fun(y, *args)`` returning a pytree with the structure, shapes and dtypes of
        ``y0``. It may close over traced values; derivatives reach them too.
    y0 : pytree of float arrays
        Starting point. No derivative flows to it.
    *args : pytrees of arrays
        Parameters; the result is differentiable with respect to them.
    solver : Solver or callable, optional
        Forward solver: :class:`~mcmc_customgrad.solvers.Newton` (default),
        :class:`~mcmc_customgrad.solvers.Chandrupatla`, a host solver, or any callable
        ``solver(fun, y0, *args) -> y`` (see :class:`~mcmc_customgrad.solvers.Custom`).
    full_output : bool
        If True return ``(y, info)`` with :class:`~mcmc_customgrad.SolverInfo`.
    linear_solver : LinearSolver, optional
        Tangent solve (:mod:`mcmc_customgrad.linear`); dense LU by default for up to
        1000 unknowns, GMRES above.
    on_failure : {"nan", "raise", "last"}
        When the solve misses its tolerance: NaN values (default; never raises inside
        ``jit``/``vmap``), raise :class:`~mcmc_customgrad.SolverError` (for debugging),
        or return the last iterate. A failed solve's derivative is zero (its value is
        NaN), so ``where(info.converged, y, fill)`` gives clean gradients and one failed
        element under ``vmap`` cannot poison the others.

    Returns
    -------
    y : pytree, or (y, SolverInfo) when ``full_output`` is True.

    Warns
    -----
    Float32Warning
        Once per process, when JAX runs in float32 (``jax_enable_x64`` is off): the
        solve still refuses points it cannot certify, but tolerances are ``1.2e-4``
        instead of ``1e-10`` (``docs/core.md``, section float32).

    Examples
    --------
    Kepler's equation ``E - e sin E = M`` and its derivative ``1 / (1 - e cos E)``:

    >>> import jax, jax.numpy as jnp
    >>> import mcmc_customgrad as mcg
    >>> kepler = lambda E, M, e: E - e * jnp.sin(E) - M
    >>> E = mcg.root(kepler, jnp.array(1.0), 1.0, 0.5)
    >>> dE = jax.grad(lambda M: mcg.root(kepler, jnp.array(1.0), M, 0.5))(1.0)
    >>> bool(jnp.isclose(dE, 1 / (1 - 0.5 * jnp.cos(E))))
    True
    """
    return implicit_solve(
        "root",
        "mcmc_customgrad.root",
        fun,
        y0,
        args,
        solver,
        linear_solver,
        on_failure,
        full_output,
    )
