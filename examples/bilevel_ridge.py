"""Bilevel ridge regression: the posterior of a penalty through an inner fit.

The inner problem fits ``beta*(lam) = argmin_beta |X beta - y|^2 + lam |beta|^2`` on
training data with ``mcg.argmin`` (an iterative minimiser); the outer model scores the fit
on held-out data, ``y_valid ~ N(X_valid beta*(lam), sigma)``, and puts priors on ``lam``
and ``sigma``. ``dbeta*/dlam`` comes from the implicit function theorem on the inner
optimality condition, one Hessian solve per gradient
(``mcmc_customgrad/models/ridge.py``). The reference uses the closed form
``beta* = (X'X + lam I)^-1 X'y``.

The same pattern fits any hyperparameter learned through an inner fit (a regularised
regression, a kernel ridge, a smoothing spline).

    .venv/bin/python examples/bilevel_ridge.py            # 4 x 2,500 draws each
    .venv/bin/python examples/bilevel_ridge.py --quick    # a smoke run (what the tests do)
"""

from __future__ import annotations

from _common import exit_code, parse_args, sample_and_compare

import mcmc_customgrad as mcg


def main(argv=None) -> int:
    """Sample and compare; exit status 0 when the comparison passed."""
    args = parse_args("bilevel_ridge", __doc__, argv)
    model, reference, data = mcg.models.ridge(num_train=40, num_valid=30, num_features=5)
    print("truth:", {k: float(v) for k, v in data["truth"].items()})
    _, _, report = sample_and_compare(model, reference, args)
    return exit_code(report)


if __name__ == "__main__":
    raise SystemExit(main())
