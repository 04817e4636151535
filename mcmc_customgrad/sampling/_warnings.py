"""Post-run checks in the style of PyMC's and Stan's warnings, each with what to try."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .. import _arviz
from ..implicit._base import Status
from ..implicit.stats import status_totals

__all__ = [
    "Diagnostic",
    "SamplingWarning",
    "diagnose",
    "genuine_divergences",
    "sample_stat",
    "divergence_count",
]

RHAT_MAX = 1.01
ESS_PER_CHAIN_MIN = 100
EBFMI_MIN = 0.3


class SamplingWarning(UserWarning):
    """A post-run diagnostic failed (divergences, R-hat, ESS, tree depth, E-BFMI, solves)."""


class Diagnostic(NamedTuple):
    """One failed check: a short ``name`` (for scripts) and the ``message`` (for people)."""

    name: str
    message: str

    def __str__(self):
        return self.message


def genuine_divergences(diverging, solver_failure):
    """Divergent transitions that are not inner-solver failures (element-wise).

    A failed inner solve makes the log-density NaN, so the proposal's energy error is
    infinite and Blackjax flags the transition divergent; the library counts it as a
    solver failure instead, and a divergence is what is left: a trajectory the step
    size could not follow. The one definition every report uses. Works on NumPy and JAX
    arrays.

    Examples
    --------
    >>> import numpy as np
    >>> from mcmc_customgrad.sampling._warnings import genuine_divergences
    >>> genuine_divergences(np.array([True, True, False]), np.array([True, False, False]))
    array([False,  True, False])
    """
    return diverging & ~solver_failure


def sample_stat(idata, name):
    """``sample_stats[name]`` of a run as a NumPy array, or None where it is absent."""
    if "sample_stats" not in _arviz.groups(idata) or name not in idata.sample_stats:
        return None
    return np.asarray(idata.sample_stats[name].values)


def divergence_count(idata):
    """Genuine divergences of a run (:func:`genuine_divergences`); None if not recorded."""
    diverging = sample_stat(idata, "diverging")
    if diverging is None:
        return None
    failed = sample_stat(idata, "solver_failure")
    diverging = diverging.astype(bool)
    if failed is None:
        return int(diverging.sum())
    return int(genuine_divergences(diverging, failed.astype(bool)).sum())


def _worst(values: dict, bad, n=3, fmt=".3g", reverse=False) -> str:
    items = sorted(
        ((k, v) for k, v in values.items() if bad(v)), key=lambda kv: kv[1], reverse=reverse
    )
    shown = ", ".join(f"{k} ({'NaN' if np.isnan(v) else format(v, fmt)})" for k, v in items[:n])
    return shown + (" ..." if len(items) > n else "")


def _reasons(counts, failed: bool) -> str:
    """`` (MAX_STEPS: 3, STAGNATED: 1)``: the statuses in per-draw ``counts`` (or '')."""
    if counts is None:
        return ""
    totals = status_totals(counts)
    named = [f"{s.name}: {n}" for s, n in totals.items() if s.accepted != failed]
    return f" ({', '.join(named)})" if named else ""


def diagnose(idata) -> list[Diagnostic]:
    """Check a run for the problems PyMC and Stan warn about; return what failed.

    Checks: divergent transitions; split R-hat above 1.01; bulk or tail ESS below 100
    per chain; transitions that hit the maximum tree depth; E-BFMI below 0.3; inner
    solves that failed during sampling (the sampler rejected those proposals) or draws
    accepted where an inner solve did not converge (only possible with
    ``on_failure="last"``; the reasons are named when the run has ``solver_status``);
    draws whose inner answer was accepted as ``DEGENERATE`` (known only to its error
    estimate).

    Parameters
    ----------
    idata : arviz.InferenceData
        A run from :func:`~mcmc_customgrad.sample` (or any run with a ``posterior`` and
        a ``sample_stats`` group using the standard names).

    Returns
    -------
    list of Diagnostic
        Empty when every check passes.

    Examples
    --------
    >>> import numpy as np
    >>> from mcmc_customgrad import _arviz
    >>> import mcmc_customgrad as mcg
    >>> rng = np.random.default_rng(0)
    >>> idata = _arviz.to_inference_data(
    ...     {"x": rng.normal(size=(4, 1000))},
    ...     {"diverging": np.zeros((4, 1000), bool), "energy": rng.normal(size=(4, 1000))})
    >>> mcg.diagnose(idata)
    []
    >>> idata.sample_stats["diverging"][0, :3] = True
    >>> [d.name for d in mcg.diagnose(idata)]
    ['divergences']
    """
    found = []
    num_chains = int(idata.posterior.sizes["chain"])
    num_draws = int(idata.posterior.sizes["draw"])
    total = num_chains * num_draws

    failed = sample_stat(idata, "solver_failure")
    n = divergence_count(idata)
    if n:
        found.append(
            Diagnostic(
                "divergences",
                f"{n} of {total} transitions after warmup diverged ({100 * n / total:.2g}%)."
                " The posterior may have regions the sampler cannot reach, so draws can be "
                "biased. Raise target_accept (0.95, 0.99) or reparameterise (e.g. a "
                "non-centred hierarchy).",
            )
        )
    if failed is not None:
        n = int(failed.sum())
        if n:
            found.append(
                Diagnostic(
                    "solver_failures",
                    f"inner solves failed in {n} of {total} transitions "
                    f"({100 * n / total:.2g}%). Each such proposal was rejected, which keeps "
                    "the chain exact but costs efficiency. Try a start y0 nearer the "
                    "solution (a function of the parameters), a larger max_steps, another "
                    "solver, or check where the inner problem has no solution.",
                )
            )
    converged = sample_stat(idata, "solver_converged")
    counts = sample_stat(idata, "solver_status")
    if converged is not None:
        n = int((~converged).sum())
        if n:
            found.append(
                Diagnostic(
                    "unconverged_draws",
                    f"{n} of {total} draws were accepted where an inner solve did not converge"
                    f"{_reasons(counts, failed=True)} (on_failure='last'?): their log-density "
                    "values are approximate, which biases the posterior. Use "
                    "on_failure='nan' (the default) or tighten the solver.",
                )
            )
    if counts is not None and counts.shape[-1] > Status.DEGENERATE:
        n = int((counts[..., Status.DEGENERATE] > 0).sum())
        if n:
            found.append(
                Diagnostic(
                    "degenerate_solutions",
                    f"at {n} of {total} draws an inner solution was accepted as DEGENERATE "
                    f"({int(counts[..., Status.DEGENERATE].sum())} solves): the optimality "
                    "condition holds to tolerance but the solution itself is known only to "
                    "its error estimate (a singular Jacobian or Hessian there: a double "
                    "root, a flat or quartic minimum). A log-density built from the "
                    "objective (min_value, a Laplace term) is still accurate; one that "
                    "uses the solution itself is accurate only to that estimate. Run the "
                    "solve with full_output=True to see info.error_estimate, and check the "
                    "inner problem for a direction it does not determine.",
                )
            )
    depth_hit = sample_stat(idata, "reached_max_treedepth")
    if depth_hit is not None:
        n = int(depth_hit.sum())
        if n:
            found.append(
                Diagnostic(
                    "treedepth",
                    f"{n} of {total} transitions ({100 * n / total:.2g}%) hit the maximum tree "
                    "depth: trajectories were cut short, which lowers efficiency. Raise "
                    "max_treedepth, or reparameterise to even out the posterior's scales "
                    "(dense_mass=True helps with correlations).",
                )
            )
    if num_draws >= 4:
        rhat = _arviz.rhat(idata)
        if any(v > RHAT_MAX for v in rhat.values()):
            found.append(
                Diagnostic(
                    "rhat",
                    f"R-hat is above {RHAT_MAX} for "
                    f"{_worst(rhat, lambda v: v > RHAT_MAX, fmt='.3f', reverse=True)}: "
                    "the chains disagree, so they have not converged to one distribution. "
                    "Run longer warmup and more draws; if it persists, look for "
                    "multimodality (trace plots).",
                )
            )
        limit = ESS_PER_CHAIN_MIN * num_chains
        for method in ("bulk", "tail"):
            ess = _arviz.ess(idata, method=method)
            if any(not v >= limit for v in ess.values()):
                found.append(
                    Diagnostic(
                        f"ess_{method}",
                        f"{method} effective sample size is below {ESS_PER_CHAIN_MIN} per "
                        f"chain ({limit} in all) for {_worst(ess, lambda v: not v >= limit)}: "
                        "too few for reliable "
                        + ("means" if method == "bulk" else "quantiles and intervals")
                        + ". Draw more samples.",
                    )
                )
    if sample_stat(idata, "energy") is not None and num_draws >= 4:
        bfmi = _arviz.bfmi(idata)
        low = [c for c, v in enumerate(bfmi) if v < EBFMI_MIN]
        if low:
            found.append(
                Diagnostic(
                    "ebfmi",
                    f"E-BFMI is below {EBFMI_MIN} in chains {low} (min {bfmi.min():.2f}): "
                    "momentum resampling explores the energy poorly, typical of heavy tails "
                    "or funnels. Reparameterise (non-centred) or use dense_mass=True.",
                )
            )
    return found
