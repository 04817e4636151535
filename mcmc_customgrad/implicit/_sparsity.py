"""Sparsity patterns: normalisation, column colouring and detection.

A :class:`Structure` is the hashable, immutable description of the pattern of an
``n x n`` Jacobian (or Hessian) that :class:`~mcmc_customgrad.linear.Sparse` assembles:
its COO indices (the diagonal always included, so that a damping shift and the
safeguard against exact zero pivots have a place to go) and a column colouring (columns
that share no row get one colour, so one JVP with the sum of their unit vectors gives
all of them: a tridiagonal Jacobian needs 3 JVPs, not ``n``).

The colouring and the detection of a pattern from the function itself (``pattern=None``)
come from `asdex <https://github.com/adrhill/asdex>`_ (MIT), which traces the function's
jaxpr and propagates index sets through every primitive. Both run once, in Python,
before compilation; nothing here runs inside ``jit``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import warnings
import weakref

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jax_core

from ..caches import register

__all__ = ["Structure", "structure_from_pattern", "detect_structure", "SparsityDetectionError"]


class SparsityDetectionError(ValueError):
    """The sparsity pattern of a residual could not be detected from its code."""


@dataclasses.dataclass(frozen=True, eq=False)
class Structure:
    """The pattern of an ``n x n`` matrix and a column colouring of it.

    Attributes
    ----------
    n : int
        Size.
    rows, cols : numpy int32 arrays
        COO indices of the structural non-zeros, the diagonal included, sorted by row.
    colors : numpy int32 array
        Colour of each column; columns of one colour share no row.
    num_colors : int
        Number of colours: the JVPs one assembly costs.
    """

    n: int
    rows: np.ndarray
    cols: np.ndarray
    colors: np.ndarray
    num_colors: int
    digest: str

    def __hash__(self):
        return hash(self.digest)

    def __eq__(self, other):
        return isinstance(other, Structure) and self.digest == other.digest

    def __repr__(self):
        return f"<{self.n} x {self.n}, nnz={self.nnz}, {self.num_colors} colours>"

    @property
    def nnz(self) -> int:
        """Number of stored entries."""
        return int(self.rows.size)

    def seeds(self, dtype):
        """The ``num_colors x n`` compression matrix: row ``c`` is 1 on colour ``c``."""
        return jnp.asarray(np.arange(self.num_colors)[:, None] == self.colors[None, :], dtype=dtype)

    def values(self, compressed):
        """COO values from the compressed JVPs ``compressed[c] = A @ seeds[c]``."""
        return compressed[self.colors[self.cols], self.rows]

    def diagonal_index(self):
        """Positions of the diagonal entries in :attr:`rows`/:attr:`cols`, in order."""
        where = np.flatnonzero(self.rows == self.cols)
        order = np.argsort(self.rows[where], kind="stable")
        return where[order]


def _coo_from(pattern, where: str):
    """``(rows, cols, shape)`` of a pattern given as SciPy sparse, BCOO or boolean array."""
    from jax.experimental import sparse as jsparse

    if isinstance(pattern, _CooPattern):
        return pattern.rows, pattern.cols, pattern.shape
    if isinstance(pattern, jsparse.BCOO):
        if pattern.n_batch or pattern.n_dense or pattern.ndim != 2:
            raise ValueError(f"{where}: a BCOO pattern must be a plain 2-D matrix.")
        idx = np.asarray(pattern.indices)
        data = np.asarray(pattern.data)
        keep = data != 0
        return idx[keep, 0], idx[keep, 1], tuple(pattern.shape)
    try:
        import scipy.sparse as sp
    except ImportError:  # pragma: no cover - scipy is a dependency
        sp = None
    if sp is not None and sp.issparse(pattern):
        coo = sp.coo_array(pattern)
        keep = coo.data != 0
        return (
            np.asarray(coo.row)[keep],
            np.asarray(coo.col)[keep],
            tuple(coo.shape),
        )
    arr = np.asarray(pattern)
    if arr.ndim != 2:
        raise ValueError(
            f"{where}: pattern must be a 2-D matrix (a SciPy sparse matrix, a "
            f"jax.experimental.sparse.BCOO or a boolean array), got shape {arr.shape}."
        )
    if arr.dtype != bool:
        if not np.issubdtype(arr.dtype, np.number):
            raise TypeError(f"{where}: pattern must be boolean or numeric, got {arr.dtype}.")
        arr = arr != 0
    rows, cols = np.nonzero(arr)
    return rows, cols, arr.shape


def _colour(rows, cols, n):
    import asdex

    sparsity = asdex.SparsityPattern.from_coo(rows.astype(np.int32), cols.astype(np.int32), (n, n))
    with warnings.catch_warnings():
        # asdex warns when a colouring needs n colours: a dense pattern. Callers decide
        # what a dense pattern means (the default falls back to a matrix-free solve).
        warnings.simplefilter("ignore", asdex.DenseColoringWarning)
        coloured = asdex.jacobian_coloring_from_sparsity(sparsity, mode="fwd")
    colors = np.asarray(coloured.colors, dtype=np.int32)
    return colors, int(coloured.num_colors)


def structure_from_pattern(pattern, where: str = "mcmc_customgrad.linear.Sparse") -> Structure:
    """Validate a user's pattern and colour it (the diagonal is added)."""
    rows, cols, shape = _coo_from(pattern, where)
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f"{where}: pattern must be square (n x n), got shape {shape}.")
    n = int(shape[0])
    if n == 0:
        raise ValueError(f"{where}: pattern is empty (0 x 0).")
    rows = np.concatenate([np.asarray(rows, np.int64), np.arange(n)])
    cols = np.concatenate([np.asarray(cols, np.int64), np.arange(n)])
    flat = np.unique(rows * n + cols)
    rows, cols = (flat // n).astype(np.int32), (flat % n).astype(np.int32)
    colors, num_colors = _colour(rows, cols, n)
    digest = hashlib.sha256(np.int64(n).tobytes() + rows.tobytes() + cols.tobytes()).hexdigest()
    return Structure(n, rows, cols, colors, num_colors, digest)


#: Detected structures, per cached problem (a problem is built once per distinct code).
_DETECTED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
register(_DETECTED.clear)


def detect_structure(problem, y0, params) -> Structure:
    """The pattern of the tangent operator of ``problem``, detected from its code.

    The Jacobian of the residual for a root or fixed point, the Hessian of the
    objective for a minimum, found by asdex from the jaxpr (values do not matter:
    placeholders of the right shapes are traced). Cached per problem.

    Raises
    ------
    SparsityDetectionError
        When asdex cannot trace the function (a primitive it does not know, such as
        a nested implicit solve or a host callback); the message says how to give the
        pattern instead.
    """
    known = _DETECTED.get(problem)
    if known is not None:
        return known
    import asdex

    zeros = jax.tree.map(lambda x: np.zeros(np.shape(x), jnp.result_type(x)), (y0, params))
    y_z, params_z = zeros
    opaque = _opaque_primitives(problem, y_z, params_z)
    if opaque:
        # A callback or a foreign call hides its dependencies: a detector must assume
        # every output depends on every input, an n x n pattern it cannot even store
        # for large n. Refuse before trying.
        raise SparsityDetectionError(
            f"could not detect the sparsity pattern of the {_operator_name(problem)}: the "
            f"function calls {', '.join(sorted(opaque))}, which hides its dependencies. "
            "Give it: linear_solver=mcg.linear.Sparse(pattern=P) with P a SciPy sparse "
            "matrix, a BCOO or a boolean n x n array, or use a matrix-free solve, "
            "linear_solver=mcg.linear.GMRES(preconditioner=...) (CG for a minimum)."
        )
    try:
        if problem.kind == "argmin":
            found = asdex.hessian_sparsity(lambda y: problem.objective(y, params_z), y_z)
        else:
            found = asdex.jacobian_sparsity(lambda y: problem.residual(y, params_z), y_z)
    except Exception as err:  # any failure to trace: ask for the pattern
        raise SparsityDetectionError(
            f"could not detect the sparsity pattern of the {_operator_name(problem)} "
            f"({type(err).__name__}: {err}). Give it: "
            "linear_solver=mcg.linear.Sparse(pattern=P) with P a SciPy sparse matrix, a "
            "BCOO or a boolean n x n array, or use a matrix-free solve, "
            "linear_solver=mcg.linear.GMRES(preconditioner=...) (CG for a minimum)."
        ) from err
    rows = np.asarray(found.rows, np.int64)
    cols = np.asarray(found.cols, np.int64)
    n = problem.n
    structure = structure_from_pattern(_CooPattern(rows, cols, (n, n)), "pattern detection")
    _DETECTED[problem] = structure
    return structure


#: Primitives whose dependencies no jaxpr-level detector can see.
OPAQUE_PRIMITIVES = frozenset({"pure_callback", "io_callback", "callback", "ffi_call"})


def primitive_names(jaxpr) -> set[str]:
    """Names of every primitive in ``jaxpr`` (a ``Jaxpr``), sub-jaxprs included."""
    names: set[str] = set()
    for eqn in jaxpr.eqns:
        names.add(eqn.primitive.name)
        for sub in jax_core.jaxprs_in_params(eqn.params):
            names |= primitive_names(sub)
    return names


def _opaque_primitives(problem, y, params) -> set[str]:
    """Names of opaque primitives anywhere in the residual's jaxpr (sub-jaxprs included)."""
    names = primitive_names(jax.make_jaxpr(problem.fn)(y, params).jaxpr)
    return {n for n in names if n in OPAQUE_PRIMITIVES or "custom_call" in n}


def _operator_name(problem) -> str:
    return "Hessian" if problem.kind == "argmin" else "Jacobian"


@dataclasses.dataclass(frozen=True)
class _CooPattern:
    """Internal: a COO pattern already split into rows and columns (from detection)."""

    rows: np.ndarray
    cols: np.ndarray
    shape: tuple
