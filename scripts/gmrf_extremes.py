"""The BYM2 disease map at extreme hyperparameters: NaN with a reason, never a crash.

    python scripts/gmrf_extremes.py     # about a minute on 2 CPU cores

Warmup's first proposals, and an SBC run's prior draws, reach far into the tails:
``sigma`` from ``e^-40`` to ``e^20``, ``logit(phi)`` from -30 to 18, intercepts of -20.
This script evaluates ``value_and_grad`` of

- the Poisson model (:func:`mcmc_customgrad.models.disease_map`) on a grid of 135 such
  points and counts the finite results, the NaNs and the crashes (a sparse
  factorisation that raises stops the whole compiled program: a crash of a sampling
  run);
- the exact Gaussian member (:func:`mcmc_customgrad.models.disease_map_gaussian`) on
  150 points, against its dense closed form: finite results must agree to 1e-8 in value
  and 1e-6 in gradient (relative), or be NaN.

It prints the counts and every point that is finite but off. The figures are quoted in
``docs/laplace.md`` (section "Sparse precision").
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

import mcmc_customgrad as mcg  # noqa: E402

LOG_SIGMA = [-40, -20, -12, -8, -5, -2, 0, 3, 6, 10, 20]
LOGIT_PHI = [-30, -10, 0, 10, 18]
MU = [0.0, 5.0, -20.0]


def poisson_grid():
    """(finite, nan, crashed) counts of the Poisson model on the grid (no -2 and 0)."""
    model = mcg.models.disease_map().model
    f = jax.jit(jax.value_and_grad(model.logdensity))
    counts = {"finite": 0, "nan": 0, "crashed": 0}
    for ls, z, mu in itertools.product([s for s in LOG_SIGMA if s not in (-2, 0)], LOGIT_PHI, MU):
        try:
            value, grad = f(jnp.array([mu, float(ls), float(z)]))
        except Exception:  # any runtime error is what is counted here
            counts["crashed"] += 1
            continue
        finite = np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(grad)))
        counts["finite" if finite else "nan"] += 1
    return counts


def gaussian_grid():
    """(finite and exact, nan, off) on the exact member, and the points that are off."""
    model, reference, _ = mcg.models.disease_map_gaussian()
    f = jax.jit(jax.value_and_grad(model.logdensity))
    f_ref = jax.jit(jax.value_and_grad(reference.logdensity))
    counts, off = {"exact": 0, "nan": 0, "off": 0}, []
    for ls, z, mu in itertools.product([s for s in LOG_SIGMA if s != 20], LOGIT_PHI, MU):
        u = jnp.array([mu, float(ls), float(z)])
        (v, g), (v_ref, g_ref) = f(u), f_ref(u)
        if not np.isfinite(float(v)):
            counts["nan"] += 1
            continue
        value_error = abs(float(v - v_ref)) / abs(float(v_ref))
        grad_error = float(jnp.max(jnp.abs(g - g_ref)) / jnp.max(jnp.abs(g_ref)))
        if value_error <= 1e-8 and grad_error <= 1e-6:
            counts["exact"] += 1
        else:
            counts["off"] += 1
            off.append((ls, z, mu, value_error, grad_error))
    return counts, off


def main() -> int:
    """Print both grids; exit 1 if anything crashed or was finite and off by over 1e-6."""
    crashes = poisson_grid()
    print(f"Poisson disease map, {sum(crashes.values())} points: {crashes}")
    counts, off = gaussian_grid()
    print(f"Gaussian member against its closed form, {sum(counts.values())} points: {counts}")
    for ls, z, mu, ev, eg in off:
        print(f"  off: log sigma {ls}, logit phi {z}, mu {mu}: value {ev:.1e}, gradient {eg:.1e}")
    bad = crashes["crashed"] or any(ev > 1e-6 or eg > 1e-4 for *_, ev, eg in off)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
