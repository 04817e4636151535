"""Tangent (linear) solves of the implicit-function theorem, all transposable.

Every solve here goes through :func:`jax.lax.custom_linear_solve`, so JAX can
differentiate it (the derivative of ``A^{-1} b`` is ``A^{-1}(db - dA A^{-1} b)``, which
re-enters the same solve) and transpose it (reverse mode calls the transposed solve).
That is what lets a single ``custom_jvp`` rule serve forward mode, reverse mode and every
higher order (rule 1 of the design).

An iterative solve that does not reach its tolerance returns NaN, never a silently wrong
or zero tangent (JAXopt's failed backward CG returned zeros, their issue #466).

Examples
--------
>>> import mcmc_customgrad as mcg
>>> mcg.linear.Dense()
Dense(method='lu')
>>> mcg.linear.CG(rtol=1e-12).rtol
1e-12
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp
from jax import lax

from ._base import default_tolerances, validate_positive_int, validate_tolerance

__all__ = ["LinearSolver", "Dense", "CG", "GMRES", "Diagonal", "Auto", "DENSE_LIMIT"]

#: Problems with at most this many unknowns get a dense tangent solve by default.
DENSE_LIMIT = 1000


@dataclasses.dataclass(frozen=True)
class LinearSolver:
    """Base class: a hashable configuration of a tangent solve ``A x = b``."""

    def _solve(self, matvec, b):  # pragma: no cover - abstract
        raise NotImplementedError

    def check(self, symmetric: bool) -> None:
        """Raise ``ValueError`` when this solver cannot handle the operator."""

    def __call__(self, matvec, b, *, symmetric: bool):
        """Solve ``matvec(x) = b`` transposably; ``symmetric`` says ``A == A.T``."""
        self.check(symmetric)

        def solve(mv, rhs):
            return self._solve(mv, rhs)

        return lax.custom_linear_solve(
            matvec,
            b,
            solve,
            transpose_solve=None if symmetric else solve,
            symmetric=symmetric,
        )


def _materialise(matvec, b):
    """Dense matrix of the linear map ``matvec`` (one batched matvec over the identity)."""
    eye = jnp.eye(b.shape[0], dtype=b.dtype)
    return jax.vmap(matvec)(eye).T


@dataclasses.dataclass(frozen=True)
class Dense(LinearSolver):
    """Materialise the Jacobian (``n`` batched JVPs) and factorise it.

    Parameters
    ----------
    method : {"lu", "cholesky"}
        ``"lu"`` (default) works for any non-singular operator; ``"cholesky"`` is faster
        for symmetric positive-definite ones (the Hessian at a strict minimum) and gives
        NaN if the operator is not.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import mcmc_customgrad as mcg
    >>> y = mcg.root(lambda y, a: y**3 - a, jnp.array(1.0), 8.0,
    ...              linear_solver=mcg.linear.Dense("lu"))
    >>> round(float(y), 12)
    2.0
    """

    method: Literal["lu", "cholesky"] = "lu"

    def __post_init__(self):
        if self.method not in ("lu", "cholesky"):
            raise ValueError(f"Dense: method must be 'lu' or 'cholesky', got {self.method!r}.")

    def _solve(self, matvec, b):
        a = _materialise(matvec, b)
        if self.method == "cholesky":
            return jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(a), b)
        return jnp.linalg.solve(a, b)


def _resolve_tol(rtol, atol, dtype):
    rtol_d, atol_d = default_tolerances(dtype)
    return (rtol_d if rtol is None else rtol), (atol_d if atol is None else atol)


@dataclasses.dataclass(frozen=True)
class CG(LinearSolver):
    """Matrix-free conjugate gradients, for symmetric positive-definite operators.

    Only for ``argmin``/``min_value`` (the tangent operator is then the Hessian). Returns
    NaN when ``max_steps`` pass without ``|r| <= atol + rtol |b|``.

    Parameters
    ----------
    rtol, atol : float, optional
        Residual tolerances; ``None`` means the dtype's default (``1e-10`` in float64).
    max_steps : int, optional
        Iteration cap; ``None`` means ``max(100, 2 n)``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import mcmc_customgrad as mcg
    >>> f = lambda y, a: jnp.sum((y - a) ** 2)
    >>> y = mcg.argmin(f, jnp.zeros(3), jnp.arange(3.0), linear_solver=mcg.linear.CG())
    >>> [round(v, 10) for v in y.tolist()]
    [0.0, 1.0, 2.0]
    """

    rtol: float | None = None
    atol: float | None = None
    max_steps: int | None = None

    def __post_init__(self):
        validate_tolerance(self.rtol, "rtol", "CG")
        validate_tolerance(self.atol, "atol", "CG")
        if self.max_steps is not None:
            validate_positive_int(self.max_steps, "max_steps", "CG")

    def check(self, symmetric):
        """CG needs a symmetric operator."""
        if not symmetric:
            raise ValueError(
                "CG needs a symmetric operator, which only argmin/min_value have (the "
                "Hessian). For root and fixed_point use mcg.linear.GMRES() or Dense()."
            )

    def _solve(self, matvec, b):
        rtol, atol = _resolve_tol(self.rtol, self.atol, b.dtype)
        max_steps = self.max_steps or max(100, 2 * b.shape[0])
        tol = atol + rtol * jnp.linalg.norm(b)

        def cond(state):
            _, _, _, rs, k = state
            return (jnp.sqrt(rs) > tol) & (k < max_steps)

        def body(state):
            x, r, p, rs, k = state
            ap = matvec(p)
            alpha = rs / jnp.vdot(p, ap)
            x = x + alpha * p
            r = r - alpha * ap
            rs_new = jnp.vdot(r, r)
            p = r + (rs_new / rs) * p
            return x, r, p, rs_new, k + 1

        x0 = jnp.zeros_like(b)
        x, _, _, rs, _ = lax.while_loop(cond, body, (x0, b, b, jnp.vdot(b, b), 0))
        ok = jnp.sqrt(rs) <= tol
        return jnp.where(ok, x, jnp.nan)


@dataclasses.dataclass(frozen=True)
class GMRES(LinearSolver):
    """Matrix-free restarted GMRES, for any non-singular operator.

    The transposed solve (reverse mode) runs GMRES on the transposed operator, which
    JAX derives from the JVP. Returns NaN when the true residual
    ``|A x - b|`` exceeds ``10 (atol + rtol |b|)`` (the factor absorbs the gap between
    GMRES's own residual estimate and the true one; a failed solve misses by far more).

    Parameters
    ----------
    rtol, atol : float, optional
        Residual tolerances; ``None`` means the dtype's default.
    restart : int
        Krylov subspace size between restarts.
    max_steps : int, optional
        Number of restarts; ``None`` means ``max(20, n // restart + 1)``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import mcmc_customgrad as mcg
    >>> y = mcg.root(lambda y, a: y**3 - a, jnp.array(1.0), 8.0,
    ...              linear_solver=mcg.linear.GMRES())
    >>> round(float(y), 12)
    2.0
    """

    rtol: float | None = None
    atol: float | None = None
    restart: int = 20
    max_steps: int | None = None

    def __post_init__(self):
        validate_tolerance(self.rtol, "rtol", "GMRES")
        validate_tolerance(self.atol, "atol", "GMRES")
        validate_positive_int(self.restart, "restart", "GMRES")
        if self.max_steps is not None:
            validate_positive_int(self.max_steps, "max_steps", "GMRES")

    def _solve(self, matvec, b):
        rtol, atol = _resolve_tol(self.rtol, self.atol, b.dtype)
        n = b.shape[0]
        restart = min(self.restart, n)
        max_steps = self.max_steps or max(20, n // restart + 1)
        x, _ = jax.scipy.sparse.linalg.gmres(
            matvec,
            b,
            tol=rtol,
            atol=atol,
            restart=restart,
            maxiter=max_steps,
            solve_method="batched",
        )
        ok = jnp.linalg.norm(matvec(x) - b) <= 10.0 * (atol + rtol * jnp.linalg.norm(b))
        return jnp.where(ok, x, jnp.nan)


@dataclasses.dataclass(frozen=True)
class Diagonal(LinearSolver):
    """The operator is diagonal: one JVP with a vector of ones gives it.

    Correct only when each residual component depends on its own unknown alone
    (``F_i(y) = F_i(y_i)``), as for the element-wise scalar equations that
    :class:`~mcmc_customgrad.solvers.Chandrupatla` solves (one Kepler equation per
    observation, say). Then it costs one JVP instead of ``n``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import mcmc_customgrad as mcg
    >>> y = mcg.root(lambda y, a: y**3 - a, jnp.ones(2), jnp.array([8.0, 27.0]),
    ...              linear_solver=mcg.linear.Diagonal())
    >>> y.round(8).tolist()
    [2.0, 3.0]
    """

    def _solve(self, matvec, b):
        return b / matvec(jnp.ones_like(b))


@dataclasses.dataclass(frozen=True)
class Auto(LinearSolver):
    """Default: :class:`Dense` up to ``DENSE_LIMIT`` unknowns, else CG (symmetric) or GMRES.

    Examples
    --------
    >>> import mcmc_customgrad as mcg
    >>> mcg.linear.Auto().resolve(n=10, symmetric=True)
    Dense(method='lu')
    >>> mcg.linear.Auto().resolve(n=5000, symmetric=True)
    CG(rtol=None, atol=None, max_steps=None)
    """

    def resolve(self, n: int, symmetric: bool) -> LinearSolver:
        """The concrete solver for ``n`` unknowns."""
        if n <= DENSE_LIMIT:
            return Dense()
        return CG() if symmetric else GMRES()

    def _solve(self, matvec, b):  # pragma: no cover - resolved before use
        raise AssertionError("Auto must be resolved first")


def resolve_linear_solver(linear_solver, n: int, symmetric: bool, where: str) -> LinearSolver:
    """Turn the user's ``linear_solver`` argument into a concrete :class:`LinearSolver`."""
    if linear_solver is None:
        linear_solver = Auto()
    if not isinstance(linear_solver, LinearSolver):
        raise TypeError(
            f"{where}: linear_solver must be an mcmc_customgrad.linear solver (Dense(), "
            f"CG(), GMRES(), Diagonal()) or None, got {type(linear_solver).__name__}."
        )
    if isinstance(linear_solver, Auto):
        linear_solver = linear_solver.resolve(n, symmetric)
    linear_solver.check(symmetric)
    return linear_solver
