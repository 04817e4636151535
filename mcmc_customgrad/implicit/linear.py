"""Tangent (linear) solves of the implicit-function theorem, all transposable.

Every solve here goes through :func:`jax.lax.custom_linear_solve`, so JAX can
differentiate it (the derivative of ``A^{-1} b`` is ``A^{-1}(db - dA A^{-1} b)``, which
re-enters the same solve) and transpose it (reverse mode calls the transposed solve).
That is what lets a single ``custom_jvp`` rule serve forward mode, reverse mode and every
higher order.

An iterative solve that does not reach its tolerance returns NaN, never a silently wrong
or zero tangent (JAXopt's failed backward CG returned zeros, their issue #466).

A solver is used in two ways. The tangent solve at the solution (:meth:`LinearSolver.__call__`)
first *prepares* the operator once (:meth:`LinearSolver.prepare`: a dense or sparse
factorisation, a preconditioner) and serves the forward solve and the transposed one
(reverse mode) from it: factor once at ``y*``, never again for the derivative. Newton's
steps (:meth:`LinearSolver.step`) use the same preparation at each iterate, with a damping
shift and, for the Krylov solvers, an inexact tolerance (Eisenstat-Walker forcing).

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
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree

from ._base import default_tolerances, max_norm, validate_positive_int, validate_tolerance
from ._sparsity import SparsityDetectionError, detect_structure, structure_from_pattern

__all__ = [
    "LinearSolver",
    "Dense",
    "Sparse",
    "CG",
    "GMRES",
    "Diagonal",
    "Auto",
    "Operator",
    "DENSE_LIMIT",
]

#: Problems with at most this many unknowns get a dense tangent solve by default; above
#: it the default detects the sparsity pattern (:class:`Sparse`) or refuses before
#: compiling (``dense_limit_error``): an ``n x n`` matrix of ``n = 10^4`` is 800 MB.
DENSE_LIMIT = 1000


class Operator(NamedTuple):
    """A linear operator ``A`` at a point, as a solver sees it.

    Attributes
    ----------
    matvec : callable
        ``v -> A v`` (a JVP of the residual, or a Hessian-vector product).
    n : int
        Size.
    dtype : dtype
        Floating dtype.
    symmetric : bool
        ``A == A.T`` (a Hessian).
    problem, y, params : optional
        The implicit problem and the point (flat ``y``, ``params = (args, consts)``) the
        operator is the linearisation at: what a detected sparsity pattern or a
        preconditioner built from the user's ``(y, *args)`` needs. ``None`` when the
        operator stands alone.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import mcmc_customgrad as mcg
    >>> op = mcg.linear.Operator(lambda v: 2.0 * v, 3, jnp.float64, True)
    >>> prepared = mcg.linear.Dense().prepare(op)
    >>> prepared.solve(op.matvec, jnp.ones(3)).tolist()
    [0.5, 0.5, 0.5]
    """

    matvec: Callable
    n: int
    dtype: Any
    symmetric: bool
    problem: Any = None
    y: Any = None
    params: Any = None


class Prepared(NamedTuple):
    """A prepared operator: ``solve(matvec, b)`` and ``transpose_solve(matvec, b)``.

    Both take the (possibly transposed) ``matvec`` that
    :func:`jax.lax.custom_linear_solve` passes, which matrix-free solvers iterate with
    and factorisation-based ones ignore (they close over their factors instead).
    """

    solve: Callable
    transpose_solve: Callable


@dataclasses.dataclass(frozen=True)
class LinearSolver:
    """Base class: a hashable configuration of a tangent solve ``A x = b``."""

    def _solve(self, matvec, b):  # pragma: no cover - abstract
        raise NotImplementedError

    def check(self, symmetric: bool) -> None:
        """Raise ``ValueError`` when this solver cannot handle the operator."""

    def check_problem(self, n: int, dtype, where: str) -> None:
        """Raise ``ValueError`` before compiling when this solver cannot serve the problem."""

    def prepare(self, op: Operator) -> Prepared:
        """Prepare ``op`` once (factorise, build a preconditioner) for its solves.

        The default is matrix-free: every solve calls :meth:`_solve` with the operator it
        is given (the transposed one for the transposed solve).
        """
        return Prepared(self._solve, self._solve)

    def __call__(self, matvec, b, *, symmetric: bool, at=None):
        """Solve ``matvec(x) = b`` transposably; ``symmetric`` says ``A == A.T``.

        ``at = (problem, y, params)`` is the point the operator linearises at, for
        solvers that need it (a detected pattern, a preconditioner).
        """
        self.check(symmetric)
        problem, y, params = at if at is not None else (None, None, None)
        op = Operator(matvec, b.shape[0], b.dtype, symmetric, problem, y, params)
        prepared = self.prepare(op)
        return lax.custom_linear_solve(
            matvec,
            b,
            prepared.solve,
            transpose_solve=prepared.transpose_solve,
            symmetric=symmetric,
        )

    def step(self, op: Operator, b, *, shift=0.0, forcing=None):
        """A Newton step's solve ``(A + shift I) x = b`` (forward only, no derivative).

        ``forcing`` is the relative residual an inexact (Krylov) solve may stop at
        (Eisenstat-Walker); direct solves ignore it. The answer is a search direction:
        an iterative solve that misses the forcing tolerance returns its last iterate
        (the line search judges it), a failed one NaN.
        """
        shifted = _shifted(op, shift)
        return self.prepare(shifted).solve(shifted.matvec, b)


def _shifted(op: Operator, shift) -> Operator:
    """``op + shift I`` (the operator itself when ``shift`` is the Python 0.0)."""
    if isinstance(shift, float) and shift == 0.0:
        return op
    matvec = op.matvec
    return op._replace(matvec=lambda v: matvec(v) + shift * v)


def _materialise(matvec, n, dtype):
    """Dense matrix of the linear map ``matvec`` (one batched matvec over the identity)."""
    eye = jnp.eye(n, dtype=dtype)
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

    def prepare(self, op):
        """Materialise ``A`` (``n`` batched JVPs) and factorise it once."""
        a = _materialise(op.matvec, op.n, op.dtype)
        if op.n == 1:
            # A scalar equation (one per element under vmap): a division, no LAPACK call,
            # whose batched kernels can deadlock XLA:CPU's thread pool (newton.py).
            d = a[0, 0]
            if self.method == "cholesky":
                d = jnp.where(d > 0, d, jnp.nan)  # not positive definite: NaN, as cho_factor

            def make(transposed):
                def divide(_, b):
                    # 0 x = 0 has the minimum-norm solution 0; 0 x = b != 0 has none: NaN,
                    # but the pseudo-inverse 0 in reverse mode (minimum_norm_if_singular).
                    safe = jnp.where(d == 0, 1.0, d)
                    singular = 0.0 if transposed else jnp.where(b == 0, 0.0, jnp.nan)
                    return jnp.where(d == 0, singular, b / safe)

                return divide

            return Prepared(make(False), make(True))
        if self.method == "cholesky":
            factor = jax.scipy.linalg.cho_factor(a)

            def solve(_, b):
                return jax.scipy.linalg.cho_solve(factor, b)

            return Prepared(solve, solve)
        lu = jax.scipy.linalg.lu_factor(a)

        def make(trans):
            matrix = a.T if trans else a

            def solve(_, b):
                x = jax.scipy.linalg.lu_solve(lu, b, trans=trans)
                return minimum_norm_if_singular(matrix, b, x, require_consistent=not trans)

            return solve

        return Prepared(make(0), make(1))


#: A solve ``A x = b`` is accepted when ``|A x - b|_inf`` is within this times
#: ``|A|_inf |x|_inf + |b|_inf``: far above rounding (``n eps``), far below an error.
CONSISTENT_RTOL = 1e-8


def _consistent(a, b, x):
    scale = jnp.max(jnp.abs(a)) * max_norm(x) + max_norm(b)
    finite = jnp.all(jnp.isfinite(x))
    return finite & (max_norm(a @ jnp.where(finite, x, 0.0) - b) <= CONSISTENT_RTOL * scale)


def only_if(pred, fn, default):
    """``fn()`` where ``pred``, else ``default``; ``fn`` runs only if some element needs it.

    A ``lax.cond`` on a batched predicate becomes a ``select`` under ``vmap`` that runs
    both branches for every element. A ``while_loop`` of at most one pass runs its body
    only while some element's predicate holds, so a rare, costly fallback (an SVD) costs
    nothing when no element of the batch needs it.
    """

    def body(carry):
        return jnp.array(True), fn()

    return lax.while_loop(lambda c: ~c[0], body, (~pred, default))[1]


def minimum_norm_if_singular(a, b, x, *, require_consistent=True):
    """``x`` if it solves ``a x = b``; else the minimum-norm solution, NaN if none.

    ``x`` comes from a factorisation of ``a``, which gives ``inf``/``NaN`` (a zero pivot)
    or garbage when ``a`` is singular. At a minimum with a flat direction (a dead ReLU
    unit, a parameter the objective ignores) the tangent system is singular but
    consistent: the determined components of the derivative are well defined and the
    rest are not. Then the minimum-norm least-squares solution (SVD, as Lineax's
    ``AutoLinearSolver(well_posed=False)``) gives the determined components exactly and
    zero in the null space. If the system is inconsistent (``b`` outside the range of
    ``a``: the derivative does not exist, as at a double root) the result is NaN, never
    a finite wrong number.

    The transposed solve of reverse mode passes ``require_consistent=False``: its
    right-hand side (a cotangent of ``y``) legitimately has components in the null
    space, those of the undetermined components of ``y``, and the pseudo-inverse gives
    them zero cotangent, the transpose of the forward rule above (Lineax does the same).
    """
    ok = _consistent(a, b, x)

    def least_squares():
        # Singular values below sqrt(eps) of the largest count as zero: an exactly
        # singular Hessian computed in floating point has "eigenvalues" at its rounding
        # level (1e-12 of the largest for a ReLU network's dead units), and inverting
        # those would turn rounding into O(1) garbage, different in forward and reverse.
        rcond = float(np.sqrt(np.finfo(a.dtype).eps))
        z = jnp.linalg.lstsq(a, b, rcond=rcond)[0]
        if not require_consistent:
            return z
        return jnp.where(_consistent(a, b, z), z, jnp.nan)

    return only_if(~ok, least_squares, x)


def _resolve_tol(rtol, atol, dtype):
    rtol_d, atol_d = default_tolerances(dtype)
    return (rtol_d if rtol is None else rtol), (atol_d if atol is None else atol)


def _preconditioner(preconditioner, op: Operator, where: str):
    """``(M, M_T)``: the preconditioner ``v -> M^-1 v`` at ``op`` and its transpose."""
    if preconditioner is None:
        return None, None
    if isinstance(preconditioner, LinearSolver):
        prepared = preconditioner.prepare(op)
        return (
            lambda v: prepared.solve(op.matvec, v),
            lambda v: prepared.transpose_solve(op.matvec, v),
        )
    if op.problem is None:
        raise ValueError(
            f"{where}: a callable preconditioner needs the point the operator is linearised "
            "at; use the solver through mcg.root/fixed_point/argmin."
        )
    problem, (args, _) = op.problem, op.params
    apply = preconditioner(problem.unravel(op.y), *args)
    if not callable(apply):
        raise TypeError(
            f"{where}: preconditioner(y, *args) must return a function v -> M^-1 v, got "
            f"{type(apply).__name__}."
        )

    def m(v):
        out = apply(problem.unravel(v))
        flat, _ = ravel_pytree(out)
        if flat.shape != v.shape:
            raise ValueError(
                f"{where}: the preconditioner's function must return a vector shaped like "
                f"y ({v.shape[0]} values), got {flat.shape[0]}."
            )
        return flat.astype(v.dtype)

    zero = jnp.zeros(op.n, op.dtype)
    if op.symmetric:
        return m, m
    return m, lambda v: jax.linear_transpose(m, zero)(v)[0]


def _check_preconditioner(preconditioner, owner):
    if preconditioner is None or isinstance(preconditioner, LinearSolver):
        return
    if isinstance(preconditioner, type) or not callable(preconditioner):
        raise TypeError(
            f"{owner}: preconditioner must be None, an mcmc_customgrad.linear solver "
            "instance (applied to the operator, e.g. Sparse(pattern=P) on a sparse "
            "approximation), or a callable (y, *args) -> (v -> M^-1 v); got "
            f"{preconditioner!r}."
        )


@dataclasses.dataclass(frozen=True)
class CG(LinearSolver):
    """Matrix-free (preconditioned) conjugate gradients, for symmetric positive-definite operators.

    Only for ``argmin``/``min_value`` (the tangent operator is then the Hessian). Returns
    NaN when ``max_steps`` pass without ``|r| <= atol + rtol |b|``.

    Parameters
    ----------
    rtol, atol : float, optional
        Residual tolerances; ``None`` means the dtype's default (``1e-10`` in float64).
    max_steps : int, optional
        Iteration cap; ``None`` means ``max(100, 2 n)``.
    preconditioner : callable or LinearSolver, optional
        ``M^-1``, built at the current point: a callable ``(y, *args) -> (v -> M^-1 v)``
        (``y`` and ``v`` shaped like the problem's ``y``; it must be symmetric positive
        definite and linear in ``v``), or another :mod:`mcmc_customgrad.linear` solver
        applied to the operator (``Sparse(pattern=P)`` on a sparser pattern ``P``
        gives a probing approximation: exact where ``P`` covers the Hessian's pattern).

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
    preconditioner: Any = None

    def __post_init__(self):
        validate_tolerance(self.rtol, "rtol", "CG")
        validate_tolerance(self.atol, "atol", "CG")
        if self.max_steps is not None:
            validate_positive_int(self.max_steps, "max_steps", "CG")
        _check_preconditioner(self.preconditioner, "CG")

    def check(self, symmetric):
        """CG needs a symmetric operator."""
        if not symmetric:
            raise ValueError(
                "CG needs a symmetric operator, which only argmin/min_value have (the "
                "Hessian). For root and fixed_point use mcg.linear.GMRES(), Sparse() or "
                "Dense()."
            )

    def prepare(self, op):
        """Build the preconditioner at the point; the iterations are matrix-free."""
        m, _ = _preconditioner(self.preconditioner, op, "CG")

        def solve(matvec, b):
            x, ok = self._cg(matvec, b, m, None)
            return jnp.where(ok, x, jnp.nan)

        return Prepared(solve, solve)

    def step(self, op, b, *, shift=0.0, forcing=None):
        """Inexact Newton step: CG to the forcing tolerance, its last iterate if missed."""
        shifted = _shifted(op, shift)
        m, _ = _preconditioner(self.preconditioner, shifted, "CG")
        x, _ = self._cg(shifted.matvec, b, m, forcing)
        return x

    def _cg(self, matvec, b, m, forcing):
        rtol, atol = _resolve_tol(self.rtol, self.atol, b.dtype)
        if forcing is not None:
            rtol = jnp.maximum(forcing, rtol)
        max_steps = self.max_steps or max(100, 2 * b.shape[0])
        tol = atol + rtol * jnp.linalg.norm(b)
        precond = m if m is not None else (lambda v: v)

        def cond(state):
            _, r, _, _, k = state
            return (jnp.linalg.norm(r) > tol) & (k < max_steps)

        def body(state):
            x, r, p, rz, k = state
            ap = matvec(p)
            alpha = rz / jnp.vdot(p, ap)
            x = x + alpha * p
            r = r - alpha * ap
            z = precond(r)
            rz_new = jnp.vdot(r, z)
            p = z + (rz_new / rz) * p
            return x, r, p, rz_new, k + 1

        x0 = jnp.zeros_like(b)
        z0 = precond(b)
        x, r, _, _, _ = lax.while_loop(cond, body, (x0, b, z0, jnp.vdot(b, z0), 0))
        return x, jnp.linalg.norm(r) <= tol


@dataclasses.dataclass(frozen=True)
class GMRES(LinearSolver):
    """Matrix-free restarted GMRES (optionally preconditioned), for any non-singular operator.

    The transposed solve (reverse mode) runs GMRES on the transposed operator, which
    JAX derives from the JVP, with the transposed preconditioner. Restarts stop on the
    true residual, and the result is NaN when ``|A x - b|`` still exceeds
    ``atol + rtol |b|`` after ``max_steps`` restarts. Unpreconditioned GMRES stalls on
    elliptic operators (a discretised Laplacian): give a preconditioner.

    Parameters
    ----------
    rtol, atol : float, optional
        Residual tolerances; ``None`` means the dtype's default.
    restart : int
        Krylov subspace size between restarts.
    max_steps : int, optional
        Number of restarts; ``None`` means ``max(20, n // restart + 1)``.
    preconditioner : callable or LinearSolver, optional
        ``M^-1``, built at the current point: a callable ``(y, *args) -> (v -> M^-1 v)``
        (``y`` and ``v`` shaped like the problem's ``y``; linear in ``v``), or another
        :mod:`mcmc_customgrad.linear` solver applied to the operator (``Sparse(pattern=P)``
        with a sparser ``P``: a probing approximation of the Jacobian, exact where ``P``
        covers its pattern).

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
    preconditioner: Any = None

    def __post_init__(self):
        validate_tolerance(self.rtol, "rtol", "GMRES")
        validate_tolerance(self.atol, "atol", "GMRES")
        validate_positive_int(self.restart, "restart", "GMRES")
        if self.max_steps is not None:
            validate_positive_int(self.max_steps, "max_steps", "GMRES")
        _check_preconditioner(self.preconditioner, "GMRES")

    def prepare(self, op):
        """Build the preconditioner (and its transpose) at the point."""
        m, m_t = _preconditioner(self.preconditioner, op, "GMRES")

        def checked(precond):
            def solve(matvec, b):
                x, ok = self._gmres(matvec, b, precond, None)
                return jnp.where(ok, x, jnp.nan)

            return solve

        return Prepared(checked(m), checked(m_t))

    def step(self, op, b, *, shift=0.0, forcing=None):
        """Inexact Newton step: GMRES to the forcing tolerance, its last iterate if missed."""
        shifted = _shifted(op, shift)
        m, _ = _preconditioner(self.preconditioner, shifted, "GMRES")
        x, _ = self._gmres(shifted.matvec, b, m, forcing)
        return x

    def _gmres(self, matvec, b, m, forcing):
        """Restarted GMRES stopped on the true residual ``|A x - b| <= atol + rtol |b|``.

        ``jax.scipy.sparse.linalg.gmres`` runs one restart cycle per call; the loop
        around it is ours because JAX's own tests the *preconditioned* residual
        ``|M^-1 (b - A x)|`` against the unpreconditioned tolerance: with a
        preconditioner that shrinks vectors (line Jacobi on a Laplacian, about 1/4) it
        stops early, and with one that stretches them it runs every restart.
        """
        rtol, atol = _resolve_tol(self.rtol, self.atol, b.dtype)
        if forcing is not None:
            rtol = jnp.maximum(forcing, rtol)
        n = b.shape[0]
        restart = min(self.restart, n)
        max_steps = self.max_steps or max(20, n // restart + 1)
        target = atol + rtol * jnp.linalg.norm(b)

        def cycle(carry):
            x, k, _ = carry
            # tol = atol = 0: no early exit inside JAX's cycle; the test is ours.
            x, _ = jax.scipy.sparse.linalg.gmres(
                matvec,
                b,
                x,
                tol=0.0,
                atol=0.0,
                restart=restart,
                maxiter=1,
                M=m,
                solve_method="batched",
            )
            return x, k + 1, jnp.linalg.norm(matvec(x) - b)

        def more(carry):
            _, k, r = carry
            return (k < max_steps) & (r > target)

        x0 = jnp.zeros_like(b)
        x, _, r = jax.lax.while_loop(more, cycle, (x0, 0, jnp.linalg.norm(b)))
        return x, r <= target


@dataclasses.dataclass(frozen=True, eq=False)
class Sparse(LinearSolver):
    """Assemble the Jacobian (Hessian) from its sparsity pattern and factorise it sparsely.

    The matrix is assembled by compressed JVPs: columns that share no row get one
    colour, and one JVP per colour gives all their entries (a tridiagonal Jacobian
    needs 3 JVPs, a 5-point stencil on a grid 5, whatever ``n``). It is factorised by
    KLU (sparse LU, ``method="lu"``) or CHOLMOD (sparse Cholesky, ``method="cholesky"``)
    of SuiteSparse, as XLA custom calls inside ``jit`` and ``vmap`` (through
    `sparsax <https://github.com/knaaptime/sparsax>`_), with the symbolic analysis done
    once per pattern. Memory is ``O(nnz)`` plus the factor's fill; no ``n x n`` array
    exists anywhere. At the solution the factorisation serves the tangent solve and its
    transpose (reverse mode) alike; Newton's steps refactor at each iterate.

    Each factorisation adds ``16 eps max|A|`` to the diagonal (at the level of the
    factorisation's own rounding) so that an exactly singular matrix gives an answer
    rather than stopping the program. A tangent solve refines its answer once with the
    exact operator and returns NaN unless that correction is below ``1e-4`` of the
    answer (``REFINEMENT_TOL``): a system with a condition number up to about ``1e10``
    is solved to near rounding, a singular one whose right-hand side lies in its range
    is solved (the null-space component stays zero), and an inconsistent or
    numerically singular one gives NaN.

    Parameters
    ----------
    pattern : scipy.sparse matrix, jax.experimental.sparse.BCOO, or bool array, optional
        Where the Jacobian (for a minimum, the Hessian) may be non-zero; any superset is
        correct, a subset is not (entries outside the pattern are wrongly added to
        others). ``None`` (default) detects it from the residual's code with
        `asdex <https://github.com/adrhill/asdex>`_, once per problem, before compiling.
    method : {"lu", "cholesky"}
        ``"lu"`` (default) for any non-singular matrix. ``"cholesky"`` is faster for
        Hessians that are positive definite *everywhere the solver goes* (a convex
        objective); a matrix that is not stops the program with an error.

    Notes
    -----
    float64 and the CPU only (SuiteSparse's kernels): a clear error says so otherwise.
    Under ``vmap`` each chain factorises its own matrix in one call; SuiteSparse keeps
    the last factors per pattern (``sparsax.set_lu_cache_size``, 32 by default), so more
    chains than that refactor for the transposed solve.

    Examples
    --------
    A tridiagonal system of ``n = 10^4`` unknowns, solved and differentiated without an
    ``n x n`` matrix:

    >>> import jax, jax.numpy as jnp, scipy.sparse as sp
    >>> import mcmc_customgrad as mcg
    >>> n = 10_000
    >>> def F(u, a):
    ...     lap = 2 * u - jnp.roll(u, 1).at[0].set(0.0) - jnp.roll(u, -1).at[-1].set(0.0)
    ...     return lap + 0.1 * jnp.exp(u) - a
    >>> P = sp.diags([1.0, 1.0, 1.0], [-1, 0, 1], shape=(n, n))
    >>> sparse = mcg.linear.Sparse(pattern=P)
    >>> g = jax.grad(lambda a: mcg.root(F, jnp.zeros(n), a, linear_solver=sparse).sum())(1e-3)
    >>> bool(jnp.isfinite(g))
    True
    """

    pattern: Any = None
    method: Literal["lu", "cholesky"] = "lu"
    structure: Any = dataclasses.field(default=None, init=False, repr=False)

    def __post_init__(self):
        if self.method not in ("lu", "cholesky"):
            raise ValueError(f"Sparse: method must be 'lu' or 'cholesky', got {self.method!r}.")
        _require_sparse_backend("mcmc_customgrad.linear.Sparse")
        if self.pattern is not None:
            object.__setattr__(
                self, "structure", structure_from_pattern(self.pattern, "mcg.linear.Sparse")
            )

    @classmethod
    def from_structure(cls, structure, **options) -> Sparse:
        """A :class:`Sparse` solver for an already coloured pattern (a detected one)."""
        solver = cls(**options)
        object.__setattr__(solver, "structure", structure)
        return solver

    def __eq__(self, other):
        return (
            type(other) is type(self)
            and self.structure == other.structure
            and self.method == other.method
        )

    def __hash__(self):
        return hash((type(self), self.structure, self.method))

    def __repr__(self):
        pattern = "None" if self.structure is None else repr(self.structure)
        return f"Sparse(pattern={pattern}, method={self.method!r})"

    def check_problem(self, n, dtype, where):
        """Float64, the CPU, and a pattern of the problem's size."""
        if np.dtype(dtype) != np.float64:
            raise ValueError(
                f"{where}: linear_solver=Sparse() needs float64 (SuiteSparse's kernels), but "
                f"y is {np.dtype(dtype)}. Enable it with "
                'jax.config.update("jax_enable_x64", True), or use the matrix-free '
                "GMRES(preconditioner=...) / CG()."
            )
        if jax.default_backend() != "cpu":
            raise ValueError(
                f"{where}: linear_solver=Sparse() runs on the CPU only (SuiteSparse), but "
                f"JAX's default backend is {jax.default_backend()!r}. Use the matrix-free "
                "GMRES(preconditioner=...) / CG() on accelerators."
            )
        if self.structure is not None and self.structure.n != n:
            raise ValueError(
                f"{where}: Sparse's pattern is {self.structure.n} x {self.structure.n} but "
                f"the problem has {n} unknowns (the flattened y)."
            )

    def _structure(self, op):
        if self.structure is not None:
            return self.structure
        if op.problem is None:
            raise ValueError(
                "Sparse(pattern=None) detects the pattern from the problem; outside "
                "mcg.root/fixed_point/argmin give pattern=."
            )
        return detect_structure(op.problem, op.y, op.params)

    def _assemble(self, op):
        structure = self._structure(op)
        if structure.n != op.n:
            raise ValueError(
                f"Sparse: the pattern is {structure.n} x {structure.n} but the operator "
                f"has {op.n} unknowns."
            )
        compressed = jax.vmap(op.matvec)(structure.seeds(op.dtype))
        values = structure.values(compressed)
        finite = jnp.all(jnp.isfinite(values))
        values = jnp.where(jnp.isfinite(values), values, 0.0)
        return structure, values, finite

    def prepare(self, op):
        """Assemble by compressed JVPs and factorise once (KLU or CHOLMOD)."""
        structure, values, finite = self._assemble(op)
        eps = jnp.finfo(op.dtype).eps
        diag = structure.diagonal_index()
        factored = values.at[diag].add(16 * eps * max_norm(values))
        rows, cols = structure.rows, structure.cols
        cholesky = self.method == "cholesky"

        def make(trans):
            def solve(matvec, b):
                x0 = _sparse_solve(rows, cols, factored, b, trans=trans, cholesky=cholesky)
                correction = _sparse_solve(
                    rows, cols, factored, b - matvec(x0), trans=trans, cholesky=cholesky
                )
                x = x0 + correction
                # The correction estimates the error of x0: tiny for any system with a
                # condition number below ~1e10, as large as x itself for a singular,
                # inconsistent one (x0 ~ b / shift in the null direction).
                ok = finite & (max_norm(correction) <= REFINEMENT_TOL * max_norm(x))
                return jnp.where(ok, x, jnp.nan)

            return solve

        return Prepared(make(False), make(not cholesky))

    def step(self, op, b, *, shift=0.0, forcing=None):
        """Newton's step: factorise ``A + shift I`` at the iterate and solve (refined once)."""
        structure, values, finite = self._assemble(op)
        scale = max_norm(values)
        eps = jnp.finfo(op.dtype).eps
        diag = structure.diagonal_index()
        factored = values.at[diag].add(shift + 16 * eps * scale)
        cholesky = self.method == "cholesky"
        x = _sparse_solve(structure.rows, structure.cols, factored, b, cholesky=cholesky)
        return jnp.where(finite, x, jnp.nan)


#: A tangent solve of :class:`Sparse` is accepted when its one step of iterative refinement
#: changed the answer by at most this fraction (max-norms).
REFINEMENT_TOL = 1e-4


def _sparse_solve(rows, cols, values, b, *, trans=False, cholesky=False):
    """``A^-1 b`` (``A^-T b`` with ``trans``) for the COO matrix ``(rows, cols, values)``.

    Any number of ``vmap`` levels (``jax.hessian``, ``vmap(jacfwd)``, chains of
    gradients) becomes one batched call: SuiteSparse's batched kernel has a rule for one
    level only, so every further level is folded into the first.
    """
    import sparsax

    def one(v, rhs):
        if cholesky:
            return sparsax.solve(rows, cols, v, rhs)
        if not trans:
            return sparsax.lu_solve(rows, cols, v, rhs)
        # The transposed solve from the same (cached) KLU factor: the cotangent map of
        # rhs -> A^-1 rhs is g -> A^-T g. XLA drops the unused forward solve.
        return jax.vjp(lambda r: sparsax.lu_solve(rows, cols, v, r), rhs)[1](rhs)[0]

    @jax.custom_batching.custom_vmap
    def batched(v, rhs):  # v: (B, nnz), rhs: (B, n); one level of sparsax's own batching
        return jax.vmap(one)(v, rhs)

    @batched.def_vmap
    def _fold(axis_size, in_batched, v, rhs):
        v = v if in_batched[0] else jnp.broadcast_to(v, (axis_size, *v.shape))
        rhs = rhs if in_batched[1] else jnp.broadcast_to(rhs, (axis_size, *rhs.shape))
        inner = v.shape[1]
        out = batched(v.reshape(-1, v.shape[-1]), rhs.reshape(-1, rhs.shape[-1]))
        return out.reshape(axis_size, inner, -1), True

    @jax.custom_batching.custom_vmap
    def single(v, rhs):
        return one(v, rhs)

    @single.def_vmap
    def _first(axis_size, in_batched, v, rhs):
        v = v if in_batched[0] else jnp.broadcast_to(v, (axis_size, *v.shape))
        rhs = rhs if in_batched[1] else jnp.broadcast_to(rhs, (axis_size, *rhs.shape))
        return batched(v, rhs), True

    return single(values, b)


def _require_sparse_backend(where):
    try:
        import asdex  # noqa: F401
        import sparsax  # noqa: F401
    except ImportError as err:  # pragma: no cover - both are dependencies
        raise ImportError(
            f"{where} needs the packages sparsax (SuiteSparse through XLA FFI) and asdex "
            "(sparsity detection and colouring), dependencies of mcmc_customgrad: "
            f"pip install sparsax asdex. ({err})"
        ) from err


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


#: A detected pattern is used by default only when it is this sparse (stored entries per
#: row, on average); a denser one is no cheaper than the matrix-free default.
SPARSE_DEFAULT_MAX_ROW = 64


@dataclasses.dataclass(frozen=True)
class Auto(LinearSolver):
    """Default: :class:`Dense` up to ``DENSE_LIMIT`` unknowns; above, a detected pattern.

    Above ``DENSE_LIMIT`` unknowns the tangent operator's sparsity pattern is detected
    from the code (:class:`Sparse` with ``pattern=None``) when the caller can detect
    it; without detection (or when it fails, or finds a dense pattern) CG for a
    symmetric operator and GMRES otherwise, both matrix-free.

    Examples
    --------
    >>> import mcmc_customgrad as mcg
    >>> mcg.linear.Auto().resolve(n=10, symmetric=True)
    Dense(method='lu')
    >>> mcg.linear.Auto().resolve(n=5000, symmetric=True)
    CG(rtol=None, atol=None, max_steps=None, preconditioner=None)
    """

    def resolve(self, n: int, symmetric: bool, detect=None) -> LinearSolver:
        """The concrete solver for ``n`` unknowns.

        ``detect()``, if given, returns the detected
        :class:`~mcmc_customgrad.implicit._sparsity.Structure` or raises
        :class:`~mcmc_customgrad.implicit._sparsity.SparsityDetectionError`; the reason
        detection did not give a sparse solver is kept in ``resolve.why``.
        """
        if n <= DENSE_LIMIT:
            return Dense()
        if detect is not None:
            try:
                structure = detect()
            except SparsityDetectionError as err:
                why = str(err)
            else:
                if structure.nnz <= SPARSE_DEFAULT_MAX_ROW * n:
                    return Sparse.from_structure(structure)
                why = (
                    f"the detected pattern is dense ({structure.nnz / n:.0f} entries per "
                    f"row on average, more than {SPARSE_DEFAULT_MAX_ROW})"
                )
            return _MatrixFree(CG() if symmetric else GMRES(), why)
        return CG() if symmetric else GMRES()

    def _solve(self, matvec, b):  # pragma: no cover - resolved before use
        raise AssertionError("Auto must be resolved first")


class _MatrixFree(NamedTuple):
    """Internal: Auto's matrix-free fallback and why no sparse solver was chosen."""

    solver: LinearSolver
    why: str


def resolve_linear_solver(
    linear_solver, n: int, symmetric: bool, where: str, detect=None
) -> tuple[LinearSolver, str | None]:
    """Turn the user's ``linear_solver`` argument into a concrete :class:`LinearSolver`.

    Returns ``(solver, why)``: ``why`` is ``None`` unless the default fell back to a
    matrix-free solve above ``DENSE_LIMIT`` unknowns, when it says why (the caller
    refuses a Newton solve then: its steps would need the matrix).
    """
    if linear_solver is None:
        linear_solver = Auto()
    if isinstance(linear_solver, type) or not isinstance(linear_solver, LinearSolver):
        raise TypeError(
            f"{where}: linear_solver must be an mcmc_customgrad.linear solver instance "
            f"(Dense(), Sparse(), CG(), GMRES(), Diagonal()) or None, got {linear_solver!r}."
        )
    why = None
    if isinstance(linear_solver, Auto):
        linear_solver = linear_solver.resolve(n, symmetric, detect=detect)
        if isinstance(linear_solver, _MatrixFree):
            linear_solver, why = linear_solver
    linear_solver.check(symmetric)
    return linear_solver, why


def dense_limit_error(where: str, n: int, kind: str, why: str | None) -> ValueError:
    """The error for a Newton solve that would form an ``n x n`` matrix above the limit."""
    gigabytes = 8 * n * n / 1e9
    operator = "Hessian" if kind == "argmin" else "Jacobian"
    reason = f" The pattern was not used: {why}." if why else ""
    return ValueError(
        f"{where}: {n} unknowns is above the dense limit (mcg.linear.DENSE_LIMIT = "
        f"{DENSE_LIMIT}); Newton's dense steps would form the {n} x {n} {operator} "
        f"({gigabytes:.2g} GB in float64) at every step.{reason} Give its structure: "
        "linear_solver=mcg.linear.Sparse(pattern=P) (a SciPy sparse matrix, a BCOO or a "
        "boolean array; pattern=None detects it), or solve matrix-free with "
        "linear_solver=mcg.linear.GMRES(preconditioner=...) (CG for a minimum), which "
        "Newton then uses for its steps too. solver=mcg.solvers.Newton(linear_solver="
        "mcg.linear.Dense()) forms the dense matrix anyway."
    )
