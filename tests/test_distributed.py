"""Chains and SBC fits over several processes (jax.distributed, Gloo on 127.0.0.1).

Each test starts its processes itself (``tests/distributed_worker.py``), on a free port,
and compares them with one process holding as many CPU devices: where a chain runs must
not change its draws. A test never waits for a stuck process longer than ``TIMEOUT``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

WORKER = Path(__file__).with_name("distributed_worker.py")
TIMEOUT = 240  # seconds, for a whole group of processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(mode: str, out: Path, count: int, devices: int = 1):
    """Run ``count`` worker processes to the end; ``[(returncode, stderr, found, arrays)]``."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = (
        f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}".strip()
    )
    port = _free_port()
    out.parent.mkdir(parents=True, exist_ok=True)
    logs = [out.with_name(f"{out.name}.{i}.log") for i in range(count)]
    procs = []
    for i in range(count):
        with open(logs[i], "w") as log:
            procs.append(
                subprocess.Popen(
                    [sys.executable, str(WORKER), mode, str(out), str(i), str(count), str(port)],
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                    env=env,
                )
            )
    deadline = time.monotonic() + TIMEOUT
    try:
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        stderr = "\n".join(log.read_text()[-3000:] for log in logs)
        pytest.fail(f"{mode}: processes still running after {TIMEOUT} s:\n{stderr}")
    results = []
    for i, p in enumerate(procs):
        found_path = out / f"process{i}.json"
        found = json.loads(found_path.read_text()) if found_path.exists() else None
        arrays_path = out / f"process{i}.npz"
        arrays = dict(np.load(arrays_path)) if arrays_path.exists() else None
        results.append((p.returncode, logs[i].read_text(), found, arrays))
    return results


def _assert_finished(results):
    for i, (code, stderr, found, _) in enumerate(results):
        assert code == 0 and found is not None, f"process {i} (exit {code}):\n{stderr[-3000:]}"


def _assert_same_draws(arrays, reference, what):
    assert sorted(arrays) == sorted(reference), what
    for name, values in reference.items():
        assert values.shape[0] == 4, name  # every chain, in every process
        np.testing.assert_array_equal(arrays[name], values, err_msg=f"{what}: {name}")


def test_two_processes_draw_what_one_process_with_two_devices_draws(tmp_path):
    (one,) = _launch("quick", tmp_path / "one" / "out", 1, devices=2)
    two = _launch("quick", tmp_path / "two" / "out", 2)
    _assert_finished([one, *two])
    assert one[2]["devices"] == 2 and one[2]["attrs"]["num_devices"] == 2
    for i, (_, stderr, found, arrays) in enumerate(two):
        assert found["devices"] == 2 and found["local_devices"] == 1
        assert found["attrs"]["num_devices"] == 2
        _assert_same_draws(arrays, one[3], f"process {i}")
        assert {"posterior/noise", "posterior/norm"} <= set(arrays)  # shared, then joined
        assert "num_chains=3 is not a multiple of 2" in found["uneven_error"]
        assert "Use num_chains=4" in found["uneven_error"]
        # Progress and warnings from process 0 only, and as many as one process gives.
        if i == 0:
            assert "compiling the warmup" in stderr and "draws: 200/200" in stderr
            assert found["warnings"] == one[2]["warnings"] and found["warnings"]
        else:
            assert "compiling" not in stderr and "draws:" not in stderr
            assert found["warnings"] == []


@pytest.mark.slow
def test_a_killed_process_stops_the_others_and_the_restart_resumes(tmp_path):
    import mcmc_customgrad as mcg

    (one,) = _launch("sample", tmp_path / "one" / "out", 1, devices=2)
    killed = _launch("kill", tmp_path / "two" / "out", 2)
    assert killed[1][0] == 7, killed[1][1][-3000:]  # died after writing its second chunk
    _, stderr, found, _ = killed[0]
    assert found is not None, stderr[-3000:]
    assert found["error"]["type"] == "DistributedError"
    assert "Another process of this run has most likely stopped" in found["error"]["message"]
    # From process 1's death to process 0's error: its next exchange, at the end of the
    # chunk it was drawing when the connection closed (about a second here).
    died_at = float((tmp_path / "two" / "out" / "died_at").read_text())
    assert 0 < found["error_at"] - died_at < 30, found["error_at"] - died_at
    checkpoint = tmp_path / "two" / "checkpoint"
    assert sorted(p.name for p in checkpoint.iterdir()) == ["process_0_of_2", "process_1_of_2"]
    first = np.load(checkpoint / "process_1_of_2" / "chunk_000000.npz")
    assert first["position__0"].shape[0] == 2  # each process writes its own two chains

    # Restarted with the same call, both resume after the two chunks that process 1 had
    # written (process 0 may have written a third) and end with one process's draws.
    shutil.rmtree(tmp_path / "two" / "out")
    resumed = _launch("sample", tmp_path / "two" / "out", 2)
    _assert_finished([one, *resumed])
    for i, (_, _, found, arrays) in enumerate(resumed):
        assert found["attrs"]["resumed_draws"] == 100, i
        _assert_same_draws(arrays, one[3], f"resumed process {i}")

    # One process may not resume what two processes wrote.
    with pytest.raises(mcg.CheckpointError, match=r"over 2 process\(es\), and this run has 1"):
        mcg.sample(mcg.models.conjugate(d=2).model, num_chains=4, checkpoint=checkpoint)


@pytest.mark.slow
def test_sbc_fits_are_shared_by_the_processes(tmp_path):
    (one,) = _launch("sbc", tmp_path / "one" / "out", 1)
    two = _launch("sbc", tmp_path / "two" / "out", 2)
    _assert_finished([one, *two])
    for _, _, found, arrays in two:
        assert found["passed"] == one[2]["passed"]
        assert sorted(arrays) == sorted(one[3])
        for name, values in one[3].items():
            assert values.shape[0] == 30, name
            np.testing.assert_array_equal(arrays[name], values, err_msg=name)


@pytest.mark.slow
def test_validate_script_deals_the_models_to_the_processes(tmp_path):
    two = _launch("validate", tmp_path / "two", 2)
    _assert_finished(two)
    names = two[0][2]["names"]
    printed = two[0][2]["printed"]
    sections = [line.rstrip() for line in printed.splitlines() if line.startswith("## ")]
    # Process 0 prints every model's section in registry order; model i ran in i % 2.
    assert sections == [f"## {n}, run by process {i % 2}" for i, n in enumerate(names)]
    assert "SOME MODEL FAILED" in printed
    assert two[1][2]["printed"] == ""  # process 1 prints nothing, writes nothing
    written = (tmp_path / "two" / "validation.md").read_text()
    assert all(f"| {n} |" in written for n in names)
    assert [found["exit"] for _, _, found, _ in two] == [1, 1]  # ridge failed, everywhere
