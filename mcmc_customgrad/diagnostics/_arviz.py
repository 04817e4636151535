"""Every call into ArviZ lives here, so that the move to ArviZ 1.x is a one-file change.

ArviZ 0.23 (Python 3.11) and ArviZ 1.x (Python 3.12+) differ in how InferenceData is
built and stored; the rest of the package only sees the functions below.
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np

__all__ = [
    "arviz",
    "groups",
    "is_inference_data",
    "to_inference_data",
    "summary",
    "ess",
    "rhat",
    "bfmi",
    "save",
    "load",
    "attrs",
    "ess_draws",
    "rhat_draws",
    "plot_kde",
    "plot_rank",
    "plot_trace",
]


def _import_arviz():
    with warnings.catch_warnings():
        # ArviZ 0.23 announces its 1.0 refactor with a FutureWarning at import. This module
        # is where that refactor is handled, so the announcement is not news to our users.
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"arviz(\.|$)")
        import arviz

    return arviz


arviz = _import_arviz()


def groups(idata) -> list[str]:
    """Names of the groups of ``idata`` (``"posterior"``, ``"sample_stats"``, ...).

    ArviZ 0.23's ``InferenceData.groups()`` is a method; a 1.x ``DataTree`` has a
    ``groups`` property of paths (``"/posterior"``). Everything else goes through here.
    """
    found = idata.groups() if callable(idata.groups) else idata.groups
    return [g.strip("/") for g in found if g.strip("/")]


def is_inference_data(obj) -> bool:
    """Whether ``obj`` is a run as :func:`to_inference_data` builds (any ArviZ version)."""
    if not hasattr(obj, "groups"):
        return False
    try:
        return "posterior" in groups(obj)
    except Exception:  # something else with a ``groups`` attribute
        return False


def to_inference_data(posterior, sample_stats, log_likelihood=None, attrs=None, dims=None):
    """Build an ``InferenceData`` from dicts of ``(chain, draw, ...)`` NumPy arrays."""
    groups = {"posterior": posterior, "sample_stats": sample_stats}
    if log_likelihood:
        groups["log_likelihood"] = log_likelihood
    return arviz.from_dict(**groups, attrs=dict(attrs or {}), dims=dims)


def summary(idata, var_names=None):
    """ArviZ's summary table (a pandas DataFrame) of the posterior group."""
    with warnings.catch_warnings():
        # Short test runs give chains too short for some statistics; the sampler's own
        # warnings say so in words, the table shows NaN.
        warnings.filterwarnings("ignore", category=RuntimeWarning)
        return arviz.summary(idata, var_names=var_names, round_to="none")


def _flat(dataset) -> dict:
    """``{label: value}`` with one entry per scalar component (``"x[3]"``)."""
    out = {}
    for name, da in dataset.data_vars.items():
        values = np.asarray(da.values)
        if values.ndim == 0:
            out[name] = float(values)
        else:
            for idx in np.ndindex(values.shape):
                out[f"{name}[{','.join(map(str, idx))}]"] = float(values[idx])
    return out


def ess(idata, method="bulk") -> dict:
    """Effective sample size per scalar parameter, ``{"x[0]": 812.3, ...}``."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=RuntimeWarning)
        return _flat(arviz.ess(idata, method=method))


def rhat(idata) -> dict:
    """Rank-normalised split R-hat per scalar parameter."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=RuntimeWarning)
        return _flat(arviz.rhat(idata))


def bfmi(idata) -> np.ndarray:
    """Estimated Bayesian fraction of missing information (E-BFMI), one per chain."""
    return np.asarray(arviz.bfmi(idata), dtype=float)


def save(idata, path) -> str:
    """Write ``idata`` to a netCDF file; returns the path."""
    return idata.to_netcdf(str(path))


def load(path):
    """Read an ``InferenceData`` written by :func:`save` (netCDF; nothing is unpickled)."""
    return arviz.from_netcdf(str(path))


def attrs(idata) -> dict:
    """Run attributes: the top-level ones, overridden by those of the ``posterior`` group.

    :func:`~mcmc_customgrad.sample` writes its attributes (``num_grad_evals``,
    ``sampling_seconds``, ...) on every group; :func:`to_inference_data` puts ``attrs`` on
    the InferenceData itself. Either way they are found here.
    """
    out = dict(getattr(idata, "attrs", None) or {})
    if "posterior" in idata.groups():
        out.update(idata.posterior.attrs)
    return out


def _dataset(draws):
    draws = np.asarray(draws, dtype=float)
    if draws.ndim < 2:
        raise ValueError(f"draws need shape (chain, draw, ...), got shape {draws.shape}")
    return arviz.convert_to_dataset({"v": draws})


def ess_draws(draws, method="bulk") -> np.ndarray:
    """Effective sample size of ``(chain, draw, *shape)`` draws, one per element of ``shape``.

    ``method`` is ArviZ's: ``"bulk"``, ``"tail"``, ``"mean"`` (for the MCSE of a mean),
    ``"sd"``, ... A constant series gives NaN.
    """
    with warnings.catch_warnings():
        # A constant series (an indicator that is never true) has no autocorrelation to
        # estimate: ArviZ divides by a zero variance and returns NaN, which callers handle.
        warnings.filterwarnings("ignore", category=RuntimeWarning)
        return np.asarray(arviz.ess(_dataset(draws), method=method)["v"].values, dtype=float)


def rhat_draws(draws) -> np.ndarray:
    """Rank-normalised split R-hat of ``(chain, draw, *shape)`` draws, one per element."""
    with warnings.catch_warnings():
        # As in ess_draws: NaN for a constant series.
        warnings.filterwarnings("ignore", category=RuntimeWarning)
        return np.asarray(arviz.rhat(_dataset(draws))["v"].values, dtype=float)


@contextlib.contextmanager
def _quiet_plotting():
    """Context in which ArviZ 0.23's matplotlib backend may run under ``-W error``.

    ArviZ 0.23 normalises keyword aliases by passing a dict to
    ``matplotlib.cbook.normalize_kwargs``, which matplotlib 3.11 deprecates
    (``MatplotlibDeprecationWarning``: "Passing a dict or None as alias_mapping ..."). The
    call is inside ArviZ, our arguments are fine, and ArviZ 1.x no longer makes it, so only
    that message is silenced, and only around our plotting calls.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Passing a dict or None as alias_mapping")
        yield


def plot_kde(ax, values, *, label=None, color="C0"):
    """ArviZ's kernel density estimate of 1-d ``values`` drawn on the matplotlib axes ``ax``."""
    with _quiet_plotting():
        arviz.plot_kde(
            np.asarray(values, dtype=float).ravel(),
            ax=ax,
            label=label,
            legend=label is not None,
            plot_kwargs={"color": color},
        )
    return ax


def plot_rank(axes, columns: dict, colors="cycle"):
    """ArviZ's rank plots of ``{label: (chain, draw) array}`` on ``axes`` (one per label).

    ``colors`` gives one matplotlib colour per chain (or one for all).
    """
    data = arviz.convert_to_dataset({k: np.asarray(v, dtype=float) for k, v in columns.items()})
    with _quiet_plotting():
        arviz.plot_rank(data, ax=np.asarray(axes), colors=colors)
    return axes


def plot_trace(axes, columns: dict, colors=None):
    """ArviZ's trace plots of ``{label: (chain, draw) array}`` on ``axes`` of shape ``(n, 2)``.

    The left column shows each chain's density, the right one its draws; ``colors`` gives
    one matplotlib colour per chain.
    """
    data = arviz.convert_to_dataset({k: np.asarray(v, dtype=float) for k, v in columns.items()})
    chain_prop = {"color": list(colors)} if colors is not None else None
    with _quiet_plotting():
        arviz.plot_trace(data, axes=np.asarray(axes), compact=False, chain_prop=chain_prop)
    return axes
