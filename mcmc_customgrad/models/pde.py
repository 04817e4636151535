"""A PDE-constrained inverse problem: a steady state on a grid inside the likelihood."""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse
import scipy.sparse.linalg
from jax.scipy.stats import norm

from .. import implicit
from .._args import check_int
from ..caches import lru_cache
from ..logdensity import Model, real
from ._base import Example

__all__ = [
    "pde_inverse",
    "steady_state",
    "bratu_residual",
    "laplacian_pattern",
    "CENTERS",
    "WIDTH",
    "AMPLITUDE",
    "TRUTH",
]

#: Centres of the Gaussian bumps of the source, in the unit square; ``num_params`` takes
#: the first ones. Not symmetric under ``x <-> y``, so that a transposed grid would show.
CENTERS = ((0.25, 0.3), (0.75, 0.25), (0.3, 0.75), (0.7, 0.7))
#: Width (standard deviation) of each bump.
WIDTH = 0.1
#: Height of each bump: ``theta_k = 1`` gives a field of about 0.5 at its centre.
AMPLITUDE = 40.0
#: The simulating source weights (the first ``num_params`` are used).
TRUTH = (1.0, -0.6, 0.8, 0.4)

_WHERE = "pde_inverse"


def _check_real(name, value, *, positive, where=_WHERE):
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) and (value > 0 if positive else value >= 0)
    if not ok:
        what = "a finite number > 0" if positive else "a finite number >= 0"
        raise ValueError(f"{where}: {name} must be {what}, got {value!r}.")


def _tridiagonal(m, values=(-1.0, 2.0, -1.0)):
    lower, diag, upper = values
    return scipy.sparse.diags(
        [np.full(m - 1, lower), np.full(m, diag), np.full(m - 1, upper)], [-1, 0, 1], format="csr"
    )


def _laplacian(m):
    """``-Lap_h`` on the ``m x m`` interior grid (row-major, Dirichlet), scipy CSC."""
    h = 1.0 / (m + 1)
    t, eye = _tridiagonal(m), scipy.sparse.identity(m, format="csr")
    return ((scipy.sparse.kron(t, eye) + scipy.sparse.kron(eye, t)) / h**2).tocsc()


def laplacian_pattern(m: int):
    """Sparsity pattern of the 5-point Laplacian on an ``m x m`` grid, ``m^2`` unknowns.

    The nonzeros of ``kron(T, I) + kron(I, T)`` with ``T`` the tridiagonal pattern of
    the 1-D second difference: each unknown is coupled to itself and its (up to four)
    grid neighbours, in the row-major order of ``u.reshape(m, m)``. This is also the
    pattern of the Jacobian of :func:`pde_inverse`'s residual, whatever ``c``.

    Parameters
    ----------
    m : int
        Interior grid points per side, at least 2.

    Returns
    -------
    scipy.sparse.csr_matrix
        ``(m^2, m^2)``, ones where the stencil couples two unknowns.

    Examples
    --------
    >>> from mcmc_customgrad.models.pde import laplacian_pattern
    >>> P = laplacian_pattern(3)
    >>> P.shape, P.nnz, P[4].indices.tolist()   # the centre node and its 4 neighbours
    ((9, 9), 33, [1, 3, 4, 5, 7])
    """
    check_int("laplacian_pattern", "m", m, 2)
    t, eye = _tridiagonal(m, (1.0, 1.0, 1.0)), scipy.sparse.identity(m, format="csr")
    pattern = (scipy.sparse.kron(t, eye) + scipy.sparse.kron(eye, t)).tocsr()
    pattern.data[:] = 1.0
    return pattern


def _grid_size(n, where):
    m = math.isqrt(n)
    if m * m != n or m < 2:
        raise ValueError(
            f"{where}: the field must have m^2 entries for an m x m grid (m >= 2), got "
            f"{n}. Flatten u.reshape(m, m) in row-major order."
        )
    return m


def bratu_residual(u, source, c: float = 0.0):
    """``-Lap_h u + c exp(u) - source`` on the ``m x m`` interior grid of the unit square.

    The 5-point Laplacian with mesh ``h = 1 / (m + 1)`` and zero Dirichlet boundary
    values: ``(-Lap_h u)_ij = (4 u_ij - u_(i-1)j - u_(i+1)j - u_i(j-1) - u_i(j+1)) / h^2``,
    with ``u_ij`` at ``(x_i, x_j) = (i h, j h)``, ``i, j = 1 .. m``.

    Parameters
    ----------
    u, source : (m^2,) arrays
        The field and the source, flattened from ``(m, m)`` in row-major order.
    c : float
        Coefficient of the reaction term (``0``: the linear Poisson equation).

    Returns
    -------
    (m^2,) array

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from mcmc_customgrad.models.pde import bratu_residual
    >>> u = jnp.zeros(9).at[4].set(1.0)   # a spike at the centre of a 3 x 3 grid, h = 1/4
    >>> bratu_residual(u, jnp.zeros(9)).reshape(3, 3).tolist()
    [[0.0, -16.0, 0.0], [-16.0, 64.0, -16.0], [0.0, -16.0, 0.0]]
    """
    u = jnp.asarray(u)
    if u.ndim != 1:
        raise ValueError(
            f"bratu_residual: u must be a flat (m^2,) array, got shape {u.shape}. Flatten "
            "an (m, m) grid with .reshape(-1)."
        )
    m = _grid_size(u.shape[0], "bratu_residual")
    h = 1.0 / (m + 1)
    grid = jnp.pad(u.reshape(m, m), 1)
    centre = grid[1:-1, 1:-1]
    neighbours = grid[:-2, 1:-1] + grid[2:, 1:-1] + grid[1:-1, :-2] + grid[1:-1, 2:]
    r = ((4.0 * centre - neighbours) / h**2).reshape(-1) - source
    if isinstance(c, numbers.Real) and c == 0.0:
        return r  # the linear member: no exp to evaluate
    return r + c * jnp.exp(u)


def steady_state(source, c: float = 0.0):
    """The field ``u`` with ``-Lap_h u + c exp(u) = source``, by an implicit sparse solve.

    :func:`~mcmc_customgrad.root` of :func:`bratu_residual` from ``u = 0`` (Newton)
    with :class:`~mcmc_customgrad.linear.Sparse` on the 5-point pattern
    (:func:`laplacian_pattern`): Newton's steps and the tangent solve of the implicit
    function theorem factorise the sparse Jacobian ``A + c diag(exp u)``
    (``A = -Lap_h``). Differentiable in ``source`` to every order; NaN where the solve
    fails (a rejected proposal in a sampler).

    The residual handed to the solver is :func:`bratu_residual` times ``h^2 / 4`` (the
    inverse of the stencil's diagonal), which has the same root and derivatives but
    the units of ``u``: the absolute residual tolerance of a root (``1e-10``) then stays
    far above its rounding floor (about ``eps |u|``) at every grid size. Unscaled, the
    floor ``eps 8 |u| / h^2`` passes ``1e-10`` at ``m = 64`` once ``|u| ~ 25``, and
    Newton cannot certify a field it has to ``1e-13``. Newton still stops only when its
    step is within ``1e-10 (1 + |u|_inf)`` or the residual has fallen by ``1e-10``.

    Parameters
    ----------
    source : (m^2,) array
        The source on the grid, flattened in row-major order.
    c : float
        Coefficient of the reaction term, ``>= 0`` (the equation is then monotone and
        the field unique).

    Returns
    -------
    (m^2,) array

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from mcmc_customgrad.models.pde import bratu_residual, steady_state
    >>> source = jnp.ones(16)   # a 4 x 4 grid
    >>> u = steady_state(source, c=1.0)
    >>> bool(jnp.max(jnp.abs(bratu_residual(u, source, c=1.0))) < 1e-10)
    True
    """
    source = jnp.asarray(source)
    if source.ndim != 1:
        raise ValueError(
            f"steady_state: source must be a flat (m^2,) array, got shape {source.shape}. "
            "Flatten an (m, m) grid with .reshape(-1)."
        )
    m = _grid_size(source.shape[0], "steady_state")
    _check_real("c", c, positive=False, where="steady_state")
    c = float(c)
    linear_solver = _sparse_solver(m)
    # Jacobi scaling: the residual in the units of u. Unscaled, its rounding floor
    # (about eps 8 |u|_inf / h^2) exceeds root's absolute tolerance 1e-10 at m = 64 and
    # |u| ~ 25, where Newton could then not certify an answer that it has to 1e-13.
    scale = 0.25 / (m + 1) ** 2

    def residual(u, s):
        return scale * bratu_residual(u, s, c)

    return implicit.root(residual, jnp.zeros_like(source), source, linear_solver=linear_solver)


@lru_cache(maxsize=8)
def _sparse_solver(m):
    # One solver configuration per grid size: the pattern is coloured once.
    return implicit.linear.Sparse(pattern=laplacian_pattern(m))


def _host_solve(a, c, source):
    """The discrete steady state on the host (float64): Newton with sparse LU steps.

    ``A u + c exp(u) = source`` is monotone (``A`` an M-matrix, ``exp`` increasing and
    convex), so plain Newton from ``u = 0`` converges; used for the simulated data.
    """
    if c == 0.0:
        return scipy.sparse.linalg.spsolve(a, source)
    u = np.zeros(a.shape[0])
    for _ in range(100):
        jacobian = (a + scipy.sparse.diags(c * np.exp(u))).tocsc()
        step = scipy.sparse.linalg.spsolve(jacobian, a @ u + c * np.exp(u) - source)
        u = u - step
        if np.max(np.abs(step)) <= 1e-12 * max(1.0, np.max(np.abs(u))):
            # One more step: Newton squares the error, the field is then exact to rounding.
            jacobian = (a + scipy.sparse.diags(c * np.exp(u))).tocsc()
            return u - scipy.sparse.linalg.spsolve(jacobian, a @ u + c * np.exp(u) - source)
    raise RuntimeError(f"{_WHERE}: the host Newton solve for the simulated data did not converge.")


@lru_cache(maxsize=4)
def _dense_laplacian(m):
    # Only the dense reference of the nonlinear member needs it (small m); cached so that
    # building models does not allocate n^2 numbers.
    return _laplacian(m).toarray()


def _dense_field(m, c, phi):
    """The field by dense Newton, with the hand-derived implicit derivative (reference).

    ``du = (A + c diag(exp(u)))^{-1} Phi dtheta``: the implicit function theorem written
    out by hand, independent of the library's rule. The forward solve is Newton with
    ``jnp.linalg.solve`` on the assembled Jacobian, undamped (the residual is a convex
    M-function, so Newton converges monotonically from any start after its first step);
    NaN if 100 steps do not bring the step below ``1e-12 (1 + |u|_inf)``.
    """
    n = m * m

    def jacobian(u):
        return jnp.asarray(_dense_laplacian(m)) + jnp.diag(c * jnp.exp(u))

    def solve(source):
        a = jnp.asarray(_dense_laplacian(m))  # built at the first trace, not at build time

        def newton_step(u):
            return jnp.linalg.solve(jacobian(u), a @ u + c * jnp.exp(u) - source)

        def cond(state):
            _, small, k = state
            return ~small & (k < 100)

        def body(state):
            u, _, k = state
            delta = newton_step(u)
            u = u - delta
            return u, jnp.max(jnp.abs(delta)) <= 1e-12 * (1.0 + jnp.max(jnp.abs(u))), k + 1

        u0 = jnp.zeros(n, source.dtype)
        u, small, _ = jax.lax.while_loop(cond, body, (u0, jnp.array(False), 0))
        # One more step after the small one: Newton squares the error, so the field is
        # then exact to rounding.
        u = u - newton_step(u)
        return jnp.where(small, u, jnp.nan)

    @jax.custom_jvp
    def field(theta):
        return solve(phi @ theta)

    @field.defjvp
    def _field_jvp(primals, tangents):
        (theta,), (dtheta,) = primals, tangents
        u = field(theta)
        return u, jnp.linalg.solve(jacobian(u), phi @ dtheta)

    return field


def pde_inverse(
    m: int = 16,
    c: float = 0.0,
    *,
    num_params: int = 4,
    num_sensors: int | None = None,
    sigma: float = 0.05,
    prior_sd: float = 1.0,
    seed: int = 0,
) -> Example:
    """Source weights of a steady-state diffusion from noisy point values of its field.

    On the ``m x m`` interior grid of the unit square (``n = m^2`` unknowns, mesh
    ``h = 1 / (m + 1)``, zero Dirichlet boundary) the field ``u`` solves the Bratu-type
    equation ``-Lap_h u + c exp(u) = f(theta)`` (5-point Laplacian), with the source
    ``f(x; theta) = sum_k theta_k phi_k(x)`` a weighted sum of ``num_params`` Gaussian
    bumps ``phi_k = AMPLITUDE exp(-|x - CENTERS[k]|^2 / (2 WIDTH^2))``. The data are
    ``u`` at a ``num_sensors x num_sensors`` sub-lattice of grid nodes plus
    ``N(0, sigma^2)`` noise, simulated on the same grid at ``theta = TRUTH`` (solved on
    the host with SciPy's sparse LU); the prior is ``theta ~ N(0, prior_sd^2 I)``.

    The model solves the discrete equation for ``u`` with :func:`~mcmc_customgrad.root`
    at every evaluation (from ``u = 0``; Newton whose steps and tangent solve use the
    sparse factorisation of the Jacobian, :class:`~mcmc_customgrad.linear.Sparse` with
    the 5-point pattern :func:`laplacian_pattern`), and differentiates it by the
    implicit function theorem.

    The reference depends on ``c``:

    - ``c = 0`` (the default, the linear member): ``u = sum_k theta_k A^{-1} phi_k``
      with ``A = -Lap_h``, so with the basis solutions ``A^{-1} phi_k`` computed once
      (SciPy, float64, at build time) the density is a Gaussian in ``theta`` in closed
      form: no solve at all, usable at any ``m``.
    - ``c > 0`` (nonlinear): no closed form. The reference solves the same equation by
      Newton with dense ``jnp.linalg.solve`` on the assembled ``n x n`` Jacobian, with the
      implicit derivative ``du = (A + c diag(exp u))^{-1} Phi dtheta`` written out by
      hand. Its cost grows like ``n^3``: use it at small ``m`` only (``m <= 24`` or so;
      at ``m = 64`` one evaluation factorises a 4096 x 4096 matrix several times).

    The equation is monotone for ``c >= 0`` (the Jacobian ``A + c diag(exp u)`` is an
    M-matrix), so the field exists and is unique for every ``theta``.

    Parameters
    ----------
    m : int
        Interior grid points per side (``n = m^2`` unknowns), at least 2. The default 16
        keeps the model cheap for the test suite; ``scripts/validate.py`` runs ``m = 64``.
    c : float
        Coefficient of the nonlinear reaction term ``c exp(u)``, finite and ``>= 0``;
        0 is the linear member with a closed-form reference.
    num_params : int
        Number of source bumps and parameters ``theta``, 1 to 4.
    num_sensors : int, optional
        Sensors per side of the observation lattice (``num_sensors^2`` observations), at
        most ``m``; default ``min(6, m)``. Sensor ``k`` sits at the grid node nearest
        ``k / (num_sensors + 1)``, ``k = 1 .. num_sensors``, on each axis.
    sigma : float
        Noise standard deviation of the observations (known), > 0.
    prior_sd : float
        Prior standard deviation of each ``theta_k`` (prior mean 0), > 0.
    seed : int
        Seed of the simulated noise.

    Returns
    -------
    Example
        ``(model, reference, data)``, one parameter ``theta`` of shape ``(num_params,)``
        (unconstrained). ``data`` has ``y`` (the observations), ``sensors`` (their flat
        indices into ``u``), ``x`` (the grid coordinates), ``u`` (the simulated field,
        ``(m, m)``, indexed ``[i, j]`` at ``(x[i], x[j])``), ``basis`` (``phi_k`` on the
        grid, ``(n, num_params)``), ``sigma``, ``c`` and ``truth``.

    Raises
    ------
    ValueError
        ``m < 2``; ``c`` negative or not finite; ``num_params`` outside 1 to 4;
        ``num_sensors`` outside 1 to ``m``; ``sigma`` or ``prior_sd`` not positive.

    Examples
    --------
    >>> import jax
    >>> import mcmc_customgrad as mcg
    >>> model, reference, data = mcg.models.pde_inverse(m=6)
    >>> model.names, model.dim, data["y"].shape
    (('theta',), 4, (36,))
    >>> u = model.to_unconstrained(data["truth"])
    >>> bool(jax.numpy.isclose(model.logdensity(u), reference.logdensity(u), rtol=1e-10))
    True
    """
    check_int(_WHERE, "m", m, 2, hint=" The grid needs at least 2 x 2 interior points.")
    _check_real("c", c, positive=False)
    check_int(_WHERE, "num_params", num_params, 1, len(CENTERS))
    if num_sensors is None:
        num_sensors = min(6, int(m))
    check_int(
        _WHERE,
        "num_sensors",
        num_sensors,
        1,
        int(m),
        hint=" Sensors sit on grid nodes: at most m per side; refine the grid or use fewer.",
    )
    _check_real("sigma", sigma, positive=True)
    _check_real("prior_sd", prior_sd, positive=True)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ValueError(f"{_WHERE}: seed must be an integer, got {seed!r}.")
    m, num_params, num_sensors = int(m), int(num_params), int(num_sensors)
    c, sigma, prior_sd = float(c), float(sigma), float(prior_sd)
    n, h = m * m, 1.0 / (m + 1)

    # Grid, source basis and sensors (host, float64).
    x = np.arange(1, m + 1) * h
    gx, gy = np.meshgrid(x, x, indexing="ij")  # [i, j] -> (x_i, x_j), row-major flat
    phi = np.stack(
        [
            AMPLITUDE * np.exp(-((gx - a) ** 2 + (gy - b) ** 2) / (2 * WIDTH**2)).reshape(-1)
            for a, b in CENTERS[:num_params]
        ],
        axis=1,
    )
    nodes = np.rint(np.arange(1, num_sensors + 1) * (m + 1) / (num_sensors + 1)).astype(int) - 1
    sensors = (nodes[:, None] * m + nodes[None, :]).reshape(-1)

    # Simulated data.
    a = _laplacian(m)
    theta_true = np.asarray(TRUTH[:num_params])
    u_true = _host_solve(a, c, phi @ theta_true)
    rng = np.random.default_rng(seed)
    y = u_true[sensors] + rng.normal(0.0, sigma, sensors.size)

    y_j, sensors_j, phi_j = jnp.asarray(y), jnp.asarray(sensors), jnp.asarray(phi)

    def observed_solved(theta):
        return steady_state(phi_j @ theta, c)[sensors_j]

    if c == 0.0:
        # Basis solutions A^{-1} phi_k at the sensors: the field is linear in theta.
        g = jnp.asarray(scipy.sparse.linalg.spsolve(a, phi).reshape(n, num_params)[sensors])

        def observed_reference(theta):
            return g @ theta

    else:
        dense_field = _dense_field(m, c, phi_j)

        def observed_reference(theta):
            return dense_field(theta)[sensors_j]

    def make(observed):
        def log_likelihood(params):
            return norm.logpdf(y_j, observed(params["theta"]), sigma)

        def logdensity(params):
            prior = jnp.sum(norm.logpdf(params["theta"], 0.0, prior_sd))
            return prior + jnp.sum(log_likelihood(params))

        return logdensity, log_likelihood

    spec = {"theta": real(shape=(num_params,))}
    ld, ll = make(observed_solved)
    ld_ref, ll_ref = make(observed_reference)
    data = {
        "y": y_j,
        "sensors": sensors_j,
        "x": jnp.asarray(x),
        "u": jnp.asarray(u_true.reshape(m, m)),
        "basis": phi_j,
        "sigma": sigma,
        "c": c,
        "truth": {"theta": jnp.asarray(theta_true)},
    }
    return Example(Model(ld, spec, ll), Model(ld_ref, spec, ll_ref), data)
