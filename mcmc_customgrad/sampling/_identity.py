"""What a checkpoint identifies: the log-density itself, and what each draw writes.

A run is recognised by two fingerprints, both JSON, both computed before any work, both
made of *values* at fixed probe points, which are the same in every process:

``density``
    the log-density and its gradient at four fixed probe points around a start that
    depends on ``init`` but not on the seed (gradients of more than 16 coordinates as
    16 fixed projections). Values see everything the log-density depends on: its
    code, its data, data held by a host callback or a SciPy solver's closure.
``outputs``
    the arrays each draw writes (posterior variables with generated quantities, solver
    statistics, log-likelihood) with their shapes and dtypes, and the values of the
    posterior variables and the log-likelihood at the probe points, with fixed keys.

Values are compared with a relative tolerance of ``1e-8``, so a resume on another CPU
whose last bits differ is not refused.

Why not a hash of the jaxpr and of its constants: the jaxpr JAX traces for one function
depends on the state of JAX's caches (after ``jax.clear_caches()`` the same log-density
traced with one more constant and a dead ``reshape``), so equal programs would be
refused after a resume in a process that had done other work.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["probe_points", "density_fingerprint", "outputs_fingerprint", "values_match"]

#: Probe points: the first start, then steps of these sizes (relative to 1 + |x|)
#: along fixed random directions.
PROBE_SCALES = (0.0, 0.01, 0.1, 1.0)
#: Longer vectors (gradients, outputs) are stored as projections on this many directions.
MAX_ENTRIES = 16
#: The keys of generated quantities at the probe points come from this seed.
PROBE_KEY = 15
RTOL = 1e-8


def probe_points(start):
    """Fixed points around ``start`` (a pytree of one chain's position), stacked.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from mcmc_customgrad.sampling._identity import probe_points
    >>> probe_points(jnp.zeros(3)).shape
    (4, 3)
    """
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


def _compact(rows: np.ndarray) -> list:
    """``(probes, k)`` values -> JSON rows; more than 16 columns as 16 fixed projections."""
    rows = np.asarray(rows, dtype=float).reshape(len(PROBE_SCALES), -1)
    if rows.shape[1] > MAX_ENTRIES:
        directions = np.random.default_rng(3).standard_normal((rows.shape[1], MAX_ENTRIES))
        rows = rows @ (directions / np.sqrt(rows.shape[1]))
    return [[float(v) for v in row] for row in rows]


def density_fingerprint(logdensity, start, batched_value_and_grad=None) -> dict:
    """The log-density's values and gradients at fixed probe points near ``start``.

    Parameters
    ----------
    logdensity : callable
        ``logdensity(position) -> scalar``.
    start : pytree
        One chain's position (the probe points are placed around it).
    batched_value_and_grad : callable, optional
        A compiled ``vmap(value_and_grad(logdensity))`` to reuse; made here if None.

    Returns
    -------
    dict
        JSON-serialisable: ``lp`` (one value per probe) and ``gradient`` (per probe, the
        gradient, or its projections on 16 fixed directions when it is longer).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from mcmc_customgrad.sampling._identity import density_fingerprint, values_match
    >>> y1, y2 = jnp.array([1.0, 2.0]), jnp.array([1.0, 3.0])
    >>> a = density_fingerprint(lambda b: -jnp.sum((y1 - b) ** 2), jnp.zeros(2))
    >>> b = density_fingerprint(lambda b: -jnp.sum((y2 - b) ** 2), jnp.zeros(2))
    >>> values_match(a["gradient"], b["gradient"])
    False
    """
    probes = probe_points(start)
    if batched_value_and_grad is None:
        batched_value_and_grad = jax.jit(jax.vmap(jax.value_and_grad(logdensity)))
    lp, grad = batched_value_and_grad(probes)
    g = np.concatenate(
        [np.asarray(x).reshape(len(PROBE_SCALES), -1) for x in jax.tree.leaves(grad)], axis=1
    )
    return {"lp": [float(v) for v in np.asarray(lp)], "gradient": _compact(g)}


def outputs_fingerprint(shapes, batched_draw, start) -> dict:
    """What one draw writes: array names, shapes and dtypes, and values at the probes.

    Parameters
    ----------
    shapes : dict
        ``jax.eval_shape`` of the per-draw pass: ``{group: {name: ShapeDtypeStruct}}``.
    batched_draw : callable
        The compiled per-draw pass over a batch, ``(positions, keys) -> {group: ...}``.
    start : pytree
        One chain's position (the probe points are placed around it).

    Returns
    -------
    dict
        ``arrays``: ``{"group__name": "dtype[shape]"}``; ``values``: for the posterior
        variables and the log-likelihood, their values at the probe points with fixed
        keys (as for :func:`density_fingerprint`). Solver statistics count by their
        presence only: their values depend on the solver's path, not on what is computed.
    """
    arrays = {}
    for group, values in shapes.items():
        for name, s in values.items() if isinstance(values, dict) else [("", values)]:
            arrays[f"{group}__{name}"] = f"{s.dtype}{list(s.shape)}"
    keys = jax.random.split(jax.random.key(PROBE_KEY), len(PROBE_SCALES))
    out = jax.device_get(batched_draw(probe_points(start), keys))
    values = {}
    for group, entries in out.items():
        if group == "solver":
            continue
        for name, v in entries.items() if isinstance(entries, dict) else [("", entries)]:
            v = np.asarray(v)
            if jnp.issubdtype(v.dtype, jnp.number) or v.dtype == bool:
                values[f"{group}__{name}"] = _compact(v.astype(float))
    return {"arrays": dict(sorted(arrays.items())), "values": dict(sorted(values.items()))}


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
