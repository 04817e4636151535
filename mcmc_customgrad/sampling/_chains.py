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
from ._processes import collective

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


def _mesh(num_chains: int) -> Mesh:
    """The chain axis's devices: every device of every process, process by process."""
    devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    if jax.process_count() > 1:
        counts = {d.process_index: 0 for d in devices}
        for d in devices:
            counts[d.process_index] += 1
        if num_chains % len(devices) or len(set(counts.values())) > 1:
            raise ValueError(
                f"sample: chain_method='parallel' over {jax.process_count()} processes with "
                f"{len(devices)} devices in all ({', '.join(map(str, counts.values()))} per "
                f"process) needs a number of chains that every device shares evenly, and the "
                f"same number of devices in every process; num_chains={num_chains} is not a "
                f"multiple of {len(devices)}. Use num_chains="
                f"{_next_multiple(num_chains, len(devices))}, or give every process the same "
                "devices."
            )
        return Mesh(np.array(devices), ("chains",))
    usable = min(len(devices), num_chains)
    # One process: the largest device count that divides the chains evenly.
    count = max(k for k in range(1, usable + 1) if num_chains % k == 0)
    return Mesh(np.array(devices[:count]), ("chains",))


def _next_multiple(n: int, k: int) -> int:
    return k * max(1, -(-n // k))


def _global(x, sharding):
    """A global array from a host value that every process holds whole."""
    if jnp.issubdtype(jnp.result_type(x), jax.dtypes.prng_key):
        impl = jax.random.key_impl(x)
        data = _global(jax.random.key_data(x), sharding)
        return jax.random.wrap_key_data(data, impl=impl)
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


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
        # The chains whose draws this process computes (all of them, but for a parallel
        # run over several processes).
        self.local = slice(0, num_chains)
        if method == "parallel":
            self.mesh = _mesh(num_chains)
            self.num_devices = self.mesh.size
            if jax.process_count() > 1:
                per_device = num_chains // self.num_devices
                mine = [
                    i
                    for i, d in enumerate(self.mesh.devices)
                    if d.process_index == jax.process_index()
                ]
                self.local = slice(mine[0] * per_device, (mine[-1] + 1) * per_device)

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
                if jax.process_count() > 1:  # every process gets every chain
                    from jax.experimental import multihost_utils

                    with collective(f"the chains' {name}"):
                        out = multihost_utils.process_allgather(out, tiled=True)
                return out

        else:
            call = compiled
        return call, seconds

    def _place(self, args, batched):
        shardings = tuple(NamedSharding(self.mesh, P("chains") if b else P()) for b in batched)
        if jax.process_count() == 1:
            return tuple(jax.device_put(a, s) for a, s in zip(args, shardings, strict=True))
        # Several processes: every process holds the whole (identical) input and gives
        # each of its devices that device's block.
        return tuple(
            jax.tree.map(lambda x: _global(x, s), a)  # noqa: B023
            for a, s in zip(args, shardings, strict=True)
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
