"""Figures of a chain comparison, drawn with matplotlib from ArviZ's statistics.

Densities are ArviZ's kernel density estimates (through ``_arviz.kde``, the same on
ArviZ 0.23 and 1.x); rank and trace plots follow ArviZ's layout, drawn here so that the
figures do not depend on the plotting API, which changed in ArviZ 1.0.

Plots use matplotlib's object API (:class:`matplotlib.figure.Figure`), never ``pyplot``,
so they neither need a display nor change the global backend. Each function writes one
PNG file and returns its path.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullLocator

from .. import _arviz

__all__ = [
    "comparison_figures",
    "plot_densities",
    "plot_efficiency",
    "efficiency_entries",
    "efficiency_figure",
    "plot_ranks",
    "plot_traces",
]

COLORS = ("C0", "C1")  # custom, reference
DPI = 100


def _grid(k, ncols=3):
    ncols = max(1, min(ncols, k))
    return math.ceil(k / ncols), ncols


def _plot_kde(ax, values, *, label=None, color="C0"):
    grid, density = _arviz.kde(values)
    ax.plot(grid, density, color=color, label=label)
    if label is not None:
        ax.legend()


def _plot_rank(axes, columns: dict, colors):
    """Per-chain histograms of the pooled ranks, stacked (ArviZ's ``plot_rank`` layout)."""
    for ax, (label, draws) in zip(axes, columns.items(), strict=False):
        chains, n = draws.shape
        ranks = np.argsort(np.argsort(draws.ravel(), kind="stable"), kind="stable")
        ranks = ranks.reshape(chains, n)
        bins = max(2, min(20, n // 10))
        edges = np.linspace(0, chains * n, bins + 1)
        width = edges[1] - edges[0]
        for c in range(chains):
            counts, _ = np.histogram(ranks[c], bins=edges)
            height = 0.9 * counts / (2.0 * n / bins)  # uniform -> 0.45 of a row
            ax.bar(edges[:-1], height, width=width, bottom=c, align="edge", color=colors[c])
            ax.axhline(c + 0.45, color="k", lw=0.7, ls="--")
        ax.set(title=label, xlabel="rank (all chains)", ylabel="chain", xlim=(0, chains * n))
        ax.set_yticks(np.arange(chains) + 0.45, [str(c) for c in range(chains)])


def _plot_trace(axes, columns: dict, colors):
    """Per-chain densities (left) and draws (right), one row per label."""
    for (left, right), (label, draws) in zip(axes, columns.items(), strict=True):
        for c, chain in enumerate(draws):
            _plot_kde(left, chain, color=colors[c])
            right.plot(chain, color=colors[c], lw=0.5, alpha=0.7)
        left.set(title=label)
        left.set_yticks([])
        right.set(title=label, xlabel="draw")


def _hide_unused(axes, used):
    for ax in np.ravel(axes)[used:]:
        ax.set_visible(False)


def _note(k, total):
    return f" (first {k} of {total} parameters)" if k < total else ""


def plot_densities(custom, reference, labels, path, *, names=("custom", "reference"), total=None):
    """Overlaid marginal densities of ``(chain, draw, k)`` draws, one panel per label.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from mcmc_customgrad.diagnostics.plots import plot_densities
    >>> rng = np.random.default_rng(0)
    >>> a, b = rng.normal(size=(2, 2, 200, 1))
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = plot_densities(a, b, ["x"], pathlib.Path(tmp) / "d.png")
    ...     path.read_bytes()[1:4]
    b'PNG'
    """
    k = len(labels)
    nrows, ncols = _grid(k)
    fig = Figure(figsize=(3.6 * ncols, 2.6 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False).ravel())
    for j, (ax, label) in enumerate(zip(axes, labels, strict=False)):
        for draws, name, color in zip((custom, reference), names, COLORS, strict=True):
            _plot_kde(ax, draws[..., j], label=name if j == 0 else None, color=color)
        ax.set_title(label)
        ax.set_yticks([])
    _hide_unused(axes, k)
    fig.suptitle(
        f"Marginal densities: {names[0]} (blue) against {names[1]} (orange)" + _note(k, total or k)
    )
    fig.savefig(path, dpi=DPI)
    return Path(path)


def _pooled(custom, reference, labels):
    n = min(custom.shape[1], reference.shape[1])
    both = np.concatenate([custom[:, :n], reference[:, :n]])
    colors = [COLORS[0]] * custom.shape[0] + [COLORS[1]] * reference.shape[0]
    return {label: both[..., j] for j, label in enumerate(labels)}, colors


def _chains_note(custom, reference, names):
    a, b = custom.shape[0], reference.shape[0]
    return f"chains 0-{a - 1}: {names[0]} (blue), {a}-{a + b - 1}: {names[1]} (orange)"


def plot_ranks(custom, reference, labels, path, *, names=("custom", "reference")):
    """Rank plots of the pooled chains (custom then reference), one panel per label.

    Ranks are taken over both sides together, so a chain whose histogram is not flat
    samples a different distribution from the others.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from mcmc_customgrad.diagnostics.plots import plot_ranks
    >>> rng = np.random.default_rng(0)
    >>> a, b = rng.normal(size=(2, 2, 200, 1))
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = plot_ranks(a, b, ["x"], pathlib.Path(tmp) / "r.png")
    ...     path.read_bytes()[1:4]
    b'PNG'
    """
    columns, colors = _pooled(custom, reference, labels)
    k = len(labels)
    nrows, ncols = _grid(k, ncols=2)
    chains = len(colors)
    fig = Figure(figsize=(5.0 * ncols, (1.2 + 0.25 * chains) * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    _plot_rank(axes[:k], columns, colors)
    _hide_unused(axes, k)
    fig.suptitle("Rank plots of the pooled chains; " + _chains_note(custom, reference, names))
    fig.savefig(path, dpi=DPI)
    return Path(path)


def plot_traces(custom, reference, labels, path, *, names=("custom", "reference")):
    """Trace plots (per-chain densities and draws) of the pooled chains.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from mcmc_customgrad.diagnostics.plots import plot_traces
    >>> rng = np.random.default_rng(0)
    >>> a, b = rng.normal(size=(2, 2, 200, 1))
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = plot_traces(a, b, ["x"], pathlib.Path(tmp) / "t.png")
    ...     path.read_bytes()[1:4]
    b'PNG'
    """
    columns, colors = _pooled(custom, reference, labels)
    k = len(labels)
    fig = Figure(figsize=(11.0, 2.2 * k + 0.6), layout="constrained")
    axes = fig.subplots(k, 2, squeeze=False)
    _plot_trace(axes, columns, colors)
    fig.suptitle("Trace plots; " + _chains_note(custom, reference, names))
    fig.savefig(path, dpi=DPI)
    return Path(path)


#: Colours of a judged efficiency figure: passed, failed, not judged.
_VERDICT_COLORS = {True: "tab:green", False: "tab:red", None: "0.55"}
_RATIO_LABELS = {
    "step_size": "step size",
    "grads_per_draw": "gradient evals / draw",
    "ess_per_grad": "ESS / gradient eval",
    "ess_per_second": "ESS / second",
}


def _requirement_band(key, settings):
    """The acceptable range of a judged ratio, ``(low, high)``; None when not judged."""
    if key == "step_size":
        return tuple(settings.get("step_size_range", (0.8, 1.25)))
    if key == "grads_per_draw":
        return (0.0, settings.get("grads_per_draw_max", 1.25))
    if key == "ess_per_grad":
        return (settings.get("ess_per_grad_min", 0.8), math.inf)
    return None


def _forest(ax, entries, *, log, unit):
    """Draw one row per entry: requirement band, estimate and interval coloured by verdict.

    Returns the x-limits used.
    """
    values = [v for e in entries for v in (e["value"], *(e["interval"] or ())) if v is not None]
    values += [v for e in entries for v in (e["band"] or ()) if v is not None and np.isfinite(v)]
    values = [v for v in values if np.isfinite(v) and (v > 0 or not log)]
    lo, hi = min(values), max(values)
    if log:
        pad = (hi / lo) ** 0.08 if hi > lo else 1.25
        limits = (lo / pad, hi * pad)
        ax.set_xscale("log")
    else:
        pad = 0.08 * (hi - lo) if hi > lo else 0.05
        limits = (lo - pad, hi + pad)
    for y, e in enumerate(entries):
        if e["band"] is not None:
            low, high = max(e["band"][0], limits[0]), min(e["band"][1], limits[1])
            ax.fill_betweenx([y - 0.35, y + 0.35], low, high, color="tab:green", alpha=0.12, lw=0)
        color = _VERDICT_COLORS[e["passed"]]
        if e["interval"] is not None:
            ax.plot(e["interval"], [y, y], color=color, lw=2.5, solid_capstyle="butt")
        ax.plot([e["value"]], [y], "o", color=color, ms=7)
    ax.axvline(0.0 if not log else 1.0, color="k", lw=0.8)
    ax.set_xlim(limits)
    ax.set_ylim(-0.6, len(entries) - 0.4)
    verdicts = {True: "passed", False: "FAILED", None: "not judged"}
    ax.set_yticks(range(len(entries)), [f"{e['label']}\n{verdicts[e['passed']]}" for e in entries])
    for tick, e in zip(ax.get_yticklabels(), entries, strict=True):
        tick.set_color(_VERDICT_COLORS[e["passed"]] if e["passed"] is not True else "k")
    if log:
        # The requirements' bounds when they fit; powers of two on wide ranges.
        fine = limits[1] / limits[0] < 8
        ticks = (0.5, 0.8, 1.0, 1.25, 2.0) if fine else (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
        ticks = [t for t in ticks if limits[0] <= t <= limits[1]]
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.xaxis.set_minor_locator(NullLocator())
    ax.invert_yaxis()
    ax.set_xlabel(unit)
    return limits


def plot_efficiency(report, path, *, max_panels=12):
    """Bars of bulk and tail ESS per parameter, and the efficiency figures of a report.

    ``report`` is a :class:`~mcmc_customgrad.diagnostics.compare.ComparisonReport`. The
    middle panel shows each custom/reference ratio (step size, gradient evaluations per
    draw, ESS per gradient evaluation, ESS per second) as a dot with its interval, over
    its requirement (the shaded band); the right panel the difference of mean acceptance.
    Dots and intervals are green when the check passed, red when it failed and grey when
    the figure is not judged (ESS per second: timings are not comparable across
    machines and loads).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from mcmc_customgrad import _arviz
    >>> from mcmc_customgrad.diagnostics.compare import compare_chains
    >>> from mcmc_customgrad.diagnostics.plots import plot_efficiency
    >>> rng = np.random.default_rng(0)
    >>> run = lambda: _arviz.to_inference_data({"x": rng.normal(size=(4, 500))}, {})
    >>> report = compare_chains(run(), run(), min_draws=500)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = plot_efficiency(report, pathlib.Path(tmp) / "e.png")
    ...     path.read_bytes()[1:4]
    b'PNG'
    """
    fig = efficiency_figure(report, max_panels=max_panels)
    fig.savefig(path, dpi=DPI)
    return Path(path)


def efficiency_entries(report):
    """The rows of the efficiency panels, ``(ratios, acceptance)``.

    Each row is a dict: ``label``, ``value``, ``interval``, ``band`` (the requirement;
    None when not judged) and ``passed`` (None when not judged); ``acceptance`` is None
    when neither run recorded it.

    Examples
    --------
    >>> import numpy as np
    >>> from mcmc_customgrad import _arviz
    >>> from mcmc_customgrad.diagnostics.compare import compare_chains
    >>> rng = np.random.default_rng(0)
    >>> run = lambda: _arviz.to_inference_data({"x": rng.normal(size=(4, 500))}, {})
    >>> efficiency_entries(compare_chains(run(), run(), min_draws=500))
    ([], None)
    """
    by_key = {e["key"]: e for e in report.efficiency}
    ratios = []
    for key, label in _RATIO_LABELS.items():
        e = by_key.get(key)
        if e is None or e["ratio"] is None or not np.isfinite(e["ratio"]) or e["ratio"] <= 0:
            continue
        judged = e["passed"] is not None
        ratios.append(
            {
                "label": label,
                "value": e["ratio"],
                "interval": e.get("interval"),
                "band": _requirement_band(key, report.settings) if judged else None,
                "passed": e["passed"],
            }
        )
    accept, acceptance = by_key.get("acceptance"), None
    if accept is not None and accept["difference"] is not None:
        tol = report.settings.get("acceptance_tol", 0.05)
        acceptance = {
            "label": "acceptance",
            "value": accept["difference"],
            "interval": accept.get("interval"),
            "band": (-tol, tol) if accept["passed"] is not None else None,
            "passed": accept["passed"],
        }
    return ratios, acceptance


def efficiency_figure(report, *, max_panels=12) -> Figure:
    """The figure :func:`plot_efficiency` writes, unsaved (ESS bars, ratios, acceptance).

    Examples
    --------
    >>> import numpy as np
    >>> from mcmc_customgrad import _arviz
    >>> from mcmc_customgrad.diagnostics.compare import compare_chains
    >>> rng = np.random.default_rng(0)
    >>> run = lambda: _arviz.to_inference_data({"x": rng.normal(size=(4, 500))}, {})
    >>> len(efficiency_figure(compare_chains(run(), run(), min_draws=500)).axes)
    3
    """
    names = report.names
    rows = report.rows[:max_panels]
    fig = Figure(figsize=(13.0, 4.2), layout="constrained")
    left, middle, right = fig.subplots(1, 3, width_ratios=(2.2, 1.5, 0.9))
    x = np.arange(len(rows))
    width = 0.2
    bars = (
        ("ess_bulk_custom", f"bulk {names[0]}", COLORS[0], 1.0),
        ("ess_bulk_reference", f"bulk {names[1]}", COLORS[1], 1.0),
        ("ess_tail_custom", f"tail {names[0]}", COLORS[0], 0.5),
        ("ess_tail_reference", f"tail {names[1]}", COLORS[1], 0.5),
    )
    for i, (key, label, color, alpha) in enumerate(bars):
        left.bar(
            x + (i - 1.5) * width,
            [r[key] for r in rows],
            width,
            label=label,
            color=color,
            alpha=alpha,
        )
    left.axhline(report.settings["min_ess"], color="k", ls="--", lw=1, label="required")
    left.set_xticks(x, [r["parameter"] for r in rows], rotation=45 if len(rows) > 6 else 0)
    left.set_ylabel("effective sample size")
    left.set_title("ESS per parameter" + _note(len(rows), len(report.rows)))
    # Above the axes, so that no bar hides behind it.
    left.legend(fontsize="small", ncols=3, loc="lower left", bbox_to_anchor=(0.0, 1.08))

    entries, acceptance = efficiency_entries(report)
    if entries:
        _forest(middle, entries, log=True, unit=f"{names[0]} / {names[1]} (log scale)")
    else:
        middle.text(
            0.5,
            0.5,
            "no step size, gradient\ncounts or timings recorded",
            ha="center",
            transform=middle.transAxes,
        )
        middle.set_xticks([])
        middle.set_yticks([])
    level = report.settings.get("efficiency_level")
    middle.set_title("ratios" + (f", {level:.2%} intervals" if level else ""))

    if acceptance is not None:
        _forest(right, [acceptance], log=False, unit=f"{names[0]} - {names[1]}")
    else:
        right.text(0.5, 0.5, "no acceptance\nrecorded", ha="center", transform=right.transAxes)
        right.set_xticks([])
        right.set_yticks([])
    right.set_title("mean acceptance")
    return fig


def comparison_figures(custom, reference, labels, report, out_dir, *, max_panels=12):
    """All four figures of a comparison in ``out_dir``; returns their paths.

    ``custom`` and ``reference`` are ``(chain, draw, d)`` arrays whose last axis follows
    ``labels``; only the first ``max_panels`` parameters are drawn.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> from mcmc_customgrad import _arviz
    >>> from mcmc_customgrad.diagnostics.compare import compare_chains
    >>> rng = np.random.default_rng(0)
    >>> run = lambda: _arviz.to_inference_data({"x": rng.normal(size=(2, 200))}, {})
    >>> report = compare_chains(run(), run())
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     [p.name for p in report.plot(tmp)]
    ['densities.png', 'ranks.png', 'traces.png', 'efficiency.png']
    """
    if max_panels < 1:
        raise ValueError(f"max_panels must be at least 1, got {max_panels}")
    out = Path(out_dir)
    k = min(len(labels), int(max_panels))
    a, b, shown = custom[..., :k], reference[..., :k], list(labels[:k])
    names = report.names
    return [
        plot_densities(a, b, shown, out / "densities.png", names=names, total=len(labels)),
        plot_ranks(a, b, shown, out / "ranks.png", names=names),
        plot_traces(a, b, shown, out / "traces.png", names=names),
        plot_efficiency(report, out / "efficiency.png", max_panels=max_panels),
    ]
