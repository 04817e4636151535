"""A BYM2 disease map on a lattice: the area effects integrated out by the sparse Laplace.

Two members share the graph, the priors and the parameters (``mu``, ``sigma``, ``phi``):

- :func:`disease_map`: Poisson counts against expected counts, the classic disease map.
  Its reference is the full joint model (the ``2n - 1`` latent coordinates sampled
  too); the Laplace approximation is close, not exact, so the two agree approximately.
- :func:`disease_map_gaussian`: estimated log relative risks with known standard errors
  (a Fay-Herriot small-area model with BYM2 effects). The Laplace marginal is exact
  there, and its reference is the closed form on the same parameters: it is in
  :data:`~mcmc_customgrad.models.REGISTRY`, so the full validation protocol runs on it.

:func:`disease_map_latents` draws the area effects given the hyperparameters, for
posterior draws after the run or as ``generated_quantities`` of
:func:`~mcmc_customgrad.sample`.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.stats import beta as beta_dist
from jax.scipy.stats import multivariate_normal, norm

from .._args import check_int
from ..gmrf import _graph, _scaled_icar, bym2, gmrf_latent_draws, gmrf_log_marginal
from ..laplace import gaussian, poisson
from ..logdensity import Model, interval, positive, real
from ._base import Example

__all__ = [
    "disease_map",
    "disease_map_gaussian",
    "disease_map_latents",
    "lattice_edges",
    "MAX_AREAS",
]

_TRUTH = {"mu": 0.1, "sigma": 0.6, "phi": 0.7}
_LOG_2 = math.log(2.0)


def lattice_edges(rows: int, cols: int) -> np.ndarray:
    """The edges of a ``rows x cols`` lattice (4-neighbour), areas in row-major order.

    Parameters
    ----------
    rows, cols : int
        Lattice size, each at least 1, ``rows * cols`` at least 2.

    Returns
    -------
    (m, 2) int array
        One row per edge, ``m = rows (cols - 1) + (rows - 1) cols``.

    Examples
    --------
    >>> from mcmc_customgrad.models.disease_map import lattice_edges
    >>> lattice_edges(2, 2).tolist()
    [[0, 1], [2, 3], [0, 2], [1, 3]]
    """
    check_int("lattice_edges", "rows", rows, 1)
    check_int("lattice_edges", "cols", cols, 1)
    if rows * cols < 2:
        raise ValueError(f"lattice_edges: the lattice needs two areas, got {rows} x {cols}.")
    index = np.arange(rows * cols).reshape(rows, cols)
    across = np.stack([index[:, :-1].ravel(), index[:, 1:].ravel()], axis=1)
    down = np.stack([index[:-1, :].ravel(), index[1:, :].ravel()], axis=1)
    return np.concatenate([across, down]).astype(np.int64)


def _log_prior(mu, sigma, phi):
    # The Stan BYM2 case study's priors (Morris et al. 2019): mu ~ N(0, 1),
    # sigma ~ HalfNormal(1), phi ~ Beta(1/2, 1/2).
    return (
        norm.logpdf(mu, 0.0, 1.0)
        + _LOG_2
        + norm.logpdf(sigma, 0.0, 1.0)
        + beta_dist.logpdf(phi, 0.5, 0.5)
    )


_SPEC = {"mu": real(), "sigma": positive(), "phi": interval(0.0, 1.0)}


def _structured(edges):
    """The scaled ICAR's constrained covariance ``S = pinv(R*)`` and a square root ``B``.

    Dense (for the references and the simulation, at a few hundred areas): ``B B' = S``,
    ``B`` of shape ``(n, n - c)`` for ``c`` connected parts.
    """
    key = _graph("disease_map", edges)
    pattern, scaled, _, _, count, _, _ = _scaled_icar(key)
    n = pattern.n
    R = np.zeros((n, n))
    np.add.at(R, (pattern.rows, pattern.cols), scaled)
    lam, vec = np.linalg.eigh(R)
    keep = np.argsort(lam)[count:]  # the c zero eigenvalues are the smallest
    B = vec[:, keep] / np.sqrt(lam[keep])
    return B @ B.T, B


#: Largest map the builders make: the references and the simulation use a dense square
#: root of the structured covariance (an ``n x n`` eigendecomposition).
MAX_AREAS = 2500


def _simulate(where, rows, cols, seed):
    check_int(where, "rows", rows, 2)
    check_int(where, "cols", cols, 2)
    if rows * cols > MAX_AREAS:
        raise ValueError(
            f"{where}: {rows} x {cols} = {rows * cols} areas is more than {MAX_AREAS}: the "
            "reference and the simulated data use a dense square root of the structured "
            "covariance. For a larger map, build the model from mcg.gmrf.bym2 and "
            "mcg.gmrf_log_marginal directly (the sparse marginal scales to 10^5 latents)."
        )
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ValueError(f"{where}: seed must be an integer, got {seed!r}.")
    edges = lattice_edges(int(rows), int(cols))
    n = int(rows) * int(cols)
    S, B = _structured(edges)
    rng = np.random.default_rng(seed)
    expected = rng.uniform(5.0, 50.0, n)
    sigma, phi = _TRUTH["sigma"], _TRUTH["phi"]
    u = B @ rng.standard_normal(B.shape[1])
    b = sigma * (math.sqrt(1.0 - phi) * rng.standard_normal(n) + math.sqrt(phi) * u)
    return edges, n, S, B, expected, b, rng


def _marginal(edges, n, log_likelihood, params, *args):
    """The Laplace marginal over ``x = (b, u)``, ``b`` centred on ``mu``."""
    mu, sigma, phi = params["mu"], params["sigma"], params["phi"]
    Q = bym2(edges, sigma**-2, phi)
    mean = jnp.concatenate([jnp.full(n, mu), jnp.zeros(n, jnp.result_type(mu))])
    return gmrf_log_marginal(log_likelihood, Q, jnp.zeros(2 * n), *args, mean=mean)


def disease_map(rows: int = 8, cols: int = 8, seed: int = 0) -> Example:
    """A BYM2 disease map: Poisson counts on a lattice, the area effects integrated out.

    ``y_i ~ Poisson(E_i exp(mu + b_i))`` for the ``n = rows x cols`` areas of a lattice
    (4-neighbour), with expected counts ``E_i`` and BYM2 area effects ``b``
    (:func:`~mcmc_customgrad.gmrf.bym2`: ``b = sigma (sqrt(1 - phi) v + sqrt(phi) u)``,
    ``v`` independent, ``u`` the scaled ICAR field, summing to zero). Priors as in the
    Stan case study (Morris et al. 2019): ``mu ~ N(0, 1)``, ``sigma ~ HalfNormal(1)``,
    ``phi ~ Beta(1/2, 1/2)``. Simulated at ``mu = 0.1``, ``sigma = 0.6``, ``phi = 0.7``
    with ``E_i`` uniform on (5, 50).

    The model has the parameters ``mu`` (real), ``sigma`` (positive) and ``phi`` (in
    (0, 1)) and integrates the ``2n`` latents ``(b, u)`` out with
    :func:`~mcmc_customgrad.gmrf_log_marginal` (sparse Newton, ``u``'s sum-to-zero
    constraint exact, adjoint gradient). Recover the area effects afterwards with
    :func:`disease_map_latents`.

    The reference is *not* the same density: it is the full joint model a user would
    sample with plain NUTS, non-centred, with parameters ``mu``, ``sigma``, ``phi``,
    ``v`` (``n`` standard normals) and ``eta`` (``n - 1`` standard normals,
    ``u = B eta`` with ``B B'`` the scaled ICAR's constrained covariance). Its flat
    vector starts with the model's three coordinates. Compare the two through the
    posteriors of ``mu``, ``sigma`` and ``phi``, and only approximately: the Laplace
    approximation of a Poisson marginal is not exact (with these expected counts its
    error is far below the posterior spread; ``docs/laplace.md`` has the measured
    comparison). :func:`disease_map_gaussian` is the exact member.

    Neither density has per-observation log-likelihoods: the marginal's terms do not
    separate by area.

    Parameters
    ----------
    rows, cols : int
        Lattice size, each at least 2, at most :data:`MAX_AREAS` areas in all.
    seed : int
        Seed of the expected counts, the effects and the counts.

    Returns
    -------
    Example
        ``(model, reference, data)``; ``data`` has ``edges``, ``expected``, ``y`` (int
        counts), ``b`` (the simulated effects), ``likelihood`` (``"poisson"``) and
        ``truth``.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from mcmc_customgrad.models.disease_map import disease_map
    >>> model, reference, data = disease_map(rows=3, cols=3)
    >>> model.names, reference.names, reference.dim
    (('mu', 'sigma', 'phi'), ('mu', 'sigma', 'phi', 'v', 'eta'), 20)
    >>> u = model.to_unconstrained(data["truth"])
    >>> bool(jnp.isfinite(jax.jit(model.logdensity)(u)))
    True
    """
    where = "disease_map"
    edges, n, _, B, expected, b, rng = _simulate(where, rows, cols, seed)
    y = rng.poisson(expected * np.exp(_TRUTH["mu"] + b))
    log_e = jnp.log(jnp.asarray(expected))
    counts = poisson(jnp.asarray(y), log_e)
    B = jnp.asarray(B)

    def log_likelihood(x):
        return jnp.sum(counts(x[:n]))

    def logdensity(params):
        prior = _log_prior(params["mu"], params["sigma"], params["phi"])
        return prior + _marginal(edges, n, log_likelihood, params)

    def logdensity_ref(params):
        mu, sigma, phi, v, eta = (params[k] for k in ("mu", "sigma", "phi", "v", "eta"))
        effects = sigma * (jnp.sqrt(1.0 - phi) * v + jnp.sqrt(phi) * (B @ eta))
        latent = jnp.sum(norm.logpdf(v)) + jnp.sum(norm.logpdf(eta))
        return _log_prior(mu, sigma, phi) + latent + jnp.sum(counts(mu + effects))

    spec_ref = {**_SPEC, "v": real(shape=(n,)), "eta": real(shape=(B.shape[1],))}
    data = {
        "edges": edges,
        "expected": jnp.asarray(expected),
        "y": jnp.asarray(y),
        "b": jnp.asarray(b),
        "likelihood": "poisson",
        "truth": {k: jnp.asarray(v) for k, v in _TRUTH.items()},
    }
    return Example(Model(logdensity, _SPEC), Model(logdensity_ref, spec_ref), data)


def disease_map_gaussian(rows: int = 8, cols: int = 8, seed: int = 0) -> Example:
    """BYM2 small-area model: log relative risks with known standard errors, exact.

    ``y_i ~ N(mu + b_i, s_i^2)`` with known ``s_i = 1 / sqrt(E_i)`` (the standard error
    of a log standardised ratio with ``E_i`` expected cases) and the BYM2 effects, priors
    and simulation of :func:`disease_map`. The model integrates ``(b, u)`` out with
    :func:`~mcmc_customgrad.gmrf_log_marginal`, exact for a Gaussian likelihood; the
    reference is the closed form on the same parameters, ``log N(y; mu 1, sigma^2
    ((1 - phi) I + phi S) + diag(s^2))`` with ``S`` the scaled ICAR's constrained
    covariance (dense). Values and gradients agree to rounding.

    Parameters
    ----------
    rows, cols : int
        Lattice size, each at least 2, at most :data:`MAX_AREAS` areas in all.
    seed : int
        Seed of the standard errors, the effects and the estimates.

    Returns
    -------
    Example
        ``(model, reference, data)``; ``data`` has ``edges``, ``expected``, ``se``,
        ``y``, ``b``, ``likelihood`` (``"gaussian"``) and ``truth``.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from mcmc_customgrad.models.disease_map import disease_map_gaussian
    >>> model, reference, data = disease_map_gaussian(rows=3, cols=4)
    >>> u = model.to_unconstrained(data["truth"])
    >>> lp, g = jax.jit(jax.value_and_grad(model.logdensity))(u)
    >>> lp_ref, g_ref = jax.jit(jax.value_and_grad(reference.logdensity))(u)
    >>> bool(jnp.isclose(lp, lp_ref, rtol=1e-10)), bool(jnp.allclose(g, g_ref, rtol=1e-8))
    (True, True)
    """
    where = "disease_map_gaussian"
    edges, n, S, _, expected, b, rng = _simulate(where, rows, cols, seed)
    se = 1.0 / np.sqrt(expected)
    y = _TRUTH["mu"] + b + se * rng.standard_normal(n)
    estimates = gaussian(jnp.asarray(y))
    se_j, S, y_j = jnp.asarray(se), jnp.asarray(S), jnp.asarray(y)

    def log_likelihood(x):
        return jnp.sum(estimates(x[:n], se_j))

    def logdensity(params):
        prior = _log_prior(params["mu"], params["sigma"], params["phi"])
        return prior + _marginal(edges, n, log_likelihood, params)

    def logdensity_ref(params):
        mu, sigma, phi = params["mu"], params["sigma"], params["phi"]
        cov = sigma**2 * ((1.0 - phi) * jnp.eye(n) + phi * S) + jnp.diag(se_j**2)
        marginal = multivariate_normal.logpdf(y_j, jnp.full(n, mu), cov)
        return _log_prior(mu, sigma, phi) + marginal

    data = {
        "edges": edges,
        "expected": jnp.asarray(expected),
        "se": se_j,
        "y": y_j,
        "b": jnp.asarray(b),
        "likelihood": "gaussian",
        "truth": {k: jnp.asarray(v) for k, v in _TRUTH.items()},
    }
    return Example(Model(logdensity, _SPEC), Model(logdensity_ref, _SPEC), data)


def disease_map_latents(example_or_data, mu, sigma, phi, key, num_draws=1, full_output=False):
    """Draws of the area effects ``b | mu, sigma, phi, y`` from their Laplace Gaussian.

    For each ``(mu, sigma, phi)`` (posterior draws of :func:`disease_map` or
    :func:`disease_map_gaussian`, say) draws the ``2n`` latents ``(b, u)`` with
    :func:`~mcmc_customgrad.gmrf_latent_draws` (the model's graph, likelihood and Newton
    start; one sparse factorisation per element) and returns ``b``. Mixed over the
    posterior of the hyperparameters this approximates the posterior of ``b`` (exactly
    for the Gaussian member). The relative risks are ``exp(mu + b)``.

    Works on posterior draws after a run (batched, below) and inside
    :func:`~mcmc_customgrad.sample` as a generated quantity, per draw::

        def gq(params, key):
            b = disease_map_latents(data, params["mu"], params["sigma"], params["phi"], key)
            return {"b": b[0]}

    Parameters
    ----------
    example_or_data : Example or dict
        What :func:`disease_map` or :func:`disease_map_gaussian` returned, or its
        ``data``.
    mu, sigma, phi : float or arrays
        Hyperparameters; broadcast together to a batch shape ``T`` (e.g. ``(chains,
        draws)`` from a run's posterior).
    key : jax.random key
        Split once per element of the batch.
    num_draws : int
        Draws of ``b`` per ``(mu, sigma, phi)``.
    full_output : bool
        If True also return the :class:`~mcmc_customgrad.gmrf.SparseLatentPosterior`
        (mode, marginal variances and solver info of all ``2n`` latents ``(b, u)``) of
        each element, with leading shape ``T``.

    Returns
    -------
    draws : array of shape ``T + (num_draws, n)``
        NaN where the Newton solve failed. With ``full_output``, ``(draws, posterior)``.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from mcmc_customgrad.models.disease_map import disease_map, disease_map_latents
    >>> example = disease_map(rows=3, cols=3)
    >>> mu, sigma, phi = 0.1, jnp.array([[0.5, 0.7]]), 0.6   # 1 chain x 2 draws
    >>> b = disease_map_latents(example, mu, sigma, phi, jax.random.key(0), num_draws=4)
    >>> b.shape
    (1, 2, 4, 9)
    """
    where = "disease_map_latents"
    data = example_or_data.data if isinstance(example_or_data, Example) else example_or_data
    needed = {"edges", "y", "expected", "likelihood"}
    if not (isinstance(data, dict) and needed <= set(data)):
        raise ValueError(
            f"{where}: example_or_data must be what disease_map or disease_map_gaussian "
            f"returned or its data dict (with {sorted(needed)}), got "
            f"{type(example_or_data).__name__}."
        )
    check_int(where, "num_draws", num_draws, 1)
    if not isinstance(full_output, bool):
        raise TypeError(f"{where}: full_output must be True or False, got {full_output!r}.")
    kind = data["likelihood"]
    if kind not in ("poisson", "gaussian"):
        raise ValueError(
            f"{where}: data['likelihood'] must be 'poisson' or 'gaussian', got {kind!r}."
        )
    edges = np.asarray(data["edges"])
    n = _graph(where, edges)[0]
    y, expected = jnp.asarray(data["y"]), jnp.asarray(data["expected"], dtype=float)
    if y.shape != (n,) or expected.shape != (n,):
        raise ValueError(
            f"{where}: data['y'] and data['expected'] must have shape ({n},), one per area "
            f"of the graph, got {tuple(y.shape)} and {tuple(expected.shape)}."
        )
    if kind == "poisson":
        poisson(y)  # checks the counts (eagerly, once)
        extra = jnp.log(expected)
    else:
        extra = jnp.asarray(data["se"], dtype=float)
    mu, sigma, phi = jnp.broadcast_arrays(*(jnp.asarray(v, dtype=float) for v in (mu, sigma, phi)))
    batch = mu.shape
    keys = jax.random.split(key, math.prod(batch))
    flat = (mu.reshape(-1), sigma.reshape(-1), phi.reshape(-1))
    out = _latent_draws(keys, _Graph(edges), kind, y, extra, *flat, int(num_draws))
    draws, posterior = jax.tree.map(lambda v: v.reshape(batch + v.shape[1:]), out)
    return (draws, posterior) if full_output else draws


class _Graph:
    """Edges as a hashable static argument (by their bytes)."""

    def __init__(self, edges):
        self.edges = np.ascontiguousarray(edges)
        self._key = (self.edges.shape, self.edges.tobytes())

    def __eq__(self, other):
        return isinstance(other, _Graph) and other._key == self._key

    def __hash__(self):
        return hash(self._key)


@functools.partial(jax.jit, static_argnames=("graph", "kind", "num_draws"))
def _latent_draws(keys, graph, kind, y, extra, mu, sigma, phi, num_draws):
    # One compiled program per (batch size, graph, likelihood, num_draws). The likelihood
    # factories are called on traced data here: disease_map_latents has checked them.
    n = y.shape[0]
    if kind == "poisson":
        counts = poisson(y, extra)

        def log_likelihood(x):
            return jnp.sum(counts(x[:n]))
    else:
        estimates = gaussian(y)

        def log_likelihood(x):
            return jnp.sum(estimates(x[:n], extra))

    def one(k, m, s, p):
        Q = bym2(graph.edges, s**-2, p)
        mean = jnp.concatenate([jnp.full(n, m), jnp.zeros(n, m.dtype)])
        draws, post = gmrf_latent_draws(
            k,
            log_likelihood,
            Q,
            jnp.zeros(2 * n),
            mean=mean,
            num_draws=num_draws,
            full_output=True,
        )
        # The field is x = (mu + b, u) (the intercept is its prior mean): return b.
        return draws[:, :n] - m, post._replace(mean=post.mean - mean)

    return jax.lax.map(lambda args: one(*args), (keys, mu, sigma, phi))
