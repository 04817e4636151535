"""Cost of value_and_grad on the convex-conjugate density (seed 000, d dimensions).

    python benchmarks/bench_conjugate.py            # needs: pip install '.[bench]'

Density: log p(x) = sum_i N(x_i | 0, 1) + N(f(x) | 0, 1) with f(x) = -min_y
(sum |y|^3/3 - x.y) = sum |x|^(3/2) / (3/2). All variants run in this process, in float64,
from the seed's cold start y0 = 0, with the inner tolerance 1e-10:

- closed form: f written out (the reference);
- mcg.min_value with L-BFGS stopped at |grad| <= 1e-10 absolute (the seed's gtol: the
  like-for-like row), with its defaults (damped Newton up to 32 unknowns, L-BFGS above;
  |grad| <= 1e-10 (1 + |f|)), and with damped Newton;
- seed 000's recipe: jax.scipy.optimize.minimize (BFGS, gtol 1e-10) + a hand custom_jvp
  whose derivative is the argmin;
- Optimistix: optx.minimise with BFGS(rtol=atol=1e-10) and ImplicitAdjoint, the value
  recomputed at the returned minimiser (what a user writes; the adjoint differentiates
  the minimiser, a linear solve the envelope theorem avoids).

Reported: time per call (minimum over interleaved repeats, after compilation) of the
jitted value and value_and_grad,
the ratios against the closed form and against mcg, and the gradient's relative error
against the closed form. Times are per call of a single density evaluation.
"""

from __future__ import annotations

import argparse
import platform
import time
from functools import partial

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
from jax.scipy.optimize import minimize  # noqa: E402
from jax.scipy.stats import norm  # noqa: E402

import mcmc_customgrad as mcg  # noqa: E402

P = 3.0
Q = P / (P - 1)
TOL = 1e-10


def inner(y, x):
    return jnp.sum(jnp.abs(y) ** P / P - x * y)


def density(f, x):
    return jnp.sum(norm.logpdf(x)) + norm.logpdf(f(x))


def f_closed(x):
    return jnp.sum(jnp.abs(x) ** Q / Q)


def f_mcg(x):
    return -mcg.min_value(inner, jnp.zeros_like(x), x)  # default: Newton (d <= 32), else L-BFGS


ABSOLUTE = mcg.solvers.LBFGS(rtol=0.0, atol=TOL)  # |grad| <= 1e-10, as the seed's gtol


def f_mcg_absolute(x):
    return -mcg.min_value(inner, jnp.zeros_like(x), x, solver=ABSOLUTE)


NEWTON = mcg.solvers.Newton()


def f_mcg_newton(x):
    return -mcg.min_value(inner, jnp.zeros_like(x), x, solver=NEWTON)


# --- seed 000's recipe, generalised to d dimensions -------------------------------------
def _seed_solve(x):
    res = minimize(lambda y: inner(y, x), jnp.zeros_like(x), method="BFGS", options={"gtol": TOL})
    return -res.fun, res.x


@jax.custom_jvp
def f_seed(x):
    return _seed_solve(x)[0]


@f_seed.defjvp
def _f_seed_jvp(primals, tangents):
    (x,), (x_dot,) = primals, tangents
    value, argmin = _seed_solve(x)
    return value, jnp.dot(argmin, x_dot)


# --- Optimistix -------------------------------------------------------------------------
def make_optimistix():
    import optimistix as optx

    solver = optx.BFGS(rtol=TOL, atol=TOL)

    def f_optx(x):
        sol = optx.minimise(
            lambda y, x: inner(y, x),
            solver,
            jnp.zeros_like(x),
            args=x,
            adjoint=optx.ImplicitAdjoint(),
            max_steps=10_000,
            throw=False,
        )
        return -inner(sol.value, x)

    return f_optx, optx.__version__ if hasattr(optx, "__version__") else "?"


def timeit_pair(value, vg, x, repeats, number):
    """Min-of-repeats seconds per call of ``value`` and ``vg``, interleaved.

    Interleaving and taking the minimum make the ratio robust to load on a small shared
    machine (a median of separate runs moved it by 50% here).
    """
    jax.block_until_ready(value(x))  # compile both first
    jax.block_until_ready(vg(x))
    t_value, t_vg = [], []
    for _ in range(repeats):
        for fn, samples in ((value, t_value), (vg, t_vg)):
            start = time.perf_counter()
            for _ in range(number):
                out = fn(x)
            jax.block_until_ready(out)
            samples.append((time.perf_counter() - start) / number)
    return min(t_value), min(t_vg)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--number", type=int, default=50)
    args = parser.parse_args()

    variants = {
        "closed form": f_closed,
        "mcg.min_value (L-BFGS, abs. tol)": f_mcg_absolute,
        "mcg.min_value (default)": f_mcg,
        "mcg.min_value (Newton)": f_mcg_newton,
        "seed 000 recipe": f_seed,
    }
    try:
        f_optx, optx_version = make_optimistix()
        variants["Optimistix BFGS"] = f_optx
    except ImportError:
        optx_version = None
        print("optimistix not installed (pip install '.[bench]'): skipping it")

    print(f"# conjugate density, float64, tol {TOL:g}, cold start y0 = 0")
    print(
        f"jax {jax.__version__}, mcmc_customgrad {mcg.__version__}, optimistix {optx_version}, "
        f"{platform.processor() or platform.machine()}, {jax.devices()[0].platform}"
    )
    print()
    print(
        "| d | variant | value (µs) | value_and_grad (µs) | vg / value | vg / closed-form vg "
        "| vg / mcg vg | grad rel. error |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for d in args.dims:
        x = jax.random.normal(jax.random.key(d), (d,))
        grad_closed = jax.grad(partial(density, f_closed))(x)
        rows = {}
        for name, f in variants.items():
            value = jax.jit(partial(density, f))
            vg = jax.jit(jax.value_and_grad(partial(density, f)))
            t_v, t_vg = timeit_pair(value, vg, x, args.repeats, args.number)
            g = vg(x)[1]
            err = float(jnp.max(jnp.abs(g - grad_closed)) / jnp.max(jnp.abs(grad_closed)))
            rows[name] = (t_v, t_vg, err)
        base_vg = rows["closed form"][1]
        mcg_vg = rows["mcg.min_value (L-BFGS, abs. tol)"][1]
        for name, (t_v, t_vg, err) in rows.items():
            print(
                f"| {d} | {name} | {t_v * 1e6:.1f} | {t_vg * 1e6:.1f} | {t_vg / t_v:.2f} | "
                f"{t_vg / base_vg:.1f} | {t_vg / mcg_vg:.2f} | {err:.1e} |"
            )


if __name__ == "__main__":
    main()
