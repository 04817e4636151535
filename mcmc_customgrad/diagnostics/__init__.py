"""Diagnostics: ArviZ conversion (the only module importing ArviZ) and post-run checks."""

from ._arviz import load, save, summary
from ._checks import Diagnostic, SamplingWarning, diagnose

__all__ = ["Diagnostic", "SamplingWarning", "diagnose", "load", "save", "summary"]
