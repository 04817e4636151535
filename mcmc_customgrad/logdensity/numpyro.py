"""NumPyro models in: :meth:`Model.from_numpyro <mcmc_customgrad.Model.from_numpyro>`.

A NumPyro model (a Python function calling ``numpyro.sample``, ``numpyro.factor``,
``numpyro.deterministic`` and ``numpyro.plate``) becomes an :class:`~mcmc_customgrad.Model`
that :func:`~mcmc_customgrad.sample` samples with the library's solver statistics and
diagnostics. Nothing here re-implements a density: NumPyro computes it.

- **Log-density**: ``numpyro.infer.util.log_density`` of the model with every latent
  site substituted by its constrained value (priors, observed sites, ``numpyro.factor``
  terms and ``numpyro.handlers.scale`` all count, as in NumPyro's own
  ``potential_energy``); the model's positional and keyword arguments are bound when the
  model is converted.
- **Parameters**: the latent (not observed) sample sites, in the order the model visits
  them, with their names and constrained shapes. Each site's support gives the
  transform through NumPyro's ``biject_to``: the identity, ``exp`` and the scaled
  sigmoid of ``real``, ``positive`` and ``interval`` supports become
  :func:`~mcmc_customgrad.real`, :func:`~mcmc_customgrad.positive` and
  :func:`~mcmc_customgrad.interval` (the same maps as NumPyro's, so the unconstrained
  coordinates are NumPyro's); any other bijection that keeps the site's shape
  (``ordered_vector``, ``positive_ordered_vector``, ``greater_than``, ``less_than``,
  ``softplus_positive``, an interval whose bounds differ by element) is wrapped as it
  is in a :class:`NumPyroSupport` constraint.
- **Pointwise log-likelihood**: ``numpyro.infer.util.log_likelihood`` at the observed
  sites (``numpyro.factor`` terms left out), flattened and concatenated in site order:
  the ``log_likelihood`` group of :func:`~mcmc_customgrad.sample`, for LOO and WAIC.
- **Deterministic sites** are not sampled parameters: pass
  ``generated_quantities=model.deterministics`` to :func:`~mcmc_customgrad.sample` to
  record them in the posterior group.
- :func:`mcmc_to_inference_data` turns a NumPyro ``MCMC`` run into a run that
  :func:`~mcmc_customgrad.compare_chains` reads, to compare the two samplers.

What is not supported, with a clear error when the model is converted:

- discrete latent sites (``NotImplementedError``): NUTS needs a differentiable density.
  Marginalise them out in the model (a ``logsumexp`` over their values in a
  ``numpyro.factor``) or use NumPyro's own MCMC, which enumerates them;
- plates with ``subsample_size`` smaller than their size (``NotImplementedError``): the
  log-density would be a different random estimate at every evaluation, which HMC's
  accept step cannot use;
- supports whose bijection changes the shape (``simplex``, ``corr_cholesky``,
  ``lower_cholesky``, ``positive_definite``, ``sphere``, ``zero_sum``, ...;
  ``NotImplementedError``): an :class:`~mcmc_customgrad.Model` parameter has one shape on
  both scales. Reparameterise (a Dirichlet as normalised Gamma variables, below);
- supports whose bounds depend on other latent sites (``Uniform(0, theta)``;
  ``NotImplementedError``): a Model's constraints are fixed. Sample a ``Uniform(0, 1)``
  and scale it by ``theta`` in a ``numpyro.deterministic``;
- ``numpyro.param`` sites (``NotImplementedError``): they are optimised by SVI, not
  sampled; give them a prior, or pass their value as data;
- latent ``Delta`` sites (``ValueError``, as NumPyro's own MCMC): use
  ``numpyro.deterministic``;
- a model with no latent site (``ValueError``): there is nothing to sample.

NumPyro is an optional dependency (``pip install 'mcmc_customgrad[numpyro]'``), imported
only when a model is converted.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np

from .constraints import Constraint, interval, positive, real
from .model import Model

__all__ = [
    "from_numpyro",
    "NumPyroModel",
    "NumPyroSupport",
    "mcmc_to_inference_data",
    "MCMC_EXTRA_FIELDS",
]

#: ``extra_fields`` to pass to NumPyro's ``MCMC.run`` so that :func:`mcmc_to_inference_data`
#: fills ``sample_stats`` as :func:`~mcmc_customgrad.sample` does.
MCMC_EXTRA_FIELDS = (
    "diverging",
    "energy",
    "num_steps",
    "accept_prob",
    "potential_energy",
    "adapt_state.step_size",
)

#: NumPyro's extra field -> the name in :func:`~mcmc_customgrad.sample`'s ``sample_stats``.
_STAT_NAMES = {
    "diverging": "diverging",
    "energy": "energy",
    "num_steps": "n_steps",
    "accept_prob": "acceptance_rate",
    "adapt_state.step_size": "step_size",
}

_SIMPLEX_HINT = (
    " For a Dirichlet(alpha) site, sample g ~ Gamma(alpha, 1) (positive, same shape) and "
    "record numpyro.deterministic(name, g / g.sum(-1, keepdims=True)): the same law."
)


def _import_numpyro():
    try:
        import numpyro
        import numpyro.distributions
        import numpyro.infer.util
    except ImportError as err:
        raise ImportError(
            "Model.from_numpyro needs NumPyro, an optional dependency of mcmc_customgrad: "
            "pip install 'mcmc_customgrad[numpyro]'"
        ) from err
    return numpyro


# --------------------------------------------------------------------------- constraints


@dataclasses.dataclass(frozen=True, eq=False)
class NumPyroSupport(Constraint):
    """A NumPyro support and its ``biject_to`` bijection, as a shape-keeping constraint.

    The generic path of :meth:`Model.from_numpyro <mcmc_customgrad.Model.from_numpyro>`
    for supports that :func:`~mcmc_customgrad.real`, :func:`~mcmc_customgrad.positive`
    and :func:`~mcmc_customgrad.interval` do not express, such as ``ordered_vector``,
    ``greater_than(c)`` or ``softplus_positive``. The bijection must map arrays of
    ``shape`` to arrays of the same shape.

    Parameters
    ----------
    shape : tuple of int
        Shape of the parameter (the same on both scales).
    support : numpyro.distributions.constraints.Constraint
        The site's support, used by :meth:`check`.
    transform : numpyro.distributions.transforms.Transform
        ``biject_to(support)``: unconstrained to constrained.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> jax.config.update("jax_enable_x64", True)
    >>> from numpyro.distributions import constraints, transforms
    >>> from mcmc_customgrad.logdensity.numpyro import NumPyroSupport
    >>> support = constraints.ordered_vector
    >>> c = NumPyroSupport((3,), support, transforms.biject_to(support))
    >>> x = c.forward(jnp.array([0.5, 0.0, 1.0]))
    >>> [round(v, 6) for v in x.tolist()], c.check(x)
    ([0.5, 1.5, 4.218282], True)
    >>> float(c.log_abs_det_jacobian(jnp.array([0.5, 0.0, 1.0])))  # 0 + 1: the exp steps
    1.0
    """

    support: object = None
    transform: object = None

    def __post_init__(self):
        super().__post_init__()
        if self.transform is None or self.support is None:
            raise TypeError("NumPyroSupport: give the NumPyro support and its transform.")

    def forward(self, u):
        """Unconstrained ``u`` to constrained ``x``: ``transform(u)``."""
        return self.transform(u)

    def inverse(self, x):
        """Constrained ``x`` to unconstrained ``u``: ``transform.inv(x)``."""
        return self.transform.inv(x)

    def log_abs_det_jacobian(self, u):
        """``sum log |dx/du|`` at ``u``, from the transform's own log-Jacobian."""
        return jnp.sum(self.transform.log_abs_det_jacobian(u, self.transform(u)))

    def check(self, x) -> bool:
        """True when ``x`` is finite and the NumPyro support holds it."""
        x = jnp.asarray(x)
        return bool(np.all(np.isfinite(np.asarray(x))) and np.all(np.asarray(self.support(x))))

    def __eq__(self, other):
        return self is other

    def __hash__(self):
        return id(self)

    def __repr__(self):
        return f"NumPyroSupport({self.support!r}, shape={self.shape})"


def _uniform_scalar(value):
    """``float(value)`` when every element is the same finite number, else None."""
    arr = np.asarray(value, dtype=float)
    if arr.size == 0 or not np.all(np.isfinite(arr)) or np.ptp(arr) != 0:
        return None
    return float(arr.flat[0])


def _builtin(transform, shape, T):
    """The library's own constraint when ``transform`` is one of its maps, else None."""
    while isinstance(transform, T.IndependentTransform):
        transform = transform.base_transform
    if isinstance(transform, T.IdentityTransform):
        return real(shape)
    if isinstance(transform, T.ExpTransform):
        return positive(shape)
    if isinstance(transform, T.SigmoidTransform):
        return interval(0.0, 1.0, shape)
    if isinstance(transform, T.ComposeTransform):
        parts = transform.parts
        if (
            len(parts) == 2
            and isinstance(parts[0], T.SigmoidTransform)
            and isinstance(parts[1], T.AffineTransform)
        ):
            loc, scale = _uniform_scalar(parts[1].loc), _uniform_scalar(parts[1].scale)
            if loc is not None and scale is not None and scale > 0:
                return interval(loc, loc + scale, shape)
    return None


def _constraint(name, support, shape, numpyro):
    """The constraint of one continuous latent site (NotImplementedError when none)."""
    try:
        transform = numpyro.distributions.transforms.biject_to(support)
    except NotImplementedError as err:
        raise NotImplementedError(
            f"Model.from_numpyro: latent site {name!r} has support {support!r}, for which "
            "NumPyro has no bijection from the reals (biject_to), so it cannot be sampled "
            "with NUTS. Reparameterise the site (numpyro.handlers.reparam) or give it a "
            "distribution with a continuous support."
        ) from err
    unconstrained = tuple(transform.inverse_shape(shape))
    if unconstrained != shape:
        hint = _SIMPLEX_HINT if "simplex" in type(support).__name__.lower() else ""
        raise NotImplementedError(
            f"Model.from_numpyro: latent site {name!r} has support {support!r}, whose "
            f"bijection maps unconstrained values of shape {unconstrained} to shape {shape}. "
            "An mcg.Model parameter has one shape on both scales, so shape-changing "
            "supports (simplex, corr_cholesky, lower_cholesky, positive_definite, sphere, "
            "zero_sum, ...) are not supported; reparameterise "
            "the site with unconstrained or positive variables of the same shape and "
            f"record the transformed value with numpyro.deterministic.{hint}"
        )
    builtin = _builtin(transform, shape, numpyro.distributions.transforms)
    return builtin if builtin is not None else NumPyroSupport(shape, support, transform)


# --------------------------------------------------------------------------- model checks


def _support_leaves(obj, numpyro, depth=0):
    """The numbers and arrays a NumPyro constraint is built from (its bounds)."""
    if isinstance(obj, numpyro.distributions.constraints.Constraint) and depth < 5:
        return [x for v in vars(obj).values() for x in _support_leaves(v, numpyro, depth + 1)]
    if isinstance(obj, list | tuple) and depth < 5:
        return [x for v in obj for x in _support_leaves(v, numpyro, depth + 1)]
    if isinstance(obj, jax.Array | np.ndarray | float | int) and not isinstance(obj, bool):
        return [obj]
    return []


def _trace(bound, numpyro, substitute=None, data=None, key=0):
    handlers = numpyro.handlers
    fn = handlers.seed(bound, rng_seed=key)
    if substitute is not None:
        fn = handlers.substitute(fn, substitute_fn=substitute)
    if data is not None:
        fn = handlers.substitute(fn, data=data)
    return handlers.trace(fn).get_trace()


def _is_factor(site, numpyro):
    return isinstance(site["fn"], numpyro.distributions.Unit) or site["infer"].get(
        "is_auxiliary", False
    )


def _classify(tr, numpyro) -> dict:
    """Sort a trace's sites; list what is unsupported (Python-level: runs while tracing)."""
    out = {"latent": {}, "observed": [], "deterministic": [], "problems": [], "delta": []}
    for name, site in tr.items():
        kind = site["type"]
        if kind == "plate":
            size, subsample_size = site["args"]
            if subsample_size is not None and subsample_size != size:
                out["problems"].append(
                    f"plate {name!r} subsamples {subsample_size} of {size} elements "
                    "(subsample_size): the log-density would be a new random estimate at "
                    "every evaluation, which HMC's accept step cannot use; drop "
                    "subsample_size to use all the data"
                )
        elif kind == "param":
            out["problems"].append(
                f"site {name!r} is a numpyro.param, which SVI optimises and MCMC does not "
                "sample; give it a prior (numpyro.sample) or pass its value as data"
            )
        elif kind == "deterministic":
            out["deterministic"].append(name)
        elif kind == "sample" and site["is_observed"]:
            if not _is_factor(site, numpyro):
                out["observed"].append(name)
        elif kind == "sample":
            support = site["fn"].support
            if support.is_discrete:
                out["problems"].append(
                    f"latent site {name!r} is discrete ({type(site['fn']).__name__}, "
                    f"support {support!r}); NUTS needs a differentiable density: marginalise "
                    "it out in the model (a logsumexp over its values in a numpyro.factor) "
                    "or use NumPyro's own MCMC, which enumerates discrete sites"
                )
            elif isinstance(site["fn"], numpyro.distributions.Delta):
                out["delta"].append(name)
            else:
                out["latent"][name] = tuple(np.shape(site["value"]))
    return out


def _inspect(bound, numpyro):
    """Trace the model once, every latent site at a feasible value; check its sites.

    The trace runs under ``jax.jit`` with the continuous latent sites' supports as the only
    outputs, so nothing but their bounds is computed (running a model eagerly, op by op,
    costs seconds of dispatch).
    """
    from numpyro.infer.initialization import init_to_feasible

    found = {}

    def structure():
        tr = _trace(bound, numpyro, substitute=init_to_feasible)
        found.update(_classify(tr, numpyro))
        return {n: tr[n]["fn"].support for n in found["latent"]}

    try:
        try:
            supports = jax.jit(structure)()
        except NotImplementedError:  # a support that is not a pytree: run the model eagerly
            found.clear()
            supports = structure()
    except Exception as err:
        err.add_note(
            "(raised by Model.from_numpyro, which runs the model once with its arguments "
            "and every latent site at a feasible value to find its sites)"
        )
        raise
    if found["delta"]:
        raise ValueError(
            f"Model.from_numpyro: latent site(s) {found['delta']} have a Delta distribution, "
            "which has no density to sample; record such values with numpyro.deterministic."
        )
    if found["problems"]:
        raise NotImplementedError(
            "Model.from_numpyro: this NumPyro model uses what mcmc_customgrad does not "
            "support: " + "; ".join(found["problems"]) + "."
        )
    if not found["latent"]:
        raise ValueError(
            "Model.from_numpyro: the model has no latent sample site (every sample site "
            "is observed or a numpyro.factor), so there is nothing to sample. Check that "
            "the parameters are numpyro.sample sites without obs=."
        )
    return found, supports


def _dynamic_supports(bound, names, values, numpyro):
    """Latent sites whose support's bounds depend on latent values.

    The model is traced to a jaxpr (nothing runs) with the supports' bounds as outputs;
    a bound depends on a latent value when the jaxpr's data flow leads from that input
    to that output (conservatively: through any equation).
    """
    owners = []

    def bounds(values):
        tr = _trace(bound, numpyro, data=values)
        out = []
        for name in names:
            leaves = _support_leaves(tr[name]["fn"].support, numpyro)
            owners.extend([name] * len(leaves))
            out.extend(jnp.asarray(x) for x in leaves)
        return out

    jaxpr = jax.make_jaxpr(bounds)(values).jaxpr
    tainted = set(jaxpr.invars)
    for eqn in jaxpr.eqns:
        if any(not isinstance(v, jax.extend.core.Literal) and v in tainted for v in eqn.invars):
            tainted.update(eqn.outvars)
    found = {
        owner
        for owner, v in zip(owners, jaxpr.outvars, strict=True)
        if not isinstance(v, jax.extend.core.Literal) and v in tainted
    }
    return [n for n in names if n in found]


# --------------------------------------------------------------------------- the model


def _copy_numpy(x):
    return np.array(x, copy=True) if isinstance(x, np.ndarray) else x


class NumPyroModel(Model):
    """An :class:`~mcmc_customgrad.Model` made from a NumPyro model by ``from_numpyro``.

    A ``Model`` in every respect (sample it with :func:`~mcmc_customgrad.sample`), with
    the NumPyro model and its sites at hand.

    Attributes
    ----------
    model_fn : callable
        The NumPyro model.
    model_args : tuple
        Its positional arguments, bound at conversion.
    model_kwargs : dict
        Its keyword arguments, bound at conversion.
    observed : tuple of str
        Observed sample sites, in the order their pointwise log-likelihoods are
        concatenated by ``log_likelihood`` (``numpyro.factor`` sites are not among them).
    deterministic : tuple of str
        The model's ``numpyro.deterministic`` sites (see :meth:`deterministics`).

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> jax.config.update("jax_enable_x64", True)
    >>> import numpyro, numpyro.distributions as dist
    >>> import mcmc_customgrad as mcg
    >>> def model(y):
    ...     mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    ...     numpyro.deterministic("twice", 2 * mu)
    ...     numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)
    >>> m = mcg.Model.from_numpyro(model, jnp.array([0.1, 0.5]))
    >>> m.observed, m.deterministic
    (('y',), ('twice',))
    >>> {k: float(v) for k, v in m.deterministics({"mu": 0.25}, jax.random.key(0)).items()}
    {'twice': 0.5}
    """

    def __init__(self, model_fn, args, kwargs):
        numpyro = _import_numpyro()
        if not callable(model_fn):
            raise TypeError(
                "Model.from_numpyro: model_fn must be a NumPyro model (a callable using "
                f"numpyro.sample), got {type(model_fn).__name__}."
            )
        # Bound now: NumPy arrays are copied, so that changing the caller's array later
        # does not change the model (JAX arrays are immutable already).
        args, kwargs = jax.tree.map(_copy_numpy, (tuple(args), dict(kwargs)))
        self.model_fn, self.model_args, self.model_kwargs = model_fn, args, kwargs
        bound = functools.partial(model_fn, *self.model_args, **self.model_kwargs)
        self._bound, self._numpyro = bound, numpyro
        found, supports = _inspect(bound, numpyro)
        shapes = found["latent"]
        names = tuple(shapes)
        dtype = jnp.result_type(float)
        templates = {n: jax.ShapeDtypeStruct(shape, dtype) for n, shape in shapes.items()}
        dynamic = _dynamic_supports(bound, names, templates, numpyro)
        if dynamic:
            raise NotImplementedError(
                f"Model.from_numpyro: the support of latent site(s) {dynamic} depends on "
                "other latent sites (as in Uniform(0, theta)); an mcg.Model's constraints "
                "are fixed when it is built. Sample a fixed-support variable instead (say "
                "u ~ Uniform(0, 1)) and record the scaled value with numpyro.deterministic."
            )
        self.observed, self.deterministic = tuple(found["observed"]), tuple(found["deterministic"])
        params = {n: _constraint(n, supports[n], shapes[n], numpyro) for n in names}
        log_likelihood_fn = self._log_likelihood_fn if self.observed else None
        super().__init__(self._logdensity_fn, params, log_likelihood_fn=log_likelihood_fn)

    def _values(self, params):
        return {n: params[n] for n in self.names}

    def _logdensity_fn(self, params):
        log_density = self._numpyro.infer.util.log_density
        return log_density(self._bound, (), {}, self._values(params))[0]

    def _log_likelihood_fn(self, params):
        log_likelihood = self._numpyro.infer.util.log_likelihood
        pointwise = log_likelihood(self._bound, self._values(params), batch_ndims=0)
        return jnp.concatenate([jnp.ravel(pointwise[n]) for n in self.observed])

    def deterministics(self, params, key=None) -> dict:
        """The ``numpyro.deterministic`` sites at constrained ``params``.

        Its signature is that of :func:`~mcmc_customgrad.sample`'s
        ``generated_quantities``: pass ``generated_quantities=model.deterministics`` to
        record the sites in the posterior group.

        Parameters
        ----------
        params : dict
            Constrained values of the latent sites, by name.
        key : jax.random.key, optional
            Seeds the model (it needs none unless it draws random numbers itself).

        Returns
        -------
        dict
            ``{site name: value}``; empty when the model has no deterministic site.

        Examples
        --------
        >>> import jax, jax.numpy as jnp
        >>> jax.config.update("jax_enable_x64", True)
        >>> import numpyro, numpyro.distributions as dist
        >>> import mcmc_customgrad as mcg
        >>> def model():
        ...     s = numpyro.sample("log_s", dist.Normal(0.0, 1.0))
        ...     numpyro.deterministic("s", jnp.exp(s))
        >>> m = mcg.Model.from_numpyro(model)
        >>> float(m.deterministics({"log_s": jnp.array(0.0)})["s"])
        1.0
        """
        tr = _trace(
            self._bound, self._numpyro, data=self._values(params), key=0 if key is None else key
        )
        return {n: tr[n]["value"] for n in self.deterministic}

    def __repr__(self):
        name = getattr(self.model_fn, "__name__", type(self.model_fn).__name__)
        return f"NumPyroModel({name}, " + super().__repr__()[len("Model(") :]


def from_numpyro(model_fn, /, *args, **kwargs) -> NumPyroModel:
    """A NumPyro model as an :class:`~mcmc_customgrad.Model`; see ``Model.from_numpyro``.

    Parameters
    ----------
    model_fn : callable
        The NumPyro model.
    *args, **kwargs
        Its arguments (the data), bound now.

    Returns
    -------
    NumPyroModel

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> jax.config.update("jax_enable_x64", True)
    >>> import numpyro, numpyro.distributions as dist
    >>> from mcmc_customgrad.logdensity.numpyro import from_numpyro
    >>> def model():
    ...     numpyro.sample("p", dist.Beta(2.0, 3.0))
    >>> from_numpyro(model).constraints["p"]
    mcg.interval(0.0, 1.0)
    """
    return NumPyroModel(model_fn, args, kwargs)


# --------------------------------------------------------------------------- NumPyro runs


def mcmc_to_inference_data(mcmc, attrs=None):
    """A finished NumPyro ``MCMC`` run as a run the diagnostics read.

    The posterior holds NumPyro's constrained draws (latent and deterministic sites) by
    name, ``(chain, draw, ...)``; ``sample_stats`` holds, under
    :func:`~mcmc_customgrad.sample`'s names, the extra fields the run collected: run it
    with ``extra_fields=MCMC_EXTRA_FIELDS`` (this module's constant) for ``diverging``,
    ``energy``, ``n_steps``, ``acceptance_rate``, ``step_size`` and ``lp``. The attribute
    ``num_grad_evals`` (draws only) is set when ``num_steps`` was collected, so the
    efficiency checks of :func:`~mcmc_customgrad.compare_chains` can use it.

    Parameters
    ----------
    mcmc : numpyro.infer.MCMC
        After ``mcmc.run(...)``.
    attrs : dict, optional
        More run attributes.

    Returns
    -------
    arviz.InferenceData or xarray.DataTree
        As :func:`mcmc_customgrad.diagnostics.to_inference_data` builds it.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> jax.config.update("jax_enable_x64", True)
    >>> import numpyro, numpyro.distributions as dist
    >>> from numpyro.infer import MCMC, NUTS
    >>> from mcmc_customgrad.logdensity.numpyro import MCMC_EXTRA_FIELDS, mcmc_to_inference_data
    >>> def model():
    ...     numpyro.sample("x", dist.Normal(0.0, 1.0))
    >>> mcmc = MCMC(NUTS(model), num_warmup=50, num_samples=20, progress_bar=False)
    >>> mcmc.run(jax.random.key(0), extra_fields=MCMC_EXTRA_FIELDS)
    >>> run = mcmc_to_inference_data(mcmc)
    >>> run.posterior["x"].shape, sorted(run.sample_stats.data_vars)[:3]
    ((1, 20), ['acceptance_rate', 'diverging', 'energy'])
    """
    from .._arviz import to_inference_data

    posterior = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    extra = mcmc.get_extra_fields(group_by_chain=True)
    stats = {_STAT_NAMES[k]: np.asarray(v) for k, v in extra.items() if k in _STAT_NAMES}
    if "potential_energy" in extra:
        stats["lp"] = -np.asarray(extra["potential_energy"])
    run_attrs = {"inference_library": "numpyro"}
    if "n_steps" in stats:
        run_attrs["num_grad_evals"] = int(stats["n_steps"].sum())
    run_attrs.update(attrs or {})
    return to_inference_data(posterior, stats, attrs=run_attrs)
