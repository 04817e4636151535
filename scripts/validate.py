"""Acceptance of every built-in model: the validation protocol, written to docs/validation.md.

    python scripts/validate.py                      # all models, ~15 minutes on 2 CPU cores
    python scripts/validate.py --models conjugate   # one model, printed, docs untouched
    python scripts/validate.py --quick              # smoke test: 500 draws, nothing written,
                                                    # efficiency reported but not judged
    python scripts/validate.py --coordinator 127.0.0.1:4321 --num-processes 2 --process-id 0 &
    python scripts/validate.py --coordinator 127.0.0.1:4321 --num-processes 2 --process-id 1
                                                    # the models shared by two processes
    srun python scripts/validate.py --distributed   # SLURM: one process per task

Over several processes (``jax.distributed``, Gloo collectives on CPU), the models are
dealt in turn to the processes; each runs its models' three checks, and process 0 prints
every model's section, in registry order, and writes the documents (the figures are
written by the process that ran the model, so the checkout must be one file system).

For each model in ``mcg.models.REGISTRY`` (the density with its inner solve against its
closed-form reference, both on the same parameters):

1. ``mcg.check_gradients`` at order 2 (order 1 for the models in ``ORDER``) at 20 points
   drawn like the sampler's starts (uniform on (-2, 2) per unconstrained coordinate),
   seed 0;
2. ``mcg.coupled_chains`` with NUTS: one window adaptation on the reference, then 200
   transitions of each density with the same keys; the first 20 must coincide to 1e-6
   posterior sd;
3. ``mcg.sample`` of both densities, 4 chains x (1000 warmup + 2500 draws), seed 0, and
   ``mcg.compare_chains`` of the two runs (distribution verdict and efficiency).

Kepler's chains start at the true parameters (``data["truth"]``): from random starts
they stick in distinct local modes of the period, on either density alike. Models listed
in ``BUILD`` are built with those arguments rather than their defaults: the PDE inverse
problem (``pde``) on a 64 x 64 grid (4,096 unknowns, the sparse solve at a realistic
size), where the registry's default ``m = 16`` keeps the test suite's sweeps cheap. The
figures of each comparison (overlaid marginal densities) go to ``docs/validation/``. Exit
code 1 when any model fails any of the three.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import mcmc_customgrad as mcg  # noqa: E402
from mcmc_customgrad.sampling._processes import (  # noqa: E402
    gather_json,
    is_main,
    my_share,
    process_count,
)

ROOT = Path(__file__).resolve().parent.parent
COMMAND = "python scripts/validate.py"


#: Builder arguments per model (the registry's defaults otherwise).
BUILD = {"pde": {"m": 64}}

#: Derivative order of the gradient check per model (2, Hessians too, otherwise). The
#: sparse GMRF marginal (``mcg.gmrf_log_marginal``) is differentiable once: its adjoint
#: reads the selected inverse, which SuiteSparse does not differentiate.
ORDER = {"disease_map_gaussian": 1}


ORDER_NOTE = (
    "the sparse GMRF marginal is differentiable once: its adjoint reads the selected "
    "inverse, which SuiteSparse does not differentiate; its Hessian is not checked"
)


def build_arguments(name):
    """``name``'s builder arguments as text, for the report (empty for the defaults)."""
    return ", ".join(f"{k}={v!r}" for k, v in BUILD.get(name, {}).items())


def starts(name, example):
    """Where the chains start: the truth for Kepler (see the module notes), else random."""
    return example.data["truth"] if name == "kepler" else None


def validate(name, *, warmup, draws, figures_dir=None, judge_efficiency=True):
    """Run the three checks on one model; return (passed, markdown, one summary row)."""
    example = mcg.models.REGISTRY[name](**BUILD.get(name, {}))
    model, reference = example.model, example.reference
    init = starts(name, example)
    t0 = time.perf_counter()
    order = ORDER.get(name, 2)
    gradients = mcg.check_gradients(model, model.init, reference, order=order, num_points=20)
    coupled = mcg.coupled_chains(model, reference, init, seed=0)
    runs = {}
    for side, density in (("custom", model), ("reference", reference)):
        runs[side] = mcg.sample(
            density,
            init,
            num_chains=4,
            num_warmup=warmup,
            num_samples=draws,
            seed=0,
            warn=False,
            progress_bar=False,
        )
    comparison = mcg.compare_chains(
        runs["custom"], runs["reference"], min_draws=draws, gradients_passed=gradients.passed
    )
    seconds = time.perf_counter() - t0
    passed = gradients.passed and coupled.passed and comparison.passed
    # --quick is a smoke run (4 x 500 draws): efficiency is reported there, not judged.
    efficient = comparison.efficiency_passed is not False or not judge_efficiency

    lines = [f"## {name}", ""]
    doc = (mcg.models.REGISTRY[name].__doc__ or "").strip().splitlines()[0]
    lines += [doc, ""]
    if BUILD.get(name):
        builder = mcg.models.REGISTRY[name].__name__
        lines += [f"Built as `mcg.models.{builder}({build_arguments(name)})`.", ""]
    start = "the true parameters" if init is not None else "random starts"
    lines += [
        f"**{'PASSED' if passed and efficient else 'FAILED'}** in {seconds:.0f} s. "
        f"Chains from {start}.",
        "",
        f"### Gradients: {'PASSED' if gradients.passed else 'FAILED'}",
        "",
        *([f"First order only ({ORDER_NOTE})", ""] if order == 1 else []),
        gradients.table,
        "",
    ]
    lines += [f"- {f}" for f in gradients.failures]
    lines += ["", f"### Coupled chains: {'PASSED' if coupled.passed else 'FAILED'}", ""]
    lines += [coupled.table, ""]
    lines += [f"- {f}" for f in coupled.failures]
    lines += ["", f"### Comparison, 4 x {draws:,} draws each", "", comparison.verdict, ""]
    lines += [comparison.table, "", comparison.checks_table, "", comparison.efficiency_verdict]
    lines += ["", comparison.efficiency_table, ""]
    lines += [f"- {f}" for f in comparison.failures + comparison.efficiency_failures]
    lines += [f"- note: {n}" for n in comparison.notes]
    if figures_dir is not None:
        with tempfile.TemporaryDirectory() as tmp:
            paths = comparison.plot(tmp, max_panels=6)
            dens = next(p for p in paths if p.name == "densities.png")
            target = figures_dir / f"{name}-densities.png"
            shutil.copyfile(dens, target)
        lines += ["", f"![{name}: marginal densities](validation/{target.name})", ""]

    def worst(report, check):
        if check not in report.max_rel_error:
            return "n/a (order 1)" if check == "hessian" and order == 1 else "n/a"
        return f"{report.max_rel_error[check]:.1e}"

    row = (
        f"| {name} | {worst(gradients, 'grad')} | {worst(gradients, 'hessian')} | "
        f"{worst(gradients, 'grad_fd')} | {'yes' if coupled.passed else 'NO'} | "
        f"{comparison.verdict.split(':')[0]} | {comparison.efficiency_verdict.split('(')[0]} |"
    )
    mcg.clear_caches()  # one model's compiled programs are not needed by the next
    return passed and efficient, "\n".join(lines), row


SUMMARY_HEADER = (
    "| model | gradient rel. error vs reference | Hessian rel. error "
    "| gradient vs finite differences | coupled chains coincide | comparison | efficiency |"
)

HEADER = """# Validation: every model against its closed-form reference

Generated by `{command}` on {date} ({machine}; Python {python}, JAX {jax},
Blackjax {blackjax}, mcmc_customgrad {version}). The protocol is in
[the validation notes](#how-to-read-these-tables); each model's section has the three
reports in full.

{table}

## How to read these tables

1. **Gradients** (`mcg.check_gradients`, order 2, 20 random points): the density with
   its inner solve against the closed form (value, gradient, Hessian), against central
   finite differences with one Richardson step, forward against reverse mode, `jit` and
   `vmap` against eager, and a second call against the first. Relative errors are
   `|custom - expected| / max(|expected|, 1)`.
2. **Coupled chains** (`mcg.coupled_chains`): the same NUTS kernel, step size, mass
   matrix and keys on both densities. Where values and gradients agree to rounding the
   two chains make the same decisions, so positions coincide transition by transition.
3. **Comparison** (`mcg.compare_chains`): 4 chains x 2,500 draws of each density after
   1,000 warmup steps. Per parameter: means, second moments and 5%/95% quantile
   indicators as z-scores with both sides' Monte Carlo standard errors (Bonferroni),
   Kolmogorov-Smirnov tests on ESS-thinned draws and pooled R-hat; jointly an
   energy-distance permutation test and the mean squared Mahalanobis distance under the
   reference's covariance; equivalence margins. Efficiency (step size, acceptance,
   gradient evaluations per draw, ESS per gradient evaluation, each with an interval from
   the spread between chains) is judged apart: a wrong value shifts the posterior, a wrong
   but position-dependent gradient only costs efficiency (see `docs/diagnostics.md`).
"""


def main(argv=None) -> int:
    """Run the chosen models; write docs/validation.md when all of them ran at full size."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=None, choices=sorted(mcg.models.REGISTRY))
    parser.add_argument("--quick", action="store_true", help="300 + 500 steps, nothing written")
    parser.add_argument("--out", default=str(ROOT / "docs" / "validation.md"))
    parser.add_argument(
        "--distributed",
        action="store_true",
        help="join a multi-process run whose layout jax.distributed.initialize() detects "
        "(SLURM, Open MPI)",
    )
    parser.add_argument("--coordinator", help="HOST:PORT of process 0, for a run over processes")
    parser.add_argument("--num-processes", type=int, help="processes in the run")
    parser.add_argument("--process-id", type=int, help="this process's index, from 0")
    args = parser.parse_args(argv)
    explicit = (args.coordinator, args.num_processes, args.process_id)
    if any(v is not None for v in explicit) and any(v is None for v in explicit):
        parser.error("--coordinator, --num-processes and --process-id go together")
    if args.distributed or args.coordinator is not None:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    names = args.models or list(mcg.models.REGISTRY)
    write = not args.quick and args.models is None
    warmup, draws = (300, 500) if args.quick else (1000, 2500)
    figures_dir = None
    if write:
        figures_dir = Path(args.out).parent / "validation"
        figures_dir.mkdir(parents=True, exist_ok=True)
    mine = {}
    for i in my_share(len(names)):  # every model, with one process
        passed, text, row = validate(
            names[i],
            warmup=warmup,
            draws=draws,
            figures_dir=figures_dir,
            judge_efficiency=not args.quick,
        )
        mine[names[i]] = (bool(passed), text, row)
        if process_count() == 1:
            print(text, "\n", flush=True)
    ran = {name: result for part in gather_json(mine) for name, result in part.items()}
    sections = [ran[name][1] for name in names]
    rows = [ran[name][2] for name in names]
    ok = all(ran[name][0] for name in names)
    if not is_main():
        return 0 if ok else 1
    if process_count() > 1:
        for text in sections:
            print(text, "\n", flush=True)
    if write:
        import blackjax

        header = HEADER.format(
            command=COMMAND,
            date=datetime.date.today().isoformat(),
            machine=f"{platform.machine()}, {jax.devices()[0].platform.upper()}",
            python=platform.python_version(),
            jax=jax.__version__,
            blackjax=blackjax.__version__,
            version=mcg.__version__,
            table="\n".join([SUMMARY_HEADER, "|---" * 7 + "|", *rows]),
        )
        Path(args.out).write_text(header + "\n" + "\n\n".join(sections) + "\n")
        print(f"wrote {args.out}")
    print("ALL PASSED" if ok else "SOME MODEL FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
