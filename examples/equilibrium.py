"""An equilibrium model: the likelihood's mean is the fixed point of a map.

Observations ``y_i ~ N(x*(a), sigma)`` of an equilibrium level ``x*(a) = T(x*(a); a)``,
here the fixed point of Newton's square-root map ``T(x; a) = (x + a / x) / 2`` (seed
001), found by ``mcg.fixed_point`` from ``x0 = max(a, 1)``. The derivative ``dx*/da``
comes from the implicit function theorem, ``(I - dT/dx)^-1 dT/da``, not from unrolling the
iteration (``mcmc_customgrad/models/equilibrium.py``). The reference uses the closed form
``x*(a) = sqrt(a)``.

Replace the map with your own (a market clearing price, a steady state of an ODE, a
self-consistent field): the rest of the script does not change.

    .venv/bin/python examples/equilibrium.py            # 4 x 2,500 draws each
    .venv/bin/python examples/equilibrium.py --quick    # a smoke run (what the tests do)
"""

from __future__ import annotations

from _common import exit_code, parse_args, sample_and_compare

import mcmc_customgrad as mcg


def main(argv=None) -> int:
    """Sample and compare; exit status 0 when the comparison passed."""
    args = parse_args("equilibrium", __doc__, argv)
    model, reference, data = mcg.models.equilibrium(num_obs=20)
    print("truth:", {k: float(v) for k, v in data["truth"].items()})
    _, _, report = sample_and_compare(model, reference, args)
    return exit_code(report)


if __name__ == "__main__":
    raise SystemExit(main())
