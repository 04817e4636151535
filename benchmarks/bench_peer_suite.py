"""Optimistix's test problems: this library's default solvers next to Optimistix's.

    python benchmarks/bench_peer_suite.py                 # needs: pip install '.[bench]'
    python benchmarks/bench_peer_suite.py --quick         # fewer timing repeats
    python benchmarks/bench_peer_suite.py --only min_beale root_nn_28
    python benchmarks/bench_peer_suite.py --only 'fp_*'   # shell-style patterns

Every problem of ``benchmarks/peer_problems.py`` (ported from Optimistix's
``tests/helpers.py``: minimisation, least squares, fixed points, the same maps as roots,
bisection), in one process, in float64:

(a) ``mcg`` with its defaults (``solver=None``, ``full_output=True``): converged flag,
    steps, max-abs error against the known solution (against Optimistix's answer, marked
    ``*``, where none is known);
(b) Optimistix's reference solver for that problem class in Optimistix's tests
    (``optx.BFGS``, ``optx.LevenbergMarquardt``, ``optx.FixedPointIteration``,
    ``optx.Newton``, ``optx.Bisection``) with ``rtol = atol = 1e-10``,
    ``max_steps = 10_000``, ``throw=False`` and ``adjoint=optx.ImplicitAdjoint()``
    (with ``AutoLinearSolver(well_posed=False)`` for ``simple_nn``, as its tests do);
(c) ``jax.jacfwd`` of ``y*`` with respect to all parameters (flattened) for both: their
    difference ``max |J_mcg - J_optx| / max |J_optx|``, and ours against central finite
    differences of ``mcg`` itself (step ``6e-6 max(1, |p|)`` per parameter). Where both
    Jacobians are below ``1e-8`` (``y* = 0`` for every parameter value) the absolute
    difference is shown, marked ``a``. The differences are one jitted call per
    perturbation, not a ``vmap``: batched LU custom calls (a vmapped Newton loop, or two
    vmapped solves in one program) deadlocked jaxlib 0.10.2's CPU thread pool on a 2-core
    machine;
(d) time per call, jitted: the value alone, and the value with its Jacobian
    (``jacfwd``); each median over interleaved repeats (mcg, optx, mcg, optx, ...) after
    compilation, each repeat a batch of calls of at least a few milliseconds; and the
    value *in a program*: ``IN_PROGRAM = 64`` solves at parameters ``p (1 + 1e-9 k)``
    inside one jitted ``lax.scan``, per solve. A solve inside a log-density runs like
    the latter; a call on its own also pays XLA:CPU's dispatch, which runs a program
    inline only when its estimated cost is below 1,000 flops and hands it to a thread
    pool otherwise (tens of microseconds on a small machine). Problems without
    parameters have no in-program time (XLA would hoist the solve out of the loop).

A problem is *solved* by a library when its converged flag is set and its error is at
most ``1e-6`` against the known solution; where none is known (a non-convex problem
may have several minima, or a continuum of them) when its converged flag is set and
the optimality residual recomputed at its answer (gradient, ``T(y) - y``, ``F(y)``) is
at most ``1e-8``, for both libraries alike. This library's converged answers that are
off by more than ``1e-6`` are shown as ``yes (DEGENERATE)`` when its status says so
(the status column), ``yes (wrong)`` otherwise. Failures of this library's defaults are
findings, not bugs of the benchmark: they are printed as they are. Exceptions are
caught per problem and shown in the table.
"""

from __future__ import annotations

import argparse
import fnmatch
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402

import mcmc_customgrad as mcg  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peer_problems import all_problems, mcg_solve, optimistix_solve  # noqa: E402

SOLVED_ERR = 1e-6  # a converged answer further than this from the solution is wrong
FD_STEP = 6e-6  # central differences: ~cbrt(eps), times max(1, |p|)
ZERO_JAC = 1e-8  # both Jacobians below this: report the absolute difference
STATIONARY_TOL = 1e-8  # no known solution: the optimality residual must be below this
IN_PROGRAM = 64  # solves per in-program timing call (one lax.scan)


# --------------------------------------------------------------------------- helpers


def optimality_residual(problem, y):
    """Max-norm of the optimality residual at ``y`` (gradient, ``T(y) - y``, ``F(y)``)."""
    p = problem.params
    if problem.kind in ("argmin", "least_squares"):
        return max_abs(jax.grad(problem.fn)(y, *p))
    if problem.kind == "fixed_point":
        return max_abs(problem.fn(y, *p) - y)
    return max_abs(problem.fn(y, *p))


def max_abs(x):
    return float(jnp.max(jnp.abs(x), initial=0.0))


def fmt(x, spec=".1e"):
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    if not np.isfinite(x):
        return "nan" if np.isnan(x) else "inf"
    return format(x, spec)


def jac_diff(j_a, j_b):
    """``(text, number)``: relative max difference, or absolute where both are ~0."""
    scale = max(max_abs(j_a), max_abs(j_b))
    diff = max_abs(j_a - j_b)
    if not np.isfinite(diff) or not np.isfinite(scale):
        return "nan", float("nan")
    if scale < ZERO_JAC:
        return f"{diff:.0e}a", diff
    rel = diff / max(max_abs(j_b), ZERO_JAC)
    return f"{rel:.0e}", rel


def short_error(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}".replace("|", "/").replace("\n", " ")
    return text[:90] + ("..." if len(text) > 90 else "")


class Timer:
    """Median seconds per call of several jitted functions, interleaved."""

    def __init__(self, repeats: int, target_s: float):
        self.repeats = repeats
        self.target_s = target_s

    def _number(self, fn, x):
        start = time.perf_counter()
        jax.block_until_ready(fn(x))
        once = time.perf_counter() - start
        return max(1, min(1000, int(self.target_s / max(once, 1e-7))))

    def run(self, fns: dict, x) -> dict:
        for fn in fns.values():  # compile, then one warm call to size the batches
            jax.block_until_ready(fn(x))
        numbers = {k: self._number(fn, x) for k, fn in fns.items()}
        samples = {k: [] for k in fns}
        for _ in range(self.repeats):
            for k, fn in fns.items():
                start = time.perf_counter()
                for _ in range(numbers[k]):
                    out = fn(x)
                jax.block_until_ready(out)
                samples[k].append((time.perf_counter() - start) / numbers[k])
        return {k: statistics.median(v) for k, v in samples.items()}


# ---------------------------------------------------------------------- one problem


def run_problem(problem, timer: Timer | None) -> dict:
    """Every measurement for one problem; failures are recorded, never raised."""
    import optimistix as optx

    row = {"problem": problem, "notes": []}
    flat_p, unravel = ravel_pytree(problem.params)
    has_params = flat_p.size > 0

    def mcg_full(p):
        return mcg_solve(problem, *unravel(p), full_output=True)

    def mcg_value(p):
        return mcg_solve(problem, *unravel(p))

    def optx_full(p):
        sol = optimistix_solve(problem, *unravel(p))
        return sol.value, sol.result == optx.RESULTS.successful, sol.stats["num_steps"]

    def optx_value(p):
        return optimistix_solve(problem, *unravel(p)).value

    # (a) and (b): the solves.
    y_m = y_o = None
    try:
        y_m, info = jax.jit(mcg_full)(flat_p)
        row["mcg_conv"] = bool(info.converged)
        row["mcg_steps"] = int(info.num_steps)
        row["mcg_res"] = float(info.residual_norm)
        row["mcg_status"] = mcg.Status(int(info.status)).name
    except Exception as err:
        row["notes"].append("mcg solve: " + short_error(err))
        traceback.print_exc(file=sys.stderr)
    try:
        y_o, ok, steps = jax.jit(optx_full)(flat_p)
        row["optx_conv"] = bool(ok)
        row["optx_steps"] = int(steps)
    except Exception as err:
        row["notes"].append("optx solve: " + short_error(err))
        traceback.print_exc(file=sys.stderr)

    reference = problem.solution
    if reference is not None:
        if y_m is not None:
            row["mcg_err"] = max_abs(y_m - reference)
        if y_o is not None:
            row["optx_err"] = max_abs(y_o - reference)
    elif y_m is not None and y_o is not None:
        row["mcg_err"] = max_abs(y_m - y_o)
        row["mcg_err_vs_optx"] = True
    # Without a known solution (a non-convex problem may have several minima, or a
    # continuum of them, as the ReLU network does) both libraries are judged alike by
    # the optimality residual recomputed here at their answers.
    for lib, y in (("mcg", y_m), ("optx", y_o)):
        if reference is None and y is not None:
            row[f"{lib}_stationary"] = optimality_residual(problem, y)
    for lib in ("mcg", "optx"):
        err = None if row.get("mcg_err_vs_optx") else row.get(f"{lib}_err")
        ok = row.get(f"{lib}_conv", False) and (err is None or err <= SOLVED_ERR)
        if reference is None:
            ok = ok and row.get(f"{lib}_stationary", np.inf) <= STATIONARY_TOL
        row[f"{lib}_flagged"] = (
            lib == "mcg"
            and not ok
            and row.get("mcg_conv", False)
            and row.get("mcg_status") == "DEGENERATE"
        )
        row[f"{lib}_solved"] = bool(ok)

    # (c) derivatives.
    if not has_params:
        row["dj_optx"] = row["dj_fd"] = "n/a"
    else:
        j_m = j_o = None
        try:
            j_m = jax.jit(jax.jacfwd(mcg_value))(flat_p).reshape(problem.n, -1)
            row["mcg_jac_finite"] = bool(jnp.all(jnp.isfinite(j_m)))
        except Exception as err:
            row["notes"].append("mcg jacfwd: " + short_error(err))
            traceback.print_exc(file=sys.stderr)
        try:
            j_o = jax.jit(jax.jacfwd(optx_value))(flat_p).reshape(problem.n, -1)
        except Exception as err:
            row["notes"].append("optx jacfwd: " + short_error(err))
            traceback.print_exc(file=sys.stderr)
        if j_m is not None and j_o is not None:
            row["dj_optx"], row["dj_optx_val"] = jac_diff(j_m, j_o)
        if j_m is not None:
            try:
                # One jitted solve per perturbation, no vmap: batched LU custom calls
                # (a vmapped Newton) deadlock jaxlib 0.10.2's CPU thread pool here.
                value = jax.jit(mcg_value)
                h = FD_STEP * np.maximum(1.0, np.abs(np.asarray(flat_p)))
                columns = []
                for i, hi in enumerate(h):
                    plus = value(flat_p.at[i].add(hi))
                    minus = value(flat_p.at[i].add(-hi))
                    columns.append(jnp.ravel(plus - minus) / (2 * hi))
                j_fd = jnp.stack(columns, axis=1)
                row["dj_fd"], row["dj_fd_val"] = jac_diff(j_m, j_fd)
            except Exception as err:
                row["notes"].append("finite differences: " + short_error(err))
                traceback.print_exc(file=sys.stderr)

    # (d) timing.
    if timer is not None and y_m is not None and y_o is not None:
        fns = {"mcg_v": jax.jit(mcg_value), "optx_v": jax.jit(optx_value)}
        if has_params:

            def with_jac(solve):
                return jax.jit(lambda p: (solve(p), jax.jacfwd(solve)(p)))

            fns["mcg_vj"] = with_jac(mcg_value)
            fns["optx_vj"] = with_jac(optx_value)

            def in_program(solve):
                scales = 1.0 + 1e-9 * jnp.arange(IN_PROGRAM, dtype=flat_p.dtype)

                def many(p):
                    def one(total, scale):
                        y = solve(p * scale)
                        return total + jnp.sum(jnp.where(jnp.isfinite(y), y, 0.0)), None

                    return jax.lax.scan(one, jnp.zeros((), flat_p.dtype), scales)[0]

                return jax.jit(many)

            fns["mcg_s"] = in_program(mcg_value)
            fns["optx_s"] = in_program(optx_value)
        try:
            times = timer.run(fns, flat_p)
            row["t_mcg_v"] = times["mcg_v"]
            row["t_optx_v"] = times["optx_v"]
            row["ratio_v"] = times["mcg_v"] / times["optx_v"]
            if has_params:
                row["t_mcg_vj"] = times["mcg_vj"]
                row["ratio_vj"] = times["mcg_vj"] / times["optx_vj"]
                row["t_mcg_s"] = times["mcg_s"] / IN_PROGRAM
                row["ratio_s"] = times["mcg_s"] / times["optx_s"]
        except Exception as err:
            row["notes"].append("timing: " + short_error(err))
            traceback.print_exc(file=sys.stderr)

    if problem.optx_skipped:
        row["notes"].append("commented out in Optimistix's helpers ('hard')")
    return row


# -------------------------------------------------------------------------- output


def conv_text(row, lib):
    conv = row.get(f"{lib}_conv")
    if conv is None:
        return "error"
    if conv and row.get(f"{lib}_flagged"):
        return "yes (DEGENERATE)"
    if conv and not row[f"{lib}_solved"]:
        return "yes (wrong)"
    return "yes" if conv else "**no**"


def print_table(rows):
    print(
        "| problem | kind | n | mcg conv | mcg status | mcg steps | mcg err | optx solver "
        "| optx conv | optx steps | optx err | dJ mcg/optx | dJ mcg/FD | mcg value (µs) "
        "| ratio value | ratio value+jac | mcg in program (µs) | ratio in program | notes |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        p = row["problem"]
        err = fmt(row.get("mcg_err"))
        if row.get("mcg_err_vs_optx") and err != "-":
            err += "*"
        t = row.get("t_mcg_v")
        cells = [
            p.name,
            p.kind,
            str(p.n),
            conv_text(row, "mcg"),
            row.get("mcg_status", "-"),
            str(row.get("mcg_steps", "-")),
            err,
            p.reference.removeprefix("optx."),
            conv_text(row, "optx"),
            str(row.get("optx_steps", "-")),
            fmt(row.get("optx_err")),
            row.get("dj_optx", "-"),
            row.get("dj_fd", "-"),
            "-" if t is None else f"{t * 1e6:.0f}",
            fmt(row.get("ratio_v"), ".2f"),
            fmt(row.get("ratio_vj"), ".2f"),
            "-" if row.get("t_mcg_s") is None else f"{row['t_mcg_s'] * 1e6:.1f}",
            fmt(row.get("ratio_s"), ".2f"),
            "; ".join(row["notes"]),
        ]
        print("| " + " | ".join(cells) + " |")


def print_summary(rows):
    total = len(rows)
    mcg_solved = [r for r in rows if r.get("mcg_solved")]
    optx_solved = [r for r in rows if r.get("optx_solved")]
    print()
    print("## Summary")
    print()
    print(f"- problems: {total}")
    print(f"- solved by mcg defaults: {len(mcg_solved)}/{total}")
    print(f"- solved by the Optimistix reference: {len(optx_solved)}/{total}")
    failed = [r["problem"].name for r in rows if not r.get("mcg_solved")]
    print(f"- not solved by mcg defaults: {', '.join(failed) or 'none'}")
    flagged = [r["problem"].name for r in rows if r.get("mcg_flagged")]
    print(
        f"- of those, converged off by more than 1e-6 but reported DEGENERATE: "
        f"{', '.join(flagged) or 'none'}"
    )
    silent = [
        r["problem"].name
        for r in rows
        if r.get("mcg_conv") and not r.get("mcg_solved") and not r.get("mcg_flagged")
    ]
    print(f"- converged, wrong and not flagged (silently wrong): {', '.join(silent) or 'none'}")
    inf_j = [
        r["problem"].name for r in rows if r.get("mcg_conv") and not r.get("mcg_jac_finite", True)
    ]
    print(f"- converged with non-finite derivatives: {', '.join(inf_j) or 'none'}")
    skipped = [r for r in rows if not r["problem"].optx_skipped]
    solved = [r for r in skipped if r.get("mcg_solved")]
    ref = [r for r in skipped if r.get("optx_solved")]
    print(
        f"- without the two problems Optimistix skips as hard: mcg {len(solved)}/"
        f"{len(skipped)}, Optimistix {len(ref)}/{len(skipped)}"
    )
    failed = [r["problem"].name for r in rows if not r.get("optx_solved")]
    print(f"- not solved by the Optimistix reference: {', '.join(failed) or 'none'}")
    both = [r for r in rows if r.get("mcg_solved") and r.get("optx_solved")]
    agree = [r for r in both if r.get("dj_optx_val", np.inf) <= 1e-6]
    with_j = [r for r in both if "dj_optx_val" in r]
    print(f"- derivatives within 1e-6 of Optimistix's (both solved): {len(agree)}/{len(with_j)}")
    bad = [
        f"{r['problem'].name} ({r['dj_optx']})"
        for r in rows
        if "dj_optx_val" in r and not r.get("dj_optx_val", np.inf) <= 1e-6
    ]
    print(f"- derivatives not within 1e-6 of Optimistix's: {', '.join(bad) or 'none'}")
    fd = [r for r in rows if "dj_fd_val" in r]
    fd_ok = [r for r in fd if r["dj_fd_val"] <= 1e-4]
    print(f"- mcg derivatives within 1e-4 of central differences: {len(fd_ok)}/{len(fd)}")
    for key, label in (
        ("ratio_v", "value"),
        ("ratio_vj", "value+jacfwd"),
        ("ratio_s", "value in a program"),
    ):
        timed = [r for r in both if np.isfinite(r.get(key, np.nan))]
        if not timed:
            continue
        ratios = [r[key] for r in timed]
        worst = max(timed, key=lambda r: r[key])
        best = min(timed, key=lambda r: r[key])
        print(
            f"- time ratio mcg/optx, {label} (both solved, {len(timed)} problems): median "
            f"{statistics.median(ratios):.2f}, worst {worst[key]:.2f} "
            f"({worst['problem'].name}), best {best[key]:.2f} ({best['problem'].name})"
        )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 timing repeats, short batches")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="problem names or patterns")
    parser.add_argument("--repeats", type=int, default=None, help="timing repeats (default 15)")
    parser.add_argument("--no-timing", action="store_true", help="skip (d)")
    args = parser.parse_args(argv)

    import optimistix as optx

    problems = all_problems()
    if args.only:
        problems = tuple(
            p for p in problems if any(fnmatch.fnmatchcase(p.name, pat) for pat in args.only)
        )
        if not problems:
            parser.error(f"no problem matches {args.only}")
    repeats = args.repeats or (5 if args.quick else 15)
    timer = None if args.no_timing else Timer(repeats, 0.002 if args.quick else 0.005)

    print("# Optimistix's test problems: mcg defaults vs Optimistix reference solvers")
    print()
    print(
        f"jax {jax.__version__}, mcmc_customgrad {mcg.__version__}, optimistix "
        f"{getattr(optx, '__version__', '?')}, {platform.machine()}, "
        f"{jax.devices()[0].platform}, float64; timing: median of {repeats} interleaved "
        "repeats" + (" (skipped)" if timer is None else "")
    )
    print()
    rows = []
    for problem in problems:
        start = time.perf_counter()
        rows.append(run_problem(problem, timer))
        print(f"  {problem.name}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    print_table(rows)
    print_summary(rows)
    print()
    print(
        "err: max |y - y*| against the known solution (* against Optimistix's answer); "
        "'yes (wrong)': converged flag set but err > 1e-6; dJ: max |J - J_ref| / "
        "max |J_ref| (a: absolute, both ~0); ratio: mcg time / optx time (jitted, median); "
        f"in program: per solve, {IN_PROGRAM} solves in one lax.scan."
    )


if __name__ == "__main__":
    main()
