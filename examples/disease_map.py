"""A BYM2 disease map: NUTS on three hyperparameters, 128 latents integrated out (sparse).

Counts ``y_i ~ Poisson(E_i exp(mu + b_i))`` on the 64 areas of an 8 x 8 lattice, with
BYM2 area effects ``b`` (a scaled ICAR field mixed with independent noise,
``mcg.gmrf.bym2``). The ``2n = 128`` latents ``(b, u)`` are integrated out by the sparse
embedded Laplace approximation, ``mcg.gmrf_log_marginal`` (Newton on ``Q + W`` with
sparse Cholesky factorisations, ``u``'s sum-to-zero constraint exact, gradients by the
adjoint and the selected inverse), and NUTS samples ``mu``, ``sigma`` and ``phi`` only
(``mcmc_customgrad/models/disease_map.py``). The area effects come back per draw as a
generated quantity (``mcg.models.disease_map_latents``, one sparse factorisation each).

The reference samples the full joint model, non-centred (``3 + 64 + 63`` parameters),
what a user would write without the Laplace approximation, at ``target_accept = 0.99``
(at the default 0.8 it diverges). The Laplace marginal is an approximation for Poisson
counts, so the two agree closely, not exactly (``docs/laplace.md`` has the measured
difference). The script also maps the posterior mean relative risk ``exp(mu + b)``
against the truth (``risk.png``). A 4 x 4 lattice in a ``--quick`` run.

The full run warns that inner solves failed in a few transitions (7 of 10,000 with seed
0): those proposals put ``phi`` within ``1e-8`` of 1, beyond ``mcg.gmrf.bym2``'s range,
where the model is NaN (a rejected proposal). The posterior reaches ``1 - 1.2e-8``; the
mass it loses beyond the margin is about 2e-4 (``docs/laplace.md``).

    .venv/bin/python examples/disease_map.py            # 4 x 2,500 draws each
    .venv/bin/python examples/disease_map.py --quick    # a smoke run (what the tests do)
"""

from __future__ import annotations

import numpy as np
from _common import exit_code, figure, parse_args, sample_and_compare

import mcmc_customgrad as mcg


def generated_quantities(example):
    """``(params, key) -> {"b": ...}``: one draw of the area effects per posterior draw."""

    def gq(params, key):
        b = mcg.models.disease_map_latents(
            example, params["mu"], params["sigma"], params["phi"], key
        )
        return {"b": b[0]}

    return gq


def plot_risk(idata, example, path, shape):
    """Posterior mean relative risk ``exp(mu + b)`` beside the simulated one, as maps."""
    mu = np.asarray(idata.posterior["mu"])[..., None]
    risk = np.exp(mu + np.asarray(idata.posterior["b"])).reshape(-1, *shape).mean(axis=0)
    truth = np.exp(float(example.data["truth"]["mu"]) + np.asarray(example.data["b"]))
    with figure(path, figsize=(8, 3.5)) as ax:
        fig = ax.figure
        fig.clf()
        fig.set_layout_engine("constrained")  # a shared colour bar: not tight_layout's
        lo, hi = min(risk.min(), truth.min()), max(risk.max(), truth.max())
        for i, (title, grid) in enumerate(
            [("simulated relative risk", truth.reshape(shape)), ("posterior mean", risk)]
        ):
            panel = fig.add_subplot(1, 2, i + 1)
            image = panel.imshow(grid, vmin=lo, vmax=hi, cmap="viridis")
            panel.set(title=title, xticks=[], yticks=[])
        fig.colorbar(image, ax=fig.axes, shrink=0.8)


def main(argv=None) -> int:
    """Sample, compare on mu, sigma and phi, map the risk; exit 0 when the comparison passed."""
    args = parse_args("disease_map", __doc__, argv)
    shape = (4, 4) if args.quick else (8, 8)
    example = mcg.models.disease_map(*shape)
    print("truth:", {k: float(v) for k, v in example.data["truth"].items()})
    idata, _, report = sample_and_compare(
        example.model,
        example.reference,
        args,
        var_names=["mu", "sigma", "phi"],
        # The full joint has funnels between sigma, phi and the latents: at the default
        # 0.8 it diverges, and a reference that diverges is no reference.
        reference_kwargs={"target_accept": 0.99},
        generated_quantities=generated_quantities(example),
    )
    plot_risk(idata, example, args.out / "risk.png", shape)
    return exit_code(report)


if __name__ == "__main__":
    raise SystemExit(main())
