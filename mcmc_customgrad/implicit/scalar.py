"""Chandrupatla's safeguarded bracketing root finder, element-wise."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._base import (
    Problem,
    Solver,
    SolverResult,
    max_norm,
    validate_positive_int,
    validate_tolerance,
)

__all__ = ["Chandrupatla"]

_MAX_EXPANSIONS = 60


def _freeze(v):
    return tuple(_freeze(x) for x in v) if isinstance(v, list) else v


@dataclasses.dataclass(frozen=True)
class Chandrupatla(Solver):
    """Bracketing root finder for scalar equations, solved element-wise.

    Chandrupatla (1997): inverse quadratic interpolation when it is safe, bisection
    otherwise, so it can never leave the bracket or fail to converge on a continuous
    function with a sign change. Every element of ``y`` is treated as its own scalar
    equation (``fun(y)_i`` may depend on ``y_i`` only), which is how one call solves one
    Kepler equation per observation; pair it with ``mcg.linear.Diagonal()`` for a
    tangent solve of one JVP.

    Converged when the bracket around each root is narrower than
    ``2 (atol + rtol |y|)`` (plus rounding) or ``fun(y) == 0`` exactly, and the residual
    is small against the function's values at the bracket's ends
    (``|fun(y)| <= atol + rtol max|fun(ends)|``), which rejects a bracket that closed on a
    pole or a jump instead of a root. A small ``|fun(y)|`` alone never stops it: the
    bracket is the step test of :func:`~mcmc_customgrad.implicit._base.converged_within`
    and certifies ``y`` to tolerance whatever the function's scale.

    Parameters
    ----------
    bracket : tuple or callable, optional
        ``(lower, upper)`` (scalars or arrays broadcasting to ``y0``), or a callable
        ``bracket(y0, *args) -> (lower, upper)`` (e.g. ``E in [M - e, M + e]`` for
        Kepler). ``None`` searches outward from ``y0`` for a sign change.
    rtol, atol : float, optional
        Tolerances; ``None`` means ``1e-10`` in float64 (``1000 eps`` in lower
        precisions).
    max_steps : int
        Iterations before giving up.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import mcmc_customgrad as mcg
    >>> kepler = lambda E, M, e: E - e * jnp.sin(E) - M
    >>> solver = mcg.solvers.Chandrupatla(bracket=lambda E0, M, e: (M - e, M + e))
    >>> E = mcg.root(kepler, jnp.zeros(3), jnp.array([0.5, 1.0, 2.0]), 0.3,
    ...              solver=solver, linear_solver=mcg.linear.Diagonal())
    >>> bool(jnp.allclose(kepler(E, jnp.array([0.5, 1.0, 2.0]), 0.3), 0.0, atol=1e-9))
    True
    """

    bracket: tuple | Callable | None = None
    rtol: float | None = None
    atol: float | None = None
    max_steps: int = 200
    kinds = ("root", "fixed_point")

    def __post_init__(self):
        validate_tolerance(self.rtol, "rtol", "Chandrupatla")
        validate_tolerance(self.atol, "atol", "Chandrupatla")
        validate_positive_int(self.max_steps, "max_steps", "Chandrupatla")
        b = self.bracket
        if b is None or callable(b):
            return
        if not (isinstance(b, tuple | list) and len(b) == 2):
            raise ValueError(
                "Chandrupatla: bracket must be None, a (lower, upper) tuple or a callable "
                f"bracket(y0, *args) -> (lower, upper); got {b!r}."
            )
        try:
            # Static numbers, stored as nested tuples so the config stays hashable.
            frozen = tuple(_freeze(np.asarray(v, dtype=float).tolist()) for v in b)
        except (TypeError, jax.errors.ConcretizationTypeError) as err:
            raise ValueError(
                "Chandrupatla: a tuple bracket must hold static numbers; for bounds that "
                "depend on the arguments pass a callable bracket(y0, *args)."
            ) from err
        object.__setattr__(self, "bracket", frozen)

    def run(self, problem: Problem, y0, params) -> SolverResult:
        """Bracket and solve every element of ``y`` from ``y0``."""
        rtol, atol = self.tolerances(problem.dtype)

        def F(y):
            return problem.residual(y, params)

        dtype = y0.dtype
        if self.bracket is None:
            lo, hi, f_lo, f_hi, found = _search_bracket(F, y0)
        else:
            if callable(self.bracket):
                y0_tree = problem.unravel(y0)
                lo, hi = self.bracket(y0_tree, *params[0])
            else:
                lo, hi = self.bracket
            lo = jnp.broadcast_to(jnp.asarray(lo, dtype), y0.shape).reshape(-1)
            hi = jnp.broadcast_to(jnp.asarray(hi, dtype), y0.shape).reshape(-1)
            f_lo, f_hi = F(lo), F(hi)
            found = jnp.sign(f_lo) * jnp.sign(f_hi) <= 0

        y, fy, k, done = _chandrupatla(F, lo, hi, f_lo, f_hi, rtol, atol, self.max_steps)
        # A narrow bracket certifies y only for a continuous function: across a pole or a
        # jump the bracket also narrows, onto the discontinuity. There the residual stays
        # of the size of the function itself, so require it to be small against the
        # values at the bracket's ends (or below atol outright).
        continuous = jnp.abs(fy) <= atol + rtol * jnp.maximum(jnp.abs(f_lo), jnp.abs(f_hi))
        ok = jnp.all(found & done & continuous)
        return SolverResult(y, ok, k, max_norm(fy))


def _search_bracket(F, y0):
    """Expand ``[y0 - h, y0 + h]`` geometrically until ``F`` changes sign element-wise."""
    h0 = 1e-2 * jnp.maximum(jnp.abs(y0), 1.0)
    f0 = F(y0)

    def cond(state):
        _, _, _, _, found, i = state
        return (~jnp.all(found)) & (i < _MAX_EXPANSIONS)

    def body(state):
        lo, hi, f_lo, f_hi, found, i = state
        h = h0 * 2.0 ** (i + 1)
        new_lo, new_hi = y0 - h, y0 + h
        lo = jnp.where(found, lo, new_lo)
        hi = jnp.where(found, hi, new_hi)
        f_lo, f_hi = F(lo), F(hi)
        found = found | (jnp.sign(f_lo) * jnp.sign(f_hi) <= 0)
        return lo, hi, f_lo, f_hi, found, i + 1

    exact = f0 == 0
    state = (y0, y0, f0, f0, exact, 0)
    lo, hi, f_lo, f_hi, found, _ = lax.while_loop(cond, body, state)
    return lo, hi, f_lo, f_hi, found & jnp.isfinite(f_lo) & jnp.isfinite(f_hi)


def _chandrupatla(F, a, b, fa, fb, rtol, atol, max_steps):
    # Notation of Scherer, "Computational Physics" (2010): b, c bracket the root with
    # a the newest point; t is the fraction of [a, b] at which to evaluate next.
    c, fc = a, fa
    t = jnp.full_like(a, 0.5)
    eps = jnp.finfo(a.dtype).eps

    def best(a, fa, b, fb):
        use_a = jnp.abs(fa) < jnp.abs(fb)
        return jnp.where(use_a, a, b), jnp.where(use_a, fa, fb)

    def finished(a, fa, b, fb, c):
        # The bracket's width certifies y; a small |f| alone does not (it may be small
        # only because f is: 1e-5 (y - 2) in float32 has |f(0)| < atol).
        xm, _ = best(a, fa, b, fb)
        width = jnp.abs(b - a)
        tol = 2 * eps * jnp.abs(xm) + atol + rtol * jnp.abs(xm)
        return (width <= 2 * tol) | (fa == 0) | (fb == 0)

    def cond(state):
        a, b, c, fa, fb, _fc, _t, k = state
        return (~jnp.all(finished(a, fa, b, fb, c))) & (k < max_steps)

    def body(state):
        a, b, c, fa, fb, fc, t, k = state
        done = finished(a, fa, b, fb, c)
        xt = a + t * (b - a)
        ft = F(xt)
        same = jnp.sign(ft) == jnp.sign(fa)
        c_new = jnp.where(same, a, b)
        fc_new = jnp.where(same, fa, fb)
        b_new = jnp.where(same, b, a)
        fb_new = jnp.where(same, fb, fa)
        a_new, fa_new = xt, ft
        xm, _ = best(a_new, fa_new, b_new, fb_new)
        tol = 2 * eps * jnp.abs(xm) + atol + rtol * jnp.abs(xm)
        tl = tol / jnp.maximum(jnp.abs(b_new - c_new), jnp.finfo(a.dtype).tiny)
        xi = (a_new - b_new) / (c_new - b_new)
        phi = (fa_new - fb_new) / (fc_new - fb_new)
        iqi = (phi**2 < xi) & ((1 - phi) ** 2 < 1 - xi)
        t_iqi = fa_new / (fb_new - fa_new) * fc_new / (fb_new - fc_new) + (
            (c_new - a_new)
            / (b_new - a_new)
            * fa_new
            / (fc_new - fa_new)
            * fb_new
            / (fc_new - fb_new)
        )
        t_new = jnp.where(iqi, t_iqi, 0.5)
        t_new = jnp.clip(jnp.where(jnp.isfinite(t_new), t_new, 0.5), tl, 1 - tl)

        # Finished elements freeze: under vmap the loop runs until the slowest element
        # is done, and the others must not move (or divide by a zero-width bracket).
        keep = lambda new, old: jnp.where(done, old, new)  # noqa: E731
        return (
            keep(a_new, a),
            keep(b_new, b),
            keep(c_new, c),
            keep(fa_new, fa),
            keep(fb_new, fb),
            keep(fc_new, fc),
            keep(t_new, t),
            k + 1,
        )

    a, b, c, fa, fb, fc, t, k = lax.while_loop(cond, body, (a, b, c, fa, fb, fc, t, 0))
    y, fy = best(a, fa, b, fb)
    return y, fy, k, finished(a, fa, b, fb, c)
