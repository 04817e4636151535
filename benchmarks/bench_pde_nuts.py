"""NUTS on the PDE inverse problem at m = 64: 4 chains x 1,000 draws, against its reference.

    python benchmarks/bench_pde_nuts.py            # about 3 minutes on 2 CPU cores
    python benchmarks/bench_pde_nuts.py --m 16 --quick   # smoke test, 200 + 200

``mcg.models.pde_inverse(m)`` (linear member, ``c = 0``): every gradient evaluation
solves the 4,096-unknown steady state by Newton with ``Sparse`` (KLU) and differentiates
it by the implicit function theorem. Its reference is the same posterior in closed form
(a Gaussian in the four source amplitudes, from basis solutions computed once), so the
two runs sample the same distribution and the ratio of their times is the price of the
inner solve. Both run here, in one process, one after the other, with the same settings
(``mcg.sample``: Blackjax window adaptation + NUTS, 4 vectorized chains, 1,000 warmup
steps, 1,000 draws, seed 0, random starts), and both times are reported: wall time of the
whole call, its parts (compilation, warmup, drawing), gradient evaluations per chain,
the time of one gradient evaluation of all chains at once (vectorized: the chains' solves
run together) and of one draw, ESS (ArviZ bulk, the minimum over parameters) per
second of drawing, max R-hat and divergences.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax

jax.config.update("jax_enable_x64", True)

import mcmc_customgrad as mcg  # noqa: E402
from mcmc_customgrad._arviz import ess, rhat  # noqa: E402


def run(model, args):
    """One ``mcg.sample`` run -> its figures."""
    start = time.perf_counter()
    idata = mcg.sample(
        model,
        num_chains=args.chains,
        num_warmup=args.warmup,
        num_samples=args.draws,
        seed=args.seed,
        progress_bar=False,
        warn=False,
        solver_stats=False,
    )
    wall = time.perf_counter() - start
    a = idata.posterior.attrs
    grads = a["num_grad_evals"]
    min_ess = min(ess(idata, "bulk").values())
    return {
        "wall": wall,
        "compile": a["warmup_compile_seconds"] + a["compile_seconds"],
        "warmup": a["warmup_seconds"],
        "drawing": a["sampling_seconds"],
        "grads": grads,
        "per_grad_ms": 1e3 * a["sampling_seconds"] / (grads / args.chains),
        "per_draw_ms": 1e3 * a["sampling_seconds"] / args.draws,
        "ess": min_ess,
        "ess_per_s": min_ess / a["sampling_seconds"],
        "rhat": max(rhat(idata).values()),
        "divergences": int(idata.sample_stats["diverging"].values.sum()),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--m", type=int, default=64, help="grid size (n = m^2 unknowns)")
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="200 warmup steps, 200 draws")
    args = parser.parse_args(argv)
    if args.quick:
        args.warmup = args.draws = 200

    example = mcg.models.pde_inverse(m=args.m)
    print(
        f"# NUTS on pde_inverse(m={args.m}) ({args.m**2:,} unknowns per solve), "
        f"{args.chains} chains x ({args.warmup} warmup + {args.draws} draws), seed {args.seed}"
    )
    print(
        f"{platform.platform()}, {os.cpu_count()} CPUs, {jax.devices()[0].platform}; "
        f"jax {jax.__version__}, mcmc_customgrad {mcg.__version__}"
    )
    rows = {"reference (closed form)": run(example.reference, args)}
    rows["model (Newton + Sparse KLU)"] = run(example.model, args)

    print()
    print(
        "| density | wall (s) | compile (s) | warmup (s) | drawing (s) | grad. evals "
        "per chain | ms per grad. eval (all chains at once) | ms per draw (all chains) "
        "| min bulk ESS | ESS/s | max R-hat | divergences |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(
            f"| {name} | {r['wall']:.1f} | {r['compile']:.1f} | {r['warmup']:.1f} "
            f"| {r['drawing']:.1f} | {r['grads'] / args.chains:,.0f} | {r['per_grad_ms']:.3f} "
            f"| {r['per_draw_ms']:.2f} | {r['ess']:.0f} | {r['ess_per_s']:.1f} "
            f"| {r['rhat']:.3f} | {r['divergences']} |"
        )
    ref, mod = rows.values()
    print()
    print(f"model / reference, wall time: {mod['wall'] / ref['wall']:.1f}")
    per_grad = mod["per_grad_ms"] / ref["per_grad_ms"]
    print(f"model / reference, time per gradient evaluation: {per_grad:.0f}")
    print(f"reference / model, ESS per second: {ref['ess_per_s'] / mod['ess_per_s']:.0f}")


if __name__ == "__main__":
    main()
