"""What every example shares: its command line, and a model sampled against its reference.

Each example script builds a density with an inner solve and the same density in closed
form (its reference), then calls :func:`sample_and_compare`, which does what a user
should do with any custom-gradient density (``docs/diagnostics.md``):

1. sample both with ``mcg.sample`` (Blackjax NUTS, 4 chains, Stan's window adaptation);
2. print the ArviZ summary of the custom run;
3. compare the two runs with ``mcg.compare_chains`` and print the verdict;
4. write the report (``report.md`` and its figures) with ``mcg.write_report``.

Full runs draw 4 x 2,500 after 1,000 warmup steps, what ``mcg.compare_chains`` asks for
by default. ``--quick`` (what the tests run) draws 4 x 200 after 200 warmup steps
(examples may shrink their problem too), skips the per-draw solver statistics and the
post-run warnings, and scales the comparison's run-length requirements down to the run:
``min_chains`` and ``min_draws`` to the run, ``min_ess`` to 100 and ``rhat_max`` to 1.05
(R-hat's own noise at a few hundred draws per chain exceeds 0.01), and the family level
of the statistical tests from 0.01 to 0.001 (``QUICK_ALPHA``): a smoke run is there to
catch gross errors, and at 0.01 each of the eight smoke runs would fail about 3% of the
time on a correct density (the latent GP's did, at p = 0.007, once XLA's fast-compile
settings changed its chains' rounding). A quick verdict is a smoke test, not evidence.
"""

from __future__ import annotations

import argparse
import contextlib
import pathlib
import sys

import jax

jax.config.update("jax_enable_x64", True)  # before anything touches JAX: float64 throughout

import mcmc_customgrad as mcg  # noqa: E402

__all__ = [
    "compare_and_report",
    "exit_code",
    "figure",
    "parse_args",
    "run_settings",
    "sample_and_compare",
]

HERE = pathlib.Path(__file__).resolve().parent


#: Family level of the comparison's tests in a ``--quick`` smoke run (module notes).
QUICK_ALPHA = 0.001


def parse_args(name: str, doc: str, argv=None, extra=None) -> argparse.Namespace:
    """The command line every example takes: ``--quick``, ``--out DIR``, ``--seed N``.

    ``extra(parser)`` may add the example's own options.
    """
    parser = argparse.ArgumentParser(
        prog=f"python examples/{name}.py",
        description=doc.strip().splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick", action="store_true", help="4 x 200 draws after 200 warmup steps (smoke test)"
    )
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=HERE / "out" / name,
        help="where the report and figures go (default: examples/out/%(prog)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="sampler seed (default 0)")
    if extra is not None:
        extra(parser)
    return parser.parse_args(argv)


def run_settings(args) -> dict:
    """``mcg.sample`` keyword arguments for a full or a ``--quick`` run."""
    if args.quick:
        return {
            "num_chains": 4,
            "num_warmup": 200,
            "num_samples": 200,
            "seed": args.seed,
            "solver_stats": False,
            "warn": False,
        }
    return {"num_chains": 4, "num_warmup": 1000, "num_samples": 2500, "seed": args.seed}


def sample_and_compare(
    model, reference, args, *, var_names=None, reference_kwargs=None, quick=None, **sample_kwargs
):
    """Sample ``model`` and ``reference``, print the summary and verdict, write the report.

    Parameters
    ----------
    model, reference : mcg.Model or log-density
        The density with the inner solve, and the same density in closed form.
    args : argparse.Namespace
        From :func:`parse_args`.
    var_names : list of str, optional
        Parameters to compare (default: every parameter both runs have).
    reference_kwargs : dict, optional
        Passed to ``mcg.sample`` for the reference run (``target_accept=0.99``, say).
    quick : dict, optional
        Overrides of the ``--quick`` settings (``num_samples=100``, say), for examples
        whose every gradient is expensive.
    **sample_kwargs
        Passed to ``mcg.sample`` for the custom run (``generated_quantities=...``, say);
        ``init`` is passed to both runs.

    Returns
    -------
    idata, reference_idata, report
        Both runs (``arviz.InferenceData``) and the ``mcg.ComparisonReport``.
    """
    settings = run_settings(args)
    if args.quick and quick:
        settings.update(quick)
    print(
        f"sampling: {settings['num_chains']} chains x {settings['num_samples']} draws after "
        f"{settings['num_warmup']} warmup steps, custom gradient and reference",
        flush=True,
    )
    idata = mcg.sample(model, **settings, progress_bar=False, **sample_kwargs)
    reference_settings = {**settings, "warn": False, **(reference_kwargs or {})}
    if "init" in sample_kwargs:
        reference_settings.setdefault("init", sample_kwargs["init"])
    reference_idata = mcg.sample(reference, **reference_settings, progress_bar=False)

    print("\nArviZ summary of the custom-gradient run:")
    print(mcg.diagnostics.summary(idata).to_string())

    report = compare_and_report(idata, reference_idata, args, settings, var_names=var_names)
    return idata, reference_idata, report


@contextlib.contextmanager
def figure(path, figsize=(8, 3.5)):
    """Axes of a new matplotlib figure, saved as a PNG at ``path`` on leaving the block.

    The object API (no ``pyplot``): no display needed, no global state changed.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="tight")
    yield fig.subplots()
    fig.savefig(path, dpi=100)
    print("figure:", path)


def exit_code(report) -> int:
    """0 when the comparison passed, 1 when it failed (for shells and CI)."""
    return 0 if report.passed else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit("examples/_common.py is imported by the examples; run one of them instead.")


def compare_and_report(idata, reference_idata, args, settings, **compare_kwargs):
    """``mcg.compare_chains``, with a ``--quick`` run's scaled requirements (module notes),
    then the report written to ``args.out`` and the verdict printed; returns the report."""
    run_length = {}
    if args.quick:
        run_length = {
            "min_chains": settings["num_chains"],
            "min_draws": settings["num_samples"],
            "min_ess": 100,
            "rhat_max": 1.05,
            "alpha": QUICK_ALPHA,
        }
    report = mcg.compare_chains(idata, reference_idata, **compare_kwargs, **run_length)
    path = mcg.write_report(report, args.out)
    if args.quick:
        note = "(--quick: a smoke run, run-length checks scaled down; not evidence)"
        path.write_text(f"> {note}\n\n{path.read_text()}")
        print(f"\n{note}")
    print(f"\n{report.verdict}" if not args.quick else report.verdict)
    for line in report.failures + report.notes:
        print(f"  - {line}")
    print(f"report and figures: {path}")
    return report
