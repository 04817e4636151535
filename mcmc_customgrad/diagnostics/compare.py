"""Custom-gradient chains against reference chains: the protocol of validation.md §3.

A wrong gradient that depends on the position only still leaves HMC exact (it accepts
less), so a gradient bug shows up as *efficiency*; a wrong log-density *value* shifts the
distribution. :func:`compare_chains` checks both, in three groups:

``sanity`` (each side on its own)
    at least 4 chains of 2,500 draws, rank-normalised split R-hat < 1.01, bulk and tail
    ESS >= 400, no divergences, E-BFMI >= 0.3 (when ``energy`` is recorded). These are
    requirements of the protocol, not advice: a side that misses one makes the
    statistics below unreliable, so it fails the comparison.
``distribution`` (the two sides against each other)
    per scalar parameter: z-scores of the difference of means, of second moments and of
    the 5% and 95% quantile indicators, each with the Monte Carlo standard error (MCSE)
    of both sides, against a Bonferroni cut-off for the family (``alpha`` = 0.01); a
    Kolmogorov-Smirnov test on draws thinned to their ESS (Bonferroni over the
    parameters); pooled R-hat of both sides' chains < 1.01; jointly, an energy-distance
    permutation test (ESS-thinned, standardised) and a pooled second-moment z-test of the
    squared Mahalanobis distance under the reference's mean and covariance (one number
    that moves with a scale error in every direction at once).
``margin`` (equivalence)
    means within 0.1 sd of the reference, sd ratio within 10%, 5% and 95% quantiles
    within 0.15 sd. A margin fails when the difference is beyond it *and* its z-score
    (means, second moments, quantile indicators) is beyond the Bonferroni cut-off: the
    difference is both practically and statistically significant. Beyond the margin
    but within Monte Carlo noise it is reported in ``notes`` ("equivalence not shown at
    this run length"), not failed: at 4 x 2,500 draws the standard error of a tail
    quantile is about 0.06 sd per side, so a point-estimate rule on a 0.15 sd margin
    alone fails correct runs several percent of the time (the library's ridge model
    did, at z = 2.3).

``passed`` is all of these. ``passed`` says the draws have the right distribution, which
is where a wrong log-density *value* shows. Efficiency is where a wrong *gradient* shows,
and is judged separately in ``efficiency_passed``; a validation needs both. Four
efficiency figures are judged: the adapted step size ratio (within [0.8, 1.25]), the
difference of mean acceptance (within 0.05), the ratio of gradient evaluations per draw
(at most 1.25) and the ratio of bulk ESS per gradient evaluation (at least 0.8; each
side's ESS capped at its number of draws, since an ESS above that comes from antithetic
chains, where ``1 + 2 sum(rho)`` is small and its estimate noisy). A point estimate
against such a bound is not a test: the ESS per gradient evaluation of a correct run
varies by about 11% from run to run (seed 000's conjugate at 4 x 2,500 draws), so the
ratio of two correct runs fell below 0.8 in about one comparison in twelve. Each figure
therefore gets an interval from the spread between chains (each chain adapts its own step
size and mass matrix, so chains are the replicates; the spread is pooled over both runs,
``Ca + Cb - 2`` degrees of freedom, Student t), at level ``1 - alpha / k`` for ``k``
judged figures, and a figure fails only when its whole interval lies outside its
requirement. A correct density fails the line with probability below ``alpha`` even at
the edge of the requirements, and far less at ratio 1; the false-alarm rate and the power
against a wrong gradient, measured over 100 seeds, are in ``docs/diagnostics.md``.

Every test family has level ``alpha``, so a comparison of two correct runs fails with
probability at most about ``3 * alpha`` (z-scores, KS, energy; Bonferroni is conservative;
a margin fails only together with its z-test) plus the small chance that a pooled R-hat
threshold is crossed by noise.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import numpy as np
from scipy import stats as _stats

from .. import _arviz
from .._args import element_labels
from ..sampling._warnings import divergence_count, sample_stat
from ._report import Check, failures_of, markdown_table
from ._report import verdict as verdict_line

__all__ = ["ComparisonReport", "compare_chains", "write_report"]

_QUANTILES = (0.05, 0.95)
_Z_STATS = ("mean", "square", "q05", "q95")
_Z_WHAT = {
    "mean": "the means",
    "square": "the second moments",
    "q05": "the 5% quantile indicators",
    "q95": "the 95% quantile indicators",
}


# --------------------------------------------------------------------------------------
# Draws
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Side:
    """One run's draws of the compared parameters, flattened to ``(chain, draw, d)``."""

    name: str
    draws: np.ndarray
    idata: object

    @property
    def num_chains(self) -> int:
        return self.draws.shape[0]

    @property
    def num_draws(self) -> int:
        return self.draws.shape[1]

    @property
    def flat(self) -> np.ndarray:
        return self.draws.reshape(-1, self.draws.shape[-1])


def _posterior(idata, side):
    if not _arviz.is_inference_data(idata):
        raise TypeError(
            f"the {side} run must be an arviz.InferenceData with a posterior group (as "
            f"returned by mcmc_customgrad.sample), got {type(idata).__name__}"
        )
    return idata.posterior


def _columns(posterior, names, side):
    """``(labels, shapes, (chain, draw, d) array)`` of ``names`` in ``posterior``."""
    labels, shapes, blocks = [], {}, []
    for name in names:
        da = posterior[name]
        if da.dims[:2] != ("chain", "draw"):
            da = da.transpose("chain", "draw", ...)
        values = np.asarray(da.values, dtype=float)
        shape = values.shape[2:]
        shapes[name] = shape
        labels += element_labels(name, shape)
        blocks.append(values.reshape(values.shape[0], values.shape[1], -1))
    draws = np.concatenate(blocks, axis=-1)
    bad = ~np.isfinite(draws).all(axis=(0, 1))
    if bad.any():
        which = ", ".join(label for label, b in zip(labels, bad, strict=True) if b)
        raise ValueError(
            f"the {side} draws of {which} contain NaN or infinite values; a posterior must "
            "be finite (check the run, or leave these variables out with var_names=)"
        )
    if draws.shape[1] < 4:
        raise ValueError(
            f"the {side} run has {draws.shape[1]} draws per chain; at least 4 are needed "
            "(the protocol asks for 2,500)"
        )
    return labels, shapes, draws


def _select(idata, reference_idata, var_names, names):
    post, ref = _posterior(idata, names[0]), _posterior(reference_idata, names[1])
    if var_names is None:
        mine, theirs = list(post.data_vars), list(ref.data_vars)
        if set(mine) != set(theirs):
            only_mine = sorted(set(mine) - set(theirs))
            only_theirs = sorted(set(theirs) - set(mine))
            raise ValueError(
                f"the two runs have different posterior variables (only in {names[0]}: "
                f"{only_mine}; only in {names[1]}: {only_theirs}); pass var_names= with "
                "the variables to compare"
            )
        var_names = mine
    elif isinstance(var_names, str):
        var_names = [var_names]
    var_names = list(var_names)
    if not var_names:
        raise ValueError("var_names is empty: name at least one posterior variable")
    for name, group in ((names[0], post), (names[1], ref)):
        missing = [v for v in var_names if v not in group.data_vars]
        if missing:
            raise ValueError(
                f"{missing} not in the {name} run's posterior (it has "
                f"{sorted(group.data_vars)}); check var_names"
            )
    labels, shapes, draws = _columns(post, var_names, names[0])
    ref_labels, ref_shapes, ref_draws = _columns(ref, var_names, names[1])
    for v in var_names:
        if shapes[v] != ref_shapes[v]:
            raise ValueError(
                f"{v!r} has shape {shapes[v]} in the {names[0]} run but {ref_shapes[v]} in "
                f"the {names[1]} run: the two runs must describe the same parameters"
            )
    assert labels == ref_labels
    return labels, _Side(names[0], draws, idata), _Side(names[1], ref_draws, reference_idata)


# --------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------


def _z(diff, se_a, se_b):
    """``diff / sqrt(se_a**2 + se_b**2)``; 0 for 0/0 (both sides exactly equal)."""
    se = np.hypot(np.nan_to_num(se_a), np.nan_to_num(se_b))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(diff == 0, 0.0, diff / se)
    return z


def _thin(draws, ess):
    """Every ``k``-th draw of each chain, ``k = ceil(total / ess)``, pooled: ~ESS draws."""
    total = draws.shape[0] * draws.shape[1]
    stride = 1 if not np.isfinite(ess) or ess >= total else math.ceil(total / max(ess, 1.0))
    return draws[:, ::stride].reshape(-1, *draws.shape[2:])


def _energy_test(a, b, num_permutations, rng):
    """Energy distance of samples ``a`` ``(n, d)`` and ``b`` ``(m, d)``; permutation p-value."""
    pooled = np.concatenate([a, b])
    n, total = len(a), len(pooled)
    sq = np.sum(pooled**2, axis=1)
    dist = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2.0 * pooled @ pooled.T, 0.0))
    np.fill_diagonal(dist, 0.0)
    rows, whole = dist.sum(axis=1), dist.sum()
    labels = np.zeros((num_permutations + 1, total))
    labels[0, :n] = 1.0
    for i in range(1, num_permutations + 1):
        labels[i, rng.permutation(total)[:n]] = 1.0
    s_aa = np.einsum("pi,pi->p", labels @ dist, labels)
    s_ab = labels @ rows - s_aa
    s_bb = whole - s_aa - 2.0 * s_ab
    m = total - n
    energy = 2.0 * s_ab / (n * m) - s_aa / n**2 - s_bb / m**2
    p_value = (1 + np.count_nonzero(energy[1:] >= energy[0])) / (num_permutations + 1)
    return float(energy[0]), float(p_value)


def _side_summary(side: _Side):
    flat = side.flat
    return {
        "mean": flat.mean(axis=0),
        "sd": flat.std(axis=0, ddof=1),
        "q05": np.quantile(flat, 0.05, axis=0),
        "q95": np.quantile(flat, 0.95, axis=0),
        "ess_mean": _arviz.ess_draws(side.draws, "mean"),
        "ess_bulk": _arviz.ess_draws(side.draws, "bulk"),
        "ess_tail": _arviz.ess_draws(side.draws, "tail"),
        "rhat": _arviz.rhat_draws(side.draws),
    }


def _mcse_mean(series):
    """Mean of ``(chain, draw, ...)`` series and its MCSE (sd / sqrt(ESS of the series))."""
    flat = series.reshape(-1, *series.shape[2:])
    ess = _arviz.ess_draws(series, "mean")
    with np.errstate(divide="ignore", invalid="ignore"):
        se = flat.std(axis=0, ddof=1) / np.sqrt(ess)
    return flat.mean(axis=0), se


# --------------------------------------------------------------------------------------
# Efficiency
# --------------------------------------------------------------------------------------


def _efficiency(side: _Side, summary):
    """Efficiency numbers of one run; ``None`` where the run did not record them."""
    attrs = _arviz.attrs(side.idata)
    step = sample_stat(side.idata, "step_size")
    accept = sample_stat(side.idata, "acceptance_rate")
    n_steps = sample_stat(side.idata, "n_steps")
    failed = sample_stat(side.idata, "solver_failure")
    grads = attrs.get("num_grad_evals")
    if grads is None and n_steps is not None:
        grads = int(n_steps.sum())
    seconds = attrs.get("sampling_seconds")
    grads = float(grads) if grads is not None and float(grads) > 0 else None
    seconds = float(seconds) if seconds is not None and float(seconds) > 0 else None
    ess_bulk = float(np.nanmin(summary["ess_bulk"]))
    ess_tail = float(np.nanmin(summary["ess_tail"]))
    divergences = divergence_count(side.idata)
    return {
        "step_size": float(np.mean(step)) if step is not None else None,
        "acceptance": float(np.mean(accept)) if accept is not None else None,
        "ess_bulk_min": ess_bulk,
        "ess_tail_min": ess_tail,
        "grad_evals": grads,
        "sampling_seconds": seconds,
        # ESS above the number of draws (antithetic chains, common with NUTS on
        # near-Gaussian targets) is estimated from 1 + 2 sum(rho) near 0, so its noise is
        # amplified several-fold; the efficiency ratio caps it at the draws (see the
        # module notes). A wrong gradient costs far more than that hides.
        "grads_per_draw": (
            float(np.mean(n_steps)) if n_steps is not None and n_steps.size else None
        ),
        "ess_per_grad": min(ess_bulk, side.num_chains * side.num_draws) / grads if grads else None,
        "ess_per_second": ess_bulk / seconds if seconds else None,
        "divergences": divergences,
        "solver_failures": int(failed.sum()) if failed is not None else None,
    }


def _chain_ess(draws, cap):
    """Smallest bulk ESS over the parameters of one chain, capped; NaN when undefined."""
    ess = _arviz.ess_draws(draws, "bulk")
    return min(float(np.min(ess)), cap) if np.all(np.isfinite(ess)) else float("nan")


def _per_chain(side: _Side, grads):
    """Per-chain efficiency numbers (the batches of the intervals); ``None`` where missing.

    Each chain adapts its own step size and mass matrix, so chains are the independent
    replicates of everything efficiency measures; the spread between them is the Monte
    Carlo noise of the run's figures.
    """
    step = sample_stat(side.idata, "step_size")
    accept = sample_stat(side.idata, "acceptance_rate")
    n_steps = sample_stat(side.idata, "n_steps")
    chains, draws = side.num_chains, side.num_draws
    if n_steps is not None:
        grads_chain = n_steps.reshape(chains, -1).sum(axis=1).astype(float)
    elif grads:  # only the total is known: shared evenly
        grads_chain = np.full(chains, grads / chains)
    else:
        grads_chain = None
    ess = np.array([_chain_ess(side.draws[c : c + 1], draws) for c in range(chains)])
    return {
        "step_size": step.reshape(chains, -1).mean(axis=1) if step is not None else None,
        "acceptance": accept.reshape(chains, -1).mean(axis=1) if accept is not None else None,
        "grads_per_draw": (
            n_steps.reshape(chains, -1).mean(axis=1).astype(float) if n_steps is not None else None
        ),
        "ess_per_grad": ess / grads_chain if grads_chain is not None else None,
    }


def _interval(a, b, point, level, log):
    """Two-sided ``level`` interval of a ratio (or, ``log=False``, a difference).

    ``point`` is the estimate; ``a`` and ``b`` are the two runs' per-chain values. The
    standard error comes from the spread between chains, pooled over both runs (under the
    hypothesis that the two densities sample alike, both runs' chains are replicates of
    one process, which gives ``Ca + Cb - 2`` degrees of freedom), on the log scale for
    ratios (delta method: relative spread). ``None`` with fewer than three chains in all.
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    df = len(a) + len(b) - 2
    if df < 1 or point is None or not np.isfinite(point) or (log and point <= 0):
        return None
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return None  # a chain whose figure is undefined (a constant chain has no ESS)
    if log and (np.any(a <= 0) or np.any(b <= 0)):
        return None
    if log:
        spread_a, spread_b = (
            np.var(a, ddof=1) / np.mean(a) ** 2,
            np.var(b, ddof=1) / np.mean(b) ** 2,
        )
    else:
        spread_a, spread_b = np.var(a, ddof=1), np.var(b, ddof=1)
    pooled = ((len(a) - 1) * spread_a + (len(b) - 1) * spread_b) / df
    se = math.sqrt(pooled * (1.0 / len(a) + 1.0 / len(b)))
    t = float(_stats.t.isf((1.0 - level) / 2.0, df))
    if log:
        centre = math.log(point)
        return (math.exp(centre - t * se), math.exp(centre + t * se))
    return (point - t * se, point + t * se)


_EFFICIENCY_ROWS = (
    ("step_size", "adapted step size (mean over chains)"),
    ("acceptance", "mean acceptance"),
    ("grads_per_draw", "gradient evaluations per draw"),
    ("ess_bulk_min", "bulk ESS (min over parameters)"),
    ("ess_tail_min", "tail ESS (min over parameters)"),
    ("grad_evals", "gradient evaluations (draws)"),
    ("sampling_seconds", "sampling seconds (draws)"),
    ("ess_per_grad", "bulk ESS per gradient evaluation"),
    ("ess_per_second", "bulk ESS per second"),
    ("divergences", "divergences"),
    ("solver_failures", "inner-solver failures (rejected)"),
)

#: The efficiency checks that are judged, in the order of the table.
_JUDGED = ("step_size", "acceptance", "grads_per_draw", "ess_per_grad")

#: What lowers efficiency besides a wrong gradient (for failure messages).
_OTHER_CAUSES = (
    "inner-solver failures (each rejects its proposal: see their count in the efficiency "
    "table), a loose inner tolerance (a gradient exact only to that tolerance), a "
    "different parameterisation, constraint or mass matrix of the two densities, or "
    "different sampler settings (target_accept, warmup length, max_treedepth)"
)


_NO_RATIO = ("acceptance", "divergences", "solver_failures")  # a difference, or counts


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class ComparisonReport:
    """Verdict of :func:`compare_chains`: custom-gradient draws against reference draws.

    Attributes
    ----------
    passed : bool
        Every sanity, distribution and margin check passed (efficiency is separate).
    failures : list of str
        One reason per failed check, naming the parameter, the statistic, its value and
        the threshold; efficiency failures are in ``efficiency_failures``.
    rows : list of dict
        One per scalar parameter (``"x[0]"``...): both sides' mean, sd, 5% and 95%
        quantiles, ESS, the four z-scores, the KS p-value, pooled R-hat, ``ok``.
    checks : list of dict
        One per check: ``check``, ``kind`` (``"sanity"``, ``"distribution"``,
        ``"margin"``), ``side``, ``parameter``, ``value``, ``threshold``, ``passed``.
    efficiency : list of dict
        One per efficiency metric, both sides and, where judged, the requirement.
    efficiency_passed : bool or None
        Step size, acceptance and ESS per gradient evaluation within the protocol's
        bounds; ``None`` when neither run recorded what they need.
    efficiency_failures : list of str
        One reason per failed efficiency check.
    notes : list of str
        Differences beyond an equivalence margin but within Monte Carlo noise: not
        failures, but equivalence is not shown at this run length (draw more to decide).
    settings : dict
        Thresholds used (``alpha``, ``z_cutoff``, ``num_z_tests``, margins, ...).

    Examples
    --------
    >>> import numpy as np
    >>> from mcmc_customgrad import _arviz
    >>> from mcmc_customgrad.diagnostics.compare import compare_chains
    >>> rng = np.random.default_rng(1)
    >>> run = lambda: _arviz.to_inference_data({"x": rng.normal(size=(4, 2500, 2))}, {})
    >>> report = compare_chains(run(), run())
    >>> report.passed, report.failures
    (True, [])
    >>> print(str(report).splitlines()[0])
    PASSED: all 32 checks, custom (4 x 2500 draws) against reference (4 x 2500 draws), 2 parameters
    >>> report.rows[0]["parameter"], round(report.settings["z_cutoff"], 2)
    ('x[0]', 3.26)
    """

    passed: bool
    failures: list[str]
    rows: list[dict]
    checks: list[dict]
    efficiency: list[dict]
    efficiency_passed: bool | None
    efficiency_failures: list[str]
    settings: dict
    notes: list[str] = dataclasses.field(default_factory=list)
    _custom: _Side | None = dataclasses.field(default=None, repr=False, compare=False)
    _reference: _Side | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def names(self) -> tuple[str, str]:
        """The two runs' names in tables and plots, ``(custom, reference)``."""
        return self.settings["names"]

    @property
    def table(self) -> str:
        """Markdown table, one row per parameter, the two sides side by side."""
        a, b = (n[0] for n in self.names)
        header = [
            "parameter",
            f"mean {a}",
            f"mean {b}",
            f"sd {a}",
            f"sd {b}",
            f"q5% {a}",
            f"q5% {b}",
            f"q95% {a}",
            f"q95% {b}",
            "z mean",
            "z square",
            "z q5%",
            "z q95%",
            "KS p",
            "pooled R-hat",
            "ok",
        ]
        keys = ["parameter", "mean_custom", "mean_reference", "sd_custom", "sd_reference"]
        keys += ["q05_custom", "q05_reference", "q95_custom", "q95_reference"]
        keys += ["z_mean", "z_square", "z_q05", "z_q95", "ks_p", "rhat_pooled", "ok"]
        legend = f"\n\n{a} = {self.names[0]}, {b} = {self.names[1]}" if a != b else ""
        return markdown_table(header, [[r[k] for k in keys] for r in self.rows]) + legend

    @property
    def checks_table(self) -> str:
        """Markdown table of the joint and per-side checks (per-parameter ones: ``table``)."""
        rows = [
            [c["check"], c["side"] or "both", c["value"], c["threshold"], c["passed"]]
            for c in self.checks
            if c["parameter"] is None
        ]
        return markdown_table(["check", "side", "value", "threshold", "passed"], rows)

    @property
    def efficiency_table(self) -> str:
        """Markdown table of efficiency: both sides, the ratio with its interval, the test."""
        rows = []
        for e in self.efficiency:
            if e["difference"] is not None:
                versus = f"{e['difference']:+.3f} (difference)"
            elif e["ratio"] is not None:
                versus = f"x {e['ratio']:.3g}"
            elif e["key"] in _NO_RATIO:
                versus = ""
            else:
                versus = "n/a"
            interval = e.get("interval")
            shown = f"[{interval[0]:.3g}, {interval[1]:.3g}]" if interval else ""
            judged = "" if e["passed"] is None else e["passed"]
            rows.append(
                [
                    e["metric"],
                    e["custom"],
                    e["reference"],
                    versus,
                    shown,
                    e["requirement"] or "",
                    judged,
                ]
            )
        level = self.settings.get("efficiency_level")
        title = f"{level:.2%} interval" if level else "interval"
        header = ["metric", *self.names, "custom vs reference", title, "requirement", "passed"]
        return markdown_table(header, rows)

    @property
    def verdict(self) -> str:
        """One line: ``"PASSED: ..."`` or ``"FAILED: <n> of <m> checks ..."``."""
        (ca, da), (cb, db) = self.settings["custom_shape"], self.settings["reference_shape"]
        what = (
            f"{self.names[0]} ({ca} x {da} draws) against {self.names[1]} ({cb} x {db} draws), "
            f"{len(self.rows)} parameter" + ("s" if len(self.rows) != 1 else "")
        )
        return verdict_line(len(self.checks), sum(not c["passed"] for c in self.checks), what)

    @property
    def efficiency_verdict(self) -> str:
        """One line on efficiency (judged apart from ``passed``)."""
        judged = [e for e in self.efficiency if e["passed"] is not None]
        if self.efficiency_passed is None:
            return "Efficiency: not judged (no step size, acceptance or gradient counts)."
        level = self.settings["efficiency_level"]
        if self.efficiency_passed:
            what = ", ".join(e["metric"] for e in judged)
            return (
                f"Efficiency: PASSED ({len(judged)} checks, {level:.2%} intervals from the "
                f"spread between chains: {what})."
            )
        return (
            f"Efficiency: FAILED ({len(self.efficiency_failures)} of {len(judged)} checks: an "
            f"interval lies wholly outside its requirement, which a correct density does with "
            f"probability below {self.settings['alpha']:g}; judged apart from the verdict)."
        )

    def __str__(self):
        parts = [self.verdict, "", self.table, "", self.efficiency_verdict]
        if self.failures or self.efficiency_failures:
            parts += ["", "Failures:"]
            parts += [f"- {f}" for f in self.failures + self.efficiency_failures]
        if self.notes:
            parts += ["", "Notes:"] + [f"- {n}" for n in self.notes]
        return "\n".join(parts)

    def to_markdown(self, figures=()) -> str:
        """The report as Markdown: verdict, tables, failures, then ``figures`` (image links).

        ``figures`` are paths relative to where the Markdown file will be written.
        """
        parts = [
            f"# {self.names[0]} against {self.names[1]}",
            "",
            f"**{self.verdict}**",
            "",
            f"**{self.efficiency_verdict}**",
            "",
            "## Parameters",
            "",
            self.table,
            "",
            "z-scores use the Monte Carlo standard error of both sides; cut-off "
            f"|z| > {self.settings['z_cutoff']:.3g} (Bonferroni, family alpha "
            f"{self.settings['alpha']:g}, {self.settings['num_z_tests']} tests). KS: "
            f"p < {self.settings['ks_cutoff']:.3g} fails. Margins: means within "
            f"{self.settings['mean_margin']:g} sd, sd ratio within "
            f"{self.settings['sd_margin']:.0%}, quantiles within "
            f"{self.settings['quantile_margin']:g} sd, failed only with their z-test.",
            "",
            "## Joint and per-side checks",
            "",
            self.checks_table,
            "",
            "## Efficiency",
            "",
            self.efficiency_table,
        ]
        failures = self.failures + self.efficiency_failures
        if failures:
            parts += ["", "## Failures", ""] + [f"- {f}" for f in failures]
        if self.notes:
            parts += ["", "## Notes", ""] + [f"- {n}" for n in self.notes]
        if figures:
            parts += ["", "## Figures", ""]
            for path in figures:
                p = Path(path)
                parts += [f"![{p.stem}]({p.as_posix()})", ""]
        return "\n".join(parts).rstrip() + "\n"

    def plot(self, out_dir, *, max_panels=12) -> list[Path]:
        """Write the figures as PNG files into ``out_dir``; return their paths.

        Overlaid marginal densities (``densities.png``), rank plots of the pooled chains
        (``ranks.png``), trace plots (``traces.png``) and ESS and efficiency bars
        (``efficiency.png``); at most ``max_panels`` parameters are drawn.
        """
        if self._custom is None or self._reference is None:
            raise ValueError(
                "this report holds no draws to plot (it was not made by compare_chains)"
            )
        from . import plots

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        labels = [r["parameter"] for r in self.rows]
        return plots.comparison_figures(
            self._custom.draws,
            self._reference.draws,
            labels,
            self,
            out,
            max_panels=max_panels,
        )


def compare_chains(
    idata,
    reference_idata,
    var_names=None,
    *,
    alpha=0.01,
    mean_margin=0.1,
    sd_margin=0.1,
    quantile_margin=0.15,
    rhat_max=1.01,
    min_ess=400,
    min_chains=4,
    min_draws=2500,
    ebfmi_min=0.3,
    step_size_range=(0.8, 1.25),
    acceptance_tol=0.05,
    ess_per_grad_min=0.8,
    num_permutations=300,
    max_energy_draws=1000,
    seed=0,
    names=("custom", "reference"),
    grads_per_draw_max=1.25,
    gradients_passed=None,
) -> ComparisonReport:
    """Compare custom-gradient draws with reference draws (validation.md §3).

    Parameters
    ----------
    idata, reference_idata : arviz.InferenceData
        The run to check and the reference run (e.g. the closed-form density), each with
        a ``posterior`` group; ``sample_stats`` and attributes (``num_grad_evals``,
        ``sampling_seconds``) are used when present. Chain and draw counts may differ.
    var_names : str or list of str, optional
        Posterior variables to compare; by default all, which must then be the same in
        both runs. Vector parameters are compared per element (``"x[0]"``, ...).
    alpha : float
        Family-wise level of each test family (z-scores, KS, energy distance).
    mean_margin, sd_margin, quantile_margin : float
        Equivalence margins: ``|mean difference| <= mean_margin * sd``, ``|sd ratio - 1|
        <= sd_margin``, ``|quantile difference| <= quantile_margin * sd`` (5% and 95%),
        with the reference's sd.
    rhat_max, min_ess, min_chains, min_draws, ebfmi_min : float or int
        Per-side requirements (pooled R-hat uses ``rhat_max`` too).
    step_size_range, acceptance_tol, ess_per_grad_min : float
        Efficiency requirements (judged in ``efficiency_passed`` only): a figure fails when
        its whole ``1 - alpha / k`` interval lies outside (module notes).
    num_permutations : int
        Permutations of the energy-distance test.
    max_energy_draws : int
        At most this many ESS-thinned draws per side enter the energy-distance test.
    seed : int
        Seed of the permutations and of the subsampling for the energy test.
    names : tuple of str
        How the two runs are called in the report.
    grads_per_draw_max : float
        Efficiency requirement on the ratio of gradient evaluations per draw.
    gradients_passed : bool or None
        The result of :func:`~mcmc_customgrad.check_gradients` in the same run (its
        ``passed``), if one was made: efficiency failures then name the likely causes
        (with True, never the gradient). None: not checked.

    Returns
    -------
    ComparisonReport
        ``passed``, ``failures``, the tables (``table``, ``checks_table``,
        ``efficiency_table``), ``efficiency_passed`` and ``plot(out_dir)``.

    Raises
    ------
    ValueError
        When the runs' variables differ (and ``var_names`` is not given), a variable's
        shape differs, a draw is not finite or a parameter is constant in the reference.

    Notes
    -----
    With ``m = 4 d + 1`` z-tests for ``d`` scalar parameters (mean, second moment about the
    mid-point of the two means, 5% and 95% indicators at the pooled quantiles, and the
    joint Mahalanobis test), a z-score fails when ``|z| > Phi^-1(1 - alpha / (2 m))``.
    MCSEs use the ESS of the series concerned (the draws, their squares, the indicators,
    the Mahalanobis distances) on each side. KS p-values fail below ``alpha / d``.

    When the runs differ in length, pooled R-hat (and the rank and trace plots) use the
    first ``min(draws)`` draws of every chain; everything else uses all draws.

    Examples
    --------
    >>> import numpy as np
    >>> from mcmc_customgrad import _arviz
    >>> from mcmc_customgrad.diagnostics.compare import compare_chains
    >>> rng = np.random.default_rng(0)
    >>> ref = _arviz.to_inference_data({"x": rng.normal(size=(4, 2500, 3))}, {})
    >>> ok = _arviz.to_inference_data({"x": rng.normal(size=(4, 2500, 3))}, {})
    >>> compare_chains(ok, ref).passed
    True
    >>> wide = _arviz.to_inference_data({"x": 1.05 * rng.normal(size=(4, 2500, 3))}, {})
    >>> report = compare_chains(wide, ref)
    >>> report.passed
    False
    >>> "Mahalanobis second moment" in [c["check"] for c in report.checks if not c["passed"]]
    True
    >>> print(report.failures[-1])  # doctest: +ELLIPSIS
    joint: mean squared Mahalanobis distance ... the custom draws are wider overall
    """
    alpha = float(alpha)
    _check_arguments(
        alpha,
        num_permutations,
        gradients_passed,
        step_size_range,
        acceptance_tol,
        grads_per_draw_max,
        ess_per_grad_min,
    )
    names = tuple(str(n) for n in names)
    if len(names) != 2:
        raise ValueError(f"names must be two strings (custom, reference), got {names}")
    labels, cus, ref = _select(idata, reference_idata, var_names, names)
    sa, sb = _side_summary(cus), _side_summary(ref)
    if np.any(sb["sd"] == 0):
        which = [lab for lab, s in zip(labels, sb["sd"], strict=True) if s == 0]
        raise ValueError(
            f"{which} are constant in the {names[1]} draws: nothing to compare them "
            "against; leave them out with var_names="
        )
    settings = {
        "names": names,
        "alpha": alpha,
        "mean_margin": mean_margin,
        "sd_margin": sd_margin,
        "quantile_margin": quantile_margin,
        "rhat_max": rhat_max,
        "min_ess": min_ess,
        "min_chains": min_chains,
        "min_draws": min_draws,
        "ebfmi_min": ebfmi_min,
        "step_size_range": tuple(step_size_range),
        "acceptance_tol": acceptance_tol,
        "grads_per_draw_max": grads_per_draw_max,
        "ess_per_grad_min": ess_per_grad_min,
        "gradients_passed": gradients_passed,
        "num_permutations": int(num_permutations),
        "seed": seed,
        "custom_shape": (cus.num_chains, cus.num_draws),
        "reference_shape": (ref.num_chains, ref.num_draws),
    }
    st = _statistics(cus, ref, sa, sb, settings, int(max_energy_draws))
    settings.update(
        num_z_tests=st.num_z,
        z_cutoff=st.z_cut,
        ks_cutoff=st.ks_cut,
        energy_draws=st.energy_draws,
        energy_distance=st.energy,
        mahalanobis=(st.maha_a, st.maha_b),
    )

    checks, rows, notes = [], [], []
    for side, summ in ((cus, sa), (ref, sb)):
        checks += _sanity_checks(side, summ, labels, settings)
    for j, label in enumerate(labels):
        judged, context = _parameter_checks(j, label, st, sa, sb, settings)
        row = {"parameter": label}
        for key in ("mean", "sd", "q05", "q95", "ess_bulk", "ess_tail", "rhat"):
            row[f"{key}_custom"] = float(sa[key][j])
            row[f"{key}_reference"] = float(sb[key][j])
        row.update({f"z_{key}": float(st.z[key][j]) for key in _Z_STATS})
        row["ks_statistic"], row["ks_p"] = st.ks[j]
        row["rhat_pooled"] = float(st.rhat_pooled[j])
        row["ok"] = all(c.passed for c in judged)
        rows.append(row)
        checks += judged
        notes += context
    checks += _joint_checks(st, settings)

    # Efficiency, beside the verdict.
    efficiency, eff_failures, eff_level = _judge_efficiency(
        cus,
        ref,
        _efficiency(cus, sa),
        _efficiency(ref, sb),
        names=names,
        alpha=alpha,
        step_size_range=step_size_range,
        acceptance_tol=acceptance_tol,
        grads_per_draw_max=grads_per_draw_max,
        ess_per_grad_min=ess_per_grad_min,
        gradients_passed=gradients_passed,
    )
    judged = [e["passed"] for e in efficiency if e["passed"] is not None]
    settings["efficiency_level"] = eff_level
    failures = failures_of(checks)
    return ComparisonReport(
        passed=not failures,
        failures=failures,
        rows=rows,
        checks=[c.as_row() for c in checks],
        efficiency=efficiency,
        efficiency_passed=all(judged) if judged else None,
        efficiency_failures=eff_failures,
        settings=settings,
        notes=notes,
        _custom=cus,
        _reference=ref,
    )


def _check_arguments(
    alpha,
    num_permutations,
    gradients_passed,
    step_size_range,
    acceptance_tol,
    grads_per_draw_max,
    ess_per_grad_min,
):
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if int(num_permutations) < 1:
        raise ValueError(f"num_permutations must be at least 1, got {num_permutations}")
    if gradients_passed not in (None, True, False):
        raise ValueError(
            "gradients_passed must be None (not checked in this run), True or False (the "
            f"result of mcg.check_gradients, e.g. report.passed), got {gradients_passed!r}"
        )
    lo, hi = step_size_range
    if not 0 < lo <= 1 <= hi:
        raise ValueError(
            f"step_size_range must be (lo, hi) with 0 < lo <= 1 <= hi, got {step_size_range}"
        )
    if not (acceptance_tol > 0 and grads_per_draw_max >= 1 and 0 < ess_per_grad_min <= 1):
        raise ValueError(
            "efficiency requirements need acceptance_tol > 0, grads_per_draw_max >= 1 and "
            f"0 < ess_per_grad_min <= 1, got {acceptance_tol}, {grads_per_draw_max}, "
            f"{ess_per_grad_min}"
        )


@dataclasses.dataclass
class _Statistics:
    """The two sides' test statistics, before any threshold is applied."""

    num_z: int  # z-tests in the Bonferroni family: 4 per parameter and the joint one
    z_cut: float
    ks_cut: float
    z: dict  # "mean", "square", "q05", "q95" -> per-parameter z-scores
    squares: tuple  # both sides' mean squared deviation about the mid-point, per parameter
    indicator: dict  # "q05", "q95" -> both sides' fraction below the pooled quantile
    ks: list  # per parameter (statistic, p-value)
    rhat_pooled: np.ndarray
    energy: float
    energy_p: float
    energy_draws: tuple
    maha_a: float
    maha_b: float
    z_maha: float


def _statistics(cus: _Side, ref: _Side, sa, sb, settings, max_energy_draws) -> _Statistics:
    """z-scores, KS, pooled R-hat, energy distance and the Mahalanobis test."""
    d = sa["mean"].shape[0]
    alpha, scale = settings["alpha"], sb["sd"]
    num_z = 4 * d + 1
    # z-scores of means, second moments (about a common centre, in reference sd units, so
    # that they measure scale and not location) and quantile indicators.
    z = {"mean": _z(sa["mean"] - sb["mean"], *(_mcse_mean(s.draws)[1] for s in (cus, ref)))}
    centre = 0.5 * (sa["mean"] + sb["mean"])
    sq_a, se_sq_a = _mcse_mean(((cus.draws - centre) / scale) ** 2)
    sq_b, se_sq_b = _mcse_mean(((ref.draws - centre) / scale) ** 2)
    z["square"] = _z(sq_a - sq_b, se_sq_a, se_sq_b)
    pooled = np.concatenate([cus.flat, ref.flat])
    indicator = {}
    for q, key in zip(_QUANTILES, ("q05", "q95"), strict=True):
        cut = np.quantile(pooled, q, axis=0)
        pa, se_a = _mcse_mean((cus.draws <= cut).astype(float))
        pb, se_b = _mcse_mean((ref.draws <= cut).astype(float))
        z[key] = _z(pa - pb, se_a, se_b)
        indicator[key] = (pa, pb)

    # KS per parameter on draws thinned to their (bulk) ESS.
    ks = []
    for j in range(d):
        xa = _thin(cus.draws[..., j], sa["ess_bulk"][j])
        xb = _thin(ref.draws[..., j], sb["ess_bulk"][j])
        res = _stats.ks_2samp(xa, xb, method="asymp")
        ks.append((float(res.statistic), float(res.pvalue)))

    # Pooled R-hat over the chains of both sides (cut to a common length).
    n = min(cus.num_draws, ref.num_draws)
    rhat_pooled = _arviz.rhat_draws(np.concatenate([cus.draws[:, :n], ref.draws[:, :n]]))

    # Joint: energy distance on standardised, ESS-thinned draws.
    rng = np.random.default_rng(settings["seed"])
    joint = []
    for s, summ in ((cus, sa), (ref, sb)):
        x = _thin((s.draws - sb["mean"]) / scale, float(np.nanmin(summ["ess_bulk"])))
        if len(x) > max_energy_draws:
            x = x[np.sort(rng.choice(len(x), size=max_energy_draws, replace=False))]
        joint.append(x)
    energy, energy_p = _energy_test(*joint, settings["num_permutations"], rng)

    # Joint: mean squared Mahalanobis distance under the reference's mean and covariance.
    cov = np.atleast_2d(np.cov(ref.flat, rowvar=False))
    precision = np.linalg.pinv(cov, hermitian=True)

    def mahalanobis(draws):
        centred = draws - sb["mean"]
        return np.einsum("...i,ij,...j->...", centred, precision, centred)

    maha_a, se_ma = _mcse_mean(mahalanobis(cus.draws))
    maha_b, se_mb = _mcse_mean(mahalanobis(ref.draws))
    return _Statistics(
        num_z=num_z,
        z_cut=float(_stats.norm.isf(alpha / (2 * num_z))),
        ks_cut=alpha / d,
        z=z,
        squares=(sq_a, sq_b),
        indicator=indicator,
        ks=ks,
        rhat_pooled=rhat_pooled,
        energy=energy,
        energy_p=energy_p,
        energy_draws=(len(joint[0]), len(joint[1])),
        maha_a=float(maha_a),
        maha_b=float(maha_b),
        z_maha=float(_z(maha_a - maha_b, se_ma, se_mb)),
    )


def _sanity_checks(s: _Side, summ, labels, settings) -> list[Check]:
    """One side on its own: chains, draws, R-hat, ESS, divergences and E-BFMI."""
    min_chains, min_draws = settings["min_chains"], settings["min_draws"]
    rhat_max, min_ess, ebfmi_min = settings["rhat_max"], settings["min_ess"], settings["ebfmi_min"]

    def check(name, passed, value, threshold, message):
        return Check(name, value, threshold, passed, message, side=s.name, kind="sanity")

    n_chains, n_draws = s.num_chains, s.num_draws
    out = [
        check(
            "chains",
            n_chains >= min_chains,
            n_chains,
            f">= {min_chains}",
            f"{s.name}: {n_chains} chains, fewer than the {min_chains} the protocol asks for "
            "(run more chains, or lower min_chains=)",
        ),
        check(
            "draws per chain",
            n_draws >= min_draws,
            n_draws,
            f">= {min_draws}",
            f"{s.name}: {n_draws} draws per chain, fewer than the {min_draws} the protocol asks "
            "for (draw more, or lower min_draws=)",
        ),
    ]
    worst = int(np.nanargmax(summ["rhat"])) if np.isfinite(summ["rhat"]).any() else 0
    value = float(summ["rhat"][worst])
    out.append(
        check(
            "R-hat (max)",
            value < rhat_max,
            value,
            f"< {rhat_max}",
            f"{s.name}: R-hat of {labels[worst]} is {value:.4f}, not below {rhat_max}: its "
            "chains disagree (longer warmup, more draws)",
        )
    )
    for method in ("bulk", "tail"):
        ess = summ[f"ess_{method}"]
        worst = int(np.argmin(np.nan_to_num(ess, nan=-1.0)))
        value = float(ess[worst])
        out.append(
            check(
                f"{method} ESS (min)",
                value >= min_ess,
                value,
                f">= {min_ess}",
                f"{s.name}: {method} ESS of {labels[worst]} is {value:.0f}, below {min_ess} "
                "(draw more)",
            )
        )
    count = divergence_count(s.idata)
    if count is not None:
        out.append(
            check(
                "divergences",
                count == 0,
                count,
                "0",
                f"{s.name}: {count} divergent transitions (raise target_accept or reparameterise)",
            )
        )
    if sample_stat(s.idata, "energy") is not None:
        value = float(np.min(_arviz.bfmi(s.idata)))
        out.append(
            check(
                "E-BFMI (min)",
                value >= ebfmi_min,
                value,
                f">= {ebfmi_min}",
                f"{s.name}: E-BFMI is {value:.3f} in its worst chain, below {ebfmi_min}",
            )
        )
    return out


def _parameter_checks(j, label, st: _Statistics, sa, sb, settings):
    """One scalar parameter: its z-tests, KS, pooled R-hat and equivalence margins.

    Returns ``(checks, notes)``: a margin that is exceeded within Monte Carlo noise is a
    note, not a failure (module notes).
    """
    names, alpha, z_cut = settings["names"], settings["alpha"], st.z_cut
    rhat_max = settings["rhat_max"]

    def check(name, kind, passed, value, threshold, message):
        return Check(name, value, threshold, passed, message, parameter=label, kind=kind)

    checks, notes = [], []
    for key in _Z_STATS:
        value = float(st.z[key][j])
        if key == "mean":
            detail = f"{names[0]} {sa['mean'][j]:.4g}, {names[1]} {sb['mean'][j]:.4g}"
        elif key == "square":
            sq_a, sq_b = st.squares
            detail = (
                f"{names[0]} {sq_a[j]:.4g}, {names[1]} {sq_b[j]:.4g} in squared "
                f"{names[1]} sd about the mid-point of the means"
            )
        else:
            pa, pb = st.indicator[key]
            detail = (
                f"fraction below the pooled {key[1:]}% quantile: {names[0]} "
                f"{pa[j]:.4f}, {names[1]} {pb[j]:.4f}"
            )
        checks.append(
            check(
                f"z {key}",
                "distribution",
                abs(value) <= z_cut,
                value,
                f"|z| <= {z_cut:.3g}",
                f"{label}: z-score of {_Z_WHAT[key]} is {value:.2f} ({detail}), beyond the "
                f"Bonferroni cut-off {z_cut:.2f} (family alpha {alpha:g}, {st.num_z} tests)",
            )
        )
    stat, p = st.ks[j]
    d = len(st.ks)
    checks.append(
        check(
            "KS",
            "distribution",
            p >= st.ks_cut,
            p,
            f"p >= {st.ks_cut:.3g}",
            f"{label}: Kolmogorov-Smirnov p-value {p:.2g} (D = {stat:.3f}, ESS-thinned draws) "
            f"is below {st.ks_cut:.3g} (alpha {alpha:g} / {d} parameters)",
        )
    )
    value = float(st.rhat_pooled[j])
    checks.append(
        check(
            "pooled R-hat",
            "distribution",
            value < rhat_max,
            value,
            f"< {rhat_max}",
            f"{label}: R-hat of the pooled {names[0]} and {names[1]} chains is {value:.4f}, "
            f"not below {rhat_max}: the two sides target different distributions",
        )
    )
    sd = sb["sd"][j]

    def margin(name, beyond, value, threshold, z_key, message):
        # Failed only when practically (beyond the margin) and statistically (|z|
        # beyond the Bonferroni cut-off) significant; see the module notes.
        z_value = abs(float(st.z[z_key][j]))
        significant = z_value > z_cut
        checks.append(
            check(
                name,
                "margin",
                not (beyond and significant),
                float(value),
                f"{threshold}, or |z {z_key}| <= {z_cut:.3g}",
                f"{message} (|z| = {z_value:.2f})",
            )
        )
        if beyond and not significant:
            notes.append(
                f"{message}, but within Monte Carlo noise (|z| = {z_value:.2f} <= "
                f"{z_cut:.2f}): equivalence not shown at this run length; draw more "
                "to decide"
            )

    mean_margin, sd_margin = settings["mean_margin"], settings["sd_margin"]
    quantile_margin = settings["quantile_margin"]
    value = abs(sa["mean"][j] - sb["mean"][j]) / sd
    margin(
        "mean margin",
        value > mean_margin,
        value,
        f"<= {mean_margin} sd",
        "mean",
        f"{label}: the means differ by {value:.3f} {names[1]} sd ({sa['mean'][j]:.4g} vs "
        f"{sb['mean'][j]:.4g}), more than the margin {mean_margin} sd",
    )
    ratio = sa["sd"][j] / sd
    margin(
        "sd ratio margin",
        abs(ratio - 1.0) > sd_margin,
        ratio,
        f"within 1 +- {sd_margin}",
        "square",
        f"{label}: sd ratio {names[0]}/{names[1]} is {ratio:.3f} ({sa['sd'][j]:.4g} vs "
        f"{sd:.4g}), outside 1 +- {sd_margin}",
    )
    for key in ("q05", "q95"):
        value = abs(sa[key][j] - sb[key][j]) / sd
        margin(
            f"{key} margin",
            value > quantile_margin,
            value,
            f"<= {quantile_margin} sd",
            key,
            f"{label}: the {key[1:]}% quantiles differ by {value:.3f} {names[1]} sd "
            f"({sa[key][j]:.4g} vs {sb[key][j]:.4g}), more than the margin "
            f"{quantile_margin} sd",
        )
    return checks, notes


def _joint_checks(st: _Statistics, settings) -> list[Check]:
    """The energy-distance test and the Mahalanobis second-moment z-test."""
    names, alpha = settings["names"], settings["alpha"]
    wider = "wider" if st.maha_a > st.maha_b else "narrower"
    return [
        Check(
            "energy distance",
            st.energy_p,
            f"p >= {alpha:g}",
            st.energy_p >= alpha,
            f"joint: energy-distance permutation test p-value {st.energy_p:.3g} (distance "
            f"{st.energy:.4g}, {settings['num_permutations']} permutations, "
            f"{st.energy_draws[0]} and {st.energy_draws[1]} ESS-thinned draws) is below alpha "
            f"{alpha:g}",
            kind="distribution",
        ),
        Check(
            "Mahalanobis second moment",
            st.z_maha,
            f"|z| <= {st.z_cut:.3g}",
            abs(st.z_maha) <= st.z_cut,
            f"joint: mean squared Mahalanobis distance under the {names[1]} mean and "
            f"covariance is {st.maha_a:.4g} ({names[0]}) against {st.maha_b:.4g} "
            f"({names[1]}), z = {st.z_maha:.2f} beyond {st.z_cut:.2f}: the {names[0]} draws "
            f"are {wider} overall",
            kind="distribution",
        ),
    ]


def _cause(names, gradients_passed) -> str:
    """What to look at when efficiency fails, given what the gradient check said."""
    if gradients_passed is True:
        return (
            "the gradient check passed in this run, so the gradient is not the cause; "
            f"look at {_OTHER_CAUSES}"
        )
    if gradients_passed is False:
        return (
            "the gradient check failed in this run, the likely cause (a wrong gradient that "
            "depends on the position only leaves the draws right and slows HMC down); "
            f"otherwise {_OTHER_CAUSES}"
        )
    return (
        "check the gradient (mcg.check_gradients, coupled chains: docs/diagnostics.md §2); "
        f"other causes: {_OTHER_CAUSES}"
    )


def _judge_efficiency(
    cus,
    ref,
    ea,
    eb,
    *,
    names,
    alpha,
    step_size_range,
    acceptance_tol,
    grads_per_draw_max,
    ess_per_grad_min,
    gradients_passed,
):
    """Rows of the efficiency table and the failures of the judged checks.

    Each judged metric gets a two-sided ``1 - alpha / k`` interval (``k`` judged checks,
    Bonferroni) from the spread between chains (:func:`_interval`), and fails only when
    the whole interval lies outside its acceptable range: a correct density (ratio 1,
    difference 0) fails a check with probability below ``alpha / (2 k)``, and the line
    with probability below ``alpha`` even at the edge of the ranges.
    """
    lo, hi = step_size_range
    pa, pb = _per_chain(cus, ea["grad_evals"]), _per_chain(ref, eb["grad_evals"])
    ranges = {
        "step_size": (lo, hi, f"ratio in [{lo:g}, {hi:g}]"),
        "acceptance": (-acceptance_tol, acceptance_tol, f"difference within {acceptance_tol:g}"),
        "grads_per_draw": (0.0, grads_per_draw_max, f"ratio <= {grads_per_draw_max:g}"),
        "ess_per_grad": (ess_per_grad_min, math.inf, f"ratio >= {ess_per_grad_min:g}"),
    }
    judgeable = [
        key
        for key in _JUDGED
        if ea[key] is not None
        and eb[key] is not None
        and pa[key] is not None
        and pb[key] is not None
    ]
    level = 1.0 - alpha / max(len(judgeable), 1)
    cause = _cause(names, gradients_passed)
    efficiency, failures = [], []
    for key, metric in _EFFICIENCY_ROWS:
        a, b = ea[key], eb[key]
        ratio = difference = interval = None
        if a is not None and b is not None and key not in _NO_RATIO:
            ratio = float(a / b) if b else None
        if key == "acceptance" and a is not None and b is not None:
            difference = float(a - b)
        requirement, ok = (ranges[key][2] if key in ranges else None), None
        if key in judgeable:
            log = key != "acceptance"
            interval = _interval(pa[key], pb[key], ratio if log else difference, level, log)
            low, high = ranges[key][:2]
            if interval is not None:
                ok = not (interval[1] < low or interval[0] > high)
            if ok is False:
                shown = f"{ratio:.3f}" if log else f"{difference:+.3f}"
                what = {
                    "step_size": f"adapted step size ratio {names[0]}/{names[1]} is {shown} "
                    f"({a:.4g} vs {b:.4g})",
                    "acceptance": f"mean acceptance differs by {shown} ({a:.3f} vs {b:.3f})",
                    "grads_per_draw": f"gradient evaluations per draw: {names[0]} needs {shown} "
                    f"times the {names[1]}'s ({a:.3g} vs {b:.3g})",
                    "ess_per_grad": f"bulk ESS per gradient evaluation is {a:.3g} against "
                    f"{b:.3g} ({shown} of the {names[1]}'s)",
                }[key]
                failures.append(
                    f"efficiency: {what}; its {level:.2%} interval "
                    f"[{interval[0]:.3g}, {interval[1]:.3g}] lies outside the requirement "
                    f"({requirement}): {cause}"
                )
        efficiency.append(
            {
                "metric": metric,
                "key": key,
                "custom": a,
                "reference": b,
                "ratio": ratio,
                "difference": difference,
                "interval": interval,
                "requirement": requirement,
                "passed": ok,
            }
        )
    return efficiency, failures, level


def write_report(report: ComparisonReport, out_dir, figures=True, *, max_panels=12) -> Path:
    """Write ``report.md`` (verdict, tables, failures, figures) into ``out_dir``.

    Parameters
    ----------
    report : ComparisonReport
        From :func:`compare_chains`.
    out_dir : str or path-like
        Directory to write into (created if missing).
    figures : bool
        Also write the PNG figures (:meth:`ComparisonReport.plot`) and link them.
    max_panels : int
        At most this many parameters in each figure.

    Returns
    -------
    pathlib.Path
        The path of ``report.md``.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> from mcmc_customgrad import _arviz
    >>> from mcmc_customgrad.diagnostics.compare import compare_chains, write_report
    >>> rng = np.random.default_rng(0)
    >>> run = lambda: _arviz.to_inference_data({"x": rng.normal(size=(4, 500, 2))}, {})
    >>> report = compare_chains(run(), run(), min_draws=500)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = write_report(report, tmp)
    ...     text = path.read_text()
    ...     pictures = sorted(p.name for p in path.parent.glob("*.png"))
    >>> print(text.splitlines()[2])  # doctest: +ELLIPSIS
    **PASSED: all 32 checks, custom (4 x 500 draws) against reference (4 x 500 draws), ...**
    >>> pictures
    ['densities.png', 'efficiency.png', 'ranks.png', 'traces.png']
    >>> all(f"]({name})" in text for name in pictures)
    True
    """
    if not isinstance(report, ComparisonReport):
        raise TypeError(
            f"write_report needs a ComparisonReport (from compare_chains), got "
            f"{type(report).__name__}"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = report.plot(out, max_panels=max_panels) if figures else []
    links = [os.path.relpath(p, out) for p in paths]
    path = out / "report.md"
    path.write_text(report.to_markdown(figures=links))
    return path
