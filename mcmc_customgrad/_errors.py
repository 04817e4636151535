"""``on_failure="raise"`` inside the library's drivers: a :class:`SolverError`, not XLA's.

Under ``jit`` an inner solve with ``on_failure="raise"`` reports a failure from a host
callback (``jax.debug.callback``). The exception raised there cannot cross the compiled
program: JAX logs it ("jax.debug.callback failed" and a traceback, on the
``jax._src.debugging`` logger) and the program then fails with
``jax.errors.JaxRuntimeError: INTERNAL: CpuCallback error calling callback: ...`` whose
text ends with the original ``SolverError: <message>``. A user's own ``jit`` shows
exactly that. The library's drivers (:func:`~mcmc_customgrad.sample`,
:func:`~mcmc_customgrad.check_gradients`, :func:`~mcmc_customgrad.sbc`,
:func:`~mcmc_customgrad.coupled_chains`) run under :func:`surface_solver_errors`,
which silences that log record and raises :class:`SolverError` with the solver's message,
so ``except mcg.SolverError`` catches it.
"""

from __future__ import annotations

import contextlib
import functools
import logging

import jax

from .implicit._base import SolverError

__all__ = ["surface_solver_errors", "solver_error_from", "factorisation_error_from"]

_MARKER = "SolverError: "
_LOGGER = "jax._src.debugging"


class _DropSolverErrors(logging.Filter):
    """Drop the log record of a host callback that raised a :class:`SolverError`."""

    def filter(self, record: logging.LogRecord) -> bool:
        info = record.exc_info
        return not (info and info[0] is not None and issubclass(info[0], SolverError))


def solver_error_from(err: BaseException) -> SolverError | None:
    r"""The :class:`SolverError` a runtime error carries from a host callback, or None.

    Examples
    --------
    >>> from mcmc_customgrad._errors import solver_error_from
    >>> err = RuntimeError("INTERNAL: CpuCallback ...\nSolverError: root did not converge")
    >>> str(solver_error_from(err))
    'root did not converge'
    >>> solver_error_from(RuntimeError("something else")) is None
    True
    """
    if isinstance(err, SolverError):
        return err
    text = str(err)
    at = text.rfind(_MARKER)
    if at < 0:
        return None
    return SolverError(text[at + len(_MARKER) :].strip())


_SPARSAX = "sparsax: "


def factorisation_error_from(err: BaseException) -> SolverError | None:
    r"""A :class:`SolverError` that explains a failed sparse factorisation, or None.

    SuiteSparse (through ``sparsax``) cannot return NaN from inside a compiled program:
    a matrix that is not positive definite (CHOLMOD) or is singular (KLU) stops the
    whole program with an XLA runtime error. The drivers turn it into this error, which
    says where such a matrix comes from and what to do.

    Examples
    --------
    >>> from mcmc_customgrad._errors import factorisation_error_from
    >>> err = RuntimeError("INTERNAL: sparsax: matrix is not positive definite (column 3)")
    >>> print(str(factorisation_error_from(err)).splitlines()[0][-43:])
    matrix is not positive definite (column 3).
    >>> factorisation_error_from(RuntimeError("something else")) is None
    True
    """
    text = str(err)
    at = text.find(_SPARSAX)
    if at < 0:
        return None
    reason = text[at + len(_SPARSAX) :].strip().splitlines()[0].rstrip(".")
    return SolverError(
        f"a sparse factorisation failed inside the compiled program: {reason}.\n"
        "SuiteSparse cannot return NaN there, so the run stopped. The matrix came from "
        "parameter values where it is not positive definite (or is singular) in floating "
        "point:\n"
        "- mcg.gmrf_log_marginal: the precision Q at some proposal. The mcg.gmrf builders "
        "give NaN (a rejected proposal) outside their hyperparameters' range; a "
        "precision of your own should too (jnp.where(valid, values, jnp.nan)), and "
        "priors or transforms should keep the hyperparameters where Q is well "
        "conditioned.\n"
        "- mcg.linear.Sparse(method='cholesky'): the Jacobian is not symmetric positive "
        "definite at some point; use method='lu'."
    )


@contextlib.contextmanager
def _surfacing():
    logger = logging.getLogger(_LOGGER)
    drop = _DropSolverErrors()
    logger.addFilter(drop)
    try:
        yield
    except jax.errors.JaxRuntimeError as err:
        solver_error = solver_error_from(err) or factorisation_error_from(err)
        if solver_error is None:
            raise
        raise solver_error from None
    except ValueError as err:
        # An FFI error raised while the program is dispatched (not when its result is
        # awaited) comes as a ValueError with the same text.
        solver_error = factorisation_error_from(err)
        if solver_error is not None:
            raise solver_error from None
        if "sparsax" in str(err) and "cannot be differentiated" in str(err):
            raise ValueError(
                "second derivatives of mcg.gmrf_log_marginal (jax.hessian, "
                "check_gradients(order=2), check-grad's default --order 2) are not "
                "supported: its adjoint reads the selected inverse of Q + W, which "
                "SuiteSparse does not differentiate. Check first order (order=1, "
                "--order 1); sampling needs only the gradient."
            ) from None
        raise
    finally:
        logger.removeFilter(drop)


def surface_solver_errors(fn):
    """Decorate a driver so that ``on_failure="raise"`` inside it raises :class:`SolverError`.

    Parameters
    ----------
    fn : callable
        A function that runs compiled programs which may hold inner solves.

    Returns
    -------
    callable
        ``fn`` with the same signature and docstring.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import mcmc_customgrad as mcg
    >>> from mcmc_customgrad._errors import surface_solver_errors
    >>> solver = mcg.solvers.Newton(max_steps=2)
    >>> @surface_solver_errors
    ... def run(x):
    ...     f = lambda y, x: y**3 - x
    ...     return jax.jit(lambda x: mcg.root(f, 1.0, x, solver=solver, on_failure="raise"))(x)
    >>> try:
    ...     run(1e9)
    ... except mcg.SolverError as err:
    ...     print(str(err)[:33])
    mcmc_customgrad.root did not conv
    """

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with _surfacing():
            return fn(*args, **kwargs)

    return wrapped
