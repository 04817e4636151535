"""Ready-made densities with an inner solve, each with its closed-form reference.

Every function returns an :class:`Example` ``(model, reference, data)``: the model uses
an implicit solve, the reference the same density with that piece in closed form (or
with a hand-derived derivative), both on the same parameters and layout.

================  ======================================  ===================================
model             inner solve                             reference
================  ======================================  ===================================
``conjugate``     ``min_value`` (Newton), seed 000        ``|x|^q / q``
``kepler``        ``root`` (Newton), Kepler's equation    hand-derived ``dE/dM``, ``dE/de``
``equilibrium``   ``fixed_point`` (Newton's sqrt map)     ``sqrt(a)``
``ridge``         ``argmin`` (ridge fit), bilevel         ``(X'X + lam I)^{-1} X'y``
``host_conjugate`` SciPy on the host (``pure_callback``)  ``|x|^q / q``
================  ======================================  ===================================
"""

from ._base import Example
from .conjugate import conjugate
from .equilibrium import equilibrium
from .host import host_conjugate
from .kepler import kepler
from .ridge import ridge

__all__ = ["Example", "conjugate", "kepler", "equilibrium", "ridge", "host_conjugate", "REGISTRY"]

#: Name -> builder, for the command line and for tests that sweep every model.
REGISTRY = {
    "conjugate": conjugate,
    "kepler": kepler,
    "equilibrium": equilibrium,
    "ridge": ridge,
    "host_conjugate": host_conjugate,
}
