"""Blackjax glue: one chain's warmup and one chain's run of draws, on the public API only.

Everything here is a pure function of one chain; ``_chains.py`` maps it over chains
(vmap, shard_map or a Python loop). Only ``blackjax.nuts``, ``blackjax.hmc`` and
``blackjax.window_adaptation`` (with its documented ``adaptation_info_fn``) are used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

__all__ = [
    "KERNELS",
    "MAX_INIT_TRIES",
    "Settings",
    "Transition",
    "start_fn",
    "warmup_fn",
    "draws_fn",
    "value_and_grad_fn",
]

KERNELS = ("nuts", "hmc", "mala")
#: Starting points tried per chain before the chain is reported as not initialised.
MAX_INIT_TRIES = 100


def _blackjax():
    # Imported on first use: importing Blackjax runs JAX computations (default arguments
    # such as jnp.log(2.0)), which start JAX's backend, and jax.distributed.initialize
    # must come before that. So `import mcmc_customgrad` leaves the backend alone.
    import blackjax

    return blackjax


@dataclass(frozen=True)
class Settings:
    """Static, hashable sampler settings (part of every compiled function's key)."""

    kernel: str = "nuts"
    target_accept: float = 0.8
    max_treedepth: int = 10
    num_integration_steps: int = 16
    dense_mass: bool = False
    num_warmup: int = 1000

    def algorithm(self):
        """``(blackjax algorithm, extra parameters)`` for this kernel."""
        blackjax = _blackjax()
        if self.kernel == "nuts":
            return blackjax.nuts, {"max_num_doublings": self.max_treedepth}
        if self.kernel == "hmc":
            return blackjax.hmc, {"num_integration_steps": self.num_integration_steps}
        # MALA with a mass matrix is exactly HMC with one leapfrog step (full momentum
        # refresh, one gradient per proposal, Metropolis correction on the energy).
        return blackjax.hmc, {"num_integration_steps": 1}

    def init_state(self, logdensity_fn, position):
        """The kernel's Blackjax state at ``position`` (for :func:`draws_fn`)."""
        algorithm, _ = self.algorithm()
        return algorithm.init(position, logdensity_fn)


class Transition(NamedTuple):
    """What we keep from each transition's Blackjax info (all scalars)."""

    diverging: jax.Array
    energy: jax.Array
    acceptance_rate: jax.Array
    n_steps: jax.Array
    tree_depth: jax.Array
    nonfinite: jax.Array


def transition(kernel: str, info) -> Transition:
    """Blackjax's NUTSInfo / HMCInfo -> :class:`Transition`.

    ``nonfinite`` flags a trajectory that met a non-finite log-density, which is what a
    failed inner solve returns: NUTS stops at the first divergence, so such a state is
    one end of the trajectory; for HMC it is the proposal.
    """
    if kernel == "nuts":
        ends = (info.trajectory_leftmost_state, info.trajectory_rightmost_state)
        nonfinite = ~jnp.isfinite(ends[0].logdensity) | ~jnp.isfinite(ends[1].logdensity)
        depth = info.num_trajectory_expansions
    else:
        nonfinite = ~jnp.isfinite(info.proposal.logdensity)
        depth = jnp.zeros((), jnp.int32)
    return Transition(
        diverging=jnp.asarray(info.is_divergent, bool),
        energy=jnp.asarray(info.energy),
        acceptance_rate=jnp.asarray(info.acceptance_rate),
        n_steps=jnp.asarray(info.num_integration_steps, jnp.int32),
        tree_depth=jnp.asarray(depth, jnp.int32),
        nonfinite=jnp.asarray(nonfinite, bool),
    )


def value_and_grad_fn(logdensity_fn):
    """One position -> (log-density, gradient): the initialisation check."""
    return jax.value_and_grad(logdensity_fn)


def finite_fn(logdensity_fn):
    """``finite(position) -> bool``: the log-density and its whole gradient are finite."""
    value_and_grad = jax.value_and_grad(logdensity_fn)

    def finite(position):
        value, grad = value_and_grad(position)
        ok = jnp.isfinite(value)
        for leaf in jax.tree.leaves(grad):
            ok &= jnp.all(jnp.isfinite(leaf))
        return ok

    return finite


def start_fn(logdensity_fn, propose):
    """``start(key, first) -> (position, ok, tries)``: one chain's start, with retries.

    ``first`` is kept when the log-density and its gradient are finite there; otherwise
    ``propose(key, first)`` gives candidates (a fresh draw, or ``first`` jittered) until
    one is, at most :data:`MAX_INIT_TRIES` positions in all. ``ok`` says whether one was
    found and ``tries`` counts the positions tried (1: ``first`` was kept). One
    ``lax.while_loop``, so it runs inside ``jit`` and ``vmap`` (``sbc`` starts every chain
    of every simulation this way; ``sample`` for the chains whose first start failed).
    """
    finite = finite_fn(logdensity_fn)

    def start(key, first):
        def body(carry):
            tries, _, _, key = carry
            key, sub = jax.random.split(key)
            position = propose(sub, first)
            return tries + 1, position, finite(position), key

        def more(carry):
            tries, _, ok, _ = carry
            return ~ok & (tries < MAX_INIT_TRIES)

        carry = (jnp.int32(1), first, finite(first), key)
        tries, position, ok, _ = lax.while_loop(more, body, carry)
        return position, ok, tries

    return start


def warmup_fn(logdensity_fn, settings: Settings):
    """``warmup(key, position) -> (state, step_size, inverse_mass_matrix, transitions)``.

    Blackjax's window adaptation (Stan's schedule) for ``settings.num_warmup`` steps; the
    per-step record keeps only :class:`Transition` (not the trajectories), so memory is
    ``O(num_warmup)`` scalars per chain.
    """
    algorithm, extra = settings.algorithm()
    kernel = settings.kernel

    def info_fn(state, info, adaptation_state):
        del state, adaptation_state
        return transition(kernel, info)

    def warmup(key, position):
        adaptation = _blackjax().window_adaptation(
            algorithm,
            logdensity_fn,
            is_mass_matrix_diagonal=not settings.dense_mass,
            target_acceptance_rate=settings.target_accept,
            adaptation_info_fn=info_fn,
            **extra,
        )
        (state, params), info = adaptation.run(key, position, settings.num_warmup)
        return state, params["step_size"], params["inverse_mass_matrix"], info

    return warmup


class Record(NamedTuple):
    """One draw: the position, its log-density and the transition that produced it."""

    position: object
    lp: jax.Array
    transition: Transition


def draws_fn(logdensity_fn, settings: Settings, buffer_len: int, on_trace=None):
    """``run(state, step_size, imm, key, start, count) -> (state, records)`` for one chain.

    Runs ``count`` transitions (a traced number, so every chunk of a run shares one
    compiled program) and writes them to the first ``count`` rows of ``buffer_len``-row
    buffers. Draw ``i`` of the run uses the key ``fold_in(key, start + i)``, so the
    draws do not depend on how the run is cut into chunks.
    """
    algorithm, extra = settings.algorithm()

    def run(state, step_size, inverse_mass_matrix, key, start, count):
        if on_trace is not None:
            on_trace()
        step = algorithm(
            logdensity_fn, step_size=step_size, inverse_mass_matrix=inverse_mass_matrix, **extra
        ).step

        def one(state, i):
            new_state, info = step(jax.random.fold_in(key, start + i), state)
            return new_state, Record(
                new_state.position, new_state.logdensity, transition(settings.kernel, info)
            )

        shapes = jax.eval_shape(one, state, jnp.int32(0))[1]
        buffers = jax.tree.map(lambda s: jnp.zeros((buffer_len, *s.shape), s.dtype), shapes)

        def body(i, carry):
            state, buffers = carry
            state, record = one(state, i)
            buffers = jax.tree.map(
                lambda b, r: lax.dynamic_update_index_in_dim(b, r, i, 0), buffers, record
            )
            return state, buffers

        return lax.fori_loop(0, count, body, (state, buffers))

    return run
