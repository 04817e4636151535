"""Large and sparse inner problems: sparse Newton and its gradient against Optimistix and a floor.

    python benchmarks/bench_large.py             # the full table, 15 to 20 minutes on 2 CPU cores
    python benchmarks/bench_large.py --quick     # smoke test, under a minute, one process

The inner problem is the steady state of a reaction-diffusion equation with an unknown
source, ``-u'' + c exp(u) = f(x; th)`` on ``(0, 1)`` with ``u = 0`` at both ends, on ``n``
interior points (mesh ``h = 1 / (n + 1)``), three-point stencil, written so that the
Jacobian's entries are O(1) (the library's root tolerance is an absolute ``1e-10`` on the
residual; the unscaled ``-u''/h^2`` form has a rounding floor far above it at large
``n``)::

    F_i(u, th) = (2 u_i - u_{i-1} - u_{i+1}) + h^2 (c exp(u_i) - f(x_i; th)),
    f(x; th)   = S (th_0 sin(pi x) + th_1 x),    c = 0.1, S = 1000, th = (1, 0.5).

``S = 1000`` gives ``max u`` about 9.4 and 7 Newton steps from ``u0 = 0`` at every ``n``
(the step counts are printed). The 2-D problem is the same on the ``m x m`` interior grid
of the unit square (``n = m^2``, 5-point stencil, ``4 u_ij - neighbours``) with
``f = S (th_0 sin(pi x) sin(pi y) + th_1 x)``. The measured quantity is always
``jax.jit(jax.value_and_grad(lambda th: h^d sum(u*(th))))`` (``d`` the dimension): the time
per call after compilation (median over repeats) and the peak memory of its first call.

Configurations (each ``mcg.root(F, zeros(n), th, linear_solver=X)`` unless said; with
``solver=None`` Newton uses ``X`` for its steps too):

- ``Sparse(P)``: ``mcg.linear.Sparse(pattern=P)``, ``P`` the 3- or 5-point pattern
  (SciPy sparse). In the same process: the value alone (``value_and_grad / value``) and
  the floor, one KLU factorisation and solve of the Jacobian at ``u*``
  (``sparsax.lu_solve`` on its COO values, jitted).
- ``Sparse(None)``: ``mcg.linear.Sparse()``, the pattern detected by asdex at trace time
  (counted in the compile time). This is also what ``linear_solver=None`` does above
  ``mcg.linear.DENSE_LIMIT`` unknowns.
- ``GMRES+pc``: ``mcg.linear.GMRES(restart=..., preconditioner=pc)``, inexact
  Newton-Krylov (Eisenstat-Walker forcing) and a GMRES tangent solve (rtol 1e-10). In
  1-D ``pc`` is the tridiagonal solve of the Jacobian at the iterate
  (``lax.linalg.tridiagonal_solve``): exact, so GMRES needs one or two iterations and the
  row measures the Krylov machinery around an O(n) direct solve. In 2-D it is line
  Jacobi: the tridiagonal solves along x-lines of the Jacobian (its couplings in y
  dropped), a cheap approximation, not the direct solve.
- ``GMRES+4pc`` (2-D only): the same line Jacobi multiplied by 4 (the stencil's
  diagonal). GMRES's iterates are those of ``GMRES+pc``; only its stopping test changes:
  ``jax.scipy.sparse.linalg.gmres`` compares the *preconditioned* residual
  ``|M^-1 (b - A x)|`` with ``max(tol |b|, atol)``, and line Jacobi shrinks vectors by
  about 2 to 4, so with Newton's first forcing term (0.5) ``GMRES+pc`` returns ``x = 0``
  without an iteration, its step is no descent direction, and Newton crawls along
  Cauchy steps until ``max_steps`` (reported as not converged). A library issue, shown
  as measured; ``GMRES+4pc`` is the row a user would get once it is fixed.
- ``Dense``: today's dense path, ``linear_solver=Dense()``,
  ``solver=Newton(linear_solver=Dense())`` (only up to 3000 unknowns).
- ``optx LU``: ``optx.root_find(F, optx.Newton(rtol=1e-10, atol=1e-10,
  linear_solver=lx.LU()), adjoint=optx.ImplicitAdjoint(lx.LU()), throw=False)`` (up to
  3000 unknowns, and once at n = 10^4 in 2-D, where it is expected to pass the time cap).
- ``optx GMRES``: the same with ``lx.GMRES(rtol=1e-10, atol=1e-10, restart=50)``,
  matrix-free, for the Newton steps and the adjoint (above 3000 unknowns).

Every configuration runs in a fresh subprocess (``--in-process`` runs them all in this
one; ``--quick`` implies it): imports, then the timed function is compiled ahead of time
(``compile``, includes tracing and any pattern detection), then its first call runs with
the process's peak-RSS counter reset (``/proc/self/clear_refs``), and the peak RSS of
that call above the RSS before it is the memory column (inputs, outputs, XLA's buffers,
SuiteSparse's factors); the RSS growth column is the RSS after the timed calls minus
before them (SuiteSparse keeps up to 32 LU factors per pattern, so it grows with the
factorisations until the cache is full). A configuration whose subprocess does not
finish within ``--cap`` seconds (default 60; three times that for Sparse(P), which runs
three programs) plus 30 s for its imports is killed and reported as skipped, with the
time its first call had run (a lower bound on its time per call). A configuration killed
at one size, or whose first call there times the growth of ``n`` passes the cap, is not
run at the larger sizes. Then the calls are timed: repeats of ``N`` calls each until
about ``--budget`` seconds (at least 3 repeats; a call slower than 10 s is timed once
more, or not at all if the first call used half the cap), and the median per call is
reported. Ratios between
configurations come from different processes run one after the other; the three
Sparse(P) figures (value and gradient, value, floor) come from one process, interleaved.

Every call gets a new ``th`` (``th0 (1 + 1e-6 k)``): SuiteSparse's KLU cache is keyed
on the matrix values, so repeating one ``th`` would skip every factorisation after the
first call. (The Jacobian at ``u0 = 0`` does not depend on ``th``, so the first Newton
step's factorisation is a cache hit in every call, as it would be in a sampler.) The floor
scales the values by ``1 + 1e-6 k`` for the same reason.

Step counts: the timed function returns the solver's step count as auxiliary output
(``value_and_grad(..., has_aux=True)``; ``info.num_steps`` with ``full_output=True``,
``sol.stats["num_steps"]`` for Optimistix), which costs nothing extra. Agreement: each
gradient against Sparse(P)'s at the same size, ``max|g - g_ref| / max|g_ref|``.

Dense roots (a separate table): at n = 30, 100, 300, 1000 (1-D problem) the default
``mcg.root(F, zeros(n), th)`` against Optimistix's Newton with ``lx.LU()``, both in one
process, interleaved; ratio mcg / optx. Twice: with the benchmark's source ``S = 1000``,
where Optimistix's undamped Newton overshoots to ``u ~ 130`` and walks back one unit per
step (128 steps), and with a mild source ``S = 10``, where both take 3 or 4 steps and
the comparison is of the machinery per step.

Targets (printed at the end): dense roots no slower than Optimistix's dense Newton;
1-D Sparse(P) time from n = 10^4 to 10^5 at most 15x (n grows 10x, 1.5x slack);
value_and_grad / value <= 1.3 for Sparse(P); at 2-D n = 10^4 (100 x 100) Sparse(P) at least
10x faster than the fastest Optimistix configuration, and within 5x of the floor times
Newton's step count.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time

# Before JAX loads LAPACK: one OpenBLAS thread (see bench_laplace.py; 2 shared cores).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
from jax import lax  # noqa: E402

import mcmc_customgrad as mcg  # noqa: E402

C = 0.1  # reaction coefficient
SCALE = 1000.0  # source scale: max u about 9.4, 7 Newton steps
TH0 = (1.0, 0.5)
DENSE_MAX = 3000  # dense configurations (mcg Dense, optx LU) up to this many unknowns
DENSE_SCALES = (SCALE, 10.0)  # dense roots: the benchmark's source, and a mild one
GMRES_RESTART_MCG = {1: 20, 2: 50}
QUICK_CONFIGS = ["Sparse(P)", "GMRES+pc", "GMRES+4pc", "optx LU", "dense pair"]
GMRES_RESTART_OPTX = 50
SLOW_REPEATS_MAX_S = 10.0
MARKER = "BENCH_LARGE_RESULT "
STAGE = "BENCH_LARGE_STAGE "  # progress lines of a worker, read when it is killed
_IN_WORKER = False

TARGET_DENSE_RATIO = 1.0  # mcg / optx dense, at most
TARGET_GROWTH = 15.0  # 1-D Sparse(P) t(1e5) / t(1e4), at most (1.5 x 10)
TARGET_VG_RATIO = 1.3  # value_and_grad / value, Sparse(P), at most
TARGET_OPTX_SPEEDUP = 10.0  # 2-D m = 100: fastest optx / Sparse(P), at least
TARGET_FLOOR_FACTOR = 5.0  # 2-D m = 100: Sparse(P) / (floor x steps), at most


# ------------------------------------------------------------------------------- problems


class Problem:
    """The discretised steady state: residual, pattern, Jacobian, preconditioner."""

    def __init__(self, dim, size, scale=SCALE):
        self.dim, self.size, self.scale = dim, size, scale
        self.n = size**dim
        h = 1.0 / (size + 1)
        self.h = h
        t = np.arange(1, size + 1) * h
        one = sp.diags_array(
            [-np.ones(size - 1), 2.0 * np.ones(size), -np.ones(size - 1)],
            offsets=[-1, 0, 1],
            shape=(size, size),
        )
        if dim == 1:
            self.x = jnp.asarray(t)
            self.stencil = sp.coo_array(one)
        else:
            eye = sp.identity(size)
            self.y_grid, self.x_grid = (jnp.asarray(a) for a in np.meshgrid(t, t, indexing="ij"))
            self.stencil = sp.coo_array(sp.kron(one, eye) + sp.kron(eye, one))
        self.pattern = self.stencil != 0

    def source(self, th):
        if self.dim == 1:
            return self.scale * (th[0] * jnp.sin(jnp.pi * self.x) + th[1] * self.x)
        s = jnp.sin(jnp.pi * self.x_grid) * jnp.sin(jnp.pi * self.y_grid)
        return self.scale * (th[0] * s + th[1] * self.x_grid).reshape(-1)

    def residual(self, u, th):
        h2 = self.h**2
        if self.dim == 1:
            p = jnp.pad(u, 1)
            lap = 2.0 * u - p[:-2] - p[2:]
        else:
            m = self.size
            g = jnp.pad(u.reshape(m, m), 1)
            lap = 4.0 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
            lap = lap.reshape(-1)
        return lap + h2 * (C * jnp.exp(u) - self.source(th))

    def scalar(self, u):
        return self.h**self.dim * jnp.sum(u)

    def jacobian_coo(self, u):
        """``(rows, cols, values)`` of the Jacobian at ``u`` (for the floor)."""
        st = self.stencil
        rows, cols = np.asarray(st.row, np.int32), np.asarray(st.col, np.int32)
        diag = np.flatnonzero(rows == cols)
        values = jnp.asarray(st.data).at[diag].add(self.h**2 * C * jnp.exp(u)[rows[diag]])
        return rows, cols, values

    def preconditioner(self, u, th, factor=1.0):
        """1-D: the exact tridiagonal solve; 2-D: line Jacobi along x (y couplings dropped).

        ``factor`` multiplies ``M^-1`` (GMRES's iterates do not change, its stopping test
        does: see GMRES+4pc in the module docstring).
        """
        del th
        m = self.size
        diag = 2.0 * self.dim + self.h**2 * C * jnp.exp(u)
        diag = diag.reshape(-1, m)
        off = -jnp.ones_like(diag)
        lower, upper = off.at[:, 0].set(0.0), off.at[:, -1].set(0.0)

        def apply(v):
            x = lax.linalg.tridiagonal_solve(lower, diag, upper, v.reshape(-1, m, 1))
            return factor * x.reshape(-1)

        return apply


# ---------------------------------------------------------------------------- the configs


def mcg_function(prob, config):
    """``th -> (scalar, (steps, converged))`` through mcg.root."""
    solver = None
    if config == "Sparse(P)":
        linear = mcg.linear.Sparse(pattern=prob.pattern)
    elif config == "Sparse(None)":
        linear = mcg.linear.Sparse()
    elif config == "GMRES+pc":
        linear = mcg.linear.GMRES(
            restart=GMRES_RESTART_MCG[prob.dim], preconditioner=prob.preconditioner
        )
    elif config == "GMRES+4pc":
        linear = mcg.linear.GMRES(
            restart=GMRES_RESTART_MCG[prob.dim],
            preconditioner=functools.partial(prob.preconditioner, factor=2.0 * prob.dim),
        )
    elif config == "Dense":
        linear = mcg.linear.Dense()
        solver = mcg.solvers.Newton(linear_solver=mcg.linear.Dense())
    elif config == "default":
        linear = None
    else:
        raise ValueError(config)
    u0 = jnp.zeros(prob.n)

    def f(th):
        u, info = mcg.root(
            prob.residual, u0, th, solver=solver, linear_solver=linear, full_output=True
        )
        return prob.scalar(u), (info.num_steps, info.converged)

    return f


def optx_function(prob, config):
    """``th -> (scalar, (steps, converged))`` through optx.root_find."""
    import lineax as lx
    import optimistix as optx

    if config == "optx LU":
        linear = lx.LU()
    elif config == "optx GMRES":
        linear = lx.GMRES(rtol=1e-10, atol=1e-10, restart=GMRES_RESTART_OPTX)
    else:
        raise ValueError(config)
    solver = optx.Newton(rtol=1e-10, atol=1e-10, linear_solver=linear)
    u0 = jnp.zeros(prob.n)

    def f(th):
        sol = optx.root_find(
            prob.residual,
            solver,
            u0,
            args=th,
            adjoint=optx.ImplicitAdjoint(linear_solver=linear),
            throw=False,
            max_steps=256,
        )
        ok = sol.result == optx.RESULTS.successful
        return prob.scalar(sol.value), (sol.stats["num_steps"], ok)

    return f


def root_function(prob, config):
    return (optx_function if config.startswith("optx") else mcg_function)(prob, config)


# ---------------------------------------------------------------------------- measurement


def _status():
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1]) * 1024
    return out


def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def first_call(compiled, arg):
    """Run once; ``(seconds, peak RSS above the RSS before, output)``."""
    reset = _reset_peak()
    before = _status()
    start = time.perf_counter()
    out = jax.block_until_ready(compiled(arg))
    seconds = time.perf_counter() - start
    peak = _status()["VmHWM"] - before["VmRSS"] if reset else float("nan")
    return seconds, peak, out


def time_interleaved(cases, budget, max_repeats, cap):
    """Median seconds per call of each ``(compiled, args_of_k)`` in ``cases``.

    ``args_of_k(k)`` is the argument of the k-th call (all distinct). Each case's first
    call has run; its time sizes ``N`` (calls per repeat, ~budget/10 s) and the repeats.
    """
    plan, samples = {}, {}
    for name, (_, _, once) in cases.items():
        number = max(1, min(1000, round(0.1 * budget / max(once, 1e-7))))
        if once > budget:
            # Slow calls: 3 repeats up to SLOW_REPEATS_MAX_S per call (one noisy call on a
            # shared machine made a ratio of 3 out of 1.1), else one, else none.
            reps = 3 if once <= SLOW_REPEATS_MAX_S else (1 if once < cap / 2 else 0)
        else:
            reps = max(3, min(max_repeats, math.floor(budget / (number * once))))
        plan[name] = (number, reps)
        samples[name] = [] if reps else [once]
    k = 1
    for rep in range(max(r for _, r in plan.values())):
        for name, (compiled, args_of_k, _) in cases.items():
            number, reps = plan[name]
            if rep >= reps:
                continue
            args = [args_of_k(k + i) for i in range(number)]
            k += number
            jax.block_until_ready(args)
            start = time.perf_counter()
            for a in args:
                out = compiled(a)
            jax.block_until_ready(out)
            samples[name].append((time.perf_counter() - start) / number)
    return {
        name: {"median": statistics.median(s), "repeats": len(s), "number": plan[name][0]}
        for name, s in samples.items()
    }


def theta_of(k):
    return jnp.asarray(TH0) * (1.0 + 1e-6 * k)


def _compile(fn, arg):
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(arg).compile()
    seconds = time.perf_counter() - start
    _stage(f"compiled {seconds:.3f}")
    return compiled, seconds


def _stage(what):
    if _IN_WORKER:
        print(f"{STAGE}{time.perf_counter():.3f} {what}", flush=True)


def run_config(spec):
    """One configuration (``spec``: dim, size, config, budget, cap, repeats) -> dict."""
    _stage("started")
    dim, size, config = spec["dim"], spec["size"], spec["config"]
    budget, cap, max_repeats = spec["budget"], spec["cap"], spec["repeats"]
    prob = Problem(dim, size, spec.get("scale", SCALE))
    th0 = theta_of(0)
    result = {"dim": dim, "size": size, "n": prob.n, "config": config}

    if config == "dense pair":
        return run_dense_pair(prob, result, budget, cap, max_repeats)

    f = root_function(prob, config)
    vg, compile_s = _compile(jax.value_and_grad(f, has_aux=True), th0)
    once, peak, ((value, (steps, ok)), grad) = first_call(vg, th0)
    result.update(
        compile=compile_s,
        first=once,
        peak=peak,
        value=float(value),
        grad=np.asarray(grad).tolist(),
        steps=int(steps),
        converged=bool(ok),
    )
    cases = {"vg": (vg, theta_of, once)}
    if config == "Sparse(P)":
        import sparsax

        value_fn, result["compile_value"] = _compile(f, th0)
        once_value, _, _ = first_call(value_fn, th0)
        cases["value"] = (value_fn, theta_of, once_value)
        # The floor: one KLU factorisation and solve of the Jacobian at u*.
        u_star = mcg.root(
            prob.residual, jnp.zeros(prob.n), th0, linear_solver=mcg.linear.Sparse(prob.pattern)
        )
        rows, cols, values = prob.jacobian_coo(u_star)
        rhs = jnp.ones(prob.n)

        def floor(s):
            return sparsax.lu_solve(rows, cols, values * s, rhs)

        floor_fn, _ = _compile(floor, jnp.asarray(1.0))
        once_floor, _, _ = first_call(floor_fn, jnp.asarray(1.0))

        def scale_of(k):
            return jnp.asarray(1.0 + 1e-6 * k)

        cases["floor"] = (floor_fn, scale_of, once_floor)
    if not np.isfinite(result["value"]) or not all(np.isfinite(result["grad"])):
        result["note"] = "non-finite value or gradient"
    before = _status()["VmRSS"]
    timing = time_interleaved(cases, budget, max_repeats, cap - compile_s)
    result["timing"] = timing
    result["retained"] = _status()["VmRSS"] - before
    return result


def run_dense_pair(prob, result, budget, cap, max_repeats):
    cases = {}
    for config in ("default", "optx LU"):
        f = root_function(prob, config)
        vg, compile_s = _compile(jax.value_and_grad(f, has_aux=True), theta_of(0))
        once, _, ((value, (steps, ok)), grad) = first_call(vg, theta_of(0))
        result[config] = {
            "compile": compile_s,
            "value": float(value),
            "grad": np.asarray(grad).tolist(),
            "steps": int(steps),
            "converged": bool(ok),
        }
        cases[config] = (vg, theta_of, once)
    result["timing"] = time_interleaved(cases, budget, max_repeats, cap)
    return result


def run_in_subprocess(spec, timeout):
    """``run_config(spec)`` in a fresh interpreter; ``None`` plus a reason on failure."""
    command = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        why, ran = killed_reason(err, timeout)
        return {"killed": True, "ran": ran}, why, time.perf_counter() - start
    wall = time.perf_counter() - start
    for line in done.stdout.splitlines():
        if line.startswith(MARKER):
            return json.loads(line[len(MARKER) :]), None, wall
    tail = (done.stderr or done.stdout).strip().splitlines()
    why = tail[-1] if tail else f"exit status {done.returncode}"
    return None, f"failed: {why[:160]}", wall


def killed_reason(err, timeout):
    """Why a worker was killed at ``timeout``, and how long its first call had run.

    The worker prints a stage line with ``time.perf_counter()`` (the system's monotonic
    clock, shared between processes) when it has compiled; the call ran from then on.
    """
    killed_at = time.perf_counter()
    out = err.stdout or b""
    out = out.decode() if isinstance(out, bytes) else out
    for line in out.splitlines():
        if line.startswith(STAGE) and " compiled " in line:
            at, _, seconds = line[len(STAGE) :].split()
            ran = killed_at - float(at)
            why = (
                f"skipped: killed after {timeout:.0f} s (compile {float(seconds):.1f} s; the "
                f"first call had run {ran:.0f} s)"
            )
            return why, ran
    return f"skipped: killed after {timeout:.0f} s, before compilation ended", None


# -------------------------------------------------------------------------------- reports


def ms(seconds):
    if seconds is None or not np.isfinite(seconds):
        return "-"
    return f"{seconds * 1e3:,.3f}" if seconds < 0.01 else f"{seconds * 1e3:,.1f}"


def mib(nbytes):
    if nbytes is None or not np.isfinite(nbytes):
        return "-"
    return f"{nbytes / 2**20:,.0f}"


def rel_diff(g, g_ref):
    g, g_ref = np.asarray(g), np.asarray(g_ref)
    return float(np.max(np.abs(g - g_ref)) / np.max(np.abs(g_ref)))


def plan_large(args):
    plan = []
    for dim, sizes in ((1, args.sizes_1d), (2, args.sizes_2d)):
        for size in sizes:
            n = size**dim
            configs = ["Sparse(P)", "Sparse(None)", "GMRES+pc"]
            if dim == 2:
                configs.append("GMRES+4pc")
            if n <= DENSE_MAX:
                configs += ["Dense", "optx LU"]
            else:
                if not args.in_process:  # cannot be killed at the cap in this process
                    configs.append("optx GMRES")
                if dim == 2 and n == 10_000 and not args.in_process:
                    configs.append("optx LU")
            plan += [(dim, size, c) for c in configs]
    return plan


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, in one process")
    parser.add_argument("--sizes-1d", type=int, nargs="*", help="n (default 1e3 1e4 1e5 1e6)")
    parser.add_argument("--sizes-2d", type=int, nargs="*", help="m (default 32 100 300)")
    parser.add_argument("--dense-sizes", type=int, nargs="*", help="default 30 100 300 1000")
    parser.add_argument("--budget", type=float, help="timed seconds per case (default 2)")
    parser.add_argument("--repeats", type=int, default=15, help="at most, per case")
    parser.add_argument("--cap", type=float, default=60.0, help="seconds per configuration")
    parser.add_argument("--in-process", action="store_true", help="no subprocesses")
    parser.add_argument("--only", nargs="*", help="configurations to run (names)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        global _IN_WORKER
        _IN_WORKER = True
        print(MARKER + json.dumps(run_config(json.loads(args.worker))), flush=True)
        return

    if args.quick:
        args.in_process = True
    if args.sizes_1d is None:
        args.sizes_1d = [300] if args.quick else [1000, 10_000, 100_000, 1_000_000]
    if args.sizes_2d is None:
        args.sizes_2d = [16] if args.quick else [32, 100, 300]
    if args.dense_sizes is None:
        args.dense_sizes = [30] if args.quick else [30, 100, 300, 1000]
    if args.quick and args.only is None:
        args.only = QUICK_CONFIGS
    budget = args.budget or (0.3 if args.quick else 2.0)

    import lineax
    import optimistix
    import sparsax

    print(
        "# Large and sparse inner problems, float64, value_and_grad per call "
        f"(median; budget {budget:g} s per case), cap {args.cap:g} s"
    )
    print(
        f"{platform.platform()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs (OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}), "
        f"{jax.devices()[0].platform}; jax {jax.__version__}, optimistix "
        f"{optimistix.__version__}, lineax {lineax.__version__}, sparsax "
        f"{getattr(sparsax, '__version__', '?')}, mcmc_customgrad {mcg.__version__}; "
        f"{'one process' if args.in_process else 'one subprocess per configuration'}"
    )
    wall = time.perf_counter()

    def run(spec):
        spec = spec | {"budget": budget, "cap": args.cap, "repeats": args.repeats}
        if args.in_process:
            start = time.perf_counter()
            try:
                return run_config(spec), None, time.perf_counter() - start
            except Exception as err:  # report and go on
                return None, f"failed: {type(err).__name__}: {str(err)[:160]}", 0.0
        # Sparse(P) runs three programs (value and gradient, value, floor) and a solve.
        programs = 3 if spec["config"] == "Sparse(P)" else 1
        return run_in_subprocess(spec, programs * args.cap + 30.0 + 2 * budget)

    results, previous = {}, {}
    for dim, size, config in plan_large(args):
        if args.only and config not in args.only:
            continue
        # Nothing here gets cheaper with n: a configuration killed at a smaller size, or
        # whose first call there, scaled linearly in n, passes the cap, is not run again.
        why = None
        if (dim, config) in previous:
            last_size, last = previous[(dim, config)]
            if last is None:
                why = f"skipped: killed at the smaller size {last_size}"
            elif last * (size / last_size) ** dim > args.cap:
                why = (
                    f"skipped: predicted over the cap ({ms(last)} ms at {last_size}, "
                    f"x n / n_prev = {last * (size / last_size) ** dim:.0f} s)"
                )
        if why is not None:
            results[(dim, size, config)] = (None, why)
            print(f"  [{time.perf_counter() - wall:6.0f} s] {dim}-D {size} {config}: {why}")
            continue
        res, why, _seconds = run({"dim": dim, "size": size, "config": config})
        results[(dim, size, config)] = (res, why)
        killed = res is not None and res.get("killed")
        first = None if killed or why is not None else res["first"]
        if killed or first is not None:
            previous[(dim, config)] = (size, first)
        got = why or (
            f"vg {ms(res['timing']['vg']['median'])} ms, steps {res['steps']}, "
            f"peak {mib(res['peak'])} MiB, compile {res['compile']:.1f} s"
        )
        print(f"  [{time.perf_counter() - wall:6.0f} s] {dim}-D {size} {config}: {got}")
        sys.stdout.flush()

    dense = {}
    if not args.only or "dense pair" in args.only:
        for scale in DENSE_SCALES[:1] if args.quick else DENSE_SCALES:
            for n in args.dense_sizes:
                spec = {"dim": 1, "size": n, "config": "dense pair", "scale": scale}
                res, why, _ = run(spec)
                dense[(scale, n)] = (res, why)
                print(
                    f"  [{time.perf_counter() - wall:6.0f} s] dense roots S = {scale:g}, "
                    f"n = {n}: {why or 'ok'}"
                )
                sys.stdout.flush()

    report(results, dense, args, wall)


def report(results, dense, args, wall):
    print()
    print(
        "| problem | n | configuration | Newton steps | value_and_grad (ms) | / Sparse(P) "
        "| peak RSS, first call (MiB) | RSS growth, timed calls (MiB) | compile (s) "
        "| grad. rel. diff. | notes |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    summary = {}
    for (dim, size, config), (res, why) in results.items():
        problem = f"{dim}-D" + ("" if dim == 1 else f" {size}x{size}")
        n = size**dim
        ref, ref_why = results.get((dim, size, "Sparse(P)"), (None, "not run"))
        ref = ref if ref_why is None else None
        if why is not None:
            print(f"| {problem} | {n:,} | {config} | - | - | - | - | - | - | - | {why} |")
            continue
        t = res["timing"]["vg"]["median"]
        ratio = t / ref["timing"]["vg"]["median"] if ref else float("nan")
        diff = rel_diff(res["grad"], ref["grad"]) if ref and config != "Sparse(P)" else None
        notes = []
        if not res["converged"]:
            notes.append("not converged")
        if "note" in res:
            notes.append(res["note"])
        reps = res["timing"]["vg"]
        notes.append(f"{reps['repeats']} x {reps['number']} calls")
        print(
            f"| {problem} | {n:,} | {config} | {res['steps']} | {ms(t)} | {ratio:.2f} "
            f"| {mib(res['peak'])} | {mib(res['retained'])} | {res['compile']:.1f} "
            f"| {'-' if diff is None else f'{diff:.1e}'} | {'; '.join(notes)} |"
        )
        summary[(dim, size, config)] = res
        if config == "Sparse(P)":
            tv = res["timing"]["value"]["median"]
            tf = res["timing"]["floor"]["median"]
            print(
                f"| {problem} | {n:,} | Sparse(P), value only | {res['steps']} | {ms(tv)} "
                f"| {tv / t:.2f} | - | - | {res['compile_value']:.1f} | - "
                "| value_and_grad / value "
                f"= {t / tv:.2f} |"
            )
            print(
                f"| {problem} | {n:,} | floor: 1 KLU factorisation + solve at u* | - "
                f"| {ms(tf)} | {tf / t:.3f} | - | - | - | - | x steps = {ms(tf * res['steps'])} "
                f"ms; Sparse(P) / (floor x steps) = {t / (tf * res['steps']):.1f} |"
            )

    if dense:
        print()
        print(
            "| source S | n | mcg default (ms) | optx Newton + LU (ms) | mcg / optx "
            "| steps (mcg, optx) | per step: mcg / optx | grad. rel. diff. |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for (scale, n), (res, why) in dense.items():
            if why is not None:
                print(f"| {scale:g} | {n} | - | - | - | - | - | {why} |")
                continue
            tm, to = (res["timing"][k]["median"] for k in ("default", "optx LU"))
            d, o = res["default"], res["optx LU"]
            per_step = (tm / d["steps"]) / (to / o["steps"])
            print(
                f"| {scale:g} | {n} | {ms(tm)} | {ms(to)} | {tm / to:.2f} "
                f"| {d['steps']}, {o['steps']} | {per_step:.2f} "
                f"| {rel_diff(o['grad'], d['grad']):.1e} |"
            )

    targets = []
    for (scale, n), (res, why) in dense.items():
        if why is None:
            r = res["timing"]["default"]["median"] / res["timing"]["optx LU"]["median"]
            targets.append(
                (
                    f"dense roots S = {scale:g}, n = {n}: mcg / optx <= {TARGET_DENSE_RATIO:g}",
                    r,
                    r <= TARGET_DENSE_RATIO,
                )
            )
    a, b = summary.get((1, 10_000, "Sparse(P)")), summary.get((1, 100_000, "Sparse(P)"))
    if a and b:
        g = b["timing"]["vg"]["median"] / a["timing"]["vg"]["median"]
        targets.append((f"1-D Sparse(P): t(1e5) / t(1e4) <= {TARGET_GROWTH:g}", g, g <= 15))
    for key, res in summary.items():
        if key[2] == "Sparse(P)":
            r = res["timing"]["vg"]["median"] / res["timing"]["value"]["median"]
            where = f"{key[0]}-D n = {res['n']:,}"
            targets.append((f"{where}: value_and_grad / value <= {TARGET_VG_RATIO:g}", r, r <= 1.3))
    ref = summary.get((2, 100, "Sparse(P)"))
    if ref:
        t = ref["timing"]["vg"]["median"]
        # Converged Optimistix runs give their time, killed ones a lower bound (the time
        # their first call had run when killed); failed ones are left out.
        optx = []
        for (dim, size, c), (res, why) in results.items():
            if dim != 2 or size != 100 or not c.startswith("optx") or res is None:
                continue
            if why is None and res["converged"]:
                optx.append((res["timing"]["vg"]["median"], "", c))
            elif res.get("killed") and res.get("ran"):
                optx.append((res["ran"], "> ", c))
        what = f"2-D 100x100: fastest optx / Sparse(P) >= {TARGET_OPTX_SPEEDUP:g}"
        if optx:
            best, bound, name = min(optx)
            s = best / t
            shown = f"{bound}{s:.0f} ({name}, {bound}{ms(best)} ms)"
            targets.append((what, shown, s >= TARGET_OPTX_SPEEDUP))
        else:
            targets.append((what, "no Optimistix configuration converged", None))
        f = t / (ref["timing"]["floor"]["median"] * ref["steps"])
        targets.append(
            (f"2-D 100x100: Sparse(P) / (floor x steps) <= {TARGET_FLOOR_FACTOR:g}", f, f <= 5)
        )
    if targets:
        print()
        print("| target | measured | met |")
        print("|---|---|---|")
        for what, value, ok in targets:
            shown = value if isinstance(value, str) else f"{value:.2f}"
            met = "n/a" if ok is None else ("yes" if ok else "**no**")
            print(f"| {what} | {shown} | {met} |")
    print(f"\ntotal {time.perf_counter() - wall:.0f} s")


if __name__ == "__main__":
    main()
