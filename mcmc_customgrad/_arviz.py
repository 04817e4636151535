"""Every call into ArviZ lives here, so that the move to ArviZ 1.x is a one-file change.

ArviZ 0.23 (Python 3.11) and ArviZ 1.x (Python 3.12+) differ in how a run is built
(``from_dict(posterior=...)`` against ``from_dict({"posterior": ...})``), what it is
(``InferenceData`` against ``xarray.DataTree``), what the statistics return (Datasets
against DataTrees), the summary's column names and the plotting API. The rest of the
package only sees the functions below, which behave the same on both; ``ARVIZ_1`` says
which one is installed. The figures are drawn with matplotlib from ArviZ's kernel
density estimates, the same code on both versions.
"""

from __future__ import annotations

import functools
import importlib.metadata
import warnings
from pathlib import Path

import numpy as np

from ._args import element_label

__all__ = [
    "ARVIZ_1",
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
    "kde",
]


@functools.cache
def _az():
    """ArviZ, imported on first use.

    Its import takes ~3 s (its plotting modules), which ``import mcmc_customgrad`` (and
    every command-line call, every subprocess) would otherwise pay before anything needs
    it. ``_arviz.arviz`` (module attribute) gives the same module.
    """
    with warnings.catch_warnings():
        # ArviZ 0.23 announces its 1.0 refactor with a FutureWarning at import. This module
        # is where that refactor is handled, so the announcement is not news to our users.
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"arviz(\.|$)")
        import arviz

    return arviz


def __getattr__(name):
    if name == "arviz":  # the module itself, for code that wants it directly
        return _az()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: True under ArviZ 1.x (``arviz-base``/``arviz-stats``/``arviz-plots``, Python 3.12+),
#: read from the installed distribution's version without importing it.
ARVIZ_1 = int(importlib.metadata.version("arviz").split(".")[0]) >= 1

#: The summary's columns, in ArviZ 0.23's names and order, on both versions.
SUMMARY_COLUMNS = [
    "mean",
    "sd",
    "hdi_3%",
    "hdi_97%",
    "mcse_mean",
    "mcse_sd",
    "ess_bulk",
    "ess_tail",
    "r_hat",
]


def groups(idata) -> list[str]:
    """Names of the groups of ``idata`` (``"posterior"``, ``"sample_stats"``, ...).

    ArviZ 0.23's ``InferenceData.groups()`` is a method; under 1.x a run is a
    ``DataTree`` whose groups are its children. Everything else goes through here.
    """
    if callable(idata.groups):  # ArviZ 0.23's InferenceData
        return list(idata.groups())
    # A DataTree's ``groups`` are absolute paths of the whole subtree (a child node such as
    # ``run.posterior`` reports ``"/posterior"``), so take the node's own children.
    return list(idata.children)


def is_inference_data(obj) -> bool:
    """Whether ``obj`` is a run as :func:`to_inference_data` builds (any ArviZ version)."""
    if not hasattr(obj, "groups"):
        return False
    try:
        return "posterior" in groups(obj)
    except Exception:  # something else with a ``groups`` attribute
        return False


def to_inference_data(posterior, sample_stats, log_likelihood=None, attrs=None, dims=None):
    """Build a run, as :func:`~mcmc_customgrad.sample` returns, from arrays of draws.

    For draws made elsewhere (another sampler, a reference computed by hand) that the
    diagnostics should read: the same call works on ArviZ 0.23 and 1.x.

    Parameters
    ----------
    posterior : dict of str to array
        ``{name: (chain, draw, ...) array}``.
    sample_stats : dict of str to array
        Sampler statistics with the same leading ``(chain, draw)`` axes (``diverging``,
        ``energy``, ``n_steps``, ...); may be empty.
    log_likelihood : dict of str to array, optional
        Per-observation log-likelihoods, ``(chain, draw, observation)``.
    attrs : dict, optional
        Run attributes (settings, timings, gradient counts).
    dims : dict, optional
        Dimension names per variable, as ArviZ takes them.

    Returns
    -------
    arviz.InferenceData or xarray.DataTree
        An ``InferenceData`` under ArviZ 0.23, a ``DataTree`` under 1.x; either way with
        the groups ``posterior``, ``sample_stats`` (and ``log_likelihood``), and ``attrs``
        on the run itself.

    Examples
    --------
    >>> import numpy as np
    >>> import mcmc_customgrad as mcg
    >>> draws = np.random.default_rng(0).normal(size=(4, 1000, 2))
    >>> run = mcg.diagnostics.to_inference_data({"x": draws}, {})
    >>> run.posterior["x"].shape
    (4, 1000, 2)
    """
    groups = {"posterior": posterior, "sample_stats": sample_stats}
    if log_likelihood:
        groups["log_likelihood"] = log_likelihood
    with warnings.catch_warnings():
        # ArviZ guesses that more chains than draws means transposed axes; here the axes
        # are (chain, draw) by contract, and thousands of short chains (on a GPU) are a
        # real use.
        warnings.filterwarnings("ignore", message=r"More chains \(\d+\) than draws")  # 0.23
        warnings.filterwarnings("ignore", message="Found chain dimension to be longer")  # 1.x
        if ARVIZ_1:
            tree = _az().from_dict(groups, dims=dims)
            tree.attrs.update(dict(attrs or {}))
            return tree
        return _az().from_dict(**groups, attrs=dict(attrs or {}), dims=dims)


def summary(idata, var_names=None):
    """ArviZ's summary table (a pandas DataFrame) of the posterior group.

    Columns ``mean, sd, hdi_3%, hdi_97%, mcse_mean, mcse_sd, ess_bulk, ess_tail, r_hat``
    (a 94% highest-density interval) on both ArviZ versions; rows ``x[0]``, ``x[1]``, ...
    """
    with warnings.catch_warnings():
        # Short test runs give chains too short for some statistics; the sampler's own
        # warnings say so in words, the table shows NaN.
        warnings.filterwarnings("ignore", category=RuntimeWarning)
        if not ARVIZ_1:
            return _az().summary(idata, var_names=var_names, round_to="none")[SUMMARY_COLUMNS]
        table = _az().summary(
            idata, var_names=var_names, round_to="none", ci_kind="hdi", ci_prob=0.94
        )
    table = table.rename(columns={"hdi94_lb": "hdi_3%", "hdi94_ub": "hdi_97%"})
    return table[SUMMARY_COLUMNS]


def _as_dataset(result):
    """A statistic's result as a Dataset (ArviZ 1.x returns a DataTree node)."""
    return result.to_dataset() if hasattr(result, "to_dataset") else result


def _flat(dataset) -> dict:
    """``{label: value}`` with one entry per scalar component (``"x[3]"``)."""
    out = {}
    for name, da in dataset.data_vars.items():
        values = np.asarray(da.values)
        for idx in np.ndindex(values.shape):
            out[element_label(name, idx)] = float(values[idx])
    return out


def ess(idata, method="bulk") -> dict:
    """Effective sample size per scalar parameter, ``{"x[0]": 812.3, ...}``."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=RuntimeWarning)
        return _flat(_as_dataset(_az().ess(idata, method=method)))


def rhat(idata) -> dict:
    """Rank-normalised split R-hat per scalar parameter."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=RuntimeWarning)
        return _flat(_as_dataset(_az().rhat(idata)))


def bfmi(idata) -> np.ndarray:
    """Estimated Bayesian fraction of missing information (E-BFMI), one per chain."""
    if ARVIZ_1:
        return np.asarray(_az().bfmi(idata)["energy"].values, dtype=float)
    return np.asarray(_az().bfmi(idata), dtype=float)


#: The first bytes of the two netCDF formats: HDF5 (netCDF-4, what :func:`save` writes;
#: the signature may also sit at byte 512, 1024, ... after a user block) and classic netCDF.
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_CLASSIC_SIGNATURE = b"CDF"

_WRITTEN_BY = "mcg.diagnostics.save or `mcmc-customgrad sample --out`"


def save(idata, path) -> str:
    """Write ``idata`` to a netCDF file; returns the path.

    An existing file at ``path`` is overwritten; its directory must exist.

    Parameters
    ----------
    idata : arviz.InferenceData or xarray.DataTree
        A run, as :func:`~mcmc_customgrad.sample` or :func:`to_inference_data` returns.
    path : str or path-like
        The file to write, e.g. ``run.nc``.

    Returns
    -------
    str
        ``path``.

    Raises
    ------
    IsADirectoryError
        ``path`` is a directory.
    FileNotFoundError
        The directory of ``path`` does not exist.
    NotADirectoryError
        The directory of ``path`` is a file.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import numpy as np
    >>> import mcmc_customgrad as mcg
    >>> run = mcg.diagnostics.to_inference_data({"x": np.zeros((2, 10))}, {})
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = mcg.diagnostics.save(run, Path(tmp) / "run.nc")
    ...     mcg.diagnostics.load(path).posterior["x"].shape
    (2, 10)
    """
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(
            f"cannot save the run to {path}: it is a directory; give a file name, e.g. "
            f"{target / 'run.nc'}."
        )
    folder = target.parent
    if not folder.exists():
        raise FileNotFoundError(
            f"cannot save the run to {path}: its directory {folder} does not exist; create "
            "it first (Path(...).mkdir(parents=True)) or give another path."
        )
    if not folder.is_dir():
        raise NotADirectoryError(
            f"cannot save the run to {path}: {folder} is a file, not a directory; give "
            "another path."
        )
    idata.to_netcdf(str(path))  # InferenceData returns the path, a DataTree None
    return str(path)


def _not_a_run(path, head: bytes, err: Exception) -> str:
    """Why ``path``, whose first bytes are ``head``, could not be read as a run."""
    if not head:
        what = "it is empty"
    elif head.startswith((_HDF5_SIGNATURE, _CLASSIC_SIGNATURE)):
        what = f"it is netCDF/HDF5, but ArviZ cannot read it as a run ({type(err).__name__}: {err})"
    else:
        what = "its contents are not netCDF"
    return (
        f"{path} is not a netCDF run file: {what}; give a netCDF file written by "
        f"mcmc_customgrad or ArviZ ({_WRITTEN_BY})."
    )


def load(path):
    """Read a run written by :func:`save` (netCDF; nothing is unpickled).

    Parameters
    ----------
    path : str or path-like
        A netCDF file written by :func:`save` (or ArviZ's ``to_netcdf``, or
        ``mcmc-customgrad sample --out``).

    Returns
    -------
    arviz.InferenceData or xarray.DataTree
        The run, read into memory: the file is closed and may be written again.

    Raises
    ------
    FileNotFoundError
        Nothing exists at ``path``.
    IsADirectoryError
        ``path`` is a directory.
    ValueError
        ``path`` is not a netCDF file that ArviZ reads as a run (a text file, an empty
        file, ...); the error of the netCDF reader is its ``__cause__``.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import mcmc_customgrad as mcg
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     text = Path(tmp) / "notes.txt"
    ...     _ = text.write_text("not a run")
    ...     try:
    ...         mcg.diagnostics.load(text)
    ...     except ValueError as err:
    ...         print("is not a netCDF run file" in str(err), err.__cause__ is not None)
    True True
    """
    source = Path(path)
    if source.is_dir():
        raise IsADirectoryError(
            f"{path} is a directory; give the netCDF file of a run in it, written by {_WRITTEN_BY}."
        )
    if not source.exists():
        raise FileNotFoundError(
            f"{path} does not exist; give the netCDF file of a run, written by {_WRITTEN_BY}."
        )
    with open(source, "rb") as file:  # a file that cannot be read says so here, as itself
        head = file.read(len(_HDF5_SIGNATURE))
    try:
        run = _az().from_netcdf(str(path))
        if ARVIZ_1:
            # ArviZ 1.x opens the file lazily and keeps it open; read it all and close it,
            # so that the run outlives the file and the path can be written again.
            run = run.load()
            run.close()
    except Exception as err:  # h5py's, netCDF4's or xarray's word for "not netCDF"
        raise ValueError(_not_a_run(path, head, err)) from err
    return run


def attrs(idata) -> dict:
    """Run attributes: the top-level ones, overridden by those of the ``posterior`` group.

    :func:`~mcmc_customgrad.sample` writes its attributes (``num_grad_evals``,
    ``sampling_seconds``, ...) on every group; :func:`to_inference_data` puts ``attrs`` on
    the InferenceData itself. Either way they are found here.
    """
    out = dict(getattr(idata, "attrs", None) or {})
    if "posterior" in groups(idata):
        out.update(idata.posterior.attrs)
    return out


def _dataset(draws):
    draws = np.asarray(draws, dtype=float)
    if draws.ndim < 2:
        raise ValueError(f"draws need shape (chain, draw, ...), got shape {draws.shape}")
    return _az().convert_to_dataset({"v": draws})


def ess_draws(draws, method="bulk") -> np.ndarray:
    """Effective sample size of ``(chain, draw, *shape)`` draws, one per element of ``shape``.

    ``method`` is ArviZ's: ``"bulk"``, ``"tail"``, ``"mean"`` (for the MCSE of a mean),
    ``"sd"``, ... A constant series gives NaN.
    """
    with warnings.catch_warnings():
        # A constant series (an indicator that is never true) has no autocorrelation to
        # estimate: ArviZ divides by a zero variance and returns NaN, which callers handle.
        warnings.filterwarnings("ignore", category=RuntimeWarning)
        result = _as_dataset(_az().ess(_dataset(draws), method=method))
        return np.asarray(result["v"].values, dtype=float)


def rhat_draws(draws) -> np.ndarray:
    """Rank-normalised split R-hat of ``(chain, draw, *shape)`` draws, one per element."""
    with warnings.catch_warnings():
        # As in ess_draws: NaN for a constant series.
        warnings.filterwarnings("ignore", category=RuntimeWarning)
        return np.asarray(_as_dataset(_az().rhat(_dataset(draws)))["v"].values, dtype=float)


def kde(values) -> tuple[np.ndarray, np.ndarray]:
    """ArviZ's kernel density estimate of 1-d ``values``: ``(grid, density)``.

    ArviZ's default estimator on either version (0.23's ``arviz.kde``, 1.x's
    ``arviz_stats`` array KDE: a Gaussian kernel with ArviZ's default bandwidth rule and
    boundary correction), on 512 grid points.
    """
    values = np.asarray(values, dtype=float).ravel()
    if ARVIZ_1:
        from arviz_stats.base import array_stats

        grid, density, _ = array_stats.kde(values)
    else:
        grid, density = _az().kde(values)
    return np.asarray(grid), np.asarray(density)
