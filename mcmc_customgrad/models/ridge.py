"""Bilevel ridge regression: the inner fit is found iteratively, the penalty is sampled."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax.scipy.stats import expon, norm

from .. import implicit
from .._args import check_int
from ..logdensity import Model, positive
from ._base import Example

__all__ = ["ridge", "ridge_loss"]


def ridge_loss(beta, lam, X, y):
    """``|X beta - y|^2 + lam |beta|^2``."""
    return jnp.sum((X @ beta - y) ** 2) + lam * jnp.sum(beta**2)


def ridge(
    num_train: int = 40, num_valid: int = 30, num_features: int = 5, seed: int = 0, solver=None
) -> Example:
    """Posterior of a ridge penalty and a noise scale from held-out data.

    The inner problem fits ``beta*(lam) = argmin |X beta - y|^2 + lam |beta|^2`` on the
    training data with :func:`~mcmc_customgrad.argmin` (an iterative solver); the
    held-out data follow ``y_v ~ N(X_v beta*(lam), sigma)``. The reference uses the
    closed form ``beta* = (X'X + lam I)^{-1} X'y``. Priors: ``lam ~ Exponential(1/10)``,
    ``sigma ~ Exponential(1)``.

    Returns
    -------
    Example
        ``(model, reference, data)``; ``data`` has ``X``, ``y``, ``X_valid``,
        ``y_valid``, ``beta`` (the simulating coefficients) and ``truth``.

    Examples
    --------
    >>> import jax
    >>> import mcmc_customgrad as mcg
    >>> model, reference, data = mcg.models.ridge()
    >>> u = model.to_unconstrained(data["truth"])
    >>> bool(jax.numpy.allclose(jax.grad(model.logdensity)(u), jax.grad(reference.logdensity)(u)))
    True
    """
    for name, value in (
        ("num_train", num_train),
        ("num_valid", num_valid),
        ("num_features", num_features),
    ):
        check_int("ridge", name, value)
    rng = np.random.default_rng(seed)
    beta = rng.normal(0.0, 1.0, num_features)
    X = rng.normal(size=(num_train, num_features))
    Xv = rng.normal(size=(num_valid, num_features))
    y = X @ beta + rng.normal(0.0, 0.5, num_train)
    yv = Xv @ beta + rng.normal(0.0, 0.5, num_valid)
    X, Xv, y, yv = map(jnp.asarray, (X, Xv, y, yv))
    beta0 = jnp.zeros(num_features)

    def fit_solved(lam):
        return implicit.argmin(ridge_loss, beta0, lam, X, y, solver=solver)

    def fit_closed(lam):
        return jnp.linalg.solve(X.T @ X + lam * jnp.eye(num_features), X.T @ y)

    def make(fit):
        def log_likelihood(params):
            return norm.logpdf(yv, Xv @ fit(params["lam"]), params["sigma"])

        def logdensity(params):
            prior = expon.logpdf(params["lam"], scale=10.0) + expon.logpdf(params["sigma"])
            return prior + jnp.sum(log_likelihood(params))

        return logdensity, log_likelihood

    spec = {"lam": positive(), "sigma": positive()}
    ld, ll = make(fit_solved)
    ld_ref, ll_ref = make(fit_closed)
    truth = {"lam": jnp.asarray(1.0), "sigma": jnp.asarray(0.5)}
    data = {"X": X, "y": y, "X_valid": Xv, "y_valid": yv, "beta": jnp.asarray(beta), "truth": truth}
    return Example(Model(ld, spec, ll), Model(ld_ref, spec, ll_ref), data)
