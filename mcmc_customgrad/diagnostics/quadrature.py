"""A reference run without a closed form: exact draws by quadrature, for up to 3 coordinates.

Most models with an inner solve have no closed-form twin to sample against.
When the model has at most 3 scalar parameters, the posterior can be tabulated
instead: :func:`quadrature_reference` evaluates the log-density (inner solves and
all) on a grid in the unconstrained space, checks that the grid holds the whole
posterior, and then draws exact, independent samples, which
:func:`~mcmc_customgrad.compare_chains` accepts as its reference.

How it works
------------
1. **Box.** Either the user's bounds (per parameter, on the constrained scale) or
   automatic ones: damped Newton searches for the mode from 4 starts (the origin
   and 3 uniform draws on (-2, 2), Stan's initialisation), with the Hessian by
   central differences of the gradient. Around each mode found, each side of the
   box is 6.5 marginal Laplace standard deviations, but at most 4 times the
   distance along the axis at which the log-density has fallen by 6.5**2 / 2
   (where a Gaussian is at 6.5 sd): at a flat mode (``exp(-x**8)``) the Laplace sd
   is infinite.
2. **Grid.** ``num_points`` nodes per coordinate, evaluated by one compiled
   ``jax.vmap`` of ``model.logdensity`` (which includes the log-Jacobian) in
   batches of at most ``batch_size`` points, so memory stays bounded.
3. **Edge check.** For each face of the box, the probability of the outermost
   layer of cells (trapezoid rule), times the geometric-series factor
   ``1 / (1 - r)`` where ``r`` is the ratio of the two outermost layers (capped at
   the number of layers; a face where the density does not decay counts as if a
   whole box width of that level lay beyond it): an estimate of the mass at and
   beyond the face. It must be below ``edge_tol`` (1e-6 of the total). An automatic
   face that fails moves out by a quarter of the box width and the grid is
   evaluated again (at most ``max_attempts`` grids); a face the user gave raises
   a ``ValueError`` naming the parameter and the edge. An automatic box much wider
   than the mass (the outer 30% or more of a side holding less than 1e-3 of
   ``edge_tol``) is trimmed once, to keep the resolution.
4. **NaN rule.** A NaN log-density is a failed inner solve. NaN grid points are
   allowed only where the cells around them are negligible: the cells that touch a
   NaN point, each counted at its largest finite corner, must hold less than
   ``nan_tol`` (1e-6) of the mass. Then those cells count as zero mass and the
   count is recorded in the attributes; otherwise a ``ValueError`` says how many
   points failed and where. A NaN at a proposal (step 5) follows the same rule
   for the cell it falls in. ``-inf`` is zero density, not a failure.
5. **Exact draws by rejection.** In each cell the log-density is bounded above by
   an affine function of the position: the affine fit to the cell's corner values,
   raised by the largest corner residual (a multilinear function attains its
   extremes at the corners) and by ``sum_k h_k**2 / 8 * C_k``, the bound on the
   error of multilinear interpolation, with ``C_k`` twice the largest curvature
   along axis ``k`` that second differences measure at the cell's corners. A cell
   is drawn with probability proportional to the integral of its envelope, a point
   within it from the envelope (a truncated exponential per axis), and the point
   is accepted with probability ``exp(logdensity - envelope)``. Rejection sampling
   is exact whenever the envelope lies above the density, and every proposal
   checks that it does: a violation (a density rougher than the grid) makes the
   curvature term 3 times larger, taken over one more node on each side, and
   sampling restarts (at most 3 times; then a ``ValueError`` asks for more
   points). So the draws follow the posterior restricted to the box exactly; the
   grid's resolution sets only the acceptance rate (the cost), and the truncation
   is the edge mass, below ``edge_tol``.

The accepted draws are split, in order, into ``num_chains`` chains of ``num_draws``
draws. They are independent, so the bulk and tail ESS are about the number of
draws and R-hat is about 1, which is what the sanity checks of
:func:`~mcmc_customgrad.compare_chains` ask of a reference.

Accuracy
--------
Jittering a draw uniformly within a cell drawn by its probability (the simple
alternative) samples a piecewise-constant density: it adds ``h**2 / 12`` to every
variance, so a standard deviation is too large by ``h**2 / (24 sd**2)`` relative:
0.26% at ``h = sd / 4``, 4% at ``h = sd``. Linear interpolation of the density
within cells doubles that (``h**2 / 6``). Both are systematic errors a reference
should not have. Rejection against the density itself has none. Measured against
closed forms (``pytest -m slow -s -k million tests/test_quadrature.py``) for a
Gamma(3) on a ``positive()`` parameter and a correlated 3-d Gaussian, at 1,000,000
draws on the default grids (acceptance 0.999 and 0.77) and 250,000 on 16 points per
axis (cells of 0.9 to 1.4 sd; acceptance 0.51 and 0.32): means within 0.8 Monte
Carlo standard errors of the closed forms, sds within 1.8, 5/50/95% quantiles within
0.006 sd, Kolmogorov-Smirnov p-values 0.25 to 0.95. The attributes also hold the
grid's deterministic trapezoid-rule mean and sd of each constrained coordinate,
which converge geometrically for smooth, decaying densities: within 4e-7 sd of the
closed forms on the default grids (4e-9 on the Gaussian; on the Gamma, the
truncation at 2e-7 of the mass is what is left).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .. import _arviz
from .._args import element_label, element_labels
from .._errors import surface_solver_errors
from .._precision import warn_if_float32
from ..logdensity.model import Model

__all__ = ["quadrature_reference"]

#: Default nodes per unconstrained coordinate, by dimension (256, 64**2, 32**3 points).
DEFAULT_NUM_POINTS = {1: 256, 2: 64, 3: 32}
#: The most unconstrained coordinates a grid is built for.
MAX_DIM = 3
_HALF_WIDTH = 6.5  # initial automatic box: mode +- 6.5 marginal Laplace sds
_WIDEN = 0.25  # a failing automatic face moves out by this fraction of the box width
_TRIM_FRACTION = 0.3  # trim an automatic side once when at least this fraction is empty
_TRIM_TOL = 1e-3  # ... "empty": holding less than this times edge_tol
_SAFETY = 2.0  # curvature estimates are doubled in the envelope
_ESCALATE = 3.0  # and multiplied by this after an envelope violation
_MAX_ESCALATIONS = 3
_VIOLATION_TOL = 1e-7  # log-density above its envelope by more than this: a violation
_MIN_ACCEPTANCE = 0.005
_NUM_STARTS = 4
_DROP = _HALF_WIDTH**2 / 2.0  # log-density drop of a Gaussian at _HALF_WIDTH sds
_REACH = 4.0  # the box side is at most this many times the axis distance of that drop
_MODE_RANGE = 25.0  # local modes within this many log units of the best widen the box


def _where(coordinate, lower, upper):
    return f"{coordinate} in [{lower:.6g}, {upper:.6g}]"


class _Coordinates:
    """The model's scalar coordinates: labels and per-coordinate constraints."""

    def __init__(self, model):
        self.labels, self.constraints, self.params = [], [], []
        for name, c in model.constraints.items():
            for label in element_labels(name, c.shape):
                self.labels.append(label)
                self.constraints.append(c)
                self.params.append(name)

    def constrained(self, k, u):
        """Coordinate ``k``'s unconstrained value(s) ``u`` on the constrained scale."""
        return np.asarray(self.constraints[k].forward(jnp.asarray(u, dtype=float)), dtype=float)

    def point(self, u) -> str:
        """A flat unconstrained point, as ``"{mu: 0.3, sigma: 1.2}"`` (constrained)."""
        parts = [
            f"{lab}: {float(self.constrained(k, u[k])):.6g}" for k, lab in enumerate(self.labels)
        ]
        return "{" + ", ".join(parts) + "}"


class _Evaluator:
    """``model.logdensity`` on many points: one compiled ``vmap`` over fixed-size batches."""

    def __init__(self, model, batch):
        self.dim, self.batch, self.count = model.dim, int(batch), 0
        self._fn = jax.jit(jax.vmap(model.logdensity))

    def __call__(self, points):
        points = np.asarray(points, dtype=float).reshape(-1, self.dim)
        n = len(points)
        out = np.empty(n)
        for start in range(0, n, self.batch):
            chunk = points[start : start + self.batch]
            k = len(chunk)
            if k < self.batch:  # pad with the last point: one shape, one compilation
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], self.batch - k, axis=0)])
            out[start : start + k] = np.asarray(self._fn(jnp.asarray(chunk)), dtype=float)[:k]
        self.count += n
        return out


# --------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------


def _num_points(num_points, dim):
    if num_points is None:
        return np.full(dim, DEFAULT_NUM_POINTS[dim], dtype=int)
    values = np.atleast_1d(np.asarray(num_points))
    ok = values.ndim == 1 and len(values) in (1, dim) and np.issubdtype(values.dtype, np.integer)
    if not ok:
        raise ValueError(
            f"quadrature_reference: num_points must be an integer (nodes per unconstrained "
            f"coordinate) or {dim} integers, one per coordinate, got {num_points!r}"
        )
    if np.any(values < 4):
        raise ValueError(
            f"quadrature_reference: num_points must be at least 4 per coordinate (the edge "
            f"check compares the two outermost layers of cells), got {num_points!r}; the "
            f"default is {DEFAULT_NUM_POINTS[dim]} for {dim} coordinate(s)"
        )
    return np.broadcast_to(values, (dim,)).astype(int)


def _positive_int(value, name, minimum=1):
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(
            f"quadrature_reference: {name} must be an integer >= {minimum}, got {value!r}"
        )
    return int(value)


def _user_bounds(model, bounds):
    """Unconstrained ``(lower, upper)`` arrays; NaN where the side is automatic."""
    lower, upper = np.full(model.dim, np.nan), np.full(model.dim, np.nan)
    if bounds is None:
        return lower, upper
    if not isinstance(bounds, Mapping):
        raise TypeError(
            f"quadrature_reference: bounds must be None (automatic) or a dict from parameter "
            f"name to (lower, upper) on the constrained scale, got {type(bounds).__name__}"
        )
    unknown = [name for name in bounds if name not in model.constraints]
    if unknown:
        raise ValueError(
            f"quadrature_reference: bounds names {unknown}, which the model does not have; "
            f"its parameters are {list(model.names)}"
        )
    sizes = [model.constraints[name].size for name in model.names]
    offsets = dict(zip(model.names, np.cumsum([0, *sizes[:-1]]), strict=True))
    for name, pair in bounds.items():
        c = model.constraints[name]
        is_pair = isinstance(pair, Sequence | np.ndarray) and not isinstance(pair, str | bytes)
        if not is_pair or len(pair) != 2:
            raise ValueError(
                f"quadrature_reference: bounds[{name!r}] must be a pair (lower, upper) on the "
                f"constrained scale (each a number, an array of shape {c.shape}, or None for "
                f"automatic), got {pair!r}"
            )
        sides = []
        for side, value in zip(("lower", "upper"), pair, strict=True):
            if value is None:
                sides.append(np.full(c.shape, np.nan))
                continue
            try:
                x = np.broadcast_to(np.asarray(value, dtype=float), c.shape)
            except (TypeError, ValueError) as err:
                raise ValueError(
                    f"quadrature_reference: bounds[{name!r}] {side} must be a number or an "
                    f"array of shape {c.shape}, got {value!r}"
                ) from err
            if not np.all(np.isfinite(x)):
                raise ValueError(
                    f"quadrature_reference: bounds[{name!r}] {side} must be finite, got "
                    f"{value!r}; use None for an automatic {side} bound"
                )
            if not c.check(x):
                raise ValueError(
                    f"quadrature_reference: bounds[{name!r}] {side} = {value!r} is not inside "
                    f"the support of {c!r}; the grid lives in the unconstrained space, where "
                    "the end of the support is at infinity. Give a value strictly inside it "
                    f"(for positive(), a small positive number), or None for an automatic {side}"
                )
            u = np.asarray(c.inverse(jnp.asarray(x)), dtype=float)
            if not np.all(np.isfinite(u)):  # within rounding of an end of an interval
                raise ValueError(
                    f"quadrature_reference: bounds[{name!r}] {side} = {value!r} is too close "
                    f"to an end of the support of {c!r} (its unconstrained image is "
                    "infinite); move it inside"
                )
            sides.append(u)
        lo, hi = sides
        both = np.isfinite(lo) & np.isfinite(hi)
        if np.any(both & (lo >= hi)):
            idx = tuple(np.argwhere(both & (lo >= hi))[0])
            label = element_label(name, idx)
            raise ValueError(
                f"quadrature_reference: bounds for {label} have lower >= upper "
                f"({pair[0]!r}, {pair[1]!r}); give (lower, upper) with lower < upper"
            )
        start = offsets[name]
        lower[start : start + c.size] = lo.reshape(-1)
        upper[start : start + c.size] = hi.reshape(-1)
    return lower, upper


# --------------------------------------------------------------------------------------
# Mode search (automatic bounds)
# --------------------------------------------------------------------------------------


def _derivatives_fn(model):
    """``u -> (value, gradient, Hessian)``: one compiled ``vmap`` over a stencil.

    The Hessian is central differences of the gradient (the gradient goes through the
    model's own derivative rules); a model without usable gradients falls back to
    central differences of values.
    """
    d = model.dim
    eye = np.eye(d)
    vg = jax.jit(jax.vmap(jax.value_and_grad(model.logdensity)))
    count = [0]

    def with_gradients(u):
        eps = 1e-5 * np.maximum(1.0, np.abs(u))
        stencil = np.concatenate([u[None], u + eps[:, None] * eye, u - eps[:, None] * eye])
        f, g = vg(jnp.asarray(stencil))
        count[0] += len(stencil)
        f, g = np.asarray(f, dtype=float), np.asarray(g, dtype=float)
        hess = ((g[1 : d + 1] - g[d + 1 :]) / (2.0 * eps[:, None])).T
        return f[0], g[0], 0.5 * (hess + hess.T)

    pairs = [(i, j) for i in range(d) for j in range(i + 1, d)]
    offsets = [np.zeros(d)]
    for k in range(d):
        offsets += [eye[k], -eye[k]]
    for i, j in pairs:
        offsets += [eye[i] + eye[j], eye[i] - eye[j], -eye[i] + eye[j], -eye[i] - eye[j]]
    offsets = np.array(offsets)
    values = jax.jit(jax.vmap(model.logdensity))

    def with_values(u):
        eps = 1e-3 * np.maximum(1.0, np.abs(u))
        f = np.asarray(values(jnp.asarray(u + offsets * eps)), dtype=float)
        count[0] += len(offsets)
        g, hess = np.empty(d), np.empty((d, d))
        for k in range(d):
            up, down = f[1 + 2 * k], f[2 + 2 * k]
            g[k] = (up - down) / (2 * eps[k])
            hess[k, k] = (up - 2 * f[0] + down) / eps[k] ** 2
        for n, (i, j) in enumerate(pairs):
            pp, pm, mp, mm = f[1 + 2 * d + 4 * n : 5 + 2 * d + 4 * n]
            hess[i, j] = hess[j, i] = (pp - pm - mp + mm) / (4 * eps[i] * eps[j])
        return f[0], g, hess

    def derivatives(u):
        nonlocal use_gradients
        if use_gradients:
            try:
                return with_gradients(u)
            except Exception:  # no usable derivative rule: central differences of values
                use_gradients = False
        return with_values(u)

    use_gradients = True
    return derivatives, count


def _ascent_step(g, hess):
    """Modified Newton step for a maximum: ``|H|^-1 g`` (eigenvalues by absolute value)."""
    if not np.all(np.isfinite(hess)):
        return g
    lam, vec = np.linalg.eigh(-hess)
    lam = np.abs(lam)
    lam = np.maximum(lam, max(1e-8 * lam.max(initial=0.0), 1e-12))
    return vec @ ((vec.T @ g) / lam)


def _newton(derivatives, u):
    """Damped Newton ascent from ``u``; ``(value, point, Hessian)`` or None."""
    f, g, hess = derivatives(u)
    if not (np.isfinite(f) and np.all(np.isfinite(g))):
        return None
    for _ in range(100):
        step = _ascent_step(g, hess)
        slope = float(g @ step)
        if slope < 1e-14 * (1.0 + abs(f)):  # Newton decrement: converged
            break
        big = np.max(np.abs(step))
        if big > 5.0:  # at most 5 unconstrained units per coordinate and iteration
            step, slope = step * (5.0 / big), slope * (5.0 / big)
        t = 1.0
        for _ in range(40):
            fc, gc, hc = derivatives(u + t * step)
            if np.isfinite(fc) and np.all(np.isfinite(gc)) and fc >= f + 1e-4 * t * slope:
                break
            t *= 0.5
        else:
            break
        u, f, g, hess = u + t * step, fc, gc, hc
        if np.max(np.abs(t * step)) < 1e-10 * (1.0 + np.max(np.abs(u))):
            break
    return f, u, hess


def _scales(hess):
    """Marginal Laplace standard deviations from a Hessian (inf where it says nothing)."""
    d = len(hess)
    sd = np.full(d, np.inf)
    if np.all(np.isfinite(hess)):
        try:
            lam = np.linalg.eigvalsh(-hess)
            if lam.min() > 0:
                return np.sqrt(np.diag(np.linalg.inv(-hess)))
        except np.linalg.LinAlgError:
            pass
        curv = -np.diag(hess)
        sd = np.where(curv > 0, 1.0 / np.sqrt(np.where(curv > 0, curv, 1.0)), np.inf)
    return sd


def _axis_reach(evaluate, mode, value):
    """``(d, 2)`` distances from ``mode`` along each axis, down and up, to a drop of ``_DROP``.

    Where the log-density first falls ``_DROP`` below ``value`` (or stops being finite),
    on a doubling ladder of distances 1e-3 ... 1e6; ``inf`` where it never does.
    """
    d = len(mode)
    ladder = 1e-3 * 2.0 ** np.arange(31)
    steps = np.einsum("kd,s->ksd", np.eye(d), ladder)  # (d, rungs, d)
    points = np.concatenate([mode - steps, mode + steps]).reshape(-1, d)
    values = evaluate(points).reshape(2, d, len(ladder))
    below = ~(values > value - _DROP)  # NaN and -inf count as below
    reach = np.where(below.any(axis=-1), ladder[np.argmax(below, axis=-1)], np.inf)
    return reach.T


def _automatic_box(model, evaluate, seed):
    """The box around the modes found: ``(lower, upper, evaluations, gradient evaluations)``.

    Per mode and side, ``_HALF_WIDTH`` marginal Laplace sds, but at most ``_REACH`` times
    the distance along the axis at which the log-density has fallen by ``_DROP``
    (``_HALF_WIDTH**2 / 2``, where a Gaussian is at ``_HALF_WIDTH`` sds): the Laplace sd
    is infinite where the Hessian is singular (a flat mode, ``exp(-x**8)``), and only
    correlations above 0.97 put the marginal sd beyond ``_REACH`` times the conditional
    one (then the edge check widens the box).
    """
    d = model.dim
    derivatives, count = _derivatives_fn(model)
    rng = np.random.default_rng([seed, 1])
    starts = [np.zeros(d), *rng.uniform(-2.0, 2.0, size=(_NUM_STARTS - 1, d))]
    found = [r for r in (_newton(derivatives, s) for s in starts) if r is not None]
    if not found:
        raise ValueError(
            "quadrature_reference: the log-density (or its gradient) is not finite at any "
            f"of the {len(starts)} starting points of the mode search (the origin of the "
            "unconstrained space and 3 uniform draws on (-2, 2)), so no bounds could be "
            "found; pass bounds={name: (lower, upper)} around the posterior"
        )
    best = max(r[0] for r in found)
    lower, upper = np.full(d, np.inf), np.full(d, -np.inf)
    seen = []
    before = evaluate.count
    for f, u, hess in sorted(found, key=lambda r: -r[0]):
        if f < best - _MODE_RANGE or any(np.allclose(u, v, rtol=1e-3, atol=1e-3) for v in seen):
            continue
        seen.append(u)
        sd = _scales(hess)
        reach = _axis_reach(evaluate, u, f)
        down = np.minimum(_HALF_WIDTH * sd, _REACH * reach[:, 0])
        up = np.minimum(_HALF_WIDTH * sd, _REACH * reach[:, 1])
        lower = np.minimum(lower, u - np.where(np.isfinite(down), down, _HALF_WIDTH))
        upper = np.maximum(upper, u + np.where(np.isfinite(up), up, _HALF_WIDTH))
    return lower, upper, count[0] + evaluate.count - before, count[0]


# --------------------------------------------------------------------------------------
# Grid analysis
# --------------------------------------------------------------------------------------


def _corner_offsets(d):
    return np.array(list(itertools.product((0, 1), repeat=d)), dtype=int)


def _corners(values, corners):
    """``(2**d, *cells)``: each cell's corner values, in ``corners`` order."""
    cells = tuple(s - 1 for s in values.shape)
    return np.stack(
        [values[tuple(slice(e, e + m) for e, m in zip(c, cells, strict=True))] for c in corners]
    )


def _layers(masses, k):
    return masses.sum(axis=tuple(j for j in range(masses.ndim) if j != k))


def _edge_mass(m1, m2, layers):
    """Mass at and beyond a face from its two outermost layers (see the module notes)."""
    if m1 <= 0.0:
        return 0.0
    if m2 > m1:
        return m1 * min(1.0 / (1.0 - m1 / m2), layers)
    return m1 * layers


class _Grid:
    """The log-density on a grid of the box, and what the grid says about the posterior."""

    def __init__(self, logp, lower, upper, coords):
        self.logp, self.lower, self.upper = logp, lower, upper
        self.shape = logp.shape
        self.d = len(self.shape)
        self.h = (upper - lower) / (np.array(self.shape) - 1)
        self.cell_volume = float(np.prod(self.h))
        self.corner_offsets = _corner_offsets(self.d)
        if np.any(logp == np.inf):
            idx = np.unravel_index(int(np.argmax(logp == np.inf)), self.shape)
            raise ValueError(
                "quadrature_reference: the log-density is +inf at "
                f"{coords.point(self.node(idx))}; a posterior density must be finite"
            )
        self.nan_nodes = np.isnan(logp)
        finite = np.isfinite(logp)
        if not finite.any():
            what = "NaN" if self.nan_nodes.all() else "-inf or NaN"
            raise ValueError(
                f"quadrature_reference: the log-density is {what} at every point of the grid "
                f"({self._box(coords)}); check the model there, or give bounds around the "
                "posterior"
            )
        self.top = float(logp[finite].max())
        corners = _corners(np.where(self.nan_nodes, -np.inf, logp), self.corner_offsets)
        self.corners = corners
        self.nan_cells = _corners(self.nan_nodes, self.corner_offsets).any(axis=0)
        dens = np.exp(corners - self.top)
        masses = self.cell_volume * dens.mean(axis=0)
        masses[self.nan_cells] = 0.0
        self.total = float(masses.sum())
        if not self.total > 0.0:
            raise ValueError(
                "quadrature_reference: no cell of the grid has finite log-density at all its "
                f"corners ({self._box(coords)}); give bounds around the posterior"
            )
        self.masses = masses / self.total  # relative cell probabilities (trapezoid)
        # Cells touching a NaN point, each counted at its largest finite corner.
        self.nan_estimate = np.where(self.nan_cells, self.cell_volume * dens.max(axis=0), 0.0)
        self.nan_estimate /= self.total
        self.nan_mass = float(self.nan_estimate.sum())
        self.nan_count = int(self.nan_nodes.sum())

    def axis(self, k):
        return np.linspace(self.lower[k], self.upper[k], self.shape[k])

    def node(self, idx):
        return np.array([self.lower[k] + i * self.h[k] for k, i in enumerate(idx)])

    def _box(self, coords):
        return ", ".join(
            _where(lab, *coords.constrained(k, np.array([self.lower[k], self.upper[k]])))
            for k, lab in enumerate(coords.labels)
        )

    def check_nan(self, coords, nan_tol):
        if self.nan_count == 0 or self.nan_mass <= nan_tol:
            return
        nodes = np.argwhere(self.nan_nodes)
        spans = []
        for k, lab in enumerate(coords.labels):
            lo, hi = nodes[:, k].min(), nodes[:, k].max()
            x = coords.constrained(
                k, np.array([self.lower[k] + lo * self.h[k], self.lower[k] + hi * self.h[k]])
            )
            spans.append(_where(lab, *x))
        worst = np.unravel_index(int(np.argmax(self.nan_estimate)), self.nan_estimate.shape)
        near = next(
            np.array(worst) + c
            for c in self.corner_offsets
            if self.nan_nodes[tuple(np.array(worst) + c)]
        )
        raise ValueError(
            f"quadrature_reference: the log-density is NaN (a failed inner solve) at "
            f"{self.nan_count} of {self.logp.size} grid points, and the cells around them "
            f"carry an estimated {self.nan_mass:.3g} of the posterior mass (nan_tol = "
            f"{nan_tol:g}), so the posterior there is unknown and no reference is built. "
            f"The failed points lie within {'; '.join(spans)}; the one nearest the mass is "
            f"{coords.point(self.node(near))}. Make the inner solve converge there (more "
            "iterations, a better starting point), or return -inf where the density is "
            "truly zero."
        )

    def edges(self):
        """``(d, 2)`` mass at and beyond each face: ``[:, 0]`` lower, ``[:, 1]`` upper."""
        out = np.zeros((self.d, 2))
        for k in range(self.d):
            layer = _layers(self.masses, k)
            out[k, 0] = _edge_mass(layer[0], layer[1], len(layer))
            out[k, 1] = _edge_mass(layer[-1], layer[-2], len(layer))
        return out

    def empty_layers(self, k, tol):
        """How many outer layers on each side of axis ``k`` hold less than ``tol`` in all."""
        layer = _layers(self.masses, k)
        low = int(np.searchsorted(np.cumsum(layer), tol, side="right"))
        high = int(np.searchsorted(np.cumsum(layer[::-1]), tol, side="right"))
        return low, high

    def quadrature_moments(self, coords):
        """Trapezoid-rule mean and sd of every constrained coordinate."""
        weights = np.ones(self.shape)
        for k in range(self.d):
            w = np.full(self.shape[k], self.h[k])
            w[[0, -1]] *= 0.5
            weights = weights * w.reshape([-1 if j == k else 1 for j in range(self.d)])
        dens = np.where(np.isfinite(self.logp), np.exp(self.logp - self.top), 0.0) * weights
        dens /= dens.sum()
        mean, sd = [], []
        for k in range(self.d):
            x = coords.constrained(k, self.axis(k))
            marginal = _layers(dens, k)
            m = float(marginal @ x)
            mean.append(m)
            sd.append(float(np.sqrt(max(marginal @ (x - m) ** 2, 0.0))))
        return mean, sd, math.log(self.total) + self.top

    # ------------------------------------------------------------------ envelope
    def envelope(self, safety, window):
        """Per cell: ``log_mass`` of the envelope, its value at the centre and slopes."""
        d, h, corners = self.d, self.h, self.corners
        finite = np.isfinite(corners).all(axis=0)
        safe = np.where(np.isfinite(corners), corners, 0.0)
        offsets = self.corner_offsets
        slopes = np.stack(
            [
                (safe[offsets[:, k] == 1].mean(axis=0) - safe[offsets[:, k] == 0].mean(axis=0))
                / h[k]
                for k in range(d)
            ],
            axis=-1,
        )
        centre = safe.mean(axis=0)
        fit = centre[None] + np.einsum(
            "cd,...d->c...", offsets - 0.5, slopes * h, optimize=True
        ).reshape(corners.shape)
        residual = (safe - fit).max(axis=0)
        bound = np.zeros(self.masses.shape)
        for k in range(d):
            curvature = self._curvature(k, window)
            bound += safety * h[k] ** 2 / 8.0 * curvature
        # Cells with a -inf corner: a flat envelope at the largest finite corner.
        partial = ~finite & np.isfinite(corners).any(axis=0)
        top_corner = np.where(np.isfinite(corners), corners, -np.inf).max(axis=0)
        slopes[partial] = 0.0
        level = np.where(finite, centre + residual, top_corner) + bound
        level[~np.isfinite(corners).any(axis=0) | self.nan_cells] = -np.inf
        slopes[self.nan_cells | ~np.isfinite(level)] = 0.0
        log_mass = level + np.sum(_log_integral(slopes, h), axis=-1)
        return log_mass, level, slopes

    def _curvature(self, k, window):
        """Largest ``-d2 logp / du_k2`` (second differences) around each cell, >= 0."""
        logp = np.where(self.nan_nodes, np.nan, self.logp)
        moved = np.moveaxis(logp, k, 0)
        second = np.full(moved.shape, np.nan)
        with np.errstate(invalid="ignore"):
            second[1:-1] = -(moved[2:] - 2.0 * moved[1:-1] + moved[:-2]) / self.h[k] ** 2
        second[~np.isfinite(second)] = np.nan
        second = np.where(np.isnan(second), np.nan, np.maximum(second, 0.0))
        second[0], second[-1] = second[1], second[-2]
        # Dilate along k: node j sees nodes j - window .. j + window.
        wide = second.copy()
        for s in range(1, window + 1):
            wide[s:] = np.fmax(wide[s:], second[:-s])
            wide[:-s] = np.fmax(wide[:-s], second[s:])
        wide = np.moveaxis(wide, 0, k)
        cell = np.max(
            np.stack([np.nan_to_num(c, nan=-1.0) for c in _corners(wide, self.corner_offsets)]),
            axis=0,
        )
        return _fill_unknown(cell)


def _fill_unknown(cell):
    """Cells marked ``-1`` (no finite second difference) take their neighbours' maximum."""
    for _ in range(4):
        unknown = cell < 0.0
        if not unknown.any():
            return cell
        best = cell.copy()
        for axis in range(cell.ndim):
            view, source = np.moveaxis(best, axis, 0), np.moveaxis(cell, axis, 0)
            view[1:] = np.maximum(view[1:], source[:-1])
            view[:-1] = np.maximum(view[:-1], source[1:])
        cell = np.where(unknown, best, cell)
    unknown = cell < 0.0
    if unknown.any():
        cell[unknown] = cell[~unknown].max() if (~unknown).any() else 0.0
    return cell


def _log_integral(g, h):
    """``log of the integral of exp(g t)`` over ``[-h/2, h/2]``, stably, elementwise."""
    z = np.abs(g) * h / 2.0
    small = z < 1e-4
    zs = np.where(small, 1.0, z)
    big = zs + np.log1p(-np.exp(-2.0 * zs)) - np.log(2.0 * zs)
    return np.log(h) + np.where(small, z**2 / 6.0, big)


def _truncated_exponential(u, g, h):
    """Inverse CDF of the density ``~ exp(g t)`` on ``[-h/2, h/2]`` at ``u`` in ``(0, 1]``."""
    a = np.abs(g)
    zero = a * h < 1e-300
    safe = np.where(zero, 1.0, a)
    t = h / 2.0 + np.log1p((1.0 - u) * np.expm1(-safe * h)) / safe
    t = np.where(zero, (u - 0.5) * h, t)
    return np.where(g < 0, -t, t)


# --------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------


class _Violation(Exception):
    pass


def _rejection(grid, evaluate, need, rng, safety, window, coords, nan_tol):
    log_mass, level, slopes = grid.envelope(safety, window)
    flat_mass, flat_level = log_mass.reshape(-1), level.reshape(-1)
    flat_slopes = slopes.reshape(-1, grid.d)
    top = flat_mass.max()
    weights = np.exp(flat_mass - top)
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    expected = math.exp(math.log(grid.total) + grid.top - top - math.log(weights.sum()))
    cell_shape = log_mass.shape
    cell_masses = grid.masses.reshape(-1)
    draws, lps = [], []
    accepted = proposed = nan_hits = 0
    while accepted < need:
        size = evaluate.batch
        cells = np.minimum(np.searchsorted(cdf, rng.random(size), side="right"), cdf.size - 1)
        idx = np.stack(np.unravel_index(cells, cell_shape), axis=-1)
        t = _truncated_exponential(1.0 - rng.random((size, grid.d)), flat_slopes[cells], grid.h)
        points = grid.lower + (idx + 0.5) * grid.h + t
        lp = evaluate(points)
        proposed += size
        nan = np.isnan(lp)
        if nan.any():
            hit = np.unique(cells[nan])
            if cell_masses[hit].sum() > nan_tol:
                first = points[np.argmax(nan)]
                raise ValueError(
                    f"quadrature_reference: the log-density is NaN (a failed inner solve) at "
                    f"{coords.point(first)}, inside the posterior's mass (its grid cell holds "
                    f"{cell_masses[hit].max():.3g} of it; nan_tol = {nan_tol:g}), though the "
                    "grid's points around it are finite. Make the inner solve converge there."
                )
            nan_hits += int(nan.sum())
            lp = np.where(nan, -np.inf, lp)
        envelope = flat_level[cells] + np.sum(flat_slopes[cells] * t, axis=-1)
        if np.any(lp > envelope + _VIOLATION_TOL):
            raise _Violation
        keep = np.log(1.0 - rng.random(size)) < lp - envelope
        draws.append(points[keep])
        lps.append(lp[keep])
        accepted += int(keep.sum())
        if proposed >= 20 * evaluate.batch and accepted < _MIN_ACCEPTANCE * proposed:
            raise ValueError(
                f"quadrature_reference: only {accepted} of {proposed} proposals accepted "
                f"(expected {expected:.2%}): the grid is too coarse for this posterior; "
                "increase num_points or narrow the bounds"
            )
    draws = np.concatenate(draws)[:need]
    lps = np.concatenate(lps)[:need]
    return draws, lps, proposed, accepted, nan_hits


# --------------------------------------------------------------------------------------
# The function
# --------------------------------------------------------------------------------------


@surface_solver_errors
def quadrature_reference(
    model,
    bounds=None,
    num_points=None,
    num_draws=2500,
    *,
    num_chains=4,
    seed=0,
    edge_tol=1e-6,
    nan_tol=1e-6,
    batch_size=4096,
    max_attempts=8,
):
    """Exact independent draws of a model's posterior by quadrature (at most 3 coordinates).

    For models with no closed form to compare against: tabulates ``model.logdensity``
    (inner solves included) on a grid in the unconstrained space, checks that the
    grid holds the whole posterior, then draws exact independent samples by rejection
    against an envelope built from the grid. The result is a reference run for
    :func:`~mcmc_customgrad.compare_chains`, as is: ``compare_chains(idata, reference)``.

    Parameters
    ----------
    model : mcmc_customgrad.Model
        The model; its flat unconstrained dimension ``model.dim`` must be at most 3.
    bounds : dict or None
        ``None``: found automatically (mode search, then widened until the edge check
        passes). Otherwise ``{name: (lower, upper)}`` on the **constrained** scale, the
        scale of the model's parameters, strictly inside each parameter's support (for
        ``positive()``, ``lower > 0``); each side a number, an array of the parameter's
        shape, or ``None`` for an automatic side. Parameters left out are automatic.
        They are mapped to the unconstrained space through the constraint's inverse.
    num_points : int, sequence of int or None
        Grid nodes per unconstrained coordinate (at least 4); ``None``: 256, 64 or 32
        for 1, 2 or 3 coordinates (256, 4,096 or 32,768 evaluations per grid).
    num_draws : int
        Draws per chain (2,500, the protocol's length).
    num_chains : int
        Chains the draws are split into (4: what ``compare_chains`` requires).
    seed : int
        Seed of the mode search's starting points and of the draws.
    edge_tol : float
        Largest estimated probability at and beyond any face of the box, relative to
        the total (1e-6).
    nan_tol : float
        Largest estimated probability of the cells around NaN points (failed inner
        solves) that may be counted as zero (1e-6).
    batch_size : int
        Points per compiled evaluation (memory is proportional to it).
    max_attempts : int
        Grids evaluated at most while automatic bounds are widened or trimmed.

    Returns
    -------
    arviz.InferenceData
        ``posterior`` with the model's constrained parameters, dims ``(chain, draw,
        *shape)``; ``sample_stats`` with ``lp``, the unconstrained log-density at each
        draw. Attributes, on every group as :func:`~mcmc_customgrad.sample` writes them
        (``run.posterior.attrs``), all prefixed ``quadrature_``: ``coordinates``,
        ``num_points``, ``lower``/``upper`` (the box, unconstrained) and
        ``lower_constrained``/``upper_constrained``, ``bounds_source`` (per face,
        ``auto`` or ``user``), ``edge_mass`` (the largest face's) and ``edge_masses``
        (lower and upper per coordinate), ``edge_tol``, ``attempts`` (grids evaluated),
        ``num_evaluations`` (all of them: ``grid_evaluations``, ``proposals`` and
        ``mode_search_evaluations``), ``acceptance`` (of the final pass),
        ``nan_count`` (NaN grid points and proposals counted as zero mass),
        ``nan_mass``, ``envelope_escalations``, ``mean``/``sd`` (trapezoid-rule
        estimates per constrained coordinate, deterministic), ``log_normaliser``
        (log of the integral of ``exp(logdensity)`` over the box), ``seed``,
        ``seconds``; ``reference_method`` is ``"quadrature"``.

    Raises
    ------
    TypeError
        ``model`` is not an ``mcg.Model``; ``bounds`` is not a dict.
    ValueError
        ``model.dim > 3``; bad ``num_points``, ``num_draws``, ``bounds`` (unknown
        names, lower >= upper, outside the support); mass at a user-given face; mass
        at an automatic face after ``max_attempts`` grids; NaN log-densities where the
        posterior has mass; a log-density too rough for the grid.

    Notes
    -----
    The draws follow the posterior restricted to the box *exactly*: rejection
    sampling is exact when its envelope lies above the density, which every
    proposal checks (a violation widens the envelope and restarts). The grid's
    resolution sets only the acceptance rate; the truncation is below ``edge_tol``.
    The cost is the grid (``num_points ** dim`` evaluations per attempt), a mode
    search (about 10 to 30 gradient stencils) with automatic bounds, and about
    ``num_chains * num_draws / acceptance`` proposals. The module notes
    (``mcmc_customgrad.diagnostics.quadrature``) give the details and the accuracy.

    The reference is drawn from the model's own log-density *values*: against it,
    :func:`~mcmc_customgrad.compare_chains` shows that NUTS samples the density the
    model computes (with the gradients that :func:`~mcmc_customgrad.check_gradients`
    checks), but an inner solve that converges to a wrong value shifts both sides
    alike. To check the values too, build the reference from a model whose inner
    solve is independent (another solver, a tighter tolerance, a series). The run
    has no sampler statistics, so the efficiency part of the report is not judged.

    Automatic bounds cover the modes that Newton searches from 4 starting points
    find. A mode the searches miss, separated by a valley deeper than ``edge_tol``
    and outside the box, is not seen by the edge check: for a multimodal posterior,
    give bounds.

    Examples
    --------
    >>> import jax
    >>> jax.config.update("jax_enable_x64", True)
    >>> from jax.scipy.stats import gamma
    >>> import mcmc_customgrad as mcg
    >>> logdensity = lambda p: gamma.logpdf(p["rate"], 3.0, scale=0.5)  # mean 1.5, sd 0.87
    >>> model = mcg.Model(logdensity, {"rate": mcg.positive()})
    >>> reference = mcg.diagnostics.quadrature_reference(model)
    >>> reference.posterior["rate"].shape
    (4, 2500)
    >>> attrs = reference.posterior.attrs
    >>> round(attrs["quadrature_mean"][0], 6), round(attrs["quadrature_sd"][0], 6)  # the grid's
    (1.5, 0.866025)
    >>> attrs["quadrature_edge_mass"] < 1e-6, attrs["quadrature_nan_count"]
    (True, 0)
    >>> round(float(reference.posterior["rate"].mean()), 1)  # 10,000 exact draws
    1.5
    >>> narrow = {"rate": (0.5, 3.0)}  # cuts off the tails: raises
    >>> mcg.diagnostics.quadrature_reference(model, narrow)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: quadrature_reference: the posterior has mass at the lower edge of rate ...
    """
    started = time.perf_counter()
    if not isinstance(model, Model):
        raise TypeError(
            "quadrature_reference needs an mcg.Model (named parameters with constraints), "
            f"got {type(model).__name__}; wrap a log-density as "
            "mcg.Model(logdensity_fn, params={name: mcg.real(), ...})"
        )
    coords = _Coordinates(model)
    if model.dim > MAX_DIM:
        raise ValueError(
            f"quadrature_reference: the model has {model.dim} unconstrained coordinates "
            f"({', '.join(coords.labels)}); a grid of n points per coordinate costs n**dim "
            f"evaluations, out of reach above {MAX_DIM} (at 32 points, 4 coordinates are "
            "a million inner solves). Compare against a closed-form reference model "
            "instead, or check the model with mcg.check_gradients, mcg.coupled_chains and "
            "mcg.sbc (simulation-based calibration), which need no reference; a quadrature "
            "reference of a conditional model (all but 3 parameters fixed) checks the "
            "inner solve too."
        )
    warn_if_float32("mcg.diagnostics.quadrature_reference", stacklevel=4)
    n = _num_points(num_points, model.dim)
    num_draws = _positive_int(num_draws, "num_draws")
    num_chains = _positive_int(num_chains, "num_chains")
    batch_size = _positive_int(batch_size, "batch_size")
    max_attempts = _positive_int(max_attempts, "max_attempts")
    seed = _positive_int(seed, "seed", minimum=0)
    for name, tol in (("edge_tol", edge_tol), ("nan_tol", nan_tol)):
        if not 0.0 < float(tol) < 1.0:
            raise ValueError(f"quadrature_reference: {name} must be in (0, 1), got {tol!r}")
    edge_tol, nan_tol = float(edge_tol), float(nan_tol)

    user_lower, user_upper = _user_bounds(model, bounds)
    auto = np.stack([np.isnan(user_lower), np.isnan(user_upper)], axis=-1)  # (d, 2)
    evaluate = _Evaluator(model, min(batch_size, max(int(np.prod(n)), 1024)))
    if auto.any():
        lower_a, upper_a, mode_evaluations, gradient_evaluations = _automatic_box(
            model, evaluate, seed
        )
        lower = np.where(auto[:, 0], lower_a, user_lower)
        upper = np.where(auto[:, 1], upper_a, user_upper)
        # An automatic side must lie beyond the user's other side.
        width = upper_a - lower_a
        lower = np.where(auto[:, 0] & (lower >= upper), upper - width, lower)
        upper = np.where(auto[:, 1] & (upper <= lower), lower + width, upper)
    else:
        lower, upper = user_lower.copy(), user_upper.copy()
        mode_evaluations = gradient_evaluations = 0

    grid, attempt = _fit_grid(
        evaluate, coords, n, lower, upper, auto, edge_tol, nan_tol, max_attempts
    )
    grid_evaluations = attempt * int(np.prod(n))
    rng = np.random.default_rng([seed, 2])
    before = evaluate.count
    draws, lps, proposals, accepted, nan_hits, escalation = _draw(
        grid, evaluate, num_chains * num_draws, rng, coords, nan_tol
    )

    flat = jnp.asarray(draws)
    constrained = jax.vmap(model.to_constrained)(flat)
    posterior = {
        name: np.asarray(constrained[name], dtype=float).reshape(
            num_chains, num_draws, *model.constraints[name].shape
        )
        for name in model.names
    }
    attrs = _attrs(
        grid,
        coords,
        n,
        auto,
        edge_tol=edge_tol,
        attempts=attempt,
        grid_evaluations=grid_evaluations,
        proposals=evaluate.count - before,  # restarts included
        evaluations=evaluate.count + gradient_evaluations,
        mode_evaluations=mode_evaluations,
        acceptance=accepted / proposals,
        nan_hits=nan_hits,
        escalations=escalation,
        seed=seed,
        seconds=time.perf_counter() - started,
    )
    sample_stats = {"lp": lps.reshape(num_chains, num_draws)}
    run = _arviz.to_inference_data(posterior, sample_stats)
    for group in _arviz.groups(run):  # as mcg.sample: on every group, either ArviZ
        run[group].attrs.update(attrs)
    return run


def _fit_grid(evaluate, coords, n, lower, upper, auto, edge_tol, nan_tol, max_attempts):
    """``(grid, attempts)``: a grid whose box holds the posterior.

    Automatic bounds are widened where mass reaches the edge, then trimmed once where
    whole layers of cells are empty; a user's bound with mass at its edge is an error.
    """
    dim = len(n)
    trimmed = False
    attempt = 0
    while True:
        attempt += 1
        axes = [np.linspace(lower[k], upper[k], n[k]) for k in range(dim)]
        mesh = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, dim)
        grid = _Grid(evaluate(mesh).reshape(tuple(n)), lower, upper, coords)
        grid.check_nan(coords, nan_tol)
        edges = grid.edges()
        failing = edges > edge_tol
        user_failing = failing & ~auto
        if user_failing.any():
            k, side = np.argwhere(user_failing)[0]
            raise ValueError(_edge_message(coords, grid, edges, k, side, edge_tol))
        if failing.any():
            if attempt >= max_attempts:
                k, side = np.argwhere(failing)[0]
                raise ValueError(
                    _edge_message(coords, grid, edges, k, side, edge_tol)
                    + f" (after {attempt} grids with automatic bounds widened each time: "
                    "the posterior may be improper or heavy-tailed in that direction)"
                )
            width = upper - lower
            lower = np.where(failing[:, 0], lower - _WIDEN * width, lower)
            upper = np.where(failing[:, 1], upper + _WIDEN * width, upper)
            continue
        if not trimmed and attempt < max_attempts and auto.any():
            trimmed = True
            new_lower, new_upper = lower.copy(), upper.copy()
            for k in range(dim):
                low, high = grid.empty_layers(k, _TRIM_TOL * edge_tol)
                cells = n[k] - 1
                if auto[k, 0] and low >= _TRIM_FRACTION * cells:
                    new_lower[k] = lower[k] + low * grid.h[k]
                if auto[k, 1] and high >= _TRIM_FRACTION * cells:
                    new_upper[k] = upper[k] - high * grid.h[k]
            if np.any(new_lower != lower) or np.any(new_upper != upper):
                lower, upper = new_lower, new_upper
                continue
        break
    return grid, attempt


def _draw(grid, evaluate, need, rng, coords, nan_tol):
    """Rejection draws under the grid's envelope, widened when the density rises above it.

    Returns ``(draws, lps, proposals, accepted, nan_hits, escalations)``.
    """
    safety, window, escalation = _SAFETY, 0, 0
    while True:
        try:
            out = _rejection(grid, evaluate, need, rng, safety, window, coords, nan_tol)
            return (*out, escalation)
        except _Violation:
            if escalation == _MAX_ESCALATIONS:
                raise ValueError(
                    "quadrature_reference: the log-density rose above its envelope again "
                    f"after {escalation} widenings of the envelope: it varies faster than "
                    f"the grid resolves (a kink or a spike narrower than a cell of "
                    f"{grid.h.tolist()} unconstrained units). Increase num_points or give "
                    "narrower bounds."
                ) from None
            safety, window, escalation = safety * _ESCALATE, window + 1, escalation + 1


def _attrs(grid, coords, n, auto, **run) -> dict:
    """The reference's ``attrs``: the grid, its bounds and where they came from, counts."""
    dim = len(n)
    mean, sd, log_normaliser = grid.quadrature_moments(coords)
    edge_masses = grid.edges()
    return {
        "reference_method": "quadrature",
        "quadrature_coordinates": ", ".join(coords.labels),
        "quadrature_num_points": [int(v) for v in n],
        "quadrature_lower": [float(v) for v in grid.lower],
        "quadrature_upper": [float(v) for v in grid.upper],
        "quadrature_lower_constrained": [
            float(coords.constrained(k, grid.lower[k])) for k in range(dim)
        ],
        "quadrature_upper_constrained": [
            float(coords.constrained(k, grid.upper[k])) for k in range(dim)
        ],
        "quadrature_bounds_source": ", ".join(
            f"{lab} {side} {'auto' if auto[k, j] else 'user'}"
            for k, lab in enumerate(coords.labels)
            for j, side in enumerate(("lower", "upper"))
        ),
        "quadrature_edge_mass": float(edge_masses.max()),
        "quadrature_edge_masses": [float(v) for v in edge_masses.reshape(-1)],
        "quadrature_edge_tol": run["edge_tol"],
        "quadrature_attempts": int(run["attempts"]),
        "quadrature_grid_evaluations": int(run["grid_evaluations"]),
        "quadrature_proposals": int(run["proposals"]),
        "quadrature_num_evaluations": int(run["evaluations"]),
        "quadrature_mode_search_evaluations": int(run["mode_evaluations"]),
        "quadrature_acceptance": float(run["acceptance"]),
        "quadrature_nan_count": int(grid.nan_count + run["nan_hits"]),
        "quadrature_nan_mass": float(grid.nan_mass),
        "quadrature_envelope_escalations": int(run["escalations"]),
        "quadrature_mean": mean,
        "quadrature_sd": sd,
        "quadrature_log_normaliser": float(log_normaliser),
        "quadrature_seed": int(run["seed"]),
        "quadrature_seconds": float(run["seconds"]),
    }


def _edge_message(coords, grid, edges, k, side, edge_tol):
    label = coords.labels[k]
    where = ("lower", "upper")[side]
    face = grid.lower[k] if side == 0 else grid.upper[k]
    value = float(coords.constrained(k, face))
    width = grid.upper[k] - grid.lower[k]
    suggestion = float(coords.constrained(k, face - width if side == 0 else face + width))
    param = coords.params[k]
    return (
        f"quadrature_reference: the posterior has mass at the {where} edge of {label} "
        f"(bound {value:.6g} on the constrained scale): an estimated {edges[k, side]:.3g} "
        f"of it lies in the outermost layer of cells and beyond, more than edge_tol = "
        f"{edge_tol:g}, so the box would cut the posterior off. Move that bound out "
        f"(bounds[{param!r}], e.g. to {suggestion:.6g}), use None for an automatic {where} "
        "bound, or bounds=None."
    )
