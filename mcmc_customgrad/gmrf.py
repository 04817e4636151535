"""Sparse-precision latent Gaussian models (GMRFs): the embedded Laplace approximation at scale.

:func:`gmrf_log_marginal` is :func:`~mcmc_customgrad.latent_gaussian_log_marginal` for a
latent field given by its *precision* ``Q``, a sparse matrix
(:class:`jax.experimental.sparse.BCOO`) with a static sparsity pattern and traced values:
time series (AR(1)), spatial fields on grids (the SPDE approximation of a Matern field),
areal models. No dense matrix is formed anywhere:

- the mode ``x*`` of ``Psi(x) = ll(x) - 1/2 (x - mean)' Q (x - mean)`` by Newton on
  ``Q + W``, one sparse Cholesky factorisation per step (CHOLMOD through XLA FFI, the
  ``sparsax`` package; the symbolic analysis is done once per pattern);
- the value ``log q = Psi(x*) + 1/2 log|Q| - 1/2 log|Q + W|``, where ``W = -diag ll''``;
- its derivatives in ``Q``'s values, the mean and the likelihood's arguments by the
  envelope theorem, the implicit function theorem for the mode (one more sparse solve)
  and the adjoint of the log-determinants, ``d log|A| = tr(A^-1 dA)``, which needs
  ``A^-1`` only on ``A``'s own pattern: the selected inverse (Takahashi's recurrence on
  the Cholesky factor). No Newton iteration is differentiated.

The precision builders (``ar1``, ``rw1``, ``rw2``, ``icar``, ``bym2``, ``matern_grid``) return
:class:`Precision` matrices, BCOO matrices whose values are functions of the
hyperparameters (gradients flow to those) and whose pattern stays static under ``jit``.
The intrinsic ones (random walks, ICAR, BYM2) carry their constraints: the field is
constrained to ``V' (x - mean) = 0`` exactly (INLA's conditioning by kriging), with no
jitter.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import sparse as jsparse

from .caches import LRU, lru_cache
from .implicit._base import SolverInfo, Status, max_norm
from .implicit._linesearch import backtrack
from .implicit.linear import _sparse_solve
from .implicit.newton import Newton
from .implicit.root import check_options, finish, jit_core, safe_linearisation, zero_tangent
from .laplace import (
    _CHECKED,
    _as_args,
    _as_float_array,
    _check_separable,
    _concrete,
    _convert_likelihood,
    _mode_ok,
    _w_diag,
)

__all__ = [
    "gmrf_log_marginal",
    "gmrf_latent_draws",
    "SparseLatentPosterior",
    "Precision",
    "NullSpace",
    "ar1",
    "rw1",
    "rw2",
    "icar",
    "bym2",
    "BYM2_PHI_MARGIN",
    "matern_grid",
]


# ============================================================================ the pattern


class Pattern:
    """A precision's static sparsity pattern: COO ``rows``, ``cols`` and the size ``n``.

    Hashable (by the pattern's bytes), so compiled programs are shared by every
    precision with the same pattern. ``a_rows``/``a_cols`` append the diagonal: the
    pattern of ``Q + W``.
    """

    def __init__(self, rows, cols, n: int):
        self.rows = np.asarray(rows, np.int32)
        self.cols = np.asarray(cols, np.int32)
        self.n = int(n)
        self.indices = np.stack([self.rows, self.cols], 1)
        diag = np.arange(self.n, dtype=np.int32)
        self.a_rows = np.concatenate([self.rows, diag])
        self.a_cols = np.concatenate([self.cols, diag])
        digest = hashlib.sha256(self.rows.tobytes() + self.cols.tobytes()).hexdigest()
        self._key = (self.n, self.rows.size, digest)
        on_diagonal = self.rows == self.cols
        self.diagonal_at = np.flatnonzero(on_diagonal)
        self.diagonal_rows = self.rows[on_diagonal]

    @classmethod
    def checked(cls, where: str, indices, n: int) -> Pattern:
        """A pattern from concrete ``(nnz, 2)`` indices: in range and symmetric."""
        indices = np.asarray(indices)
        if indices.ndim != 2 or indices.shape[1] != 2 or indices.shape[0] == 0:
            raise ValueError(
                f"{where}: indices must have shape (nnz, 2) with nnz >= 1, got {indices.shape}."
            )
        if not np.issubdtype(indices.dtype, np.integer):
            raise TypeError(f"{where}: indices must be integers, got dtype {indices.dtype}.")
        rows, cols = indices[:, 0].astype(np.int64), indices[:, 1].astype(np.int64)
        if rows.min() < 0 or cols.min() < 0 or max(rows.max(), cols.max()) >= n:
            raise ValueError(f"{where}: indices fall outside the ({n}, {n}) matrix.")
        if not np.array_equal(np.sort(rows * n + cols), np.sort(cols * n + rows)):
            raise ValueError(
                f"{where}: the sparsity pattern is not symmetric: store both (i, j) and "
                "(j, i) for every off-diagonal entry (the matrix is the sum of its entries, "
                "as BCOO's own matvec reads it)."
            )
        if np.unique(rows * n + cols).size != rows.size:
            raise ValueError(f"{where}: indices repeat an entry; sum the values instead.")
        return cls(rows, cols, n)

    @property
    def nnz(self) -> int:
        """Stored entries of ``Q`` (both triangles)."""
        return int(self.rows.size)

    def __eq__(self, other):
        return isinstance(other, Pattern) and other._key == self._key

    def __hash__(self):
        return hash(self._key)

    def matvec(self, q, x):
        """``Q x`` for the values ``q`` on this pattern."""
        return jnp.zeros(x.shape, jnp.result_type(q, x)).at[self.rows].add(q * x[self.cols])

    def quad(self, q, u, v):
        """``u' Q v``."""
        return jnp.sum(q * u[self.rows] * v[self.cols])

    def diagonal(self, q):
        """The diagonal of ``Q`` (zero where the pattern has no diagonal entry)."""
        return jnp.zeros(self.n, q.dtype).at[self.diagonal_rows].add(q[self.diagonal_at])

    def shifted(self, q, w):
        """The values of ``M = Q + diag(w)`` to factorise: ``M + delta``, ``delta`` ~ rounding.

        ``delta_i = SHIFT eps |M_ii|``, the size of the rounding errors of a Cholesky
        factorisation in column ``i``. An intrinsic ``Q`` plus a ``W`` that is tiny where
        the likelihood is flat (a Poisson rate of ``e^-30``) is positive definite in
        exact arithmetic but may not be in float64, and CHOLMOD would stop the whole
        compiled program there; shifted, it factorises. The shift is at the rounding
        level of the factorisation itself: the log-determinants and the selected
        inverse change by ``delta tr(M^-1)``, and solves are refined against the exact
        ``M`` (:meth:`solve`).
        """
        eps = jnp.finfo(q.dtype).eps
        delta = _SHIFT * eps * jnp.abs(self.diagonal(q) + w)
        values = jnp.concatenate([q, w + delta])
        # Non-finite values (an overflowing W at a failed iterate) would stop the
        # program in CHOLMOD: the identity instead; the caller's result is masked there.
        identity = np.concatenate([np.zeros(self.nnz), np.ones(self.n)])
        return jnp.where(jnp.all(jnp.isfinite(values)), values, identity)

    def solve(self, q, w, b):
        """``(Q + diag(w))^-1 b`` by a sparse Cholesky factorisation, refined once.

        The factorisation is of the :meth:`shifted` matrix; one step of iterative
        refinement against the exact one (a matvec and a solve with the cached factor)
        removes the shift's effect and brings the error from ``eps cond(M)`` to about
        ``eps`` relative to ``|b|``, which Newton needs where ``Q`` is stiff (entries of
        1e6 that cancel, as BYM2's as ``phi -> 1``).
        """
        values = self.shifted(q, w)
        x = _sparse_solve(self.a_rows, self.a_cols, values, b, cholesky=True)
        residual = b - self.matvec(q, x) - w * x
        return x + _sparse_solve(self.a_rows, self.a_cols, values, residual, cholesky=True)

    def logdet(self, q, w=None):
        """``log|Q|`` or ``log|Q + diag(w)|`` (of the :meth:`shifted` matrix)."""
        import sparsax

        if w is None:
            return sparsax.logdet(self.rows, self.cols, q, self.n)
        return sparsax.logdet(self.a_rows, self.a_cols, self.shifted(q, w), self.n)

    def selinv(self, q, w=None):
        """The selected inverse: ``A^-1`` on ``A``'s pattern, ``A = Q`` or ``Q + diag(w)``.

        With ``w`` (``A`` the :meth:`shifted` matrix), the first :attr:`nnz` entries are
        on ``Q``'s pattern and the last ``n`` are the diagonal.
        """
        import sparsax

        if w is None:
            return sparsax.selinv(self.rows, self.cols, q, self.n)
        return sparsax.selinv(self.a_rows, self.a_cols, self.shifted(q, w), self.n)


class NullSpace:
    """The constraint directions ``V`` (``(n, k)``, concrete) of an intrinsic precision.

    The field is constrained to ``V' (x - mean) = 0`` (for a random walk or an ICAR
    prior: the field sums to zero on each connected part, ``V`` spans ``Q``'s null
    space; for BYM2, its structured half sums to zero), the exact treatment INLA calls
    conditioning by kriging. Hashable by its bytes.
    """

    def __init__(self, basis):
        basis = np.asarray(basis, dtype=np.float64)
        if basis.ndim == 1:
            basis = basis[:, None]
        self.basis = basis
        self.basis.flags.writeable = False
        gram = basis.T @ basis
        if np.linalg.matrix_rank(gram) < basis.shape[1]:
            raise ValueError(
                "mcg.gmrf: the null space basis has linearly dependent columns; give one "
                "column per independent direction."
            )
        self.gram_inverse = np.linalg.inv(gram)
        self.log_det_gram = float(np.linalg.slogdet(gram)[1])
        digest = hashlib.sha256(basis.tobytes()).hexdigest()
        self._key = (basis.shape, digest)

    @property
    def k(self) -> int:
        """Number of constraints."""
        return int(self.basis.shape[1])

    def __eq__(self, other):
        return isinstance(other, NullSpace) and other._key == self._key

    def __hash__(self):
        return hash(self._key)

    def project(self, v):
        """``v`` minus its component in the null space (onto ``V' v = 0``)."""
        V = jnp.asarray(self.basis, v.dtype)
        return v - V @ (jnp.asarray(self.gram_inverse, v.dtype) @ (V.T @ v))


@jax.tree_util.register_pytree_node_class
class Precision(jsparse.BCOO):
    """A sparse precision matrix whose pattern stays static under ``jit`` and ``vmap``.

    A :class:`jax.experimental.sparse.BCOO` (``todense``, ``@`` and the other BCOO
    operations work) whose sparsity pattern is part of the pytree's static data rather
    than an array: inside a traced function a plain BCOO's indices are traced too, and
    :func:`gmrf_log_marginal` needs them concrete to analyse the pattern once. The
    builders (:func:`ar1`, :func:`matern_grid`) return one; build your own from NumPy
    indices and traced values.

    Parameters
    ----------
    values : (nnz,) float array
        The entries; may depend on the hyperparameters.
    indices : (nnz, 2) int array, concrete
        Row and column of each entry, both triangles stored (a symmetric pattern), no
        repeats.
    n : int
        The matrix is ``(n, n)``.
    log_det : scalar float array, optional
        ``log|Q|`` as a differentiable function of the hyperparameters, when it has a
        closed form (the builders give one). :func:`gmrf_log_marginal` then uses it and
        its own derivative instead of a Cholesky factorisation of ``Q`` and its selected
        inverse, the most expensive step on a 2-D grid. Give it only if it is exact. With
        ``null_space`` it is required: the log-determinant of ``Q`` on the constraint's
        subspace, ``log|U' Q U|`` for ``U`` an orthonormal basis of the vectors with
        ``null_space' u = 0``. Where ``null_space`` spans ``Q``'s null space (a random
        walk, ICAR) that is the generalised log-determinant, the sum of the logs of the
        non-zero eigenvalues.
    null_space : (n, k) array, optional
        For an intrinsic (singular) ``Q``: the directions ``V`` of its constraints,
        concrete. The field is then constrained to ``V' (x - mean) = 0`` and the marginal
        is that of the constrained field, exactly. Usually ``V`` is a basis of ``Q``'s
        null space (sum to zero, for a random walk or an ICAR prior); any ``V`` on whose
        complement ``Q`` is positive definite works (BYM2 constrains only its structured
        half, :func:`bym2`).

    Examples
    --------
    >>> import jax, jax.numpy as jnp, numpy as np
    >>> import mcmc_customgrad as mcg
    >>> idx = np.array([[0, 0], [1, 1], [0, 1], [1, 0]])
    >>> def q(a):
    ...     return mcg.gmrf.Precision(jnp.stack([2.0, 2.0, a, a]), idx, 2)
    >>> jax.jit(lambda a: q(a).todense())(0.5).tolist()
    [[2.0, 0.5], [0.5, 2.0]]
    """

    def __init__(self, values, indices, n: int, log_det=None, null_space=None):
        pattern = indices if isinstance(indices, Pattern) else None
        if pattern is None:
            pattern = Pattern.checked("mcg.gmrf.Precision", indices, n)
        values = jnp.asarray(values)
        if values.shape != (pattern.nnz,):
            raise ValueError(
                f"mcg.gmrf.Precision: values must have shape ({pattern.nnz},), one per "
                f"index, got {values.shape}."
            )
        super().__init__((values, pattern.indices), shape=(pattern.n, pattern.n))
        if null_space is not None and not isinstance(null_space, NullSpace):
            basis = np.asarray(null_space, dtype=np.float64)
            basis = basis[:, None] if basis.ndim == 1 else basis
            if basis.ndim != 2 or basis.shape[0] != pattern.n or basis.shape[1] >= pattern.n:
                raise ValueError(
                    f"mcg.gmrf.Precision: null_space must have shape ({pattern.n}, k) with "
                    f"k < {pattern.n}, got {basis.shape}."
                )
            null_space = NullSpace(basis)
        if null_space is not None and log_det is None:
            raise ValueError(
                "mcg.gmrf.Precision: an intrinsic precision (null_space given) needs "
                "log_det, its generalised log-determinant; it cannot be factorised."
            )
        self.pattern = pattern
        self.null_space = null_space
        self.log_det = None if log_det is None else jnp.asarray(log_det)

    def tree_flatten(self):
        """Children: the values (and ``log_det``); the pattern is static aux data."""
        return (self.data, self.log_det), (self.pattern, self.null_space)

    @classmethod
    def tree_unflatten(cls, aux, children):
        """Rebuild from the values (maybe traced or batched) and the static pattern."""
        pattern, null_space = aux
        obj = object.__new__(cls)
        obj.data, obj.log_det = children
        obj.indices = jnp.asarray(pattern.indices)
        obj.shape = (pattern.n, pattern.n)
        obj.indices_sorted = False
        obj.unique_indices = True
        obj.pattern = pattern
        obj.null_space = null_space
        return obj


def _pattern(where: str, precision):
    """Check ``precision``: its static pattern, its values and ``log|Q|`` if known."""
    if isinstance(precision, Precision):
        values = _as_float_array(precision.data, "precision's values", where)
        return precision.pattern, values, precision.log_det, precision.null_space
    if not isinstance(precision, jsparse.BCOO):
        raise TypeError(
            f"{where}: precision must be an mcg.gmrf.Precision (from mcg.gmrf.ar1, "
            "mcg.gmrf.matern_grid, or mcg.gmrf.Precision(values, indices, n)) or a "
            f"jax.experimental.sparse.BCOO with concrete indices; got "
            f"{type(precision).__name__}. For a dense covariance use "
            "mcg.latent_gaussian_log_marginal."
        )
    if precision.ndim != 2 or precision.shape[0] != precision.shape[1]:
        raise ValueError(f"{where}: precision must be square (n, n), got {precision.shape}.")
    if precision.n_batch or precision.n_dense:
        raise ValueError(
            f"{where}: precision must be a plain 2-D BCOO (no batch or dense dimensions); "
            "use jax.vmap over the values for batches."
        )
    try:
        indices = np.asarray(precision.indices)
    except jax.errors.TracerArrayConversionError as err:
        raise ValueError(
            f"{where}: the sparsity pattern of precision (its indices) is traced: a BCOO "
            "built inside jit or vmap has traced indices. Build it as "
            "mcg.gmrf.Precision(values, indices, n) with NumPy indices (its pattern stays "
            "static), or use the mcg.gmrf builders."
        ) from err
    pattern = Pattern.checked(where, indices, int(precision.shape[0]))
    return pattern, _as_float_array(precision.data, "precision's values", where), None, None


# ============================================================================== the solve


def _newton(ll, pattern: Pattern, null, theta0, q, m, p, rtol, atol, max_steps):
    """The mode of ``Psi(x) = ll(x) - 1/2 (x - m)' Q (x - m)`` by damped Newton.

    The step solves ``(Q + W+) d = grad Psi`` (``W+``: ``W`` clipped at 0, which keeps
    the matrix positive definite and ``d`` an ascent direction), with a backtracking
    (Armijo) line search on ``Psi``. With a null space ``V`` (an intrinsic prior) the
    iterates stay on ``V' (x - m) = 0``: the step is corrected by kriging,
    ``d = d_u - Z (V' Z)^-1 V' d_u`` with ``d_u = M^-1 g`` and ``Z = M^-1 V``, and the
    gradient is judged projected onto the constraint. The convergence rule is the dense
    path's (:func:`~mcmc_customgrad.latent_gaussian_log_marginal`): the gradient's
    max-norm within ``atol + rtol |Psi|`` and ``x`` known to tolerance (the last step
    moved it by less than ``atol + rtol |x|``), or a full step that small; or, where
    large entries of ``Q`` cancel and rounding stops the line search near the mode, a
    Newton step that small or the gradient test alone. ``_STAGNANT_STEPS`` steps in a
    row without a decrease beyond rounding end the solve as stagnated. Returns
    ``(x, converged, num_steps, residual, stagnated)``.
    """
    project = (lambda v: v) if null is None else null.project
    eps = jnp.finfo(theta0.dtype).eps

    def evaluate(x):
        r = x - m
        psi = ll(x, p) - 0.5 * pattern.quad(q, r, r)
        return -psi, jax.grad(ll)(x, p) - pattern.matvec(q, r)

    start = m + project(theta0 - m)
    x0 = jnp.where(jnp.isfinite(evaluate(start)[0]), start, m)
    merit0, g0 = evaluate(x0)

    def cond(state):
        _x, merit, _g, k, done, stagnant = state
        return ~done & (stagnant < _STAGNANT_STEPS) & (k < max_steps) & jnp.isfinite(merit)

    def body(state):
        x, merit, g, k, _, stagnant = state
        w = jnp.maximum(_w_diag(ll, x, p), 0.0)
        d = pattern.solve(q, w, g)
        if null is not None:
            d = _kriging(pattern, null, q, w, d)
        slope = -jnp.vdot(d, g)
        # Rounding in Psi is that of its largest terms, ll and the quadratic form's
        # entries q_k r_i r_j, which cancel where Q is stiff (BYM2 as phi -> 1).
        r = jnp.abs(x - m)
        noise = 16 * eps * (jnp.abs(merit) + pattern.quad(jnp.abs(q), r, r))
        alpha, merit_t, g_t, accepted = backtrack(evaluate, x, merit, d, slope, noise=noise)
        x1 = jnp.where(accepted, x + alpha * d, x)
        g1 = jnp.where(accepted, g_t, g)
        merit1 = jnp.where(accepted, merit_t, merit)
        moved = max_norm(alpha * d) <= atol + rtol * max_norm(x1)
        residual = max_norm(project(g1))
        residual_ok = residual <= atol + rtol * jnp.abs(merit1)
        known = (accepted & moved) | (residual <= rtol * residual0)
        # Where Q has large entries that cancel (BYM2 as phi -> 1 with tau large), the
        # rounding of Psi and of its gradient (~1e-8 and more) stops Newton near the
        # mode: Psi no longer decreases beyond its rounding noise. Then the full Newton
        # step within tolerance (x is within it of the mode: the rounding lies along
        # Q's stiff directions, where M^-1 is tiny), the gradient test, or a Newton
        # decrement d'g (twice the decrease a full step predicts, ||x - x*||_M^2) below
        # the rounding of Psi (the value is as exact as float64 makes it; x is within
        # sqrt(noise / smallest curvature), ~1e-8, of the mode) are each converged. A
        # stagnation that lasts _STAGNANT_STEPS steps without them is a failure
        # (STAGNATED).
        stuck = ~accepted | (merit - merit1 <= noise)
        small_step = max_norm(d) <= atol + rtol * max_norm(x)
        done = (
            (residual_ok & known)
            | (accepted & (alpha == 1.0) & moved)
            | small_step
            | (stuck & (residual_ok | (-slope <= noise)))
        )
        return x1, merit1, g1, k + 1, done, jnp.where(stuck, stagnant + 1, 0)

    residual0 = max_norm(project(g0))
    done0 = residual0 == 0
    state = (x0, merit0, g0, jnp.zeros((), jnp.int32), done0, jnp.zeros((), jnp.int32))
    x, merit, g, k, done, stagnant = lax.while_loop(cond, body, state)
    ok = done & jnp.isfinite(merit) & jnp.all(jnp.isfinite(x))
    return x, ok, k, max_norm(project(g)).astype(x.dtype), stagnant >= _STAGNANT_STEPS


#: Newton steps in a row without a decrease of ``Psi`` beyond its rounding, above the
#: gradient test, before the solve stops as ``Status.STAGNATED``.
_STAGNANT_STEPS = 3

#: The factorised ``Q + W`` is shifted by this many rounding errors of its diagonal
#: (:meth:`Pattern.shifted`).
_SHIFT = 1

#: With constraints, the constrained covariance ``M^-1 - Z C^-1 Z'`` is a difference; a
#: mode where it would lose more than this relative precision (``M`` nearly singular
#: along the constraints) is a failed solve (``Status.LINEAR_SOLVE_FAILED``), not a
#: silently inaccurate gradient.
_CONSTRAINED_RTOL = 1e-6


def _constraint_solves(pattern: Pattern, null, q, w):
    """``Z = M^-1 V`` and ``C = V' Z`` for ``M = Q + diag(w)``.

    One column at a time: the factor of ``M`` is cached, so each column costs a pair of
    triangular solves.
    """
    V = jnp.asarray(null.basis, q.dtype)
    Z = jnp.stack([pattern.solve(q, w, V[:, j]) for j in range(null.k)], axis=1)
    return Z, V.T @ Z


def _constrained_precision_ok(pattern: Pattern, null, q, w):
    """Whether the constrained covariance ``M^-1 - Z C^-1 Z'`` keeps its precision.

    Its diagonal is a difference: where ``M = Q + W`` is nearly singular along the
    constraints (an intrinsic prior with a likelihood that is almost flat), both terms
    are huge and cancel, and the gradient (which reads that covariance) would be wrong
    without any sign. ``(Z C^-1 Z')_ii M_ii`` bounds the relative cancellation in
    entry ``i`` (the constrained variance is at least of the order of ``1 / M_ii``);
    times ``eps`` it must stay below ``_CONSTRAINED_RTOL``.
    """
    Z, C = _constraint_solves(pattern, null, q, w)
    subtracted = jnp.sum((Z @ jnp.linalg.inv(C)) * Z, axis=1)
    scale = jnp.abs(pattern.diagonal(q) + w)
    loss = jnp.finfo(q.dtype).eps * jnp.max(jnp.abs(subtracted) * scale)
    return jnp.isfinite(loss) & (loss <= _CONSTRAINED_RTOL)


def _kriging(pattern: Pattern, null, q, w, d):
    """``d`` corrected onto ``V' d = 0`` in the metric of ``M``: conditioning by kriging."""
    Z, C = _constraint_solves(pattern, null, q, w)
    V = jnp.asarray(null.basis, d.dtype)
    return d - Z @ jnp.linalg.solve(C, V.T @ d)


def _safe_values(pattern: Pattern, q):
    """``q``, or the identity's values where ``q`` is not finite (so nothing factorises NaN)."""
    finite = jnp.all(jnp.isfinite(q))
    eye = jnp.asarray(pattern.rows == pattern.cols, q.dtype)
    return finite, jnp.where(finite, q, eye)


def _build(ll, pattern: Pattern, null, rtol, atol, max_steps, on_failure, with_logdet_q=True):
    """The ``custom_jvp`` value rule for one likelihood, pattern and solver setting.

    Without ``with_logdet_q`` the value leaves out ``1/2 log|Q|`` (the caller adds a
    closed form), and with it the factorisation and selected inverse of ``Q``. With a
    null space ``null`` the field is constrained to ``V' (x - m) = 0``.
    """

    def solve(theta0, params):
        q, m, p = params
        finite_q, q = _safe_values(pattern, q)
        x, solver_ok, k, residual, stagnated = _newton(
            ll, pattern, null, theta0, q, m, p, rtol, atol, max_steps
        )
        finite = finite_q & jnp.all(jnp.isfinite(x)) & jnp.isfinite(residual)
        x_safe = jnp.where(finite, x, m)
        w = _w_diag(ll, x_safe, p)
        ok, status = _mode_ok(ll, x_safe, p, w, solver_ok, finite)
        status = jnp.where(
            (status == Status.MAX_STEPS) & stagnated, Status.STAGNATED, status
        ).astype(jnp.int32)
        if null is not None:
            w_ok = jnp.where(ok, jnp.maximum(w, 0.0), 1.0)
            precise = _constrained_precision_ok(pattern, null, q, w_ok)
            status = jnp.where(ok & ~precise, Status.LINEAR_SOLVE_FAILED, status)
            ok = ok & precise
        info = SolverInfo(
            converged=ok,
            num_steps=k,
            residual_norm=residual,
            status=status,
            error_estimate=jnp.full((), jnp.nan, residual.dtype),
        )
        if on_failure != "last":
            x = jnp.where(ok, x, jnp.nan)
        return x, info

    def value_at(ok, x, params):
        """The value at a mode ``x``; ``W+`` there (1 where the solve failed)."""
        q, m, p = params
        q = _safe_values(pattern, q)[1]
        w = jnp.where(ok, jnp.maximum(_w_diag(ll, x, p), 0.0), 1.0)
        r = x - m
        # log|U' M U| on the constraint's subspace U = null(V'):
        #   log|M| + log|V' M^-1 V| - log|V' V|.
        logdet_m = pattern.logdet(q, w)
        if null is not None:
            C = _constraint_solves(pattern, null, q, w)[1]
            logdet_m = logdet_m + jnp.linalg.slogdet(C)[1] - null.log_det_gram
        value = ll(x, p) - 0.5 * pattern.quad(q, r, r) - 0.5 * logdet_m
        if with_logdet_q:
            value = value + 0.5 * pattern.logdet(q)
        if on_failure != "last":
            value = jnp.where(ok, value, jnp.nan)
        return value, q, w

    @jax.custom_jvp
    def value_core(theta0, params):
        x, info = solve(theta0, params)
        ok = jnp.all(jnp.isfinite(x)) if on_failure == "last" else info.converged
        return value_at(ok, jnp.where(ok, x, params[1]), params)[0], info

    # The adjoint rule. With M = Q + W and r = x* - m, along a tangent (Q̇, ṁ, ṗ):
    #  * envelope theorem (grad Psi = 0 at the mode, or orthogonal to the constraint's
    #    subspace, along which x* moves):
    #       d Psi = ∂_p ll · ṗ + grad ll · ṁ - ½ r' Q̇ r;
    #  * log-determinants, d log|M| = tr(M^-1 Ṁ) = Σ_k (M^-1)_k Ṁ_k over M's pattern,
    #    so only selected inverses are needed:
    #       d log|Q| = Σ_k (Q^-1)_k Q̇_k,
    #       d log|M| = Σ_k S_k Q̇_k + Σ_i S_ii Ẇ_i,
    #    where S = M^-1, or with a null space V the constrained covariance
    #    S = M^-1 - Z C^-1 Z' (Z = M^-1 V, C = V' Z) on the same entries (this is also
    #    d log|U' M U|); Ẇ = ∂_x W · ẋ* + ∂_p W · ṗ (one JVP of the W diagonal), and
    #    ẋ* = ṁ + ṙ* from the implicit function theorem on the stationarity condition,
    #       ṙ* = S (∂_p grad ll · ṗ - Q̇ r - W ṁ),
    #    one more solve with M's (cached) factor, through lax.custom_linear_solve so
    #    that JAX can transpose it for reverse mode. Every term is linear in the
    #    tangents; no Newton step and no factorisation is differentiated.
    @value_core.defjvp
    def value_jvp(primals, tangents):
        theta0, params = primals
        x, info = solve(theta0, params)
        ok, x_lin, (q_dot, m_dot, p_dot) = safe_linearisation(
            on_failure, x, info, params[1], tangents[1]
        )
        _, m, p = params
        value, q, w = value_at(ok, x_lin, params)
        r = x_lin - m
        g_ll = jax.grad(ll)(x_lin, p)
        _, gp_dot = jax.jvp(lambda pp: jax.grad(ll)(x_lin, pp), (p,), (p_dot,))
        rhs = gp_dot - pattern.matvec(q_dot, r) - w * m_dot
        r_dot = lax.custom_linear_solve(
            lambda v: pattern.matvec(q, v) + w * v,
            rhs,
            lambda _matvec, b: pattern.solve(q, w, b),
            symmetric=True,
        )
        z_m = lax.stop_gradient(pattern.selinv(q, w))
        nnz = pattern.nnz
        s_q, s_diag = z_m[:nnz], z_m[nnz:]
        if null is not None:
            Z, C = lax.stop_gradient(_constraint_solves(pattern, null, q, w))
            ZC = Z @ jnp.linalg.inv(C)
            r_dot = r_dot - ZC @ (Z.T @ rhs)
            s_q = s_q - jnp.sum(ZC[pattern.rows] * Z[pattern.cols], axis=1)
            s_diag = s_diag - jnp.sum(ZC * Z, axis=1)
        x_dot = m_dot + r_dot
        _, ll_dot = jax.jvp(lambda pp: ll(x_lin, pp), (p,), (p_dot,))
        psi_dot = ll_dot + jnp.vdot(g_ll, m_dot) - 0.5 * pattern.quad(q_dot, r, r)
        _, w_dot = jax.jvp(lambda xx, pp: _w_diag(ll, xx, pp), (x_lin, p), (x_dot, p_dot))
        logdet_m_dot = jnp.vdot(s_q, q_dot) + jnp.vdot(s_diag, w_dot)
        value_dot = psi_dot - 0.5 * logdet_m_dot
        if with_logdet_q:
            z_q = lax.stop_gradient(pattern.selinv(q))
            value_dot = value_dot + 0.5 * jnp.vdot(z_q, q_dot)
        return (value, info), (jnp.where(ok, value_dot, 0.0), jax.tree.map(zero_tangent, info))

    def posterior_core(theta0, params):
        """The mode, the solve's info, and ``W+`` and the values to factorise there."""
        x, info = solve(theta0, params)
        ok = jnp.all(jnp.isfinite(x))
        _, q, w = value_at(ok, jnp.where(ok, x, params[1]), params)
        return x, info, q, w

    return jit_core(value_core), jax.jit(posterior_core)


#: Compiled GMRF programs, keyed by the likelihood's jaxpr, the pattern and the options.
_CACHE = LRU(32)


def _setup(where, log_likelihood, precision, theta0, args, mean, solver, full_output, on_failure):
    check_options(where, full_output, on_failure)
    if solver is None:
        solver = Newton()
    if not isinstance(solver, Newton):
        raise TypeError(
            f"{where}: solver must be None or mcmc_customgrad.solvers.Newton(rtol=..., "
            f"atol=..., max_steps=...), which configures the sparse Newton iteration; got "
            f"{type(solver).__name__}."
        )
    pattern, q, log_det, null = _pattern(where, precision)
    theta0 = _as_float_array(theta0, "theta0", where)
    n = pattern.n
    if theta0.shape != (n,):
        raise ValueError(
            f"{where}: theta0 must have shape ({n},) to match the ({n}, {n}) precision, got "
            f"{tuple(theta0.shape)}. Use jax.vmap for batches."
        )
    mean = _as_float_array(mean, "mean", where, allow_none=True)
    dtype = jnp.result_type(q, theta0, *([] if mean is None else [mean]))
    if mean is None:
        mean = jnp.zeros(n, dtype)
    elif mean.shape not in ((), (n,)):
        raise ValueError(
            f"{where}: mean must be None, a scalar or an array of shape ({n},), got shape "
            f"{tuple(mean.shape)}."
        )
    mean = jnp.broadcast_to(mean, (n,)).astype(dtype)
    if dtype != jnp.float64:
        raise ValueError(
            f"{where}: the sparse Cholesky factorisation (CHOLMOD) works in float64, and "
            f"the inputs are {jnp.dtype(dtype).name}. Enable 64-bit mode first: "
            'jax.config.update("jax_enable_x64", True).'
        )
    theta0, q = theta0.astype(dtype), q.astype(dtype)
    args = _as_args(args, where)
    key, ll, consts = _convert_likelihood(where, log_likelihood, theta0, args)
    rtol, atol = solver.tolerances(dtype)
    params = (q, mean, (args, consts))
    if _concrete(theta0, params):
        if key not in _CHECKED:
            _check_separable(where, ll, theta0, (args, consts))
            _CHECKED.put(key, True)
        if null is None:
            _check_positive_definite(where, pattern, q)
    own = log_det is None
    options = (null, rtol, atol, solver.max_steps, on_failure, own)
    core = _CACHE.get_or_build(
        (*key, pattern, jnp.dtype(dtype), *options), lambda: _build(ll, pattern, *options)
    )
    return core, solver, theta0, params, log_det


def _check_positive_definite(where, pattern: Pattern, q):
    """Eager check (concrete values) that ``Q`` factorises: a clear error, not CHOLMOD's."""
    try:
        value = float(pattern.logdet(q))
    except Exception as err:  # sparsax raises "matrix is not positive definite"
        raise ValueError(
            f"{where}: the precision is not positive definite ({err}). A proper GMRF prior "
            "needs a positive definite Q; an intrinsic one (a random walk, ICAR) is "
            "singular and needs its constraints handled. Check the hyperparameters (AR(1): "
            "|rho| < 1, tau > 0)."
        ) from None
    if not math.isfinite(value):
        raise ValueError(f"{where}: log|Q| is {value}: the precision has non-finite values.")


def gmrf_log_marginal(
    log_likelihood,
    precision,
    theta0,
    *args,
    mean=None,
    solver=None,
    full_output=False,
    on_failure="nan",
):
    """Laplace-approximated ``log ∫ p(y | x, *args) N(x; mean, Q^-1) dx`` for a sparse ``Q``.

    The embedded Laplace approximation of a latent Gaussian Markov random field (INLA's
    and TMB's model class) with exact derivatives for NUTS: the mode by Newton with a
    sparse Cholesky factorisation of ``Q + W`` per step, and

        log q(y | hyper) = ll(x*) - 1/2 r' Q r + 1/2 log|Q| - 1/2 log|Q + W|,

    ``r = x* - mean``, ``W = -diag(d^2 ll / dx^2)`` at the mode ``x*``. The derivatives in
    ``precision``'s values, ``mean`` and ``args`` (and values ``log_likelihood`` closes
    over) come from the envelope theorem, the implicit function theorem for the mode and
    the selected inverse of ``Q + W`` (its entries on the sparsity pattern, by
    Takahashi's recurrence; that of ``Q`` too, unless the precision carries ``log|Q|`` in
    closed form, as the builders' do): no dense matrix and no differentiated iteration.
    Exact (up to the tolerance) when the likelihood is Gaussian. Agrees with
    :func:`~mcmc_customgrad.latent_gaussian_log_marginal` with ``cov = Q^-1``
    (``pinv(Q)`` for an intrinsic prior under its constraints). Differentiable once
    (forward or reverse, under ``jit`` and ``vmap``): second derivatives would need the
    selected inverse's own derivative, which SuiteSparse does not provide, and
    :func:`jax.hessian` raises.

    Parameters
    ----------
    log_likelihood : callable
        ``log_likelihood(x, *args)``: per-observation log-likelihoods, shape ``(n,)``, or
        their sum. It must be separable (term ``i`` depends on ``x[i]`` only) and
        log-concave at the mode (``W >= 0``), as the helpers
        :func:`~mcmc_customgrad.laplace.poisson`, ``bernoulli``, ``gaussian`` and
        ``negative_binomial`` are; both are checked, as for
        :func:`~mcmc_customgrad.latent_gaussian_log_marginal`. For a linear predictor
        ``eta = A x`` with a sparse projector ``A``, make ``A`` part of the latent field
        (see ``docs/laplace.md``).
    precision : jax.experimental.sparse.BCOO
        ``Q``, ``(n, n)``, symmetric and positive definite, with both triangles stored.
        Its pattern (indices) must be static; its values may depend on the
        hyperparameters (derivatives flow to them). Build it with :func:`ar1`,
        :func:`rw1`, :func:`rw2`, :func:`icar`, :func:`matern_grid`, or as a
        :class:`Precision` from your own indices. An intrinsic precision (with a
        ``null_space``) constrains the field to ``V' (x - mean) = 0``.
    theta0 : (n,) float array
        Newton start (``jnp.zeros(n)`` is usual); no derivative flows to it.
    *args : pytrees of arrays
        Likelihood parameters; differentiable.
    mean : None, float or (n,) float array
        Prior mean (None: zeros); differentiable.
    solver : mcmc_customgrad.solvers.Newton, optional
        Only configures the iteration: ``rtol``/``atol`` (``1e-10`` in float64) and
        ``max_steps`` (100), with the convergence rule of
        :func:`~mcmc_customgrad.latent_gaussian_log_marginal`.
    full_output : bool
        If True return ``(value, SolverInfo)``; ``info.status`` says why a solve failed
        (:class:`~mcmc_customgrad.Status`: ``MAX_STEPS``, ``NONFINITE``,
        ``NOT_SEPARABLE``, ``NOT_LOG_CONCAVE``).
    on_failure : {"nan", "raise", "last"}
        As for :func:`~mcmc_customgrad.root`.

    Returns
    -------
    value : scalar array, or (value, SolverInfo) when ``full_output`` is True.

    Raises
    ------
    ValueError
        A pattern that is not static or not symmetric, shapes that do not match, a
        likelihood that is not separable, or (checked eagerly, with concrete values) a
        precision that is not positive definite.

    Notes
    -----
    Time per call is a few sparse factorisations of ``Q + W`` (one per Newton step) and,
    with the gradient, one selected inversion of ``Q + W`` (and of ``Q`` without a
    closed-form ``log|Q|``): for a 1-D field ``O(n)``; on a 2-D grid the selected
    inversion dominates (``docs/benchmarks.md``). First derivatives only: second
    derivatives would differentiate the selected inverse, which ``sparsax`` does not.
    Under ``jit`` the precision must stay positive definite for every parameter value
    the sampler proposes (CHOLMOD raises, it cannot return NaN): constrain the
    hyperparameters (the builders take values that keep ``Q`` positive definite).

    Examples
    --------
    A Poisson AR(1) series; the marginal and its gradient in the correlation:

    >>> import jax, jax.numpy as jnp
    >>> import mcmc_customgrad as mcg
    >>> y = jnp.array([0, 1, 1, 3, 2, 4, 2, 1, 0, 1])
    >>> def log_marginal(rho):
    ...     Q = mcg.gmrf.ar1(10, rho, 1.0)
    ...     return mcg.gmrf_log_marginal(mcg.laplace.poisson(y), Q, jnp.zeros(10))
    >>> lp, dlp = jax.value_and_grad(log_marginal)(0.5)
    >>> bool(jnp.isfinite(lp)), bool(jnp.isfinite(dlp))
    (True, True)
    """
    where = "mcmc_customgrad.gmrf_log_marginal"
    (core, _), solver, theta0, params, log_det = _setup(
        where, log_likelihood, precision, theta0, args, mean, solver, full_output, on_failure
    )
    value, info = core(theta0, params)
    if log_det is not None:  # masked like the core's own terms: no derivative at a failure
        value = value + jnp.where(jnp.isfinite(value), 0.5 * log_det, 0.0)
    finish(where, solver, info, on_failure)
    return (value, info) if full_output else value


class SparseLatentPosterior(NamedTuple):
    """The Laplace Gaussian ``N(mean, (Q + W)^-1)`` of the latent field, sparse.

    Attributes
    ----------
    mean : (n,) array
        The mode ``x*`` (NaN when the solve failed).
    variance : (n,) array
        The marginal variances, the diagonal of ``(Q + W)^-1`` (a selected inverse; INLA
        reports the same).
    info : SolverInfo
        Diagnostics of the Newton solve for the mode.
    """

    mean: Any
    variance: Any
    info: Any


def gmrf_latent_draws(
    key,
    log_likelihood,
    precision,
    theta0,
    *args,
    mean=None,
    num_draws=1,
    solver=None,
    full_output=False,
    on_failure="nan",
):
    """Draws of the latent field from its Laplace Gaussian ``N(x*, (Q + W)^-1)``, sparse.

    Takes a PRNG key first, then the arguments of :func:`gmrf_log_marginal`: after
    sampling the hyperparameters with the marginal, call this per posterior draw (as
    ``generated_quantities`` of :func:`~mcmc_customgrad.sample`) to recover the field.
    Each draw is ``x* + P' L^-T z`` with ``Q + W = P' L L' P`` the sparse Cholesky
    factorisation and ``z`` standard normal: ``O(nnz(L))`` per draw, no dense matrix.

    Parameters
    ----------
    key : jax.random key
    log_likelihood, precision, theta0, *args, mean, solver, on_failure
        As for :func:`gmrf_log_marginal`.
    num_draws : int
        Number of draws (>= 0).
    full_output : bool
        If True return ``(draws, SparseLatentPosterior(mean, variance, info))``; the
        variances cost one selected inversion of ``Q + W``.

    Returns
    -------
    draws : (num_draws, n) array
        NaN when the solve failed.

    Examples
    --------
    With a Gaussian likelihood the Laplace Gaussian is the exact posterior:

    >>> import jax, jax.numpy as jnp, numpy as np
    >>> import mcmc_customgrad as mcg
    >>> from mcmc_customgrad.laplace import gaussian
    >>> y = jnp.array([0.3, -1.0, 0.5, 0.2])
    >>> Q = mcg.gmrf.ar1(4, 0.6, 1.0)
    >>> draws, post = mcg.gmrf_latent_draws(jax.random.key(0), gaussian(y), Q, jnp.zeros(4),
    ...                                     0.5, num_draws=3, full_output=True)
    >>> draws.shape
    (3, 4)
    >>> A = np.asarray(Q.todense()) + 4.0 * np.eye(4)   # Q + I / sigma^2
    >>> bool(np.allclose(post.mean, np.linalg.solve(A, 4.0 * np.asarray(y)), rtol=1e-10))
    True
    >>> bool(np.allclose(post.variance, np.diag(np.linalg.inv(A)), rtol=1e-10))
    True
    """
    where = "mcmc_customgrad.gmrf_latent_draws"
    if isinstance(num_draws, bool) or not isinstance(num_draws, int | np.integer):
        raise TypeError(f"{where}: num_draws must be an int, got {num_draws!r}.")
    if num_draws < 0:
        raise ValueError(f"{where}: num_draws must be >= 0, got {num_draws}.")
    (_, posterior_core), solver, theta0, params, _ = _setup(
        where, log_likelihood, precision, theta0, args, mean, solver, full_output, on_failure
    )
    pattern, _, _, null = _pattern(where, precision)
    x, info, q, w = posterior_core(theta0, params)
    finish(where, solver, info, on_failure)
    draws = _draw(pattern, null, key, x, q, w, int(num_draws))
    if full_output:
        variance = pattern.selinv(q, w)[pattern.nnz :]
        if null is not None:  # the constrained field's: M^-1 - Z C^-1 Z' on the diagonal
            Z, C = _constraint_solves(pattern, null, q, w)
            variance = variance - jnp.sum((Z @ jnp.linalg.inv(C)) * Z, axis=1)
        variance = jnp.where(jnp.all(jnp.isfinite(x)), variance, jnp.nan)
        return draws, SparseLatentPosterior(mean=x, variance=variance, info=info)
    return draws


def _draw(pattern: Pattern, null, key, x, q, w, num_draws: int):
    """``num_draws`` draws of ``N(x, (Q + diag(w))^-1)``, one factorisation.

    With a null space ``V`` each draw is corrected onto ``V' eta = 0`` by kriging,
    ``eta - Z C^-1 V' eta``, which makes it a draw of the constrained Gaussian.
    """
    import sparsax

    if num_draws == 0:
        return jnp.zeros((0, pattern.n), x.dtype)
    z = jax.random.normal(key, (pattern.n, num_draws), x.dtype)
    values = jnp.concatenate([q, w])
    eta, _ = sparsax.sample_gaussian(pattern.a_rows, pattern.a_cols, values, jnp.zeros_like(z), z)
    if null is not None:
        Z, C = _constraint_solves(pattern, null, q, w)
        V = jnp.asarray(null.basis, x.dtype)
        eta = eta - Z @ jnp.linalg.solve(C, V.T @ eta)
    return x[None, :] + eta.T


# ============================================================================ the builders


def _scalar(where, name, value):
    value = jnp.asarray(value)
    if value.shape != ():
        raise ValueError(f"{where}: {name} must be a scalar, got shape {value.shape}.")
    if not jnp.issubdtype(value.dtype, jnp.floating):
        value = value.astype(jnp.result_type(float))
    return value


def _in_range(where, conditions):
    """Whether the hyperparameters are in range: a bool array, False if any condition fails.

    ``conditions`` holds ``(holds, message)`` pairs. Concrete hyperparameters out of range
    raise ``ValueError`` with the message; traced ones (a sampler's proposal) give False,
    and the builder returns NaN values (:func:`_guarded`), so that
    :func:`gmrf_log_marginal` is NaN there (a rejected proposal) rather than handing
    CHOLMOD a matrix that is not positive definite, which would stop the whole compiled
    program.
    """
    ok = jnp.array(True)
    for holds, message in conditions:
        if not isinstance(holds, jax.core.Tracer) and not bool(holds):
            raise ValueError(f"{where}: {message}")
        ok = ok & holds
    return ok


def _safe(ok, value, default):
    """``value`` where the hyperparameters are in range, else ``default``.

    Computing the values at a safe point keeps their derivatives finite (no ``0 * inf``
    where they are masked).
    """
    return jnp.where(ok, value, default)


def _guarded(ok, values, log_det):
    """The values and ``log_det``, NaN where the hyperparameters are out of range."""
    return jnp.where(ok, values, jnp.nan), jnp.where(ok, log_det, jnp.nan)


def _positive(name, value):
    return value > 0, f"{name} must be > 0, got {value}."


def _size(where, name, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 2:
        raise ValueError(f"{where}: {name} must be an integer >= 2, got {value!r}.")
    return int(value)


@lru_cache(maxsize=16)
def _ar1_pattern(n: int) -> Pattern:
    i = np.arange(n)
    return Pattern(np.concatenate([i, i[:-1], i[1:]]), np.concatenate([i, i[1:], i[:-1]]), n)


def ar1(n: int, rho, tau) -> Precision:
    """Precision of a stationary AR(1) series with marginal precision ``tau``.

    ``x_1 ~ N(0, 1/tau)``, ``x_t = rho x_{t-1} + sqrt(1 - rho^2) e_t / sqrt(tau)``, so
    every ``x_t`` has variance ``1/tau`` and ``corr(x_s, x_t) = rho^|s - t|`` (INLA's
    ``"ar1"``). ``Q = tau / (1 - rho^2) T`` with ``T`` tridiagonal: ``1, 1 + rho^2, ...,
    1 + rho^2, 1`` on the diagonal and ``-rho`` beside it. Positive definite for
    ``|rho| < 1`` and ``tau > 0``; ``log|Q| = n log tau - (n - 1) log(1 - rho^2)``.

    Parameters
    ----------
    n : int
        Length of the series (at least 2).
    rho, tau : float scalars
        Lag-one correlation in (-1, 1) and marginal precision (> 0); may be traced.

    Returns
    -------
    Precision
        ``(n, n)``, ``3 n - 2`` entries (a BCOO with a static pattern).

    Examples
    --------
    >>> import numpy as np
    >>> import mcmc_customgrad as mcg
    >>> Q = mcg.gmrf.ar1(4, 0.5, 2.0)
    >>> C = np.linalg.inv(np.asarray(Q.todense()))
    >>> np.round(C[0] * 2.0, 6)  # correlations rho^|s - t|
    array([1.   , 0.5  , 0.25 , 0.125])
    """
    where = "mcg.gmrf.ar1"
    n = _size(where, "n", n)
    rho, tau = _scalar(where, "rho", rho), _scalar(where, "tau", tau)
    conditions = [(jnp.abs(rho) < 1, f"rho must be in (-1, 1), got {rho}."), _positive("tau", tau)]
    ok = _in_range(where, conditions)
    rho, tau = _safe(ok, rho, 0.0), _safe(ok, tau, 1.0)
    diag = jnp.full(n, 1.0 + rho**2).at[0].set(1.0).at[-1].set(1.0)
    off = jnp.full(n - 1, -rho)
    values = tau / (1.0 - rho**2) * jnp.concatenate([diag, off, off])
    log_det = n * jnp.log(tau) - (n - 1) * jnp.log1p(-(rho**2))
    values, log_det = _guarded(ok, values, log_det)
    return Precision(values, _ar1_pattern(n), n, log_det=log_det)


def _banded_logdet(D):
    """``log|D D'|`` for a sparse difference matrix ``D`` with full row rank (SuperLU)."""
    import scipy.sparse as sp
    from scipy.sparse.linalg import splu

    lu = splu(sp.csc_matrix(D @ D.T))
    return float(np.sum(np.log(np.abs(lu.U.diagonal()))))


def _sorted_entries(m):
    """A summed COO matrix's entries in row-major order: ``(row * n + col, values)``."""
    flat = m.row.astype(np.int64) * m.shape[0] + m.col
    order = np.argsort(flat)
    values = np.asarray(m.data, float)[order]
    values.flags.writeable = False
    return flat[order], values


@lru_cache(maxsize=16)
def _random_walk_pieces(n: int, order: int):
    """Pattern, structure values, null space and ``log|R|*`` of ``R = D' D``."""
    import scipy.sparse as sp

    D = sp.eye(n, format="csr")
    for _ in range(order):
        D = (D[1:] - D[:-1]).tocsr()
    R = (D.T @ D).tocoo()
    R.sum_duplicates()
    keys, values = _sorted_entries(R)
    t = np.arange(n, dtype=float) - (n - 1) / 2
    basis = np.stack([np.ones(n), t], axis=1)[:, :order]
    pattern = Pattern(keys // n, keys % n, n)
    return pattern, values, NullSpace(basis), _banded_logdet(D)


def _random_walk(where, n, tau, order):
    n = _size(where, "n", n)
    if n <= order:
        raise ValueError(f"{where}: n must be at least {order + 1}, got {n}.")
    tau = _scalar(where, "tau", tau)
    ok = _in_range(where, [_positive("tau", tau)])
    tau = _safe(ok, tau, 1.0)
    pattern, values, null, log_det_r = _random_walk_pieces(n, order)
    log_det = (n - order) * jnp.log(tau) + log_det_r
    values, log_det = _guarded(ok, tau * values, log_det)
    return Precision(values, pattern, n, log_det=log_det, null_space=null)


def rw1(n: int, tau) -> Precision:
    """Precision of a first-order random walk, constrained to sum to zero.

    ``x_{t+1} - x_t ~ N(0, 1/tau)`` (INLA's ``"rw1"``): ``Q = tau D' D`` with ``D`` the
    first-difference matrix, singular along the constant vector. The field is constrained
    to ``sum(x - mean) = 0``, exactly (put a level in ``mean``); the generalised
    log-determinant is ``(n - 1) log tau + log n``.

    Parameters
    ----------
    n : int
        Length of the series (at least 2).
    tau : float scalar
        Precision of the increments (> 0); may be traced.

    Returns
    -------
    Precision
        ``(n, n)``, tridiagonal, with its null space and ``log_det``.

    Examples
    --------
    >>> import numpy as np
    >>> import mcmc_customgrad as mcg
    >>> Q = mcg.gmrf.rw1(5, 2.0)
    >>> np.asarray(Q.todense())[1].tolist()
    [-2.0, 4.0, -2.0, 0.0, 0.0]
    >>> bool(np.isclose(Q.log_det, 4 * np.log(2.0) + np.log(5.0), rtol=1e-12))
    True
    """
    return _random_walk("mcg.gmrf.rw1", n, tau, 1)


def rw2(n: int, tau) -> Precision:
    """Precision of a second-order random walk, constrained to no level and no trend.

    ``x_{t+1} - 2 x_t + x_{t-1} ~ N(0, 1/tau)`` (INLA's ``"rw2"``): ``Q = tau D' D``
    with ``D`` the second-difference matrix, singular along constants and linear trends.
    The field is constrained to have neither, ``sum(x - mean) = 0`` and
    ``sum(t (x - mean)) = 0``, exactly: give the level and the slope their own
    parameters (in ``mean``). The generalised log-determinant is
    ``(n - 2) log tau + log|D D'|``.

    Parameters
    ----------
    n : int
        Length of the series (at least 3).
    tau : float scalar
        Precision of the second differences (> 0); may be traced.

    Returns
    -------
    Precision
        ``(n, n)``, pentadiagonal, with its null space and ``log_det``.

    Examples
    --------
    >>> import numpy as np
    >>> import mcmc_customgrad as mcg
    >>> np.asarray(mcg.gmrf.rw2(6, 1.0).todense())[2].tolist()
    [1.0, -4.0, 6.0, -4.0, 1.0, 0.0]
    """
    return _random_walk("mcg.gmrf.rw2", n, tau, 2)


def _graph(where: str, adjacency):
    """A graph's hashable key ``(n, edges)`` from an adjacency matrix or an edge list.

    Checks that the matrix is square and symmetric, that every index is >= 0 and that
    every area has a neighbour (an isolated area has no intrinsic prior).
    """
    import scipy.sparse as sp

    if sp.issparse(adjacency) or (np.ndim(adjacency) == 2 and np.shape(adjacency)[1] != 2):
        A = sp.coo_matrix(adjacency)
        if A.shape[0] != A.shape[1]:
            raise ValueError(f"{where}: adjacency must be square, got {A.shape}.")
        n = A.shape[0]
        mask = (A.data != 0) & (A.row != A.col)
        edges = np.stack([A.row[mask], A.col[mask]], 1)
        if not np.array_equal(
            np.sort(A.row[mask] * n + A.col[mask]), np.sort(A.col[mask] * n + A.row[mask])
        ):
            raise ValueError(f"{where}: the adjacency matrix must be symmetric.")
    else:
        edges = np.asarray(adjacency)
        if edges.ndim != 2 or edges.shape[1] != 2 or not np.issubdtype(edges.dtype, np.integer):
            raise ValueError(
                f"{where}: adjacency must be an (n, n) matrix or an (m, 2) integer edge "
                f"list, got shape {np.shape(adjacency)}."
            )
        if edges.size and edges.min() < 0:
            raise ValueError(f"{where}: edge indices must be >= 0.")
        edges = edges[edges[:, 0] != edges[:, 1]]
        n = int(edges.max()) + 1 if edges.size else 0
    if n < 2 or edges.size == 0:
        raise ValueError(f"{where}: the graph needs at least two areas and one edge.")
    degree = np.bincount(edges.ravel(), minlength=n)
    if np.any(degree == 0):
        isolated = np.flatnonzero(degree == 0)[:5].tolist()
        raise ValueError(
            f"{where}: areas {isolated} have no neighbours; an intrinsic (ICAR) prior says "
            "nothing about an isolated area. Connect it, or give it a proper prior of its own."
        )
    return (n, tuple(map(tuple, np.unique(np.sort(edges, axis=1), axis=0).tolist())))


@lru_cache(maxsize=8)
def _icar_pieces(key):
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components
    from scipy.sparse.linalg import splu

    n, edges = key
    a, b = np.asarray(edges, np.int64).T
    adjacency = sp.coo_matrix((np.ones(a.size), (a, b)), shape=(n, n)).tocsr()
    adjacency = ((adjacency + adjacency.T) > 0).astype(float)
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    R = (sp.diags(degree) - adjacency).tocoo()
    R.sum_duplicates()
    keys, values = _sorted_entries(R)
    count, labels = connected_components(adjacency, directed=False)
    basis = np.stack([(labels == c).astype(float) for c in range(count)], axis=1)
    # Matrix-tree theorem, per connected part: the product of the non-zero eigenvalues
    # of its Laplacian is its size times the determinant of any reduced Laplacian.
    R = R.tocsr()
    log_det = 0.0
    for c in range(count):
        nodes = np.flatnonzero(labels == c)
        log_det += np.log(nodes.size)
        if nodes.size > 1:
            reduced = R[nodes[1:]][:, nodes[1:]]
            lu = splu(sp.csc_matrix(reduced))
            log_det += float(np.sum(np.log(np.abs(lu.U.diagonal()))))
    return Pattern(keys // n, keys % n, n), values, NullSpace(basis), log_det, count


def icar(adjacency, tau) -> Precision:
    """Precision of an intrinsic CAR field on a graph (areas and their neighbours).

    ``x_i | x_-i ~ N(mean of the neighbours, 1 / (tau d_i))`` (Besag's ICAR, INLA's
    ``"besag"``): ``Q = tau (D - A)``, the graph Laplacian scaled by ``tau``, singular
    along the constant vector of each connected part of the graph. The field is
    constrained to sum to zero on each part, exactly; the generalised log-determinant is
    ``(n - c) log tau + log|D - A|*`` for ``c`` parts (matrix-tree theorem).

    Parameters
    ----------
    adjacency : (n, n) array or (m, 2) int array
        The graph: a symmetric 0/1 adjacency matrix (NumPy or SciPy sparse), or an edge
        list of index pairs (each edge once or twice). Concrete. Every area needs a
        neighbour: an isolated one has no ICAR prior (use a proper prior for it).
    tau : float scalar
        Precision (> 0); may be traced.

    Returns
    -------
    Precision
        ``(n, n)``, one entry per area and per neighbour, with the null space and
        ``log_det``.

    Examples
    --------
    A 2 x 2 lattice (a four-cycle):

    >>> import numpy as np
    >>> import mcmc_customgrad as mcg
    >>> Q = mcg.gmrf.icar(np.array([[0, 1], [1, 3], [3, 2], [2, 0]]), 1.0)
    >>> np.asarray(Q.todense()).tolist()[0]
    [2.0, -1.0, -1.0, 0.0]
    >>> round(float(Q.log_det), 6)  # log(4 spanning trees x 4 nodes)
    2.772589
    """
    where = "mcg.gmrf.icar"
    key = _graph(where, adjacency)
    tau = _scalar(where, "tau", tau)
    ok = _in_range(where, [_positive("tau", tau)])
    tau = _safe(ok, tau, 1.0)
    pattern, values, null, log_det_r, count = _icar_pieces(key)
    n = pattern.n
    log_det = (n - count) * jnp.log(tau) + log_det_r
    values, log_det = _guarded(ok, tau * values, log_det)
    return Precision(values, pattern, n, log_det=log_det, null_space=null)


@lru_cache(maxsize=8)
def _scaled_icar(key):
    """The ICAR structure scaled per connected part (Sørbye and Rue 2014), with its pieces.

    Each part's block of ``R = D - A`` is multiplied by the geometric mean of the
    part's marginal variances under its sum-to-zero constraint, so that the scaled
    field has geometric-mean variance 1 on every part (INLA's ``scale.model``). The
    variances come without a dense inverse: with one reference area per part removed,
    ``R`` is positive definite (``R0``); the constrained covariance is ``P S0 P`` with
    ``S0 = R0^-1`` (zero at the references) and ``P`` the centring on each part, so
    ``var_i = S0_ii - 2 (S0 1)_i / n_c + 1' S0 1 / n_c^2``: one selected inverse of
    ``R0`` and one solve. Returns ``(pattern, scaled values, null space, log|R*|*,
    number of parts, labels, scales)``.
    """
    import scipy.sparse as sp
    from scipy.sparse.linalg import splu

    pattern, values, null, log_det_r, count = _icar_pieces(key)
    n = pattern.n
    labels = np.argmax(null.basis, axis=1)
    sizes = np.bincount(labels, minlength=count)
    R = sp.csr_matrix((values, (pattern.rows, pattern.cols)), shape=(n, n))
    references = np.array([np.flatnonzero(labels == c)[0] for c in range(count)])
    kept = np.setdiff1d(np.arange(n), references)
    R0 = R[kept][:, kept].tocoo()
    keys0, values0 = _sorted_entries(R0)
    pattern0 = Pattern(keys0 // kept.size, keys0 % kept.size, kept.size)
    with jax.ensure_compile_time_eval():  # concrete even when first built under jit
        selected = np.asarray(pattern0.selinv(jnp.asarray(values0)))
    s0_diag = np.zeros(n)
    s0_diag[kept] = selected[pattern0.rows == pattern0.cols]
    s0_ones = np.zeros(n)
    s0_ones[kept] = splu(R0.tocsc()).solve(np.ones(kept.size))
    total = np.bincount(labels, weights=s0_ones, minlength=count)  # 1' S0 1 per part
    variance = s0_diag - 2 * s0_ones / sizes[labels] + (total / sizes**2)[labels]
    scales = np.exp(np.bincount(labels, weights=np.log(variance), minlength=count) / sizes)
    scaled = values * scales[labels[pattern.rows]]
    scaled.flags.writeable = False
    log_det = log_det_r + float(np.sum((sizes - 1) * np.log(scales)))
    return pattern, scaled, null, log_det, count, labels, scales


@lru_cache(maxsize=8)
def _bym2_pieces(key):
    """The ``2n x 2n`` BYM2 pattern, the scaled structure on it, masks and the constraint."""
    pattern, scaled, null, log_det_s, count, _, _ = _scaled_icar(key)
    n = pattern.n
    i = np.arange(n, dtype=np.int64)
    size = 2 * n
    rows = np.concatenate([i, i, n + i, n + pattern.rows])
    cols = np.concatenate([i, n + i, i, n + pattern.cols])
    kind = np.concatenate([np.zeros(n), np.ones(2 * n), np.full(pattern.nnz, 2.0)])
    base = np.concatenate([np.zeros(3 * n), scaled])
    # row-major order, as every pattern here; each entry once (R*'s pattern has its diagonal)
    flat = rows * size + cols
    keys = np.unique(flat)
    inverse = np.searchsorted(keys, flat)
    structure = np.zeros(keys.size)
    np.add.at(structure, inverse, base)
    b_diag = np.zeros(keys.size)
    b_diag[inverse[kind == 0]] = 1.0
    cross = np.zeros(keys.size)
    cross[inverse[kind == 1]] = 1.0
    u_diag = np.zeros(keys.size)
    u_diag[inverse[(kind == 2) & (rows == cols)]] = 1.0
    for a in (structure, b_diag, cross, u_diag):
        a.flags.writeable = False
    basis = np.concatenate([np.zeros_like(null.basis), null.basis], axis=0)
    big = Pattern(keys // size, keys % size, size)
    return big, structure, b_diag, cross, u_diag, NullSpace(basis), log_det_s, count


def bym2(adjacency, tau, phi) -> Precision:
    """Precision of the BYM2 model (Riebler et al. 2016): areal effects, scaled and mixed.

    The area effects are ``b = (sqrt(1 - phi) v + sqrt(phi) u) / sqrt(tau)``, ``v``
    independent standard normals and ``u`` the ICAR field of the graph *scaled* so that
    its marginal variances have geometric mean 1 on each connected part (Sørbye and Rue
    2014): ``tau`` is the precision of ``b`` as a whole and ``phi`` the share of its
    variance that is spatially structured. This is INLA's ``"bym2"`` and the Stan case
    study's (Morris et al. 2019) model, in INLA's ``2n``-vector form ``x = (b, u)``,
    whose precision is sparse:

    ``Q = [[tau/(1-phi) I, -sqrt(phi tau)/(1-phi) I], [-sqrt(phi tau)/(1-phi) I,
    R* + phi/(1-phi) I]]``

    with ``R*`` the scaled ICAR structure. ``u`` is constrained to sum to zero on each
    connected part, exactly (the constraint is on ``u``, not along ``Q``'s null space;
    put the intercept in ``mean``'s first ``n`` entries). ``log_det`` is the
    log-determinant on the constraint's subspace, ``n log(tau / (1 - phi)) +
    log|R*|*``.

    The likelihood sees the first ``n`` latents only: write it on ``x[:n]``, for
    example ``lambda x: poisson(y, log_E)(x[:n])``.

    Parameters
    ----------
    adjacency : (n, n) array or (m, 2) int array
        The graph, as for :func:`icar` (every area needs a neighbour).
    tau : float scalar
        Precision of the area effects ``b`` (> 0); may be traced.
    phi : float scalar
        Mixing parameter in ``[BYM2_PHI_MARGIN, 1 - BYM2_PHI_MARGIN]`` (``1e-8``);
        may be traced. ``phi -> 0``: independent effects; ``phi -> 1``: purely
        structured (the precision is singular at 1). Out of range: ``ValueError`` when
        concrete, NaN values (a rejected proposal) when traced.

    Returns
    -------
    Precision
        ``(2n, 2n)``, with the constraint (in ``null_space``) and ``log_det``.

    Examples
    --------
    On a 2 x 3 lattice, ``b``'s covariance is ``((1 - phi) I + phi R*^+) / tau``; the
    scaled structured part has geometric-mean variance 1:

    >>> import numpy as np
    >>> import mcmc_customgrad as mcg
    >>> edges = np.array([[0, 1], [1, 2], [3, 4], [4, 5], [0, 3], [1, 4], [2, 5]])
    >>> Q = mcg.gmrf.bym2(edges, 2.0, 0.5)
    >>> Q.shape, Q.null_space.k
    ((12, 12), 1)
    >>> R = np.asarray(Q.todense())[6:, 6:] - np.eye(6)  # R*: phi / (1 - phi) = 1 off
    >>> round(float(np.exp(np.mean(np.log(np.diag(np.linalg.pinv(R)))))), 10)
    1.0
    """
    where = "mcg.gmrf.bym2"
    key = _graph(where, adjacency)
    tau, phi = _scalar(where, "tau", tau), _scalar(where, "phi", phi)
    in_range = (phi >= BYM2_PHI_MARGIN) & (phi <= 1.0 - BYM2_PHI_MARGIN)
    message = (
        f"phi must be in [{BYM2_PHI_MARGIN:g}, 1 - {BYM2_PHI_MARGIN:g}], got {phi}: it is "
        "the structured share of the variance. Nearer 1 the precision's entries "
        "(~tau / (1 - phi)) cancel beyond float64; nearer 0 the structured half is "
        "nearly singular along its constraint (phi = 0 is the independent model: "
        "use a diagonal precision)."
    )
    ok = _in_range(where, [_positive("tau", tau), (in_range, message)])
    tau, phi = _safe(ok, tau, 1.0), _safe(ok, phi, 0.5)
    pattern, structure, b_diag, cross, u_diag, null, log_det_s, _ = _bym2_pieces(key)
    n = pattern.n // 2
    a = 1.0 / (1.0 - phi)
    values = structure + a * (tau * b_diag - jnp.sqrt(phi * tau) * cross + phi * u_diag)
    log_det = n * jnp.log(tau * a) + log_det_s
    values, log_det = _guarded(ok, values, log_det)
    return Precision(values, pattern, pattern.n, log_det=log_det, null_space=null)


#: :func:`bym2` is NaN outside ``[BYM2_PHI_MARGIN, 1 - BYM2_PHI_MARGIN]``. Its ``2n``
#: form couples ``b`` and ``u`` with entries ``~ tau / (1 - phi)``: nearer 1 than this
#: the sparse Newton iteration cannot place the mode in float64, and from ``1 - phi ~
#: 1e-12`` on the marginal's gradient is wrong. Nearer 0, ``u``'s block ``R* + phi /
#: (1 - phi) I`` is singular to rounding along the constraint (exactly so at 0). Within
#: ``1e-8`` of either end the model is purely structured or purely independent for
#: every practical purpose; on the logit scale the range is about (-18.4, 18.4).
BYM2_PHI_MARGIN = 1e-8


def _grid_laplacian(shape):
    """The graph Laplacian of a ``shape`` lattice (4-neighbour), as COO (rows, cols, values)."""
    ny, nx = shape
    index = np.arange(ny * nx).reshape(ny, nx)
    pairs = [
        (index[:, :-1].ravel(), index[:, 1:].ravel()),
        (index[:-1, :].ravel(), index[1:, :].ravel()),
    ]
    a = np.concatenate([p[0] for p in pairs])
    b = np.concatenate([p[1] for p in pairs])
    degree = np.bincount(np.concatenate([a, b]), minlength=ny * nx).astype(float)
    n = ny * nx
    rows = np.concatenate([np.arange(n), a, b])
    cols = np.concatenate([np.arange(n), b, a])
    values = np.concatenate([degree, -np.ones(a.size), -np.ones(a.size)])
    return rows, cols, values


@lru_cache(maxsize=8)
def _matern_pieces(ny: int, nx: int):
    """The pattern of ``(kappa^2 I + G)^2`` and the values of ``I``, ``G``, ``G^2`` on it."""
    import scipy.sparse as sp

    n = ny * nx
    g_rows, g_cols, g_vals = _grid_laplacian((ny, nx))
    G = sp.csr_matrix((g_vals, (g_rows, g_cols)), shape=(n, n))
    G2 = (G @ G).tocoo()
    eye = sp.identity(n, format="coo")
    union = (abs(G2) + abs(G) + eye).tocoo()
    union.sum_duplicates()
    keys = np.sort(union.row.astype(np.int64) * n + union.col)

    def spread(m):
        m = m.tocoo()
        out = np.zeros(keys.size)
        np.add.at(out, np.searchsorted(keys, m.row.astype(np.int64) * n + m.col), m.data)
        out.flags.writeable = False
        return out

    pattern = Pattern(keys // n, keys % n, n)
    return pattern, spread(eye), spread(G), spread(G2)


def matern_grid(shape, kappa, tau) -> Precision:
    """Precision of the SPDE (Matern, smoothness 1) field on a regular 2-D lattice.

    Lindgren, Rue and Lindström (2011) with ``alpha = 2`` on a unit-spaced grid with
    lumped mass (``C = I``) and Neumann boundaries: ``Q = tau^2 (kappa^2 I + G)^2``,
    ``G`` the lattice's graph Laplacian (4-neighbour). The range is about
    ``sqrt(8) / kappa`` cells; the marginal variance is ``1 / (4 pi kappa^2 tau^2)``
    away from the boundary. Positive definite for ``kappa > 0`` and ``tau > 0``.

    Parameters
    ----------
    shape : (int, int)
        Grid size ``(ny, nx)``; the latent vector is the grid in row-major order.
    kappa, tau : float scalars
        Inverse range and precision scale (both > 0); may be traced.

    Returns
    -------
    Precision
        ``(ny nx, ny nx)``, up to 13 entries per row (a BCOO with a static pattern).

    Examples
    --------
    >>> import numpy as np
    >>> import mcmc_customgrad as mcg
    >>> Q = mcg.gmrf.matern_grid((3, 4), 0.5, 1.0)
    >>> Q.shape, bool(np.all(np.linalg.eigvalsh(np.asarray(Q.todense())) > 0))
    ((12, 12), True)
    """
    where = "mcg.gmrf.matern_grid"
    if not (isinstance(shape, tuple | list) and len(shape) == 2):
        raise ValueError(f"{where}: shape must be (ny, nx), got {shape!r}.")
    ny, nx = (_size(where, "shape", s) for s in shape)
    kappa, tau = _scalar(where, "kappa", kappa), _scalar(where, "tau", tau)
    ok = _in_range(where, [_positive("kappa", kappa), _positive("tau", tau)])
    kappa, tau = _safe(ok, kappa, 1.0), _safe(ok, tau, 1.0)
    pattern, I_v, G_v, G2_v = _matern_pieces(ny, nx)
    values = tau**2 * (kappa**4 * I_v + 2.0 * kappa**2 * G_v + G2_v)
    # The lattice Laplacian is a Kronecker sum of two path Laplacians, whose eigenvalues
    # (Neumann boundaries) are 4 sin^2(pi j / 2m), j = 0..m-1: log|Q| in closed form.
    lam = [4.0 * np.sin(np.pi * np.arange(m) / (2 * m)) ** 2 for m in (ny, nx)]
    eig = (lam[0][:, None] + lam[1][None, :]).ravel()
    log_det = 2 * pattern.n * jnp.log(tau) + 2 * jnp.sum(jnp.log(kappa**2 + eig))
    values, log_det = _guarded(ok, values, log_det)
    return Precision(values, pattern, pattern.n, log_det=log_det)
