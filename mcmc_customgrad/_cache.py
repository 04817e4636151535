"""JAX's persistent compilation cache, on by default for ``mcg.sample`` and the CLI.

Most of a short run's wall time is XLA compiling the samplers (seconds each); the
persistent cache writes each compiled program to disk so that the next process with the
same model and settings loads it instead. :func:`configure_cache` chooses the folder once
per process, before the first compilation:

1. an explicit JAX setting wins: ``JAX_COMPILATION_CACHE_DIR`` in the environment, or
   ``jax.config.jax_compilation_cache_dir`` already set (then nothing is changed);
2. else ``MCMC_CUSTOMGRAD_CACHE_DIR``: a folder, or ``off`` to disable the cache;
3. else the per-user cache folder, :func:`default_cache_dir`.

A folder that cannot be created or written to is reported with a
:class:`CompilationCacheWarning` and the run goes on without a persistent cache.

The cache is trusted code: JAX runs what it finds there, so keep it in a folder only you
can write to (the default is in your home directory).
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from pathlib import Path

import jax

__all__ = [
    "ENV_VAR",
    "CompilationCacheWarning",
    "default_cache_dir",
    "resolve_cache_dir",
    "configure_cache",
]

#: The environment variable that sets the folder (or ``off``).
ENV_VAR = "MCMC_CUSTOMGRAD_CACHE_DIR"

#: Programs that compile faster than this are not written (JAX's default is 1 s; the
#: samplers take several seconds, the initialisation check and the per-draw pass less).
MIN_COMPILE_SECONDS = 0.3

_UNSET = object()
_configured = _UNSET  # what configure_cache decided in this process


class CompilationCacheWarning(UserWarning):
    """The persistent compilation cache folder cannot be used; compiling without it."""


def default_cache_dir(environ=None, platform=None) -> Path:
    """The per-user cache folder: ``.../mcmc_customgrad/jax`` in the platform's cache dir.

    ``$XDG_CACHE_HOME`` (else ``~/.cache``) on Linux and other Unix systems,
    ``~/Library/Caches`` on macOS, ``%LOCALAPPDATA%`` on Windows.

    Parameters
    ----------
    environ : mapping, optional
        The environment (default ``os.environ``).
    platform : str, optional
        ``sys.platform`` (default: this one).

    Returns
    -------
    pathlib.Path

    Examples
    --------
    >>> from mcmc_customgrad._cache import default_cache_dir
    >>> default_cache_dir({"XDG_CACHE_HOME": "/tmp/c"}, "linux").as_posix()
    '/tmp/c/mcmc_customgrad/jax'
    >>> default_cache_dir({"HOME": "/home/ann"}, "darwin").as_posix()
    '/home/ann/Library/Caches/mcmc_customgrad/jax'
    """
    environ = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    home = Path(environ.get("HOME") or Path.home())
    if platform.startswith("win"):
        local = environ.get("LOCALAPPDATA")
        base = Path(local) if local else home / "AppData" / "Local"
        return base / "mcmc_customgrad" / "Cache" / "jax"
    if platform == "darwin":
        return home / "Library" / "Caches" / "mcmc_customgrad" / "jax"
    xdg = environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else home / ".cache"
    return base / "mcmc_customgrad" / "jax"


def resolve_cache_dir(environ=None, jax_dir=None) -> tuple[str | None, str]:
    """Which folder the cache should use, and why, without changing anything.

    Parameters
    ----------
    environ : mapping, optional
        The environment (default ``os.environ``).
    jax_dir : str, optional
        JAX's current ``jax_compilation_cache_dir`` (None when unset).

    Returns
    -------
    (str or None, str)
        The folder (None: no persistent cache from us) and the reason: ``"jax"`` (the
        user's explicit JAX setting, left as it is), ``"off"`` (``MCMC_CUSTOMGRAD_CACHE_DIR
        =off``), ``"env"`` (``MCMC_CUSTOMGRAD_CACHE_DIR`` names the folder) or
        ``"default"``.

    Examples
    --------
    >>> from mcmc_customgrad._cache import resolve_cache_dir
    >>> resolve_cache_dir({"MCMC_CUSTOMGRAD_CACHE_DIR": "off"})
    (None, 'off')
    >>> resolve_cache_dir({"MCMC_CUSTOMGRAD_CACHE_DIR": "/tmp/jc"})
    ('/tmp/jc', 'env')
    >>> resolve_cache_dir({"MCMC_CUSTOMGRAD_CACHE_DIR": "off"}, jax_dir="/mine")
    ('/mine', 'jax')
    """
    environ = os.environ if environ is None else environ
    explicit = jax_dir or environ.get("JAX_COMPILATION_CACHE_DIR")
    if explicit:
        return str(explicit), "jax"
    value = environ.get(ENV_VAR, "").strip()
    if value.lower() == "off":
        return None, "off"
    if value:
        return str(Path(value).expanduser()), "env"
    return str(default_cache_dir(environ)), "default"


def _usable(folder: str) -> str | None:
    """Create ``folder`` and check that a file can be written there; None, or why not."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as err:
        return f"{type(err).__name__}: {err}"
    return None


def configure_cache(environ=None) -> str | None:
    """Turn on JAX's persistent compilation cache for this process (once).

    Called by :func:`~mcmc_customgrad.sample` and by the ``mcmc-customgrad`` command
    before they compile anything; later calls return the first call's answer. It leaves
    an explicit JAX setting alone, honours ``MCMC_CUSTOMGRAD_CACHE_DIR`` (a folder, or
    ``off``), and otherwise uses :func:`default_cache_dir`. When it sets the folder it
    also lowers ``jax_persistent_cache_min_compile_time_secs`` to
    :data:`MIN_COMPILE_SECONDS` unless that was set explicitly
    (``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`` or a non-default value).

    Parameters
    ----------
    environ : mapping, optional
        The environment (default ``os.environ``).

    Returns
    -------
    str or None
        The cache folder in use, or None when there is none (``off``, or the folder
        could not be used: a :class:`CompilationCacheWarning` says why).

    Examples
    --------
    >>> from mcmc_customgrad._cache import configure_cache
    >>> folder = configure_cache()  # None, or the folder compiled programs are kept in
    """
    global _configured
    if _configured is not _UNSET:
        return _configured
    environ = os.environ if environ is None else environ
    folder, reason = resolve_cache_dir(environ, jax.config.jax_compilation_cache_dir)
    if reason in ("env", "default"):
        problem = _usable(folder)
        if problem is not None:
            warnings.warn(
                f"mcmc_customgrad: cannot use {folder} for the persistent compilation cache "
                f"({problem}); compiling without it, so every run compiles from scratch. "
                f"Set {ENV_VAR} to a folder you can write to, or to 'off' to silence this.",
                CompilationCacheWarning,
                stacklevel=2,
            )
            folder = None
        else:
            jax.config.update("jax_compilation_cache_dir", folder)
            explicit_min = "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" in environ
            if not explicit_min and jax.config.jax_persistent_cache_min_compile_time_secs == 1.0:
                jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    _configured = folder
    return folder
