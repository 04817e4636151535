"""Sampling: Blackjax glue (kernels, warmup, multi-chain runs, checkpoints, progress).

Also the Stan-style post-run warnings (:func:`diagnose`, :class:`SamplingWarning`, in
``_warnings``; re-exported by :mod:`mcmc_customgrad.diagnostics`). The internal API the
diagnostics build on: :class:`~mcmc_customgrad.sampling.sample.Target` and
:func:`~mcmc_customgrad.sampling.sample.initial_positions` (starts), and the
one-chain stages of ``_kernels`` that ``sample``, ``coupled_chains`` and ``sbc`` all run:
``start_fn`` (a start with retries), ``warmup_fn`` (window adaptation), ``draws_fn``
(transitions) and ``Settings`` (the kernel). See ``docs/contributing.md``.
"""

from ._checkpoint import CheckpointError
from ._processes import DistributedError
from ._warnings import Diagnostic, SamplingWarning, diagnose
from .sample import InitializationError, sample

__all__ = [
    "sample",
    "InitializationError",
    "CheckpointError",
    "DistributedError",
    "Diagnostic",
    "SamplingWarning",
    "diagnose",
]
