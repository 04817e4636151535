"""Every library model: implicit density vs its reference vs the naive unrolled solve.

    python benchmarks/bench_models.py

For each model of ``mcg.models``, in this process, float64, at the model's true (or a
fixed) parameter point:

- value_and_grad time of the implicit density and of its closed-form reference;
- the naive alternative a user would write: a fixed number K of solver iterations
  unrolled with ``lax.scan`` and differentiated by plain autodiff, at K = 10, 100, 1000:
  its time, its compiled temporary memory (XLA's memory analysis of the jitted
  value_and_grad) and its gradient error against the reference;
- the implicit density's temporary memory as its solver's iteration cap grows over the
  same K (it must stay flat: the implicit derivative stores nothing per iteration).

Times: minimum over repeats of the mean of 20 calls, after compilation.
"""

from __future__ import annotations

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
from jax.scipy.stats import expon, norm  # noqa: E402

import mcmc_customgrad as mcg  # noqa: E402
from mcmc_customgrad.models.conjugate import conjugate_inner  # noqa: E402
from mcmc_customgrad.models.kepler import _lognormal_logpdf, radial_velocity  # noqa: E402

KS = (10, 100, 1000)


def timed(fn, u, repeats=15, number=20):
    jax.block_until_ready(fn(u))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            out = fn(u)
        jax.block_until_ready(out)
        best = min(best, (time.perf_counter() - start) / number)
    return best


def temp_bytes(fn, u):
    stats = jax.jit(jax.value_and_grad(fn)).lower(u).compile().memory_analysis()
    return stats.temp_size_in_bytes if stats is not None else float("nan")


# --- naive unrolled densities, one per model -------------------------------------------
def naive_conjugate(example, d, p, K):
    def f(x):
        def step(y, _):
            g = jnp.sign(y) * jnp.abs(y) ** (p - 1) - x
            h = (p - 1) * jnp.abs(y) ** (p - 2)
            return y - g / (h + jnp.abs(g) + 1e-12), None  # damped element-wise Newton

        y, _ = jax.lax.scan(step, jnp.zeros(d), None, length=K)
        return -conjugate_inner(y, x, p)

    return lambda u: jnp.sum(norm.logpdf(u)) + norm.logpdf(f(u))


def naive_kepler(example, K):
    data, truth = example.data, example.data["truth"]

    def anomaly(M, e):
        def step(E, _):
            return E - (E - e * jnp.sin(E) - M) / (1 - e * jnp.cos(E)), None

        E, _ = jax.lax.scan(step, M + e * jnp.sin(M), None, length=K)
        return E

    def logdensity(params):
        scale = jnp.sqrt(data["sigma"] ** 2 + params["jitter"] ** 2)
        ll = norm.logpdf(data["v"], radial_velocity(data["t"], params, anomaly), scale)
        prior = (
            _lognormal_logpdf(params["period"], 0.2, truth["period"])
            + _lognormal_logpdf(params["amplitude"], 1.0, 5.0)
            + _lognormal_logpdf(params["jitter"], 1.0, 0.5)
        )
        return prior + jnp.sum(ll)

    model = example.model
    return lambda u: logdensity(model.to_constrained(u)) + model.log_abs_det_jacobian(u)


def naive_equilibrium(example, K):
    y = example.data["y"]

    def level(a):
        x, _ = jax.lax.scan(
            lambda x, _: (0.5 * (x + a / x), None), jnp.maximum(a, 1.0), None, length=K
        )
        return x

    def logdensity(p):
        prior = expon.logpdf(p["a"], scale=4.0) + expon.logpdf(p["sigma"])
        return prior + jnp.sum(norm.logpdf(y, level(p["a"]), p["sigma"]))

    model = example.model
    return lambda u: logdensity(model.to_constrained(u)) + model.log_abs_det_jacobian(u)


def naive_ridge(example, K):
    d = example.data
    X, y, Xv, yv = d["X"], d["y"], d["X_valid"], d["y_valid"]
    top = jnp.linalg.norm(X, 2) ** 2

    def fit(lam):
        step_size = 1.0 / (2 * (top + lam))  # gradient descent with step 1/L

        def step(b, _):
            return b - step_size * (2 * X.T @ (X @ b - y) + 2 * lam * b), None

        b, _ = jax.lax.scan(step, jnp.zeros(X.shape[1]), None, length=K)
        return b

    def logdensity(p):
        prior = expon.logpdf(p["lam"], scale=10.0) + expon.logpdf(p["sigma"])
        return prior + jnp.sum(norm.logpdf(yv, Xv @ fit(p["lam"]), p["sigma"]))

    model = example.model
    return lambda u: logdensity(model.to_constrained(u)) + model.log_abs_det_jacobian(u)


def capped(name, K):
    """The implicit density with its inner solver's iteration cap set to K."""
    if name == "conjugate":
        return mcg.models.conjugate(d=10, solver=mcg.solvers.LBFGS(max_steps=K)).model
    if name == "kepler":
        return mcg.models.kepler(num_obs=30, solver=mcg.solvers.Newton(max_steps=K)).model
    if name == "equilibrium":
        return mcg.models.equilibrium(solver=mcg.solvers.Newton(max_steps=K)).model
    if name == "ridge":
        return mcg.models.ridge(solver=mcg.solvers.LBFGS(max_steps=K)).model
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.parse_args()
    examples = {
        "conjugate": (mcg.models.conjugate(d=10), lambda ex, K: naive_conjugate(ex, 10, 3.0, K)),
        "kepler": (mcg.models.kepler(num_obs=30), naive_kepler),
        "equilibrium": (mcg.models.equilibrium(), naive_equilibrium),
        "ridge": (mcg.models.ridge(), naive_ridge),
        "host_conjugate": (mcg.models.host_conjugate(d=10), None),
    }
    print(f"jax {jax.__version__}, mcmc_customgrad {mcg.__version__}, {jax.devices()[0].platform}")
    print()
    print(
        "| model | implicit vg (µs) | reference vg (µs) | implicit / reference | "
        "naive K=10 / 100 / 1000: vg (µs) | naive temp memory (KiB) | naive grad rel. error | "
        "implicit temp memory, cap 10 / 100 / 1000 (KiB) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, (ex, naive) in examples.items():
        u = (
            ex.model.to_unconstrained(ex.data["truth"])
            if "truth" in ex.data
            else jnp.linspace(-1.5, 1.5, ex.model.dim)
        )
        vg = jax.jit(jax.value_and_grad(ex.model.logdensity))
        vg_ref = jax.jit(jax.value_and_grad(ex.reference.logdensity))
        t, t_ref = timed(vg, u), timed(vg_ref, u)
        g_ref = vg_ref(u)[1]
        scale = float(jnp.max(jnp.abs(g_ref)))
        if naive is None:
            naive_cols = ["n/a: JAX cannot differentiate SciPy"] * 3
        else:
            times, mems, errs = [], [], []
            for K in KS:
                fn = naive(ex, K)
                vg_naive = jax.jit(jax.value_and_grad(fn))
                times.append(f"{timed(vg_naive, u) * 1e6:.0f}")
                mems.append(f"{temp_bytes(fn, u) / 1024:.0f}")
                errs.append(f"{float(jnp.max(jnp.abs(vg_naive(u)[1] - g_ref))) / scale:.0e}")
            naive_cols = [" / ".join(times), " / ".join(mems), " / ".join(errs)]
        caps = []
        for K in KS:
            m = capped(name, K)
            caps.append("n/a" if m is None else f"{temp_bytes(m.logdensity, u) / 1024:.0f}")
        print(
            f"| {name} | {t * 1e6:.1f} | {t_ref * 1e6:.1f} | {t / t_ref:.1f} | "
            + " | ".join(naive_cols)
            + f" | {' / '.join(caps)} |"
        )


if __name__ == "__main__":
    main()
