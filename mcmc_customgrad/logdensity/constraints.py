"""Parameter constraints: bijections from the real line, with their log-Jacobians.

Each constraint maps an unconstrained real array ``u`` (what HMC moves in) to the
constrained value ``x`` and reports ``log |dx/du|`` summed over elements, which the model
adds to the log-density so that the density of ``u`` is the right one.

=================  ===================================  ===========================================
constraint         transform ``x = T(u)``               ``log |dx/du|``
=================  ===================================  ===========================================
``real()``         ``u``                                ``0``
``positive()``     ``exp(u)``                           ``u``
``interval(a,b)``  ``a + (b - a) sigmoid(u)``           ``log(b - a) - log1pexp(-u) - log1pexp(u)``
=================  ===================================  ===========================================
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from ..stable import log1pexp

__all__ = ["Constraint", "real", "positive", "interval"]


def _shape(shape, name):
    if isinstance(shape, str | bytes):
        raise TypeError(f"{name}: shape must be a tuple of ints, got {shape!r}.")
    if isinstance(shape, int | np.integer):
        shape = (int(shape),)
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError as err:
        raise TypeError(f"{name}: shape must be a tuple of ints, got {shape!r}.") from err
    if any(s < 0 for s in shape):
        raise ValueError(f"{name}: shape must have non-negative sizes, got {shape!r}.")
    return shape


@dataclasses.dataclass(frozen=True)
class Constraint:
    """Base class: a support, its bijection from the reals and a shape."""

    shape: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "shape", _shape(self.shape, type(self).__name__))

    @property
    def size(self) -> int:
        """Number of scalar elements."""
        return math.prod(self.shape)

    def forward(self, u):  # pragma: no cover - abstract
        """Unconstrained ``u`` to constrained ``x``."""
        raise NotImplementedError

    def inverse(self, x):  # pragma: no cover - abstract
        """Constrained ``x`` to unconstrained ``u``."""
        raise NotImplementedError

    def log_abs_det_jacobian(self, u):  # pragma: no cover - abstract
        """``sum log |dx/du|`` at ``u``."""
        raise NotImplementedError

    def check(self, x) -> bool:
        """True when every element of ``x`` lies in the support."""
        return bool(np.all(np.isfinite(np.asarray(x))))

    def _shape_repr(self) -> str:
        return f"shape={self.shape}" if self.shape else ""


@dataclasses.dataclass(frozen=True)
class _Real(Constraint):
    # Shown in messages as the public call that makes it, not as the private class.
    def __repr__(self):
        return f"mcg.real({self._shape_repr()})"

    def forward(self, u):
        return u

    def inverse(self, x):
        return x

    def log_abs_det_jacobian(self, u):
        return jnp.zeros((), jnp.result_type(u, float))


@dataclasses.dataclass(frozen=True)
class _Positive(Constraint):
    def __repr__(self):
        return f"mcg.positive({self._shape_repr()})"

    def forward(self, u):
        return jnp.exp(u)

    def inverse(self, x):
        return jnp.log(x)

    def log_abs_det_jacobian(self, u):
        return jnp.sum(u)

    def check(self, x):
        x = np.asarray(x)
        return bool(np.all(np.isfinite(x) & (x > 0)))


@dataclasses.dataclass(frozen=True)
class _Interval(Constraint):
    lower: float = 0.0
    upper: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        lo, hi = float(self.lower), float(self.upper)
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            raise ValueError(
                f"interval: need finite lower < upper, got lower={self.lower!r}, "
                f"upper={self.upper!r}. For a half-line use positive() and shift it."
            )
        object.__setattr__(self, "lower", lo)
        object.__setattr__(self, "upper", hi)

    def __repr__(self):
        args = [f"{self.lower!r}", f"{self.upper!r}"] + ([self._shape_repr()] if self.shape else [])
        return f"mcg.interval({', '.join(args)})"

    def forward(self, u):
        # Written from the nearer end so that the distance to that end keeps its relative
        # precision: a + w sigmoid(u) for u < 0, b - w sigmoid(-u) for u >= 0.
        w = self.upper - self.lower
        return jnp.where(
            u < 0, self.lower + w * jax.nn.sigmoid(u), self.upper - w * jax.nn.sigmoid(-u)
        )

    def inverse(self, x):
        # logit((x - a) / (b - a)) = log(x - a) - log(b - x): precise at both ends.
        return jnp.log(x - self.lower) - jnp.log(self.upper - x)

    def log_abs_det_jacobian(self, u):
        w = self.upper - self.lower
        return jnp.sum(math.log(w) - log1pexp(-u) - log1pexp(u))

    def check(self, x):
        x = np.asarray(x)
        return bool(np.all((x > self.lower) & (x < self.upper)))


def real(shape=()) -> Constraint:
    """An unconstrained real parameter.

    Parameters
    ----------
    shape : tuple of int or int
        Shape of the parameter.

    Examples
    --------
    >>> import mcmc_customgrad as mcg
    >>> mcg.real(shape=(3,)).size
    3
    """
    return _Real(shape)


def positive(shape=()) -> Constraint:
    """A parameter on ``(0, inf)``, through ``x = exp(u)`` (``log|J| = u``).

    Parameters
    ----------
    shape : tuple of int or int
        Shape of the parameter.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import mcmc_customgrad as mcg
    >>> c = mcg.positive()
    >>> float(c.forward(jnp.log(2.0))), float(c.log_abs_det_jacobian(jnp.log(2.0)))
    (2.0, 0.6931471805599453)
    """
    return _Positive(shape)


def interval(lower, upper, shape=()) -> Constraint:
    """A parameter on ``(lower, upper)``, through a scaled logistic sigmoid.

    Parameters
    ----------
    lower, upper : float
        Finite bounds, ``lower < upper``.
    shape : tuple of int or int
        Shape of the parameter.

    Examples
    --------
    >>> import mcmc_customgrad as mcg
    >>> c = mcg.interval(0.0, 0.99)
    >>> round(float(c.forward(0.0)), 6), round(float(c.inverse(c.forward(1.3))), 12)
    (0.495, 1.3)
    """
    return _Interval(shape, lower, upper)
