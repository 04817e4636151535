"""Simulation-based calibration (SBC): checks that the ranks of the true values are uniform.

Talts, Betancourt, Simpson, Vehtari & Gelman (2018), "Validating Bayesian inference
algorithms with simulation-based calibration"; Modrák, Moon, Kim, Bürkner, Huurre,
Faltejsková, Gelman & Vehtari (2023), "Simulation-based calibration checking for Bayesian
computation: the choice of test quantities shapes sensitivity"; Säilynoja, Bürkner &
Vehtari (2022), "Graphical test for discrete uniformity and its applications in goodness
of fit evaluation and multiple sample comparison".

Each simulation draws parameters from the prior, data from the model given them, and fits
the data with NUTS. If the log-density (inner solves included) and the sampler are right,
the rank of the true value among ``L`` thinned posterior draws is uniform on
``0, ..., L``, for every parameter and for every function of parameters and data; the
log-likelihood of the simulated data is the function Modrák et al. recommend, because it
reacts to errors that leave every marginal alone.

Everything that is compiled is compiled once per call (and cached across calls): the
simulated data are a traced *argument* of the sampler, which runs all the simulations of a
batch, and all their chains, in one ``vmap``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from .. import _arviz
from .._args import check_int, flat_labels
from .._errors import surface_solver_errors
from ..caches import LRU, lru_cache
from ..logdensity.constraints import Constraint
from ..logdensity.model import Model
from ..sampling._kernels import KERNELS, Settings, draws_fn, start_fn, warmup_fn
from ..sampling._processes import gather_rows, my_share, process_count
from ..sampling._warnings import genuine_divergences
from ._report import Check, failures_of, verdict_of

__all__ = [
    "SBCProblem",
    "SBCReport",
    "sbc",
    "sbc_ranks",
    "rank_chi_square",
    "ecdf_bands",
]

#: The name of the log-likelihood test quantity in :attr:`SBCReport.ranks`.
LOG_LIKELIHOOD = "log_likelihood"
#: Smallest expected count per chi-square bin (Cochran's rule).
MIN_EXPECTED = 5.0

_TRACER_ERRORS = (
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerArrayConversionError,
    jax.errors.TracerBoolConversionError,
    jax.errors.TracerIntegerConversionError,
)


# --------------------------------------------------------------------------- the problem


@dataclasses.dataclass(frozen=True)
class SBCProblem:
    """A generative model for :func:`sbc`: prior, simulator and the log-density to check.

    Parameters
    ----------
    params : dict
        Name to constraint (:func:`~mcmc_customgrad.real`,
        :func:`~mcmc_customgrad.positive`, :func:`~mcmc_customgrad.interval`), each with
        its shape, as for :class:`~mcmc_customgrad.Model`. The sampler moves in the
        unconstrained coordinates; draws and ranks are on the constrained scale (ranks do
        not depend on the scale, the transforms being increasing).
    prior_sample : callable
        ``prior_sample(key) -> params``: one prior draw, a dict of constrained arrays with
        the shapes of ``params``. Written with ``jax.random`` and ``key``, so it can be
        traced and vmapped (or see ``jit_simulate=False`` in :func:`sbc`).
    simulate : callable
        ``simulate(key, params) -> data``: one data set, a pytree of arrays whose shapes
        do not depend on the key or the parameters (pad and mask otherwise).
    logdensity : callable
        ``logdensity(params, data) -> scalar``: the log prior plus log-likelihood on the
        constrained scale (no Jacobian; it is added), with inner solves if you like. Its
        prior must be the one ``prior_sample`` draws from and its likelihood the one
        ``simulate`` draws from: any difference is what SBC detects.
    log_likelihood : callable, optional
        ``log_likelihood(params, data) -> array`` of per-observation log-likelihoods. Their
        sum is a test quantity: its rank at the true parameters among its values at the
        posterior draws.
    name : str
        A label for reports.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from jax.scipy.stats import norm
    >>> import mcmc_customgrad as mcg
    >>> from mcmc_customgrad.diagnostics.calibration import SBCProblem
    >>> problem = SBCProblem(
    ...     params={"mu": mcg.real()},
    ...     prior_sample=lambda key: {"mu": jax.random.normal(key)},
    ...     simulate=lambda key, p: {"y": p["mu"] + jax.random.normal(key, (3,))},
    ...     logdensity=lambda p, d: norm.logpdf(p["mu"]) + norm.logpdf(d["y"], p["mu"]).sum(),
    ...     log_likelihood=lambda p, d: norm.logpdf(d["y"], p["mu"]),
    ... )
    >>> sorted(problem.simulate(jax.random.key(1), problem.prior_sample(jax.random.key(0))))
    ['y']
    """

    params: Mapping
    prior_sample: Callable
    simulate: Callable
    logdensity: Callable
    log_likelihood: Callable | None = None
    name: str = "sbc"

    def __hash__(self):
        spec = tuple((n, c) for n, c in self.params.items())
        return hash((spec, self.prior_sample, self.simulate, self.logdensity, self.log_likelihood))

    def __eq__(self, other):
        if not isinstance(other, SBCProblem):
            return NotImplemented
        return (
            dict(self.params) == dict(other.params)
            and self.prior_sample == other.prior_sample
            and self.simulate == other.simulate
            and self.logdensity == other.logdensity
            and self.log_likelihood == other.log_likelihood
        )


_REQUIRED = ("params", "prior_sample", "simulate", "logdensity")


def _resolve_problem(model_builder) -> SBCProblem:
    """An :class:`SBCProblem` (or an object with its attributes), or a builder of one."""
    obj = model_builder
    if not all(hasattr(obj, a) for a in _REQUIRED) and callable(obj):
        try:
            obj = obj()
        except TypeError as err:
            raise TypeError(
                "sbc: model_builder must be an SBCProblem (an object with params, "
                "prior_sample, simulate and logdensity) or a function of no arguments "
                f"returning one; calling it failed: {err}"
            ) from err
    missing = [a for a in _REQUIRED if not hasattr(obj, a)]
    if missing:
        raise TypeError(
            f"sbc: the model ({type(obj).__name__}) is missing {missing}. Give an "
            "SBCProblem(params=..., prior_sample=..., simulate=..., logdensity=..., "
            "log_likelihood=...) or an object with those attributes."
        )
    for a in ("prior_sample", "simulate", "logdensity"):
        if not callable(getattr(obj, a)):
            raise TypeError(
                f"sbc: the model's {a} must be callable, got {type(getattr(obj, a)).__name__}."
            )
    log_likelihood = getattr(obj, "log_likelihood", None)
    if log_likelihood is not None and not callable(log_likelihood):
        raise TypeError(
            "sbc: the model's log_likelihood must be callable or None, got "
            f"{type(log_likelihood).__name__}."
        )
    params = obj.params
    if not isinstance(params, Mapping) or not params:
        raise TypeError("sbc: the model's params must be a non-empty dict of name -> constraint.")
    for name, c in params.items():
        if not isinstance(c, Constraint):
            raise TypeError(
                f"sbc: unknown constraint for {name!r}: {c!r}. Use mcg.real(), "
                "mcg.positive() or mcg.interval(lower, upper), each with a shape."
            )
    if isinstance(obj, SBCProblem):
        return obj
    return SBCProblem(
        params=dict(params),
        prior_sample=obj.prior_sample,
        simulate=obj.simulate,
        logdensity=obj.logdensity,
        log_likelihood=log_likelihood,
        name=str(getattr(obj, "name", type(obj).__name__)),
    )


def _component_names(params: Mapping) -> list[str]:
    """``mu``, ``x[0]``, ``x[0,1]``: one name per scalar, in layout order."""
    return flat_labels((name, c.shape) for name, c in params.items())


def _flatten(values: Mapping, params: Mapping, lead: int):
    """Dict of arrays with ``lead`` leading axes -> one array ``(*lead_shape, P)``."""
    parts = []
    for name, c in params.items():
        v = values[name]
        parts.append(jnp.reshape(v, (*jnp.shape(v)[:lead], c.size)))
    return jnp.concatenate(parts, axis=-1)


# --------------------------------------------------------------------------- statistics


def sbc_ranks(draws, truth, *, seed=0):
    """Rank of each true value among its posterior draws, ties broken at random.

    Parameters
    ----------
    draws : array_like, shape (N, L, ...)
        ``L`` posterior draws for each of ``N`` simulations.
    truth : array_like, shape (N, ...)
        The true values.
    seed : int
        Seed of the tie-breaking generator.

    Returns
    -------
    numpy.ndarray of int, shape (N, ...)
        ``#(draws < truth) + U{0, ..., #(draws == truth)}``, in ``0, ..., L``. Random tie
        breaking keeps the ranks uniform when a chain repeats a value (Talts et al. 2018,
        Section 4.2).

    Examples
    --------
    >>> import numpy as np
    >>> from mcmc_customgrad.diagnostics.calibration import sbc_ranks
    >>> sbc_ranks(np.array([[0.1, 0.5, 0.9], [1.0, 2.0, 3.0]]), np.array([0.6, 0.0])).tolist()
    [2, 0]
    """
    draws, truth = np.asarray(draws), np.asarray(truth)
    if draws.ndim < 2 or draws.shape[:1] + draws.shape[2:] != truth.shape:
        raise ValueError(
            f"sbc_ranks: draws must have shape (N, L, ...) and truth (N, ...); got "
            f"{draws.shape} and {truth.shape}."
        )
    below = np.sum(draws < truth[:, None], axis=1)
    ties = np.sum(draws == truth[:, None], axis=1)
    if not ties.any():
        return below.astype(np.int64)
    rng = np.random.default_rng(seed)
    return (below + rng.integers(0, ties + 1)).astype(np.int64)


def _rank_bins(num_draws: int, n: int, bins: int):
    """Bin index of every rank value ``0..L``: at most ``bins`` bins, each expecting >= 5.

    Adjacent rank values are pooled into ``b`` near-equal bins, ``b`` the largest number
    up to ``bins`` whose narrowest bin expects at least 5 ranks (Cochran's rule); ``None``
    when not even two bins do.
    """
    values = num_draws + 1
    b = min(bins, values)
    while b >= 2 and n * (values // b) / values < MIN_EXPECTED:
        b -= 1
    if b < 2:
        return None
    return (np.arange(values) * b) // values


def rank_chi_square(ranks, num_draws: int, *, bins: int = 20):
    """Pearson's chi-square test that ranks are uniform on ``0, ..., num_draws``.

    Parameters
    ----------
    ranks : array_like of int, shape (N,)
        The ranks of one quantity.
    num_draws : int
        ``L``, the number of posterior draws each rank was taken among.
    bins : int
        Number of bins wanted. Fewer are used when there are fewer rank values, or when a
        bin would expect fewer than 5 ranks (``bins <= N / 5``; uneven bins are merged).

    Returns
    -------
    dict
        ``statistic``, ``pvalue`` (:func:`scipy.stats.chisquare`), ``bins`` (the number
        used), ``observed`` and ``expected`` counts and ``edges`` (the first rank of each
        bin). ``None`` when ``N < 10``: two bins of 5 are the least the test needs.

    Examples
    --------
    >>> import numpy as np
    >>> from mcmc_customgrad.diagnostics.calibration import rank_chi_square
    >>> out = rank_chi_square(np.arange(100) % 10, num_draws=9, bins=5)
    >>> out["bins"], float(out["statistic"]), float(out["pvalue"])
    (5, 0.0, 1.0)
    """
    ranks = np.asarray(ranks)
    n = ranks.shape[0]
    if ranks.ndim != 1 or not np.issubdtype(ranks.dtype, np.integer):
        raise ValueError(f"rank_chi_square: ranks must be a 1-d int array, got {ranks.dtype}.")
    if n and (ranks.min() < 0 or ranks.max() > num_draws):
        raise ValueError(f"rank_chi_square: ranks must lie in 0..{num_draws}.")
    of_value = _rank_bins(num_draws, n, bins)
    if of_value is None:
        return None
    b = int(of_value[-1]) + 1
    width = np.bincount(of_value, minlength=b)
    expected = n * width / (num_draws + 1)
    observed = np.bincount(of_value[ranks], minlength=b)
    result = stats.chisquare(observed, expected)
    edges = np.concatenate([[0], np.cumsum(width)[:-1]])
    return {
        "statistic": float(result.statistic),
        "pvalue": float(result.pvalue),
        "bins": b,
        "observed": observed,
        "expected": expected,
        "edges": edges,
    }


def _ecdf_points(num_draws: int, n: int):
    """Thresholds ``t_k`` in rank space and ``p_k = P(rank <= t_k)`` under uniformity."""
    values = num_draws + 1
    k = min(n, values)
    t = np.unique(np.ceil(np.arange(1, k) * values / k).astype(int) - 1)
    return t, (t + 1) / values


def _ecdf_counts(ranks, thresholds):
    """``#(ranks <= t_k)`` for every threshold, along the last axis."""
    return np.sum(np.asarray(ranks)[..., None, :] <= thresholds[:, None], axis=-1)


def ecdf_bands(
    num_simulations: int,
    num_draws: int,
    *,
    alpha: float | tuple = 0.05,
    num_trials: int = 10_000,
    seed: int = 0,
):
    """Simultaneous ``1 - alpha`` bands for the ECDF of uniform ranks (Säilynoja et al. 2022).

    The ECDF of ``N`` ranks on ``0, ..., L`` is read at ``K - 1`` evaluation points with
    ``K = min(N, L + 1)``: ``F(t_k) = #(rank <= t_k) / N`` with ``t_k`` spread evenly
    over the rank values. Under uniformity each ``N F(t_k)`` is Binomial(``N``, ``p_k``),
    ``p_k = (t_k + 1) / (L + 1)``, and the band at ``t_k`` is the central binomial
    interval of level ``1 - gamma``. The adjusted level ``gamma`` is found by *simulation*
    (the paper's Section 2.2): ``num_trials`` uniform rank samples (multinomial counts,
    numpy, seeded) give the distribution of ``min_k 2 min(cdf, sf)``, the smallest
    pointwise two-sided tail probability, and ``gamma`` is its ``alpha`` quantile, so that
    the whole ECDF leaves the band with probability ``alpha``.

    Parameters
    ----------
    num_simulations : int
        ``N``, the number of ranks.
    num_draws : int
        ``L``: ranks lie in ``0, ..., L``.
    alpha : float or tuple of float
        Family-wise level(s): one band per value.
    num_trials : int
        Uniform samples simulated to calibrate ``gamma``.
    seed : int
        Seed of the simulation.

    Returns
    -------
    dict
        ``thresholds`` (``t_k``), ``p`` (``p_k``), ``bands`` (a dict ``alpha ->
        (lower, upper)`` of integer counts: the ECDF is inside when ``lower <= N F(t_k)
        <= upper`` at every ``k``), ``gamma`` (``alpha -> gamma``) and ``null`` (the
        simulated statistics, sorted, for p-values; see :func:`_ecdf_pvalue`).

    Examples
    --------
    >>> import numpy as np
    >>> from mcmc_customgrad.diagnostics.calibration import ecdf_bands
    >>> out = ecdf_bands(50, 99, alpha=0.05, num_trials=2000)
    >>> len(out["thresholds"]), round(float(out["gamma"][0.05]), 3) < 0.05
    (49, True)
    >>> lower, upper = out["bands"][0.05]
    >>> bool(np.all(lower <= 50 * out["p"])) and bool(np.all(50 * out["p"] <= upper))
    True
    """
    n, values = int(num_simulations), int(num_draws) + 1
    if n < 1 or values < 2:
        raise ValueError(
            f"ecdf_bands: need num_simulations >= 1 and num_draws >= 1, got {n} and {num_draws}."
        )
    alphas = (alpha,) if np.isscalar(alpha) else tuple(alpha)
    for a in alphas:
        if not 0 < a < 1:
            raise ValueError(f"ecdf_bands: alpha must lie in (0, 1), got {a!r}.")
    table, null = _ecdf_null(n, int(num_draws), int(num_trials), int(seed))
    t, p = _ecdf_points(int(num_draws), n)
    out = {"thresholds": t, "p": p, "bands": {}, "gamma": {}, "null": null, "table": table}
    for a in alphas:
        if t.size == 0:
            out["gamma"][a], out["bands"][a] = 1.0, (np.zeros(0, int), np.zeros(0, int))
            continue
        # gamma is the order statistic at a * num_trials: fewer than that many simulated
        # samples have a smaller statistic, and those are exactly the ones outside.
        gamma = float(null[min(math.floor(a * null.size), null.size - 1)])
        inside = table >= gamma
        lower = np.argmax(inside, axis=1)
        upper = n - np.argmax(inside[:, ::-1], axis=1)
        out["gamma"][a], out["bands"][a] = gamma, (lower, upper)
    return out


@lru_cache(maxsize=32)
def _ecdf_null(n: int, num_draws: int, num_trials: int, seed: int):
    """Pointwise statistics for every count, and the simulated null of their minimum.

    ``table[k, x] = min(1, 2 min(P(X <= x), P(X >= x)))`` with ``X ~ Binomial(n, p_k)``:
    the two-sided tail probability of the count ``x`` at evaluation point ``k``. Observed
    and simulated samples, and the bands, are all read off this one table, so they agree
    exactly.
    """
    t, p = _ecdf_points(num_draws, n)
    x = np.arange(n + 1)
    table = np.minimum(
        1.0,
        2 * np.minimum(stats.binom.cdf(x, n, p[:, None]), stats.binom.sf(x - 1, n, p[:, None])),
    )
    if t.size == 0:
        return table, np.ones(1)
    rng = np.random.default_rng(seed)
    cell = np.diff(np.concatenate([[0.0], p, [1.0]]))
    counts = np.cumsum(rng.multinomial(n, cell, size=num_trials)[:, :-1], axis=1)
    null = np.sort(_min_tail(table, counts))
    table.flags.writeable = False
    null.flags.writeable = False
    return table, null


def _min_tail(table, counts):
    """``min_k table[k, counts_k]`` along the last axis of ``counts``."""
    return table[np.arange(table.shape[0]), counts].min(axis=-1)


def _ecdf_pvalue(counts, table, null):
    """Share of uniform samples whose ECDF strays at least as far (with the +1 rule)."""
    if table.shape[0] == 0:
        return 1.0
    stat = _min_tail(table, counts)
    return float((1 + np.searchsorted(null, stat, side="right")) / (null.size + 1))


# -------------------------------------------------------------------------------- report


def _num(x) -> str:
    return "-" if math.isnan(x) else f"{x:.0f}"


@dataclasses.dataclass
class SBCReport:
    """What :func:`sbc` found: per-quantity uniformity tests, ranks and sampler health.

    Attributes
    ----------
    passed : bool
        No test rejected uniformity and (unless allowed) no simulation diverged or failed
        to start.
    failures : list of str
        One line per failed check: the quantity, the statistic, its value, the threshold.
    rows : list of dict
        One per test quantity: ``quantity``, ``chi2``, ``bins``, ``chi2_p``, ``ecdf_p``,
        ``ecdf_outside`` (evaluation points outside the adjusted band), ``ess_min``,
        ``ess_median`` (per-simulation ESS of the parameter's chains; ``nan`` for the
        log-likelihood), ``passed``.
    ranks : dict
        Quantity name (``mu``, ``x[0]``, ..., ``log_likelihood``) -> int array
        ``(num_simulations,)`` in ``0, ..., num_draws``.
    num_simulations, num_draws, alpha, alpha_test : int, int, float, float
        ``N``, ``L``, the family-wise level and the per-test level after Bonferroni.
    divergences, solver_failures, warmup_divergences : numpy.ndarray
        Per simulation: post-warmup divergent transitions (not counting failed inner
        solves), transitions that met a non-finite log-density (failed solves, rejected),
        and divergences during warmup.
    init_failures : numpy.ndarray
        Per simulation: chains that found no finite starting point.
    truth : dict
        Quantity name -> the true value in every simulation.
    notes : list of str
        Information that is not a failure (too few simulations for a test, low ESS).
    compile_seconds, run_seconds : float
        Time spent compiling (all batches share one program) and running.
    num_tests : int
        Uniformity tests run (the chi-square and the ECDF test per quantity).
    checks : list of Check
        Every judged check, the uniformity tests and the sampler's (divergences, chains
        without a start): :class:`~mcmc_customgrad.diagnostics._report.Check` records,
        whose failed ``message`` s are ``failures``.

    Examples
    --------
    >>> import numpy as np
    >>> from mcmc_customgrad.diagnostics.calibration import SBCReport
    >>> report = SBCReport.from_ranks({"mu": np.arange(60) % 20}, num_draws=19)
    >>> report.passed, report.rows[0]["bins"]
    (True, 10)
    >>> print(str(report).splitlines()[0])  # doctest: +NORMALIZE_WHITESPACE
    PASSED: all 2 checks, simulation-based calibration (2 uniformity tests, 60 simulations,
    L = 19 draws, Bonferroni alpha = 0.025)
    """

    passed: bool
    failures: list
    rows: list
    ranks: dict
    num_simulations: int
    num_draws: int
    alpha: float
    alpha_test: float
    bins: int = 20
    divergences: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, int))
    solver_failures: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, int))
    warmup_divergences: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, int))
    init_failures: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, int))
    truth: dict = dataclasses.field(default_factory=dict)
    notes: list = dataclasses.field(default_factory=list)
    compile_seconds: float = 0.0
    run_seconds: float = 0.0
    num_tests: int = 0
    checks: list = dataclasses.field(default_factory=list)
    _ecdf: dict = dataclasses.field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_ranks(
        cls,
        ranks: Mapping,
        num_draws: int,
        *,
        bins: int = 20,
        alpha: float = 0.05,
        ecdf_trials: int = 10_000,
        seed: int = 0,
        allow_divergences: bool = False,
        **fields,
    ) -> SBCReport:
        """Run the uniformity tests on given ranks (the statistics half of :func:`sbc`).

        Each quantity gets a chi-square test (when there are at least 10 ranks) and an
        ECDF test, each at ``alpha / (number of tests)`` (Bonferroni over quantities and
        the two tests), so that a calibrated model fails with probability at most
        ``alpha``.

        Parameters
        ----------
        ranks : dict
            Quantity name -> int ranks in ``0..num_draws``, all of one length ``N``.
        num_draws : int
            ``L``.
        bins : int
            Chi-square bins wanted (see :func:`rank_chi_square`).
        alpha : float
            Family-wise level.
        ecdf_trials : int
            Uniform samples simulated for the ECDF bands (see :func:`ecdf_bands`).
        seed : int
            Seed of that simulation.
        allow_divergences : bool
            Report ``divergences`` (a field) without failing.
        **fields
            Further :class:`SBCReport` fields (sampler statistics, notes, timings).

        Returns
        -------
        SBCReport

        Examples
        --------
        >>> import numpy as np
        >>> from mcmc_customgrad.diagnostics.calibration import SBCReport
        >>> skewed = np.minimum(np.arange(60) % 20, 5)   # piled up at rank 5
        >>> SBCReport.from_ranks({"mu": skewed}, num_draws=19).passed
        False
        """
        if not ranks:
            raise ValueError("SBCReport.from_ranks: no quantities given.")
        if not 0 < alpha < 1:
            raise ValueError(f"sbc: alpha must lie in (0, 1), got {alpha!r}.")
        ranks = {k: np.asarray(v, dtype=np.int64) for k, v in ranks.items()}
        n = {v.shape for v in ranks.values()}
        if len(n) != 1 or len(next(iter(n))) != 1:
            raise ValueError(f"SBCReport.from_ranks: ranks must be 1-d of one length, got {n}.")
        n = next(iter(n))[0]
        num_draws = check_int("sbc", "num_draws", num_draws, 1)
        for name, r in ranks.items():
            if n and (r.min() < 0 or r.max() > num_draws):
                raise ValueError(
                    f"SBCReport.from_ranks: ranks of {name!r} must lie in 0..{num_draws}, got "
                    f"{r.min()}..{r.max()}."
                )
        chi_ok = _rank_bins(num_draws, n, bins) is not None
        num_tests = len(ranks) * (2 if chi_ok else 1)
        alpha_test = alpha / num_tests
        ecdf = ecdf_bands(n, num_draws, alpha=(0.05, alpha_test), num_trials=ecdf_trials, seed=seed)
        t = ecdf["thresholds"]
        lower, upper = ecdf["bands"][alpha_test]
        ess = fields.pop("ess", {})
        rows = []
        notes = list(fields.pop("notes", []))
        if not chi_ok:
            notes.append(
                f"{n} simulations are too few for the chi-square test (it needs at least "
                f"{2 * int(MIN_EXPECTED)}); only the ECDF test ran."
            )
        if t.size == 0:
            notes.append("one simulation gives no ECDF test; run more simulations.")
        checks = []
        for name, r in ranks.items():
            row = {"quantity": name}
            chi = rank_chi_square(r, num_draws, bins=bins) if chi_ok else None
            judged = []
            if chi is not None:
                row.update(chi2=chi["statistic"], bins=chi["bins"], chi2_p=chi["pvalue"])
                judged.append(
                    Check(
                        "chi-square",
                        chi["pvalue"],
                        f"p >= {alpha_test:.3g}",
                        chi["pvalue"] >= alpha_test,
                        f"{name}: chi-square = {chi['statistic']:.3g} over {chi['bins']} bins, "
                        f"p = {chi['pvalue']:.3g} < {alpha_test:.3g} (ranks not uniform)",
                        parameter=name,
                    )
                )
            else:
                row.update(chi2=math.nan, bins=0, chi2_p=math.nan)
            counts = _ecdf_counts(r, t)
            outside = int(np.sum((counts < lower) | (counts > upper)))
            row.update(
                ecdf_p=_ecdf_pvalue(counts, ecdf["table"], ecdf["null"]), ecdf_outside=outside
            )
            level = 100 * (1 - alpha_test)
            judged.append(
                Check(
                    "rank ECDF inside its band",
                    outside,
                    "0 points outside",
                    outside == 0,
                    f"{name}: the rank ECDF leaves the simultaneous {level:.3g}% band at "
                    f"{outside} of {t.size} points (ECDF p = {row['ecdf_p']:.3g}, threshold "
                    f"{alpha_test:.3g})",
                    parameter=name,
                )
            )
            checks += judged
            ok = all(c.passed for c in judged)
            e = np.asarray(ess.get(name, []), float)
            row.update(
                ess_min=float(e.min()) if e.size else math.nan,
                ess_median=float(np.median(e)) if e.size else math.nan,
                passed=ok,
            )
            rows.append(row)
        low = {k: int(np.sum(np.asarray(v) < num_draws)) for k, v in ess.items()}
        low = {k: v for k, v in low.items() if v}
        if low:
            worst = ", ".join(f"{k} in {v}" for k, v in sorted(low.items(), key=lambda kv: -kv[1]))
            notes.append(
                f"ESS below L = {num_draws} in some simulations ({worst} of {n}): the "
                "thinned draws are autocorrelated, which bends the ranks towards the ends; "
                "raise num_samples."
            )
        if np.asarray(fields.get("divergences", ())).size:
            checks += _sampler_checks(fields, n, allow_divergences)
        failures = failures_of(checks)
        return cls(
            passed=not failures,
            failures=failures,
            rows=rows,
            checks=checks,
            ranks=ranks,
            num_simulations=n,
            num_draws=num_draws,
            alpha=alpha,
            alpha_test=alpha_test,
            bins=bins,
            notes=notes,
            num_tests=num_tests,
            _ecdf=ecdf,
            **fields,
        )

    # ------------------------------------------------------------------ presentation
    @property
    def table(self) -> str:
        """The rows as a Markdown table."""
        head = (
            "| quantity | chi2 | bins | chi2 p | ECDF p | ECDF outside | ESS min | ESS median | |"
        )
        lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        for r in self.rows:
            lines.append(
                f"| {r['quantity']} | {r['chi2']:.3g} | {r['bins']} | {r['chi2_p']:.3g} | "
                f"{r['ecdf_p']:.3g} | {r['ecdf_outside']} | {_num(r['ess_min'])} | "
                f"{_num(r['ess_median'])} | {'ok' if r['passed'] else 'FAIL'} |"
            )
        return "\n".join(lines)

    def _sampler_line(self) -> str:
        n = self.num_simulations
        d, s, w = self.divergences, self.solver_failures, self.warmup_divergences
        if d.size == 0:
            return ""
        return (
            f"Sampler: {int(d.sum())} divergent transitions in {int(np.sum(d > 0))} of {n} "
            f"simulations; {int(s.sum())} failed inner solves (rejected proposals) in "
            f"{int(np.sum(s > 0))}; {int(w.sum())} warmup divergences; "
            f"compile {self.compile_seconds:.1f} s, run {self.run_seconds:.1f} s."
        )

    def _verdict(self) -> str:
        what = (
            f"simulation-based calibration ({self.num_tests} uniformity tests, "
            f"{self.num_simulations} simulations, L = {self.num_draws} draws, "
            f"Bonferroni alpha = {self.alpha_test:.3g})"
        )
        return verdict_of(self.checks, what)

    def __str__(self):
        parts = [self._verdict(), "", self.table]
        line = self._sampler_line()
        if line:
            parts += ["", line]
        if self.failures:
            parts += ["", "Failures:"] + [f"- {f}" for f in self.failures]
        if self.notes:
            parts += ["", "Notes:"] + [f"- {n}" for n in self.notes]
        return "\n".join(parts)

    def to_markdown(self) -> str:
        """The report as Markdown: a heading with the verdict, the table, failures, notes.

        Examples
        --------
        >>> import numpy as np
        >>> from mcmc_customgrad.diagnostics.calibration import SBCReport
        >>> md = SBCReport.from_ranks({"mu": np.arange(40) % 10}, num_draws=9).to_markdown()
        >>> md.splitlines()[0]
        '### Simulation-based calibration: PASSED'
        """
        verdict = "PASSED" if self.passed else "FAILED"
        parts = [f"### Simulation-based calibration: {verdict}", "", self._verdict(), ""]
        parts.append(self.table)
        line = self._sampler_line()
        if line:
            parts += ["", line]
        if self.failures:
            parts += ["", "**Failures**", ""] + [f"- {f}" for f in self.failures]
        if self.notes:
            parts += ["", "**Notes**", ""] + [f"- {n}" for n in self.notes]
        return "\n".join(parts) + "\n"

    def plot(self, path, *, max_columns: int = 4) -> str:
        """Rank histograms and ECDF-difference plots with simultaneous bands, as a PNG.

        Top of each pair: the rank histogram over the chi-square bins, with the expected
        count and its pointwise 99% binomial range shaded (Talts et al. 2018). Below:
        ``F(t) - p`` (the rank ECDF minus the uniform CDF) with the simultaneous 95% band
        shaded and the Bonferroni-adjusted band the test uses dashed (Säilynoja et al.
        2022); a calibrated quantity stays inside both.

        Parameters
        ----------
        path : str or path-like
            Where to write the PNG.
        max_columns : int
            Quantities per row of the figure.

        Returns
        -------
        str
            ``path``.

        Examples
        --------
        >>> import os, tempfile
        >>> import numpy as np
        >>> from mcmc_customgrad.diagnostics.calibration import SBCReport
        >>> report = SBCReport.from_ranks({"mu": np.arange(40) % 10}, num_draws=9)
        >>> path = report.plot(os.path.join(tempfile.mkdtemp(), "sbc.png"))
        >>> os.path.getsize(path) > 0
        True
        """
        from matplotlib.figure import Figure

        names = list(self.ranks)
        cols = max(1, min(len(names), int(max_columns)))
        blocks = math.ceil(len(names) / cols)
        fig = Figure(figsize=(3.2 * cols, 5.0 * blocks))
        axes = fig.subplots(2 * blocks, cols, squeeze=False)
        n, values = self.num_simulations, self.num_draws + 1
        ecdf = self._ecdf or ecdf_bands(n, self.num_draws, alpha=(0.05, self.alpha_test))
        t, p = ecdf["thresholds"], ecdf["p"]
        for i, name in enumerate(names):
            top, bottom = axes[2 * (i // cols), i % cols], axes[2 * (i // cols) + 1, i % cols]
            r = self.ranks[name]
            of_value = _rank_bins(self.num_draws, n, self.bins)
            if of_value is None:
                of_value = np.zeros(values, int)
            b = int(of_value[-1]) + 1
            width = np.bincount(of_value, minlength=b)
            left = np.concatenate([[0], np.cumsum(width)[:-1]])
            observed = np.bincount(of_value[r], minlength=b)
            # Heights per rank value, so that uneven bins compare fairly.
            top.bar(left, observed / width, width=width, align="edge", color="C0", alpha=0.7)
            mean = n / values
            # A bin of `width` rank values holds Binomial(n, width / values) ranks.
            lo, hi = stats.binom.ppf([0.005, 0.995], n, width[:, None] / values).T / width
            top.fill_between(
                np.r_[left, values], np.r_[lo, lo[-1]], np.r_[hi, hi[-1]], step="post",
                color="0.8", zorder=0,
            )  # fmt: skip
            top.axhline(mean, color="k", lw=0.8)
            top.set_title(name, fontsize=9)
            top.set_xlim(0, values)
            top.set_xlabel("rank", fontsize=8)
            if i % cols == 0:
                top.set_ylabel("count per rank value", fontsize=8)
            if t.size:
                counts = _ecdf_counts(r, t)
                for level, style in ((0.05, "fill"), (self.alpha_test, "--")):
                    lower, upper = ecdf["bands"][level]
                    if style == "fill":
                        bottom.fill_between(p, lower / n - p, upper / n - p, color="0.8", lw=0)
                    else:
                        bottom.plot(p, lower / n - p, "k--", lw=0.7)
                        bottom.plot(p, upper / n - p, "k--", lw=0.7)
                bottom.plot(p, counts / n - p, color="C3" if not self._row_ok(name) else "C0")
            bottom.axhline(0, color="k", lw=0.5)
            bottom.set_xlim(0, 1)
            bottom.set_xlabel("fractional rank", fontsize=8)
            if i % cols == 0:
                bottom.set_ylabel("ECDF difference", fontsize=8)
        for j in range(len(names), blocks * cols):
            axes[2 * (j // cols), j % cols].set_visible(False)
            axes[2 * (j // cols) + 1, j % cols].set_visible(False)
        fig.suptitle(
            f"SBC: {n} simulations, L = {self.num_draws}; grey: 95% simultaneous band, "
            f"dashed: {100 * (1 - self.alpha_test):.3g}% (Bonferroni)",
            fontsize=9,
        )
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        return str(path)

    def _row_ok(self, name):
        return next((r["passed"] for r in self.rows if r["quantity"] == name), True)


# ---------------------------------------------------------------------------- simulation


def _sampler_checks(fields, n, allow_divergences) -> list[Check]:
    """Post-warmup divergences (failed unless allowed) and chains without a start."""
    checks = []
    for key, what, advice in (
        (
            "divergences",
            "post-warmup divergent transitions",
            "raise target_accept or reparameterise; allow_divergences=True "
            "reports them without failing",
        ),
        ("init_failures", "chains without a finite start", "check the prior's support"),
    ):
        arr = np.asarray(fields.get(key, np.zeros(0, int)))
        total = int(arr.sum())
        checks.append(
            Check(
                key,
                total,
                "0",
                total == 0 or (key == "divergences" and allow_divergences),
                f"{key}: {total} {what} in {int(np.sum(arr > 0))} of {n} simulations "
                f"(threshold 0); {advice}",
            )
        )
    return checks


def _shapes(tree):
    """Hashable ``(treedef, ((shape, dtype), ...))`` of a pytree of arrays."""
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, tuple((tuple(np.shape(x)), str(getattr(x, "dtype", type(x)))) for x in leaves)


def _describe(shapes):
    treedef, leaves = shapes
    return str(jax.tree.unflatten(treedef, [f"{d}{list(s)}" for s, d in leaves]))


def _sim_keys(root, start, count: int):
    """Keys of simulations ``start, ..., start + count - 1``: ``fold_in(root, i)``."""
    return jax.vmap(lambda i: jax.random.fold_in(root, i))(start + jnp.arange(count))


_CACHE = LRU(8)


def _cached(key, build):
    return _CACHE.get_or_build(key, build)


def _simulate_one(problem: SBCProblem, key):
    """One simulation's ``(params, data)``: a prior draw, then data given it."""
    k_prior, k_data = jax.random.split(jax.random.fold_in(key, 0))
    params = problem.prior_sample(k_prior)
    _check_prior(problem, params)
    return params, problem.simulate(k_data, params)


def _check_prior(problem: SBCProblem, params):
    """``prior_sample``'s output has the names and shapes of ``params`` (traced or not)."""
    if not isinstance(params, Mapping):
        raise TypeError(
            f"sbc: prior_sample must return a dict of name -> array, got {type(params).__name__}."
        )
    missing = [n for n in problem.params if n not in params]
    extra = [n for n in params if n not in problem.params]
    if missing or extra:
        raise ValueError(
            f"sbc: prior_sample returned parameters that do not match params: missing "
            f"{missing}, unknown {extra}; params declares {list(problem.params)}."
        )
    for name, c in problem.params.items():
        shape = tuple(np.shape(params[name]))
        if shape != c.shape:
            raise ValueError(
                f"sbc: prior_sample returned {name!r} with shape {shape}, params declares "
                f"{c.shape}."
            )


def _simulator(problem: SBCProblem, count: int):
    """``(root, start) -> (params, data)`` for ``count`` simulations, vmapped."""

    def batch(root, start):
        return jax.vmap(lambda k: _simulate_one(problem, k))(_sim_keys(root, start, count))

    return batch


def _simulate_eagerly(problem, root, start, count):
    """Python loop over simulations (``jit_simulate=False``): shapes checked one by one."""
    out, first = [], None
    for i in range(count):
        params, data = _simulate_one(problem, jax.random.fold_in(root, start + i))
        params = (
            {k: np.asarray(v) for k, v in params.items()} if isinstance(params, Mapping) else params
        )
        data = jax.tree.map(np.asarray, data)
        shapes = _shapes(data)
        if first is None:
            first = shapes
        elif shapes != first:
            raise ValueError(
                f"sbc: simulate returned data of shapes {_describe(shapes)} in simulation "
                f"{start + i}, but {_describe(first)} in simulation {start}. Data must have fixed "
                "shapes (one compiled sampler serves every simulation): pad to the "
                "largest size and pass a mask in the data."
            )
        out.append((params, data))
    return jax.tree.map(lambda *xs: np.stack(xs), *out)


def _fitter(problem: SBCProblem, layout: Model, settings: Settings, chains, samples, num_draws):
    """``(root, start, params_true, data) -> outputs`` for one batch of simulations."""
    spec = problem.params
    dim = layout.dim
    total = chains * samples
    thin = np.floor((np.arange(num_draws) + 0.5) * total / num_draws).astype(int)

    def one(key, truth, data):
        def logdensity(u):
            return problem.logdensity(layout.to_constrained(u), data) + (
                layout.log_abs_det_jacobian(u)
            )

        k_init, k_warm, k_draw = jax.random.split(jax.random.fold_in(key, 1), 3)

        def uniform(k, first=None):  # Stan's default start, drawn afresh on each retry
            return jax.random.uniform(k, (dim,), minval=-2.0, maxval=2.0)

        start = start_fn(logdensity, uniform)
        k_first, k_retry = jax.random.split(k_init)
        first = jax.vmap(uniform)(jax.random.split(k_first, chains))
        positions, started, _ = jax.vmap(start)(jax.random.split(k_retry, chains), first)
        warm = warmup_fn(logdensity, settings)
        state, step, imm, winfo = jax.vmap(warm)(jax.random.split(k_warm, chains), positions)
        run = draws_fn(logdensity, settings, samples)
        _, records = jax.vmap(lambda s, e, m, k: run(s, e, m, k, 0, samples))(
            state, step, imm, jax.random.split(k_draw, chains)
        )
        flat = records.position.reshape(total, dim)
        constrained = jax.vmap(layout.to_constrained)(flat)
        draws = _flatten(constrained, spec, 1).reshape(chains, samples, -1)
        tr = records.transition
        out = {
            "truth": _flatten(truth, spec, 0),
            "chains": draws,
            "thinned": draws.reshape(total, -1)[thin],
            "divergences": jnp.sum(genuine_divergences(tr.diverging, tr.nonfinite)),
            "solver_failures": jnp.sum(tr.nonfinite),
            "warmup_divergences": jnp.sum(genuine_divergences(winfo.diverging, winfo.nonfinite)),
            "init_failures": jnp.sum(~started),
        }
        if problem.log_likelihood is not None:

            def total_ll(params):
                return jnp.sum(problem.log_likelihood(params, data))

            out["ll_true"] = total_ll(truth)
            out["ll_draws"] = jax.vmap(lambda u: total_ll(layout.to_constrained(u)))(flat[thin])
        return out

    def batch(root, start, truth, data):
        keys = _sim_keys(root, start, jax.tree.leaves(data)[0].shape[0])
        return jax.vmap(one)(keys, truth, data)

    return batch


def _layout(problem: SBCProblem, params0, data0) -> Model:
    """An :class:`Model` on one simulated data set: validates the log-density, holds the layout."""
    _check_prior(problem, params0)
    ll = None
    if problem.log_likelihood is not None:

        def ll(p):
            return problem.log_likelihood(p, data0)

    try:
        return Model(lambda p: problem.logdensity(p, data0), problem.params, log_likelihood_fn=ll)
    except (ValueError, TypeError) as err:
        raise type(err)(f"sbc: logdensity(params, data): {err}") from err


@surface_solver_errors
def sbc(
    model_builder,
    num_simulations: int = 200,
    *,
    num_draws: int = 99,
    num_chains: int = 2,
    num_warmup: int = 500,
    num_samples: int = 500,
    batch_size: int = 50,
    bins: int = 20,
    alpha: float = 0.05,
    seed: int = 0,
    kernel: str = "nuts",
    target_accept: float = 0.8,
    max_treedepth: int = 10,
    dense_mass: bool = False,
    allow_divergences: bool = False,
    jit_simulate: bool = True,
    ecdf_trials: int = 10_000,
) -> SBCReport:
    """Simulation-based calibration of a log-density and the sampler on it.

    For each simulation ``i``: ``theta ~ prior_sample``, ``data ~ simulate(theta)``,
    ``num_chains`` NUTS chains on ``logdensity(., data)`` after Stan's window adaptation,
    the pooled draws thinned evenly to ``num_draws`` (``L``), and the rank of every true
    scalar (and of the true-parameter log-likelihood among the draws' log-likelihoods)
    among the ``L`` draws. A right log-density gives ranks uniform on ``0..L``; a wrong
    value, gradient that breaks detailed balance, or a bug in the sampler does not
    (Talts et al. 2018; Modrák et al. 2023).

    The tests: Pearson's chi-square over ``bins`` bins (merged so that each expects at
    least 5 ranks) and the ECDF test with simultaneous bands calibrated by simulation
    (Säilynoja et al. 2022; see :func:`ecdf_bands`), each at ``alpha / (number of
    tests)`` (Bonferroni over quantities and the two tests).

    Parameters
    ----------
    model_builder : SBCProblem, object or callable
        An :class:`SBCProblem`, any object with its attributes (``params``,
        ``prior_sample``, ``simulate``, ``logdensity``, optionally ``log_likelihood``),
        or a function of no arguments returning one. The simulated data are an
        *argument* of the compiled sampler (never a closure rebuilt per simulation), so
        the whole run compiles one sampler and one simulator, whatever
        ``num_simulations``; compiled programs are cached, so a second call with the same
        ``logdensity`` and settings does not recompile, even with another simulator.
    num_simulations : int
        ``N``: 200 for continuous testing, 1,000 for a release check.
    num_draws : int
        ``L``: ranks lie in ``0..L``. Must not exceed ``num_chains * num_samples``; the
        run should give an ESS of at least ``L`` per simulation (the report notes
        simulations where it does not: autocorrelated draws bend the ranks).
    num_chains, num_warmup, num_samples : int
        Chains per simulation, warmup steps and draws per chain.
    batch_size : int
        Simulations fitted together in one ``vmap`` (memory grows with it). The last
        batch is padded with extra simulations, which are discarded, so that every batch
        runs the same compiled program. After ``jax.distributed.initialize``, the batches
        are dealt to the processes in turn (batch ``b`` to process ``b % P``) and every
        process returns the whole report, equal to one process's: choose a batch count
        that is a multiple of ``P`` so that none waits for another.
    bins : int
        Chi-square bins wanted.
    alpha : float
        Family-wise level of the uniformity tests.
    seed : int
        Simulation ``i`` uses ``fold_in(key(seed), i)`` for its prior draw, data and
        chains, whatever ``batch_size``.
    kernel, target_accept, max_treedepth, dense_mass
        As for :func:`~mcmc_customgrad.sample`.
    allow_divergences : bool
        Report post-warmup divergences without failing (by default any fails).
    jit_simulate : bool
        Trace ``prior_sample`` and ``simulate`` (default). ``False`` runs them eagerly,
        one simulation at a time, for simulators that call NumPy or SciPy; their data
        must still have one shape.
    ecdf_trials : int
        Uniform samples simulated to calibrate the ECDF bands.

    Returns
    -------
    SBCReport
        ``passed``, ``failures``, ``rows``, ``table``, ``ranks`` per quantity,
        per-simulation divergences and solver failures, ``plot(path)``.

    Raises
    ------
    TypeError
        ``model_builder`` lacks one of the four attributes, or they are not callables.
    ValueError
        A count below 1, ``num_draws`` above the draws available, ``alpha`` outside
        (0, 1), an unknown kernel, ``prior_sample`` returning other names or shapes than
        ``params``, a value outside its constraint's support, data whose shapes change
        between simulations, a log-density that is not a scalar, or fewer batches than
        processes (after ``jax.distributed.initialize``).

    Notes
    -----
    How it runs (the design decisions):

    - *The model.* An :class:`SBCProblem`: ``prior_sample(key)``, ``simulate(key,
      params)`` and ``logdensity(params, data)``, the data an explicit argument. An
      :class:`~mcmc_customgrad.Model` is built once, on the first simulated data set, to
      check the log-density (a real scalar that reads every parameter) and to provide the
      constraint transforms; inside the compiled sampler the flat density
      ``logdensity(to_constrained(u), data) + log|J(u)|`` closes over the *traced* data.
    - *Two compiled programs per configuration.* The simulator (``prior_sample`` then
      ``simulate``, vmapped over a batch) and the fitter: for each simulation of the
      batch (``vmap``), ``num_chains`` chains (``vmap``), each starting uniformly on
      ``(-2, 2)`` in the unconstrained coordinates (Stan's default; redrawn by the
      sampler's start stage, a ``while_loop``, up to 100 positions in all, until the
      log-density and its gradient are finite), Blackjax's ``window_adaptation`` for
      ``num_warmup`` steps then ``blackjax.nuts`` for ``num_samples`` (the one-chain
      functions of :func:`~mcmc_customgrad.sample`), all in one ``jit``. Batches bound
      the memory; under ``vmap`` NUTS's loops run in lock-step, so a batch takes as long
      as its slowest chain. Simulation ``i`` always uses ``fold_in(key(seed), i)``.
    - *Thinning.* The chains' draws, pooled chain after chain, are thinned to ``L`` at
      the evenly spaced indices ``floor((j + 1/2) C S / L)``, a fixed thin: the number of
      kept draws must be static in a compiled program, so it cannot follow each
      simulation's ESS. Instead the ESS of every parameter in every simulation (ArviZ's
      rank-normalised bulk ESS over the chains, the ESS of every other report) is
      reported, with a note when it falls below ``L``.
    - *Ranks.* ``#(draws < truth)`` plus a uniform share of the ties. The log-likelihood
      quantity is ``sum(log_likelihood(params, data))``: the rank of its value at the
      true parameters among its values at the ``L`` draws (Modrák et al. 2023).
    - *Sampler health.* Post-warmup divergent transitions, not counting transitions that
      met a failed inner solve, are counted per simulation and fail the check unless
      ``allow_divergences``; failed inner solves are rejected proposals (Stan's
      semantics) and are only counted, as are warmup divergences.
    - *Tests.* Chi-square over at most ``bins`` near-equal bins of adjacent rank values,
      as many as keep every expected count at 5 or more; the ECDF test at
      ``min(N, L + 1) - 1`` evaluation points with the simulation-calibrated
      simultaneous band of :func:`ecdf_bands` (not the optimisation variant). Both at
      ``alpha / (2 Q)`` for ``Q`` quantities: a calibrated model fails with probability
      at most ``alpha``.
    - *Caching.* Compiled programs are kept (8 at most) keyed on the functions,
      settings and shapes, so a miscalibrated variant that shares the ``logdensity``
      reuses the sampler compiled for the right one.

    Examples
    --------
    A conjugate normal model, a handful of short simulations (a real check uses 200):

    >>> import jax, jax.numpy as jnp
    >>> from jax.scipy.stats import norm
    >>> import mcmc_customgrad as mcg
    >>> from mcmc_customgrad.diagnostics.calibration import SBCProblem, sbc
    >>> problem = SBCProblem(
    ...     params={"mu": mcg.real()},
    ...     prior_sample=lambda key: {"mu": jax.random.normal(key)},
    ...     simulate=lambda key, p: {"y": p["mu"] + jax.random.normal(key, (3,))},
    ...     logdensity=lambda p, d: norm.logpdf(p["mu"]) + norm.logpdf(d["y"], p["mu"]).sum(),
    ...     log_likelihood=lambda p, d: norm.logpdf(d["y"], p["mu"]),
    ... )
    >>> # MALA compiles fastest; NUTS (the default) is what a real check uses.
    >>> report = sbc(problem, 12, num_draws=9, num_chains=1, num_warmup=60, num_samples=60,
    ...              kernel="mala", ecdf_trials=2000)
    >>> sorted(report.ranks), report.ranks["mu"].shape
    (['log_likelihood', 'mu'], (12,))
    >>> bool(((report.ranks["mu"] >= 0) & (report.ranks["mu"] <= 9)).all())
    True
    """
    num_simulations = check_int("sbc", "num_simulations", num_simulations, 1)
    num_draws = check_int("sbc", "num_draws", num_draws, 1)
    num_chains = check_int("sbc", "num_chains", num_chains, 1)
    num_warmup = check_int("sbc", "num_warmup", num_warmup, 0)
    num_samples = check_int("sbc", "num_samples", num_samples, 1)
    batch_size = check_int("sbc", "batch_size", batch_size, 1)
    bins = check_int("sbc", "bins", bins, 2)
    ecdf_trials = check_int("sbc", "ecdf_trials", ecdf_trials, 100)
    max_treedepth = check_int("sbc", "max_treedepth", max_treedepth, 1)
    if num_draws > num_chains * num_samples:
        raise ValueError(
            f"sbc: num_draws = {num_draws} exceeds the {num_chains * num_samples} draws of "
            f"{num_chains} chains x {num_samples}; raise num_samples (thinning keeps an ESS "
            "near L only with several draws per kept one) or lower num_draws."
        )
    if not 0 < alpha < 1:
        raise ValueError(f"sbc: alpha must lie in (0, 1), got {alpha!r}.")
    if not 0 < target_accept < 1:
        raise ValueError(f"sbc: target_accept must lie in (0, 1), got {target_accept!r}.")
    if kernel not in KERNELS:
        raise ValueError(f"sbc: unknown kernel {kernel!r}; choose one of {KERNELS}.")
    problem = _resolve_problem(model_builder)
    settings = Settings(
        kernel=kernel,
        target_accept=float(target_accept),
        max_treedepth=max_treedepth,
        dense_mass=bool(dense_mass),
        num_warmup=num_warmup,
    )
    root = jax.random.key(seed)
    batch_size = min(batch_size, num_simulations)
    if -(-num_simulations // batch_size) < process_count():
        raise ValueError(
            f"sbc: {num_simulations} simulations in batches of {batch_size} make fewer batches "
            f"than the {process_count()} processes that share them; lower batch_size to at "
            f"most {max(1, num_simulations // process_count())} so that every process fits one."
        )

    def simulate(start):
        if not jit_simulate:
            return _simulate_eagerly(problem, root, start, batch_size)
        fn = _cached(
            ("simulate", problem.prior_sample, problem.simulate, batch_size),
            lambda: jax.jit(_simulator(problem, batch_size)),
        )
        try:
            return jax.tree.map(np.asarray, fn(root, start))
        except _TRACER_ERRORS as err:
            raise ValueError(
                "sbc: prior_sample and simulate must be traceable by JAX with outputs of "
                "fixed shapes (one compiled sampler serves every simulation), but they turn "
                f"a traced value into a Python or NumPy value: {type(err).__name__}. Draw "
                "with jax.random and the key; pad data whose size varies and pass a mask; or "
                "pass jit_simulate=False to run a NumPy simulator eagerly."
            ) from err

    truth, data = simulate(0)
    layout = _layout(
        problem, {k: np.asarray(v)[0] for k, v in truth.items()}, jax.tree.map(lambda x: x[0], data)
    )
    data_shapes = _shapes(jax.tree.map(lambda x: x[0], data))
    sizes = (num_chains, num_samples, num_draws)
    spec = tuple(problem.params.items())
    fit_key = ("fit", problem.logdensity, problem.log_likelihood, spec, settings, sizes)

    names = _component_names(problem.params)
    _check_support(problem, truth, 0, data)
    tick = time.perf_counter()
    args = (root, 0, truth, data)
    compiled = _cached(
        (fit_key, _shapes((truth, data))),
        lambda: jax.jit(_fitter(problem, layout, settings, *sizes)).lower(*args).compile(),
    )
    compile_seconds, run_seconds, results = time.perf_counter() - tick, 0.0, []
    # With several processes (jax.distributed), each fits every P-th batch.
    starts = range(0, num_simulations, batch_size)
    mine = [starts[i] for i in my_share(len(starts))]
    for start in mine:
        if start:
            truth, data = simulate(start)
            shapes = _shapes(jax.tree.map(lambda x: x[0], data))
            if shapes != data_shapes:  # only an eager simulator (jit_simulate=False) can
                raise ValueError(
                    f"sbc: simulate returned data of shapes {_describe(shapes)} in simulations "
                    f"{start}.., but {_describe(data_shapes)} in simulation 0. Data must have "
                    "fixed shapes: pad to the largest size and pass a mask in the data."
                )
            _check_support(problem, truth, start, data, count=num_simulations - start)
        tick = time.perf_counter()
        results.append(jax.tree.map(np.asarray, compiled(root, start, truth, data)))
        run_seconds += time.perf_counter() - tick
    out = _join_batches(results, mine, batch_size, num_simulations)

    ranks = {}
    rank_values = sbc_ranks(out["thinned"], out["truth"], seed=seed)
    for j, name in enumerate(names):
        ranks[name] = rank_values[:, j]
    # ArviZ's bulk ESS of every parameter in every simulation, in one call: the
    # simulations become an extra axis of (chain, draw, simulation, parameter) draws.
    per_sim = _arviz.ess_draws(np.moveaxis(out["chains"], 0, 2), method="bulk")
    ess = {name: per_sim[:, j] for j, name in enumerate(names)}
    if "ll_true" in out:
        ranks[LOG_LIKELIHOOD] = sbc_ranks(out["ll_draws"], out["ll_true"], seed=seed + 1)
    notes = []
    if problem.log_likelihood is None:
        notes.append(
            "no log_likelihood given: the log-likelihood test quantity, the one most "
            "sensitive to errors that keep the marginals, was not checked."
        )
    truth_by_name = {name: out["truth"][:, j] for j, name in enumerate(names)}
    return SBCReport.from_ranks(
        ranks,
        num_draws,
        bins=bins,
        alpha=alpha,
        ecdf_trials=ecdf_trials,
        seed=seed,
        ess=ess,
        notes=notes,
        divergences=out["divergences"].astype(int),
        solver_failures=out["solver_failures"].astype(int),
        warmup_divergences=out["warmup_divergences"].astype(int),
        init_failures=out["init_failures"].astype(int),
        truth=truth_by_name,
        compile_seconds=compile_seconds,
        run_seconds=run_seconds,
        allow_divergences=allow_divergences,
    )


def _join_batches(results, starts, batch_size, num_simulations):
    """Every batch's fits, padding cut, in simulation order (from every process)."""
    local = {k: np.concatenate([r[k] for r in results]) for k in results[0]}
    if process_count() == 1:
        return {k: v[:num_simulations] for k, v in local.items()}
    index = np.concatenate([start + np.arange(batch_size) for start in starts])
    joined = gather_rows(local, index)
    return {k: v[:num_simulations] for k, v in joined.items()}


def _check_support(problem, truth, start, data=None, count=None):
    """Every true value inside its support, every data value finite (per simulation).

    Only the first ``count`` simulations of the batch are checked: the rest pad the last
    batch and are discarded.
    """
    truth = jax.tree.map(lambda x: np.asarray(x)[:count], truth)
    data = jax.tree.map(lambda x: np.asarray(x)[:count], data)
    for path, leaf in jax.tree_util.tree_leaves_with_path(data):
        leaf = np.asarray(leaf)
        if np.issubdtype(leaf.dtype, np.inexact):
            bad = np.flatnonzero(~np.isfinite(leaf.reshape(leaf.shape[0], -1)).all(axis=1))
            if bad.size:
                raise ValueError(
                    f"sbc: simulate returned non-finite data{jax.tree_util.keystr(path)} in "
                    f"simulation {start + int(bad[0])}; the simulator must give finite data."
                )
    for name, c in problem.params.items():
        values = np.asarray(truth[name])
        bad = [i for i in range(values.shape[0]) if not c.check(values[i])]  # per simulation
        if bad:
            raise ValueError(
                f"sbc: prior_sample drew {name!r} = {values[bad[0]]!r} in simulation "
                f"{start + bad[0]}, outside the support of {c!r}. The prior must draw "
                "inside the parameter's constraint."
            )
