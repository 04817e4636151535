"""Name float32 when it is the cause: one warning per process, and a hint for messages.

The inner solvers' default tolerance is ``1e-10`` relative and the gradient checks' is
``1e-6``; neither is reachable in float32 (``eps`` = 1.2e-7), where a correct density fails
its gradient check with "relative error 1.1e-07 > tolerance 1e-08" and samples with values
that are only as exact as the inner solve. JAX runs in float32 unless
``jax_enable_x64`` is set, so :class:`~mcmc_customgrad.Model`, :func:`~mcmc_customgrad.sample`
and :func:`~mcmc_customgrad.check_gradients` call :func:`warn_if_float32`, and failure
messages that float32 explains append :func:`float32_hint`.
"""

from __future__ import annotations

import warnings

import jax

__all__ = ["Float32Warning", "x64_enabled", "warn_if_float32", "float32_hint"]

_ENABLE = 'jax.config.update("jax_enable_x64", True)'


class Float32Warning(UserWarning):
    """JAX runs in float32 (``jax_enable_x64`` is off), where the library's tolerances fail."""


_warned = False


def x64_enabled() -> bool:
    """True when JAX's default float is float64 (``jax_enable_x64`` is on)."""
    return bool(jax.config.jax_enable_x64)


def warn_if_float32(where: str, stacklevel: int = 3) -> bool:
    """Warn once per process, naming float64 and the fix, when JAX runs in float32.

    Parameters
    ----------
    where : str
        Who is asking (``"mcg.sample"``), named in the warning.
    stacklevel : int
        As for :func:`warnings.warn`, counted from this function (3: the caller of the
        function that calls this one).

    Returns
    -------
    bool
        True when JAX runs in float32 (whether or not this call warned).

    Examples
    --------
    >>> import jax
    >>> jax.config.update("jax_enable_x64", True)
    >>> from mcmc_customgrad._precision import warn_if_float32
    >>> warn_if_float32("mcg.sample")
    False
    """
    global _warned
    if x64_enabled():
        return False
    if not _warned:
        _warned = True
        warnings.warn(
            f"{where}: JAX is running in float32 (jax_enable_x64 is off). The inner solvers' "
            "default tolerance (1e-10 relative) and check_gradients' (1e-6) need float64: in "
            "float32 gradient checks fail at about 1e-7 and inner-solve values are inexact. "
            f"Put {_ENABLE} at the top of your script, before any array is created. (This "
            "warning is shown once per process.)",
            Float32Warning,
            stacklevel=stacklevel,
        )
    return True


def float32_hint() -> str:
    """``""`` in float64; in float32, a sentence naming float32 as the likely cause.

    Examples
    --------
    >>> import jax
    >>> jax.config.update("jax_enable_x64", True)
    >>> from mcmc_customgrad._precision import float32_hint
    >>> float32_hint()
    ''
    """
    if x64_enabled():
        return ""
    return (
        f" JAX is running in float32 (eps 1.2e-7), which explains errors down to about 1e-7 "
        f"and tolerances that cannot be met: run in float64 with {_ENABLE}."
    )
