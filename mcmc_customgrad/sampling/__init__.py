"""Sampling: Blackjax glue (kernels, warmup, multi-chain runs, checkpoints, progress)."""

from ._checkpoint import CheckpointError
from .sample import InitializationError, sample

__all__ = ["sample", "InitializationError", "CheckpointError"]
