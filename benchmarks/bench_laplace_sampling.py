"""NUTS on the Laplace marginal against NUTS on the full joint: ESS per second on rho, alpha.

    python benchmarks/bench_laplace_sampling.py            # a few minutes on 2 CPU cores
    python benchmarks/bench_laplace_sampling.py --quick    # smoke test

``mcg.models.latent_gp_poisson(num_obs)`` (Poisson counts, latent GP log-rate with a
squared-exponential kernel): the model samples ``rho`` and ``alpha`` with the latent field
integrated out by ``mcg.latent_gaussian_log_marginal``; the reference samples the full
non-centred joint ``(rho, alpha, eta)``, what a user would write without the Laplace
approximation. Both with ``mcg.sample`` (Blackjax NUTS, 4 vectorized chains, 1000
warmup steps and 1000 draws; ``--quick``: 300 + 300), float64, in this process, with the
same seeds, repeats interleaved. Reported per variant (medians over repeats): the minimum
bulk ESS over ``rho`` and ``alpha``, the seconds of the draws after compilation, ESS/s,
time to first draw (initialisation, compilation and warmup; first repeat), gradient
evaluations per draw, divergences; then the ratio Laplace / full joint of ESS/s, and
``mcg.compare_chains`` of the two on ``rho`` and ``alpha`` (the Laplace approximation is
not exact for Poisson counts, so this is information, not a target).

LAPACK threads: ``OPENBLAS_NUM_THREADS`` defaults to 1 here, as in ``bench_laplace.py``
(JAX's CPU Cholesky goes through LAPACK; threaded OpenBLAS on small matrices under
``vmap`` costs more than it gains on a loaded 2-core machine).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax

jax.config.update("jax_enable_x64", True)
import blackjax  # noqa: E402

import mcmc_customgrad as mcg  # noqa: E402
from mcmc_customgrad import _arviz  # noqa: E402

PARAMS = ("rho", "alpha")


def run_once(model, seed, num_warmup, num_samples):
    """One ``mcg.sample`` run -> its figures."""
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
    ess = _arviz.ess(idata, "bulk")
    min_ess = min(v for k, v in ess.items() if k in PARAMS)
    stats = idata.sample_stats
    return idata, {
        "ess": min_ess,
        "seconds": a["sampling_seconds"],
        "ess_per_s": min_ess / a["sampling_seconds"],
        "ttfd": a["init_seconds"]
        + a["warmup_compile_seconds"]
        + a["warmup_seconds"]
        + a["compile_seconds"],
        "grads_per_draw": a["num_grad_evals"] / (4 * num_samples),
        "divergences": int(stats["diverging"].sum()),
    }


def main(argv=None) -> int:
    """Run both variants for every size and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="300 + 300 steps, 1 repeat")
    parser.add_argument("--sizes", type=int, nargs="+", default=[30, 60])
    parser.add_argument("--repeats", type=int, default=None, help="seeds (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    num_warmup = num_samples = 300 if args.quick else 1000
    repeats = args.repeats or (1 if args.quick else 3)
    print(
        f"# NUTS on the Laplace marginal vs the full joint, latent GP Poisson, 4 chains x "
        f"({num_warmup} + {num_samples}), median over {repeats} seed(s)"
    )
    print(
        f"{platform.platform()}, {platform.machine()}, {os.cpu_count()} CPUs "
        f"(OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}); jax {jax.__version__}, "
        f"blackjax {blackjax.__version__}, mcmc_customgrad {mcg.__version__}\n"
    )
    header = (
        "| latents | variant | min bulk ESS (rho, alpha) | ESS/s | time to first draw (s) "
        "| grad evals / draw | divergences |"
    )
    rows, ratios, verdicts = [], [], []
    for n in args.sizes:
        example = mcg.models.latent_gp_poisson(num_obs=n, seed=args.seed)
        variants = {"Laplace (rho, alpha)": example.model, "full joint": example.reference}
        results = {name: [] for name in variants}
        last = {}
        for r in range(repeats):  # interleaved: load on the machine hits both alike
            for name, model in variants.items():
                idata, figures = run_once(model, args.seed + r, num_warmup, num_samples)
                results[name].append(figures)
                last[name] = idata
        med = {
            name: {k: statistics.median(f[k] for f in runs) for k in runs[0]}
            for name, runs in results.items()
        }
        for name, m in med.items():
            rows.append(
                f"| {n} | {name} | {m['ess']:.0f} | {m['ess_per_s']:.1f} | "
                f"{results[name][0]['ttfd']:.1f} | {m['grads_per_draw']:.1f} | "
                f"{m['divergences']:.0f} |"
            )
        laplace, joint = med["Laplace (rho, alpha)"], med["full joint"]
        ratios.append((n, laplace["ess_per_s"] / joint["ess_per_s"]))
        report = mcg.compare_chains(
            last["Laplace (rho, alpha)"],
            last["full joint"],
            var_names=list(PARAMS),
            min_draws=num_samples,
            names=("Laplace", "full joint"),
        )
        verdicts.append((n, report.verdict, report.failures, report.notes))
        mcg.clear_caches()
    print(header)
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print("\n| latents | ESS/s Laplace / full joint |\n|---|---|")
    for n, ratio in ratios:
        print(f"| {n} | {ratio:.1f} |")
    print("\nComparison of the last repeat's draws on rho and alpha (information):\n")
    for n, verdict, failures, notes in verdicts:
        print(f"- {n} latents: {verdict}")
        for line in failures + notes:
            print(f"  - {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
