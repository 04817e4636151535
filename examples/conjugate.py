"""Seed 000's convex-conjugate density, reproduced and then generalised.

The seed (Blackjax's "Use custom gradients" page) defines ``f(x) = -min_y g(x, y)`` with
``g(x, y) = |y|^p / p - x y``, minimised numerically by BFGS, and writes a ``custom_vjp``
by hand from the envelope theorem: ``df/dx = y*(x)``, the minimiser. Here the same rule
comes from one call, ``mcg.min_value``, which also gives second derivatives, works in any
dimension, and returns NaN (a rejected proposal) instead of a wrong number when the inner
solve fails.

Part 1 reproduces the seed's numbers: ``f'(0.31415) = 0.5604908`` for ``p = 3``, against
the closed form ``f(x) = |x|^q / q`` with ``1/p + 1/q = 1``. Part 2 samples the density
``sum_i N(x_i | 0, 1) + N(f(x) | 0, 1)`` in ``--dim`` dimensions with NUTS and compares the
draws with those of the closed form.

    .venv/bin/python examples/conjugate.py                 # d = 3, p = 3: 4 x 2,500 draws each
    .venv/bin/python examples/conjugate.py --dim 10 --p 1.7
    .venv/bin/python examples/conjugate.py --quick         # a smoke run (what the tests do)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from _common import exit_code, parse_args, sample_and_compare
from jax.scipy.stats import norm

import mcmc_customgrad as mcg


def inner(y, x, p):
    """The seed's ``g(x, y) = sum |y|^p / p - <x, y>``, minimised over ``y``."""
    return jnp.sum(jnp.abs(y) ** p / p - x * y)


def conjugate(x, p):
    """``f(x) = -min_y g(x, y)``: the minimum by Newton from ``y0 = 0``, the gradient by
    the envelope theorem (``y*``, no linear solve)."""
    return -mcg.min_value(inner, jnp.zeros_like(x), x, p)


def conjugate_closed(x, p):
    """The closed form ``sum |x|^q / q``, ``1/p + 1/q = 1``."""
    q = p / (p - 1)
    return jnp.sum(jnp.abs(x) ** q / q)


def reproduce_seed() -> bool:
    """Part 1: the seed's derivative at ``x = 0.31415``, ``p = 3``, and one order more."""
    x, p = jnp.array([0.31415]), 3.0
    rows = [
        ("df/dx", jax.grad(conjugate)(x, p)[0], jax.grad(conjugate_closed)(x, p)[0]),
        (
            "d2f/dx2",
            jax.hessian(conjugate)(x, p)[0, 0],
            jax.hessian(conjugate_closed)(x, p)[0, 0],
        ),
    ]
    print("Part 1: seed 000 at x = 0.31415, p = 3 (the seed prints df/dx = 0.5604908)")
    ok = True
    for name, got, want in rows:
        rel = abs(float(got) - float(want)) / abs(float(want))
        ok &= rel < 1e-8
        print(f"  {name:8s} implicit {float(got):.10f}   closed form {float(want):.10f}")
    return ok


def main(argv=None) -> int:
    """Both parts; exit status 0 when the numbers and the comparison agree."""

    def options(parser):
        parser.add_argument("--dim", type=int, default=3, help="dimension of x (default 3)")
        parser.add_argument("--p", type=float, default=3.0, help="exponent p > 1 (default 3)")

    args = parse_args("conjugate", __doc__, argv, options)
    if args.dim < 1 or not args.p > 1:
        raise SystemExit("--dim must be >= 1 and --p > 1")
    seed_ok = reproduce_seed()

    p = args.p
    spec = {"x": mcg.real(shape=(args.dim,))}

    def logdensity(params):
        x = params["x"]
        return jnp.sum(norm.logpdf(x)) + norm.logpdf(conjugate(x, p))

    def logdensity_closed(params):
        x = params["x"]
        return jnp.sum(norm.logpdf(x)) + norm.logpdf(conjugate_closed(x, p))

    print(f"\nPart 2: NUTS on the density in d = {args.dim}, p = {p}")
    _, _, report = sample_and_compare(
        mcg.Model(logdensity, spec), mcg.Model(logdensity_closed, spec), args
    )
    return exit_code(report) if seed_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
