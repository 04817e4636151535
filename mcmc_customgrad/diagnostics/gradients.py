"""Deterministic gradient checks: a custom-gradient density against a reference, FD and itself.

Validation protocol, section 1. At a set of points (an array, draws from a chain, or a
prior sampler) :func:`check_gradients` compares the log-density, its gradient and its
Hessian with a closed-form reference, the gradient and the Hessian with central finite
differences (always, also without a reference), forward-mode with reverse-mode
derivatives, and ``jit``/``vmap`` with eager evaluation; a second call at the same point
must give the same result (no hidden state).

Error measure
-------------
Every check compares a *custom* quantity ``c`` with an *expected* one ``r`` (the
reference, the finite-difference estimate, reverse mode, or the eager result) entry by
entry: ``abs = |c - r|`` and ``rel = abs / scale`` with

- values and gradient entries: ``scale = max(|r|, 1)``: relative above 1, absolute below
  (a gradient entry near 0 at the mode has no meaningful relative error);
- Hessian entries: ``scale_ij = max(|r_ij|, sqrt(|r_ii| |r_jj|), 1)``: an off-diagonal
  entry is measured on the scale of the curvatures it couples (``sqrt(|H_ii H_jj|)``
  bounds ``|H_ij|`` for a definite Hessian), so a small cross term next to large
  curvatures is not held to a tighter standard than the curvatures themselves;
- ``jit_vmap`` and ``repeat`` gradients: ``scale = max(|r|_inf, 1)`` over the point's
  gradient. These checks look for rounding-level differences, and rounding in a sum is
  relative to its largest terms, not to a component that cancels to near 0.

A check passes when every compared entry has ``rel <= tolerance``. An entry whose
expected value is finite but whose custom value is not (NaN, inf) fails with
``rel = inf`` and its own reason; entries whose expected value is not finite are skipped
and counted (the ``jit_vmap`` and ``repeat`` checks instead require identical non-finite
patterns).

Finite differences
------------------
Per coordinate the step is ``h_i = eps^(1/3) max(|x_i|, 1)`` (``eps`` the float64
machine epsilon, ``h ~ 6e-6``), which balances the ``O(h^2)`` truncation error of the
central difference ``D(h) = (f(x + h e_i) - f(x - h e_i)) / 2h`` against its
``O(eps |f| / h)`` rounding error. The truncation error ``c h^2`` is then removed by one
Richardson step, ``E(h) = (4 D(h) - D(2h)) / 3`` (error ``c' h^4``): on the library's
Kepler model at prior draws the plain ``D(h)`` is off by up to ``8e-6`` relative (large
third derivatives in the period), ``E`` by ``2e-8``. The gradient passes when

    |g_i - E_i| <= fd_rtol max(|E_i|, 1) + 4 eps |f(x)| / h_i + |E_i(h) - E_i(2h)| / 5

The second term is the rounding error of ``E``, which matters only when ``|f|`` is huge;
the third is three times the Richardson estimate ``|E(h) - E(2h)| / 15`` of the error
left in ``E(h)``, which matters only where the density's high derivatives are huge (the
Kepler model at periods a hundredth of the truth, where ``E`` is off by ``1e-5``
relative; the estimate matches the actual error there to within 5%). A wrong derivative
rule is off by ``O(1)`` while ``E(h)`` and ``E(2h)`` agree, so neither term hides it. The
Hessian is checked column by column against the same differences of the gradient, with
``fd_rtol scale_ij + 4 eps max(|g|_inf, 1) / h_j + |E_ij(h) - E_ij(2h)| / 5``. The
default ``fd_rtol = 1e-5`` leaves a margin of several hundred over what correct densities
with inner solves at ``1e-10`` show. Loosen it for inner solves run at a looser
tolerance (their noise ``delta`` in the value becomes ``delta / h`` in ``D``).

Jit, vmap and eager
-------------------
The three evaluate the same operations, but XLA fuses them differently (and ``vmap``
uses vectorised transcendental functions), so they agree to a few ulps of each
operation, amplified by the density's conditioning: below ``1e-14`` relative for most library
models, ``1e-13`` for the Kepler model at prior draws, ``1.4e-12`` at Stan-style initial
points whose period is far below the truth (phases ``2 pi t / P`` near 2,000 radians).
Hence ``jit_rtol = 1e-10``. Hidden state (a host callback that counts, a Python side
effect at trace time) shows as a difference of whatever size the state moves the
density. A second call at the same point must agree to ``repeat_rtol = 1e-12``: the
same compiled program on the same input is deterministic (bitwise, on CPU).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from .._args import check_scalar_density
from .._errors import surface_solver_errors
from .._order import after
from .._precision import float32_hint, warn_if_float32
from ..logdensity import Model
from ._report import Check, markdown_table, verdict_of

__all__ = ["GradientReport", "check_gradients"]

#: Default tolerances (relative errors as defined in the module notes), by check name.
TOLERANCES = {
    "value": 1e-8,
    "grad": 1e-6,
    "hessian": 1e-6,
    "grad_fd": 1e-5,
    "hessian_fd": 1e-5,
    "fwd_rev": 1e-8,
    "fwd_rev_hessian": 1e-8,
    "jit_vmap": 1e-10,
    "repeat": 1e-12,
}

_DESCRIPTIONS = {
    "value": "log-density vs reference",
    "grad": "gradient vs reference",
    "hessian": "Hessian vs reference",
    "grad_fd": "gradient vs finite differences",
    "hessian_fd": "Hessian vs finite differences of the gradient",
    "fwd_rev": "jacfwd vs grad",
    "fwd_rev_hessian": "hessian = jacfwd(jacrev) vs jacrev(grad)",
    "jit_vmap": "jit and vmap vs eager (value and gradient)",
    "repeat": "second call vs first call (value and gradient)",
}

_PLOT_FLOOR = 1e-17


# ----------------------------------------------------------------------------- report


@dataclass
class GradientReport:
    """What :func:`check_gradients` found: verdict, one row per check, per-parameter detail.

    Attributes
    ----------
    passed : bool
        Every check passed.
    failures : list of str
        One sentence per failed check (or per kind of non-finite result): the check, the
        worst parameter and point, the error and the tolerance.
    rows : list of dict
        One per check, keys ``check``, ``description``, ``points``, ``compared``,
        ``skipped``, ``max_abs_error``, ``max_rel_error`` (also under ``value``, the key
        the other reports use for the statistic), ``parameter`` (worst entry), ``point``
        (index of the worst point), ``threshold`` (tolerance on the relative error) and
        ``passed``.
    checks : list of Check
        The same checks as :class:`~mcmc_customgrad.diagnostics._report.Check` records
        (the worst relative error against its tolerance; ``message`` joins the check's
        failure sentences), which the verdict line counts.
    parameter_rows : list of dict
        One per flat coordinate: ``parameter`` and, per check, the largest relative error
        in that coordinate (for Hessian checks: in its row).
    max_abs_error, max_rel_error : dict
        Check name -> largest absolute / relative error over all points and entries.
    tolerances : dict
        Check name -> the tolerance used.
    points : numpy.ndarray
        ``(num_points, dim)`` the flat (unconstrained) points checked.
    labels : list of str
        One name per flat coordinate (``"x[0]"``).
    order : int
        1 (values, gradients) or 2 (also Hessians).
    source : str
        Where the points came from.
    values, grads : numpy.ndarray
        The custom log-density ``(num_points,)`` and gradient ``(num_points, dim)``.
    reference_values, reference_grads : numpy.ndarray or None
        The same for the reference (None without one).
    fd_grads : numpy.ndarray
        ``(num_points, dim)`` the Richardson-extrapolated finite-difference gradient.
    fd_grad_allowance : numpy.ndarray
        ``(num_points, dim)`` what the ``grad_fd`` check adds to
        ``fd_rtol max(|fd_grads|, 1)``: rounding and estimated truncation error.
    hessians, reference_hessians, fd_hessians : numpy.ndarray or None
        ``(num_points, dim, dim)`` at ``order=2`` (``fd_hessians[k, :, j]`` is the
        difference of the gradient along coordinate ``j``).
    """

    passed: bool
    failures: list[str]
    rows: list[dict]
    parameter_rows: list[dict]
    max_abs_error: dict[str, float]
    max_rel_error: dict[str, float]
    tolerances: dict[str, float]
    points: np.ndarray
    labels: list[str]
    order: int
    source: str
    values: np.ndarray
    grads: np.ndarray
    fd_grads: np.ndarray
    fd_grad_allowance: np.ndarray
    reference_values: np.ndarray | None = None
    reference_grads: np.ndarray | None = None
    hessians: np.ndarray | None = field(default=None, repr=False)
    reference_hessians: np.ndarray | None = field(default=None, repr=False)
    fd_hessians: np.ndarray | None = field(default=None, repr=False)
    checks: list = field(default_factory=list)

    @property
    def num_checks(self) -> int:
        """Number of checks run (rows)."""
        return len(self.rows)

    @property
    def table(self) -> str:
        """One row per check, as a Markdown table."""
        header = [
            "check",
            "what",
            "points",
            "entries",
            "max abs error",
            "max rel error",
            "worst parameter",
            "worst point",
            "tolerance (rel.)",
            "result",
        ]
        rows = [
            [
                r["check"],
                r["description"],
                r["points"],
                f"{r['compared']}" + (f" ({r['skipped']} skipped)" if r["skipped"] else ""),
                r["max_abs_error"],
                r["max_rel_error"],
                r["parameter"] or None,
                r["point"],
                f"{r['threshold']:g}",
                "ok" if r["passed"] else "FAIL",
            ]
            for r in self.rows
        ]
        return markdown_table(header, rows, digits=3, none="-")

    @property
    def parameter_table(self) -> str:
        """Largest relative error per parameter and check, as a Markdown table."""
        checks = [
            c for c in self.tolerances if any(r.get(c) is not None for r in self.parameter_rows)
        ]
        rows = [[r["parameter"], *(r[c] for c in checks)] for r in self.parameter_rows]
        return markdown_table(["parameter", *checks], rows, digits=3, none="-")

    def _verdict(self) -> str:
        what = (
            f"gradient checks (order {self.order}, {len(self.points)} points, "
            f"{len(self.labels)} parameters, {self.source})"
        )
        return verdict_of(self.checks, what)

    def __str__(self) -> str:
        parts = [self._verdict(), "", self.table]
        if self.failures:
            parts += ["", *(f"- {f}" for f in self.failures)]
        return "\n".join(parts)

    def to_markdown(self) -> str:
        """A Markdown section: heading, verdict, both tables and the failures."""
        parts = ["## Gradient checks", "", f"**{self._verdict()}**", "", self.table]
        parts += ["", "Largest relative error per parameter:", "", self.parameter_table]
        if self.failures:
            parts += ["", "Failures:", "", *(f"- {f}" for f in self.failures)]
        return "\n".join(parts) + "\n"

    def plot(self, path) -> str:
        """Write a PNG: gradient error against gradient size, per coordinate, log-log.

        One marker per point and coordinate: ``|g - g_ref|`` against ``|g_ref|`` for the
        reference (when there is one) and ``|g - g_fd|`` against ``|g_fd|`` for finite
        differences, with each tolerance line ``rtol max(|g_ref|, 1)`` (the
        finite-difference check's allowance for rounding and truncation varies per entry
        and is left out of its line). Entries over tolerance (allowance included) are
        drawn as crosses; exact zeros at ``1e-17``; non-finite errors are left out and
        counted in the legend.

        Parameters
        ----------
        path : str or path-like
            Where to write the PNG.

        Returns
        -------
        str
            ``path``.
        """
        import textwrap

        from matplotlib.figure import Figure

        fig = Figure(figsize=(7, 5), layout="constrained")
        ax = fig.subplots()
        zero = np.zeros_like(np.asarray(self.grads, float))
        series = [
            ("grad_fd", self.fd_grads, self.fd_grad_allowance, "tab:blue", "o", "+"),
        ]
        if self.reference_grads is not None:
            series.insert(0, ("grad", self.reference_grads, zero, "tab:green", "s", "x"))
        lo, hi = np.inf, 0.0
        for check, expected, allowance, color, marker, cross in series:
            ref = np.abs(np.asarray(expected, float)).ravel()
            err = np.abs(np.asarray(self.grads, float) - np.asarray(expected, float)).ravel()
            ok = np.isfinite(ref) & np.isfinite(err)
            tol = self.tolerances[check]
            over = (err > tol * np.maximum(ref, 1.0) + np.asarray(allowance).ravel())[ok]
            ref, err = np.maximum(ref[ok], _PLOT_FLOOR), np.maximum(err[ok], _PLOT_FLOOR)
            what = "vs reference" if check == "grad" else "vs finite differences"
            label = f"{check}: {what}" + (f" ({(~ok).sum()} non-finite)" if (~ok).any() else "")
            ax.scatter(ref[~over], err[~over], s=14, c=color, marker=marker, alpha=0.6, label=label)
            if over.any():
                ax.scatter(
                    ref[over], err[over], s=40, c=color, marker=cross, label=f"{check}: over"
                )
            if ref.size:
                lo, hi = min(lo, ref.min()), max(hi, ref.max())
        if not np.isfinite(lo):
            lo, hi = 1e-3, 1.0
        grid = np.geomspace(min(lo, 1e-3), max(hi, 10.0), 200)
        for check, _, _, color, _, _ in series:
            tol = self.tolerances[check]
            ax.plot(
                grid,
                tol * np.maximum(grid, 1.0),
                color=color,
                ls="--",
                lw=1,
                label=f"{check} tolerance {tol:g} max(|g|, 1)",
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("|expected gradient entry|")
        ax.set_ylabel("|custom - expected|")
        # The verdict names the points' source (report.source), as the printed report does.
        ax.set_title(textwrap.fill(self._verdict(), 110), fontsize=8)
        ax.legend(fontsize=7, loc="best")
        fig.savefig(path, dpi=100)
        return str(path)


# ----------------------------------------------------------------------------- input


def _as_density(obj, which):
    if isinstance(obj, Model):
        return obj.logdensity
    if callable(obj):
        return obj
    raise TypeError(
        f"check_gradients: {which} must be an mcg.Model or a callable logdensity(x) -> scalar "
        f"on a flat array, got {type(obj).__name__}."
    )


def _labels(model, dim):
    if model is None:
        return [f"x[{i}]" for i in range(dim)]
    return model.labels


def _check_scalar(fn, dim, dtype, which):
    check_scalar_density(
        "check_gradients",
        which,
        fn,
        jax.ShapeDtypeStruct((dim,), dtype),
        f"on a flat {np.dtype(dtype).name}[{dim}] vector",
        "Does it take the flat layout of the points (for an mcg.Model: the unconstrained vector)?",
    )


def _to_flat(point, model, dim, what):
    if isinstance(point, Mapping):
        if model is None:
            raise TypeError(
                f"check_gradients: {what} is a dict of constrained values, but fn is not an "
                "mcg.Model that could map it to a flat vector. Pass the model as fn, or give "
                "flat arrays."
            )
        return np.asarray(model.to_unconstrained(point))
    try:
        flat = np.asarray(point, dtype=float)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"check_gradients: {what} must be a flat float array"
            + (" or a dict of constrained values" if model is not None else "")
            + f", got {type(point).__name__}."
        ) from err
    if flat.ndim != 1 or (dim is not None and flat.shape[0] != dim):
        raise ValueError(
            f"check_gradients: {what} has shape {flat.shape}; expected a flat vector of "
            f"shape ({dim if dim is not None else 'dim'},)"
            + (" (the model's unconstrained layout)" if model is not None else "")
            + "."
        )
    return flat


def _is_inference_data(obj) -> bool:
    from .. import _arviz

    return _arviz.is_inference_data(obj)


def _from_inference_data(idata, model, num_points, seed):
    if model is None:
        raise TypeError(
            "check_gradients: points is an InferenceData, whose posterior holds constrained "
            "values by parameter name; fn must be an mcg.Model to map them to the flat "
            "unconstrained vector. Pass the model as fn, or pass an array of flat points."
        )
    posterior = idata.posterior
    missing = [n for n in model.names if n not in posterior]
    if missing:
        raise ValueError(
            f"check_gradients: the InferenceData's posterior lacks {missing}; the model has "
            f"{list(model.names)} (posterior: {list(posterior.data_vars)})."
        )
    draws = {}
    for name, c in model.constraints.items():
        values = np.asarray(posterior[name].values, dtype=float)
        if values.ndim < 2 or values.shape[2:] != c.shape:
            raise ValueError(
                f"check_gradients: posterior[{name!r}] has shape {values.shape}; expected "
                f"(chain, draw) + {c.shape}."
            )
        draws[name] = values.reshape((-1, *c.shape))
    total = next(iter(draws.values())).shape[0]
    if total == 0:
        raise ValueError("check_gradients: the InferenceData's posterior has no draws.")
    n = min(num_points, total)
    # Stratified: one draw from each of n equal slices of the (chain, draw) order, so the
    # points spread over every chain and over each chain's length.
    rng = np.random.default_rng(seed)
    edges = np.linspace(0, total, n + 1)
    idx = np.minimum((edges[:-1] + rng.uniform(size=n) * np.diff(edges)).astype(int), total - 1)
    flat = [
        _to_flat({k: v[i] for k, v in draws.items()}, model, model.dim, f"draw {i}") for i in idx
    ]
    num_draws = int(posterior.sizes["draw"]) if "draw" in posterior.sizes else total
    chains = sorted({int(i) // num_draws for i in idx})
    return np.stack(flat), f"{n} of {total} posterior draws from chains {chains}"


def _resolve_points(points, model, num_points, seed):
    if _is_inference_data(points):
        return _from_inference_data(points, model, num_points, seed)
    if callable(points) and not isinstance(points, Model):
        keys = jax.random.split(jax.random.key(seed), num_points)
        dim = None if model is None else model.dim
        flat = []
        for k in range(num_points):
            x = _to_flat(points(keys[k]), model, dim, f"sampler draw {k}")
            dim = x.shape[0]
            flat.append(x)
        return np.stack(flat), f"{num_points} sampler draws (seed {seed})"
    if isinstance(points, Model):
        raise TypeError(
            "check_gradients: points is an mcg.Model; pass the model as fn and the points as "
            "an array, an InferenceData or a sampler(key) -> point."
        )
    try:
        x = np.asarray(points, dtype=float)
    except (TypeError, ValueError) as err:
        raise TypeError(
            "check_gradients: points must be an array of shape (num_points, dim) or (dim,), "
            f"an InferenceData or a sampler(key) -> point, got {type(points).__name__}."
        ) from err
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(
            "check_gradients: points must have shape (num_points, dim) or (dim,) with at "
            f"least one point and one coordinate, got shape {np.shape(points)}."
        )
    return x, f"{x.shape[0]} given points"


def _check_options(order, num_points, seed, tolerances):
    if isinstance(order, bool) or order not in (1, 2):
        raise ValueError(f"check_gradients: order must be 1 or 2, got {order!r}.")
    if isinstance(num_points, bool) or not isinstance(num_points, int | np.integer):
        raise ValueError(
            f"check_gradients: num_points must be an integer >= 1, got {num_points!r}."
        )
    if num_points < 1:
        raise ValueError(f"check_gradients: num_points must be >= 1, got {num_points}.")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TypeError(f"check_gradients: seed must be an int, got {seed!r}.")
    for name, tol in tolerances.items():
        if not (isinstance(tol, int | float) and not isinstance(tol, bool) and tol > 0):
            raise ValueError(f"check_gradients: {name} must be a positive number, got {tol!r}.")


# ----------------------------------------------------------------------------- compare


class _Result:
    """Entry-wise errors of one check, accumulated over comparisons."""

    def __init__(self, name, tol, num_points, labels):
        self.name, self.tol, self.labels, self.num_points = name, tol, labels, num_points
        self.abs, self.rel, self.custom, self.expected = [], [], [], []
        self.points, self.columns, self.labels_seen = [], [], []
        self.skipped = 0
        self.nonfinite = []  # (point, label, custom, expected)
        self.per_param = np.full(len(labels), -np.inf)

    def add(self, custom, expected, scale, *, nan_equal=False):
        """Compare ``custom`` with ``expected``, both ``(num_points, *entry_shape)``."""
        c = np.asarray(custom, dtype=float)
        r = np.asarray(expected, dtype=float)
        scale = np.broadcast_to(np.asarray(scale, dtype=float), r.shape)
        fin_r, fin_c = np.isfinite(r), np.isfinite(c)
        with np.errstate(invalid="ignore", over="ignore"):
            abs_err = np.where(fin_r & fin_c, np.abs(c - r), np.inf)
            rel = abs_err / scale
        same = np.zeros(r.shape, bool)
        if nan_equal:  # both sides must be non-finite in the same way
            same = ~fin_r & ~fin_c & ((np.isnan(r) & np.isnan(c)) | (r == c))
            abs_err, rel = np.where(same, 0.0, abs_err), np.where(same, 0.0, rel)
            skip = np.zeros(r.shape, bool)
        else:  # nothing to compare with
            skip = ~fin_r
            self.skipped += int(skip.sum())
        columns = [self._label(e) for e in np.ndindex(r.shape[1:])]
        mismatch = ~skip & ~same & ~(fin_r & fin_c)
        for idx in zip(*np.nonzero(mismatch), strict=True):
            label = columns[int(np.ravel_multi_index(idx[1:], r.shape[1:])) if r.ndim > 1 else 0]
            self.nonfinite.append((int(idx[0]), label, c[idx], r[idx]))
        rel = np.where(skip, np.nan, rel)
        width = len(columns)
        self.abs.append(np.where(skip, np.nan, abs_err).ravel())
        self.rel.append(rel.ravel())
        self.custom.append(c.ravel())
        self.expected.append(r.ravel())
        self.points.append(np.repeat(np.arange(len(r)), width))
        self.columns.append(np.tile(np.arange(width), len(r)) + len(self.labels_seen))
        self.labels_seen += columns
        if r.ndim > 1:  # per parameter: its gradient entry, or its Hessian row
            per = np.where(np.isnan(rel), -np.inf, rel).reshape(len(r), r.shape[1], -1)
            self.per_param = np.maximum(self.per_param, per.max(axis=(0, 2)))

    def _label(self, idx):
        if len(idx) == 0:
            return "log-density"
        if len(idx) == 1:
            return self.labels[idx[0]]
        return f"({self.labels[idx[0]]}, {self.labels[idx[1]]})"

    def summarise(self):
        """The check's row and its failures."""
        rel, abs_err = np.concatenate(self.rel), np.concatenate(self.abs)
        points, columns = np.concatenate(self.points), np.concatenate(self.columns)
        compared = int(np.sum(~np.isnan(rel)))
        row = {
            "check": self.name,
            "description": _DESCRIPTIONS[self.name],
            "points": self.num_points,
            "compared": compared,
            "skipped": self.skipped,
            "max_abs_error": None,
            "max_rel_error": None,
            "value": None,
            "parameter": None,
            "point": None,
            "threshold": self.tol,
            "passed": True,
        }
        failures = []
        if compared:
            ranked = np.where(np.isnan(rel), -np.inf, rel)
            j = int(np.argmax(ranked))
            row.update(
                value=float(ranked[j]),
                max_rel_error=float(ranked[j]),
                max_abs_error=float(np.nanmax(abs_err)),
                parameter=self.labels_seen[columns[j]],
                point=int(points[j]),
            )
            finite = np.where(np.isfinite(rel), rel, -np.inf)
            over = int(np.sum(finite > self.tol))
            if over:
                j = int(np.argmax(finite))
                c, r = np.concatenate(self.custom)[j], np.concatenate(self.expected)[j]
                failures.append(
                    f"{self.name} ({_DESCRIPTIONS[self.name]}): relative error "
                    f"{finite[j]:.3g} > tolerance {self.tol:g} at "
                    f"{self.labels_seen[columns[j]]}, point {int(points[j])} (custom {c:.10g}, "
                    f"expected {r:.10g}); {over} of {compared} entries over tolerance."
                )
        if not compared and self.skipped:
            failures.append(
                f"{self.name} ({_DESCRIPTIONS[self.name]}): nothing compared: the expected "
                f"value is not finite at every entry ({self.skipped} skipped); the density "
                "or its derivatives are NaN or infinite at all the points (outside the "
                "support, or a failed inner solve everywhere?)"
            )
        if self.nonfinite:
            k, label, c, r = self.nonfinite[0]
            what = (
                f"custom {_name_nonfinite(c)} where the expected value is finite ({r:.10g})"
                if np.isfinite(r)
                else f"custom {c:.10g} where the expected value is {_name_nonfinite(r)}"
            )
            failures.append(
                f"{self.name} ({_DESCRIPTIONS[self.name]}): non-finite result: {what}, at "
                f"{label}, point {k}; {len(self.nonfinite)} such entries."
            )
        row["passed"] = not failures
        return row, failures


def _checked_points(points, model, reference, num_points, seed):
    """The points as a float ``(n, dim)`` array and where they came from, checked."""
    x_all, source = _resolve_points(points, model, num_points, seed)
    dim = model.dim if model is not None else x_all.shape[1]
    if x_all.shape[1] != dim:
        raise ValueError(
            f"check_gradients: points have dimension {x_all.shape[1]}, expected {dim} (the "
            "model's flat unconstrained vector; use model.to_unconstrained or pass an "
            "InferenceData or a sampler of constrained dicts)."
        )
    if isinstance(reference, Model) and reference.dim != dim:
        raise ValueError(
            f"check_gradients: reference has dimension {reference.dim}, expected {dim} (the "
            "dimension of fn and the points): both must use the same flat layout."
        )
    if not np.all(np.isfinite(x_all)):
        bad = sorted({int(k) for k in np.nonzero(~np.isfinite(x_all))[0]})
        raise ValueError(f"check_gradients: points {bad} have non-finite coordinates.")
    return np.asarray(x_all, dtype=jnp.result_type(float)), source


def _per_point(f, x_all, order, eps) -> dict:
    """Point by point: jitted and eager values and gradients, and finite differences.

    The differences go through the jitted function (with their rounding allowances); a
    second jitted pass, and an eager call at the first point, feed the repeatability
    check.
    """
    n, dim = x_all.shape
    vg_jit = partial(_value_and_grad_jit, f)
    vg_eager = jax.value_and_grad(f)
    out = {
        "jit_v": np.empty(n),
        "jit_g": np.empty((n, dim)),
        "eager_v": np.empty(n),
        "eager_g": np.empty((n, dim)),
        "fd_grad": np.empty((n, dim)),
        "fd_hess": np.empty((n, dim, dim)) if order >= 2 else None,
        "grad_allow": np.empty((n, dim)),
        "hess_allow": np.empty((n, dim, dim)),
        "again_v": np.empty(n),
        "again_g": np.empty((n, dim)),
    }
    for k in range(n):
        v, g = vg_jit(x_all[k])
        out["jit_v"][k], out["jit_g"][k] = float(v), np.asarray(g)
        v, g = vg_eager(jnp.asarray(x_all[k]))
        out["eager_v"][k], out["eager_g"][k] = float(v), np.asarray(g)
        fg, fh, out["grad_allow"][k], out["hess_allow"][k] = _finite_differences(
            vg_jit, x_all[k].copy(), out["jit_v"][k], out["jit_g"][k], order, eps
        )
        out["fd_grad"][k] = fg
        if order >= 2:
            out["fd_hess"][k] = fh
    for k in range(n):
        v, g = vg_jit(x_all[k])
        out["again_v"][k], out["again_g"][k] = float(v), np.asarray(g)
    v, g = vg_eager(jnp.asarray(x_all[0]))
    out["eager0_v"], out["eager0_g"] = float(v), np.asarray(g)
    return out


def _name_nonfinite(value) -> str:
    """``NaN``, ``inf`` or ``-inf`` as users write them (Python prints ``nan``)."""
    value = float(value)
    return "NaN" if np.isnan(value) else f"{value:g}"


def _vector_scale(r):
    return np.maximum(np.abs(np.asarray(r, dtype=float)), 1.0)


def _norm_scale(r):
    """Per point, ``max(|r|_inf, 1)`` over its finite entries: the scale of rounding."""
    r = np.abs(np.asarray(r, dtype=float))
    size = np.max(np.where(np.isfinite(r), r, 0.0), axis=-1, keepdims=True)
    return np.broadcast_to(np.maximum(size, 1.0), r.shape)


def _hessian_scale(r):
    r = np.abs(np.asarray(r, dtype=float))
    d = np.diagonal(r, axis1=-2, axis2=-1)
    cross = np.sqrt(d[..., :, None] * d[..., None, :])
    return np.maximum(np.maximum(r, np.where(np.isfinite(cross), cross, 0.0)), 1.0)


# ----------------------------------------------------------------------------- evaluation


class _ByIdentity:
    """A callable that cannot be hashed, made hashable by identity (for a static argument)."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, x):
        return self.fn(x)


def _static(fn):
    try:
        hash(fn)
    except TypeError:
        return _ByIdentity(fn)
    return fn


@partial(jax.jit, static_argnums=(0, 1, 2))
def _evaluate(fn, order, custom, xs):
    """Everything needed at the points, ``vmap``-ed: one compile per density and shape.

    ``fn`` is a static argument, so a second check of the same density (a Model's bound
    ``logdensity`` compares equal to itself) at as many points reuses the program; JAX's
    cache holds it until :func:`~mcmc_customgrad.clear_caches`.
    """

    def one(x):
        # Each piece starts once the previous ones are done (`after`): independent, XLA:CPU
        # would run their batched solves at once, which can deadlock jaxlib 0.10's
        # batched LAPACK kernels on a 2-thread pool.
        value, grad = jax.value_and_grad(fn)(x)
        out = {"value": value, "grad": grad}
        if custom:
            out["grad_fwd"] = jax.jacfwd(fn)(after(x, out))
        if order >= 2:
            # jax.hessian is jacfwd(jacrev(fn)): forward over reverse, for a scalar fn the
            # same program as jacfwd(grad(fn)), so it is not traced twice.
            out["hessian"] = jax.hessian(fn)(after(x, out))
            if custom:
                out["hess_rev"] = jax.jacrev(jax.grad(fn))(after(x, out))
        return out

    return jax.vmap(one)(xs)


@partial(jax.jit, static_argnums=0)
def _value_and_grad_jit(fn, x):
    """``jax.jit(jax.value_and_grad(fn))`` at one point, cached per ``fn``."""
    return jax.value_and_grad(fn)(x)


def _finite_differences(value_and_grad, x, f0, g0, order, eps):
    """Richardson-extrapolated central differences of the value (and of the gradient).

    Returns the estimates (gradient, Hessian columns) and the allowances added to the
    tolerance: rounding (``4 eps |f| / h``) plus the estimated remaining truncation error.
    """
    dim = x.shape[0]
    h = eps ** (1 / 3) * np.maximum(np.abs(x), 1.0)
    d_value = np.empty((3, dim))
    d_grad = np.zeros((3, dim, dim))
    steps = np.empty(dim)
    for i in range(dim):
        for s, mult in enumerate((1.0, 2.0, 4.0)):
            xp, xm = x.copy(), x.copy()
            xp[i] += mult * h[i]
            xm[i] -= mult * h[i]
            width = xp[i] - xm[i]  # the step actually taken, after rounding
            vp, gp = value_and_grad(xp)
            vm, gm = value_and_grad(xm)
            d_value[s, i] = (float(vp) - float(vm)) / width
            if order >= 2:
                d_grad[s, :, i] = (np.asarray(gp) - np.asarray(gm)) / width
            if s == 0:
                steps[i] = width / 2
    with np.errstate(invalid="ignore", over="ignore"):
        # E(h) = (4 D(h) - D(2h)) / 3 is off by c h^4, so E(h) - E(2h) = 15 c h^4: a
        # fifth of it is three times the estimated error of E(h).
        e_value = (4 * d_value[:2] - d_value[1:]) / 3
        e_grad = (4 * d_grad[:2] - d_grad[1:]) / 3
        grad_trunc = np.abs(e_value[0] - e_value[1]) / 5
        hess_trunc = np.abs(e_grad[0] - e_grad[1]) / 5
    grad_round = 4 * eps * abs(float(f0)) / steps if np.isfinite(f0) else np.zeros(dim)
    g_inf = float(np.max(np.abs(g0))) if np.all(np.isfinite(g0)) else 0.0
    hess_round = 4 * eps * max(g_inf, 1.0) / steps
    grad_allow = grad_round + np.where(np.isfinite(grad_trunc), grad_trunc, 0.0)
    hess_allow = hess_round[None, :] + np.where(np.isfinite(hess_trunc), hess_trunc, 0.0)
    fd_hess = e_grad[0] if order >= 2 else None
    return e_value[0], fd_hess, grad_allow, hess_allow


@surface_solver_errors
def check_gradients(
    fn,
    points,
    reference=None,
    order: int = 2,
    *,
    num_points: int = 20,
    seed: int = 0,
    value_rtol: float = TOLERANCES["value"],
    grad_rtol: float = TOLERANCES["grad"],
    hessian_rtol: float = TOLERANCES["hessian"],
    fd_rtol: float = TOLERANCES["grad_fd"],
    fwd_rev_rtol: float = TOLERANCES["fwd_rev"],
    jit_rtol: float = TOLERANCES["jit_vmap"],
    repeat_rtol: float = TOLERANCES["repeat"],
) -> GradientReport:
    """Check a custom-gradient log-density at many points: the deterministic checks.

    At every point (validation protocol, section 1):

    1. ``value``: the log-density against the reference (``value_rtol``, 1e-8);
    2. ``grad``: the gradient against the reference's (``grad_rtol``, 1e-6: inner solves
       at 1e-10);
    3. ``hessian`` (``order=2``): ``jax.hessian`` against the reference's
       (``hessian_rtol``, 1e-6), which catches envelope-theorem shortcuts that are
       right at first order only;
    4. ``grad_fd``, and ``hessian_fd`` at ``order=2``: the gradient against central finite
       differences of the value, the Hessian against finite differences of the gradient
       (``fd_rtol``, 1e-5), always, also without a reference;
    5. ``fwd_rev``: ``jax.jacfwd`` against ``jax.grad``; ``fwd_rev_hessian`` at
       ``order=2``: ``jax.hessian`` (forward over reverse, ``jacfwd(jacrev(fn))``, the
       same program as ``jacfwd(grad(fn))``) against ``jacrev(grad(fn))`` (reverse over
       reverse) (``fwd_rev_rtol``, 1e-8): the custom rule and its transpose agree;
    6. ``jit_vmap``: ``jit(value_and_grad(fn))`` per point and its ``vmap`` over all
       points against eager evaluation (``jit_rtol``, 1e-10: XLA changes the last bits,
       amplified by the density's conditioning); ``repeat``: a second jitted call at
       each point (after every other evaluation) and a second eager call at the first
       point against the first (``repeat_rtol``, 1e-12): no hidden state.

    The error measures (relative above 1, absolute below; Hessian entries on the scale
    ``max(|H_ij|, sqrt(|H_ii H_jj|), 1)``), the finite-difference scheme (step
    ``eps^(1/3) max(|x_i|, 1)``, one Richardson step, allowances for rounding and for the
    estimated truncation error) and the reasons for each default tolerance are in the
    notes of :mod:`mcmc_customgrad.diagnostics.gradients`. Use float64
    (``jax_enable_x64``): the default tolerances are out of reach in float32.

    Parameters
    ----------
    fn : Model or callable
        The density to check: an :class:`~mcmc_customgrad.Model` (its flat unconstrained
        ``Model.logdensity`` is checked) or ``fn(x) -> scalar`` on a flat array.
    points : array, InferenceData or callable
        Where to check, in ``fn``'s flat layout (unconstrained for a Model):

        - an array ``(num_points, dim)`` or ``(dim,)``: every row is used;
        - an ``arviz.InferenceData`` (needs ``fn`` to be a Model): ``num_points``
          posterior draws, one from each of ``num_points`` equal slices of the
          ``(chain, draw)`` order (so spread over every chain), at a random place in the
          slice fixed by ``seed``, mapped with ``Model.to_unconstrained``;
        - a sampler ``sampler(key) -> point`` (a flat array, or a dict of constrained
          values when ``fn`` is a Model), called with each of
          ``jax.random.split(jax.random.key(seed), num_points)``.
    reference : Model or callable, optional
        The same density in closed form, on the same flat layout. Without it the checks
        against finite differences and of ``fn``'s self-consistency still run.
    order : {1, 2}
        2 (default) also checks Hessians.
    num_points : int
        Points drawn from an InferenceData or a sampler (default 20).
    seed : int
        Fixes the draws picked from an InferenceData and the sampler's keys.
    value_rtol, grad_rtol, hessian_rtol, fd_rtol, fwd_rev_rtol, jit_rtol, repeat_rtol : float
        Tolerances on the relative errors (``fd_rtol`` for ``grad_fd`` and
        ``hessian_fd``, ``fwd_rev_rtol`` for ``fwd_rev`` and ``fwd_rev_hessian``).

    Returns
    -------
    GradientReport
        ``passed``, ``failures``, ``rows`` (one per check), ``table``,
        ``max_abs_error`` and ``max_rel_error`` by check name, the points and every
        quantity compared; ``report.plot(path)`` writes a PNG.

    Raises
    ------
    TypeError
        ``fn`` or ``reference`` is not a Model or callable; an InferenceData or dict points
        without a Model.
    ValueError
        Points of the wrong dimension, a density that does not return a real scalar,
        ``num_points < 1``, ``order`` not 1 or 2, non-finite points.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> jax.config.update("jax_enable_x64", True)
    >>> from mcmc_customgrad.diagnostics.gradients import check_gradients
    >>> def logdensity(x):
    ...     return -0.5 * jnp.sum(x**2) - jnp.sum(jnp.log1p(x**2))
    >>> points = jnp.array([[0.3, -1.2], [2.0, 0.5], [-0.7, 0.0]])
    >>> report = check_gradients(logdensity, points)
    >>> report.passed, report.max_rel_error["grad_fd"] < 1e-8
    (True, True)

    A straight-through derivative (``d softplus = 1``) is wrong, and finite differences
    alone tell:

    >>> @jax.custom_jvp
    ... def softplus(x):
    ...     return jnp.logaddexp(x, 0.0)
    >>> _ = softplus.defjvp(lambda primals, tangents: (softplus(*primals), tangents[0]))
    >>> bad = check_gradients(lambda x: -jnp.sum(softplus(x)), points, order=1)
    >>> bad.passed, [r["check"] for r in bad.rows if not r["passed"]]
    (False, ['grad_fd'])
    """
    f = _static(_as_density(fn, "fn"))
    f_ref = None if reference is None else _static(_as_density(reference, "reference"))
    tolerances = {
        "value_rtol": value_rtol,
        "grad_rtol": grad_rtol,
        "hessian_rtol": hessian_rtol,
        "fd_rtol": fd_rtol,
        "fwd_rev_rtol": fwd_rev_rtol,
        "jit_rtol": jit_rtol,
        "repeat_rtol": repeat_rtol,
    }
    warn_if_float32("mcg.check_gradients", stacklevel=4)
    _check_options(order, num_points, seed, tolerances)
    order, num_points = int(order), int(num_points)
    model = fn if isinstance(fn, Model) else None

    x_all, source = _checked_points(points, model, reference, num_points, seed)
    dim, dtype = x_all.shape[1], x_all.dtype
    eps = float(np.finfo(dtype).eps)
    _check_scalar(f, dim, dtype, "fn")
    if f_ref is not None:
        _check_scalar(f_ref, dim, dtype, "reference")
    labels = _labels(model, dim)
    n = x_all.shape[0]

    # Everything at the points, batched: one compile per density.
    out = jax.tree.map(np.asarray, _evaluate(f, order, True, x_all))
    ref = None if f_ref is None else jax.tree.map(np.asarray, _evaluate(f_ref, order, False, x_all))
    pp = _per_point(f, x_all, order, eps)
    jit_v, jit_g, eager_v, eager_g = pp["jit_v"], pp["jit_g"], pp["eager_v"], pp["eager_g"]
    fd_grad, fd_hess = pp["fd_grad"], pp["fd_hess"]
    grad_allow, hess_allow = pp["grad_allow"], pp["hess_allow"]
    again_v, again_g = pp["again_v"], pp["again_g"]
    eager0_v, eager0_g = pp["eager0_v"], pp["eager0_g"]

    def result(name, tol):
        return _Result(name, tol, n, labels)

    results = []
    if ref is not None:
        r = result("value", value_rtol)
        r.add(out["value"], ref["value"], _vector_scale(ref["value"]))
        results.append(r)
        r = result("grad", grad_rtol)
        r.add(out["grad"], ref["grad"], _vector_scale(ref["grad"]))
        results.append(r)
        if order >= 2:
            r = result("hessian", hessian_rtol)
            r.add(out["hessian"], ref["hessian"], _hessian_scale(ref["hessian"]))
            results.append(r)
    r = result("grad_fd", fd_rtol)
    r.add(out["grad"], fd_grad, _vector_scale(fd_grad) + grad_allow / fd_rtol)
    results.append(r)
    if order >= 2:
        r = result("hessian_fd", fd_rtol)
        r.add(out["hessian"], fd_hess, _hessian_scale(fd_hess) + hess_allow / fd_rtol)
        results.append(r)
    r = result("fwd_rev", fwd_rev_rtol)
    r.add(out["grad_fwd"], out["grad"], _vector_scale(out["grad"]))
    results.append(r)
    if order >= 2:
        r = result("fwd_rev_hessian", fwd_rev_rtol)
        scale = _hessian_scale(out["hess_rev"])
        r.add(out["hessian"], out["hess_rev"], scale)
        results.append(r)
    r = result("jit_vmap", jit_rtol)
    for value, grad in ((jit_v, jit_g), (out["value"], out["grad"])):
        r.add(value, eager_v, _vector_scale(eager_v), nan_equal=True)
        r.add(grad, eager_g, _norm_scale(eager_g), nan_equal=True)
    results.append(r)
    r = result("repeat", repeat_rtol)
    r.add(again_v, jit_v, _vector_scale(jit_v), nan_equal=True)
    r.add(again_g, jit_g, _norm_scale(jit_g), nan_equal=True)
    r.add(np.array([eager0_v]), eager_v[:1], _vector_scale(eager_v[:1]), nan_equal=True)
    r.add(eager0_g[None], eager_g[:1], _norm_scale(eager_g[:1]), nan_equal=True)
    results.append(r)

    rows, checks, failures = [], [], []
    parameter_rows = [{"parameter": lab} for lab in labels]
    for res in results:
        row, fails = res.summarise()
        rows.append(row)
        checks.append(
            Check(
                row["check"],
                row["value"],
                f"<= {row['threshold']:g}",
                row["passed"],
                " ".join(fails),
                parameter=row["parameter"],
            )
        )
        failures += fails
        for i, pr in enumerate(parameter_rows):
            per = float(res.per_param[i])
            pr[res.name] = None if per == -math.inf else per
    used = {row["check"]: row["threshold"] for row in rows}
    hint = float32_hint()
    if hint and failures:
        failures.append(hint.strip())
    return GradientReport(
        passed=not failures,
        failures=failures,
        rows=rows,
        checks=checks,
        parameter_rows=parameter_rows,
        max_abs_error={row["check"]: row["max_abs_error"] for row in rows},
        max_rel_error={row["check"]: row["max_rel_error"] for row in rows},
        tolerances=used,
        points=x_all,
        labels=labels,
        order=order,
        source=source,
        values=out["value"],
        grads=out["grad"],
        fd_grads=fd_grad,
        fd_grad_allowance=grad_allow,
        reference_values=None if ref is None else ref["value"],
        reference_grads=None if ref is None else ref["grad"],
        hessians=out.get("hessian"),
        reference_hessians=None if ref is None else ref.get("hessian"),
        fd_hessians=fd_hess,
    )
