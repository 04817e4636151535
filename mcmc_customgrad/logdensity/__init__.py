"""User model -> ``logdensity_fn(flat unconstrained position) -> scalar``."""

from .constraints import Constraint, interval, positive, real
from .model import Model

__all__ = ["Model", "Constraint", "real", "positive", "interval"]
