"""Map a one-chain function over chains (vmap, shard_map or a loop), compiled once.

Compiled programs are cached here, keyed on the caller's static key and the argument
shapes, so a second ``mcg.sample`` call with the same model and settings neither
retraces nor recompiles, and compile time is measured apart from run time.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ..caches import LRU

__all__ = ["CHAIN_METHODS", "ChainMap"]

CHAIN_METHODS = ("vectorized", "parallel", "sequential")

# Each entry holds ~1,000 memory mappings of machine code (see mcmc_customgrad.caches).
_CACHE = LRU(16)


def _avals(args):
    leaves, treedef = jax.tree.flatten(args)
    return treedef, tuple((np.shape(x), jnp.result_type(x)) for x in leaves)


def _named(name, fn):
    # The traced function carries the program's name ("chains_warmup"), which JAX's
    # compilation logs and monitoring events report (the tests count traces by it).
    def wrapped(*args):
        return fn(*args)

    wrapped.__name__ = wrapped.__qualname__ = f"chains_{name}"
    return wrapped


def _stack(outputs):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *outputs)


class ChainMap:
    """How chains are run: ``"vectorized"``, ``"parallel"`` or ``"sequential"``.

    Parameters
    ----------
    method : str
        One of :data:`CHAIN_METHODS`.
    num_chains : int
        Number of chains.
    """

    def __init__(self, method: str, num_chains: int):
        self.method, self.num_chains = method, num_chains
        self.num_devices = 1
        self.mesh = None
        if method == "parallel":
            devices = jax.devices()
            usable = min(len(devices), num_chains)
            # The largest device count that divides the chains evenly.
            self.num_devices = max(k for k in range(1, usable + 1) if num_chains % k == 0)
            self.mesh = Mesh(np.array(devices[: self.num_devices]), ("chains",))

    def compile(self, name, static_key, fn, batched, args):
        """Compile ``fn`` mapped over chains; returns ``(call, compile_seconds)``.

        ``batched[i]`` says whether ``args[i]`` has a leading chain axis; the others
        are shared by every chain. ``call(*args)`` returns outputs with a leading chain
        axis.
        """
        in_axes = tuple(0 if b else None for b in batched)
        if self.method == "sequential":
            probe = tuple(
                jax.tree.map(lambda x: x[0], a) if b else a
                for a, b in zip(args, batched, strict=True)
            )
        elif self.method == "parallel":
            probe = self._place(args, batched)
        else:
            probe = args
        key = (name, static_key, self.method, self.num_devices, batched, _avals(probe))
        start = time.perf_counter()
        compiled = _CACHE.get_or_build(
            key, lambda: self._build(name, fn, in_axes, batched).lower(*probe).compile()
        )
        seconds = time.perf_counter() - start

        if self.method == "sequential":

            def call(*args):
                outputs = []
                for c in range(self.num_chains):
                    one = tuple(
                        jax.tree.map(lambda x: x[c], a) if b else a  # noqa: B023
                        for a, b in zip(args, batched, strict=True)
                    )
                    outputs.append(compiled(*one))
                return _stack(outputs)

        elif self.method == "parallel":

            def call(*args):
                out = compiled(*self._place(args, batched))
                if jax.process_count() > 1:  # multi-host: every process gets all chains
                    from jax.experimental import multihost_utils

                    out = multihost_utils.process_allgather(out, tiled=True)
                return out

        else:
            call = compiled
        return call, seconds

    def _place(self, args, batched):
        return tuple(
            jax.device_put(a, NamedSharding(self.mesh, P("chains") if b else P()))
            for a, b in zip(args, batched, strict=True)
        )

    def _build(self, name, fn, in_axes, batched):
        fn = _named(name, fn)
        if self.method == "sequential":
            return jax.jit(fn)
        mapped = jax.vmap(fn, in_axes=in_axes)
        if self.method == "vectorized":
            return jax.jit(mapped)
        specs = tuple(P("chains") if b else P() for b in batched)
        sharded = jax.shard_map(
            mapped, mesh=self.mesh, in_specs=specs, out_specs=P("chains"), check_vma=False
        )
        return jax.jit(sharded)
