"""One process of a multi-process run, started by tests/test_distributed.py.

    python tests/distributed_worker.py MODE OUT PROCESS_ID NUM_PROCESSES PORT

With ``NUM_PROCESSES`` 1 the process runs alone (the tests give it two CPU devices);
otherwise it joins the others through ``jax.distributed.initialize`` on ``127.0.0.1:PORT``
with Gloo collectives. What it finds goes to ``OUT/process<i>.npz`` and
``OUT/process<i>.json``. Modes:

- ``quick``: a chain count that the devices do not share (the error is recorded), then a
  Gaussian density, 4 chains, ``chain_method="parallel"``;
- ``sample``: the conjugate model (an inner minimisation), 4 chains, ``chain_method=
  "parallel"``, with a checkpoint in ``OUT/../checkpoint``;
- ``kill``: the same run, but process 1 dies (``os._exit``) right after writing its second
  chunk; the others record what they raised and when;
- ``sbc``: ``mcg.sbc`` on a conjugate normal problem, 4 batches;
- ``validate``: ``scripts/validate.py``'s ``main`` with its checks replaced by a stub
  (``ridge`` fails), writing ``OUT/validation.md``: how the models are dealt and joined.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from pathlib import Path

mode, out, index, count, port = sys.argv[1], Path(sys.argv[2]), *map(int, sys.argv[3:6])

import jax  # noqa: E402

import mcmc_customgrad as mcg  # noqa: E402  (before initialize: the import starts no backend)

jax.config.update("jax_enable_x64", True)
if count > 1 and mode != "validate":  # scripts/validate.py joins the processes itself
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        f"127.0.0.1:{port}",
        num_processes=count,
        process_id=index,
        heartbeat_timeout_seconds=10,
        initialization_timeout=60,
    )

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.scipy.stats import norm  # noqa: E402

from mcmc_customgrad.sampling import _checkpoint  # noqa: E402

found: dict = {}
arrays: dict = {}


def run(checkpoint):
    if mode == "quick":
        density, init = (lambda x: -0.5 * jnp.sum(x**2 * jnp.arange(1.0, 4.0))), jnp.zeros(3)
    else:
        density, init = mcg.models.conjugate(d=2).model, None

    def generated(params, key):  # a per-draw pass for the processes to share
        return {"noise": jax.random.normal(key), "norm": jnp.linalg.norm(jnp.ravel(params))}

    return mcg.sample(
        density,
        init,
        generated_quantities=generated if mode == "quick" else None,
        num_chains=4,
        num_warmup=150,
        num_samples=200,
        seed=11,
        max_treedepth=3,  # short trajectories: post-run warnings to count, and speed
        chain_method="parallel",
        checkpoint=checkpoint,
        checkpoint_every=50,
        progress_bar=True,
    )


if mode in ("quick", "sample", "kill"):
    found.update(devices=len(jax.devices()), local_devices=len(jax.local_devices()))
    try:  # refused before anything runs (one process would fall back to one device)
        if count > 1:
            mcg.sample(
                lambda x: -0.5 * jnp.sum(x**2), jnp.zeros(1), num_chains=3, chain_method="parallel"
            )
    except ValueError as err:
        found["uneven_error"] = str(err)
    if mode == "kill" and index == 1:
        save_chunk = _checkpoint.Checkpoint.save_chunk

        def save_then_die(self, i, table):
            save_chunk(self, i, table)
            if i == 1:
                out.mkdir(parents=True, exist_ok=True)
                (out / "died_at").write_text(repr(time.time()))
                os._exit(7)

        _checkpoint.Checkpoint.save_chunk = save_then_die
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            idata = run(None if mode == "quick" else str(out.parent / "checkpoint"))
        found["warnings"] = [str(w.message) for w in caught]
        for group in ("posterior", "sample_stats"):
            for name, values in idata[group].data_vars.items():
                arrays[f"{group}/{name}"] = values.values
        found["attrs"] = {
            k: idata.posterior.attrs[k] for k in ("num_devices", "resumed_draws", "num_chains")
        }
    except mcg.DistributedError as err:
        found["error"] = {"type": type(err).__name__, "message": str(err)}
        found["error_at"] = time.time()
elif mode == "sbc":
    problem = mcg.SBCProblem(
        params={"mu": mcg.real()},
        prior_sample=lambda key: {"mu": jax.random.normal(key)},
        simulate=lambda key, p: {"y": p["mu"] + jax.random.normal(key, (3,))},
        logdensity=lambda p, d: norm.logpdf(p["mu"]) + norm.logpdf(d["y"], p["mu"]).sum(),
        log_likelihood=lambda p, d: norm.logpdf(d["y"], p["mu"]),
    )
    report = mcg.sbc(
        problem,
        30,
        num_draws=9,
        num_chains=1,
        num_warmup=60,
        num_samples=60,
        batch_size=8,
        kernel="mala",
        ecdf_trials=500,
    )
    arrays = {f"ranks/{k}": v for k, v in report.ranks.items()}
    arrays["divergences"] = report.divergences
    found["passed"] = bool(report.passed)
elif mode == "validate":
    import contextlib
    import io

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    import validate as script

    def fake_validate(name, **kwargs):  # the dealing and gathering, not the checks
        passed = name != "ridge"
        return passed, f"## {name}, run by process {jax.process_index()}", f"| {name} |"

    script.validate = fake_validate
    argv = ["--out", str(out / "validation.md")]
    if count > 1:
        argv += ["--coordinator", f"127.0.0.1:{port}", "--num-processes", str(count)]
        argv += ["--process-id", str(index)]
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        found["exit"] = script.main(argv)
    found["printed"] = printed.getvalue()
    found["names"] = list(mcg.models.REGISTRY)
else:
    raise SystemExit(f"unknown mode {mode!r}")

out.mkdir(parents=True, exist_ok=True)
np.savez(out / f"process{index}.npz", **arrays)
(out / f"process{index}.json").write_text(json.dumps(found))
print(f"process {index}: finished", flush=True)
