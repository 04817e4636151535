"""Simulation-based calibration of a conjugate normal model whose likelihood has an inner solve.

``mu ~ N(0, I_d)``, ``y_i ~ N(mu, I_d)`` for ``i = 1..n``; the log-likelihood's quadratic
form is computed by ``mcg.min_value`` (``-sum r^2 / 2 = min_z sum(z^2 / 2 - z r)``), so
NUTS runs on envelope-theorem gradients. The script runs SBC on the right model and,
unless ``--no-miscalibrated``, on a deliberately wrong one (the data are simulated with
noise sd ``--noise-error`` times the one the density assumes), prints both reports and
writes their rank-histogram / ECDF plots.

Usage::

    python scripts/sbc_conjugate.py            # 200 simulations, L = 99 (continuous testing)
    python scripts/sbc_conjugate.py --quick    # 40 simulations, L = 49, short chains
    python scripts/sbc_conjugate.py --simulations 1000 --out sbc   # a release check

Exit status 0 when the right model passes and the wrong one fails, 1 otherwise.
"""

from __future__ import annotations

import argparse
import math
import pathlib
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
from jax.scipy.stats import norm  # noqa: E402

import mcmc_customgrad as mcg  # noqa: E402
from mcmc_customgrad.diagnostics.calibration import SBCProblem, sbc  # noqa: E402


def half_square(z, r):
    """``sum(z^2 / 2 - z r)``: its minimum over ``z`` is ``-sum(r^2) / 2``."""
    return jnp.sum(0.5 * z**2 - z * r)


def logdensity(params, data):
    """Log prior plus log-likelihood, the quadratic form from an inner minimisation."""
    r = data["y"] - params["mu"]
    quadratic = mcg.min_value(half_square, jnp.zeros_like(r), r)
    return jnp.sum(norm.logpdf(params["mu"])) + quadratic - 0.5 * r.size * math.log(2 * math.pi)


def log_likelihood(params, data):
    """Per-observation log-likelihoods (closed form)."""
    return jnp.sum(norm.logpdf(data["y"], params["mu"]), axis=-1)


def problem(d: int, n: int, noise: float = 1.0) -> SBCProblem:
    """The SBC problem; ``noise != 1`` simulates data the density does not describe."""

    def prior_sample(key):
        return {"mu": jax.random.normal(key, (d,))}

    def simulate(key, params):
        return {"y": params["mu"] + noise * jax.random.normal(key, (n, d))}

    return SBCProblem(
        params={"mu": mcg.real(shape=(d,))},
        prior_sample=prior_sample,
        simulate=simulate,
        logdensity=logdensity,
        log_likelihood=log_likelihood,
        name=f"conjugate normal (d={d}, n={n}, simulated noise sd {noise:g})",
    )


def main(argv=None) -> int:
    """Run the calibrated and the miscalibrated SBC; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40 simulations, L = 49")
    parser.add_argument("--simulations", type=int, help="number of simulations")
    parser.add_argument("--draws", type=int, help="L, posterior draws per rank")
    parser.add_argument("--samples", type=int, help="draws per chain")
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--dim", type=int, default=2, help="dimension of mu")
    parser.add_argument("--obs", type=int, default=4, help="observations per simulation")
    parser.add_argument("--noise-error", type=float, default=2.0)
    parser.add_argument("--no-miscalibrated", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="sbc_conjugate", help="plot file prefix")
    args = parser.parse_args(argv)

    num = args.simulations or (40 if args.quick else 200)
    draws = args.draws or (49 if args.quick else 99)
    samples = args.samples or (200 if args.quick else 500)
    settings = dict(
        num_draws=draws,
        num_chains=args.chains,
        num_warmup=150 if args.quick else 500,
        num_samples=samples,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    runs = [("calibrated", 1.0, True)]
    if not args.no_miscalibrated:
        runs.append(("miscalibrated", args.noise_error, False))
    status = 0
    for label, noise, should_pass in runs:
        p = problem(args.dim, args.obs, noise)
        start = time.perf_counter()
        report = sbc(p, num, **settings)
        seconds = time.perf_counter() - start
        path = report.plot(pathlib.Path(f"{args.out}_{label}.png"))
        expected = "PASS" if should_pass else "FAIL"
        print(f"## {label}: {p.name}; expected to {expected} ({seconds:.1f} s)\n")
        print(report)
        print(f"\nplot: {path}\n")
        if report.passed != should_pass:
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
