"""Radial velocity of a star on a Keplerian orbit: Kepler's equation inside a likelihood."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.stats import norm

from .. import implicit
from .._args import check_int
from ..logdensity import Model, interval, positive
from ._base import Example

__all__ = ["kepler", "eccentric_anomaly", "eccentric_anomaly_reference", "radial_velocity"]

TWO_PI = 2 * np.pi


def _lognormal_logpdf(x, s, scale):
    return norm.logpdf(jnp.log(x), jnp.log(scale), s) - jnp.log(x)


def _kepler_residual(E, M, e):
    return E - e * jnp.sin(E) - M


def eccentric_anomaly(M, e, solver=None):
    """``E`` with ``E - e sin E = M``, one scalar Newton solve per element (vmapped).

    Differentiable in ``M`` and ``e`` by the implicit function theorem. The start
    ``M + e sin M`` is within ``e^2`` of the root.
    """

    def one(M, e):
        return implicit.root(_kepler_residual, M + e * jnp.sin(M), M, e, solver=solver)

    return jax.vmap(one, in_axes=(0, None))(M, e)


@jax.custom_jvp
def eccentric_anomaly_reference(M, e):
    """The reference: a fixed number of Newton steps and the hand-derived derivative.

    ``dE/dM = 1 / (1 - e cos E)``, ``dE/de = sin E / (1 - e cos E)``.
    """

    def step(_, E):
        return E - _kepler_residual(E, M, e) / (1 - e * jnp.cos(E))

    return jax.lax.fori_loop(0, 40, step, M + e * jnp.sin(M))


@eccentric_anomaly_reference.defjvp
def _eccentric_anomaly_reference_jvp(primals, tangents):
    (M, e), (dM, de) = primals, tangents
    E = eccentric_anomaly_reference(M, e)
    return E, (dM + jnp.sin(E) * de) / (1 - e * jnp.cos(E))


def radial_velocity(t, params, anomaly):
    """Stellar radial velocity ``K (cos(nu + omega) + e cos omega)`` at times ``t``."""
    P, K, e, omega, phase = (params[k] for k in ("period", "amplitude", "ecc", "omega", "phase"))
    M = TWO_PI * t / P - phase
    E = anomaly(M, e)
    nu = 2 * jnp.arctan2(jnp.sqrt(1 + e) * jnp.sin(E / 2), jnp.sqrt(1 - e) * jnp.cos(E / 2))
    return K * (jnp.cos(nu + omega) + e * jnp.cos(omega))


def kepler(num_obs: int = 30, seed: int = 0, solver=None) -> Example:
    """Radial-velocity fit: period, amplitude, eccentricity, periapsis, phase, jitter.

    Observations ``v_i ~ N(rv(t_i), sqrt(sigma_i^2 + jitter^2))`` at ``num_obs`` random
    times over three periods. The model solves Kepler's equation with
    :func:`~mcmc_customgrad.root` (a ``while_loop`` Newton, one scalar solve per
    observation); the reference uses a fixed Newton iteration with the hand-derived
    derivative. Priors: log-normal period (around the truth) and amplitude, uniform
    eccentricity on ``(0, 0.9)``, uniform ``omega`` on ``(-pi, pi)`` and phase on
    ``(0, 2 pi)``, log-normal jitter.

    Returns
    -------
    Example
        ``(model, reference, data)``; ``data`` has ``t``, ``v``, ``sigma`` and ``truth``.

    Examples
    --------
    >>> import jax
    >>> import mcmc_customgrad as mcg
    >>> model, reference, data = mcg.models.kepler(num_obs=10)
    >>> u = model.to_unconstrained(data["truth"])
    >>> bool(jax.numpy.isclose(model.logdensity(u), reference.logdensity(u)))
    True
    """
    check_int("kepler", "num_obs", num_obs)
    rng = np.random.default_rng(seed)
    truth = {
        "period": 12.3,
        "amplitude": 8.0,
        "ecc": 0.35,
        "omega": 1.1,
        "phase": 2.0,
        "jitter": 0.6,
    }
    t = np.sort(rng.uniform(0.0, 3 * truth["period"], num_obs))
    sigma = rng.uniform(0.5, 1.5, num_obs)
    truth_j = {k: jnp.asarray(v) for k, v in truth.items()}
    v_true = np.asarray(radial_velocity(jnp.asarray(t), truth_j, eccentric_anomaly_reference))
    v = v_true + rng.normal(0.0, np.sqrt(sigma**2 + truth["jitter"] ** 2))
    t, v, sigma = jnp.asarray(t), jnp.asarray(v), jnp.asarray(sigma)

    def anomaly_solved(M, e):
        return eccentric_anomaly(M, e, solver=solver)

    def make(anomaly):
        def log_likelihood(params):
            scale = jnp.sqrt(sigma**2 + params["jitter"] ** 2)
            return norm.logpdf(v, radial_velocity(t, params, anomaly), scale)

        def logdensity(params):
            prior = (
                _lognormal_logpdf(params["period"], 0.2, truth["period"])
                + _lognormal_logpdf(params["amplitude"], 1.0, 5.0)
                + _lognormal_logpdf(params["jitter"], 1.0, 0.5)
                + 0.0 * (params["ecc"] + params["omega"] + params["phase"])  # uniform priors
            )
            return prior + jnp.sum(log_likelihood(params))

        return logdensity, log_likelihood

    spec = {
        "period": positive(),
        "amplitude": positive(),
        "ecc": interval(0.0, 0.9),
        "omega": interval(-np.pi, np.pi),
        "phase": interval(0.0, TWO_PI),
        "jitter": positive(),
    }
    ld, ll = make(anomaly_solved)
    ld_ref, ll_ref = make(eccentric_anomaly_reference)
    data = {"t": t, "v": v, "sigma": sigma, "truth": truth_j}
    return Example(Model(ld, spec, ll), Model(ld_ref, spec, ll_ref), data)
