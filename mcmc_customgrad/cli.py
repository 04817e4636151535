"""The ``mcmc-customgrad`` command.

Commands: ``sample MODEL`` (draws to netCDF), ``summary run.nc`` (ArviZ summary plus the
post-run checks), ``compare custom.nc reference.nc`` (the chain comparison of
``docs/validation.md``, optionally written as a report with figures), ``check-grad MODEL``
(the gradient report), ``models`` (the built-in models), ``demo`` (the README's main job).

Exit codes, for scripts: 0 success; 1 the run or check failed (sampling could not start,
a checkpoint belongs to another run, ``summary --strict`` found problems, a comparison or
gradient check failed, the demo's numbers disagree); 2 bad usage (unknown command, model
or option, unreadable file).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import warnings
from pathlib import Path

__all__ = ["main", "demo", "check_seeds", "load_model", "load_example"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad command-line input: exit code 2."""


def _rel(a, b) -> float:
    import numpy as np

    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


def check_seeds(out=None) -> bool:
    """Print the seed numbers computed by the core against their closed forms.

    Returns True when every derivative agrees with its closed form to ``1e-6`` relative.

    Examples
    --------
    >>> import io
    >>> from mcmc_customgrad.cli import check_seeds
    >>> check_seeds(io.StringIO())
    True
    """
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    import mcmc_customgrad as mcg

    out = out or sys.stdout
    rows = []

    # Seed 000: f(x) = -min_y |y|^p/p - x y is the convex conjugate |x|^q/q, 1/p + 1/q = 1.
    p, x = 3.0, jnp.array([0.31415])
    q = p / (p - 1)

    def inner(y, x):
        return jnp.sum(jnp.abs(y) ** p / p - x * y)

    def conjugate(x):
        return -mcg.min_value(inner, jnp.zeros_like(x), x)

    def closed(x):
        return jnp.sum(jnp.abs(x) ** q / q)

    rows.append(
        ("conjugate |y|^3/3: df/dx at 0.31415", jax.grad(conjugate)(x)[0], jax.grad(closed)(x)[0])
    )
    rows.append(
        (
            "conjugate |y|^3/3: d2f/dx2",
            jax.hessian(conjugate)(x)[0, 0],
            jax.hessian(closed)(x)[0, 0],
        )
    )

    # Seed 001: Newton's square root as a fixed point.
    def sqrt(a):
        return mcg.fixed_point(lambda s, a: 0.5 * (s + a / s), a, a)

    rows.append(
        ("Newton sqrt fixed point: d/da at 2", jax.grad(sqrt)(2.0), jax.grad(jnp.sqrt)(2.0))
    )
    rows.append(
        (
            "Newton sqrt fixed point: d2/da2",
            jax.grad(jax.grad(sqrt))(2.0),
            jax.grad(jax.grad(jnp.sqrt))(2.0),
        )
    )

    # Kepler's equation E - e sin E = M.
    def eccentric_anomaly(m, e):
        return mcg.root(lambda E, m, e: E - e * jnp.sin(E) - m, m, m, e)

    m, e = 1.0, 0.5
    E = eccentric_anomaly(m, e)
    rows.append(("Kepler dE/dM", jax.grad(eccentric_anomaly, 0)(m, e), 1 / (1 - e * jnp.cos(E))))
    rows.append(
        ("Kepler dE/de", jax.grad(eccentric_anomaly, 1)(m, e), jnp.sin(E) / (1 - e * jnp.cos(E)))
    )

    ok = True
    print(f"mcmc_customgrad {mcg.__version__}: implicit derivatives against closed forms", file=out)
    print(f"{'quantity':40s} {'implicit':>20s} {'closed form':>20s} {'rel. error':>10s}", file=out)
    for name, got, want in rows:
        err = _rel(got, want)
        ok &= err <= 1e-6
        print(f"{name:40s} {float(got):20.12f} {float(want):20.12f} {err:10.1e}", file=out)
    print("all derivatives agree to 1e-6" if ok else "MISMATCH: see the table above", file=out)
    return ok


def load_example(spec: str):
    """A built-in model name, or ``path/to/file.py:function``, -> ``(model, reference)``.

    ``function()`` (called with no arguments) may return an :class:`~mcmc_customgrad.Model`
    (``reference`` is then None) or an :class:`~mcmc_customgrad.models.Example`.

    Examples
    --------
    >>> from mcmc_customgrad.cli import load_example
    >>> model, reference = load_example("kepler")
    >>> model.names == reference.names
    True
    """
    from mcmc_customgrad import Model, models

    if ":" in spec and spec.rsplit(":", 1)[0].endswith(".py"):
        path, name = spec.rsplit(":", 1)
        file = Path(path)
        if not file.is_file():
            raise UsageError(f"model file {path} does not exist.")
        module_spec = importlib.util.spec_from_file_location(f"_mcg_user_{file.stem}", file)
        module = importlib.util.module_from_spec(module_spec)
        try:
            module_spec.loader.exec_module(module)
        except Exception as err:
            raise UsageError(f"importing {path} failed: {type(err).__name__}: {err}") from err
        builder = getattr(module, name, None)
        if not callable(builder):
            raise UsageError(f"{path} has no function {name!r}.")
    elif spec in models.REGISTRY:
        builder = models.REGISTRY[spec]
    else:
        raise UsageError(
            f"unknown model {spec!r}: use one of {sorted(models.REGISTRY)} (see "
            "`mcmc-customgrad models`) or path/to/file.py:function."
        )
    built = builder()
    if isinstance(built, models.Example):
        return built.model, built.reference
    if isinstance(built, Model):
        return built, None
    raise UsageError(
        f"{spec} returned {type(built).__name__}; it must return an mcg.Model or an "
        "mcg.models.Example."
    )


def load_model(spec: str, reference: bool = False):
    """A built-in model name, or ``path/to/file.py:function``, -> what to sample.

    ``function()`` (called with no arguments) may return an :class:`~mcmc_customgrad.Model`
    or an :class:`~mcmc_customgrad.models.Example` (its ``model``, or its ``reference``
    when ``reference`` is True).

    Examples
    --------
    >>> from mcmc_customgrad.cli import load_model
    >>> load_model("conjugate").names
    ('x',)
    """
    model, closed = load_example(spec)
    if not reference:
        return model
    if closed is None:
        raise UsageError(f"{spec} returns a Model, which has no reference; drop --reference.")
    return closed


def _summary_table(idata):
    from mcmc_customgrad.diagnostics import summary

    return summary(idata)[["mean", "sd", "hdi_3%", "hdi_97%", "ess_bulk", "ess_tail", "r_hat"]]


def _print_diagnostics(idata, out) -> int:
    import mcmc_customgrad as mcg
    from mcmc_customgrad.diagnostics import _arviz

    problems = mcg.diagnose(idata)
    stats = idata.sample_stats if "sample_stats" in _arviz.groups(idata) else {}
    fails = int(stats["solver_failure"].sum()) if "solver_failure" in stats else 0
    print(
        f"{idata.posterior.sizes['chain']} chains x {idata.posterior.sizes['draw']} draws; "
        f"inner-solver failures: {fails}",
        file=out,
    )
    for p in problems:
        print(f"WARNING [{p.name}] {p.message}", file=out)
    if not problems:
        print("all post-run checks passed", file=out)
    return len(problems)


def _side_by_side(custom, reference, out) -> None:
    """Both summaries in one table, with the z-score of each difference of means."""
    import numpy as np
    import pandas as pd

    from mcmc_customgrad.diagnostics import summary

    a, b = summary(custom), summary(reference)
    cols = ["mean", "sd", "ess_bulk", "r_hat"]
    table = pd.concat({"custom": a[cols], "reference": b[cols]}, axis=1)
    z = (a["mean"] - b["mean"]) / np.sqrt(a["mcse_mean"] ** 2 + b["mcse_mean"] ** 2)
    table[("", "z")] = z
    with pd.option_context("display.width", 120, "display.float_format", "{:.4f}".format):
        print(table.to_string(), file=out)


def demo(out=None, quick: bool = False) -> bool:
    """The README's main job: check the seed derivatives, then sample and compare.

    Prints the seed derivatives against their closed forms, then samples the seed-000
    conjugate density (inner Newton solve, cold start ``y0 = 0``) and its closed-form
    reference with NUTS, 4 chains x 2,500 draws each, prints both summaries side by side
    with the z-score of the difference of means (Monte Carlo standard errors of both
    runs), and ends with the verdict of :func:`~mcmc_customgrad.compare_chains`.

    Parameters
    ----------
    out : file, optional
        Where to print (default stdout).
    quick : bool
        300 warmup steps per chain instead of 1000 (the draws stay 2,500 per chain, the
        validation protocol's minimum).

    Returns
    -------
    bool
        True when the derivatives agree to 1e-6 and the comparison passes.

    Examples
    --------
    The README's first command runs ``mcmc-customgrad demo``; from Python (about a
    minute, so not run as a doctest here: ``tests/test_cli.py`` runs it in a subprocess)::

        import io
        from mcmc_customgrad.cli import demo
        assert demo(io.StringIO(), quick=True)
    """
    import jax

    jax.config.update("jax_enable_x64", True)
    import mcmc_customgrad as mcg

    out = out or sys.stdout
    ok = check_seeds(out)
    warmup, draws = (300 if quick else 1000), 2500
    example = mcg.models.conjugate(d=2)
    runs = {}
    for name in ("custom", "reference"):
        model = example.model if name == "custom" else example.reference
        print(
            f"\nsampling the {name} density: 4 chains x ({warmup} warmup + {draws} draws) ...",
            file=out,
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", mcg.SamplingWarning)
            idata = mcg.sample(
                model, num_warmup=warmup, num_samples=draws, seed=0, progress_bar=False
            )
        runs[name] = idata
        attrs = idata.posterior.attrs
        print(
            f"  compile {attrs['compile_seconds'] + attrs['warmup_compile_seconds']:.1f} s, "
            f"warmup {attrs['warmup_seconds']:.2f} s, draws {attrs['sampling_seconds']:.2f} s, "
            f"{attrs['num_grad_evals']} gradient evaluations",
            file=out,
        )
        for w in caught:
            print(f"  warning: {w.message}", file=out)
    print("\nposterior of x (conjugate density, d = 2): custom vs closed-form reference", file=out)
    _side_by_side(runs["custom"], runs["reference"], out)
    report = mcg.compare_chains(runs["custom"], runs["reference"])
    print("\ncomparison (docs/validation.md):", file=out)
    print(report.verdict, file=out)
    print(report.efficiency_verdict, file=out)
    for failure in report.failures + report.efficiency_failures:
        print(f"- {failure}", file=out)
    return ok and report.passed


def _cmd_sample(args, out) -> int:
    import mcmc_customgrad as mcg
    from mcmc_customgrad.diagnostics import save

    model = load_model(args.model, reference=args.reference)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mcg.SamplingWarning)  # printed below instead
        idata = mcg.sample(
            model,
            num_chains=args.chains,
            num_warmup=args.warmup,
            num_samples=args.draws,
            seed=args.seed,
            kernel=args.kernel,
            target_accept=args.target_accept,
            max_treedepth=args.max_treedepth,
            chain_method=args.chain_method,
            checkpoint=args.checkpoint,
            progress_bar=args.progress,
        )
    if args.out:
        save(idata, args.out)
    print(_summary_table(idata).to_string(), file=out)
    _print_diagnostics(idata, out)
    if args.out:
        print(f"wrote {args.out}", file=out)
    return EXIT_OK


def _cmd_summary(args, out) -> int:
    idata = _load_run(args.file)
    print(_summary_table(idata).to_string(), file=out)
    problems = _print_diagnostics(idata, out)
    return EXIT_FAILED if (problems and args.strict) else EXIT_OK


def _load_run(path):
    from mcmc_customgrad.diagnostics import load

    if not Path(path).is_file():
        raise UsageError(f"{path} does not exist.")
    try:
        idata = load(path)
    except Exception as err:
        raise UsageError(f"{path} is not a netCDF run file: {err}") from err
    from mcmc_customgrad.diagnostics import _arviz

    if not _arviz.is_inference_data(idata):
        raise UsageError(f"{path} has no posterior group.")
    return idata


def _cmd_compare(args, out) -> int:
    import mcmc_customgrad as mcg

    custom, reference = _load_run(args.custom), _load_run(args.reference)
    try:
        report = mcg.compare_chains(
            custom,
            reference,
            var_names=args.var_names,
            alpha=args.alpha,
            min_chains=args.min_chains,
            min_draws=args.min_draws,
            seed=args.seed,
        )
    except (KeyError, TypeError, ValueError) as err:
        raise UsageError(f"cannot compare {args.custom} with {args.reference}: {err}") from err
    print(report, file=out)
    if args.out:
        path = mcg.write_report(report, args.out, figures=not args.no_figures)
        print(f"wrote {path}", file=out)
    failed = not report.passed or (args.require_efficiency and report.efficiency_passed is False)
    return EXIT_FAILED if failed else EXIT_OK


def _cmd_check_grad(args, out) -> int:
    import mcmc_customgrad as mcg

    model, reference = load_example(args.model)
    report = mcg.check_gradients(
        model,
        model.init,
        None if args.no_reference else reference,
        order=args.order,
        num_points=args.points,
        seed=args.seed,
    )
    against = "finite differences" if reference is None or args.no_reference else "its reference"
    print(
        f"{args.model}: {args.points} points from the sampler's initialisation "
        f"(unconstrained, uniform in [-2, 2]), seed {args.seed}, against {against} and itself",
        file=out,
    )
    print(report.table, file=out)
    for failure in report.failures:
        print(f"- {failure}", file=out)
    print("PASSED" if report.passed else "FAILED", file=out)
    if args.plot:
        print(f"wrote {report.plot(args.plot)}", file=out)
    return EXIT_OK if report.passed else EXIT_FAILED


def _cmd_models(args, out) -> int:
    from mcmc_customgrad import models

    for name, builder in models.REGISTRY.items():
        first = (builder.__doc__ or "").strip().splitlines()[0]
        print(f"{name:16s} {first}", file=out)
    return EXIT_OK


def _parser():
    from mcmc_customgrad import __version__

    parser = argparse.ArgumentParser(
        prog="mcmc-customgrad",
        description="Implicit derivatives of inner solves for HMC log-densities.",
        epilog="Exit codes: 0 success, 1 the run or check failed, 2 bad usage.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    d = sub.add_parser("demo", help="check the seed derivatives, sample the conjugate model")
    d.add_argument("--quick", action="store_true", help="300 warmup steps instead of 1000")
    s = sub.add_parser("sample", help="sample a model and write the draws to netCDF")
    s.add_argument("model", help="built-in model name, or path/to/file.py:function")
    s.add_argument("--reference", action="store_true", help="sample the closed-form reference")
    s.add_argument("--chains", type=int, default=4)
    s.add_argument("--warmup", type=int, default=1000)
    s.add_argument("--draws", type=int, default=1000)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--kernel", default="nuts", choices=["nuts", "hmc", "mala"])
    s.add_argument("--target-accept", type=float, default=0.8)
    s.add_argument("--max-treedepth", type=int, default=10)
    s.add_argument(
        "--chain-method", default="vectorized", choices=["vectorized", "parallel", "sequential"]
    )
    s.add_argument("--checkpoint", default=None, help="directory for resumable checkpoints")
    s.add_argument("--out", default=None, help="netCDF file for the run (e.g. run.nc)")
    s.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None, help="progress bar"
    )
    m = sub.add_parser("summary", help="ArviZ summary and post-run checks of a run file")
    m.add_argument("file", help="netCDF file written by `sample --out`")
    m.add_argument("--strict", action="store_true", help="exit 1 when any check fails")
    c = sub.add_parser("compare", help="compare a run with its reference run (validation)")
    c.add_argument("custom", help="netCDF run of the custom-gradient density")
    c.add_argument("reference", help="netCDF run of the closed-form reference")
    c.add_argument("--out", default=None, help="directory for report.md and the figures")
    c.add_argument("--no-figures", action="store_true", help="write report.md only")
    c.add_argument("--var-names", nargs="+", default=None, help="variables to compare")
    c.add_argument("--alpha", type=float, default=0.01, help="level of each test family")
    c.add_argument("--min-chains", type=int, default=4, help="required chains per run")
    c.add_argument("--min-draws", type=int, default=2500, help="required draws per chain")
    c.add_argument("--seed", type=int, default=0, help="seed of the permutation test")
    c.add_argument(
        "--require-efficiency",
        action="store_true",
        help="also exit 1 when the efficiency checks fail (a wrong gradient shows there)",
    )
    g = sub.add_parser("check-grad", help="check a model's gradients (and its reference's)")
    g.add_argument("model", help="built-in model name, or path/to/file.py:function")
    g.add_argument("--points", type=int, default=20, help="number of random points")
    g.add_argument("--order", type=int, default=2, choices=[1, 2], help="2 checks Hessians")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--no-reference", action="store_true", help="skip the reference checks")
    g.add_argument("--plot", default=None, help="PNG file for the gradient-error plot")
    sub.add_parser("models", help="list the built-in models")
    return parser


def main(argv=None, out=None) -> int:
    """Entry point of the ``mcmc-customgrad`` console script; returns the exit code."""
    import jax

    jax.config.update("jax_enable_x64", True)
    from mcmc_customgrad import CheckpointError, InitializationError

    out = out or sys.stdout
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(out)
        return EXIT_USAGE
    try:
        if args.command == "demo":
            return EXIT_OK if demo(out, quick=args.quick) else EXIT_FAILED
        command = {
            "sample": _cmd_sample,
            "summary": _cmd_summary,
            "compare": _cmd_compare,
            "check-grad": _cmd_check_grad,
            "models": _cmd_models,
        }
        return command[args.command](args, out)
    except UsageError as err:
        print(f"mcmc-customgrad: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as err:  # bad settings caught by mcg.sample before compiling
        kind = (InitializationError, CheckpointError)
        print(f"mcmc-customgrad: error: {err}", file=sys.stderr)
        return EXIT_FAILED if isinstance(err, kind) else EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
