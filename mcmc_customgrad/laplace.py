"""Embedded Laplace approximation: integrate a latent Gaussian field out, keep its gradient.

For a latent Gaussian model

    phi ~ p(phi),    theta | phi ~ N(mean(phi), cov(phi)),    y | theta, phi ~ p(y | theta, phi)

the marginal ``log p(y | phi) = log ∫ p(y | theta, phi) N(theta; mean, cov) dtheta`` is
replaced by its Laplace approximation at the mode ``theta*`` of the integrand, so that
NUTS runs on ``phi`` only (Stan's ``laplace_marginal``; Rasmussen & Williams, *GPML*,
Algorithms 3.1 and 5.1; Margossian et al. 2020, "Hamiltonian Monte Carlo using an
adjoint-differentiated Laplace approximation").

- :func:`latent_gaussian_log_marginal`: separable likelihoods (each term depends on one
  latent), Newton on the stable ``B = I + W^1/2 K W^1/2`` form, adjoint gradient.
- :func:`laplace_log_marginal`: any ``log_joint(theta, *args)``, dense Hessian.
- :func:`laplace_latent_draws`: draws of ``theta | phi, y`` from the Laplace Gaussian.
- :func:`poisson`, :func:`bernoulli`, :func:`gaussian`, :func:`negative_binomial`:
  ready-made per-observation log-likelihoods.

Derivatives are those of the implicit function theorem and the adjoint method (below):
the Newton iterations are never differentiated, and, unlike Blackjax's
``laplace_marginal_factory`` (30 L-BFGS steps, then silence), a mode that misses its
tolerance gives a NaN value (``info.converged == False``), which makes a sampler reject the
proposal; its gradient is zero, so no NaN reaches the gradients of other elements.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.linalg import cho_solve, solve_triangular
from jax.scipy.special import gammaln

from ._args import typeof
from .caches import LRU, lru_cache
from .implicit._base import SolverInfo, Status, max_norm
from .implicit._linesearch import backtrack
from .implicit.newton import Newton
from .implicit.root import (
    build_core,
    check_options,
    finish,
    jit_core,
    resolve,
    safe_linearisation,
    zero_tangent,
)

__all__ = [
    "laplace_log_marginal",
    "latent_gaussian_log_marginal",
    "laplace_latent_draws",
    "LatentPosterior",
    "poisson",
    "bernoulli",
    "gaussian",
    "negative_binomial",
]

_LOG_2PI = math.log(2.0 * math.pi)


class LatentPosterior(NamedTuple):
    """The Laplace Gaussian ``N(mean, cov)`` of ``theta | hyperparameters, y``.

    Attributes
    ----------
    mean : (n,) array
        The mode ``theta*`` (NaN when the solve failed).
    cov : (n, n) array
        ``(cov^-1 + W)^-1``, computed as ``K - K W^1/2 B^-1 W^1/2 K``.
    info : SolverInfo
        Diagnostics of the Newton solve for the mode.
    """

    mean: Any
    cov: Any
    info: Any


# ============================================================================ likelihoods


def _data(y, name, where):
    try:
        y = jnp.asarray(y)
    except TypeError as err:
        raise TypeError(f"{where}: {name} must be an array, got {type(y).__name__}.") from err
    if y.ndim != 1:
        raise ValueError(
            f"{where}: {name} must be a 1-D array (one entry per latent), got "
            f"shape {tuple(y.shape)}."
        )
    if y.dtype == bool:
        y = y.astype(jnp.int32)
    if not (jnp.issubdtype(y.dtype, jnp.integer) or jnp.issubdtype(y.dtype, jnp.floating)):
        raise TypeError(f"{where}: {name} must be real numbers, got dtype {y.dtype}.")
    return y


def _concrete(*xs):
    return not any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(xs))


def _not_counts(y):
    y = np.asarray(y)
    return bool(np.any((y < 0) | (y != np.round(y))))


def _as_float(x):
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(float)


def poisson(y, log_offset=0.0):
    """Poisson log-likelihood with log link, one count per latent.

    ``y_i ~ Poisson(exp(theta_i + log_offset_i))``.

    Parameters
    ----------
    y : (n,) array of non-negative integer counts
    log_offset : float or (n,) array
        Log exposure added to the linear predictor (data, not differentiated).

    Returns
    -------
    log_likelihood : callable
        ``log_likelihood(theta) -> (n,)`` per-observation log-probabilities.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from mcmc_customgrad.laplace import poisson
    >>> ll = poisson(jnp.array([0, 3]))
    >>> [round(float(v), 6) for v in ll(jnp.zeros(2))]
    [-1.0, -2.791759]
    """
    where = "mcmc_customgrad.laplace.poisson"
    y = _data(y, "y", where)
    if _concrete(y) and _not_counts(y):
        raise ValueError(f"{where}: y must be non-negative integer counts.")
    y = _as_float(y)
    offset = _as_float(log_offset)
    log_factorial = gammaln(y + 1)

    def log_likelihood(theta):
        eta = theta + offset
        return y * eta - jnp.exp(eta) - log_factorial

    return log_likelihood


def bernoulli(y):
    """Bernoulli log-likelihood with logit link: ``P(y_i = 1) = sigmoid(theta_i)``.

    Parameters
    ----------
    y : (n,) array of 0s and 1s

    Returns
    -------
    log_likelihood : callable
        ``log_likelihood(theta) -> (n,)``, computed as ``-softplus((1 - 2 y) theta)``
        (no overflow for large ``|theta|``).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from mcmc_customgrad.laplace import bernoulli
    >>> ll = bernoulli(jnp.array([1, 0]))
    >>> [round(float(v), 6) for v in ll(jnp.array([0.0, 2.0]))]
    [-0.693147, -2.126928]
    """
    where = "mcmc_customgrad.laplace.bernoulli"
    y = _data(y, "y", where)
    if _concrete(y) and bool(np.any((np.asarray(y) != 0) & (np.asarray(y) != 1))):
        raise ValueError(f"{where}: y must contain only 0 and 1.")
    sign = 1.0 - 2.0 * _as_float(y)

    def log_likelihood(theta):
        return -jax.nn.softplus(sign * theta)

    return log_likelihood


def gaussian(y):
    """Gaussian log-likelihood ``y_i ~ N(theta_i, sigma^2)`` with the noise as an argument.

    Parameters
    ----------
    y : (n,) array

    Returns
    -------
    log_likelihood : callable
        ``log_likelihood(theta, sigma) -> (n,)``; ``sigma`` (scalar or ``(n,)``, positive)
        is passed through ``*args`` of the marginal, so it is differentiated.

    Examples
    --------
    With a Gaussian likelihood the Laplace marginal is exact:

    >>> import jax, jax.numpy as jnp
    >>> from mcmc_customgrad.laplace import gaussian, latent_gaussian_log_marginal
    >>> y = jnp.array([0.3, -1.0]); K = jnp.array([[1.0, 0.5], [0.5, 1.0]])
    >>> lp = latent_gaussian_log_marginal(gaussian(y), K, jnp.zeros(2), 0.4)
    >>> exact = jax.scipy.stats.multivariate_normal.logpdf(y, jnp.zeros(2), K + 0.16 * jnp.eye(2))
    >>> bool(jnp.isclose(lp, exact, rtol=1e-12))
    True
    """
    y = _as_float(_data(y, "y", "mcmc_customgrad.laplace.gaussian"))

    def log_likelihood(theta, sigma):
        return jax.scipy.stats.norm.logpdf(y, theta, sigma)

    return log_likelihood


def negative_binomial(y, log_offset=0.0):
    """Negative binomial (NB2) log-likelihood with log link, dispersion as an argument.

    ``y_i ~ NegBinomial2(mu_i = exp(theta_i + log_offset_i), phi)``: mean ``mu``, variance
    ``mu + mu^2 / phi`` (Stan's ``neg_binomial_2_log``).

    Parameters
    ----------
    y : (n,) array of non-negative integer counts
    log_offset : float or (n,) array
        Log exposure (data).

    Returns
    -------
    log_likelihood : callable
        ``log_likelihood(theta, phi) -> (n,)``; the dispersion ``phi > 0`` is passed
        through ``*args`` of the marginal, so it is differentiated.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from mcmc_customgrad.laplace import negative_binomial
    >>> ll = negative_binomial(jnp.array([2]))
    >>> round(float(ll(jnp.zeros(1), 1e8)[0]), 5)  # phi -> inf: Poisson(1) at 2
    -1.69315
    """
    where = "mcmc_customgrad.laplace.negative_binomial"
    y = _data(y, "y", where)
    if _concrete(y) and _not_counts(y):
        raise ValueError(f"{where}: y must be non-negative integer counts.")
    y = _as_float(y)
    offset = _as_float(log_offset)
    log_factorial = gammaln(y + 1)

    def log_likelihood(theta, phi):
        eta = theta + offset
        log_phi = jnp.log(phi)
        log_sum = jnp.logaddexp(log_phi, eta)  # log(phi + mu)
        return (
            gammaln(y + phi)
            - gammaln(phi)
            - log_factorial
            + phi * (log_phi - log_sum)
            + y * (eta - log_sum)
        )

    return log_likelihood


# ================================================================ input checks and caching


def _as_float_array(x, name, where, allow_none=False):
    if x is None and allow_none:
        return None
    try:
        x = jnp.asarray(x)
    except TypeError as err:
        raise TypeError(f"{where}: {name} must be an array, got {type(x).__name__}.") from err
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"{where}: {name} must have a real floating dtype, got {x.dtype} (write 0.0 "
            "rather than 0, or cast with .astype(float))."
        )
    return x


def _check_latent_inputs(where, cov, theta0, mean):
    cov = _as_float_array(cov, "cov", where)
    theta0 = _as_float_array(theta0, "theta0", where)
    mean = _as_float_array(mean, "mean", where, allow_none=True)
    if theta0.ndim != 1 or theta0.shape[0] == 0:
        raise ValueError(
            f"{where}: theta0 must be a non-empty 1-D array (the Newton start, one entry "
            f"per latent; usually jnp.zeros(n)), got shape {tuple(theta0.shape)}. Use "
            "jax.vmap for batches."
        )
    n = theta0.shape[0]
    if cov.shape != (n, n):
        raise ValueError(
            f"{where}: cov must be a square ({n}, {n}) matrix matching theta0 of shape "
            f"({n},), got shape {tuple(cov.shape)}. Use jax.vmap for batches of covariances."
        )
    dtype = jnp.result_type(cov, theta0, *([] if mean is None else [mean]))
    if mean is None:
        mean = jnp.zeros(n, dtype)
    elif mean.shape not in ((), (n,)):
        raise ValueError(
            f"{where}: mean must be None, a scalar or an array of shape ({n},), got shape "
            f"{tuple(mean.shape)}."
        )
    mean = jnp.broadcast_to(mean, (n,)).astype(dtype)
    return cov.astype(dtype), theta0.astype(dtype), mean


def _as_args(args, where):
    def convert(x):
        if isinstance(x, str | bytes) or callable(x):
            raise TypeError(
                f"{where}: args must be pytrees of arrays (they are what derivatives flow "
                f"to); got a {type(x).__name__}. Capture static settings in the "
                "function's closure instead."
            )
        try:
            return jnp.asarray(x)
        except TypeError as err:
            raise TypeError(
                f"{where}: args must be pytrees of arrays; got a leaf of type {type(x).__name__}."
            ) from err

    return jax.tree.map(convert, tuple(args))


#: Compiled latent-Gaussian programs, keyed by the closure-converted likelihood's jaxpr,
#: input structure and options (``mcg.clear_caches()`` empties it).
_CACHE = LRU(64)
#: Likelihoods already checked for separability (eagerly, with concrete inputs).
_CHECKED = LRU(256)


def _convert_likelihood(where, log_likelihood, theta0, args):
    """Closure-convert ``log_likelihood`` and check what it returns.

    Returns ``(key, ll, consts)`` where ``ll(theta, (args, consts))`` is the scalar total
    log-likelihood and every value the user's function captures is in ``consts``, an
    explicit argument, so that derivatives reach captured values.
    """
    if not callable(log_likelihood):
        raise TypeError(
            f"{where}: log_likelihood must be callable, got {type(log_likelihood).__name__}."
        )
    try:
        closed, out = jax.make_jaxpr(log_likelihood, return_shape=True)(theta0, *args)
    except Exception as err:
        err.add_note(f"(raised while {where} traced log_likelihood(theta0, *args) to check it)")
        raise
    n = theta0.shape[0]
    leaves = jax.tree.leaves(out)
    ok = (
        len(leaves) == 1
        and isinstance(out, jax.ShapeDtypeStruct | jax.Array)
        and leaves[0].shape in ((), (n,))
        and jnp.issubdtype(leaves[0].dtype, jnp.floating)
    )
    if not ok:
        shapes = ", ".join(f"{tuple(x.shape)} {x.dtype}" for x in leaves)
        raise ValueError(
            f"{where}: log_likelihood(theta, *args) must return the per-observation "
            f"log-likelihoods, a float array of shape ({n},), or their sum (a scalar); "
            f"got [{shapes}]."
        )
    jaxpr, consts = closed.jaxpr, tuple(closed.consts)
    avals = tuple(typeof(x) for x in jax.tree.leaves((theta0, args, consts)))
    key = (str(jaxpr), jax.tree.structure((theta0, args, consts)), avals)

    def ll(theta, params):
        a, c = params
        (value,) = jax.core.eval_jaxpr(jaxpr, list(c), *jax.tree.leaves((theta, *a)))
        return jnp.sum(value)

    return key, ll, consts


# ======================================================================= the generic path


@lru_cache(maxsize=64)
def _compiled_generic(problem, solver, linear_solver, on_failure):
    argmin_core = build_core(problem, solver, linear_solver, on_failure)
    half_n_log_2pi = 0.5 * problem.n * _LOG_2PI

    def hessian(y, params):
        return jax.hessian(problem.objective)(y, params)  # of -log_joint

    def at_mode(y0, params):
        """Mode, its info, the linearisation point and the Cholesky factor of -H."""
        y, info = argmin_core(y0, params)
        base_ok = jnp.all(jnp.isfinite(y)) if on_failure == "last" else info.converged
        y_safe = jnp.where(base_ok, y, y0)
        chol = jnp.linalg.cholesky(hessian(y_safe, params))
        pd = jnp.all(jnp.isfinite(chol))  # -H positive definite at the mode
        ok = base_ok & pd
        status = jnp.where(info.converged & ~pd, Status.NOT_LOG_CONCAVE, info.status)
        info = info._replace(converged=info.converged & ok, status=status.astype(jnp.int32))
        eye = jnp.eye(problem.n, dtype=problem.dtype)
        return y, info, ok, jnp.where(ok, y, y0), jnp.where(ok, chol, eye)

    def value_at(ok, y_lin, chol, params):
        v = -problem.objective(y_lin, params) + half_n_log_2pi
        v = v - jnp.sum(jnp.log(jnp.diagonal(chol)))
        return v if on_failure == "last" else jnp.where(ok, v, jnp.nan)

    @jax.custom_jvp
    def value(y0, params):
        _, info, ok, y_lin, chol = at_mode(y0, params)
        return value_at(ok, y_lin, chol, params), info

    # v(θ) = log_joint(y*, θ) + n/2 log 2π - ½ logdet(-H(y*, θ)),  H = ∂²_yy log_joint.
    #  * envelope theorem for the first term: d log_joint = ∂_θ log_joint · θ̇ at fixed y*;
    #  * IFT for the mode: ẏ = -(-H)^-1 ∂_θ ∇_y(-log_joint) θ̇ (Cholesky of -H);
    #  * the log-determinant: d logdet(-H) = tr((-H)^-1 d(-H)), where d(-H) is one JVP of
    #    the Hessian along (ẏ, θ̇) (third derivatives; this is the dense generic path).
    # Linear in θ̇, so JAX transposes it for reverse mode; the solver is never
    # differentiated. y* comes from argmin_core, whose IFT rule makes this rule
    # differentiable again (second order). Failed solves: linearised at y0 with masked
    # tangents (the "double where").
    @value.defjvp
    def value_jvp(primals, tangents):
        y0, params = primals
        _, params_dot = tangents
        _, info, ok, y_lin, chol = at_mode(y0, params)
        _, _, params_dot = safe_linearisation(
            "nan", y_lin, info._replace(converged=ok), y0, params_dot
        )
        v = value_at(ok, y_lin, chol, params)
        _, obj_dot = jax.jvp(lambda p: problem.objective(y_lin, p), (params,), (params_dot,))
        grad_y = jax.grad(problem.objective)
        _, rhs = jax.jvp(lambda p: grad_y(y_lin, p), (params,), (params_dot,))
        y_dot = -cho_solve((chol, True), rhs)
        _, h_dot = jax.jvp(hessian, (y_lin, params), (y_dot, params_dot))
        h_inv = cho_solve((chol, True), jnp.eye(problem.n, dtype=problem.dtype))
        v_dot = -obj_dot - 0.5 * jnp.sum(h_inv * h_dot)
        return (v, info), (jnp.where(ok, v_dot, 0.0), jax.tree.map(zero_tangent, info))

    return jit_core(value)


def laplace_log_marginal(
    log_joint, theta0, *args, solver=None, full_output=False, on_failure="nan"
):
    """Laplace approximation of ``log ∫ exp(log_joint(theta, *args)) dtheta``, any model.

    ``theta*`` maximises ``log_joint`` (found by :func:`~mcmc_customgrad.argmin`, Newton by
    default) and ``H`` is its dense Hessian there:

        log_joint(theta*) + n/2 log(2 pi) - 1/2 logdet(-H(theta*)).

    The gradient in ``args`` (and in values ``log_joint`` closes over) uses the envelope
    theorem for the first term and, for the log-determinant,
    ``-1/2 tr(H^-1 dH)`` with ``dH`` including the implicit derivative of ``theta*`` (IFT),
    obtained by one JVP of the Hessian (third derivatives of ``log_joint``). The solver is
    never differentiated; second derivatives are right too. Cost: ``O(n^3)`` and the
    Hessian's ``O(n^2)`` memory; for latent Gaussian models with a separable likelihood
    :func:`latent_gaussian_log_marginal` is the better-conditioned, cheaper path.

    Parameters
    ----------
    log_joint : callable
        ``log_joint(theta, *args) -> scalar``; twice differentiable in ``theta`` (three
        times for gradients), with a negative definite Hessian at the mode.
    theta0 : pytree of float arrays
        Start of the mode search; no derivative flows to it.
    *args : pytrees of arrays
        Parameters (hyperparameters, data); differentiable.
    solver : Solver or callable, optional
        Forward solver for the mode, as for :func:`~mcmc_customgrad.argmin`; default
        :class:`~mcmc_customgrad.solvers.Newton` (the Hessian is formed anyway).
    full_output : bool
        If True return ``(value, SolverInfo)``.
    on_failure : {"nan", "raise", "last"}
        As for :func:`~mcmc_customgrad.root`. A Hessian that is not negative definite at
        the returned point (a saddle) also counts as a failure.

    Returns
    -------
    value : scalar array, or (value, SolverInfo) when ``full_output`` is True.

    Examples
    --------
    A Gaussian ``log_joint`` is integrated exactly: here
    ``log ∫ N(y; theta, 1) N(theta; 0, s^2) dtheta = log N(y; 0, 1 + s^2)``.

    >>> import jax, jax.numpy as jnp
    >>> from mcmc_customgrad.laplace import laplace_log_marginal
    >>> norm = jax.scipy.stats.norm
    >>> def log_joint(theta, s, y):
    ...     return jnp.sum(norm.logpdf(y, theta, 1.0) + norm.logpdf(theta, 0.0, s))
    >>> y = jnp.array([0.5, -1.0])
    >>> lp = laplace_log_marginal(log_joint, jnp.zeros(2), 2.0, y)
    >>> bool(jnp.isclose(lp, jnp.sum(norm.logpdf(y, 0.0, jnp.sqrt(5.0))), rtol=1e-12))
    True
    >>> g = jax.grad(lambda s: laplace_log_marginal(log_joint, jnp.zeros(2), s, y))(2.0)
    >>> exact = jax.grad(lambda s: jnp.sum(norm.logpdf(y, 0.0, jnp.sqrt(1 + s**2))))(2.0)
    >>> bool(jnp.isclose(g, exact, rtol=1e-10))
    True
    """
    where = "mcmc_customgrad.laplace.laplace_log_marginal"
    check_options(where, full_output, on_failure)
    if not callable(log_joint):
        raise TypeError(f"{where}: log_joint must be callable, got {type(log_joint).__name__}.")

    def objective(theta, *a):
        return -log_joint(theta, *a)

    problem, solver, linear_solver, y0_flat, params = resolve(
        "argmin",
        where,
        objective,
        theta0,
        args,
        Newton() if solver is None else solver,
        None,
        full_output,
        on_failure,
    )
    value = _compiled_generic(problem, solver, linear_solver, on_failure)
    v, info = value(y0_flat, params)
    finish(where, solver, info, on_failure)
    return (v, info) if full_output else v


# ============================================================ the separable-likelihood path


def _probe(n, dtype):
    # Distinct entries in [1, 2) (golden-ratio sequence): a Hessian-vector product with it
    # differs from W * probe wherever the likelihood Hessian has an off-diagonal entry.
    return 1.0 + jnp.asarray(np.mod(np.arange(n) * 0.6180339887498949, 1.0), dtype)


def _w_diag(ll, f, p):
    """``W = -diag(d^2 ll / df^2)`` by one forward-over-reverse product with ones.

    Exact for separable likelihoods (``H ones = diag(H)`` when ``H`` is diagonal).
    """
    return -jax.jvp(lambda x: jax.grad(ll)(x, p), (f,), (jnp.ones_like(f),))[1]


def _separability_gap(ll, f, p):
    """``|H v - diag(H) v|_inf`` relative to ``|W v|_inf``: rounding level iff separable."""
    v = _probe(f.shape[0], f.dtype)
    W = _w_diag(ll, f, p)
    Hv = -jax.jvp(lambda x: jax.grad(ll)(x, p), (f,), (v,))[1]
    return max_norm(Hv - W * v) / jnp.maximum(max_norm(W * v), jnp.finfo(f.dtype).tiny)


#: Largest relative gap accepted by the separability check (rounding is ~1e-16).
_SEPARABLE_RTOL = 1e-6


def _factor(ll, f, K, p):
    """Gradient, ``W``, ``sqrt(W+)`` and the Cholesky factor of ``B = I + W^½ K W^½``."""
    g = jax.grad(ll)(f, p)
    W = _w_diag(ll, f, p)
    sW = jnp.sqrt(jnp.maximum(W, 0.0))
    B = jnp.eye(f.shape[0], dtype=f.dtype) + sW[:, None] * K * sW[None, :]
    return g, W, sW, jnp.linalg.cholesky(B)


def _b_solve(Lc, sW, K, v):
    """``(I + K W)^-1 v = v - K W^½ B^-1 W^½ v`` (stable: ``B`` has eigenvalues >= 1)."""
    return v - K @ (sW * cho_solve((Lc, True), sW * v))


def _newton_mode(ll, theta0, K, m, p, rtol, atol, max_steps):
    """The mode of ``ll(f) - ½ (f - m)' K^-1 (f - m)`` by Newton in ``a = K^-1 (f - m)``.

    GPML Algorithm 3.1 with a non-zero mean and a backtracking (Armijo) line search on
    ``Psi(a) = ll(m + K a) - ½ a' K a``. The Newton target at ``f`` is
    ``a_new = b - W^½ B^-1 W^½ K b`` with ``b = W (f - m) + grad ll(f)``; ``W`` is
    clipped at 0 for the step, which keeps it an ascent direction. Converged when the
    gradient of ``Psi`` in ``f``, ``grad ll(f) - a``, has max-norm within
    ``atol + rtol |Psi|`` (the library's minimum convention) *and* ``f`` is known to
    tolerance: the step just taken moved ``f`` by less than ``atol + rtol |f|``, or the
    residual fell below ``rtol`` times its value at the start (the core's rule,
    :func:`~mcmc_customgrad.implicit._base.converged_within`); or a full Newton step
    moves ``f`` by less than ``atol + rtol |f|`` (the rounding floor). The residual
    test alone would accept a start whose gradient is small only because the likelihood
    is flat (in float32, where the tolerance is ``1.2e-4``, a wrong mode). Returns
    ``(f, converged, num_steps, residual)``.
    """
    dtype = theta0.dtype

    def psi_at(a):
        Ka = K @ a
        f = m + Ka
        return ll(f, p) - 0.5 * jnp.vdot(a, Ka), f

    # The start: theta0 as a = K^-1 (theta0 - mean) (a Cholesky of K, skipped when theta0
    # is the mean); if that fails (singular cov) or gives a non-finite Psi, start at the mean.
    d0 = theta0 - m

    def from_theta0(d0):
        a = cho_solve((jnp.linalg.cholesky(K), True), d0)
        return jnp.where(jnp.all(jnp.isfinite(a)), a, 0.0)

    a0 = lax.cond(jnp.any(d0 != 0), from_theta0, jnp.zeros_like, d0)
    psi0, f0 = psi_at(a0)
    bad_start = ~jnp.isfinite(psi0)
    a0 = jnp.where(bad_start, 0.0, a0)
    psi0, f0 = psi_at(a0)
    g0 = jax.grad(ll)(f0, p)

    def converged(a, g, psi):
        residual = max_norm(g - a)
        return residual <= atol + rtol * jnp.abs(psi), residual

    def evaluate(a):
        psi, f = psi_at(a)
        return -psi, (f, jax.grad(ll)(f, p))

    def cond(state):
        _a, _f, psi, _g, k, done, stalled = state
        return ~done & ~stalled & (k < max_steps) & jnp.isfinite(psi)

    def body(state):
        a, f, psi, g, k, _, _ = state
        _, _, sW, Lc = _factor(ll, f, K, p)
        b = sW**2 * (f - m) + g
        a_new = b - sW * cho_solve((Lc, True), sW * (K @ b))
        da = a_new - a
        df = K @ da
        slope = -jnp.vdot(df, g - a)  # directional derivative of -Psi along da (< 0)
        alpha, merit, (f_t, g_t), accepted = backtrack(evaluate, a, -psi, da, slope)
        a1 = jnp.where(accepted, a + alpha * da, a)
        f1 = jnp.where(accepted, f_t, f)
        g1 = jnp.where(accepted, g_t, g)
        psi1 = jnp.where(accepted, -merit, psi)
        moved = max_norm(alpha * df) <= atol + rtol * max_norm(f1)
        small = accepted & (alpha == 1.0) & moved
        residual_ok, residual = converged(a1, g1, psi1)
        known = (accepted & moved) | (residual <= rtol * residual0)
        done = (residual_ok & known) | small
        return a1, f1, psi1, g1, k + 1, done, ~accepted

    residual0 = converged(a0, g0, psi0)[1]
    done0 = converged(a0, g0, psi0)[0] & (residual0 == 0)  # no step to judge y by yet
    state = (a0, f0, psi0, g0, jnp.zeros((), jnp.int32), done0, jnp.array(False))
    a, f, psi, g, k, done, _ = lax.while_loop(cond, body, state)
    residual = converged(a, g, psi)[1]
    ok = done & jnp.isfinite(psi) & jnp.all(jnp.isfinite(f))
    return f, ok, k, residual.astype(dtype)


def _latent_value(ll, f, K, m, p):
    """``Psi(f) - ½ logdet B`` at a mode ``f``, and what its derivative needs.

    ``a = grad ll(f)`` (equal to ``K^-1 (f - m)`` at the mode), so the value needs no
    inverse of ``K``: ``log q = ll(f) - ½ a' (f - m) - sum log diag chol(B)``.
    """
    g, W, sW, Lc = _factor(ll, f, K, p)
    value = ll(f, p) - 0.5 * jnp.vdot(g, f - m) - jnp.sum(jnp.log(jnp.diagonal(Lc)))
    return value, (g, W, sW, Lc)


def _mode_ok(ll, f, p, W, solver_ok, finite):
    """``(ok, status)``: the solve succeeded, ``ll`` is separable and ``W >= 0``.

    ``status`` is the :class:`~mcmc_customgrad.Status` of the first test that failed.
    """
    scale = jnp.maximum(1.0, max_norm(W))
    eps = jnp.finfo(f.dtype).eps
    nonneg = jnp.all(W + 1e3 * eps * scale >= 0)
    separable = _separability_gap(ll, f, p) <= _SEPARABLE_RTOL
    status = jnp.select(
        [~finite, ~solver_ok, ~separable, ~nonneg],
        [Status.NONFINITE, Status.MAX_STEPS, Status.NOT_SEPARABLE, Status.NOT_LOG_CONCAVE],
        Status.CONVERGED,
    )
    return solver_ok & nonneg & separable, status.astype(jnp.int32)


def _build_latent(ll, rtol, atol, max_steps, on_failure):
    """Build ``(value_core, posterior_core)``; both take ``(theta0, (K, m, p))``."""

    def solve(theta0, params):
        K, m, p = params
        f, solver_ok, k, residual = _newton_mode(ll, theta0, K, m, p, rtol, atol, max_steps)
        f_safe = jnp.where(jnp.all(jnp.isfinite(f)), f, m)
        finite = jnp.all(jnp.isfinite(f)) & jnp.isfinite(residual)
        ok, status = _mode_ok(ll, f_safe, p, _w_diag(ll, f_safe, p), solver_ok, finite)
        info = SolverInfo(
            converged=ok,
            num_steps=k,
            residual_norm=residual,
            status=status,
            error_estimate=jnp.full((), jnp.nan, residual.dtype),
        )
        if on_failure != "last":
            f = jnp.where(ok, f, jnp.nan)
        return f, info

    def linearisation_point(theta0, params, params_dot):
        f, info = mode_core(theta0, params)
        ok, f_lin, params_dot = safe_linearisation(on_failure, f, info, params[1], params_dot)
        return f, info, ok, f_lin, params_dot

    def mode_tangent(f, K, p, g, sW, Lc, K_dot, m_dot, p_dot):
        # IFT on the stationarity condition  K grad ll(f, p) - (f - m) = 0:
        #   K̇ g + K (-W ḟ + ∂_p grad ll ṗ) - ḟ + ṁ = 0
        #   ⇒ ḟ = (I + K W)^-1 [K̇ g + ṁ + K ∂_p grad ll ṗ],
        # with (I + K W)^-1 applied through the Cholesky factor of B (_b_solve).
        _, gp_dot = jax.jvp(lambda q: jax.grad(ll)(f, q), (p,), (p_dot,))
        return _b_solve(Lc, sW, K, K_dot @ g + m_dot + K @ gp_dot)

    @jax.custom_jvp
    def mode_core(theta0, params):
        return solve(theta0, params)

    @mode_core.defjvp
    def mode_jvp(primals, tangents):
        theta0, params = primals
        f, info, ok, f_lin, (K_dot, m_dot, p_dot) = linearisation_point(theta0, params, tangents[1])
        K, _, p = params
        g, _, sW, Lc = _factor(ll, f_lin, K, p)
        Lc = jnp.where(ok, Lc, jnp.eye(Lc.shape[0], dtype=Lc.dtype))
        f_dot = mode_tangent(f_lin, K, p, g, sW, Lc, K_dot, m_dot, p_dot)
        return (f, info), (jnp.where(ok, f_dot, 0.0), jax.tree.map(zero_tangent, info))

    def value_at(ok, f_lin, params):
        K, m, p = params
        value, (g, W, sW, Lc) = _latent_value(ll, f_lin, K, m, p)
        if on_failure != "last":
            value = jnp.where(ok, value, jnp.nan)
        return value, (g, W, sW, jnp.where(ok, Lc, jnp.eye(Lc.shape[0], dtype=Lc.dtype)))

    @jax.custom_jvp
    def value_core(theta0, params):
        f, info = mode_core(theta0, params)
        ok = jnp.all(jnp.isfinite(f)) if on_failure == "last" else info.converged
        return value_at(ok, jnp.where(ok, f, params[1]), params)[0], info

    # The adjoint rule. With Psi(f, φ) = ll(f, p) - ½ (f - m)' K^-1 (f - m) and
    #     log q(φ) = Psi(f*(φ), φ) - ½ logdet B(f*(φ), φ),   B = I + W^½ K W^½,
    # along a tangent φ̇ = (K̇, ṁ, ṗ):
    #  * envelope theorem (∂_f Psi = 0 at the mode):
    #       d Psi = ½ a' K̇ a + a' ṁ + ∂_p ll · ṗ,          a = K^-1 (f* - m) = grad ll(f*);
    #  * log-determinant, with logdet B = logdet(I + K W):
    #       d logdet B = tr(R K̇) + diag(Σ) · Ẇ,   R = W^½ B^-1 W^½,  Σ = (K^-1 + W)^-1
    #                                                                 = K - K R K,
    #    where Ẇ = ∂_f W · ḟ* + ∂_p W · ṗ is one JVP of the W-diagonal (third derivatives
    #    of a separable likelihood: elementwise), and ḟ* comes from the IFT (mode_tangent).
    # This is GPML Algorithm 5.1 generalised to a mean and likelihood parameters. Every
    # term is linear in φ̇, so JAX transposes the rule for reverse mode; no Newton
    # iteration and no Cholesky is differentiated at first order. The rule takes f* from
    # mode_core, whose own custom_jvp (the IFT) supplies ḟ* whenever this rule is itself
    # differentiated, so second derivatives are right too.
    # Failed solves: linearised at the mean with tangents masked before and after (the
    # "double where"), so no NaN reaches shared parameters' cotangents.
    @value_core.defjvp
    def value_jvp(primals, tangents):
        theta0, params = primals
        _, info, ok, f_lin, (K_dot, m_dot, p_dot) = linearisation_point(theta0, params, tangents[1])
        K, _, p = params
        value, (g, _, sW, Lc) = value_at(ok, f_lin, params)
        f_dot = mode_tangent(f_lin, K, p, g, sW, Lc, K_dot, m_dot, p_dot)
        _, ll_dot = jax.jvp(lambda q: ll(f_lin, q), (p,), (p_dot,))
        psi_dot = 0.5 * jnp.vdot(g, K_dot @ g) + jnp.vdot(g, m_dot) + ll_dot
        R = sW[:, None] * cho_solve((Lc, True), jnp.diag(sW))
        V = solve_triangular(Lc, sW[:, None] * K, lower=True)
        sigma_diag = jnp.diagonal(K) - jnp.sum(V**2, axis=0)
        _, W_dot = jax.jvp(lambda x, q: _w_diag(ll, x, q), (f_lin, p), (f_dot, p_dot))
        logdet_dot = jnp.sum(R * K_dot) + jnp.vdot(sigma_diag, W_dot)
        value_dot = psi_dot - 0.5 * logdet_dot
        return (value, info), (jnp.where(ok, value_dot, 0.0), jax.tree.map(zero_tangent, info))

    def posterior_core(theta0, params):
        # cov_post = (K^-1 + W)^-1 = K - K W^½ B^-1 W^½ K = K - V'V, V = L^-1 W^½ K.
        f, info = mode_core(theta0, params)
        ok = jnp.all(jnp.isfinite(f))
        K, m, p = params
        f_lin = jnp.where(ok, f, m)
        _, _, sW, Lc = _factor(ll, f_lin, K, p)
        V = solve_triangular(Lc, sW[:, None] * K, lower=True)
        post_cov = K - V.T @ V
        post_cov = jnp.where(ok, 0.5 * (post_cov + post_cov.T), jnp.nan)
        return f, post_cov, info

    return jit_core(value_core), jax.jit(posterior_core)


def _latent_setup(where, log_likelihood, cov, theta0, args, mean, solver, full_output, on_failure):
    check_options(where, full_output, on_failure)
    if solver is None:
        solver = Newton()
    if not isinstance(solver, Newton):
        raise TypeError(
            f"{where}: solver must be None or mcmc_customgrad.solvers.Newton(rtol=..., "
            f"atol=..., max_steps=...), which configures the B-form Newton iteration; got "
            f"{type(solver).__name__}. For other solvers use laplace_log_marginal."
        )
    cov, theta0, mean = _check_latent_inputs(where, cov, theta0, mean)
    args = _as_args(args, where)
    key, ll, consts = _convert_likelihood(where, log_likelihood, theta0, args)
    rtol, atol = solver.tolerances(theta0.dtype)
    params = (cov, mean, (args, consts))
    full_key = (*key, typeof(cov), rtol, atol, solver.max_steps, on_failure)
    if key not in _CHECKED and _concrete(theta0, params):
        _check_separable(where, ll, theta0, (args, consts))
        _CHECKED.put(key, True)
    cores = _CACHE.get(full_key)
    if cores is None:
        cores = _build_latent(ll, rtol, atol, solver.max_steps, on_failure)
        _CACHE.put(full_key, cores)
    return cores, solver, theta0, params


def _check_separable(where, ll, theta0, p):
    """Eager check (concrete inputs, first call only) that ``ll`` is separable."""
    shift = 0.1 * np.sin(np.arange(1, theta0.shape[0] + 1))  # away from symmetric points

    def gap_near_start(theta0, p):
        return _separability_gap(ll, theta0 + shift, p)

    gap = float(jax.jit(gap_near_start)(theta0, p))  # jit: ~10x faster than op by op
    if not gap <= _SEPARABLE_RTOL:  # NaN: cannot tell here; the compiled check decides
        if math.isnan(gap):
            return
        raise ValueError(
            f"{where}: log_likelihood is not separable: its Hessian in theta has "
            f"off-diagonal entries (relative size {gap:.2e}). Each observation's term must "
            "depend on one latent only; use laplace_log_marginal for other likelihoods."
        )


def latent_gaussian_log_marginal(
    log_likelihood,
    cov,
    theta0,
    *args,
    mean=None,
    solver=None,
    full_output=False,
    on_failure="nan",
):
    """Laplace-approximated ``log ∫ p(y | theta, *args) N(theta; mean, cov) dtheta``.

    For a separable likelihood (each observation's term depends on one latent, so its
    Hessian ``-W`` is diagonal). The mode is found by Newton on the stable form
    ``B = I + W^1/2 cov W^1/2`` (GPML Algorithm 3.1, with a mean and a line search) and

        log q(y | hyper) = ll(f*) - 1/2 a'(f* - mean) - sum log diag chol(B),

    with ``a = cov^-1 (f* - mean)``. Derivatives with respect to ``cov``, ``mean`` and
    ``args`` (and values ``log_likelihood`` closes over) use the envelope theorem, the
    implicit function theorem for the mode and the adjoint trace formulas for the
    log-determinant (GPML Algorithm 5.1, generalised): one ``O(n^3)`` pass, no Newton
    iteration differentiated. It is a ``custom_jvp`` rule, so ``grad``, ``jvp`` and second
    derivatives all work. Exact (up to the tolerance) when the likelihood is Gaussian.

    Parameters
    ----------
    log_likelihood : callable
        ``log_likelihood(theta, *args)`` returning the per-observation log-likelihoods, a
        float array of shape ``(n,)`` (or their sum, a scalar). It must be *separable*:
        term ``i`` depends on ``theta[i]`` only (one observation per latent; a latent
        without data contributes 0). ``W`` is computed as ``-H 1`` by one
        forward-over-reverse product, which equals the Hessian diagonal only then. This
        is checked with a probe vector: eagerly on the first call with concrete inputs (a
        ``ValueError``), and at the mode on every call (a failure: NaN,
        ``converged == False``). The B form also needs ``W >= 0`` at the mode
        (log-concave terms, as for :func:`poisson`, :func:`bernoulli`,
        :func:`gaussian`, :func:`negative_binomial`); otherwise the call fails too: use
        :func:`laplace_log_marginal` for such likelihoods.
    cov : (n, n) float array
        Prior covariance of the latent field, typically computed from hyperparameters
        inside the log-density (derivatives flow through it). Add any jitter yourself.
    theta0 : (n,) float array
        Newton start (``jnp.zeros(n)`` is usual); no derivative flows to it, and the
        result depends on it only within the tolerance. Make it a function of the
        position alone (no warm start carried between evaluations, or the density
        depends on the sampler's path). A start other than ``mean`` costs
        a Cholesky of ``cov`` (to express it as ``a = cov^-1 (theta0 - mean)``); if that
        fails, the solve starts at ``mean``.
    *args : pytrees of arrays
        Likelihood parameters (the Gaussian noise, the negative-binomial dispersion);
        differentiable.
    mean : None, float or (n,) float array
        Prior mean (None: zeros); differentiable.
    solver : mcmc_customgrad.solvers.Newton, optional
        Only configures the iteration: ``rtol``/``atol`` (default ``1e-10`` in float64)
        on the max-norm of the gradient of the log-posterior in ``theta`` (converged when
        ``|grad|_inf <= atol + rtol |Psi|``, or when a full Newton step changes ``theta``
        by less than ``atol + rtol |theta|_inf``), and ``max_steps`` (100).
    full_output : bool
        If True return ``(value, SolverInfo)``.
    on_failure : {"nan", "raise", "last"}
        As for :func:`~mcmc_customgrad.root`: NaN value and zero derivative (default),
        raise :class:`~mcmc_customgrad.SolverError`, or use the last iterate.

    Returns
    -------
    value : scalar array, or (value, SolverInfo) when ``full_output`` is True.

    Notes
    -----
    ``converged == False`` means any of: Newton missed its tolerance within ``max_steps``
    (or its line search stalled), a non-finite value, ``W < 0`` at the mode, or a
    non-separable likelihood. Under ``vmap`` the Newton loop runs until the slowest
    element is done; finished elements are frozen and ``info.num_steps`` is per element.
    Memory and time are ``O(n^2)`` and ``O(n^3)`` per call (dense ``cov``).

    Examples
    --------
    A Poisson GP with a squared-exponential kernel; the marginal and its gradient in the
    length scale:

    >>> import jax, jax.numpy as jnp
    >>> from mcmc_customgrad.laplace import latent_gaussian_log_marginal, poisson
    >>> x = jnp.linspace(0.0, 1.0, 8); y = jnp.array([0, 1, 1, 3, 2, 4, 2, 1])
    >>> def log_marginal(rho):
    ...     K = jnp.exp(-0.5 * (x[:, None] - x[None, :]) ** 2 / rho**2) + 1e-8 * jnp.eye(8)
    ...     return latent_gaussian_log_marginal(poisson(y), K, jnp.zeros(8))
    >>> lp, dlp = jax.value_and_grad(log_marginal)(0.3)
    >>> round(float(lp), 6), round(float(dlp), 6)  # central differences: 1.423424
    (-13.233949, 1.423424)

    ``full_output=True`` adds the Newton diagnostics:

    >>> K = jnp.exp(-0.5 * (x[:, None] - x[None, :]) ** 2 / 0.09) + 1e-8 * jnp.eye(8)
    >>> lp, info = latent_gaussian_log_marginal(poisson(y), K, jnp.zeros(8), full_output=True)
    >>> bool(info.converged), int(info.num_steps)
    (True, 5)
    """
    where = "mcmc_customgrad.laplace.latent_gaussian_log_marginal"
    (value_core, _), solver, theta0, params = _latent_setup(
        where, log_likelihood, cov, theta0, args, mean, solver, full_output, on_failure
    )
    value, info = value_core(theta0, params)
    finish(where, solver, info, on_failure)
    return (value, info) if full_output else value


def laplace_latent_draws(
    key,
    log_likelihood,
    cov,
    theta0,
    *args,
    mean=None,
    num_draws=1,
    solver=None,
    full_output=False,
    on_failure="nan",
):
    """Draws of the latent field from its Laplace Gaussian ``N(theta*, (cov^-1 + W)^-1)``.

    Takes a PRNG key first (as ``jax.random`` does), then exactly the arguments of
    :func:`latent_gaussian_log_marginal`: after sampling the hyperparameters with the
    marginal, call this per posterior draw of them to recover ``theta``.

    The posterior covariance is computed stably through ``B``:
    ``cov - cov W^1/2 B^-1 W^1/2 cov``, and its square root by a symmetric eigen
    decomposition (eigenvalues below zero from rounding are set to zero).

    Parameters
    ----------
    key : jax.random key
    log_likelihood, cov, theta0, *args, mean, solver, on_failure
        As for :func:`latent_gaussian_log_marginal`.
    num_draws : int
        Number of draws.
    full_output : bool
        If True return ``(draws, LatentPosterior(mean, cov, info))``: the Laplace mean
        (the mode), covariance and the solver's :class:`~mcmc_customgrad.SolverInfo`.

    Returns
    -------
    draws : (num_draws, n) array
        NaN when the solve failed. Or ``(draws, LatentPosterior)`` with ``full_output``.

    Examples
    --------
    With a Gaussian likelihood the Laplace Gaussian is the exact conjugate posterior:

    >>> import jax, jax.numpy as jnp
    >>> from mcmc_customgrad.laplace import gaussian, laplace_latent_draws
    >>> K = jnp.array([[1.0, 0.5], [0.5, 1.0]]); y = jnp.array([0.3, -1.0])
    >>> draws, post = laplace_latent_draws(jax.random.key(0), gaussian(y), K, jnp.zeros(2),
    ...                                    0.4, num_draws=3, full_output=True)
    >>> draws.shape
    (3, 2)
    >>> exact = K @ jnp.linalg.solve(K + 0.16 * jnp.eye(2), y)
    >>> bool(jnp.allclose(post.mean, exact, rtol=1e-10))
    True
    """
    where = "mcmc_customgrad.laplace.laplace_latent_draws"
    if isinstance(num_draws, bool) or not isinstance(num_draws, int | np.integer):
        raise TypeError(f"{where}: num_draws must be an int, got {num_draws!r}.")
    if num_draws < 0:
        raise ValueError(f"{where}: num_draws must be >= 0, got {num_draws}.")
    (_, posterior_core), solver, theta0, params = _latent_setup(
        where, log_likelihood, cov, theta0, args, mean, solver, full_output, on_failure
    )
    f, post_cov, info = posterior_core(theta0, params)
    finish(where, solver, info, on_failure)
    draws = _sample(key, f, post_cov, num_draws)
    if full_output:
        return draws, LatentPosterior(mean=f, cov=post_cov, info=info)
    return draws


@functools.partial(jax.jit, static_argnames=("num_draws",))
def _sample(key, f, post_cov, num_draws):
    ok = jnp.all(jnp.isfinite(f)) & jnp.all(jnp.isfinite(post_cov))
    n = f.shape[0]
    eigval, eigvec = jnp.linalg.eigh(jnp.where(ok, post_cov, jnp.eye(n, dtype=f.dtype)))
    root = eigvec * jnp.sqrt(jnp.maximum(eigval, 0.0))[None, :]
    z = jax.random.normal(key, (num_draws, n), f.dtype)
    return jnp.where(ok, jnp.where(ok, f, 0.0)[None, :] + z @ root.T, jnp.nan)
