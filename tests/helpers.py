"""Closed forms and small problems shared by the tests."""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np

# JAX's monitoring event for each function traced to a jaxpr (with its name).
_TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"


@contextlib.contextmanager
def traced_programs():
    """The names of the functions JAX traces inside the ``with`` block (a list)."""
    names = []

    def listener(event, duration, **kwargs):
        if event == _TRACE_EVENT:
            names.append(kwargs.get("fun_name", "?"))

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield names
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def chain_programs(names):
    """The sampler's per-chain programs among traced ``names`` (``chains_warmup``, ...)."""
    return [n for n in names if n.startswith("chains_")]


def conjugate_inner(p):
    def g(y, x):
        return jnp.sum(jnp.abs(y) ** p / p - x * y)

    return g


def conjugate_closed(p):
    q = p / (p - 1)

    def f(x):
        return jnp.sum(jnp.abs(x) ** q / q)

    return f


def kepler(E, M, e):
    return E - e * jnp.sin(E) - M


def rel_err(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12)))
