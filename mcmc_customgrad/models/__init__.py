"""Ready-made densities with an inner solve, each with its closed-form reference.

Every function returns an :class:`Example` ``(model, reference, data)``: the model uses
an implicit solve, the reference the same density with that piece in closed form (or
with a hand-derived derivative), both on the same parameters and layout.

======================  ======================================  ===================================
model                   inner solve                             reference
======================  ======================================  ===================================
``conjugate``           ``min_value`` (Newton), seed 000        ``|x|^q / q``
``kepler``              ``root`` (Newton), Kepler's equation    hand-derived ``dE/dM``, ``dE/de``
``equilibrium``         ``fixed_point`` (Newton's sqrt map)     ``sqrt(a)``
``ridge``               ``argmin`` (ridge fit), bilevel         ``(X'X + lam I)^{-1} X'y``
``host_conjugate``      SciPy on the host (``pure_callback``)   ``|x|^q / q``
``eight_schools``       ``latent_gaussian_log_marginal``, exact ``N(y_j | mu, sqrt(tau^2 + s_j^2))``
``latent_gp_poisson``   ``latent_gaussian_log_marginal``,       full joint ``rho, alpha, eta``
                        Poisson (approximate)                   (more parameters; not in REGISTRY)
``pde_inverse``         ``root`` (Newton, sparse LU), a         ``c = 0``: Gaussian via basis
                        steady state on an ``m x m`` grid       solutions; ``c > 0``: dense solve
``disease_map``         ``gmrf_log_marginal`` (sparse), BYM2,   full joint ``mu, sigma, phi, v,
                        Poisson (approximate)                   eta`` (not in REGISTRY)
``disease_map_gaussian`` ``gmrf_log_marginal`` (sparse), BYM2,  ``N(y | mu, sigma^2 ((1 - phi) I +
                        Gaussian, exact                         phi S) + diag(s^2))``, dense
======================  ======================================  ===================================

``REGISTRY`` holds the models whose reference has the same parameters and the same
density, which the command line and ``scripts/validate.py`` sweep. ``latent_gp_poisson``'s
and ``disease_map``'s references sample the latent field too (what a user would do
without the Laplace approximation) and agree only approximately, so they are compared on
the hyperparameters by hand (``docs/laplace.md``). ``pde`` is :func:`pde_inverse` at its cheap
default (``m = 16``, linear); ``scripts/validate.py`` builds it at ``m = 64``.
"""

from ._base import Example
from .conjugate import conjugate
from .disease_map import disease_map, disease_map_gaussian, disease_map_latents
from .eight_schools import eight_schools
from .equilibrium import equilibrium
from .host import host_conjugate
from .kepler import kepler
from .latent_gp import latent_gp_poisson, latent_gp_poisson_latents
from .pde import pde_inverse
from .ridge import ridge

__all__ = [
    "Example",
    "conjugate",
    "kepler",
    "equilibrium",
    "ridge",
    "host_conjugate",
    "eight_schools",
    "latent_gp_poisson",
    "latent_gp_poisson_latents",
    "pde_inverse",
    "disease_map",
    "disease_map_gaussian",
    "disease_map_latents",
    "REGISTRY",
]

#: Name -> builder, for the command line and for tests that sweep every model.
REGISTRY = {
    "conjugate": conjugate,
    "kepler": kepler,
    "equilibrium": equilibrium,
    "ridge": ridge,
    "host_conjugate": host_conjugate,
    "eight_schools": eight_schools,
    "pde": pde_inverse,
    "disease_map_gaussian": disease_map_gaussian,
}
