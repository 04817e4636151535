"""Coupled chains: one kernel, one key sequence, two densities; the trajectories must coincide.

Validation protocol, section 2. Blackjax's window adaptation is run once, on the reference
density; then the same kernel (NUTS or HMC) with the same step size, mass matrix, start
and per-transition keys runs on the custom density and on the reference. If the two
densities have the same value and the same gradient, every leapfrog step, every U-turn
decision and every Metropolis test is the same, so the two chains take identical paths,
up to rounding that chaos amplifies only after many transitions. A wrong gradient shows
up at the first transition, long before any statistic of the draws can see it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .._args import check_int, check_scalar_density, flat_labels
from .._errors import surface_solver_errors
from ..logdensity import Model
from ..sampling._kernels import Settings, draws_fn, warmup_fn
from ..sampling.sample import Target, initial_positions
from ._report import Check, failures_of, markdown_table, verdict_of

__all__ = ["CoupledReport", "coupled_chains"]

KERNELS = ("nuts", "hmc")
SD_SOURCES = ("mass_matrix", "reference")


# ----------------------------------------------------------------------------- report


@dataclass
class CoupledReport:
    """What :func:`coupled_chains` found: verdict, checks and both trajectories.

    Attributes
    ----------
    passed : bool
        Every check passed.
    failures : list of str
        One sentence per failed check: the statistic, its value, the threshold and the
        first transition where the chains part.
    rows : list of dict
        One per check (``passed`` True/False) and per piece of context (``passed``
        None): keys ``check``, ``parameter``, ``value``, ``threshold``, ``passed``.
    positions, reference_positions : numpy.ndarray
        ``(num_steps, dim)`` flat (unconstrained) positions after each transition, on the
        custom density and on the reference.
    num_integration_steps, reference_num_integration_steps : numpy.ndarray
        ``(num_steps,)`` leapfrog steps per transition.
    acceptance_rate, reference_acceptance_rate : numpy.ndarray
        ``(num_steps,)`` Blackjax's acceptance statistic per transition.
    diverging, reference_diverging : numpy.ndarray
        ``(num_steps,)`` divergent transitions.
    logdensity, reference_logdensity : numpy.ndarray
        ``(num_steps,)`` each chain's log-density at its own position.
    value_difference : numpy.ndarray
        ``(num_steps,)`` custom minus reference log-density, both evaluated at the
        reference chain's positions (a value bug shows here even where positions agree).
    scaled_difference : numpy.ndarray
        ``(num_steps,)`` ``max_i |x_i - x_ref_i| / sd_i`` after each transition.
    sd : numpy.ndarray
        ``(dim,)`` the posterior standard deviations the differences are scaled by.
    sd_source : str
        ``"mass_matrix"`` or ``"reference"`` (see :func:`coupled_chains`).
    first_divergence : int or None
        0-based index of the first transition whose step counts differ, whose positions
        differ by more than ``position_tol`` sd, or where either position is not finite;
        None when the chains never part.
    step_agreement : float
        Fraction of transitions with identical ``num_integration_steps``.
    max_scaled_difference : float
        Largest ``scaled_difference`` over the first ``num_compare`` transitions.
    start : numpy.ndarray
        The flat start both chains share.
    step_size : float
        The shared step size.
    inverse_mass_matrix : numpy.ndarray
        The shared inverse mass matrix (diagonal as a vector, or dense).
    labels : list of str
        One name per flat coordinate (``"x[0]"``).
    kernel : str
        ``"nuts"`` or ``"hmc"``.
    num_compare : int
        Transitions over which positions are compared.
    min_step_agreement, position_tol : float
        The thresholds used.
    checks : list of Check
        ``rows`` as :class:`~mcmc_customgrad.diagnostics._report.Check` records (with
        their failure sentences), which the verdict line counts.

    Examples
    --------
    >>> import os, tempfile
    >>> import jax.numpy as jnp
    >>> from mcmc_customgrad.diagnostics.coupled import coupled_chains
    >>> ref = lambda x: -0.5 * jnp.sum(x**2)
    >>> report = coupled_chains(ref, ref, jnp.zeros(2), kernel="hmc", num_steps=10,
    ...                         step_size=0.5, inverse_mass_matrix=jnp.ones(2))
    >>> print(str(report).splitlines()[0])
    PASSED: all 3 checks, coupled chains (hmc, 10 transitions, step size 0.5)
    >>> report.positions.shape, float(report.scaled_difference.max())
    ((10, 2), 0.0)
    >>> print(report.table.splitlines()[2])
    | identical num_integration_steps | all | 1 | >= 0.95 | ok |
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     os.path.getsize(report.plot(os.path.join(folder, "coupled.png"))) > 0
    True
    """

    passed: bool
    failures: list[str]
    rows: list[dict]
    positions: np.ndarray
    reference_positions: np.ndarray
    num_integration_steps: np.ndarray
    reference_num_integration_steps: np.ndarray
    acceptance_rate: np.ndarray
    reference_acceptance_rate: np.ndarray
    diverging: np.ndarray
    reference_diverging: np.ndarray
    logdensity: np.ndarray
    reference_logdensity: np.ndarray
    value_difference: np.ndarray
    scaled_difference: np.ndarray
    sd: np.ndarray
    sd_source: str
    first_divergence: int | None
    step_agreement: float
    max_scaled_difference: float
    start: np.ndarray
    step_size: float
    inverse_mass_matrix: np.ndarray
    labels: list[str] = field(default_factory=list)
    kernel: str = "nuts"
    num_compare: int = 20
    min_step_agreement: float = 0.95
    position_tol: float = 1e-6
    checks: list = field(default_factory=list)

    @property
    def num_checks(self) -> int:
        """Number of pass/fail checks (rows whose ``passed`` is not None)."""
        return sum(r["passed"] is not None for r in self.rows)

    @property
    def table(self) -> str:
        """The rows as a Markdown table."""
        rows = [
            [
                r["check"],
                r["parameter"],
                r["value"],
                r["threshold"],
                "info" if r["passed"] is None else ("ok" if r["passed"] else "FAIL"),
            ]
            for r in self.rows
        ]
        return markdown_table(["check", "parameter", "value", "threshold", "result"], rows, 3)

    def _verdict(self) -> str:
        what = (
            f"coupled chains ({self.kernel}, {len(self.num_integration_steps)} transitions, "
            f"step size {self.step_size:.4g})"
        )
        return verdict_of(self.checks, what)

    def __str__(self) -> str:
        parts = [self._verdict(), "", self.table]
        if self.failures:
            parts += ["", *(f"- {f}" for f in self.failures)]
        return "\n".join(parts)

    def to_markdown(self) -> str:
        """A Markdown section: heading, verdict, table and failures."""
        parts = ["## Coupled chains", "", f"**{self._verdict()}**", "", self.table]
        if self.failures:
            parts += ["", "Failures:", "", *(f"- {f}" for f in self.failures)]
        return "\n".join(parts) + "\n"

    def plot(self, path) -> str:
        """Write a PNG: per-transition scaled difference (log scale) and both step counts.

        Exact zeros (bitwise identical positions) are drawn at ``1e-17`` sd.

        Parameters
        ----------
        path : str or path-like
            Where to write the PNG.

        Returns
        -------
        str
            ``path``.
        """
        from matplotlib.figure import Figure

        t = np.arange(len(self.scaled_difference))
        floor = 1e-17
        diff = np.where(np.isfinite(self.scaled_difference), self.scaled_difference, np.inf)
        shown = np.clip(diff, floor, 1e300)
        fig = Figure(figsize=(8, 5.5), layout="constrained")
        top, bottom = fig.subplots(2, 1, sharex=True)
        top.semilogy(t, shown, marker=".", lw=1, label="max |x - x_ref| / sd")
        top.axhline(self.position_tol, color="tab:red", ls="--", lw=1, label="tolerance")
        top.axvspan(-0.5, self.num_compare - 0.5, color="0.9", label="compared transitions")
        bottom.step(t, self.reference_num_integration_steps, where="mid", label="reference")
        bottom.step(t, self.num_integration_steps, where="mid", ls="--", label="custom density")
        for ax in (top, bottom):
            if self.first_divergence is not None:
                ax.axvline(self.first_divergence, color="tab:orange", lw=1)
        top.set_ylabel("scaled position difference")
        top.set_title(self._verdict(), fontsize=9)
        top.legend(fontsize=8, loc="best")
        bottom.set_ylabel("leapfrog steps")
        bottom.set_xlabel("transition")
        bottom.legend(fontsize=8)
        fig.savefig(path, dpi=100)
        return str(path)


# ----------------------------------------------------------------------------- input


def _check_fraction(name, value, low, high, closed_high=True):
    ok = isinstance(value, int | float | np.floating) and not isinstance(value, bool)
    ok = ok and low < value and (value <= high if closed_high else value < high)
    if not ok:
        bracket = "]" if closed_high else ")"
        raise ValueError(
            f"coupled_chains: {name} must lie in ({low}, {high}{bracket}, got {value!r}."
        )
    return float(value)


def _key(seed):
    if isinstance(seed, jax.Array) and jnp.issubdtype(seed.dtype, jax.dtypes.prng_key):
        if seed.shape != ():
            raise ValueError(f"coupled_chains: seed must be one PRNG key, got shape {seed.shape}.")
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TypeError(f"coupled_chains: seed must be an int or a jax.random.key, got {seed!r}.")
    return jax.random.key(int(seed))


def _as_density(obj, which):
    if isinstance(obj, Model):
        return obj
    if callable(obj):
        return obj
    raise TypeError(
        f"coupled_chains: {which} must be an mcg.Model or a callable logdensity(position) -> "
        f"scalar, got {type(obj).__name__}."
    )


def _labels_from_tree(tree):
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return flat_labels(
        (jax.tree_util.keystr(p, simple=True, separator=".") or "x", np.shape(leaf))
        for p, leaf in leaves
    )


def _check_float_tree(tree):
    leaves = jax.tree.leaves(tree)
    if not leaves:
        raise ValueError("coupled_chains: init is empty; give a flat array or a pytree of floats.")
    for leaf in leaves:
        dtype = jnp.result_type(leaf)
        if isinstance(leaf, float):
            continue
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(
                f"coupled_chains: init must hold float arrays, got dtype {dtype}. "
                "Write 0.0, not 0, or pass dtype=float."
            )


def _flat_start(model, init, key):
    """The flat start and the unravel function: ``(x0, unravel, labels)``."""
    if model is None:
        if init is None:
            raise ValueError(
                "coupled_chains: with two plain log-density callables init is required: a "
                "flat float array or a pytree of float arrays. An mcg.Model draws its own."
            )
        if isinstance(init, Model) or callable(init):
            raise TypeError(
                "coupled_chains: init must be a position (flat array or pytree of float "
                f"arrays), got {type(init).__name__}."
            )
        _check_float_tree(init)
        tree = jax.tree.map(lambda x: jnp.asarray(x, dtype=jnp.result_type(float)), init)
        flat, unravel = ravel_pytree(tree)
        return flat, unravel, _labels_from_tree(tree)
    labels = model.labels
    if init is None:
        target = Target(model, None, False, 1)
        positions, _ = initial_positions(target, key)
        flat = positions[0]
    elif isinstance(init, Mapping):
        flat = model.to_unconstrained(init)
    else:
        _check_float_tree(init)
        flat = jnp.asarray(init, dtype=jnp.result_type(float))
        if flat.shape != (model.dim,):
            raise ValueError(
                f"coupled_chains: init for this model is a dict of constrained values or a flat "
                f"unconstrained vector of shape ({model.dim},), got shape {flat.shape}."
            )
    return flat, None, labels


def _flat_density(obj, unravel):
    if isinstance(obj, Model):
        return obj.logdensity
    if unravel is None:
        return obj
    return lambda x: obj(unravel(x))


# ----------------------------------------------------------------------------- main


@surface_solver_errors
def coupled_chains(
    logdensity,
    reference_logdensity,
    init=None,
    *,
    num_steps: int = 200,
    num_warmup: int = 300,
    num_compare: int = 20,
    kernel: str = "nuts",
    step_size=None,
    inverse_mass_matrix=None,
    seed=0,
    target_accept: float = 0.8,
    max_treedepth: int = 10,
    num_integration_steps: int = 16,
    dense_mass: bool = False,
    sd: str = "mass_matrix",
    min_step_agreement: float = 0.95,
    position_tol: float = 1e-6,
) -> CoupledReport:
    """Run one kernel with one key sequence on two densities; check the paths coincide.

    Blackjax's window adaptation (``blackjax.window_adaptation`` with the chosen kernel)
    runs once, on ``reference_logdensity``, from ``init``; it fixes the step size, the
    mass matrix and the shared start (the reference's last warmup position). Then
    ``num_steps`` transitions of the same kernel, with the same per-transition keys, run
    on each density (the sampler's own warmup and draw stages, as
    :func:`~mcmc_customgrad.sample` runs them; one compilation per density). If the
    custom density's value and gradient equal the reference's, both chains make the same
    leapfrog steps and the same decisions. Checks:

    - identical ``num_integration_steps`` in at least ``min_step_agreement`` (95%) of
      the transitions (rounding differences of 1e-15, amplified by the chaotic
      dynamics, may part the chains late in a long run);
    - ``max |x - x_ref| / sd`` over the first ``num_compare`` transitions and every
      coordinate at most ``position_tol`` (1e-6);
    - the reference chain moved at least once (otherwise the comparison says nothing).

    The report also names the first transition where the chains part and gives the
    log-density differences along the path.

    Parameters
    ----------
    logdensity, reference_logdensity : Model or callable
        The density under test and the trusted one: each an
        :class:`~mcmc_customgrad.Model` (its flat unconstrained ``Model.logdensity`` is
        sampled) or ``logdensity(position) -> scalar``. A callable paired with a Model
        receives the Model's flat unconstrained vector; two callables receive positions
        shaped like ``init``.
    init : array, pytree, dict or None
        Start of the warmup. With a Model: None (a fixed-seed draw, uniform on (-2, 2)
        per unconstrained coordinate and redrawn until finite, as in
        :func:`~mcmc_customgrad.sample`), a dict of constrained values, or a flat
        unconstrained vector. With two callables: a flat float array or a pytree of
        float arrays (required).
    num_steps : int
        Transitions per chain after the warmup (default 200).
    num_warmup : int
        Window-adaptation steps on the reference (default 300); unused when
        ``step_size`` and ``inverse_mass_matrix`` are given.
    num_compare : int
        Transitions over which positions must agree to ``position_tol`` (default 20;
        at most ``num_steps``; larger values are clipped to it).
    kernel : {"nuts", "hmc"}
        Blackjax kernel for the warmup and both chains.
    step_size, inverse_mass_matrix : float and array, optional
        Give both to skip the warmup; the chains then start at ``init``.
    seed : int or jax.random.key
        Fixes the start draw, the warmup and the per-transition keys.
    target_accept : float
        Step-size adaptation target in (0, 1).
    max_treedepth : int
        NUTS's maximum number of trajectory doublings.
    num_integration_steps : int
        Leapfrog steps per HMC transition (``kernel="hmc"``).
    dense_mass : bool
        Adapt a dense mass matrix instead of a diagonal one.
    sd : {"mass_matrix", "reference"}
        Posterior standard deviations that scale the position differences.
        ``"mass_matrix"`` (default): the square root of the diagonal of the inverse mass
        matrix, which window adaptation estimates as the posterior variance (1 when
        ``num_warmup < 20``, where Blackjax adapts only the step size); it does not
        depend on the chains being compared. ``"reference"``: the standard deviation of
        the reference chain's ``num_steps`` positions, per coordinate (the mass-matrix
        value where the chain did not move in a coordinate).
    min_step_agreement : float
        Fraction of transitions whose step counts must agree (default 0.95).
    position_tol : float
        Largest allowed position difference, in posterior sd (default 1e-6).

    Returns
    -------
    CoupledReport
        ``passed``, ``failures``, ``rows``, ``table``, both trajectories and
        ``plot(path)``.

    Raises
    ------
    ValueError
        Settings out of range, an unknown kernel or ``sd``, two Models of different
        dimension, a density that cannot be evaluated at the start or does not return a
        real scalar, a reference log-density or gradient that is not finite at the start.
    TypeError
        A density that is neither a Model nor callable, a non-float ``init``.

    Examples
    --------
    Two ways to write a standard normal couple exactly; a 5% error in the value does not
    (HMC with a given step size and mass matrix, to keep the example fast; the default
    adapts both with NUTS on the reference):

    >>> import jax.numpy as jnp
    >>> from mcmc_customgrad.diagnostics.coupled import coupled_chains
    >>> ref = lambda x: -0.5 * jnp.sum(x**2)
    >>> same = lambda x: -0.5 * jnp.dot(x, x)
    >>> wrong = lambda x: -0.5 * jnp.sum(x**2) / 1.05
    >>> options = dict(kernel="hmc", num_integration_steps=5, num_steps=30,
    ...                step_size=0.5, inverse_mass_matrix=jnp.ones(2))
    >>> report = coupled_chains(same, ref, jnp.zeros(2), **options)
    >>> report.passed, report.first_divergence
    (True, None)
    >>> bad = coupled_chains(wrong, ref, jnp.zeros(2), **options)
    >>> bad.passed, bad.first_divergence
    (False, 0)
    >>> print(str(bad).splitlines()[0])
    FAILED: 1 of 3 checks, coupled chains (hmc, 30 transitions, step size 0.5)
    """
    num_steps = check_int("coupled_chains", "num_steps", num_steps, 1)
    num_compare = min(check_int("coupled_chains", "num_compare", num_compare, 1), num_steps)
    if sd not in SD_SOURCES:
        raise ValueError(f"coupled_chains: unknown sd {sd!r}; choose one of {SD_SOURCES}.")
    min_step_agreement = _check_fraction("min_step_agreement", min_step_agreement, 0, 1)
    if isinstance(position_tol, bool) or not (
        isinstance(position_tol, int | float | np.floating) and position_tol > 0
    ):
        raise ValueError(f"coupled_chains: position_tol must be > 0, got {position_tol!r}.")
    if (step_size is None) != (inverse_mass_matrix is None):
        raise ValueError(
            "coupled_chains: give both step_size and inverse_mass_matrix (to skip the warmup) "
            "or neither (to adapt them on the reference)."
        )
    adapt = step_size is None
    # num_warmup is checked (and used) only when the warmup runs.
    num_warmup = check_int("coupled_chains", "num_warmup", num_warmup, 1) if adapt else 1
    settings = _settings(
        kernel, target_accept, max_treedepth, num_integration_steps, dense_mass, num_warmup
    )

    key = _key(seed)
    k_init, k_warm, k_draw = jax.random.split(key, 3)
    f_custom, f_ref, x0, labels = _densities(logdensity, reference_logdensity, init, k_init)
    dim = int(x0.shape[0])

    # The sampler's own stages: window adaptation on the reference, then one run of
    # transitions per density from the same state, step size, mass matrix and keys.
    if adapt:
        state, step, imm, _ = jax.jit(warmup_fn(f_ref, settings))(k_warm, x0)
        start = state.position
    else:
        start = x0
        step, imm = _given_parameters(step_size, inverse_mass_matrix, dim)
    ref_out = _run(f_ref, settings, num_steps, start, step, imm, k_draw)
    out = _run(f_custom, settings, num_steps, start, step, imm, k_draw)
    x_ref, x = ref_out["position"], out["position"]
    n_ref, n = ref_out["n_steps"], out["n_steps"]
    value_on_ref = np.asarray(jax.jit(jax.vmap(f_custom))(jnp.asarray(x_ref)))

    imm_np = np.asarray(imm)
    mass_sd = np.sqrt(np.diag(imm_np) if imm_np.ndim == 2 else imm_np)
    if sd == "reference":
        scale = np.std(x_ref, axis=0, ddof=1) if num_steps > 1 else np.zeros(dim)
        scale = np.where(scale > 0, scale, mass_sd)
    else:
        scale = mass_sd
    with np.errstate(invalid="ignore"):
        per_coord = np.abs(x - x_ref) / scale
        value_diff = value_on_ref - ref_out["lp"]
        lp_diff = out["lp"] - ref_out["lp"]
    per_coord = np.where(np.isfinite(per_coord), per_coord, np.inf)
    scaled = per_coord.max(axis=1)
    parted = (n != n_ref) | (scaled > position_tol)
    first = int(np.flatnonzero(parted)[0]) if parted.any() else None
    moved = np.any(np.abs(np.diff(np.vstack([np.asarray(start)[None], x_ref]), axis=0)) > 0, 1)
    checks = _coupled_checks(
        n=n,
        n_ref=n_ref,
        per_coord=per_coord,
        scaled=scaled,
        first=first,
        moved=moved,
        labels=labels,
        num_compare=num_compare,
        min_step_agreement=min_step_agreement,
        position_tol=position_tol,
        step=float(step),
    )
    checks += [
        Check("max |logp - logp_ref| at the reference positions", _max_abs(value_diff), "-", None),
        Check(
            f"max |logp - logp_ref| along both paths, first {num_compare} transitions",
            _max_abs(lp_diff[:num_compare]),
            "-",
            None,
        ),
        Check("step size", float(step), "-", None),
    ]
    failures = failures_of(checks)
    compared = per_coord[:num_compare]
    return CoupledReport(
        passed=not failures,
        failures=failures,
        rows=[_row(c) for c in checks],
        checks=checks,
        positions=x,
        reference_positions=x_ref,
        num_integration_steps=n,
        reference_num_integration_steps=n_ref,
        acceptance_rate=out["acceptance_rate"],
        reference_acceptance_rate=ref_out["acceptance_rate"],
        diverging=out["diverging"],
        reference_diverging=ref_out["diverging"],
        logdensity=out["lp"],
        reference_logdensity=ref_out["lp"],
        value_difference=value_diff,
        scaled_difference=scaled,
        sd=scale,
        sd_source=sd,
        first_divergence=first,
        step_agreement=float(np.mean(n == n_ref)),
        max_scaled_difference=float(compared.max()),
        start=np.asarray(start),
        step_size=float(step),
        inverse_mass_matrix=imm_np,
        labels=labels,
        kernel=kernel,
        num_compare=num_compare,
        min_step_agreement=min_step_agreement,
        position_tol=float(position_tol),
    )


def _settings(kernel, target_accept, max_treedepth, num_integration_steps, dense_mass, num_warmup):
    """The sampler's :class:`Settings` for the arguments, checked."""
    if kernel not in KERNELS:
        raise ValueError(f"coupled_chains: unknown kernel {kernel!r}; choose one of {KERNELS}.")
    target_accept = _check_fraction("target_accept", target_accept, 0, 1, closed_high=False)
    return Settings(
        kernel=kernel,
        target_accept=target_accept,
        max_treedepth=check_int("coupled_chains", "max_treedepth", max_treedepth, 1),
        num_integration_steps=check_int(
            "coupled_chains", "num_integration_steps", num_integration_steps, 1
        ),
        dense_mass=bool(dense_mass),
        num_warmup=num_warmup,
    )


def _densities(logdensity, reference_logdensity, init, key):
    """Both densities on one flat vector, the start and the coordinates' labels."""
    custom = _as_density(logdensity, "logdensity")
    reference = _as_density(reference_logdensity, "reference_logdensity")
    models = [m for m in (reference, custom) if isinstance(m, Model)]
    if len(models) == 2 and custom.dim != reference.dim:
        raise ValueError(
            f"coupled_chains: the two models have different dimensions ({custom.dim} for "
            f"logdensity, {reference.dim} for reference_logdensity; parameters "
            f"{list(custom.names)} and {list(reference.names)}). Compare a model with the "
            "reference of the same parameters and layout."
        )
    x0, unravel, labels = _flat_start(models[0] if models else None, init, key)
    f_custom = _flat_density(custom, unravel)
    f_ref = _flat_density(reference, unravel)
    template = jax.ShapeDtypeStruct(x0.shape, x0.dtype)
    where = f"at the start position ({template.dtype}[{template.shape[0]}] flat)"
    hint = "Do the two densities take the same parameters?"
    for fn, which in ((f_ref, "reference_logdensity"), (f_custom, "logdensity")):
        check_scalar_density("coupled_chains", which, fn, template, where, hint)
    lp0, g0 = jax.jit(jax.value_and_grad(f_ref))(x0)
    if not (np.isfinite(float(lp0)) and np.all(np.isfinite(np.asarray(g0)))):
        raise ValueError(
            f"coupled_chains: the reference log-density at the start is {float(lp0)!r} with "
            f"gradient {np.asarray(g0)!r}; give init a point where both are finite."
        )
    return f_custom, f_ref, x0, labels


def _run(logdensity, settings: Settings, num_steps, start, step, imm, key) -> dict:
    """``num_steps`` transitions from ``start``: the sampler's draws stage, as NumPy arrays."""
    draws = draws_fn(logdensity, settings, num_steps)

    def run(start, step, imm, key):
        state = settings.init_state(logdensity, start)
        return draws(state, step, imm, key, jnp.int32(0), jnp.int32(num_steps))[1]

    record = jax.device_get(jax.jit(run)(start, step, imm, key))
    t = record.transition
    return {
        "position": np.asarray(record.position),
        "lp": np.asarray(record.lp),
        "n_steps": np.asarray(t.n_steps),
        "acceptance_rate": np.asarray(t.acceptance_rate),
        "diverging": np.asarray(t.diverging),
    }


def _row(check: Check) -> dict:
    row = check.as_row()
    return {k: row[k] for k in ("check", "parameter", "value", "threshold", "passed")}


def _coupled_checks(
    *,
    n,
    n_ref,
    per_coord,
    scaled,
    first,
    moved,
    labels,
    num_compare,
    min_step_agreement,
    position_tol,
    step,
) -> list[Check]:
    """The three judged checks and where the chains first part."""
    num_steps = len(n)
    same_steps = n == n_ref
    agreement = float(same_steps.mean())
    compared = per_coord[:num_compare]
    worst_t, worst_i = np.unravel_index(int(np.argmax(compared)), compared.shape)
    max_scaled = float(compared[worst_t, worst_i])
    where = _describe_first(first, n, n_ref, scaled, labels, per_coord)
    frac_moved = float(moved.mean())
    return [
        Check(
            "identical num_integration_steps",
            agreement,
            f">= {min_step_agreement:g}",
            agreement >= min_step_agreement,
            f"num_integration_steps: identical in {agreement:.1%} of {num_steps} transitions "
            f"({int((~same_steps).sum())} differ), below {min_step_agreement:.0%}; {where}.",
            parameter="all",
        ),
        Check(
            f"max |x - x_ref| / sd, first {num_compare} transitions",
            max_scaled,
            f"<= {position_tol:g}",
            max_scaled <= position_tol,
            f"{labels[worst_i]}: |x - x_ref| / sd reaches {max_scaled:.3g} at transition "
            f"{worst_t} (within the first {num_compare}), above {position_tol:g}; {where}.",
            parameter=labels[worst_i],
        ),
        Check(
            "reference chain moved",
            frac_moved,
            "> 0",
            frac_moved > 0,
            f"reference chain: never moved in {num_steps} transitions (step size "
            f"{step:.3g}), so the comparison says nothing; give a start inside the "
            "typical set or a longer warmup.",
            parameter="all",
        ),
        Check(
            "first diverging transition",
            "none" if first is None else first,
            "-",
            None,
            parameter="-"
            if first is None or scaled[first] <= position_tol
            else labels[int(np.argmax(per_coord[first]))],
        ),
    ]


def _given_parameters(step_size, inverse_mass_matrix, dim):
    try:
        step = float(step_size)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"coupled_chains: step_size must be a positive float, got {step_size!r}."
        ) from err
    if not (math.isfinite(step) and step > 0):
        raise ValueError(f"coupled_chains: step_size must be a positive float, got {step_size!r}.")
    imm = np.asarray(inverse_mass_matrix, dtype=float)
    if imm.shape not in ((dim,), (dim, dim)):
        raise ValueError(
            f"coupled_chains: inverse_mass_matrix must have shape ({dim},) (diagonal) or "
            f"({dim}, {dim}) (dense) for this {dim}-dimensional density, got {imm.shape}."
        )
    diag = np.diag(imm) if imm.ndim == 2 else imm
    if not (np.all(np.isfinite(imm)) and np.all(diag > 0)):
        raise ValueError(
            "coupled_chains: inverse_mass_matrix must be finite with a positive diagonal."
        )
    return jnp.asarray(step), jnp.asarray(imm)


def _max_abs(values) -> float:
    """Largest ``|value|``, a NaN (one side finite, the other not) counting as infinite."""
    values = np.asarray(values)
    return float(np.max(np.where(np.isnan(values), np.inf, np.abs(values))))


def _describe_first(first, n, n_ref, scaled, labels, per_coord) -> str:
    if first is None:
        return "the chains never part"
    if n[first] != n_ref[first]:
        what = f"{int(n[first])} vs {int(n_ref[first])} leapfrog steps"
    else:
        i = int(np.argmax(per_coord[first]))
        what = f"{labels[i]} differs by {scaled[first]:.3g} sd"
    return f"first diverging transition: {first} ({what})"
