"""Closed forms and small problems shared by the tests."""

import jax.numpy as jnp
import numpy as np


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
