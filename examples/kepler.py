"""Kepler radial-velocity fit: a root solve per observation inside the likelihood.

A star's radial velocity under a planet on an eccentric orbit needs the eccentric anomaly
``E``, the root of Kepler's equation ``E - e sin E = M``, at every observation time. JAX
cannot differentiate through the ``while_loop`` Newton that finds it; ``mcg.root`` gives
``dE/dM`` and ``dE/de`` by the implicit function theorem instead
(``mcmc_customgrad/models/kepler.py``). The reference uses a fixed number of Newton steps
with the hand-derived derivative ``dE/dM = 1 / (1 - e cos E)``.

Six parameters (period, amplitude, eccentricity, argument of periapsis, phase, jitter),
30 simulated velocities over three periods. Besides the summary and the verdict, the
script plots the data with the velocity curves of 50 posterior draws
(``rv_curve.png``).

    .venv/bin/python examples/kepler.py            # 4 x 2,500 draws each
    .venv/bin/python examples/kepler.py --quick    # a smoke run (what the tests do)
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from _common import exit_code, figure, parse_args, sample_and_compare

import mcmc_customgrad as mcg
from mcmc_customgrad.models.kepler import eccentric_anomaly, radial_velocity


def plot_curves(idata, data, path, num_curves=50):
    """The observed velocities and the curves of ``num_curves`` posterior draws."""
    post = idata.posterior
    names = ("period", "amplitude", "ecc", "omega", "phase")
    flat = {k: np.asarray(post[k]).reshape(-1) for k in names}
    pick = np.random.default_rng(0).choice(flat["period"].size, num_curves, replace=False)
    t = jnp.linspace(0.0, float(data["t"].max()), 400)
    with figure(path) as ax:
        for i in pick:
            params = {k: jnp.asarray(flat[k][i]) for k in names}
            ax.plot(t, radial_velocity(t, params, eccentric_anomaly), color="C0", alpha=0.1)
        ax.errorbar(data["t"], data["v"], yerr=data["sigma"], fmt="o", color="k", ms=3)
        ax.set(xlabel="time", ylabel="radial velocity", title="data and 50 posterior curves")


def main(argv=None) -> int:
    """Sample, compare, plot; exit status 0 when the comparison passed."""
    args = parse_args("kepler", __doc__, argv)
    model, reference, data = mcg.models.kepler(num_obs=30)
    print("truth:", {k: float(v) for k, v in data["truth"].items()})
    # Random starts need the full run's 1,000 warmup steps to find the period's mode
    # (after 200, chains sit in different modes: R-hat 1.5); the quick run starts at the
    # simulated truth, as a smoke test may.
    # The quick run also caps trajectories at 2^5 steps: in its short first adaptation
    # window (unit mass matrix) NUTS otherwise builds 1,023-step trajectories, and every
    # step solves Kepler's equation 30 times. It draws 400 per chain, not 200: the
    # jitter's tail ESS is 0.08 to 0.25 per draw at that depth, so 4 x 200 draws missed
    # the smoke run's ESS floor of 100 on one seed (63) once the inner Newton's rounding
    # changed.
    init = data["truth"] if args.quick else None
    idata, _, report = sample_and_compare(
        model, reference, args, init=init, quick={"max_treedepth": 5, "num_samples": 400}
    )
    plot_curves(idata, data, args.out / "rv_curve.png")
    return exit_code(report)


if __name__ == "__main__":
    raise SystemExit(main())
