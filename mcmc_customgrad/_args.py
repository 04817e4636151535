"""Argument checks and labels shared by every layer (one helper per job)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "check_int",
    "check_scalar_density",
    "element_label",
    "element_labels",
    "flat_labels",
    "typeof",
]

#: The abstract value (shape and dtype) of an array: ``jax.typeof`` where this JAX has it
#: (it replaced ``jax.core.get_aval``, removed in JAX 0.10), else ``jax.core.get_aval``.
typeof = getattr(jax, "typeof", None) or jax.core.get_aval


def check_int(owner: str, name: str, value, minimum: int = 1, maximum=None, hint: str = "") -> int:
    """``int(value)``, or a ``ValueError`` unless ``value`` is an integer in range.

    Booleans are refused (``True`` is an ``int`` to Python, never a count to a user).

    Parameters
    ----------
    owner : str
        The function or class checking, first in the message (``"sample"``).
    name : str
        The argument's name.
    value : object
        What was passed.
    minimum, maximum : int, optional
        Inclusive bounds (no upper bound by default).
    hint : str
        Appended to the message: what to do instead.

    Examples
    --------
    >>> from mcmc_customgrad._args import check_int
    >>> check_int("sample", "num_chains", 4)
    4
    >>> check_int("sample", "num_chains", 0)
    Traceback (most recent call last):
    ...
    ValueError: sample: num_chains must be an integer >= 1, got 0.
    """
    ok = isinstance(value, int | np.integer) and not isinstance(value, bool)
    ok = ok and value >= minimum and (maximum is None or value <= maximum)
    if not ok:
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{owner}: {name} must be an integer {bound}, got {value!r}.{hint}")
    return int(value)


def check_scalar_density(owner: str, which: str, fn, template, where: str, hint: str = ""):
    """Trace ``fn`` on ``template`` (no compilation) and insist on a real scalar.

    Parameters
    ----------
    owner : str
        The function checking, first in the message (``"sample"``).
    which : str
        What ``fn`` is called in that function (``"reference_logdensity"``).
    fn : callable
        The log-density.
    template : pytree of jax.ShapeDtypeStruct
        The position's shapes.
    where : str
        Where it is evaluated, for the message (``"at the start position"``).
    hint : str
        Appended when ``fn`` cannot be traced there: what to check.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from mcmc_customgrad._args import check_scalar_density
    >>> x = jax.ShapeDtypeStruct((2,), jnp.float32)
    >>> try:
    ...     check_scalar_density("sample", "fn", lambda x: -x**2, x, "at init")
    ... except ValueError as err:
    ...     print(str(err)[:68])
    sample: fn must return a real scalar log-density, got float32[2]. Su
    """
    try:
        out = jax.eval_shape(fn, template)
    except Exception as err:
        raise ValueError(
            f"{owner}: {which} cannot be evaluated {where}: {type(err).__name__}: {err}."
            + (f" {hint}" if hint else "")
        ) from err
    if not (
        isinstance(out, jax.ShapeDtypeStruct)
        and out.shape == ()
        and jnp.issubdtype(out.dtype, jnp.floating)
    ):
        shape = jax.tree.map(lambda s: f"{s.dtype}{list(s.shape)}", out)
        raise ValueError(
            f"{owner}: {which} must return a real scalar log-density, got {shape}. Sum the "
            "terms (jnp.sum) before returning."
        )


def element_label(name: str, index) -> str:
    """The label of one element of an array ``name``: ``name`` (a scalar) or ``name[i,j]``.

    Examples
    --------
    >>> from mcmc_customgrad._args import element_label
    >>> element_label("beta", (1, 0)), element_label("sigma", ())
    ('beta[1,0]', 'sigma')
    """
    index = tuple(int(i) for i in index)
    return f"{name}[{','.join(map(str, index))}]" if index else name


def element_labels(name: str, shape) -> list[str]:
    """One label per element of an array ``name`` of ``shape``, in C order.

    The labels of ArviZ's summaries and of every report of the diagnostics.

    Examples
    --------
    >>> from mcmc_customgrad._args import element_labels
    >>> element_labels("sigma", ())
    ['sigma']
    >>> element_labels("beta", (2, 2))
    ['beta[0,0]', 'beta[0,1]', 'beta[1,0]', 'beta[1,1]']
    """
    return [element_label(name, i) for i in np.ndindex(tuple(shape))]


def flat_labels(named_shapes) -> list[str]:
    """The labels of a flat position: every element of arrays given as ``(name, shape)``.

    Examples
    --------
    >>> from mcmc_customgrad._args import flat_labels
    >>> flat_labels([("mu", ()), ("x", (2,))])
    ['mu', 'x[0]', 'x[1]']
    """
    return [label for name, shape in named_shapes for label in element_labels(name, shape)]
