"""False-alarm rate and power of the demo's two verdict lines, measured over many seeds.

``mcmc-customgrad demo`` ends with two lines: the verdict of :func:`mcg.compare_chains`
(is the distribution right?) and the efficiency line (does the sampler work as hard as on
the reference?). This script runs the demo's comparison (seed 000's conjugate, d = 2,
NUTS, 4 chains x (1,000 warmup + 2,500 draws), both sides at the same seed, as the demo
does) for ``--seeds`` seeds, and the same comparison for three other custom densities:

- the correct density against a reference run at an independent seed;
- seed 001's clipped gradient (the value is right, the gradient is clipped to [-0.1, 0.1]
  beyond |x| = 0.01): the draws are right, so the verdict must pass, and the efficiency
  line must fail (power);
- an inner solve stopped after one L-BFGS step, its last iterate kept: the value is 2%
  to 13% off, so the verdict must fail (power).

For each it counts the runs whose verdict line and efficiency line said FAILED, with a
95% Clopper-Pearson interval, and the failures of each efficiency check; and, for
comparison, how often the rule this replaced (a point ratio of ESS per gradient
evaluation below 0.8) fired. ``--write`` puts the table into ``docs/diagnostics.md``
between the calibration markers.

Usage::

    python scripts/verdict_calibration.py --seeds 100 --write   # ~25 min on 2 cores
"""

from __future__ import annotations

import argparse
import collections
import pathlib
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
from jax.scipy.stats import norm  # noqa: E402
from scipy import stats  # noqa: E402

import mcmc_customgrad as mcg  # noqa: E402
from mcmc_customgrad.models.conjugate import conjugate_inner  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "diagnostics.md"
BEGIN = "<!-- calibration: scripts/verdict_calibration.py -->"
END = "<!-- /calibration -->"
RUN = dict(num_chains=4, num_warmup=1000, num_samples=2500, progress_bar=False, warn=False)
Q = 1.5  # the conjugate exponent of p = 3
INDEPENDENT = 100_000  # seed offset of the independent reference runs


def f_closed(x):
    """The conjugate in closed form, ``sum |x|^q / q``."""
    return jnp.sum(jnp.abs(x) ** Q / Q)


@jax.custom_jvp
def f_clipped(x):
    """The right value with a clipped gradient."""
    return f_closed(x)


@f_clipped.defjvp
def _clipped_jvp(primals, tangents):
    # Seed 001's clip_gradient applied to f' = sign(x) |x|^(1/2): wrong beyond |x| = 0.01.
    (x,), (t,) = primals, tangents
    return f_closed(x), jnp.sum(jnp.clip(jnp.sign(x) * jnp.sqrt(jnp.abs(x)), -0.1, 0.1) * t)


def f_stopped_early(x):
    """A wrong value: the inner solve stopped after one step."""
    # One L-BFGS step from y0 = 0, the last iterate kept: f is 2% to 13% low.
    solver = mcg.solvers.LBFGS(max_steps=1)
    return -mcg.min_value(conjugate_inner, jnp.zeros(2), x, 3.0, solver=solver, on_failure="last")


def density(f):
    """Seed 000's density ``sum N(x) + N(f(x))`` with the given ``f``."""
    spec = {"x": mcg.real(shape=(2,))}
    return mcg.Model(lambda p: jnp.sum(norm.logpdf(p["x"])) + norm.logpdf(f(p["x"])), spec)


#: (row label, custom density, independent reference?, what the verdicts should say)
CASES = (
    ("correct, same seed as the reference (the demo)", "correct", False, "pass, pass"),
    ("correct, independent seeds", "correct", True, "pass, pass"),
    ("clipped gradient (seed 001)", "clipped", False, "pass, FAIL"),
    ("inner solve stopped early (value 2-13% off)", "stopped", False, "FAIL, -"),
)
CHECKS = ("step_size", "acceptance", "grads_per_draw", "ess_per_grad")


def clopper_pearson(k, n, level=0.95):
    """Two-sided exact interval of a binomial proportion."""
    a = 1.0 - level
    low = 0.0 if k == 0 else stats.beta.ppf(a / 2, k, n - k + 1)
    high = 1.0 if k == n else stats.beta.ppf(1 - a / 2, k + 1, n - k)
    return low, high


def measure(num_seeds, log=print):
    """Sample and compare every case for ``num_seeds`` seeds; counts per case."""
    example = mcg.models.conjugate(d=2)
    models = {
        "correct": example.model,
        "clipped": density(f_clipped),
        "stopped": density(f_stopped_early),
    }
    counts = {label: collections.Counter() for label, *_ in CASES}
    start = time.perf_counter()
    for seed in range(num_seeds):
        references = {
            False: mcg.sample(example.reference, seed=seed, **RUN),
            True: mcg.sample(example.reference, seed=INDEPENDENT + seed, **RUN),
        }
        runs = {name: mcg.sample(model, seed=seed, **RUN) for name, model in models.items()}
        for label, name, independent, _ in CASES:
            report = mcg.compare_chains(runs[name], references[independent])
            c = counts[label]
            c["runs"] += 1
            c["verdict"] += not report.passed
            c["efficiency"] += report.efficiency_passed is False
            for e in report.efficiency:
                if e["key"] in CHECKS and e["passed"] is False:
                    c[e["key"]] += 1
                if e["key"] == "ess_per_grad" and e["ratio"] is not None and e["ratio"] < 0.8:
                    c["old_rule"] += 1
        if (seed + 1) % 10 == 0 or seed + 1 == num_seeds:
            log(f"{seed + 1}/{num_seeds} seeds, {time.perf_counter() - start:.0f} s")
    return counts


def _rate(k, n):
    low, high = clopper_pearson(k, n)
    return f"{k}/{n} ({100 * low:.1f}-{100 * high:.1f}%)"


def table(counts) -> str:
    """The counts as a Markdown table."""
    lines = [
        "| custom density against the reference | expected (verdict, efficiency) | verdict "
        "FAILED | efficiency FAILED | step size / acceptance / grads per draw / ESS per grad "
        "failed | old rule (ESS/grad ratio < 0.8) |",
        "|---|---|---|---|---|---|",
    ]
    for label, _, _, expected in CASES:
        c = counts[label]
        n = c["runs"]
        per_check = " / ".join(str(c[k]) for k in CHECKS)
        lines.append(
            f"| {label} | {expected} | {_rate(c['verdict'], n)} | {_rate(c['efficiency'], n)} "
            f"| {per_check} | {_rate(c['old_rule'], n)} |"
        )
    return "\n".join(lines)


def write(text: str, path=DOC) -> None:
    """Replace the calibration block of ``path`` with ``text``."""
    doc = path.read_text()
    if BEGIN not in doc or END not in doc:
        raise SystemExit(f"{path} has no {BEGIN} ... {END} block to fill")
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")


def main(argv=None) -> int:
    """Command line: measure, print, optionally write."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--seeds", type=int, default=100, help="seeds per density (>= 1)")
    parser.add_argument("--write", action="store_true", help=f"write the table into {DOC}")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be >= 1")
    counts = measure(args.seeds, log=lambda m: print(m, file=sys.stderr, flush=True))
    text = (
        f"Measured by `python scripts/verdict_calibration.py --seeds {args.seeds}` "
        f"(mcmc_customgrad {mcg.__version__}, JAX {jax.__version__}); counts of runs, with "
        "95% Clopper-Pearson intervals.\n\n" + table(counts)
    )
    print(text)
    if args.write:
        write(text)
        print(f"wrote {DOC.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
