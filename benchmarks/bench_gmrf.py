"""The sparse embedded Laplace (``mcg.gmrf_log_marginal``) from 10^3 to 10^5 latents.

    python benchmarks/bench_gmrf.py              # about 5 minutes on 2 CPU cores
    python benchmarks/bench_gmrf.py --quick      # smoke test (small sizes only)
    python benchmarks/bench_gmrf.py --nuts 1000  # adds NUTS on a 10^4-latent model

Models: Poisson counts with a latent log-rate ``x``, ``y_i ~ Poisson(exp(x_i))``, and a
GMRF prior on ``x`` with mean ``mu``: a 1-D AR(1) series (``mcg.gmrf.ar1``, n = 10^3,
2 x 10^3, 10^4, 10^5), a second-order random walk with its two constraints
(``mcg.gmrf.rw2``, n = 10^4, 10^5), and the SPDE Matern field on 2-D grids
(``mcg.gmrf.matern_grid``, 100 x 100 and 300 x 300). Per configuration, in a fresh
subprocess (so that its peak memory is its own): the compile time; the time of
``jit(value_and_grad)`` in the three hyperparameters after compilation (median of
calls at distinct points); the peak resident memory of the first call above the memory
before it; the Newton step count at the mode; and the *floor*: one sparse Cholesky
factorisation of ``Q + W`` plus its selected inverse (``sparsax.logdet`` and
``sparsax.selinv`` at fresh values), the least any exact gradient of the marginal
costs. Where it fits, today's dense path (``mcg.latent_gaussian_log_marginal``, with
the AR(1) covariance ``rho^|s - t| / tau`` in closed form) runs on the same data: its
time and the ratio dense / sparse.

``--nuts N`` samples the hyperparameters ``(rho, tau, mu)`` of the 10^4-latent AR(1)
model with ``mcg.sample`` (4 vectorized chains, N warmup steps and N draws) and reports
the bulk ESS per second of the draws.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import mcmc_customgrad as mcg  # noqa: E402
from mcmc_customgrad.laplace import poisson  # noqa: E402

H0 = np.array([0.8, 0.0, 0.5])  # atanh-ish rho, log tau, mu (AR(1)); log kappa, log tau, mu


def _counts(n, seed=0):
    """Counts with log-rate 0.5 + x, x a stationary AR(1) series (rho 0.9, sd 1)."""
    rng = np.random.default_rng(seed)
    e = rng.normal(size=n) * np.sqrt(1 - 0.9**2)
    x = np.empty(n)
    x[0] = rng.normal()
    for t in range(1, n):
        x[t] = 0.9 * x[t - 1] + e[t]
    return jnp.asarray(rng.poisson(np.exp(0.5 + x)))


def sparse_fn(kind, size):
    n = size if isinstance(size, int) else size[0] * size[1]
    ll = poisson(_counts(n))

    def f(h):
        return mcg.gmrf_log_marginal(
            ll, _precision(kind, size, h), jnp.zeros(n), mean=h[2], full_output=True
        )

    return f, n, ll


def _precision(kind, size, h):
    if kind == "ar1":
        return mcg.gmrf.ar1(size, jnp.tanh(h[0]), jnp.exp(h[1]))
    if kind == "rw2":  # h[0] unused
        return mcg.gmrf.rw2(size, jnp.exp(h[1] + 6.0 + 0.0 * h[0]))
    return mcg.gmrf.matern_grid(tuple(size), jnp.exp(h[0] - 2.0), jnp.exp(h[1]))


def dense_fn(n):
    ll = poisson(_counts(n))
    lag = jnp.abs(jnp.arange(n)[:, None] - jnp.arange(n)[None, :])

    def f(h):
        rho, tau = jnp.tanh(h[0]), jnp.exp(h[1])
        cov = rho**lag / tau
        return mcg.latent_gaussian_log_marginal(ll, cov, jnp.zeros(n), mean=h[2])

    return f


def _status():
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1]) * 1024
    return out


def _first_call(fn, arg):
    """Seconds and peak RSS above the RSS before, of one call."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        reset = True
    except OSError:
        reset = False
    before = _status()
    start = time.perf_counter()
    out = jax.block_until_ready(fn(arg))
    seconds = time.perf_counter() - start
    peak = _status()["VmHWM"] - before["VmRSS"] if reset else float("nan")
    return seconds, peak, out


def _median_time(fn, repeats):
    times = []
    for k in range(repeats):
        h = jnp.asarray(H0 * (1.0 + 1e-3 * (k + 1)))
        start = time.perf_counter()
        jax.block_until_ready(fn(h))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_config(spec):
    kind, size, repeats = spec["kind"], spec["size"], spec["repeats"]
    if kind == "dense":
        f = dense_fn(size)
        start = time.perf_counter()
        vg = jax.jit(jax.value_and_grad(f)).lower(jnp.asarray(H0)).compile()
        compile_s = time.perf_counter() - start
        first, peak, (value, _) = _first_call(vg, jnp.asarray(H0))
        return {
            "compile": compile_s,
            "first": first,
            "peak": peak,
            "vg": _median_time(vg, repeats),
            "value": float(value),
        }
    import sparsax

    f, n, ll = sparse_fn(kind, size)
    start = time.perf_counter()
    vg = jax.jit(jax.value_and_grad(f, has_aux=True)).lower(jnp.asarray(H0)).compile()
    compile_s = time.perf_counter() - start
    first, peak, ((value, info), _) = _first_call(vg, jnp.asarray(H0))
    seconds = _median_time(vg, repeats)

    # The floor: Q + W at the mode, factorised and selected-inverted at fresh values.
    h = jnp.asarray(H0)
    Q = _precision(kind, size, h)
    _, post = mcg.gmrf_latent_draws(
        jax.random.key(0), ll, Q, jnp.zeros(n), mean=h[2], num_draws=0, full_output=True
    )
    p = Q.pattern
    w = jnp.exp(post.mean)  # Poisson with a log link: W = exp(x) at the mode
    values = jnp.concatenate([Q.data, w])

    @jax.jit
    def floor(s):
        v = values * s
        return sparsax.logdet(p.a_rows, p.a_cols, v, n), sparsax.selinv(p.a_rows, p.a_cols, v, n)

    jax.block_until_ready(floor(1.0))
    floor_times = []
    for k in range(max(1, min(repeats, 3))):
        start = time.perf_counter()
        jax.block_until_ready(floor(1.0 + 1e-6 * (k + 1)))
        floor_times.append(time.perf_counter() - start)
    return {
        "n": n,
        "nnz": p.nnz,
        "compile": compile_s,
        "first": first,
        "peak": peak,
        "vg": seconds,
        "floor": statistics.median(floor_times),
        "steps": int(info.num_steps),
        "converged": bool(info.converged),
        "status": mcg.Status(int(info.status)).name,
        "value": float(value),
    }


def in_subprocess(spec):
    done = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        return {"error": lines[-1] if lines else "failed", "n": None}
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_nuts(num):
    n = 10_000
    ll = poisson(_counts(n))

    def logdensity(h):
        Q = mcg.gmrf.ar1(n, jnp.tanh(h[0]), jnp.exp(h[1]))
        lm = mcg.gmrf_log_marginal(ll, Q, jnp.zeros(n), mean=h[2])
        return lm - 0.5 * jnp.sum(h**2)  # standard normal priors on (atanh rho, log tau, mu)

    idata = mcg.sample(
        logdensity,
        jnp.asarray(H0),
        num_chains=4,
        num_warmup=num,
        num_samples=num,
        seed=1,
        warn=False,
        progress_bar=False,
        solver_stats=False,
    )
    from mcmc_customgrad import _arviz

    ess = min(float(np.min(v)) for v in _arviz.ess(idata, "bulk").values())
    a = idata.posterior.attrs
    return {
        "ess": ess,
        "sampling_seconds": a["sampling_seconds"],
        "warmup_seconds": a["warmup_seconds"],
        "ess_per_s": ess / a["sampling_seconds"],
        "grads_per_draw": a["num_grad_evals"] / (4 * num),
        "divergences": int(idata.sample_stats["diverging"].values.sum()),
    }


def _fmt_bytes(b):
    return "n/a" if b != b else f"{b / 2**20:.0f} MiB"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--nuts", type=int, default=0, metavar="N")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_config(json.loads(args.worker))))
        return
    if args.quick:
        sparse = [("ar1", 1000), ("ar1", 10_000), ("matern", [30, 30])]
        dense = [1000]
    else:
        sparse = [("ar1", 1000), ("ar1", 2000), ("ar1", 10_000), ("ar1", 100_000)]
        sparse += [("rw2", 10_000), ("rw2", 100_000)]
        sparse += [("matern", [100, 100]), ("matern", [300, 300])]
        dense = [1000, 2000]
    print(f"# bench_gmrf ({platform.processor() or platform.machine()}, jax {jax.__version__})")
    print()
    print(
        "| prior | n | nnz(Q) | Newton steps | compile s | value_and_grad s | floor s | "
        "vg / floor | peak memory | dense vg s | dense / sparse |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    dense_results = {n: in_subprocess({"kind": "dense", "size": n, "repeats": 5}) for n in dense}
    for kind, size in sparse:
        r = in_subprocess({"kind": kind, "size": size, "repeats": 5})
        if "error" in r:
            print(f"| {kind} | {size} | error: {r['error']} |")
            continue
        d = dense_results.get(r["n"]) if kind == "ar1" else None
        dense_cells = f"{d['vg']:.4f} | {d['vg'] / r['vg']:.0f}x" if d and "vg" in d else "- | -"
        label = {"ar1": "AR(1)", "rw2": "RW2 (constrained)"}.get(kind) or (
            f"Matern {size[0]} x {size[1]}"
        )
        if not r["converged"]:
            label += f" (solve: {r['status']})"
        print(
            f"| {label} | {r['n']} | {r['nnz']} | {r['steps']} | {r['compile']:.2f} | "
            f"{r['vg']:.4f} | {r['floor']:.4f} | {r['vg'] / r['floor']:.1f} | "
            f"{_fmt_bytes(r['peak'])} | {dense_cells} |"
        )
    if args.nuts:
        r = run_nuts(args.nuts)
        print()
        print(
            f"NUTS, AR(1) Poisson, n = 10,000 latents, 4 chains x {args.nuts} warmup + "
            f"{args.nuts} draws: min bulk ESS {r['ess']:.0f} in {r['sampling_seconds']:.1f} s "
            f"of draws ({r['ess_per_s']:.2f} ESS/s; warmup {r['warmup_seconds']:.1f} s), "
            f"{r['grads_per_draw']:.1f} gradients per draw, {r['divergences']} divergences."
        )


if __name__ == "__main__":
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    main()
