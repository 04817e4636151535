"""Per-call statistics of the inner solves in a function, without changing the function.

:func:`with_solver_stats` traces ``fn`` to a jaxpr and evaluates it with a small custom
interpreter (as in JAX's "Writing custom Jaxpr interpreters" guide). Every inner solve
of this library is a ``jit`` equation named :data:`~mcmc_customgrad.implicit.root.CORE_NAME`
whose outputs ``1:6`` are its :class:`~mcmc_customgrad.SolverInfo` (``converged``,
``num_steps``, ``residual_norm``, ``status``, ``error_estimate``); the interpreter binds
every equation as JAX would and collects those outputs on the way.
"""

from __future__ import annotations

import collections
import contextlib
import functools
from typing import Any, NamedTuple

import jax
import jax.extend.core as jex
import jax.numpy as jnp
import numpy as np

from .._args import typeof
from ..caches import lru_cache
from ._base import Status
from .root import CORE_NAME

__all__ = ["with_solver_stats", "SolverStats"]

_JIT = ("jit", "pjit")  # the primitive's name in JAX >= 0.7, and before


class SolverStats(NamedTuple):
    """Aggregate of every inner solve (every element of a batched one) in one call.

    Attributes
    ----------
    converged : bool array
        True when every solve converged (True when there were none).
    num_steps : int32 array
        Total forward-solver steps over all solves and elements (a custom solver that
        does not report its steps contributes -1 per element).
    residual_norm : float array
        Largest optimality residual norm (0 when there were no solves).
    num_solves : int32 array
        Number of solve elements seen: a solve under ``vmap`` over 50 elements counts 50.
    num_hidden : int32 array
        Number of solve *equations* inside ``scan``/``while``/``cond``/``custom_jvp``/
        ``custom_vjp``/``checkpoint`` bodies that could not be recorded (their statistics
        are missing from the other fields). Known at trace time.
    status_counts : int32 array, shape ``(len(Status),)``
        Solve elements by :class:`~mcmc_customgrad.Status`: ``status_counts[s]`` of them
        ended with status ``s`` (``status_counts[Status.DEGENERATE]`` accepted answers
        known only to their error estimate, ``status_counts[Status.MAX_STEPS]`` solves
        out of steps, ...). Sums to ``num_solves``.
    """

    converged: Any
    num_steps: Any
    residual_norm: Any
    num_solves: Any
    num_hidden: Any
    status_counts: Any = None

    def reasons(self) -> dict[str, int]:
        """``{status name: count}`` of the statuses that occurred (concrete values only).

        Summed over any leading (batch) axes, as of ``jax.vmap(with_solver_stats(f))``;
        empty when ``status_counts`` is None (statistics built by hand without it).

        Examples
        --------
        >>> import jax.numpy as jnp
        >>> import mcmc_customgrad as mcg
        >>> logp = lambda a: -mcg.root(lambda y, b: y**3 - b, jnp.array(1.0), a) ** 2
        >>> mcg.with_solver_stats(logp)(2.0)[1].reasons()
        {'CONVERGED': 1}
        """
        if self.status_counts is None:
            return {}
        return {s.name: n for s, n in status_totals(self.status_counts).items()}


def status_totals(counts) -> dict[Status, int]:
    """``{Status: total}`` of per-status ``counts`` (last axis), summed over the others.

    Statuses that did not occur are left out. The one reading of status counts, for
    :meth:`SolverStats.reasons` and the sampler's post-run warnings (which read them
    from ``sample_stats["solver_status"]``, dims ``chain, draw, status``).

    Examples
    --------
    >>> import numpy as np
    >>> from mcmc_customgrad.implicit.stats import status_totals
    >>> status_totals(np.array([[3, 0, 1], [2, 0, 0]]))
    {<Status.CONVERGED: 0>: 5, <Status.MAX_STEPS: 2>: 1}
    """
    counts = np.asarray(counts)
    totals = counts.reshape(-1, counts.shape[-1]).sum(axis=0)
    return {Status(i): int(c) for i, c in enumerate(totals) if c and i < len(Status)}


def _float():
    return jnp.result_type(float)  # float64 with x64 enabled, else float32


NUM_STATUSES = len(Status)


def _empty():
    """Aggregate of no solves: ``(converged, num_steps, residual_norm, num_solves, counts)``."""
    return (
        jnp.asarray(True),
        jnp.zeros((), jnp.int32),
        jnp.zeros((), _float()),
        jnp.zeros((), jnp.int32),
        jnp.zeros((NUM_STATUSES,), jnp.int32),
    )


def _combine(a, b):
    return (a[0] & b[0], a[1] + b[1], jnp.maximum(a[2], b[2]), a[3] + b[3], a[4] + b[4])


def _record(converged, num_steps, residual_norm, status=None):
    """Aggregate one (possibly batched) solve's info arrays."""
    if status is None:  # a core without statuses: converged or not, no reason known
        status = jnp.where(converged, Status.CONVERGED, Status.NOT_CONVERGED)
    counts = jnp.sum(
        jnp.reshape(status, (-1, 1)) == jnp.arange(NUM_STATUSES, dtype=jnp.int32),
        axis=0,
        dtype=jnp.int32,
    )
    return (
        jnp.all(converged),
        jnp.sum(num_steps, dtype=jnp.int32),
        jnp.max(residual_norm, initial=0.0).astype(_float()),
        jnp.asarray(np.size(converged), jnp.int32),
        counts,
    )


def _status_of(eqn, outs):
    """The status output of a solve equation, or None for a core that has none."""
    if len(eqn.outvars) < 5:
        return None
    c, st = eqn.outvars[1].aval, eqn.outvars[4].aval
    if getattr(st, "dtype", None) == np.dtype(np.int32) and st.shape == c.shape:
        return outs[4]
    return None


def _is_jit(eqn) -> bool:
    return eqn.primitive.name in _JIT and isinstance(eqn.params.get("jaxpr"), jex.ClosedJaxpr)


def _is_solve(eqn) -> bool:
    """A core: ``jit`` named CORE_NAME with ``(out, converged, num_steps, residual, ...)``.

    A jit of the bare core has exactly these four outputs; under ``jvp``/``linearize``
    the tangents or residuals follow them. The transpose of the core (one output, no
    solve) is not a solve.
    """
    if not (_is_jit(eqn) and eqn.params.get("name") == CORE_NAME and len(eqn.outvars) >= 4):
        return False
    c, s, r = (v.aval for v in eqn.outvars[1:4])
    return (
        getattr(c, "dtype", None) == np.dtype(bool)
        and jnp.issubdtype(getattr(s, "dtype", np.float64), jnp.integer)
        and jnp.issubdtype(getattr(r, "dtype", np.int32), jnp.floating)
    )


def _count_all(jaxpr) -> int:
    """Solve equations anywhere in ``jaxpr``, sub-jaxprs included."""
    n = 0
    for eqn in jaxpr.eqns:
        if _is_solve(eqn):
            n += 1
        n += sum(_count_all(sub) for sub in jex.jaxprs_in_params(eqn.params))
    return n


def _count_hidden(jaxpr) -> int:
    """Solve equations the interpreter cannot record (inside non-``jit`` bodies)."""
    n = 0
    for eqn in jaxpr.eqns:
        if _is_solve(eqn):
            continue  # recorded; whatever is inside runs as part of it
        if _is_jit(eqn):
            n += _count_hidden(eqn.params["jaxpr"].jaxpr)
        else:
            n += sum(_count_all(sub) for sub in jex.jaxprs_in_params(eqn.params))
    return n


def _bind(eqn, invals):
    """Bind ``eqn`` as ``jax.core.eval_jaxpr`` does."""
    bind_params = eqn.primitive.get_bind_params(eqn.params)
    subfuns = []
    if isinstance(bind_params, tuple):  # JAX < 0.10 returned (subfuns, params)
        subfuns, bind_params = bind_params
    ctx = getattr(getattr(eqn, "ctx", None), "manager", None) or contextlib.nullcontext()
    with ctx:
        return eqn.primitive.bind(*subfuns, *invals, **bind_params)


def _eval(jaxpr, consts, args):
    """Evaluate ``jaxpr``, binding every equation; return ``(outs, aggregate)``."""
    env = {}

    def read(v):
        return v.val if isinstance(v, jex.Literal) else env[v]

    def write(v, x):
        if not isinstance(v, jex.DropVar):
            env[v] = x

    for v, x in zip(jaxpr.constvars, consts, strict=True):
        write(v, x)
    for v, x in zip(jaxpr.invars, args, strict=True):
        write(v, x)
    stats = _empty()
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        if _is_jit(eqn) and not _is_solve(eqn) and _count_all(eqn.params["jaxpr"].jaxpr):
            # The user's own jit around solves: look inside, keeping it one compiled call.
            outs, inner = _nested(eqn.params["jaxpr"])(*invals)
            stats = _combine(stats, inner)
        else:
            outs = _bind(eqn, invals)
            if not eqn.primitive.multiple_results:
                outs = [outs]
            if _is_solve(eqn):
                stats = _combine(stats, _record(*outs[1:4], _status_of(eqn, outs)))
        for v, x in zip(eqn.outvars, outs, strict=True):
            write(v, x)
    return [read(v) for v in jaxpr.outvars], stats


@lru_cache(maxsize=64)
def _nested(closed):
    """``jax.jit`` of :func:`_eval` on a jit equation's jaxpr (cached per jaxpr object)."""
    return jax.jit(lambda *args: _eval(closed.jaxpr, closed.consts, args))


def with_solver_stats(fn):
    """Wrap ``fn`` to also return statistics of the inner solves it performs.

    ``fn_stats(*args, **kwargs)`` returns ``(fn(*args, **kwargs), SolverStats)`` and works
    under ``jax.jit`` and ``jax.vmap`` (``jax.jit(jax.vmap(with_solver_stats(logp)))``
    gives per-draw statistics of a batch). The first output is computed by the same
    operations as ``fn`` itself. Every :func:`~mcmc_customgrad.root`,
    :func:`~mcmc_customgrad.fixed_point`, :func:`~mcmc_customgrad.argmin` and
    :func:`~mcmc_customgrad.min_value` counts, as does every element of one under
    ``vmap``; solves inside the user's own ``jax.jit`` are found too.

    Parameters
    ----------
    fn : callable
        Any JAX-traceable function of arrays (typically a log-density), unchanged.

    Returns
    -------
    fn_stats : callable
        ``fn_stats(*args, **kwargs) -> (out, SolverStats)``.

    Notes
    -----
    ``fn`` is traced once per input structure and shapes (like ``jax.jit``, values it
    captures from outside are read at that first trace). Solves inside the body of a
    ``lax.scan``, ``while_loop``, ``cond``, ``switch``, ``checkpoint``, or the user's
    own ``custom_jvp``/``custom_vjp`` cannot be recorded: they run normally and are
    counted in :attr:`SolverStats.num_hidden` instead (vectorise with ``vmap`` rather
    than ``scan`` to see them). A solve that ``fn`` differentiates internally is seen
    once, for its forward solve.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import mcmc_customgrad as mcg
    >>> def logp(a):  # one scalar root per element of a
    ...     y = jax.vmap(lambda ai: mcg.root(lambda y, b: y**2 - b, jnp.array(1.0), ai))(a)
    ...     return -jnp.sum(y**2)
    >>> value, stats = mcg.with_solver_stats(logp)(jnp.array([1.0, 4.0, 9.0]))
    >>> round(float(value), 6), bool(stats.converged), int(stats.num_solves), int(stats.num_hidden)
    (-14.0, True, 3, 0)
    >>> int(stats.num_steps) > 0
    True
    >>> stats.reasons()  # the statuses of the three solves
    {'CONVERGED': 3}
    """
    if not callable(fn):
        raise TypeError(f"with_solver_stats: fn must be callable, got {type(fn).__name__}.")
    cache = collections.OrderedDict()

    def trace(leaves, treedef):
        def flat_fn(*xs):
            a, k = jax.tree.unflatten(treedef, xs)
            return fn(*a, **k)

        key = (treedef, tuple(typeof(x) for x in leaves))
        hit = cache.get(key)
        if hit is not None:
            cache.move_to_end(key)
            return hit
        closed, out_shape = jax.make_jaxpr(flat_fn, return_shape=True)(*leaves)
        entry = (closed, jax.tree.structure(out_shape), _count_hidden(closed.jaxpr))
        # Values fn captured from an enclosing trace are constants of this jaxpr only.
        if not any(isinstance(c, jax.core.Tracer) for c in closed.consts):
            cache[key] = entry
            if len(cache) > 32:
                cache.popitem(last=False)
        return entry

    @functools.wraps(fn)
    def fn_stats(*args, **kwargs):
        leaves, treedef = jax.tree.flatten((args, kwargs))
        leaves = [x if isinstance(x, jax.Array) else jnp.asarray(x) for x in leaves]
        closed, out_tree, hidden = trace(leaves, treedef)
        outs, (converged, num_steps, residual_norm, num_solves, counts) = _eval(
            closed.jaxpr, closed.consts, leaves
        )
        stats = SolverStats(
            converged, num_steps, residual_norm, num_solves, jnp.asarray(hidden, jnp.int32), counts
        )
        return jax.tree.unflatten(out_tree, outs), stats

    return fn_stats
