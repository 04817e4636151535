"""What a checkpoint identifies: the log-density itself, and what each draw writes.

A run is recognised by three fingerprints, all JSON, all computed before any work:

``density``
    ``computation``: SHA-256 of the log-density's program, the jaxpr of the flat
    log-density at the parameter layout (memory addresses removed, so it is the same in
    every process); ``data``: SHA-256 of every array the program closes over (data,
    design matrices, constants of inner problems), sub-programs included; ``values``:
    the log-density and its gradient at fixed probe points around the first start,
    which also catch what a jaxpr cannot see (data held by a host callback, a SciPy
    solver's closure). Values are compared with a relative tolerance of ``1e-8``, so a
    resume on another CPU whose last bits differ is not refused.
``outputs``
    the arrays each draw writes (posterior variables with generated quantities, solver
    statistics, log-likelihood) with their shapes and dtypes, and the fingerprint of the
    program that computes them (``generated_quantities``, the log-likelihood).
"""

from __future__ import annotations

import hashlib
import re

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np

__all__ = ["program_fingerprint", "density_fingerprint", "outputs_fingerprint", "values_match"]

#: Probe points: the first start, then steps of these sizes (relative to 1 + |x|)
#: along fixed random directions.
PROBE_SCALES = (0.0, 0.01, 0.1, 1.0)
#: Gradients of more coordinates are stored as projections on this many directions.
MAX_GRADIENT_ENTRIES = 16
RTOL = 1e-8

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _sub_jaxprs(value):
    if isinstance(value, jax.extend.core.ClosedJaxpr):
        yield value.jaxpr, value.consts
    elif isinstance(value, jax.extend.core.Jaxpr):
        yield value, ()
    elif isinstance(value, tuple | list):
        for v in value:
            yield from _sub_jaxprs(v)


def _hash_consts(jaxpr, consts, h, seen) -> None:
    for c in consts:
        a = np.asarray(c)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    for eqn in jaxpr.eqns:
        for param in eqn.params.values():
            for sub, sub_consts in _sub_jaxprs(param):
                if id(sub) in seen:
                    continue
                seen.add(id(sub))
                _hash_consts(sub, sub_consts, h, seen)


def program_fingerprint(fn, *example_args) -> dict:
    """SHA-256 of ``fn``'s jaxpr at ``example_args`` and of every array it closes over.

    Parameters
    ----------
    fn : callable
        A JAX-traceable function.
    *example_args
        Arrays or ``jax.ShapeDtypeStruct`` pytrees to trace it at.

    Returns
    -------
    dict
        ``{"computation": hex, "data": hex}``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from mcmc_customgrad.sampling._identity import program_fingerprint
    >>> y1, y2 = jnp.array([1.0, 2.0]), jnp.array([1.0, 3.0])
    >>> a = program_fingerprint(lambda b: jnp.sum((y1 - b) ** 2), jnp.zeros(2))
    >>> b = program_fingerprint(lambda b: jnp.sum((y2 - b) ** 2), jnp.zeros(2))
    >>> a["computation"] == b["computation"], a["data"] == b["data"]
    (True, False)
    """
    closed = jax.make_jaxpr(fn)(*example_args)
    text = _ADDRESS.sub("", str(closed.jaxpr))
    data = hashlib.sha256()
    _hash_consts(closed.jaxpr, closed.consts, data, set())
    return {
        "computation": hashlib.sha256(text.encode()).hexdigest(),
        "data": data.hexdigest(),
    }


def _probe_points(start):
    """Fixed points around ``start`` (a pytree of one chain's position), stacked."""
    leaves, treedef = jax.tree.flatten(start)
    rng = np.random.default_rng(20261203)  # fixed: the probes are part of the format
    probes = []
    for scale in PROBE_SCALES:
        moved = []
        for x in leaves:
            x = np.asarray(x)
            u = rng.standard_normal(x.shape)
            moved.append((x + scale * (1.0 + np.abs(x)) * u).astype(x.dtype))
        probes.append(moved)
    stacked = [np.stack([p[i] for p in probes]) for i in range(len(leaves))]
    return treedef.unflatten([jnp.asarray(s) for s in stacked])


def density_fingerprint(logdensity, template, start, batched_value_and_grad=None) -> dict:
    """The log-density's program, its data, and its values at probe points near ``start``.

    Parameters
    ----------
    logdensity : callable
        ``logdensity(position) -> scalar``.
    template : pytree of jax.ShapeDtypeStruct
        One chain's position layout.
    start : pytree
        One chain's starting position (the probe points are placed around it).
    batched_value_and_grad : callable, optional
        A compiled ``vmap(value_and_grad(logdensity))`` to reuse; made here if None.

    Returns
    -------
    dict
        JSON-serialisable: ``computation``, ``data``, ``lp`` (one value per probe) and
        ``gradient`` (per probe, the gradient, or its projections on fixed directions
        when it has more than 16 coordinates).
    """
    out = program_fingerprint(logdensity, template)
    probes = _probe_points(start)
    if batched_value_and_grad is None:
        batched_value_and_grad = jax.jit(jax.vmap(jax.value_and_grad(logdensity)))
    lp, grad = batched_value_and_grad(probes)
    g = np.concatenate(
        [np.asarray(x).reshape(len(PROBE_SCALES), -1) for x in jax.tree.leaves(grad)], axis=1
    )
    if g.shape[1] > MAX_GRADIENT_ENTRIES:
        directions = np.random.default_rng(3).standard_normal((g.shape[1], MAX_GRADIENT_ENTRIES))
        g = g @ (directions / np.sqrt(g.shape[1]))
    out["lp"] = [float(v) for v in np.asarray(lp)]
    out["gradient"] = [[float(v) for v in row] for row in g]
    return out


def outputs_fingerprint(one_draw, position, key) -> dict:
    """What one draw writes: array names with shapes and dtypes, and its program.

    Parameters
    ----------
    one_draw : callable
        ``one_draw(position, key) -> {group: {name: array}}``, the per-draw pass.
    position, key
        A position and a key (concrete or ``jax.ShapeDtypeStruct``).
    """
    shapes = jax.eval_shape(one_draw, position, key)
    arrays = {}
    for group, values in shapes.items():
        for name, s in values.items() if isinstance(values, dict) else [("", values)]:
            arrays[f"{group}__{name}"] = f"{s.dtype}{list(s.shape)}"
    return {"arrays": dict(sorted(arrays.items())), **program_fingerprint(one_draw, position, key)}


def values_match(stored, now, rtol: float = RTOL) -> bool:
    """Equal shapes, and each row equal within ``rtol`` of its largest entry (NaN == NaN).

    A 1-d input is compared entry by entry (each entry is its own row).

    Examples
    --------
    >>> from mcmc_customgrad.sampling._identity import values_match
    >>> values_match([-1e6, 1.0, float("nan")], [-1e6, 1.0 + 1e-12, float("nan")])
    True
    >>> values_match([-1e6, 1.0], [-1e6, 1.001])
    False
    >>> values_match([[3.0, 1e-17]], [[3.0, -2e-17]])
    True
    """
    a = np.asarray(stored, dtype=float)
    b = np.asarray(now, dtype=float)
    if a.shape != b.shape:
        return False
    rows = a.shape[0] if a.ndim >= 2 else a.size
    a, b = a.reshape(rows, -1), b.reshape(rows, -1)
    finite = np.isfinite(a) & np.isfinite(b)
    if not np.array_equal(np.where(finite, 0.0, a), np.where(finite, 0.0, b), equal_nan=True):
        return False
    scale = np.max(np.where(finite, np.abs(a), 0.0), axis=1, keepdims=True)
    return bool(np.all(np.where(finite, np.abs(a - b) <= rtol * scale, True)))
