"""Seed 000's convex-conjugate density, in ``d`` dimensions and for any ``p > 1``."""

from __future__ import annotations

import jax.numpy as jnp
from jax.scipy.stats import norm

from .. import implicit
from .._args import check_int
from ..logdensity import Model, real
from ._base import Example

__all__ = ["conjugate", "conjugate_inner"]


def conjugate_inner(y, x, p):
    """``g(y; x) = sum |y|^p / p - x.y``, whose ``-min_y`` is the conjugate ``sum |x|^q / q``."""
    return jnp.sum(jnp.abs(y) ** p / p - x * y)


def conjugate(d: int = 1, p: float = 3.0, seed: int = 0, solver=None) -> Example:
    """Seed 000's density ``sum N(x_i) + N(f(x))`` with ``f(x) = -min_y g(y; x)``.

    The model computes ``f`` with :func:`~mcmc_customgrad.min_value` from the seed's cold
    start ``y0 = 0``; the reference uses the closed form ``f(x) = sum |x|^q / q`` with
    ``1/p + 1/q = 1``. There are no data; ``seed`` is accepted for a uniform interface.

    Parameters
    ----------
    d : int
        Dimension of ``x``.
    p : float
        Exponent, ``p > 1``.
    seed : int
        Unused (no data to simulate).
    solver : Solver, optional
        Inner solver (default: the library's, Newton at this size).

    Returns
    -------
    Example
        ``(model, reference, data)`` with one parameter ``x`` of shape ``(d,)``.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import mcmc_customgrad as mcg
    >>> model, reference, _ = mcg.models.conjugate(d=2)
    >>> u = jnp.array([0.31415, -1.0])
    >>> bool(jnp.allclose(jax.grad(model.logdensity)(u), jax.grad(reference.logdensity)(u)))
    True
    """
    check_int("conjugate", "d", d)
    if not p > 1:
        raise ValueError(f"conjugate: p must be > 1, got {p!r}.")
    p = float(p)
    q = p / (p - 1)
    y0 = jnp.zeros(d)

    def f_solved(x):
        return -implicit.min_value(conjugate_inner, y0, x, p, solver=solver)

    def f_closed(x):
        return jnp.sum(jnp.abs(x) ** q / q)

    def density(f):
        return lambda params: jnp.sum(norm.logpdf(params["x"])) + norm.logpdf(f(params["x"]))

    spec = {"x": real(shape=(d,))}
    return Example(Model(density(f_solved), spec), Model(density(f_closed), spec), {})
