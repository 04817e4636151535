"""``mcg.sample``: a log-density (or a Model) -> ArviZ InferenceData, with Blackjax NUTS."""

from __future__ import annotations

import hashlib
import platform
import time
import warnings
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from .. import _arviz
from .._args import check_int, check_scalar_density, flat_labels
from .._cache import configure_cache
from .._errors import surface_solver_errors
from .._order import after
from .._precision import warn_if_float32
from .._version import __version__
from ..caches import lru_cache
from ..implicit.stats import with_solver_stats
from ..logdensity import Model
from ._chains import CHAIN_METHODS, ChainMap
from ._checkpoint import Checkpoint, open_checkpoint
from ._identity import density_fingerprint, outputs_fingerprint
from ._kernels import (
    KERNELS,
    MAX_INIT_TRIES,
    Record,
    Settings,
    draws_fn,
    start_fn,
    value_and_grad_fn,
    warmup_fn,
)
from ._processes import agree_min, gather, is_main, process_count
from ._progress import Progress, progress_enabled
from ._warnings import SamplingWarning, diagnose, genuine_divergences

__all__ = ["sample", "InitializationError"]

PROBE_SEED = 20261203  # fixed: a checkpoint's probe points must not depend on the seed
TRANSITION_STATS = ("diverging", "energy", "acceptance_rate", "n_steps", "tree_depth")


class InitializationError(ValueError):
    """No start with a finite log-density and gradient was found."""


# ----------------------------------------------------------------------------- input


def _check_settings(
    kernel,
    chain_method,
    target_accept,
    num_chains,
    num_warmup,
    num_samples,
    max_treedepth,
    num_integration_steps,
    progress_bar,
    checkpoint_every,
    **flags,
):
    if kernel not in KERNELS:
        raise ValueError(f"sample: unknown kernel {kernel!r}; choose one of {KERNELS}.")
    if chain_method not in CHAIN_METHODS:
        raise ValueError(
            f"sample: unknown chain_method {chain_method!r}; choose one of {CHAIN_METHODS}."
        )
    if isinstance(target_accept, bool) or not (
        isinstance(target_accept, int | float) and 0 < target_accept < 1
    ):
        raise ValueError(f"sample: target_accept must lie in (0, 1), got {target_accept!r}.")
    check_int("sample", "num_chains", num_chains, 1)
    check_int("sample", "num_warmup", num_warmup, 1)
    check_int("sample", "num_samples", num_samples, 1)
    check_int("sample", "max_treedepth", max_treedepth, 1)
    check_int("sample", "num_integration_steps", num_integration_steps, 1)
    check_int("sample", "checkpoint_every", checkpoint_every, 1)
    if progress_bar not in (None, True, False):
        raise ValueError(f"sample: progress_bar must be None, True or False, got {progress_bar!r}.")
    for name, value in flags.items():
        if not isinstance(value, bool | np.bool_):
            raise TypeError(f"sample: {name} must be True or False, got {value!r}.")


def _root_key(seed):
    if isinstance(seed, jax.Array) and jnp.issubdtype(seed.dtype, jax.dtypes.prng_key):
        if seed.shape != ():
            raise ValueError(f"sample: seed must be one PRNG key, got shape {seed.shape}.")
        return seed, "key:" + ",".join(map(str, np.asarray(jax.random.key_data(seed)).ravel()))
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TypeError(f"sample: seed must be an int or a jax.random.key, got {seed!r}.")
    return jax.random.key(int(seed)), int(seed)


class Target:
    """What is sampled: the flat log-density, its layout and how to report draws.

    Internal API of :mod:`mcmc_customgrad.sampling` for the diagnostics that drive
    chains of their own (:func:`~mcmc_customgrad.diagnostics.coupled_chains`), with
    :func:`initial_positions`: ``Target(model_or_logdensity, init, init_per_chain,
    num_chains)`` as :func:`~mcmc_customgrad.sample` takes them.
    """

    def __init__(self, model_or_logdensity, init, init_per_chain, num_chains):
        self.model = model_or_logdensity if isinstance(model_or_logdensity, Model) else None
        if self.model is not None:
            m = self.model
            self.logdensity = m.logdensity
            self.template = jax.ShapeDtypeStruct((m.dim,), jnp.result_type(float))
            self.labels = m.labels
            self.log_likelihood = m.log_likelihood if m.log_likelihood_fn is not None else None
        elif callable(model_or_logdensity):
            self.logdensity = model_or_logdensity
            self.log_likelihood = None
            if init is None:
                raise ValueError(
                    "sample: a plain log-density needs init, a starting position (pytree of "
                    "float arrays) or a callable init(key) -> position; an mcg.Model draws "
                    "its own."
                )
        else:
            raise TypeError(
                "sample: expected an mcg.Model or a callable logdensity_fn(position) -> "
                f"scalar, got {type(model_or_logdensity).__name__}."
            )
        self.init, self.init_per_chain, self.num_chains = init, init_per_chain, num_chains
        self._base = None
        if self.model is None:
            self.template = self._template_from_init()
            leaves = jax.tree_util.tree_flatten_with_path(self.template)[0]
            names = [jax.tree_util.keystr(p, simple=True, separator=".") or "x" for p, _ in leaves]
            self.names = names
            self.labels = flat_labels(
                (n, leaf.shape) for n, (_, leaf) in zip(names, leaves, strict=True)
            )
        self._check_output()

    def _template_from_init(self):
        if callable(self.init):
            out = jax.eval_shape(self.init, jax.random.key(0))
        else:
            out = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), _dtype(x)), self.init)
            if self.init_per_chain:
                out = jax.tree.map(lambda s: self._strip_chain_axis(s), out)
        leaves = jax.tree.leaves(out)
        if not leaves:
            raise ValueError("sample: init is empty; give a pytree of float arrays.")
        for leaf in leaves:
            if not jnp.issubdtype(leaf.dtype, jnp.floating):
                raise TypeError(f"sample: init must hold float arrays, got dtype {leaf.dtype}.")
        return out

    def _strip_chain_axis(self, s):
        if not s.shape or s.shape[0] != self.num_chains:
            raise ValueError(
                f"sample: with init_per_chain=True every init leaf needs a leading axis of "
                f"length num_chains={self.num_chains}, got shape {s.shape}."
            )
        return jax.ShapeDtypeStruct(s.shape[1:], s.dtype)

    def _check_output(self):
        where = f"at a position shaped like init ({_describe(self.template)})"
        check_scalar_density("sample", "model_or_logdensity", self.logdensity, self.template, where)

    # -------------------------------------------------------------- initial points
    def draw(self, key):
        """Initial positions for every chain (a fresh draw; the first try)."""
        keys = jax.random.split(key, self.num_chains)
        if self.model is not None and self.init is None:
            return jax.vmap(self.model.init)(keys)
        if self.model is not None:
            if isinstance(self.init, Mapping):
                flat = self.model.to_unconstrained(self.init)
            else:
                flat = jnp.asarray(self.init, dtype=float)
                shape = (
                    (self.num_chains, self.model.dim) if self.init_per_chain else (self.model.dim,)
                )
                if flat.shape != shape:
                    raise ValueError(
                        f"sample: init for this model is a dict of constrained values or a "
                        f"flat unconstrained vector of shape {shape}, got {flat.shape}."
                    )
            self._base = flat
            return (
                flat
                if self.init_per_chain
                else jnp.broadcast_to(flat, (self.num_chains, flat.shape[-1]))
            )
        if callable(self.init):
            return jax.vmap(self.init)(keys)
        base = jax.tree.map(lambda x: jnp.asarray(x, _dtype(x)), self.init)
        self._base = base
        if self.init_per_chain:
            return base
        return jax.tree.map(lambda x: jnp.broadcast_to(x, (self.num_chains, *x.shape)), base)

    @property
    def given(self) -> bool:
        """The start is a given position (jittered on failure), not a random draw."""
        return self._base is not None

    def propose(self, key, first):
        """A new candidate for one chain whose start ``first`` failed.

        A fresh draw for random inits (a Model's default or a callable), else ``first``
        jittered by U(-1, 1) in every coordinate.
        """
        if not self.given:
            return self.model.init(key) if self.model is not None else self.init(key)
        leaves, treedef = jax.tree.flatten(first)
        keys = jax.random.split(key, len(leaves))
        return treedef.unflatten(
            [
                x + jax.random.uniform(k, x.shape, x.dtype, -1.0, 1.0)
                for k, x in zip(keys, leaves, strict=True)
            ]
        )

    def describe_position(self, position, grad) -> str:
        """Name the coordinates of one chain's start whose gradient is not finite."""
        flat = np.concatenate([np.ravel(x) for x in jax.tree.leaves(position)])
        g = np.concatenate([np.ravel(x) for x in jax.tree.leaves(grad)])
        bad = [i for i in range(g.size) if not np.isfinite(g[i])]
        if self.model is not None:
            values = np.concatenate(
                [np.ravel(v) for v in self.model.to_constrained(jnp.asarray(flat)).values()]
            )
            where = "constrained value"
        else:
            values, where = flat, "value"
        shown = bad[:5] or range(min(g.size, 5))
        parts = [f"{self.labels[i]} = {_fmt6(values[i])} ({where})" for i in shown]
        head = "gradient not finite at " if bad else "at "
        return head + ", ".join(parts) + (" ..." if len(bad) > 5 else "")


def _fmt6(value) -> str:
    """``{:.6g}``, with NaN spelled ``NaN``."""
    return "NaN" if np.isnan(value) else f"{value:.6g}"


def _dtype(x):
    return jnp.result_type(x) if not isinstance(x, float | int) else jnp.result_type(float)


def _describe(tree) -> str:
    return str(jax.tree.map(lambda s: f"{s.dtype}{list(s.shape)}", tree))


@lru_cache(maxsize=64)
def _value_and_grad_batched(logdensity):
    return jax.jit(jax.vmap(value_and_grad_fn(logdensity)))


def _number(value) -> str:
    """A float for a message: ``NaN``, ``inf``, ``-inf`` or ``repr``."""
    value = float(value)
    return "NaN" if np.isnan(value) else repr(value)


def _solver_note(logdensity, position, advice: bool = True) -> str:
    """Why the log-density is not finite at ``position``, when an inner solve says so.

    With ``advice``, what to change follows.
    """
    try:
        _, stats = with_solver_stats(logdensity)(position)
        solves, converged = int(stats.num_solves), bool(stats.converged)
        steps, residual = int(stats.num_steps), float(stats.residual_norm)
    except Exception:  # the statistics are a courtesy; the error below stands without them
        return ""
    if solves == 0 or converged:
        return ""
    note = (
        f"An inner solve did not converge there ({solves} solve{'s' * (solves > 1)}, "
        f"{steps} steps in all, largest residual {_number(residual)}), so the log-density "
        "is NaN (on_failure='nan')."
    )
    if not advice:
        return note
    return note + (
        " Give the solver a start y0 nearer the solution (a function of the parameters), "
        "a larger max_steps or another solver, or give init a point where the inner "
        "problem has a solution."
    )


def _why_not_finite(target: Target, first, first_values, chain) -> str:
    """Why chain ``chain``'s first start was refused: its values and, if so, the solver."""
    lp0, grad0 = first_values
    one = jax.tree.map(lambda x: x[chain], first)
    detail = target.describe_position(one, jax.tree.map(lambda x: x[chain], grad0))
    return f"the log-density is {_number(lp0[chain])}, {detail}", one


def initial_positions(target: Target, key, warn: bool = True):
    """Starts with a finite log-density and gradient, retrying failed chains.

    Internal API of :mod:`mcmc_customgrad.sampling` (see :class:`Target`): returns
    ``(positions, log_densities)``, one row per chain, or raises
    :class:`InitializationError`.

    The first starts are checked in one batched call; chains whose start failed get new
    candidates from :func:`~mcmc_customgrad.sampling._kernels.start_fn` (the retry
    ``sbc`` uses too), keyed per chain. A given init (not a random draw) that had to be
    jittered is reported with a :class:`SamplingWarning` naming the chains and the
    reason, when ``warn``.
    """
    vg = _value_and_grad_batched(target.logdensity)
    first = target.draw(key)
    lp, grad = vg(first)
    ok = np.isfinite(np.asarray(lp))
    for g in jax.tree.leaves(grad):
        ok &= np.all(np.isfinite(np.asarray(g)).reshape(ok.shape[0], -1), axis=1)
    if ok.all():
        return first, lp
    moved = [int(c) for c in np.flatnonzero(~ok)]
    reason, one = _why_not_finite(target, first, (lp, grad), moved[0])
    start = jax.jit(jax.vmap(start_fn(target.logdensity, target.propose)))
    positions, found, tries = start(
        jax.random.split(jax.random.fold_in(key, 1), target.num_chains), first
    )
    found = np.asarray(found)
    if not found.all():
        chain = int(np.flatnonzero(~found)[0])
        reason, one = _why_not_finite(target, first, (lp, grad), chain)
        hint = _solver_note(target.logdensity, one) or (
            "Give init a point inside the support, and check the model for log(0) or an "
            "inner solve that fails there (mcg.check_gradients helps)."
        )
        raise InitializationError(
            f"sample: chain {chain}: no start with a finite log-density and gradient after "
            f"{MAX_INIT_TRIES} tries. At the first start {reason}. {hint}"
        )
    if warn and target.given:
        retries = int(np.asarray(tries).max()) - 1
        note = _solver_note(target.logdensity, one, advice=False)
        warnings.warn(
            f"sample: the given init is not a valid start for chain"
            f"{'s' * (len(moved) > 1)} {', '.join(map(str, moved))}: at chain "
            f"{moved[0]}'s start {reason}. "
            + (note + " " if note else "")
            + f"{'They start' if len(moved) > 1 else 'It starts'} from the init jittered "
            f"by U(-1, 1) instead (up to {retries} {'retry' if retries == 1 else 'retries'} "
            "per chain). Give init a point where the log-density and its gradient are "
            "finite to start where you meant.",
            SamplingWarning,
            stacklevel=4,
        )
    return positions, vg(positions)[0]


# ----------------------------------------------------------------------- per-draw pass


@lru_cache(maxsize=64)
def _draw_one(logdensity, to_posterior, log_likelihood, solver_stats, generated=None, model=None):
    """What one draw writes: ``one(position, key) -> {group: {name: array}}``."""
    stats_fn = with_solver_stats(logdensity) if solver_stats else None

    def one(position, key):
        out = {"posterior": to_posterior(position)}
        if generated is not None:
            position = after(position, out)
            params = model.to_constrained(position) if model is not None else position
            extra = generated(params, key)
            if not isinstance(extra, dict) or not all(isinstance(k, str) for k in extra):
                raise TypeError(
                    "sample: generated_quantities must return a dict of name -> array, got "
                    f"{type(extra).__name__}."
                )
            clash = sorted(set(extra) & set(out["posterior"]))
            if clash:
                raise ValueError(
                    f"sample: generated_quantities returns {clash}, which are parameter names; "
                    "rename them."
                )
            out["posterior"] = {**out["posterior"], **extra}
        if stats_fn is not None:
            out["solver"] = stats_fn(after(position, out))[1]._asdict()
        if log_likelihood is not None:
            out["log_likelihood"] = log_likelihood(after(position, out))
        return out

    return one


@lru_cache(maxsize=64)
def _draw_pass(one):
    return jax.jit(jax.vmap(one))


def _check_draw_outputs(one, target, generated):
    """Trace the per-draw pass on the parameters' shapes, before anything is compiled.

    Returns the shapes of what one draw writes.

    A broken ``generated_quantities`` fails here rather than after the sampling.
    """
    try:
        return jax.eval_shape(one, target.template, jax.random.key(0))
    except Exception as err:
        if generated is None or str(err).startswith("sample: generated_quantities"):
            raise
        params = (
            jax.eval_shape(target.model.to_constrained, target.template)
            if target.model is not None
            else target.template
        )
        cls = TypeError if isinstance(err, TypeError) else ValueError
        raise cls(
            "sample: generated_quantities(params, key) fails on the parameters' shapes "
            f"(checked before sampling): {type(err).__name__}: {err}. params is "
            f"{_describe(params)}; it must return a dict of name -> array."
        ) from err


def _generated_keys(key, num_chains, start, count):
    """One key per (chain, draw index): a draw's key does not depend on the chunking."""

    def chain_keys(chain):
        k = jax.random.fold_in(key, chain)
        return jax.vmap(lambda i: jax.random.fold_in(k, i))(jnp.arange(start, start + count))

    return jax.vmap(chain_keys)(jnp.arange(num_chains)).reshape(num_chains * count)


class _Names:
    """Position pytree -> ``{name: leaf}`` (hashable, so the compiled pass is reused)."""

    def __init__(self, names):
        self.names = tuple(names)

    def __call__(self, position):
        return dict(zip(self.names, jax.tree.leaves(position), strict=True))

    def __eq__(self, other):
        return isinstance(other, _Names) and other.names == self.names

    def __hash__(self):
        return hash(self.names)


# ------------------------------------------------------------------------- the sampler


@surface_solver_errors
def sample(
    model_or_logdensity,
    init=None,
    *,
    num_chains=4,
    num_warmup=1000,
    num_samples=1000,
    seed=0,
    kernel="nuts",
    target_accept=0.8,
    max_treedepth=10,
    chain_method="vectorized",
    progress_bar=None,
    checkpoint=None,
    checkpoint_every=100,
    init_per_chain=False,
    num_integration_steps=16,
    dense_mass=False,
    solver_stats=True,
    warn=True,
    generated_quantities=None,
):
    """Sample a log-density with Blackjax NUTS (or HMC) and return ArviZ InferenceData.

    Each chain runs Blackjax's window adaptation (Stan's schedule: step size by dual
    averaging, mass matrix from the warmup draws), then ``num_samples`` transitions.
    A proposal whose log-density is NaN, which is what a failed inner solve returns,
    is rejected and counted; the run goes on (Stan's semantics).

    Parameters
    ----------
    model_or_logdensity : Model or callable
        An :class:`~mcmc_customgrad.Model` (draws are reported on the constrained scale
        under the parameter names) or ``logdensity_fn(position) -> scalar`` over a
        pytree of float arrays (then ``init`` is required).
    init : pytree, dict, callable or None
        Starting point. For a Model: None (uniform on (-2, 2) in every unconstrained
        coordinate, per chain, Stan's default), a dict of constrained values, or a flat
        unconstrained vector. For a plain log-density: a position pytree, or a callable
        ``init(key) -> position`` drawn per chain. One position is used by every chain
        unless ``init_per_chain=True``, when leaves carry a leading chain axis.
        A start with a non-finite log-density or gradient is redrawn (random inits)
        or jittered by U(-1, 1) (given inits, with a :class:`SamplingWarning` naming
        the chains and the reason when ``warn``), up to 100 times, then
        :class:`InitializationError` names the chain, parameter and value.
    num_chains, num_warmup, num_samples : int
        Chains, warmup steps per chain, and draws kept per chain.
    seed : int or jax.random.key
        Same seed and settings give bitwise identical draws.
    kernel : {"nuts", "hmc", "mala"}
        ``"hmc"`` uses ``num_integration_steps`` leapfrog steps; ``"mala"`` is HMC with
        one step (the preconditioned MALA proposal).
    target_accept : float
        Step-size adaptation target in (0, 1).
    max_treedepth : int
        NUTS's maximum number of trajectory doublings.
    chain_method : {"vectorized", "parallel", "sequential"}
        ``"vectorized"``: one program, chains batched with ``vmap``. ``"parallel"``:
        chains sharded over JAX devices with ``shard_map`` (GPUs, or CPU devices made
        with ``XLA_FLAGS=--xla_force_host_platform_device_count=N``); uses the largest
        device count that divides ``num_chains``. After ``jax.distributed.initialize``
        (several processes, on one machine or many), the chains are sharded over every
        device of every process, ``num_chains`` must be a multiple of the device count,
        every process returns every chain, and the draws equal, bit for bit, those of one
        process holding as many devices (see ``docs/howto.md``). ``"sequential"``: one
        chain at a time (one compile, least memory).
    progress_bar : bool or None
        What the run shows on stderr: each compilation when it starts and its time when
        it ends (``compiling the warmup ... (8.2 s)``), the warmup, then the draws (a
        tqdm bar on a terminal, four plain lines otherwise) with draws per second per
        chain counted after compilation. None: on when stderr is a terminal and the
        ``CI`` environment variable is unset; True or False force it. Over several
        processes, process 0 alone shows it.
    checkpoint : str or path, optional
        Directory to write draws to, ``checkpoint_every`` draws at a time. A run that
        finds its own checkpoint there resumes after the last complete chunk and ends
        with the draws an uninterrupted run gives; the warmup is saved too. The
        checkpoint identifies its run: seed, settings, parameter layout, starting
        points, the log-density itself (its values and gradients at fixed probe points)
        and what each draw writes (parameters, generated quantities, solver statistics,
        log-likelihood, and their values at the probe points). A call
        that differs in any of them raises :class:`CheckpointError` naming what differs,
        before anything is written. Only ``num_samples`` (to extend a run),
        ``checkpoint_every``, ``progress_bar`` and ``warn`` may change on resume. Over
        several processes, each writes its own chains to ``process_<i>_of_<n>/`` in the
        directory, a restart of every process with the same call resumes after the last
        chunk all of them wrote, and a restart with another number of processes is
        refused.
    checkpoint_every : int
        Draws per chunk when checkpointing.
    init_per_chain : bool
        ``init`` has a leading chain axis.
    num_integration_steps : int
        Leapfrog steps per HMC proposal (``kernel="hmc"`` only).
    dense_mass : bool
        Adapt a dense mass matrix instead of a diagonal one.
    solver_stats : bool
        Record inner-solver statistics at every draw (``solver_converged``,
        ``solver_steps``, ``solver_residual``, and ``solver_status``: the number of
        solves that ended with each :class:`~mcmc_customgrad.Status`, dimension
        ``status`` indexed by the status's value): one extra, batched evaluation of the
        log-density per draw, after the chains have run.
    warn : bool
        Issue :class:`~mcmc_customgrad.SamplingWarning` for every failed post-run check
        (see :func:`~mcmc_customgrad.diagnose`) and for a given init that had to be
        jittered (in process 0 only, over several processes).
    generated_quantities : callable, optional
        ``generated_quantities(params, key) -> dict`` of arrays, evaluated at every draw
        after the chains have run and stored in the posterior group under its names
        (Stan's generated quantities), e.g. latent fields recovered by
        :func:`~mcmc_customgrad.laplace_latent_draws`. ``params`` is what the log-density
        sees (a Model's constrained values by name, or the position pytree); ``key`` is
        a JAX key fixed by the seed, the chain and the draw index, so the values are
        reproducible and the same after a resume from a checkpoint. It must be
        jit/vmap-compatible and must not reuse a parameter's name; it is traced on the
        parameters' shapes before anything is compiled, so a broken one fails at once.

    Returns
    -------
    arviz.InferenceData
        ``posterior``; ``sample_stats`` (``diverging``, ``energy``, ``lp``,
        ``acceptance_rate``, ``step_size``, ``n_steps``, ``tree_depth``,
        ``reached_max_treedepth``, ``solver_failure`` and, with ``solver_stats``, the
        ``solver_*`` statistics at each draw); ``log_likelihood`` when the model has
        one; ``attrs`` with the seed, the settings, timings, gradient-evaluation counts
        and library versions.

    Raises
    ------
    SolverError
        An inner solve with ``on_failure="raise"`` failed at some proposal (the message
        is the solver's).
    CheckpointError
        ``checkpoint`` belongs to another run, or cannot be written.
    InitializationError
        No chain found a start with a finite log-density and gradient.
    DistributedError
        Over several processes: an exchange with the others failed, because one of them
        stopped (killed, out of memory, or its own error).
    ValueError
        Over several processes with ``chain_method="parallel"``: ``num_chains`` is not a
        multiple of the device count.

    Notes
    -----
    Compiled samplers are kept on disk by JAX's persistent compilation cache, so a new
    process with the same model and settings loads them instead of compiling again: in
    ``MCMC_CUSTOMGRAD_CACHE_DIR`` if set (``off`` disables it), else in the per-user
    cache folder (``~/.cache/mcmc_customgrad/jax`` on Linux). A cache folder set for JAX
    itself (``JAX_COMPILATION_CACHE_DIR`` or ``jax_compilation_cache_dir``) wins. See
    ``docs/sampling.md``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import mcmc_customgrad as mcg
    >>> idata = mcg.sample(lambda x: -0.5 * jnp.sum(x**2), jnp.zeros(2), num_chains=2,
    ...                    num_warmup=200, num_samples=200, seed=1, warn=False)
    >>> idata.posterior["x"].shape
    (2, 200, 2)
    >>> bool(abs(float(idata.posterior["x"].mean())) < 0.2)
    True

    Generated quantities go into the posterior group:

    >>> import jax
    >>> def gq(x, key):
    ...     return {"norm": jnp.linalg.norm(x), "noisy": x + jax.random.normal(key, (2,))}
    >>> idata = mcg.sample(lambda x: -0.5 * jnp.sum(x**2), jnp.zeros(2), num_chains=2,
    ...                    num_warmup=50, num_samples=20, warn=False, generated_quantities=gq)
    >>> sorted(idata.posterior.data_vars), idata.posterior["noisy"].shape
    (['noisy', 'norm', 'x'], (2, 20, 2))
    """
    if generated_quantities is not None and not callable(generated_quantities):
        raise TypeError(
            "sample: generated_quantities must be a callable (params, key) -> dict, got "
            f"{type(generated_quantities).__name__}."
        )
    warn_if_float32("mcg.sample", stacklevel=4)
    configure_cache()
    _check_settings(
        kernel,
        chain_method,
        target_accept,
        num_chains,
        num_warmup,
        num_samples,
        max_treedepth,
        num_integration_steps,
        progress_bar,
        checkpoint_every,
        dense_mass=dense_mass,
        solver_stats=solver_stats,
        warn=warn,
        init_per_chain=init_per_chain,
    )
    if checkpoint is not None:
        Checkpoint.check_path(checkpoint)
    settings = Settings(
        kernel=kernel,
        target_accept=float(target_accept),
        max_treedepth=int(max_treedepth),
        num_integration_steps=int(num_integration_steps),
        dense_mass=bool(dense_mass),
        num_warmup=int(num_warmup),
    )
    num_chains, num_samples = int(num_chains), int(num_samples)
    key, seed_attr = _root_key(seed)
    target = Target(model_or_logdensity, init, init_per_chain, num_chains)
    model = target.model
    to_posterior = model.to_constrained if model is not None else _Names(target.names)
    one_draw = _draw_one(
        target.logdensity,
        to_posterior,
        target.log_likelihood,
        bool(solver_stats),
        generated_quantities,
        model,
    )
    draw_shapes = _check_draw_outputs(one_draw, target, generated_quantities)
    chains = ChainMap(chain_method, num_chains)
    # With several processes (jax.distributed), process 0 alone prints and warns.
    loud = is_main()
    if loud and chain_method == "parallel" and chains.num_devices == 1 and num_chains > 1:
        warnings.warn(
            f"sample: chain_method='parallel' found {len(jax.devices())} JAX device(s) that "
            f"can share {num_chains} chains evenly, so the chains run vectorized on one. On "
            "CPU set XLA_FLAGS=--xla_force_host_platform_device_count=N before importing jax.",
            SamplingWarning,
            stacklevel=3,
        )
    # The draws run in chunks when any process shows progress: every process must run the
    # same programs in the same order (process 0 alone prints).
    shown = progress_enabled(progress_bar)
    if process_count() > 1:
        shown = not agree_min(not shown)
    progress = Progress(num_samples, num_chains, loud and shown)
    timings = {}

    # Stage 1: starting points (the first call compiles the log-density and its gradient).
    start = time.perf_counter()
    k_init, k_warm, k_draw = jax.random.split(key, 3)
    with progress.phase(f"compiling the log-density, checking {num_chains} starting points"):
        positions, init_lp = initial_positions(target, k_init, warn=warn and loud)
    timings["init_seconds"] = time.perf_counter() - start
    store = None
    if checkpoint is not None:
        with progress.phase("fingerprinting the log-density for the checkpoint"):
            meta = {
                "seed": seed_attr,
                "num_chains": num_chains,
                "chain_method": chain_method,
                "settings": settings.__dict__,
                **_fingerprint(target, positions, init_lp, draw_shapes, _draw_pass(one_draw)),
            }
        store = open_checkpoint(checkpoint, meta, chains.local, chain_method == "parallel")

    # Stage 2: warmup (or its saved result).
    run = _Run(target, settings, chains, progress, timings, store)
    warm, state = run.warmup(jax.random.split(k_warm, num_chains), positions)

    # Stage 3: draws, chunk by chunk.
    if store is not None:
        chunk_len = min(int(checkpoint_every), num_samples)
    elif shown:
        chunk_len = max(1, -(-num_samples // 20))
    else:
        chunk_len = num_samples
    tables, resumed_draws = run.draws(
        state,
        warm,
        jax.random.split(k_draw, num_chains),
        _draw_pass(one_draw),
        jax.random.fold_in(key, 7),  # the generated quantities' keys, apart from the sampler's
        num_samples,
        chunk_len,
    )

    # Stage 4: output.
    idata = _assemble(
        tables, num_samples, np.asarray(warm["step_size"]), settings, target, solver_stats
    )
    attrs = {
        **_attrs(settings, idata, warm),
        "seed": str(seed_attr),
        "num_chains": num_chains,
        "num_samples": num_samples,
        "chain_method": chain_method,
        "num_devices": chains.num_devices,
        "resumed_draws": resumed_draws,
        **{k: float(v) for k, v in timings.items()},
    }
    for group in _arviz.groups(idata):
        idata[group].attrs.update(attrs)
    if warn and loud:
        for problem in diagnose(idata):
            warnings.warn(problem.message, SamplingWarning, stacklevel=3)
    return idata


def _fingerprint(target: Target, positions, init_lp, draw_shapes, draw_pass) -> dict:
    """What identifies a run's density, starts and outputs, for its checkpoint."""
    # Probe points around a start that depends on init but not on the seed.
    anchor = jax.tree.map(lambda x: x[0], target.draw(jax.random.key(PROBE_SEED)))
    density = density_fingerprint(
        target.logdensity, anchor, _value_and_grad_batched(target.logdensity)
    )
    density["lp_at_starts"] = [float(v) for v in np.asarray(init_lp)]
    return {
        "layout": _describe(target.template),
        "init_sha256": _sha256(positions),
        "density": density,
        "outputs": outputs_fingerprint(draw_shapes, draw_pass, anchor),
    }


class _Run:
    """The warmup and draw stages of one :func:`sample` call, mapped over chains.

    Each stage compiles the one-chain function of :mod:`._kernels` through the
    :class:`ChainMap`, reports its phases to the progress display, adds to ``timings``
    and, with a checkpoint, saves what it produced and resumes from what was saved.
    """

    def __init__(self, target, settings, chains, progress, timings, store):
        self.target, self.settings, self.chains = target, settings, chains
        self.progress, self.timings, self.store = progress, timings, store
        self.state_def = jax.tree.structure(
            jax.eval_shape(lambda p: settings.init_state(target.logdensity, p), target.template)
        )

    def _state(self, arrays):
        n = self.state_def.num_leaves
        return self.state_def.unflatten([jnp.asarray(arrays[f"state_{i}"]) for i in range(n)])

    def warmup(self, keys, positions):
        """``(warm, state)``: the adapted parameters and warmup record, and the last state."""
        target, settings, progress, timings = (
            self.target,
            self.settings,
            self.progress,
            self.timings,
        )
        saved = self.store.load_warmup() if self.store is not None else None
        if saved is not None:
            progress.message(f"warmup: read from the checkpoint in {self.store.path}")
            timings["warmup_compile_seconds"] = timings["warmup_seconds"] = 0.0
            return saved, self._state(saved)
        with progress.phase("compiling the warmup"):
            run_warmup, seconds = self.chains.compile(
                "warmup",
                (target.logdensity, settings),
                warmup_fn(target.logdensity, settings),
                (True, True),
                (keys, positions),
            )
        start = time.perf_counter()
        num_chains = self.chains.num_chains
        with progress.phase(f"warmup: {settings.num_warmup} steps x {num_chains} chains"):
            state, step_size, imm, info = jax.block_until_ready(run_warmup(keys, positions))
        timings["warmup_compile_seconds"] = seconds
        timings["warmup_seconds"] = time.perf_counter() - start
        warm = {
            "step_size": np.asarray(step_size),
            "inverse_mass_matrix": np.asarray(imm),
            "n_steps": np.asarray(info.n_steps),
            "diverging": np.asarray(info.diverging),
            "nonfinite": np.asarray(info.nonfinite),
            **{f"state_{i}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(state))},
        }
        if self.store is not None:
            self.store.save_warmup(warm)
        return warm, self._state(warm)

    def draws(self, state, warm, keys, draw_pass, k_generated, num_samples, chunk_len):
        """``(tables, resumed_draws)``: one table per chunk, written as they complete."""
        target, settings, progress, timings = (
            self.target,
            self.settings,
            self.progress,
            self.timings,
        )
        num_chains = self.chains.num_chains
        step_size = jnp.asarray(warm["step_size"])
        imm = jnp.asarray(warm["inverse_mass_matrix"])
        tables = [] if self.store is None else self.store.load_chunks()
        done = int(tables[-1]["stop"]) if tables else 0
        resumed_draws = done
        if tables:
            state = self._state(tables[-1])

        def chunk_args(state, done):
            count = min(chunk_len, num_samples - done)
            return count, (state, step_size, imm, keys, jnp.int32(done), jnp.int32(count))

        timings["compile_seconds"] = 0.0
        timings["sampling_seconds"] = 0.0
        timings["draw_stats_seconds"] = 0.0
        if done < num_samples:
            with progress.phase("compiling the draws"):
                run_chunk, seconds = self.chains.compile(
                    "draws",
                    (target.logdensity, settings, chunk_len),
                    draws_fn(target.logdensity, settings, chunk_len),
                    (True, True, True, True, False, False),
                    chunk_args(state, done)[1],
                )
            timings["compile_seconds"] += seconds
            if progress.enabled:
                # Compile the per-draw pass now, not in the middle of the draws (it runs
                # once more, on copies of the current positions: one chunk's worth).
                count = chunk_args(state, done)[0]
                start = time.perf_counter()
                with progress.phase("compiling the per-draw statistics"):
                    mine = self.chains.local
                    copies = jax.tree.map(
                        lambda x: np.repeat(np.asarray(x)[mine], count, axis=0), state.position
                    )
                    keys_ = _generated_keys(k_generated, num_chains, done, count)
                    rows = slice(mine.start * count, mine.stop * count)
                    jax.block_until_ready(draw_pass(copies, keys_[rows]))
                timings["draw_stats_seconds"] += time.perf_counter() - start
        progress.start(done)
        try:
            progress.update(min(done, num_samples), *_tally(tables), timings["sampling_seconds"])
            while done < num_samples:
                count, args = chunk_args(state, done)
                start = time.perf_counter()
                state, records = jax.block_until_ready(run_chunk(*args))
                timings["sampling_seconds"] += time.perf_counter() - start
                start = time.perf_counter()
                gen_keys = _generated_keys(k_generated, num_chains, done, count)
                table = _table(records, count, draw_pass, self.chains, gen_keys)
                timings["draw_stats_seconds"] += time.perf_counter() - start
                table["start"], table["stop"] = np.int64(done), np.int64(done + count)
                table.update(
                    {f"state_{i}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(state))}
                )
                if self.store is not None:
                    self.store.save_chunk(len(tables), table)
                tables.append(table)
                done += count
                progress.update(done, *_tally(tables), timings["sampling_seconds"])
        finally:
            progress.close()  # ends the bar, also when a chunk raises
        return tables, resumed_draws


def _attrs(settings: Settings, idata, warm) -> dict:
    """The run's settings, library versions and gradient counts, for ``attrs``."""
    import blackjax  # on first use (see _kernels._blackjax)

    return {
        "inference_library": "blackjax",
        "inference_library_version": blackjax.__version__,
        "mcmc_customgrad_version": __version__,
        "jax_version": jax.__version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "num_warmup": settings.num_warmup,
        "kernel": settings.kernel,
        "target_accept": settings.target_accept,
        "max_treedepth": settings.max_treedepth,
        "num_integration_steps": (
            settings.num_integration_steps if settings.kernel == "hmc" else 0
        ),
        "dense_mass": int(settings.dense_mass),
        "num_grad_evals_warmup": int(np.asarray(warm["n_steps"]).sum()),
        "num_grad_evals": int(idata.sample_stats["n_steps"].values.sum()),
        "num_warmup_divergences": int(np.asarray(warm["diverging"]).sum()),
        "num_warmup_solver_failures": int(np.asarray(warm["nonfinite"]).sum()),
    }


def _tally(tables):
    div = sum(
        int(genuine_divergences(t["stat__diverging"], t["stat__solver_failure"]).sum())
        for t in tables
    )
    fail = sum(int(t["stat__solver_failure"].sum()) for t in tables)
    return div, fail


def _sha256(tree) -> str:
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(tree):
        h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    return h.hexdigest()


def _table(records: Record, count: int, draw_pass, chains: ChainMap, keys) -> dict:
    """One chunk's records -> flat dict of ``(chain, count, ...)`` NumPy arrays.

    The per-draw pass runs on this process's chains (all of them but over several
    processes, where every process then receives every chain's values).
    """
    num_chains = chains.num_chains
    positions = jax.tree.map(lambda x: np.asarray(x)[:, :count], records.position)
    table = {f"position__{i}": x for i, x in enumerate(jax.tree.leaves(positions))}
    table["stat__lp"] = np.asarray(records.lp)[:, :count]
    t = records.transition
    for name in TRANSITION_STATS:
        table[f"stat__{name}"] = np.asarray(getattr(t, name))[:, :count]
    table["stat__solver_failure"] = np.asarray(t.nonfinite)[:, :count]
    mine = chains.local
    rows = slice(mine.start * count, mine.stop * count)
    flat = jax.tree.map(lambda x: x[mine].reshape((-1, *x.shape[2:])), positions)
    extra = jax.device_get(draw_pass(flat, keys[rows]))
    if mine != slice(0, num_chains):  # every process's chains, in chain order
        extra = jax.tree.map(lambda v: v.reshape((-1, *v.shape[2:])), gather(extra))
    for group, values in extra.items():
        for name, v in values.items() if isinstance(values, dict) else [("", values)]:
            v = np.asarray(v)
            table[f"{group}__{name}"] = v.reshape((num_chains, count, *v.shape[1:]))
    return table


def _assemble(tables, num_samples, step_size, settings, target, solver_stats):
    """Concatenate chunks (cut to ``num_samples``) into InferenceData."""

    def column(key):
        return np.concatenate([t[key] for t in tables], axis=1)[:, :num_samples]

    keys = tables[0].keys()
    posterior = {k.split("__", 1)[1]: column(k) for k in keys if k.startswith("posterior__")}
    stats = {
        "lp": column("stat__lp"),
        "diverging": column("stat__diverging"),
        "energy": column("stat__energy"),
        "acceptance_rate": column("stat__acceptance_rate"),
        "n_steps": column("stat__n_steps"),
        "solver_failure": column("stat__solver_failure"),
    }
    stats["step_size"] = np.broadcast_to(step_size[:, None], stats["lp"].shape).copy()
    if settings.kernel == "nuts":
        depth = column("stat__tree_depth")
        stats["tree_depth"] = depth
        stats["reached_max_treedepth"] = depth >= settings.max_treedepth
    if solver_stats:
        solves = column("solver__num_solves")
        if solves.any() or column("solver__num_hidden").any():
            stats["solver_converged"] = column("solver__converged")
            stats["solver_steps"] = column("solver__num_steps")
            stats["solver_residual"] = column("solver__residual_norm")
            stats["solver_status"] = column("solver__status_counts")
    log_likelihood = None
    if target.log_likelihood is not None:
        log_likelihood = {"obs": column("log_likelihood__")}
    dims = {"solver_status": ["status"]} if "solver_status" in stats else None
    return _arviz.to_inference_data(posterior, stats, log_likelihood, dims=dims)
