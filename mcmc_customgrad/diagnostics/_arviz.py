"""Every call into ArviZ lives here, so that the move to ArviZ 1.x is a one-file change.

ArviZ 0.23 (Python 3.11) and ArviZ 1.x (Python 3.12+) differ in how InferenceData is
built and stored; the rest of the package only sees the functions below.
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = [
    "arviz",
    "to_inference_data",
    "summary",
    "ess",
    "rhat",
    "bfmi",
    "save",
    "load",
]


def _import_arviz():
    with warnings.catch_warnings():
        # ArviZ 0.23 announces its 1.0 refactor with a FutureWarning at import. This module
        # is where that refactor is handled, so the announcement is not news to our users.
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"arviz(\.|$)")
        import arviz

    return arviz


arviz = _import_arviz()


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
