"""Eight schools (Rubin 1981): the school effects integrated out by the Laplace marginal."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.stats import cauchy, norm

from ..laplace import gaussian, latent_gaussian_log_marginal
from ..logdensity import Model, positive, real
from ._base import Example

__all__ = ["eight_schools", "EIGHT_SCHOOLS_Y", "EIGHT_SCHOOLS_SIGMA"]

#: Estimated coaching effects of the eight schools (Rubin 1981; BDA3, Section 5.5).
EIGHT_SCHOOLS_Y = (28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0)
#: Their standard errors (known).
EIGHT_SCHOOLS_SIGMA = (15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0)

_LOG_2 = math.log(2.0)


def _log_prior(mu, tau):
    # mu ~ N(0, 5), tau ~ HalfCauchy(0, 5).
    return norm.logpdf(mu, 0.0, 5.0) + _LOG_2 + cauchy.logpdf(tau, 0.0, 5.0)


def eight_schools(seed: int = 0) -> Example:
    """Eight schools, non-centred by exact marginalisation: ``mu``, ``tau`` only.

    ``y_j ~ N(theta_j, sigma_j)`` with known ``sigma_j`` and school effects
    ``theta_j ~ N(mu, tau)``; priors ``mu ~ N(0, 5)``, ``tau ~ HalfCauchy(0, 5)``. The
    model integrates the eight ``theta_j`` out with
    :func:`~mcmc_customgrad.laplace.latent_gaussian_log_marginal` (prior covariance
    ``tau^2 I``, mean ``mu``, the :func:`~mcmc_customgrad.laplace.gaussian` likelihood with
    the vector ``sigma`` as its noise), which is exact for a Gaussian likelihood; the
    reference is the closed form ``sum_j log N(y_j | mu, sqrt(tau^2 + sigma_j^2))``. Both
    have the parameters ``mu`` (real) and ``tau`` (positive), so HMC never meets the
    funnel of the centred parameterisation. The per-observation log-likelihoods (for
    LOO) are the schools' marginals ``log p(y_j | mu, tau)``: one one-dimensional Laplace
    marginal per school (``vmap``) in the model, the closed form in the reference.

    Parameters
    ----------
    seed : int
        Unused (the data are the classic real data); accepted for a uniform interface.

    Returns
    -------
    Example
        ``(model, reference, data)`` with ``data = {"y", "sigma"}`` (no ``truth``).

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from mcmc_customgrad.models.eight_schools import eight_schools
    >>> model, reference, data = eight_schools()
    >>> u = model.to_unconstrained({"mu": 4.0, "tau": 3.0})
    >>> lp, g = jax.jit(jax.value_and_grad(model.logdensity))(u)
    >>> lp_ref, g_ref = jax.jit(jax.value_and_grad(reference.logdensity))(u)
    >>> round(float(lp), 6), round(float(lp_ref), 6)
    (-34.300077, -34.300077)
    >>> bool(jnp.allclose(g, g_ref, rtol=1e-10))
    True
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ValueError(f"eight_schools: seed must be an integer, got {seed!r}.")
    y = jnp.asarray(EIGHT_SCHOOLS_Y)
    sigma = jnp.asarray(EIGHT_SCHOOLS_SIGMA)
    n = y.shape[0]
    likelihood = gaussian(y)

    def _one_school(y_j, sigma_j, mu, tau):
        # log p(y_j | mu, tau) by a one-dimensional Laplace marginal (exact: Gaussian).
        return latent_gaussian_log_marginal(
            lambda theta, s: norm.logpdf(y_j, theta, s),
            jnp.reshape(tau**2, (1, 1)),
            jnp.reshape(mu, (1,)),
            sigma_j,
            mean=mu,
        )

    def log_likelihood(params):
        mu, tau = params["mu"], params["tau"]
        return jax.vmap(_one_school, in_axes=(0, 0, None, None))(y, sigma, mu, tau)

    def logdensity(params):
        mu, tau = params["mu"], params["tau"]
        cov = tau**2 * jnp.eye(n, dtype=y.dtype)
        # Newton starts at the prior mean (a function of the position alone), which also
        # spares the Cholesky of cov needed by any other start.
        theta0 = jnp.full((n,), mu, dtype=y.dtype)
        marginal = latent_gaussian_log_marginal(likelihood, cov, theta0, sigma, mean=mu)
        return _log_prior(mu, tau) + marginal

    def log_likelihood_ref(params):
        mu, tau = params["mu"], params["tau"]
        return norm.logpdf(y, mu, jnp.sqrt(tau**2 + sigma**2))

    def logdensity_ref(params):
        return _log_prior(params["mu"], params["tau"]) + jnp.sum(log_likelihood_ref(params))

    spec = {"mu": real(), "tau": positive()}
    return Example(
        Model(logdensity, spec, log_likelihood),
        Model(logdensity_ref, spec, log_likelihood_ref),
        {"y": y, "sigma": sigma},
    )
