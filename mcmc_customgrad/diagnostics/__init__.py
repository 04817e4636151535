"""Diagnostics: post-run checks and the validation protocol of ``docs/validation.md``.

- :func:`check_gradients`: value, gradient and Hessian against a reference, finite
  differences, forward against reverse mode, ``jit``/``vmap`` against eager.
- :func:`coupled_chains`: the custom density and its reference driven by the same keys
  and the same adaptation; the trajectories must coincide.
- :func:`compare_chains` and :func:`write_report`: the two posteriors side by side, with
  z-scores, KS and energy tests, a second-moment test and a verdict.
- :func:`sbc`: simulation-based calibration with rank histograms and ECDF bands.
- :func:`quadrature_reference`: exact draws of a posterior of at most 3 coordinates, as
  a reference run when there is no closed form.
- :func:`diagnose`: the post-run warnings of :func:`~mcmc_customgrad.sample`.

Every ArviZ call lives in ``mcmc_customgrad._arviz`` (the one module to change for
ArviZ 1.x), a leaf module below the sampler. :func:`diagnose` and
:class:`SamplingWarning` live in :mod:`mcmc_customgrad.sampling` (the sampler runs them).
"""

from .._arviz import load, save, summary, to_inference_data
from ..sampling import Diagnostic, SamplingWarning, diagnose
from .calibration import SBCProblem, SBCReport, ecdf_bands, rank_chi_square, sbc, sbc_ranks
from .compare import ComparisonReport, compare_chains, write_report
from .coupled import CoupledReport, coupled_chains
from .gradients import GradientReport, check_gradients
from .quadrature import quadrature_reference

__all__ = [
    "Diagnostic",
    "SamplingWarning",
    "diagnose",
    "load",
    "save",
    "summary",
    "to_inference_data",
    "check_gradients",
    "GradientReport",
    "coupled_chains",
    "CoupledReport",
    "compare_chains",
    "ComparisonReport",
    "write_report",
    "sbc",
    "SBCProblem",
    "SBCReport",
    "sbc_ranks",
    "rank_chi_square",
    "ecdf_bands",
    "quadrature_reference",
]
