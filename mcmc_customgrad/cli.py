"""The ``mcmc-customgrad`` command.

Exit codes: 0 success, 1 a check failed (the demo's gradients disagree with the closed
forms), 2 bad usage.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["main", "demo"]


def _rel(a, b) -> float:
    import numpy as np

    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


def demo(out=None) -> bool:
    """Print the seed numbers computed by the core against their closed forms.

    Returns True when every derivative agrees with its closed form to ``1e-6`` relative.

    Examples
    --------
    >>> import io
    >>> from mcmc_customgrad.cli import demo
    >>> demo(io.StringIO())
    True
    """
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    import mcmc_customgrad as mcg

    out = out or sys.stdout
    rows = []

    # Seed 000: f(x) = -min_y |y|^p/p - x y is the convex conjugate |x|^q/q, 1/p + 1/q = 1.
    p, x = 3.0, jnp.array([0.31415])
    q = p / (p - 1)

    def inner(y, x):
        return jnp.sum(jnp.abs(y) ** p / p - x * y)

    def conjugate(x):
        return -mcg.min_value(inner, jnp.zeros_like(x), x)

    def closed(x):
        return jnp.sum(jnp.abs(x) ** q / q)

    rows.append(
        ("conjugate |y|^3/3: df/dx at 0.31415", jax.grad(conjugate)(x)[0], jax.grad(closed)(x)[0])
    )
    rows.append(
        (
            "conjugate |y|^3/3: d2f/dx2",
            jax.hessian(conjugate)(x)[0, 0],
            jax.hessian(closed)(x)[0, 0],
        )
    )

    # Seed 001: Newton's square root as a fixed point.
    def sqrt(a):
        return mcg.fixed_point(lambda s, a: 0.5 * (s + a / s), a, a)

    rows.append(
        ("Newton sqrt fixed point: d/da at 2", jax.grad(sqrt)(2.0), jax.grad(jnp.sqrt)(2.0))
    )
    rows.append(
        (
            "Newton sqrt fixed point: d2/da2",
            jax.grad(jax.grad(sqrt))(2.0),
            jax.grad(jax.grad(jnp.sqrt))(2.0),
        )
    )

    # Kepler's equation E - e sin E = M.
    def eccentric_anomaly(m, e):
        return mcg.root(lambda E, m, e: E - e * jnp.sin(E) - m, m, m, e)

    m, e = 1.0, 0.5
    E = eccentric_anomaly(m, e)
    rows.append(("Kepler dE/dM", jax.grad(eccentric_anomaly, 0)(m, e), 1 / (1 - e * jnp.cos(E))))
    rows.append(
        ("Kepler dE/de", jax.grad(eccentric_anomaly, 1)(m, e), jnp.sin(E) / (1 - e * jnp.cos(E)))
    )

    ok = True
    print(f"mcmc_customgrad {mcg.__version__}: implicit derivatives against closed forms", file=out)
    print(f"{'quantity':40s} {'implicit':>20s} {'closed form':>20s} {'rel. error':>10s}", file=out)
    for name, got, want in rows:
        err = _rel(got, want)
        ok &= err <= 1e-6
        print(f"{name:40s} {float(got):20.12f} {float(want):20.12f} {err:10.1e}", file=out)
    print("all derivatives agree to 1e-6" if ok else "MISMATCH: see the table above", file=out)
    return ok


def main(argv=None) -> int:
    """Entry point of the ``mcmc-customgrad`` console script."""
    from mcmc_customgrad import __version__

    parser = argparse.ArgumentParser(
        prog="mcmc-customgrad",
        description="Implicit derivatives of inner solves for HMC log-densities.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("demo", help="compare implicit derivatives with closed forms (seeds 000/001)")
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "demo":
        return 0 if demo() else 1
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
