"""Eight schools with the school effects integrated out exactly.

``y_j ~ N(theta_j, sigma_j)``, ``theta_j ~ N(mu, tau)``: the centred model has a funnel
that NUTS cannot explore, the usual fix is to non-centre it. Here the eight ``theta_j`` are
integrated out instead, with ``mcg.latent_gaussian_log_marginal`` (the Laplace
approximation, exact for a Gaussian likelihood), so NUTS samples ``mu`` and ``tau`` only
(``mcmc_customgrad/models/eight_schools.py``). The reference is the closed-form marginal
``y_j ~ N(mu, sqrt(tau^2 + sigma_j^2))``.

The school effects come back per posterior draw with ``mcg.laplace_latent_draws`` passed
as ``generated_quantities`` to ``mcg.sample``: they are in the posterior group as
``theta``, and the summary shows them next to ``mu`` and ``tau``.

    .venv/bin/python examples/eight_schools.py            # 4 x 2,500 draws each
    .venv/bin/python examples/eight_schools.py --quick    # a smoke run (what the tests do)
"""

from __future__ import annotations

import jax.numpy as jnp
from _common import exit_code, parse_args, sample_and_compare

import mcmc_customgrad as mcg


def main(argv=None) -> int:
    """Sample, recover the school effects, compare; exit 0 when the comparison passed."""
    args = parse_args("eight_schools", __doc__, argv)
    model, reference, data = mcg.models.eight_schools()
    y, sigma = data["y"], data["sigma"]
    likelihood = mcg.laplace.gaussian(y)  # log_likelihood(theta, sigma)
    theta0 = jnp.zeros_like(y)

    def school_effects(params, key):
        # theta | mu, tau, y from the Laplace Gaussian (exact here), one draw per sample.
        mu, tau = params["mu"], params["tau"]
        cov = tau**2 * jnp.eye(y.shape[0])
        draws = mcg.laplace_latent_draws(key, likelihood, cov, theta0, sigma, mean=mu + theta0)
        return {"theta": draws[0]}

    _, _, report = sample_and_compare(
        model, reference, args, var_names=["mu", "tau"], generated_quantities=school_effects
    )
    return exit_code(report)


if __name__ == "__main__":
    raise SystemExit(main())
