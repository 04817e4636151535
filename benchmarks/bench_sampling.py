"""Sampling efficiency of custom-gradient densities against their closed-form references.

    python benchmarks/bench_sampling.py             # a few minutes on 2 CPU cores
    python benchmarks/bench_sampling.py --quick --repeats 1   # smoke test

Every configuration runs ``mcg.sample`` (Blackjax NUTS, vectorized chains) in this
process, float64, with the same settings (4 chains, 1000 warmup steps, 1000 draws;
``--quick``: 200/200) and the same seeds:

- conjugate d = 10 (seed 000's density ``sum N(x_i) + N(f(x))``): the closed form (the
  reference); ``mcg.models.conjugate`` as is (cold start ``y0 = 0``, the default inner
  solver, damped Newton at this size) and with ``solver=LBFGS()``; seed 000's recipe
  (``jax.scipy.optimize.minimize`` BFGS, gtol 1e-10, and a hand ``custom_jvp`` whose
  derivative is the argmin); and ``mcg.min_value`` started at ``y0 = x``, a function of
  the position alone, so the density stays a function of the position;
- Kepler (``mcg.models.kepler()``, 30 observations): the reference and the model, every
  chain started at the true parameters (from the default random starts the chains stick
  in distinct local modes, R-hat ~2, and their ESS means nothing).

Reported, per configuration, over R repeats with seeds ``seed, seed + 1, ...``
(interleaved, so that load on a shared machine hits every configuration alike):

- ESS/s: the minimum over parameters of ArviZ's bulk ESS divided by ``sampling_seconds``
  (the draws, after compilation); median over repeats, since ESS is noisy;
- ESS per gradient evaluation (draws only) and gradient evaluations per draw (medians);
- time to first draw: ``init + warmup compile + warmup + draws compile`` seconds, from the
  first repeat only (the sampler caches compiled programs, so later repeats compile
  nothing);
- custom / reference ratios of ESS/s and of time to first draw.

Separately: the cost of ``solver_stats=True`` on the default conjugate model (the extra
per-draw solver-statistics pass, ``draw_stats_seconds``, and ESS/s with it counted; medians
over the repeats after the first, whose pass compiles), and the time per draw of 4
vectorized chains against 1 chain on the same model (medians).

Last, the crossover that sets ``mcg.solvers.ARGMIN_NEWTON_LIMIT``: the sampler's time per
gradient evaluation (4 vectorized chains, ``sampling_seconds / num_grad_evals`` per
chain) of the conjugate at d = 2 ... 50 with Newton and with L-BFGS, one seed, 300
warmup steps and 500 draws (``--quick``: d = 2, 10, 50 and 100 + 100;
``--no-crossover`` skips it). A throw-away run on a
standard normal first pays the process's one-off costs (imports, backend start-up) so
that no configuration is charged for them.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import jax

jax.config.update("jax_enable_x64", True)
import arviz  # noqa: E402
import blackjax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax.scipy.optimize import minimize  # noqa: E402
from jax.scipy.stats import norm  # noqa: E402

import mcmc_customgrad as mcg  # noqa: E402
from mcmc_customgrad._arviz import ess, rhat  # noqa: E402
from mcmc_customgrad.models.conjugate import conjugate_inner  # noqa: E402

D = 10
P = 3.0
TOL = 1e-10

# Targets printed next to the figures.
TARGET_ESS_RATIO = 0.15  # custom / reference ESS/s, conjugate d = 10, y0 = 0: at least
TARGET_TTFD_RATIO = 2.0  # custom / reference time to first draw: at most
TARGET_CHAINS_RATIO = 2.0  # 4 chains / 1 chain time per draw: at most


# --- the conjugate variants built here --------------------------------------------------
def _density(f):
    return lambda params: jnp.sum(norm.logpdf(params["x"])) + norm.logpdf(f(params["x"]))


def _seed_solve(x):
    res = minimize(
        lambda y: conjugate_inner(y, x, P), jnp.zeros_like(x), method="BFGS", options={"gtol": TOL}
    )
    return -res.fun, res.x


@jax.custom_jvp
def f_seed(x):
    """Seed 000's recipe: BFGS from y0 = 0, derivative = the argmin (Danskin)."""
    return _seed_solve(x)[0]


@f_seed.defjvp
def _f_seed_jvp(primals, tangents):
    (x,), (x_dot,) = primals, tangents
    value, argmin = _seed_solve(x)
    return value, jnp.dot(argmin, x_dot)


def f_warm(x):
    """``mcg.min_value`` started at y0 = x: the start depends on the position only."""
    return -mcg.min_value(conjugate_inner, x, x, P)


def conjugate_models():
    example = mcg.models.conjugate(d=D, p=P)
    spec = {"x": mcg.real(shape=(D,))}
    return {
        "reference (closed form)": example.reference,
        "mcg.min_value, y0 = 0": example.model,
        "mcg.min_value, y0 = 0, L-BFGS": mcg.models.conjugate(
            d=D, p=P, solver=mcg.solvers.LBFGS()
        ).model,
        "seed 000 recipe (BFGS + custom_jvp)": mcg.Model(_density(f_seed), spec),
        "mcg.min_value, y0 = x": mcg.Model(_density(f_warm), spec),
    }


# --- running ----------------------------------------------------------------------------
def run_once(model, init, seed, num_chains, num_warmup, num_samples, solver_stats=False):
    """One ``mcg.sample`` run -> the figures of one repeat."""
    idata = mcg.sample(
        model,
        init,
        num_chains=num_chains,
        num_warmup=num_warmup,
        num_samples=num_samples,
        seed=seed,
        warn=False,
        progress_bar=False,
        solver_stats=solver_stats,
    )
    a = idata.posterior.attrs
    min_ess = min(ess(idata, "bulk").values())
    grads = a["num_grad_evals"]
    return {
        "ess": min_ess,
        "sampling": a["sampling_seconds"],
        "draw_stats": a["draw_stats_seconds"],
        "ttfd": a["init_seconds"]
        + a["warmup_compile_seconds"]
        + a["warmup_seconds"]
        + a["compile_seconds"],
        "compile": a["warmup_compile_seconds"] + a["compile_seconds"],
        "ess_per_s": min_ess / a["sampling_seconds"],
        "ess_per_s_stats": min_ess / (a["sampling_seconds"] + a["draw_stats_seconds"]),
        "stats_overhead": a["draw_stats_seconds"] / a["sampling_seconds"],
        "ess_per_grad": min_ess / grads,
        "grads_per_draw": grads / (num_chains * num_samples),
        "per_draw": a["sampling_seconds"] / num_samples,
        "max_rhat": max(rhat(idata).values()) if num_chains > 1 else float("nan"),
        "divergences": int(idata.sample_stats["diverging"].values.sum()),
    }


def summarise(runs):
    """Medians over repeats; the time to first draw from the first repeat only."""
    out = {k: statistics.median(r[k] for r in runs) for k in runs[0] if k != "ttfd"}
    out["ttfd"] = runs[0]["ttfd"]
    out["compile_first"] = runs[0]["compile"]
    later = runs[1:] or runs  # the first repeat compiles the per-draw pass
    for k in ("draw_stats", "ess_per_s", "ess_per_s_stats", "stats_overhead"):
        out[k + "_later"] = statistics.median(r[k] for r in later)
    out["divergences"] = sum(r["divergences"] for r in runs)
    return out


def warm_up_process():
    mcg.sample(
        lambda x: -0.5 * jnp.sum(x**2),
        jnp.zeros(2),
        num_chains=2,
        num_warmup=20,
        num_samples=20,
        seed=0,
        warn=False,
        progress_bar=False,
        solver_stats=False,
    )


def time_per_grad(model, seed, num_warmup, num_samples):
    """Sampler seconds per gradient evaluation of 4 vectorized chains (all chains at once)."""
    idata = mcg.sample(
        model,
        num_chains=4,
        num_warmup=num_warmup,
        num_samples=num_samples,
        seed=seed,
        warn=False,
        progress_bar=False,
        solver_stats=False,
    )
    a = idata.posterior.attrs
    return a["sampling_seconds"] / (a["num_grad_evals"] / 4)


def crossover(quick, seed):
    """Newton against L-BFGS as the inner solver of the conjugate, by dimension."""
    dims = (2, 10, 50) if quick else (2, 5, 10, 20, 30, 50)
    num_warmup, num_samples = (100, 100) if quick else (300, 500)
    print()
    print(
        "Inner solver by dimension: conjugate, y0 = 0, sampler time per gradient "
        f"evaluation of 4 vectorized chains (µs), {num_warmup} warmup + {num_samples} draws, "
        f"seed {seed}; the default is Newton up to {mcg.solvers.ARGMIN_NEWTON_LIMIT} unknowns:"
    )
    print()
    print("| d | closed form | Newton | L-BFGS | Newton / L-BFGS | default |")
    print("|---|---|---|---|---|---|")
    for d in dims:
        t = [
            time_per_grad(m, seed, num_warmup, num_samples) * 1e6
            for m in (
                mcg.models.conjugate(d=d, p=P).reference,
                mcg.models.conjugate(d=d, p=P, solver=mcg.solvers.Newton()).model,
                mcg.models.conjugate(d=d, p=P, solver=mcg.solvers.LBFGS()).model,
            )
        ]
        default = type(mcg.solvers.default_solver("argmin", d)).__name__
        print(f"| {d} | {t[0]:.1f} | {t[1]:.1f} | {t[2]:.1f} | {t[1] / t[2]:.2f} | {default} |")


def mark(ok):
    return "yes" if ok else "**no**"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 warmup steps, 200 draws")
    parser.add_argument("--repeats", type=int, default=3, help="seeds per configuration")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--no-crossover", action="store_true", help="skip the solver table")
    args = parser.parse_args()
    num_warmup = num_samples = 200 if args.quick else 1000
    chains = args.chains

    conj = conjugate_models()
    kep = mcg.models.kepler()
    default_conj = conj["mcg.min_value, y0 = 0"]
    truth = kep.data["truth"]  # from random starts Kepler's chains stick in local modes
    # (model, variant) -> (model, init, num_chains, solver_stats)
    configs = {("conjugate d=10", name): (m, None, chains, False) for name, m in conj.items()}
    configs[("kepler", "reference (hand derivative)")] = (kep.reference, truth, chains, False)
    configs[("kepler", "mcg.root")] = (kep.model, truth, chains, False)
    configs[("conjugate d=10", "y0 = 0, solver_stats=True")] = (default_conj, None, chains, True)
    configs[("conjugate d=10", "y0 = 0, 1 chain")] = (default_conj, None, 1, False)

    warm_up_process()
    runs = {key: [] for key in configs}
    start = time.perf_counter()
    for r in range(args.repeats):
        for key, (model, init, n_chains, stats) in configs.items():
            runs[key].append(
                run_once(model, init, args.seed + r, n_chains, num_warmup, num_samples, stats)
            )
    wall = time.perf_counter() - start
    res = {key: summarise(v) for key, v in runs.items()}

    print(
        f"# NUTS sampling efficiency, float64, {chains} chains x {num_warmup} warmup + "
        f"{num_samples} draws, median over {args.repeats} seeds"
    )
    print(
        f"{platform.platform()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, {jax.devices()[0].platform}; jax {jax.__version__}, "
        f"blackjax {blackjax.__version__}, arviz {arviz.__version__}, "
        f"mcmc_customgrad {mcg.__version__}; total {wall:.0f} s"
    )
    print()
    print(
        "| model | variant | min bulk ESS | ESS/s | ESS/s vs ref. | time to first draw (s) "
        "| TTFD vs ref. | of which compile (s) | ESS / grad eval | grad evals / draw "
        "| time / draw (ms) | max R-hat | divergences |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    headline = [k for k, (_, _, n, s) in configs.items() if n == chains and not s]
    for key in headline:
        model_name, variant = key
        ref_key = next(k for k in headline if k[0] == model_name)
        s, ref = res[key], res[ref_key]
        print(
            f"| {model_name} | {variant} | {s['ess']:.0f} | {s['ess_per_s']:.0f} | "
            f"{s['ess_per_s'] / ref['ess_per_s']:.2f} | {s['ttfd']:.1f} | "
            f"{s['ttfd'] / ref['ttfd']:.2f} | {s['compile_first']:.1f} | "
            f"{s['ess_per_grad']:.3g} | {s['grads_per_draw']:.1f} | "
            f"{s['per_draw'] * 1e3:.2f} | {s['max_rhat']:.3f} | {s['divergences']} |"
        )

    base = res[("conjugate d=10", "mcg.min_value, y0 = 0")]
    with_stats = res[("conjugate d=10", "y0 = 0, solver_stats=True")]
    one = res[("conjugate d=10", "y0 = 0, 1 chain")]
    ref = res[("conjugate d=10", "reference (closed form)")]
    print()
    note = (
        "repeats after the first, whose per-draw pass compiles"
        if args.repeats > 1
        else "one repeat: includes compiling the per-draw pass"
    )
    print(f"solver_stats=True on conjugate d=10, y0 = 0 (draw-stats time: {note}):")
    print()
    print(
        "| solver_stats | draw-stats time (s) | draw-stats / sampling time "
        "| ESS/s (draws) | ESS/s (draws + draw stats) |"
    )
    print("|---|---|---|---|---|")
    for label, s in (("False", base), ("True", with_stats)):
        print(
            f"| {label} | {s['draw_stats_later']:.3f} | {s['stats_overhead_later']:.1%} | "
            f"{s['ess_per_s_later']:.0f} | {s['ess_per_s_stats_later']:.0f} |"
        )

    print()
    chains_ratio = base["per_draw"] / one["per_draw"]
    ess_ratio = base["ess_per_s"] / ref["ess_per_s"]
    print("| target | measured | met |")
    print("|---|---|---|")
    print(
        f"| conjugate d=10, y0 = 0: ESS/s custom / reference >= {TARGET_ESS_RATIO} | "
        f"{ess_ratio:.2f} | {mark(ess_ratio >= TARGET_ESS_RATIO)} |"
    )
    for key in headline:
        ref_key = next(h for h in headline if h[0] == key[0])
        if key == ref_key:
            continue
        ratio = res[key]["ttfd"] / res[ref_key]["ttfd"]
        print(
            f"| {key[0]}, {key[1]}: time to first draw / reference <= {TARGET_TTFD_RATIO:g} | "
            f"{ratio:.2f} | {mark(ratio <= TARGET_TTFD_RATIO)} |"
        )
    print(
        f"| conjugate d=10, y0 = 0: time per draw, {chains} chains / 1 chain "
        f"<= {TARGET_CHAINS_RATIO:g} | {chains_ratio:.2f} "
        f"({base['per_draw'] * 1e3:.2f} / {one['per_draw'] * 1e3:.2f} ms) | "
        f"{mark(chains_ratio <= TARGET_CHAINS_RATIO)} |"
    )
    if not args.no_crossover:
        crossover(args.quick, args.seed)


if __name__ == "__main__":
    main()
