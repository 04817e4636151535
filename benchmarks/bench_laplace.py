"""Cost and accuracy of the embedded Laplace marginal against Blackjax and a closed form.

    python benchmarks/bench_laplace.py             # a few minutes on 2 CPU cores
    python benchmarks/bench_laplace.py --quick     # smoke test: n = 20, 50, few repeats

Everything runs in this process, in float64, at latent sizes n = 50, 200, 500
(``--quick``: 20, 50). The timed function is always ``jax.jit(jax.value_and_grad(f))`` of a
scalar function ``f`` of the hyperparameter vector, cold-started at ``theta0 = 0``.

1. Poisson GP. ``x = linspace(0, 1, n)``, squared-exponential kernel
   ``K = alpha^2 exp(-(x_i - x_j)^2 / (2 rho^2)) + jitter I`` with ``jitter = 1e-4``
   (``--jitter``; as in tests/test_laplace.py, see below), counts
   ``y_i ~ Poisson(exp(f_i + 1))`` simulated from one GP draw ``f`` (``rho = 0.2``,
   ``alpha = 1``, NumPy seed ``--seed``; the offset 1 is known data), and ``f(rho, alpha)``
   evaluated at ``(0.25, 1.1)``:

   - ours: ``latent_gaussian_log_marginal(poisson(y, 1.0), K, 0)`` (Newton on the
     ``B = I + W^1/2 K W^1/2`` form, adjoint gradient), default tolerance;
   - generic: ``laplace_log_marginal(log_joint, 0, phi)`` with
     ``log_joint = sum poisson + multivariate_normal.logpdf(theta, 0, K)`` (dense Hessian);
   - Blackjax: ``laplace_marginal_factory(log_joint, 0, ...)`` on the same ``log_joint``,
     set to converge (its default stops after 30 L-BFGS steps): ``gtol = 1e-10`` (2-norm
     of the gradient), ``ftol = 0``, ``maxcor = 50``, ``maxiter = 2000`` (``--bj-maxiter``).
     Its gradient differs in method, not in what it computes: the mode's derivative by
     ``lax.custom_root`` (a dense Jacobian and an LU solve) and the log-determinant by
     reverse mode through ``jax.hessian`` and ``slogdet``.

   Blackjax never meets ``gtol = 1e-10`` here: its L-BFGS stops (``ftol = 0``: the value
   no longer changes) once the line search finds no decrease at float64 resolution (the
   rounding floor of a value-based line search on a Hessian with eigenvalues up to
   ``1 / jitter``). At ``jitter = 1e-4`` that is after roughly 150-600 iterations at
   n = 20-500, with ``|grad|_2`` from ~1e-8 (n = 20) to ~5e-5 (n = 500), and its value is
   then within ~1e-7 of the converged one (measured in smoke runs and probes). At
   ``jitter = 1e-6`` it stalls at ``|grad|_2 ~ 2e-4`` after ~4500 iterations at n = 200
   (value off by ~3e-6) and takes far longer, hence 1e-4 (tests/test_laplace.py's choice
   for its Blackjax comparison too). ``maxiter`` is well above the stall (finished steps of
   its ``lax.scan`` are cheap no-ops); the iterations table says whether it was hit.

   Agreement: value differences ``|v - v_ours|`` and gradient differences
   ``max|g - g_ours| / max|g_ours|``. Iterations: ours and the generic path from
   ``full_output=True`` (``info.num_steps``), Blackjax's from ``solve_theta_with_info``
   (L-BFGS ``iter_num``, the final gradient 2-norm and whether it hit ``maxiter``), each a
   separate call at the same point.

2. Gaussian likelihood, ``y_i ~ N(f_i, sigma^2)`` simulated likewise (``sigma = 0.3``), same
   kernel and jitter, ``f(rho, alpha, sigma)`` at ``(0.25, 1.1, 0.35)``: ours
   (``gaussian(y)``, ``sigma`` as a likelihood argument) against the exact marginal
   ``multivariate_normal.logpdf(y, 0, K + sigma^2 I)``.

LAPACK threads: ``OPENBLAS_NUM_THREADS`` defaults to 1 here (set it to override). JAX's CPU
Cholesky and LU go to SciPy's OpenBLAS, whose threads, on 2 cores shared with other work,
made every variant up to 100x slower from n = 50 on (25 ms instead of 0.25 ms per call).

Timing: after compilation (ahead of time) and a few sizing calls, each variant gets ``N``
calls per repeat (a repeat takes about ``--chunk`` seconds) and ``R`` repeats (``--repeats``),
interleaved over all variants of one size so that load on a shared machine hits them alike.
Slow variants (Blackjax: ~2 s per call at n = 200, ~10 s at n = 500) get
fewer repeats, about ``--slow-budget`` seconds in all but at least one call after the
compilation; most of the run is Blackjax at n = 500 (one timed call and its
iteration-count solve). Reported: the minimum (and median) time per call over the
repeats, ``R x N``, the time to trace and compile, the ratios Blackjax / ours,
generic / ours and ours / exact, and a final table of the issue's targets (Blackjax / ours
>= 50 and ours / exact <= 10, both at n = 200).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time

# Before JAX loads LAPACK (see the module docstring).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax

jax.config.update("jax_enable_x64", True)
import blackjax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from blackjax.mcmc.laplace_marginal import laplace_marginal_factory  # noqa: E402
from jax.scipy.stats import multivariate_normal  # noqa: E402

import mcmc_customgrad as mcg  # noqa: E402
from mcmc_customgrad.laplace import (  # noqa: E402
    gaussian,
    laplace_log_marginal,
    latent_gaussian_log_marginal,
    poisson,
)

# Simulation truth and evaluation points.
RHO_TRUE, ALPHA_TRUE, SIGMA_TRUE = 0.2, 1.0, 0.3
LOG_OFFSET = 1.0
PHI_POISSON = (0.25, 1.1)  # (rho, alpha)
H_GAUSS = (0.25, 1.1, 0.35)  # (rho, alpha, sigma)

# Blackjax's L-BFGS settings that make it converge (its defaults: 30 steps, gtol 1e-8,
# ftol 1e-5, maxcor 10).
BJ_GTOL, BJ_FTOL, BJ_MAXCOR = 1e-10, 0.0, 50

# Targets of the issue, at n = TARGET_N.
TARGET_N = 200
TARGET_BJ_RATIO = 50.0  # Blackjax / ours, Poisson: at least
TARGET_EXACT_RATIO = 10.0  # ours / exact, Gaussian: at most


# ------------------------------------------------------------------------------- problems


def se_cov(x, rho, alpha, jitter):
    d = x[:, None] - x[None, :]
    return alpha**2 * jnp.exp(-0.5 * d**2 / rho**2) + jitter * jnp.eye(x.shape[0])


def simulate(n, seed, jitter):
    """Inputs, one GP draw and its Poisson counts and Gaussian observations (NumPy RNG)."""
    rng = np.random.default_rng([seed, n])
    x = np.linspace(0.0, 1.0, n)
    K = np.asarray(se_cov(jnp.asarray(x), RHO_TRUE, ALPHA_TRUE, jitter))
    f = np.linalg.cholesky(K) @ rng.standard_normal(n)
    counts = rng.poisson(np.exp(f + LOG_OFFSET))
    y_real = f + SIGMA_TRUE * rng.standard_normal(n)
    return jnp.asarray(x), jnp.asarray(counts), jnp.asarray(y_real)


def poisson_problem(x, counts, jitter, bj_maxiter):
    """The three Poisson GP marginals (functions of phi = (rho, alpha)) and diagnostics."""
    n = x.shape[0]
    ll = poisson(counts, log_offset=LOG_OFFSET)
    zeros = jnp.zeros(n)

    def cov(phi):
        return se_cov(x, phi[0], phi[1], jitter)

    def log_joint(theta, phi):
        return jnp.sum(ll(theta)) + multivariate_normal.logpdf(theta, zeros, cov(phi))

    def ours(phi, full_output=False):
        return latent_gaussian_log_marginal(ll, cov(phi), zeros, full_output=full_output)

    def generic(phi, full_output=False):
        return laplace_log_marginal(log_joint, zeros, phi, full_output=full_output)

    bj = laplace_marginal_factory(
        log_joint, zeros, maxiter=bj_maxiter, gtol=BJ_GTOL, ftol=BJ_FTOL, maxcor=BJ_MAXCOR
    )

    def blackjax_lm(phi):
        return bj(phi)[0]

    variants = {"ours": ours, "generic": generic, "Blackjax": blackjax_lm}
    diagnostics = {
        "ours": jax.jit(lambda phi: ours(phi, full_output=True)[1]),
        "generic": jax.jit(lambda phi: generic(phi, full_output=True)[1]),
        "Blackjax": jax.jit(lambda phi: bj.solve_theta_with_info(phi)[1]),
    }
    return variants, diagnostics


def gaussian_problem(x, y, jitter):
    n = x.shape[0]
    ll = gaussian(y)
    zeros = jnp.zeros(n)

    def ours(h, full_output=False):
        rho, alpha, sigma = h
        K = se_cov(x, rho, alpha, jitter)
        return latent_gaussian_log_marginal(ll, K, zeros, sigma, full_output=full_output)

    def exact(h):
        rho, alpha, sigma = h
        S = se_cov(x, rho, alpha, jitter) + sigma**2 * jnp.eye(n)
        return multivariate_normal.logpdf(y, zeros, S)

    variants = {"ours": ours, "exact": exact}
    diagnostics = {"ours": jax.jit(lambda h: ours(h, full_output=True)[1])}
    return variants, diagnostics


# --------------------------------------------------------------------------------- timing


def time_interleaved(cases, repeats, chunk_s, slow_budget_s):
    """Per-call seconds of each ``(fn, arg)`` in ``cases``: min and median over repeats.

    Each case is compiled ahead of time (``jit(fn).lower(arg).compile()``, timed as
    ``compile``; nothing runs), then called until ``chunk_s / 4`` seconds have passed (at
    least once) to size ``number``, the calls per repeat (about ``chunk_s`` seconds), and
    its repeat count (``repeats``, cut to fit ``slow_budget_s`` but at least 1). A case
    with ``number == 1`` counts its first sizing call as its first repeat. The remaining
    repeats are interleaved over the cases.
    """
    plan, samples, compiled = {}, {}, {}
    for name, (fn, arg) in cases.items():
        start = time.perf_counter()
        compiled[name] = fn = jax.jit(fn).lower(arg).compile()
        compile_s = time.perf_counter() - start
        calls = []
        while not calls or sum(calls) < chunk_s / 4:
            start = time.perf_counter()
            out = jax.block_until_ready(fn(arg))
            calls.append(time.perf_counter() - start)
        once = min(calls)
        number = max(1, min(1000, round(chunk_s / once)))
        reps = min(repeats, max(1, math.floor(slow_budget_s / (number * once))))
        samples[name] = [calls[0]] if number == 1 else []
        plan[name] = {"number": number, "repeats": reps, "compile": compile_s, "out": out}
    for _ in range(max(p["repeats"] for p in plan.values())):
        for name, (_, arg) in cases.items():
            p, fn = plan[name], compiled[name]
            if len(samples[name]) >= p["repeats"]:
                continue
            start = time.perf_counter()
            for _call in range(p["number"]):
                out = fn(arg)
            jax.block_until_ready(out)
            samples[name].append((time.perf_counter() - start) / p["number"])
    for name, p in plan.items():
        p["min"] = min(samples[name])
        p["median"] = statistics.median(samples[name])
    return plan


# -------------------------------------------------------------------------------- helpers


def value_diff(out, ref):
    return abs(float(out[0]) - float(ref[0]))


def grad_rel_diff(out, ref):
    g, g_ref = np.asarray(out[1]), np.asarray(ref[1])
    return float(np.max(np.abs(g - g_ref)) / np.max(np.abs(g_ref)))


def us(seconds):
    return f"{seconds * 1e6:,.0f}"


def mark(ok):
    return "yes" if ok else "**no**"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="n = 20, 50 and few repeats")
    parser.add_argument("--sizes", type=int, nargs="+", help="latent sizes (default 50 200 500)")
    parser.add_argument("--repeats", type=int, help="interleaved repeats (default 7; quick 2)")
    parser.add_argument("--chunk", type=float, help="seconds per repeat (default 0.2)")
    parser.add_argument(
        "--slow-budget", type=float, help="max timed seconds per variant (default 25)"
    )
    parser.add_argument("--jitter", type=float, default=1e-4, help="added to diag(K)")
    parser.add_argument("--bj-maxiter", type=int, default=2000, help="Blackjax maxiter")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sizes = args.sizes or ([20, 50] if args.quick else [50, 200, 500])
    repeats = args.repeats or (2 if args.quick else 7)
    chunk = args.chunk or (0.02 if args.quick else 0.2)
    slow_budget = args.slow_budget or (2.0 if args.quick else 25.0)

    print(
        f"# Laplace marginal, float64, value_and_grad per call, jitter {args.jitter:g}, "
        f"seed {args.seed}, repeats <= {repeats} (min / median over interleaved repeats)"
    )
    print(
        f"{platform.platform()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs (OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}), "
        f"{jax.devices()[0].platform}; jax {jax.__version__}, "
        f"blackjax {blackjax.__version__}, mcmc_customgrad {mcg.__version__}"
    )
    print(
        f"Blackjax L-BFGS: gtol {BJ_GTOL:g} (2-norm), ftol {BJ_FTOL:g}, maxcor {BJ_MAXCOR}, "
        f"maxiter {args.bj_maxiter}"
    )

    wall = time.perf_counter()
    timing_rows, poisson_rows, gauss_rows, iter_rows = [], [], [], []
    measured = {}
    for n in sizes:
        x, counts, y_real = simulate(n, args.seed, args.jitter)
        bj_maxiter = args.bj_maxiter
        pv, pdiag = poisson_problem(x, counts, args.jitter, bj_maxiter)
        gv, gdiag = gaussian_problem(x, y_real, args.jitter)
        phi, h = jnp.array(PHI_POISSON), jnp.array(H_GAUSS)
        cases = {("Poisson", k): (jax.value_and_grad(f), phi) for k, f in pv.items()}
        cases |= {("Gaussian", k): (jax.value_and_grad(f), h) for k, f in gv.items()}
        plan = time_interleaved(cases, repeats, chunk, slow_budget)

        p_ours = plan[("Poisson", "ours")]
        g_exact = plan[("Gaussian", "exact")]
        for (model, name), p in plan.items():
            ref = p_ours if model == "Poisson" else plan[("Gaussian", "ours")]
            timing_rows.append(
                f"| {n} | {model} | {name} | {us(p['min'])} | {us(p['median'])} | "
                f"{p['repeats']} x {p['number']} | {p['compile']:.1f} | "
                f"{p['min'] / ref['min']:.2f} |"
            )

        bj = plan[("Poisson", "Blackjax")]
        gen = plan[("Poisson", "generic")]
        poisson_rows.append(
            f"| {n} | {float(p_ours['out'][0]):.10g} | {value_diff(gen['out'], p_ours['out']):.1e} "
            f"| {grad_rel_diff(gen['out'], p_ours['out']):.1e} "
            f"| {value_diff(bj['out'], p_ours['out']):.1e} "
            f"| {grad_rel_diff(bj['out'], p_ours['out']):.1e} "
            f"| {gen['min'] / p_ours['min']:.1f} | {bj['min'] / p_ours['min']:.1f} |"
        )
        g_ours = plan[("Gaussian", "ours")]
        gauss_rows.append(
            f"| {n} | {float(g_exact['out'][0]):.10g} "
            f"| {value_diff(g_ours['out'], g_exact['out']):.1e} "
            f"| {grad_rel_diff(g_ours['out'], g_exact['out']):.1e} "
            f"| {g_ours['min'] / g_exact['min']:.2f} |"
        )

        info_ours, info_gen = pdiag["ours"](phi), pdiag["generic"](phi)
        info_bj, info_gauss = pdiag["Blackjax"](phi), gdiag["ours"](h)
        iter_rows.append(
            f"| {n} | {int(info_ours.num_steps)} ({bool(info_ours.converged)}) "
            f"| {int(info_gen.num_steps)} ({bool(info_gen.converged)}) "
            f"| {int(info_bj.iter_num)} / {bj_maxiter} | {float(info_bj.error):.1e} "
            f"| {bool(info_bj.converged)} | {bool(info_bj.hit_maxiter)} "
            f"| {int(info_gauss.num_steps)} ({bool(info_gauss.converged)}) |"
        )
        measured[n] = (bj["min"] / p_ours["min"], g_ours["min"] / g_exact["min"])
    wall = time.perf_counter() - wall

    print(f"total {wall:.0f} s")
    print()
    print("Time per call of jit(value_and_grad); last column: min time / ours' min time:")
    print()
    print("| n | likelihood | variant | min (µs) | median (µs) | R x N | compile (s) | / ours |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(timing_rows))
    print()
    print("Poisson GP: agreement with ours (|value diff|, max|grad diff| / max|grad|), speed-up:")
    print()
    print(
        "| n | value (ours) | generic: value | generic: grad | Blackjax: value "
        "| Blackjax: grad | generic / ours | Blackjax / ours |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(poisson_rows))
    print()
    print("Gaussian likelihood: ours against the exact marginal:")
    print()
    print("| n | value (exact) | |value diff| | grad rel. diff | ours / exact |")
    print("|---|---|---|---|---|")
    print("\n".join(gauss_rows))
    print()
    print(
        "Iterations at the evaluation point, cold start (Newton steps (converged); "
        "Blackjax: L-BFGS iterations / maxiter, final |grad|_2, error <= gtol, hit maxiter):"
    )
    print()
    print(
        "| n | Poisson ours | Poisson generic | Blackjax iters | Blackjax |grad| "
        "| Blackjax converged | Blackjax hit maxiter | Gaussian ours |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(iter_rows))
    print()

    at = TARGET_N if TARGET_N in measured else max(measured)
    where = f"n={at}" + ("" if at == TARGET_N else f" (n={TARGET_N} not run)")
    bj_ratio, exact_ratio = measured[at]
    print("| target | measured | met |")
    print("|---|---|---|")
    print(
        f"| Poisson GP, {where}: Blackjax / ours >= {TARGET_BJ_RATIO:g} | {bj_ratio:.1f} | "
        f"{mark(bj_ratio >= TARGET_BJ_RATIO)} |"
    )
    print(
        f"| Gaussian, {where}: ours / exact <= {TARGET_EXACT_RATIO:g} | {exact_ratio:.2f} | "
        f"{mark(exact_ratio <= TARGET_EXACT_RATIO)} |"
    )


if __name__ == "__main__":
    main()
