"""An equilibrium inside a likelihood: Newton's square root as a fixed point (seed 001)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax.scipy.stats import expon, norm

from .. import implicit
from .._args import check_int
from ..logdensity import Model, positive
from ._base import Example

__all__ = ["equilibrium", "newton_map"]


def newton_map(x, a):
    """Newton's map for ``x^2 = a``; its fixed point is ``sqrt(a)``."""
    return 0.5 * (x + a / x)


def equilibrium(num_obs: int = 20, seed: int = 0, solver=None) -> Example:
    """Observations of an equilibrium level, ``y_i ~ N(x*(a), sigma)``, ``x* = T(x*; a)``.

    ``x*(a)`` is the fixed point of Newton's square-root map, found by
    :func:`~mcmc_customgrad.fixed_point` from ``x0 = max(a, 1)``; the reference uses the
    closed-form equilibrium ``sqrt(a)``. Priors: ``a ~ Exponential(1/4)``,
    ``sigma ~ Exponential(1)``.

    Returns
    -------
    Example
        ``(model, reference, data)``; ``data`` has ``y`` and ``truth``.

    Examples
    --------
    >>> import jax
    >>> import mcmc_customgrad as mcg
    >>> model, reference, data = mcg.models.equilibrium()
    >>> u = model.to_unconstrained(data["truth"])
    >>> bool(jax.numpy.allclose(jax.grad(model.logdensity)(u), jax.grad(reference.logdensity)(u)))
    True
    """
    check_int("equilibrium", "num_obs", num_obs)
    rng = np.random.default_rng(seed)
    truth = {"a": jnp.asarray(2.0), "sigma": jnp.asarray(0.3)}
    y = jnp.asarray(np.sqrt(2.0) + rng.normal(0.0, 0.3, num_obs))

    def x_solved(a):
        return implicit.fixed_point(newton_map, jnp.maximum(a, 1.0), a, solver=solver)

    def make(level):
        def log_likelihood(params):
            return norm.logpdf(y, level(params["a"]), params["sigma"])

        def logdensity(params):
            prior = expon.logpdf(params["a"], scale=4.0) + expon.logpdf(params["sigma"])
            return prior + jnp.sum(log_likelihood(params))

        return logdensity, log_likelihood

    spec = {"a": positive(), "sigma": positive()}
    ld, ll = make(x_solved)
    ld_ref, ll_ref = make(jnp.sqrt)
    return Example(Model(ld, spec, ll), Model(ld_ref, spec, ll_ref), {"y": y, "truth": truth})
