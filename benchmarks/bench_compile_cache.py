"""What the persistent compilation cache saves: the demo twice, each in a fresh process.

    python benchmarks/bench_compile_cache.py            # about 3 minutes on 2 CPU cores
    python benchmarks/bench_compile_cache.py --no-full  # the quick demo only

Runs ``mcmc-customgrad demo --quick --no-progress`` twice in fresh processes sharing one
empty cache folder (``MCMC_CUSTOMGRAD_CACHE_DIR``; the first run compiles and writes the
cache, the second loads it), then the full demo twice the same way with another empty
folder (``--no-full`` skips it). Any ``JAX_*`` cache setting of the caller is removed from
the children's environment, since an explicit JAX setting would win over the folder.

Reported per run: wall time and CPU time (user + system, from ``getrusage`` of the
child), the exit status and the cache folder's size afterwards; then the ratios second /
first (wall and CPU) and quick / full (first runs, wall and CPU). The load average before
and after is printed too: on a shared machine wall times stretch with the load, CPU
times much less.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def command(*args):
    script = Path(sys.executable).with_name("mcmc-customgrad")
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "mcmc_customgrad.cli", *args]


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run(args, cache: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env["MCMC_CUSTOMGRAD_CACHE_DIR"] = str(cache)
    env.pop("XLA_FLAGS", None)  # the default, optimised compilation, as a user gets it
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command(*args), env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "wall": wall,
        "cpu": cpu,
        "rc": done.returncode,
        "size": folder_size(cache),
        "entries": sum(1 for p in cache.rglob("*") if p.is_file()),
        "stderr": done.stderr[-2000:],
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-full", action="store_true", help="skip the full demo")
    args = parser.parse_args(argv)
    print(f"load average before: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} CPUs")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        plans = [("demo --quick", ["demo", "--quick", "--no-progress"], Path(tmp) / "quick")]
        if not args.no_full:
            plans.append(("demo", ["demo", "--no-progress"], Path(tmp) / "full"))
        for name, argv_, cache in plans:
            cache.mkdir()
            for attempt in ("first (empty cache)", "second (cache filled)"):
                result = run(argv_, cache)
                rows.append((name, attempt, result))
                print(
                    f"{name:13s} {attempt:22s} wall {result['wall']:6.1f} s  cpu "
                    f"{result['cpu']:6.1f} s  rc {result['rc']}  cache "
                    f"{result['entries']} files, {result['size'] / 2**20:.1f} MiB",
                    flush=True,
                )
                if result["rc"] != 0:
                    print(result["stderr"], file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"load average after: {os.getloadavg()[0]:.2f} (1 min)")
    print()
    print("| run | wall (s) | CPU (s) | exit | cache afterwards |")
    print("|---|---|---|---|---|")
    for name, attempt, r in rows:
        print(
            f"| `mcmc-customgrad {name}`, {attempt} | {r['wall']:.1f} | {r['cpu']:.1f} | "
            f"{r['rc']} | {r['entries']} files, {r['size'] / 2**20:.1f} MiB |"
        )
    print()
    first, second = rows[0][2], rows[1][2]
    print(
        f"quick demo, second / first: wall {second['wall'] / first['wall']:.2f}, "
        f"CPU {second['cpu'] / first['cpu']:.2f}"
    )
    if len(rows) == 4:
        full_first, full_second = rows[2][2], rows[3][2]
        print(
            f"full demo, second / first: wall {full_second['wall'] / full_first['wall']:.2f}, "
            f"CPU {full_second['cpu'] / full_first['cpu']:.2f}"
        )
        print(
            f"quick / full, first runs: wall {first['wall'] / full_first['wall']:.2f}, "
            f"CPU {first['cpu'] / full_first['cpu']:.2f}"
        )
    return 0 if all(r["rc"] == 0 for _, _, r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
