"""Chains and SBC fits over processes (jax.distributed) against one process.

    python benchmarks/bench_scaleout.py              # the table of docs/benchmarks.md (~6 min)
    python benchmarks/bench_scaleout.py --quick      # 4 chains and a small SBC run only
    python benchmarks/bench_scaleout.py --curve      # draws per second, vectorized chains
                                                     # 16 .. 4,096 on the default device

Configurations, each in fresh processes started by this script (the same program, the
same seed and settings):

- ``1 proc x 1 dev``: one process, one CPU device, the chains vectorized (the baseline);
- ``1 proc x 2 dev``: one process with two CPU devices
  (``--xla_force_host_platform_device_count=2``), ``chain_method="parallel"``;
- ``2 proc x 1 dev``: two processes on 127.0.0.1 (``jax.distributed``, Gloo), one device
  each, ``chain_method="parallel"``; left to the OS scheduler, then ``pinned``, process
  ``i`` on core ``i`` (``os.sched_setaffinity``, as ``taskset`` or ``srun
  --cpu-bind=cores`` do).

Workloads: ``mcg.sample`` of the library's ``conjugate`` model (``d = 16``: an inner
minimisation over 16 unknowns in every gradient) with 4, 8 and 16 chains, 500 warmup
steps and 1,000 draws each; and ``mcg.sbc`` of ``scripts/sbc_conjugate.py``'s problem (an
inner minimisation in the likelihood; 128 fits of 2 chains, 300 + 300 steps, in batches
of 32: two batches per process). Each configuration makes the same call twice: "first
call" is the wall time of the first in process 0 (compilation included; every process
compiles its own programs, at the same time), "second call" that of the second, with
every program compiled (the work itself). Speed-up and efficiency (speed-up / processes
or devices) are against the baseline. The compilation cache is off.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

CHAINS = (4, 8, 16)
DIM = 16  # the conjugate model's dimension: an inner minimisation over 16 unknowns
CONFIGS = (
    ("1 proc x 1 dev", 1, 1, False),
    ("1 proc x 2 dev", 1, 2, False),
    ("2 proc x 1 dev", 2, 1, False),
    ("2 proc x 1 dev, pinned", 2, 1, True),
)


def _worker(workload: str, chains: int, index: int, count: int, port: int, pin: bool) -> None:
    if pin:  # process i on core i (what taskset -c i, or srun --cpu-bind=cores, does)
        os.sched_setaffinity(0, {index % os.cpu_count()})
    import jax

    jax.config.update("jax_enable_x64", True)
    if count > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=count, process_id=index)
    import mcmc_customgrad as mcg

    example = mcg.models.conjugate(d=DIM)
    parallel = len(jax.devices()) > 1
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    from sbc_conjugate import problem

    sbc_problem = problem(d=2, n=4)  # one object: the second call reuses its programs

    def call():
        if workload == "sample":
            idata = mcg.sample(
                example.model,
                num_chains=chains,
                num_warmup=500,
                num_samples=1000,
                seed=0,
                chain_method="parallel" if parallel else "vectorized",
                progress_bar=False,
                warn=False,
            )
            return float(idata.posterior["x"].values.sum())
        report = mcg.sbc(
            sbc_problem,
            128,
            num_draws=49,
            num_chains=2,
            num_warmup=300,
            num_samples=300,
            batch_size=32,
            ecdf_trials=1000,
        )
        return float(sum(v.sum() for v in report.ranks.values()))

    start = time.perf_counter()
    checksum = call()  # compiles
    wall = time.perf_counter() - start
    start = time.perf_counter()
    assert call() == checksum  # the same call again, compiled programs in memory
    run = time.perf_counter() - start
    if jax.process_index() == 0:
        print(json.dumps({"wall": wall, "run": run, "checksum": checksum}), flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _measure(workload: str, chains: int, processes: int, devices: int, pin: bool) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", MCMC_CUSTOMGRAD_CACHE_DIR="off")
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    port = _free_port()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--worker",
                workload,
                *map(str, (chains, i, processes, port, int(pin))),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(processes)
    ]
    outs = [p.communicate(timeout=1800) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        if p.returncode != 0:
            raise RuntimeError(f"{workload} x {processes} processes failed:\n{err[-3000:]}")
    return json.loads(outs[0][0].strip().splitlines()[-1])


def _curve(most: int) -> None:
    """Draws per second of vectorized chains on the default device (a GPU where there is one)."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import mcmc_customgrad as mcg

    example = mcg.models.conjugate(d=4)
    print(f"device: {jax.devices()[0].device_kind} ({jax.devices()[0].platform})")
    print("| chains | warmup + draws (s) | draws per second (all chains) |")
    print("|---|---|---|")
    for chains in (c for c in (16, 64, 256, 1024, 4096, 16384) if c <= most):
        idata = mcg.sample(
            example.model,
            num_chains=chains,
            num_warmup=200,
            num_samples=200,
            seed=0,
            progress_bar=False,
            warn=False,
        )
        attrs = idata.posterior.attrs
        seconds = attrs["warmup_seconds"] + attrs["sampling_seconds"]
        print(f"| {chains} | {seconds:.1f} | {chains * 200 / attrs['sampling_seconds']:.0f} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 chains and the SBC run only")
    parser.add_argument("--curve", action="store_true", help="vectorized chains per second")
    parser.add_argument("--curve-max", type=int, default=4096, help="most chains in --curve")
    parser.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        workload, chains, index, count, port, pin = args.worker
        _worker(workload, int(chains), int(index), int(count), int(port), pin == "1")
        return 0
    if args.curve:
        _curve(args.curve_max)
        return 0
    import jax

    print(
        f"{platform.machine()}, {os.cpu_count()} CPU cores, jax {jax.__version__}, "
        f"python {platform.python_version()}; compilation cache off"
    )
    print(
        "| workload | configuration | first call (s) | second call (s) | speed-up, first "
        "| speed-up, second | efficiency, second | same draws as one process |"
    )
    print("|---|---|---|---|---|---|---|---|")
    rows = [("sample", c) for c in (CHAINS[:1] if args.quick else CHAINS)] + [("sbc", 2)]
    for workload, chains in rows:
        base = reference = None
        for label, processes, devices, pin in CONFIGS:
            if workload == "sbc" and devices > 1:
                continue  # sbc's fits run in one program per process, on its first device
            m = _measure(workload, chains, processes, devices, pin)
            base = base or m
            same = "-"
            if processes > 1:  # against one process with as many devices
                same = "yes" if m["checksum"] == reference["checksum"] else "**no**"
            else:
                reference = m
            workers = processes * devices
            what = f"{chains} chains" if workload == "sample" else "SBC, 128 fits x 2 chains"
            print(
                f"| {what} | {label} | {m['wall']:.1f} | {m['run']:.1f} "
                f"| {base['wall'] / m['wall']:.2f} | {base['run'] / m['run']:.2f} "
                f"| {base['run'] / m['run'] / workers:.2f} | {same} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
