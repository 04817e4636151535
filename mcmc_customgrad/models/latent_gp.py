"""Latent Gaussian process with Poisson counts: the field integrated out by Laplace."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.stats import norm

from .._args import check_int
from ..laplace import laplace_latent_draws, latent_gaussian_log_marginal, poisson
from ..logdensity import Model, positive, real
from ._base import Example

__all__ = ["latent_gp_poisson", "latent_gp_poisson_latents", "se_kernel", "JITTER"]

#: Diagonal jitter added to every kernel matrix (absolute, in the units of ``f^2``): the
#: squared-exponential kernel on 30 points over [0, 10] with ``rho ~ 2`` is numerically
#: singular, and ``1e-6`` keeps its Cholesky factor (used by the reference) well defined in
#: float64 while changing the prior variance by ``1e-6 / alpha^2`` relative.
JITTER = 1e-6

_TRUTH = {"rho": 1.8, "alpha": 1.0}
_LOG_2 = math.log(2.0)


def se_kernel(x, rho, alpha, jitter=JITTER):
    """Squared-exponential covariance ``alpha^2 exp(-(x_i - x_j)^2 / (2 rho^2)) + jitter I``.

    Parameters
    ----------
    x : (n,) array
        Inputs.
    rho, alpha : float
        Length scale and marginal standard deviation (differentiable).
    jitter : float
        Added to the diagonal (see :data:`JITTER`).

    Returns
    -------
    (n, n) array

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from mcmc_customgrad.models.latent_gp import se_kernel
    >>> K = se_kernel(jnp.array([0.0, 1.0]), 1.0, 2.0, jitter=0.0)
    >>> [round(float(v), 6) for v in K[0]]
    [4.0, 2.426123]
    """
    x = jnp.asarray(x, dtype=float)
    d = x[:, None] - x[None, :]
    return alpha**2 * jnp.exp(-0.5 * (d / rho) ** 2) + jitter * jnp.eye(x.shape[0], dtype=x.dtype)


def _log_prior(rho, alpha):
    # rho ~ LogNormal(log 2, 0.5) (95% in about (0.75, 5.3)); alpha ~ HalfNormal(2).
    log_rho = jnp.log(rho)
    return norm.logpdf(log_rho, _LOG_2, 0.5) - log_rho + _LOG_2 + norm.logpdf(alpha, 0.0, 2.0)


def latent_gp_poisson(num_obs: int = 30, seed: int = 0) -> Example:
    """Poisson counts with a latent GP log-rate: length scale and amplitude only.

    ``y_i ~ Poisson(exp(f(x_i)))`` with ``f ~ GP(0, alpha^2 exp(-(x - x')^2 / (2 rho^2)))``
    (plus :data:`JITTER` on the diagonal) at ``num_obs`` sorted uniform inputs on
    ``[0, 10]``, simulated at ``rho = 1.8``, ``alpha = 1``. Priors: ``rho ~
    LogNormal(log 2, 0.5)``, ``alpha ~ HalfNormal(2)``.

    The model has the parameters ``rho`` and ``alpha`` (both positive) and integrates the
    field out with :func:`~mcmc_customgrad.laplace.latent_gaussian_log_marginal`
    (Newton from ``f = 0``, adjoint gradient): ``log p(rho, alpha) + log q(y | rho,
    alpha)``. Recover the field afterwards with :func:`latent_gp_poisson_latents`.

    The reference is *not* the same density on the same layout, unlike the other
    library models: it is the full joint model a user would sample with plain NUTS,
    non-centred, with parameters ``rho``, ``alpha`` and ``eta`` (``num_obs`` standard
    normals, ``f = L(rho, alpha) eta`` with ``L`` the Cholesky factor of the kernel). Its
    flat vector starts with the model's two coordinates, then ``eta``. Compare the two
    only through the posteriors of ``rho`` and ``alpha``, and only approximately: the
    Laplace approximation of the Poisson marginal is not exact. On the default data
    (``num_obs=30``, ``seed=0``) its error is far below the posterior spread: the
    log-marginal is off by about 0.016 nats at the truth; on a 50 x 50 grid over
    ``(log rho, log alpha)``, with the exact marginal by importance sampling from the
    Laplace Gaussian, the posterior means of ``rho`` (about 3.7) and ``alpha`` (about 1.8)
    differ by 0.6% and 0.5% of a posterior standard deviation, the standard deviations
    (1.5 and 0.71) by 0.2%, and the total variation distance of the two gridded posteriors
    is 0.005. NUTS runs of both (2 chains x 500 draws) agree within their Monte Carlo
    error.

    Far in the prior's tail (``alpha`` above about 9, more than four prior standard
    deviations out), the kernel matrix is so ill-conditioned (condition number ~ 1e9)
    that Newton may miss its default tolerance: the model is then NaN there (a rejected
    proposal). No such point was found in the sampler's initialisation box
    (``log rho``, ``log alpha`` in (-2, 2)).

    Neither model has per-observation log-likelihoods: the marginal's terms do not
    separate by observation, and the reference's conditional ones would not be the same
    quantity.

    Parameters
    ----------
    num_obs : int
        Number of counts (and latents), at least 2.
    seed : int
        Seed of the simulated inputs, field and counts.

    Returns
    -------
    Example
        ``(model, reference, data)``; ``data`` has ``x``, ``y`` (int counts), ``f`` (the
        simulated field) and ``truth`` (``rho``, ``alpha``).

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from mcmc_customgrad.models.latent_gp import latent_gp_poisson
    >>> model, reference, data = latent_gp_poisson(num_obs=10)
    >>> model.names, reference.names, reference.dim
    (('rho', 'alpha'), ('rho', 'alpha', 'eta'), 12)
    >>> u = model.to_unconstrained(data["truth"])
    >>> bool(jnp.isfinite(jax.jit(model.logdensity)(u)))
    True
    """
    where = "latent_gp_poisson"
    check_int(where, "num_obs", num_obs, 2)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ValueError(f"{where}: seed must be an integer, got {seed!r}.")
    num_obs = int(num_obs)
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(0.0, 10.0, num_obs))
    K_true = np.asarray(se_kernel(x, _TRUTH["rho"], _TRUTH["alpha"]))
    f_true = np.linalg.cholesky(K_true) @ rng.standard_normal(num_obs)
    y = rng.poisson(np.exp(f_true))
    x, y, f_true = jnp.asarray(x), jnp.asarray(y), jnp.asarray(f_true)
    likelihood = poisson(y)
    theta0 = jnp.zeros(num_obs, dtype=x.dtype)

    def logdensity(params):
        rho, alpha = params["rho"], params["alpha"]
        marginal = latent_gaussian_log_marginal(likelihood, se_kernel(x, rho, alpha), theta0)
        return _log_prior(rho, alpha) + marginal

    def logdensity_ref(params):
        rho, alpha, eta = params["rho"], params["alpha"], params["eta"]
        f = jnp.linalg.cholesky(se_kernel(x, rho, alpha)) @ eta
        return _log_prior(rho, alpha) + jnp.sum(norm.logpdf(eta)) + jnp.sum(likelihood(f))

    spec = {"rho": positive(), "alpha": positive()}
    spec_ref = {**spec, "eta": real(shape=(num_obs,))}
    truth = {k: jnp.asarray(v) for k, v in _TRUTH.items()}
    data = {"x": x, "y": y, "f": f_true, "truth": truth}
    return Example(Model(logdensity, spec), Model(logdensity_ref, spec_ref), data)


def latent_gp_poisson_latents(example_or_data, rho, alpha, key, num_draws=1, full_output=False):
    """Draws of the latent field ``f | rho, alpha, y`` from its Laplace Gaussian.

    For each ``(rho, alpha)`` (posterior draws of :func:`latent_gp_poisson`'s model, say)
    draws ``f`` from ``N(f*, (K^-1 + W)^-1)`` with
    :func:`~mcmc_customgrad.laplace.laplace_latent_draws`: the same kernel, jitter,
    likelihood and Newton start as the model's marginal. Mixed over the posterior of the
    hyperparameters this approximates the posterior of ``f`` (exactly so where the
    Laplace Gaussian is exact).

    Parameters
    ----------
    example_or_data : Example or dict
        What :func:`latent_gp_poisson` returned, or its ``data`` (``x`` and ``y`` are
        used).
    rho, alpha : float or arrays
        Hyperparameters; broadcast together to a batch shape ``S`` (e.g. ``(chains,
        draws)`` from a run's posterior).
    key : jax.random key
        Split once per element of the batch.
    num_draws : int
        Draws of ``f`` per ``(rho, alpha)``.
    full_output : bool
        If True also return the :class:`~mcmc_customgrad.laplace.LatentPosterior`
        (mode, covariance, solver info) of each element, with leading shape ``S``.

    Notes
    -----
    The batch runs as one compiled program, one element after another (``lax.map``:
    batching the Newton loops with ``vmap`` costs more compile time than it saves on a
    CPU); the program is kept per batch size, ``num_obs`` and ``num_draws``.

    Returns
    -------
    draws : array of shape ``S + (num_draws, num_obs)``
        NaN where the Newton solve failed. With ``full_output``, ``(draws, posterior)``.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from mcmc_customgrad.models.latent_gp import latent_gp_poisson, latent_gp_poisson_latents
    >>> example = latent_gp_poisson(num_obs=10)
    >>> rho, alpha = jnp.array([[1.5, 2.0, 2.5]]), 1.0   # 1 chain x 3 draws
    >>> f = latent_gp_poisson_latents(example, rho, alpha, jax.random.key(0), num_draws=4)
    >>> f.shape
    (1, 3, 4, 10)
    """
    where = "latent_gp_poisson_latents"
    data = example_or_data.data if isinstance(example_or_data, Example) else example_or_data
    if not (isinstance(data, dict) and "x" in data and "y" in data):
        raise ValueError(
            f"{where}: example_or_data must be what latent_gp_poisson returned or its data "
            f"dict (with 'x' and 'y'), got {type(example_or_data).__name__}."
        )
    check_int(where, "num_draws", num_draws, 1)
    if not isinstance(full_output, bool):
        raise TypeError(f"{where}: full_output must be True or False, got {full_output!r}.")
    x, y = jnp.asarray(data["x"], dtype=float), jnp.asarray(data["y"])
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(
            f"{where}: data['x'] and data['y'] must be 1-D of the same length, got shapes "
            f"{tuple(x.shape)} and {tuple(y.shape)}."
        )
    poisson(y)  # checks the counts (eagerly, once)
    rho, alpha = jnp.broadcast_arrays(jnp.asarray(rho, dtype=x.dtype), jnp.asarray(alpha, x.dtype))
    batch = rho.shape
    keys = jax.random.split(key, math.prod(batch))
    out = _latent_draws(keys, x, y, rho.reshape(-1), alpha.reshape(-1), int(num_draws))
    draws, posterior = jax.tree.map(lambda v: v.reshape(batch + v.shape[1:]), out)
    return (draws, posterior) if full_output else draws


@functools.partial(jax.jit, static_argnames=("num_draws",))
def _latent_draws(keys, x, y, rho, alpha, num_draws):
    # One compiled program per (batch size, num_obs, num_draws), reused across calls.
    # The Poisson factory is called on a traced y here: latent_gp_poisson_latents has
    # checked the counts eagerly already.
    likelihood = poisson(y)
    theta0 = jnp.zeros(x.shape[0], dtype=x.dtype)

    def one(k, r, a):
        return laplace_latent_draws(
            k, likelihood, se_kernel(x, r, a), theta0, num_draws=num_draws, full_output=True
        )

    return jax.lax.map(lambda args: one(*args), (keys, rho, alpha))
