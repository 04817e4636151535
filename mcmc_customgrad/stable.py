"""Numerically careful pieces a log-density author needs (seed 001).

Only what earns its place: ``log1pexp`` (softplus) and ``log1mexp`` appear in the
log-Jacobians of positive and interval transforms; ``safe_where`` is the "double where"
that keeps a NaN in an unused branch out of gradients; ``x_over_one_plus_sqrt`` is seed
001's example of fixing a derivative convention at a boundary.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["log1pexp", "log1mexp", "safe_where", "x_over_one_plus_sqrt"]


@jax.custom_jvp
def log1pexp(x):
    """``log(1 + exp(x))`` without overflow, with the stable derivative ``sigmoid(x)``.

    Autodiff of ``log(1 + exp(x))`` gives ``nan`` at ``x = 100`` (``inf / inf``); this
    gives exactly 1.

    Examples
    --------
    >>> import jax
    >>> from mcmc_customgrad.stable import log1pexp
    >>> float(log1pexp(100.0)), float(jax.grad(log1pexp)(100.0))
    (100.0, 1.0)
    """
    x = jnp.asarray(x)
    return jnp.logaddexp(jnp.zeros_like(x), x)


@log1pexp.defjvp
def _log1pexp_jvp(primals, tangents):
    (x,), (x_dot,) = primals, tangents
    # d/dx log(1 + e^x) = 1 - 1/(1 + e^x) = sigmoid(x); jax.nn.sigmoid is stable both ways.
    return log1pexp(x), jax.nn.sigmoid(x) * x_dot


def log1mexp(x):
    """``log(1 - exp(-x))`` for ``x > 0``, accurate for small and large ``x``.

    Uses ``log(-expm1(-x))`` below ``log 2`` and ``log1p(-exp(-x))`` above (Mächler,
    2012); the naive form loses all digits near 0 and underflows for large ``x``.

    Examples
    --------
    >>> from mcmc_customgrad.stable import log1mexp
    >>> round(float(log1mexp(1e-20)), 6), float(log1mexp(50.0))
    (-46.051702, -1.9287498479639178e-22)
    """
    x = jnp.asarray(x)
    small = x < jnp.log(2.0)
    # Both branches are finite for x > 0; the inner where keeps the unused one finite.
    xs = jnp.where(small, x, 1.0)
    xl = jnp.where(small, 1.0, x)
    return jnp.where(small, jnp.log(-jnp.expm1(-xs)), jnp.log1p(-jnp.exp(-xl)))


def safe_where(condition, fn, x, fill):
    """``where(condition, fn(x), fill)`` whose gradient is finite where ``condition`` is False.

    ``jnp.where(c, fn(x), fill)`` has a NaN gradient wherever ``fn`` is NaN or infinite
    at ``x``, even where its value is discarded, because ``0 * nan = nan``. Evaluating
    ``fn`` at a safe stand-in there (the "double where") avoids that.

    Parameters
    ----------
    condition : bool array
        Where to use ``fn(x)``.
    fn : callable
        Element-wise function, possibly undefined where ``condition`` is False.
    x : array
        Input.
    fill : array or scalar
        Value where ``condition`` is False. ``fn`` is evaluated there at ``fill`` too,
        so ``fn(fill)`` must be finite.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from mcmc_customgrad.stable import safe_where
    >>> f = lambda x: safe_where(x > 0, jnp.log, x, 1.0)
    >>> jax.grad(lambda x: jnp.sum(f(x)))(jnp.array([2.0, -1.0])).tolist()
    [0.5, 0.0]
    """
    x_safe = jnp.where(condition, x, fill)
    return jnp.where(condition, fn(x_safe), fill)


@jax.custom_jvp
def x_over_one_plus_sqrt(x):
    """``x / (1 + sqrt(x))`` on ``x >= 0``, with the one-sided derivative 1 at ``x = 0``.

    Autodiff gives ``nan`` at 0 (``sqrt``'s infinite slope times 0); the function itself
    is smooth there with derivative ``(sqrt(x) + 2) / (2 (sqrt(x) + 1)^2)`` (seed 001).

    Examples
    --------
    >>> import jax
    >>> from mcmc_customgrad.stable import x_over_one_plus_sqrt
    >>> float(jax.grad(x_over_one_plus_sqrt)(0.0))
    1.0
    """
    return x / (1 + jnp.sqrt(x))


@x_over_one_plus_sqrt.defjvp
def _x_over_one_plus_sqrt_jvp(primals, tangents):
    (x,), (x_dot,) = primals, tangents
    s = jnp.sqrt(x)
    return x_over_one_plus_sqrt(x), (s + 2) / (2 * (s + 1) ** 2) * x_dot
