"""A latent Gaussian process with Poisson counts: NUTS on two hyperparameters.

Counts ``y_i ~ Poisson(exp(f(x_i)))`` with ``f ~ GP(0, alpha^2 exp(-(x - x')^2 / 2 rho^2))``.
Sampling ``f`` with NUTS means sampling ``n + 2`` correlated parameters; instead the field
is integrated out by the Laplace approximation, ``mcg.latent_gaussian_log_marginal`` (Newton
on the stable ``B = I + W^1/2 K W^1/2`` form, adjoint-differentiated), and NUTS samples
``rho`` and ``alpha`` only (``mcmc_customgrad/models/latent_gp.py``). 30 simulated counts
(10 in a ``--quick`` run). The field comes back
per posterior draw with ``mcg.models.latent_gp_poisson_latents`` (the Laplace Gaussian of
``f | rho, alpha, y``).

The reference samples the full joint ``(rho, alpha, eta)`` non-centred, ``f = L eta``,
what a user would write without the Laplace approximation, at ``target_accept = 0.99``
(it diverges at the default 0.8). The Laplace marginal is an
approximation for Poisson counts, so the two agree closely, not exactly: at these 30
counts the posterior means of ``rho`` and ``alpha`` move by under 1% of a posterior sd
(``docs/laplace.md``), far below what 4 x 2,500 draws resolve. The script also plots
the posterior rate ``exp(f)`` against the counts and the true rate
(``rate.png``).

    .venv/bin/python examples/latent_gp_poisson.py            # 4 x 2,500 draws each
    .venv/bin/python examples/latent_gp_poisson.py --quick    # a smoke run (what the tests do)
"""

from __future__ import annotations

import jax
import numpy as np
from _common import exit_code, figure, parse_args, sample_and_compare

import mcmc_customgrad as mcg


def plot_rate(idata, example, path, num_draws=200):
    """Posterior median and 90% band of ``exp(f)`` from ``num_draws`` recovered fields."""
    post = idata.posterior
    rho = np.asarray(post["rho"]).reshape(-1)
    alpha = np.asarray(post["alpha"]).reshape(-1)
    pick = np.random.default_rng(0).choice(rho.size, min(num_draws, rho.size), replace=False)
    f = mcg.models.latent_gp_poisson_latents(
        example, rho[pick], alpha[pick], jax.random.key(1), num_draws=1
    )
    rate = np.exp(np.asarray(f)[:, 0, :])
    lo, mid, hi = np.percentile(rate, [5, 50, 95], axis=0)
    x, y = np.asarray(example.data["x"]), np.asarray(example.data["y"])
    with figure(path) as ax:
        ax.fill_between(x, lo, hi, color="C0", alpha=0.3, label="90% band")
        ax.plot(x, mid, color="C0", label="posterior median rate")
        ax.plot(x, np.exp(np.asarray(example.data["f"])), "k--", label="true rate")
        ax.plot(x, y, "o", color="k", ms=3, label="counts")
        ax.set(xlabel="x", ylabel="rate", title="Poisson rate recovered by the Laplace Gaussian")
        ax.legend(fontsize=8)


def main(argv=None) -> int:
    """Sample, compare on rho and alpha, plot; exit 0 when the comparison passed."""
    args = parse_args("latent_gp_poisson", __doc__, argv)
    example = mcg.models.latent_gp_poisson(num_obs=10 if args.quick else 30)
    print("truth:", {k: float(v) for k, v in example.data["truth"].items()})
    idata, _, report = sample_and_compare(
        example.model,
        example.reference,
        args,
        var_names=["rho", "alpha"],
        # The full joint has a funnel between alpha and eta: at the default 0.8 it
        # diverges (docs/benchmarks.md), and a reference that diverges is no reference.
        reference_kwargs={"target_accept": 0.99},
    )
    plot_rate(idata, example, args.out / "rate.png")
    return exit_code(report)


if __name__ == "__main__":
    raise SystemExit(main())
