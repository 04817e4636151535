"""Solvers that run on the host (NumPy, SciPy) through :func:`jax.pure_callback`.

JAX never sees inside a host solver, so it could never differentiate it; the implicit
rule does not need to. The callback is ``vmap``-safe (``vmap_method="sequential"``: one
host solve per batch element) and works under ``jit``. The host code can evaluate the
problem, its residual, Jacobian, gradient and Hessian through :class:`HostProblem`, all
compiled JAX functions of the user's ``fun`` evaluated on the CPU.

The answer is then checked in JAX like any other (the residual at the returned point
must be within tolerance, and the point known to tolerance: see
:func:`~mcmc_customgrad.implicit.custom.checked_result`), so a host solver that stops
early is caught, even where the residual is small only because the function is.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._base import Problem, Solver, SolverResult, validate_tolerance
from .custom import checked_result

__all__ = ["Host", "HostProblem", "scipy_root", "scipy_minimize"]


@dataclasses.dataclass(frozen=True, eq=False)
class HostProblem:
    """The problem as NumPy callables of a flat float vector, for host solvers.

    Attributes
    ----------
    kind : {"root", "fixed_point", "argmin"}
        What ``fun`` means.
    n : int
        Number of unknowns.
    fun : callable
        The user's function: the residual (root), the map (fixed point) or the scalar
        objective (argmin).
    residual : callable
        The optimality residual (``fun``, ``fun(y) - y`` or the gradient).
    jacobian : callable
        Dense Jacobian of ``residual`` (the Hessian for a minimum).
    grad : callable
        Gradient of the objective (argmin only).
    hessian : callable
        Hessian of the objective (argmin only).
    """

    kind: str
    n: int
    fun: Callable
    residual: Callable
    jacobian: Callable
    grad: Callable | None
    hessian: Callable | None


def _parse_host_output(out, n: int, name: str):
    """``y`` | ``(y, info)`` | an OptimizeResult-like object -> (y, steps, success)."""
    success, steps = True, -1
    if hasattr(out, "x"):
        y = out.x
        success = bool(getattr(out, "success", True))
        steps = getattr(out, "nit", getattr(out, "nfev", -1))
    elif isinstance(out, tuple) and len(out) == 2:
        y, info = out
        success = bool(np.all(getattr(info, "converged", getattr(info, "success", info))))
        steps = getattr(info, "num_steps", getattr(info, "nit", -1))
    else:
        y = out
    y = np.asarray(y, dtype=float).reshape(-1)
    if y.shape != (n,):
        raise ValueError(f"host solver {name!r} returned {y.shape[0]} values; expected {n}.")
    return y, int(np.asarray(steps)), success


@dataclasses.dataclass(frozen=True)
class Host(Solver):
    """Run ``fn(problem, y0)`` on the host, inside ``jax.pure_callback``.

    Parameters
    ----------
    fn : callable
        ``fn(problem: HostProblem, y0: numpy.ndarray) -> y``, or ``(y, info)``, or an
        object with ``.x`` (and optionally ``.success``, ``.nit``) such as SciPy's
        ``OptimizeResult``. ``y0`` and ``y`` are flat float vectors.
    rtol, atol : float, optional
        Tolerances of the check in JAX (:class:`~mcmc_customgrad.solvers.Custom`'s);
        ``None`` means ``1e-10`` in float64 (``1000 eps`` in lower precisions).

    Examples
    --------
    >>> import jax, jax.numpy as jnp, numpy as np
    >>> import mcmc_customgrad as mcg
    >>> def bisect(problem, y0):               # any NumPy code, here a hand-written one
    ...     lo, hi = np.zeros_like(y0), np.full_like(y0, 10.0)
    ...     for _ in range(200):
    ...         mid = 0.5 * (lo + hi)
    ...         neg = problem.residual(mid) < 0
    ...         lo, hi = np.where(neg, mid, lo), np.where(neg, hi, mid)
    ...     return 0.5 * (lo + hi)
    >>> cube_root = lambda a: mcg.root(lambda y, a: y**3 - a, jnp.array(1.0), a,
    ...                                solver=mcg.solvers.Host(bisect))
    >>> round(float(cube_root(8.0)), 10), round(float(jax.grad(cube_root)(8.0)), 10)
    (2.0, 0.0833333333)
    """

    fn: Callable
    rtol: float | None = None
    atol: float | None = None

    def __post_init__(self):
        if not callable(self.fn):
            raise TypeError(f"Host: fn must be callable, got {type(self.fn).__name__}.")
        validate_tolerance(self.rtol, "rtol", "Host")
        validate_tolerance(self.atol, "atol", "Host")

    def run(self, problem: Problem, y0, params) -> SolverResult:
        """Solve on the host and check the answer in JAX."""
        rtol, atol = self.tolerances(problem.dtype)
        leaves, treedef = jax.tree.flatten(params)
        dtype, n = problem.dtype, problem.n
        name = getattr(self.fn, "__name__", type(self.fn).__name__)

        def bind(f):
            # A compiled JAX function of (y, *param leaves), called from the host.
            jf = jax.jit(lambda y, *lv: f(y, jax.tree.unflatten(treedef, lv)))
            return lambda lv: lambda y: np.asarray(jf(np.asarray(y, dtype), *lv))

        fun_h = bind(problem.fn)
        residual_h = bind(problem.residual)
        jacobian_h = bind(jax.jacfwd(problem.residual))
        grad_h = hess_h = None
        if problem.kind == "argmin":
            grad_h = bind(jax.grad(problem.fn))
            hess_h = bind(jax.hessian(problem.fn))

        def host(y0_np, *lv):
            hp = HostProblem(
                kind=problem.kind,
                n=n,
                fun=fun_h(lv),
                residual=residual_h(lv),
                jacobian=jacobian_h(lv),
                grad=grad_h(lv) if grad_h else None,
                hessian=hess_h(lv) if hess_h else None,
            )
            y, steps, success = _parse_host_output(self.fn(hp, np.array(y0_np)), n, name)
            return y.astype(dtype), np.int32(steps), np.bool_(success)

        shapes = (
            jax.ShapeDtypeStruct((n,), dtype),
            jax.ShapeDtypeStruct((), jnp.int32),
            jax.ShapeDtypeStruct((), jnp.bool_),
        )
        y, steps, success = jax.pure_callback(host, shapes, y0, *leaves, vmap_method="sequential")
        return checked_result(problem, params, y, y0, success, steps, rtol, atol)


@dataclasses.dataclass(frozen=True)
class _ScipyRoot:
    method: str
    tol: float
    options: tuple[tuple[str, Any], ...]
    __name__ = "scipy.optimize.root"

    def __call__(self, problem: HostProblem, y0):
        from scipy import optimize

        res = optimize.root(
            problem.residual,
            y0,
            jac=problem.jacobian,
            method=self.method,
            tol=self.tol,
            options=dict(self.options) or None,
        )
        # SciPy's own `success` is not used: our residual check in JAX decides.
        return res.x, _Steps(getattr(res, "nit", getattr(res, "nfev", -1)))


@dataclasses.dataclass(frozen=True)
class _ScipyMinimize:
    method: str
    tol: float
    options: tuple[tuple[str, Any], ...]
    polish: int = 3
    __name__ = "scipy.optimize.minimize"

    _NEEDS_HESSIAN = ("newton-cg", "dogleg", "trust-ncg", "trust-krylov", "trust-exact")

    def __call__(self, problem: HostProblem, y0):
        from scipy import optimize

        if problem.kind != "argmin":
            raise ValueError("scipy_minimize solves argmin/min_value problems only.")
        hess = problem.hessian if self.method.lower() in self._NEEDS_HESSIAN else None
        res = optimize.minimize(
            problem.fun,
            y0,
            jac=problem.grad,
            hess=hess,
            method=self.method,
            tol=self.tol,
            options=dict(self.options) or None,
        )
        # BFGS reports "precision loss" (success=False) at tight tolerances even when the
        # gradient is tiny, so SciPy's flag is not used: the residual check decides.
        y, polished = _newton_polish(problem, np.asarray(res.x, dtype=float), self.polish)
        return y, _Steps(res.nit + polished)


def _newton_polish(problem: HostProblem, y, max_steps: int):
    """Newton steps on the gradient, each kept only while it shrinks ``|grad|``.

    Returns the point and the number of steps kept.
    """
    g = np.asarray(problem.grad(y), dtype=float)
    norm = np.linalg.norm(g)
    for k in range(max_steps):
        if not norm > 0:  # exactly stationary, or not finite: nothing to polish
            return y, k
        try:
            step = np.linalg.solve(np.asarray(problem.hessian(y), dtype=float), -g)
        except np.linalg.LinAlgError:
            return y, k
        y_new = y + step
        g_new = np.asarray(problem.grad(y_new), dtype=float)
        norm_new = np.linalg.norm(g_new)
        if not norm_new < norm:  # also rejects NaN
            return y, k
        y, g, norm = y_new, g_new, norm_new
    return y, max_steps


@dataclasses.dataclass(frozen=True)
class _Steps:
    num_steps: int
    converged: bool = True


def _freeze(options: dict) -> tuple:
    try:
        frozen = tuple(sorted(options.items()))
        hash(frozen)
    except TypeError as err:
        raise TypeError(f"SciPy options must be hashable values, got {options!r}.") from err
    return frozen


def scipy_root(method: str = "hybr", tol: float = 1e-13, rtol=None, atol=None, **options):
    """A :class:`Host` solver calling :func:`scipy.optimize.root` with the exact Jacobian.

    Parameters
    ----------
    method : str
        Any method of :func:`scipy.optimize.root` (``"hybr"``, ``"lm"``, ...).
    tol : float
        SciPy's tolerance; tighter than the residual check so that it passes.
    rtol, atol : float, optional
        Tolerances of the residual check in JAX.
    **options
        Passed to SciPy as ``options``.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import mcmc_customgrad as mcg
    >>> kepler = lambda E, M, e: E - e * jnp.sin(E) - M
    >>> E = lambda M: mcg.root(kepler, jnp.array(1.0), M, 0.5, solver=mcg.solvers.scipy_root())
    >>> bool(jnp.isclose(jax.grad(E)(1.0), 1 / (1 - 0.5 * jnp.cos(E(1.0)))))
    True
    """
    validate_tolerance(tol, "tol", "scipy_root")
    return Host(_ScipyRoot(method, tol, _freeze(options)), rtol=rtol, atol=atol)


def scipy_minimize(
    method: str = "BFGS", tol: float = 1e-12, rtol=None, atol=None, *, polish: int = 3, **options
):
    """A :class:`Host` solver calling :func:`scipy.optimize.minimize` with exact derivatives.

    Parameters
    ----------
    method : str
        Any method of :func:`scipy.optimize.minimize`; Hessian-based methods get the
        exact Hessian.
    tol : float
        SciPy's tolerance.
    rtol, atol : float, optional
        Tolerances of the residual (gradient) check in JAX.
    polish : int
        After SciPy returns, up to this many Newton steps on the gradient with the exact
        Hessian (in NumPy), each kept only while it shrinks the gradient norm; 0 turns it
        off. SciPy's line searches compare objective values, which stop changing (below
        ``eps |f|``) once ``|grad|^2`` does, so its quasi-Newton methods end with "precision
        loss" near ``|grad| ~ 1e-9``, short of the ``1e-10`` residual check: BFGS does so
        at 3 of 20 random starts of ``mcg.models.host_conjugate`` without polishing, at
        none with it. A Newton step on the gradient needs no objective values and
        converges quadratically from there.
    **options
        Passed to SciPy as ``options``.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import mcmc_customgrad as mcg
    >>> g = lambda y, x: jnp.sum(jnp.abs(y) ** 3 / 3 - x * y)
    >>> f = lambda x: -mcg.min_value(g, jnp.zeros(1), x,
    ...                              solver=mcg.solvers.scipy_minimize("trust-exact"))
    >>> round(float(jax.grad(f)(jnp.array([0.31415]))[0]), 6)
    0.560491
    """
    validate_tolerance(tol, "tol", "scipy_minimize")
    if isinstance(polish, bool) or not isinstance(polish, int) or polish < 0:
        raise ValueError(f"scipy_minimize: polish must be an int >= 0, got {polish!r}.")
    return Host(_ScipyMinimize(method, tol, _freeze(options), polish), rtol=rtol, atol=atol)
