"""``Model``: named, constrained parameters -> the flat log-density HMC samples."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from .._args import flat_labels
from .._precision import warn_if_float32
from .constraints import Constraint

__all__ = ["Model"]


class _UndeclaredParameter(KeyError):
    """Raised by :class:`_ReadTracker` for a key the model does not declare."""


class _ReadTracker(Mapping):
    """A read-only mapping that records which keys were read (for validation only)."""

    def __init__(self, values):
        self._values, self.read = values, set()

    def __getitem__(self, key):
        if key not in self._values:
            raise _UndeclaredParameter(key)
        self.read.add(key)
        return self._values[key]

    def __iter__(self):
        return iter(self._values)

    def __len__(self):
        return len(self._values)


class Model:
    """A log-density over named, constrained parameters, ready for Blackjax.

    Parameters
    ----------
    logdensity_fn : callable
        ``logdensity_fn(params) -> scalar``, with ``params`` a dict from name to array on
        the constrained scale (what the user thinks in). It may contain inner solves
        (``mcg.root``, ``mcg.min_value``, ...).
    params : dict
        Name to constraint (:func:`~mcmc_customgrad.real`,
        :func:`~mcmc_customgrad.positive`, :func:`~mcmc_customgrad.interval`), each with
        its shape. The order fixes the layout of the flat vector.
    log_likelihood_fn : callable, optional
        ``log_likelihood_fn(params) -> array`` of per-observation log-likelihoods, for
        ArviZ's ``log_likelihood`` group (LOO, WAIC).

    Attributes
    ----------
    names : tuple of str
        Parameter names, in layout order.
    dim : int
        Length of the flat unconstrained vector.

    Notes
    -----
    The model is checked once, when built, by evaluating it abstractly (nothing is
    compiled): ``logdensity_fn`` must return a real scalar, read only declared
    parameters and read all of them (an unread parameter would have an improper, flat
    posterior), and ``log_likelihood_fn`` must return a float array.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import mcmc_customgrad as mcg
    >>> from jax.scipy.stats import expon, norm
    >>> def logdensity(p):
    ...     return jnp.sum(norm.logpdf(p["mu"])) + expon.logpdf(p["sigma"])
    >>> spec = {"mu": mcg.real(shape=(2,)), "sigma": mcg.positive()}
    >>> model = mcg.Model(logdensity, params=spec)
    >>> model.names, model.dim
    (('mu', 'sigma'), 3)
    >>> flat = model.to_unconstrained({"mu": jnp.zeros(2), "sigma": jnp.array(1.0)})
    >>> flat.tolist()
    [0.0, 0.0, 0.0]
    >>> round(float(model.logdensity(flat)), 6)   # includes log|J| of sigma = exp(u): u = 0
    -2.837877
    """

    def __init__(self, logdensity_fn: Callable, params: Mapping, log_likelihood_fn=None):
        if not callable(logdensity_fn):
            raise TypeError(
                f"Model: logdensity_fn must be callable, got {type(logdensity_fn).__name__}."
            )
        if log_likelihood_fn is not None and not callable(log_likelihood_fn):
            raise TypeError(
                "Model: log_likelihood_fn must be callable or None, got "
                f"{type(log_likelihood_fn).__name__}."
            )
        warn_if_float32("mcg.Model")
        if not isinstance(params, Mapping) or not params:
            raise TypeError("Model: params must be a non-empty dict of name -> constraint.")
        for name, c in params.items():
            if not isinstance(name, str):
                raise TypeError(f"Model: parameter names must be strings, got {name!r}.")
            if not isinstance(c, Constraint):
                raise TypeError(
                    f"Model: unknown constraint for {name!r}: {c!r}. Use mcg.real(), "
                    "mcg.positive() or mcg.interval(lower, upper), each with a shape."
                )
        self.logdensity_fn = logdensity_fn
        self.log_likelihood_fn = log_likelihood_fn
        self.constraints = dict(params)
        self.names = tuple(params)
        sizes = [c.size for c in self.constraints.values()]
        self._offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        self.dim = int(self._offsets[-1])
        if self.dim == 0:
            raise ValueError("Model: every parameter has size 0; there is nothing to sample.")
        self._check()

    @classmethod
    def from_numpyro(cls, model_fn: Callable, /, *args, **kwargs) -> Model:
        """A NumPyro model as a Model: its latent sites become the parameters.

        NumPyro computes the density (``numpyro.infer.util.log_density`` with the latent
        sites substituted): priors, observed sites, ``numpyro.factor`` terms, all of it.
        Each latent site keeps its name and constrained shape; its support's bijection
        (NumPyro's ``biject_to``) becomes :func:`~mcmc_customgrad.real`,
        :func:`~mcmc_customgrad.positive` or :func:`~mcmc_customgrad.interval` (the same
        maps, so the unconstrained coordinates and ``model.logdensity`` equal NumPyro's
        ``-potential_energy``), or, for other shape-keeping bijections (``ordered_vector``,
        ``greater_than``, ...), a wrapper of NumPyro's own. Inner solves
        (``mcg.min_value``, ``mcg.root``, ...) may appear anywhere in the model.

        Parameters
        ----------
        model_fn : callable
            The NumPyro model, a function calling ``numpyro.sample``.
        *args, **kwargs
            The model's arguments (the data), bound now: every evaluation uses them.

        Returns
        -------
        NumPyroModel
            A Model; ``log_likelihood`` gives the pointwise log-likelihoods of the observed
            sites (``numpyro.factor`` terms excluded), concatenated in site order, for
            ArviZ's LOO and WAIC; ``deterministics(params, key)`` gives the
            ``numpyro.deterministic`` sites: pass it as ``generated_quantities`` to
            :func:`~mcmc_customgrad.sample` to record them.

        Raises
        ------
        ImportError
            NumPyro is not installed: ``pip install 'mcmc_customgrad[numpyro]'``.
        NotImplementedError
            For discrete latent sites, plates with ``subsample_size``, ``numpyro.param``
            sites, supports whose bijection changes the shape (``simplex``,
            ``corr_cholesky``, ...) or whose bounds depend on other latent sites; the
            message names the site and what to do instead.
        ValueError
            When the model has no latent site, or a latent ``Delta`` site.

        Notes
        -----
        See ``mcmc_customgrad.logdensity.numpyro`` and the "NumPyro models" section of
        docs/model.md, which also runs an inner solve under NumPyro's own NUTS and compares
        the two samplers.

        Examples
        --------
        >>> import jax, jax.numpy as jnp
        >>> jax.config.update("jax_enable_x64", True)
        >>> import numpyro, numpyro.distributions as dist
        >>> from numpyro.infer.util import potential_energy
        >>> import mcmc_customgrad as mcg
        >>> def model(y, prior_scale=5.0):
        ...     mu = numpyro.sample("mu", dist.Normal(0.0, prior_scale))
        ...     sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
        ...     with numpyro.plate("obs", y.shape[0]):
        ...         numpyro.sample("y", dist.Normal(mu, sigma), obs=y)
        >>> y = jnp.array([0.4, -1.1, 2.3, 0.8])
        >>> model_ = mcg.Model.from_numpyro(model, y, prior_scale=2.0)
        >>> model_.names, model_.dim, model_.constraints["sigma"] == mcg.positive()
        (('mu', 'sigma'), 2, True)
        >>> u = jnp.array([0.3, -0.2])  # unconstrained: sigma = exp(-0.2)
        >>> numpyro_u = {"mu": u[0], "sigma": u[1]}
        >>> pe = potential_energy(model, (y,), {"prior_scale": 2.0}, numpyro_u)
        >>> bool(jnp.isclose(model_.logdensity(u), -pe, rtol=1e-12))
        True
        >>> model_.log_likelihood(u).shape  # one term per observation
        (4,)
        """
        from .numpyro import from_numpyro

        return from_numpyro(model_fn, *args, **kwargs)

    # ------------------------------------------------------------------ transforms
    def _split(self, flat):
        flat = jnp.asarray(flat)
        if flat.shape != (self.dim,):
            raise ValueError(
                f"Model: expected a flat unconstrained vector of shape ({self.dim},), got "
                f"{flat.shape}. Use model.to_unconstrained(params) to build one."
            )
        return {
            name: flat[self._offsets[i] : self._offsets[i + 1]].reshape(c.shape)
            for i, (name, c) in enumerate(self.constraints.items())
        }

    def to_constrained(self, flat) -> dict:
        """Flat unconstrained vector -> dict of constrained arrays.

        Examples
        --------
        >>> import jax.numpy as jnp
        >>> import mcmc_customgrad as mcg
        >>> m = mcg.Model(lambda p: -p["s"], params={"s": mcg.positive()})
        >>> float(m.to_constrained(jnp.array([0.0]))["s"])
        1.0
        """
        parts = self._split(flat)
        return {name: self.constraints[name].forward(u) for name, u in parts.items()}

    @property
    def labels(self) -> list[str]:
        """One label per coordinate of the flat position: ``name`` or ``name[i,j]``.

        The labels every report and ArviZ summary uses.

        Examples
        --------
        >>> import mcmc_customgrad as mcg
        >>> import jax.numpy as jnp
        >>> spec = {"mu": mcg.real(), "x": mcg.real(shape=(2,))}
        >>> mcg.Model(lambda p: -p["mu"] ** 2 - jnp.sum(p["x"] ** 2), spec).labels
        ['mu', 'x[0]', 'x[1]']
        """
        return flat_labels((n, c.shape) for n, c in self.constraints.items())

    def to_unconstrained(self, params: Mapping):
        """Dict of constrained arrays -> flat unconstrained vector.

        Checks names, shapes and (for concrete values) that each value lies in its
        support.

        Examples
        --------
        >>> import jax.numpy as jnp
        >>> import mcmc_customgrad as mcg
        >>> m = mcg.Model(lambda p: -p["s"], params={"s": mcg.positive()})
        >>> m.to_unconstrained({"s": jnp.exp(1.0)}).tolist()
        [1.0]
        """
        if not isinstance(params, Mapping):
            raise TypeError(
                f"Model.to_unconstrained: expected a dict, got {type(params).__name__}."
            )
        missing = [n for n in self.names if n not in params]
        extra = [n for n in params if n not in self.constraints]
        if missing or extra:
            raise ValueError(
                f"Model.to_unconstrained: parameters do not match the model: missing "
                f"{missing}, unknown {extra}; the model has {list(self.names)}."
            )
        parts = []
        for name, c in self.constraints.items():
            x = jnp.asarray(params[name], dtype=float)
            if x.shape != c.shape:
                raise ValueError(
                    f"Model.to_unconstrained: {name!r} has shape {x.shape}, the model says "
                    f"{c.shape}."
                )
            if not isinstance(x, jax.core.Tracer) and not c.check(x):
                raise ValueError(
                    f"Model.to_unconstrained: {name!r} = {np.asarray(x)!r} is outside the "
                    f"support of {c!r}."
                )
            parts.append(jnp.reshape(c.inverse(x), (-1,)))
        return jnp.concatenate(parts)

    def log_abs_det_jacobian(self, flat):
        """``sum log|dx/du|`` of all transforms at the flat vector ``flat``."""
        parts = self._split(flat)
        return sum(self.constraints[n].log_abs_det_jacobian(u) for n, u in parts.items())

    # ------------------------------------------------------------------ densities
    def logdensity(self, flat):
        """Log-density of the flat unconstrained vector: what Blackjax samples.

        ``logdensity_fn(to_constrained(flat)) + log|J|``.
        """
        return self.logdensity_fn(self.to_constrained(flat)) + self.log_abs_det_jacobian(flat)

    def log_likelihood(self, flat):
        """Per-observation log-likelihoods at the flat vector (``log_likelihood_fn``)."""
        if self.log_likelihood_fn is None:
            raise ValueError("Model.log_likelihood: this model has no log_likelihood_fn.")
        return self.log_likelihood_fn(self.to_constrained(flat))

    def init(self, rng_key, radius: float = 2.0):
        """A random start: uniform on ``(-radius, radius)`` in every unconstrained coordinate.

        Stan's convention; the sampler checks the start and retries.

        Examples
        --------
        >>> import jax
        >>> import mcmc_customgrad as mcg
        >>> m = mcg.Model(lambda p: -p["s"].sum(), params={"s": mcg.positive(shape=(3,))})
        >>> m.init(jax.random.key(0)).shape
        (3,)
        """
        return jax.random.uniform(rng_key, (self.dim,), minval=-radius, maxval=radius, dtype=float)

    # ------------------------------------------------------------------ validation
    def _check(self):
        flat = jax.ShapeDtypeStruct((self.dim,), jnp.result_type(float))
        tracker = {}

        def traced(u):
            values = self.to_constrained(u)
            reads = _ReadTracker(values)
            tracker["reads"] = reads
            try:
                return self.logdensity_fn(reads)
            except _UndeclaredParameter as err:
                name = err.args[0] if err.args else err
                raise ValueError(
                    f"Model: logdensity_fn reads parameter {name!r}, which params does not "
                    f"declare (declared: {list(self.names)})."
                ) from err

        try:
            out = jax.eval_shape(traced, flat)
        except TypeError:
            # The function needs a real dict (it maps over params as a pytree, say): check
            # the output without tracking reads.
            tracker.clear()
            out = jax.eval_shape(lambda u: self.logdensity_fn(self.to_constrained(u)), flat)
        if not (
            hasattr(out, "shape") and out.shape == () and jnp.issubdtype(out.dtype, jnp.floating)
        ):
            raise ValueError(
                f"Model: logdensity_fn must return a real scalar, got {out!r}. Sum the terms."
            )
        if "reads" in tracker:
            unread = [n for n in self.names if n not in tracker["reads"].read]
            if unread:
                raise ValueError(
                    f"Model: params declares {unread} but logdensity_fn never reads them; "
                    "their posterior would be improper. Remove them or give them a prior."
                )
        if self.log_likelihood_fn is not None:
            ll = jax.eval_shape(lambda u: self.log_likelihood_fn(self.to_constrained(u)), flat)
            if not (hasattr(ll, "shape") and jnp.issubdtype(ll.dtype, jnp.floating)):
                raise ValueError(
                    f"Model: log_likelihood_fn must return a float array of per-observation "
                    f"log-likelihoods, got {ll!r}."
                )

    def __repr__(self):
        spec = ", ".join(f"{n}: {c!r}" for n, c in self.constraints.items())
        return f"Model({{{spec}}}, dim={self.dim})"
