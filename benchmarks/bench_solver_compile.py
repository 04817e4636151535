"""Compile time of a small inner solve: ``argmin`` of 3 unknowns and its ``value_and_grad``.

    python benchmarks/bench_solver_compile.py                   # 3 fresh processes, ~15 s
    python benchmarks/bench_solver_compile.py --processes 5
    python benchmarks/bench_solver_compile.py --source ../old   # another checkout's code

Each process imports the library (from ``--source`` when given, else the installed one),
turns JAX's persistent compilation cache off, and times ``jit(...).lower(x).compile()``
of ``mcg.argmin`` with the default solver (Newton with its BFGS fallback, 3 unknowns)
and then of ``value_and_grad`` of a sum of its solution. Fresh processes, because a
second compilation in the same process reuses JAX's in-memory caches. Prints each
process's two times and their medians. Compare versions by running this with
``--source`` pointing at a checkout of each, on a quiet machine (``taskset -c 0``).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

CHILD = r"""
import sys, time
if {source!r}:
    sys.path.insert(0, {source!r})
import jax
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_enable_compilation_cache", False)
import jax.numpy as jnp
import mcmc_customgrad as mcg

def objective(y, x):
    return jnp.sum((y - x) ** 4 + (y - x) ** 2)

def solve(x):
    return mcg.argmin(objective, jnp.zeros(3), x)

x = jnp.arange(3.0)
start = time.perf_counter()
jax.jit(solve).lower(x).compile()
value = time.perf_counter() - start
start = time.perf_counter()
jax.jit(jax.value_and_grad(lambda x: jnp.sum(solve(x)))).lower(x).compile()
gradient = time.perf_counter() - start
print(value, gradient, mcg.__file__)
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--processes", type=int, default=3, help="fresh processes (default 3)")
    parser.add_argument("--source", default="", help="import mcmc_customgrad from this folder")
    args = parser.parse_args(argv)
    if args.processes < 1:
        parser.error("--processes must be at least 1")
    values, gradients = [], []
    for i in range(args.processes):
        out = subprocess.run(
            [sys.executable, "-c", CHILD.format(source=args.source)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        values.append(float(out[0]))
        gradients.append(float(out[1]))
        print(f"process {i}: argmin {values[-1]:.2f} s, value_and_grad {gradients[-1]:.2f} s")
    print(f"library: {out[2]}")
    print(
        f"median: argmin {statistics.median(values):.2f} s, "
        f"value_and_grad {statistics.median(gradients):.2f} s"
    )


if __name__ == "__main__":
    main()
