"""The installed package's version, in a module of its own so that any layer may read it."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mcmc_customgrad")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"
