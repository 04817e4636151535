"""Checkpoints: chunked writes, resume after SIGKILL, refusal of foreign or unsafe files."""

import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile

import jax.numpy as jnp
import numpy as np
import pytest

import mcmc_customgrad as mcg

KW = dict(num_chains=2, num_warmup=100, num_samples=45, seed=5, warn=False, checkpoint_every=10)

# The child runs the same model and settings and kills itself with SIGKILL right after
# chunk 2 is on disk, having first left a half-written temporary file behind (a kill in
# the middle of a write).
CHILD = textwrap.dedent(
    """
    import os, signal, sys
    import jax
    jax.config.update("jax_enable_x64", True)
    import mcmc_customgrad as mcg
    from mcmc_customgrad.sampling import _checkpoint

    original = _checkpoint.Checkpoint.save_chunk

    def save_then_die(self, index, arrays):
        original(self, index, arrays)
        if index == 2:
            with open(self.path / ".chunk_000003.npz.999.tmp", "wb") as f:
                f.write(b"PK\\x03\\x04 half a zip")
            os.kill(os.getpid(), signal.SIGKILL)

    _checkpoint.Checkpoint.save_chunk = save_then_die
    kw = dict(num_chains=2, num_warmup=100, num_samples=45, seed=5, warn=False,
              checkpoint_every=10)
    mcg.sample(mcg.models.conjugate(d=2).model, checkpoint=sys.argv[1], **kw)
    print("not killed")
    """
)

MODEL = mcg.models.conjugate(d=2).model


@pytest.fixture(scope="module")
def uninterrupted():
    return mcg.sample(MODEL, **{k: v for k, v in KW.items() if k != "checkpoint_every"})


@pytest.mark.slow  # a killed subprocess and a resume
def test_resume_after_sigkill_gives_the_uninterrupted_draws(tmp_path, uninterrupted):
    path = tmp_path / "ck"
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    names = sorted(p.name for p in path.iterdir())
    assert names == [
        ".chunk_000003.npz.999.tmp",
        "chunk_000000.npz",
        "chunk_000001.npz",
        "chunk_000002.npz",
        "meta.json",
        "warmup.npz",
    ]
    written = {n: (path / n).read_bytes() for n in names if n.startswith("chunk")}

    resumed = mcg.sample(MODEL, checkpoint=path, **KW)
    assert resumed.posterior.attrs["resumed_draws"] == 30
    np.testing.assert_array_equal(
        resumed.posterior["x"].values, uninterrupted.posterior["x"].values
    )
    for name in uninterrupted.sample_stats.data_vars:
        np.testing.assert_array_equal(
            resumed.sample_stats[name].values, uninterrupted.sample_stats[name].values
        )
    # Nothing already written was touched; the stray temporary file is gone.
    for n, data in written.items():
        assert (path / n).read_bytes() == data
    assert not list(path.glob(".*.tmp"))
    assert (path / "chunk_000004.npz").exists()

    # A finished checkpoint reloads without sampling; asking for more draws extends it.
    again = mcg.sample(MODEL, checkpoint=path, **KW)
    np.testing.assert_array_equal(again.posterior["x"].values, uninterrupted.posterior["x"].values)
    assert again.posterior.attrs["resumed_draws"] == 45
    longer = mcg.sample(MODEL, checkpoint=path, **{**KW, "num_samples": 50})
    assert longer.posterior["x"].shape == (2, 50, 2)
    np.testing.assert_array_equal(
        longer.posterior["x"].values[:, :45], uninterrupted.posterior["x"].values
    )


# Three runs, ~17 s: the slow tier. The fast tier refuses another density at the same
# starting value (test_another_density_with_the_same_value_at_the_start_is_refused).
@pytest.mark.slow
def test_a_checkpoint_of_another_run_is_refused(tmp_path):
    path = tmp_path / "ck"
    mcg.sample(MODEL, checkpoint=path, **{**KW, "num_samples": 10})
    with pytest.raises(
        mcg.CheckpointError,
        match=r"different run.*: seed: stored 5, now 6; the starting points differ",
    ):
        mcg.sample(MODEL, checkpoint=path, **{**KW, "num_samples": 10, "seed": 6})
    # Same layout and seed but another density: its data and its values differ.
    other = mcg.models.conjugate(d=2, p=4.0).model
    with pytest.raises(mcg.CheckpointError, match=r"the log-density at the starting points"):
        mcg.sample(other, checkpoint=path, **{**KW, "num_samples": 10})
    file = tmp_path / "file"
    file.write_text("")
    with pytest.raises(mcg.CheckpointError, match="not a directory"):
        mcg.sample(MODEL, checkpoint=file, **KW)


@pytest.mark.slow  # several runs against damaged files (issue 19 moved it)
def test_loading_never_unpickles_and_damage_is_reported(tmp_path):
    path = tmp_path / "ck"
    mcg.sample(MODEL, checkpoint=path, **{**KW, "num_samples": 20})
    # A chunk holding a pickled object (which could run code when unpickled) is refused.
    evil = path / "chunk_000001.npz"
    np.savez(evil, payload=np.array([{"run": "code"}], dtype=object))
    with pytest.raises(mcg.CheckpointError, match="cannot be read"):
        mcg.sample(MODEL, checkpoint=path, **{**KW, "num_samples": 20})
    # A truncated chunk is reported, not silently dropped.
    evil.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(mcg.CheckpointError, match=r"chunk_000001\.npz cannot be read"):
        mcg.sample(MODEL, checkpoint=path, **{**KW, "num_samples": 20})
    assert zipfile.is_zipfile(path / "chunk_000000.npz")
    # A gap in the chunk sequence means the directory was edited.
    os.remove(evil)
    np.savez(path / "chunk_000002.npz", start=np.int64(20), stop=np.int64(30))
    with pytest.raises(mcg.CheckpointError, match="chunk 1 is missing"):
        mcg.sample(MODEL, checkpoint=path, **{**KW, "num_samples": 20})


# ---------------------------------------------------------------- what a checkpoint identifies

RNG = np.random.default_rng(15)
X1, X2, Y = RNG.normal(size=(20, 3)), RNG.normal(size=(20, 3)), RNG.normal(size=20)


def _regression(X):
    def logdensity(b):
        return -0.5 * jnp.sum((Y - X @ b) ** 2) - 0.005 * jnp.sum(b**2)

    return logdensity


LD1, LD2 = _regression(X1), _regression(X2)
SMALL = dict(num_chains=2, num_warmup=30, num_samples=12, checkpoint_every=5, warn=False)


def _files(path):
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def test_another_density_with_the_same_value_at_the_start_is_refused(tmp_path):
    # The case: new data, a fixed init where both log-densities agree.
    assert float(LD1(jnp.zeros(3))) == float(LD2(jnp.zeros(3)))
    path = tmp_path / "ck"
    first = mcg.sample(LD1, jnp.zeros(3), checkpoint=path, **SMALL)
    before = _files(path)
    with pytest.raises(
        mcg.CheckpointError, match=r"the gradient differs \(at probe point 0"
    ) as err:
        mcg.sample(LD2, jnp.zeros(3), checkpoint=path, **SMALL)
    assert "the log-density differs (at probe point 1" in str(err.value)  # 0 is the start
    assert "the log-density at the starting points" not in str(err.value)  # they agree
    assert _files(path) == before  # refused before anything was written
    again = mcg.sample(LD1, jnp.zeros(3), checkpoint=path, **SMALL)
    assert again.posterior.attrs["resumed_draws"] == 12
    np.testing.assert_array_equal(again.posterior["x"].values, first.posterior["x"].values)


def test_the_same_density_rebuilt_resumes(tmp_path):
    # A new closure over equal data (what a new process builds) is the same density.
    path = tmp_path / "ck"
    mcg.sample(LD1, jnp.zeros(3), checkpoint=path, **SMALL)
    rebuilt = _regression(X1.copy())
    assert rebuilt is not LD1
    again = mcg.sample(rebuilt, jnp.zeros(3), checkpoint=path, **SMALL)
    assert again.posterior.attrs["resumed_draws"] == 12
    # A change of the computation with the same data shows in the values.
    with pytest.raises(mcg.CheckpointError, match=r"the log-density differs \(at probe point 0"):
        mcg.sample(lambda b: 2.0 * LD1(b), jnp.zeros(3), checkpoint=path, **SMALL)


def _gq_r(b, key):
    return {"r": jnp.sum(b)}


def _gq_r_shifted(b, key):
    return {"r": 100.0 + jnp.sum(b)}


def _gq_r_and_s(b, key):
    return {"r": jnp.sum(b), "s": b[:2]}


@pytest.mark.parametrize(
    ("original", "changed", "message"),
    [
        (None, {"generated_quantities": _gq_r}, "posterior variable 'r' is produced now but was"),
        ({"generated_quantities": _gq_r}, None, "posterior variable 'r' was recorded but is not"),
        (
            {"generated_quantities": _gq_r},
            {"generated_quantities": _gq_r_shifted},
            r"posterior variable 'r' is computed differently \(at probe point 0",
        ),
        (
            {"generated_quantities": _gq_r},
            {"generated_quantities": _gq_r_and_s},
            "posterior variable 's' is produced now",
        ),
        (None, {"solver_stats": False}, "solver_stats was True when .* and is False now"),
    ],
)
def test_a_resume_that_changes_the_outputs_is_refused(tmp_path, original, changed, message):
    path = tmp_path / "ck"
    kw = {**SMALL, "num_samples": 10, **(original or {})}
    first = mcg.sample(LD1, jnp.zeros(3), checkpoint=path, **kw)
    before = _files(path)
    other = {k: v for k, v in kw.items() if k not in ("generated_quantities",)}
    with pytest.raises(mcg.CheckpointError, match=message):
        mcg.sample(LD1, jnp.zeros(3), checkpoint=path, **{**other, **(changed or {})})
    assert _files(path) == before
    # The original call still resumes, and extends the run, with its own outputs.
    longer = mcg.sample(LD1, jnp.zeros(3), checkpoint=path, **{**kw, "num_samples": 15})
    assert longer.posterior.attrs["resumed_draws"] == 10
    assert sorted(longer.posterior.data_vars) == sorted(first.posterior.data_vars)
    for name in first.posterior.data_vars:
        np.testing.assert_array_equal(
            longer.posterior[name].values[:, :10], first.posterior[name].values
        )


@pytest.mark.slow  # two runs and a cache release (moved for the fast tier's budget)
def test_the_fingerprint_does_not_depend_on_what_the_process_did_before(tmp_path):
    # The jaxpr JAX traces for one function changes after jax.clear_caches() (one more
    # constant, a dead reshape): a fingerprint built on it refused a resume in a process
    # that had done other work. Values at the probe points do not change.
    path = tmp_path / "ck"
    mcg.sample(MODEL, checkpoint=path, **{**KW, "num_samples": 10})
    mcg.models.conjugate(d=3).model.logdensity(jnp.ones(3))  # other work, then a release
    mcg.clear_caches()
    again = mcg.sample(MODEL, checkpoint=path, **{**KW, "num_samples": 10})
    assert again.posterior.attrs["resumed_draws"] == 10


def test_checkpoint_paths_are_checked_before_any_work(tmp_path):
    calls = []

    def counted(b):
        calls.append(1)
        return LD1(b)

    file = tmp_path / "file"
    file.write_text("")
    with pytest.raises(mcg.CheckpointError, match="exists and is not a directory"):
        mcg.sample(counted, jnp.zeros(3), checkpoint=file, **SMALL)
    with pytest.raises(mcg.CheckpointError, match=r"file is not a writable directory"):
        mcg.sample(counted, jnp.zeros(3), checkpoint=file / "ck", **SMALL)
    assert not calls  # not even traced


def test_a_checkpoint_of_an_older_format_is_refused(tmp_path):
    path = tmp_path / "ck"
    path.mkdir()
    (path / "meta.json").write_text('{"format": "mcmc_customgrad-checkpoint", "version": 1}')
    with pytest.raises(mcg.CheckpointError, match=r"format .* version 1 .* reads version 2"):
        mcg.sample(LD1, jnp.zeros(3), checkpoint=path, **SMALL)


# ------------------------------------------------ random SIGKILLs, resumed bit for bit

# The child announces each chunk on stdout and waits a little after it (so that a kill
# lands between writes as well as inside one).
CAMPAIGN_CHILD = textwrap.dedent(
    """
    import sys, time
    import jax
    jax.config.update("jax_enable_x64", True)
    import mcmc_customgrad as mcg
    from mcmc_customgrad.sampling import _checkpoint

    original = _checkpoint.Checkpoint.save_chunk

    def save_and_say(self, index, arrays):
        original(self, index, arrays)
        print("chunk", index, flush=True)
        time.sleep(0.1)

    _checkpoint.Checkpoint.save_chunk = save_and_say
    kw = dict(num_chains=2, num_warmup=100, num_samples=45, seed=5, warn=False,
              checkpoint_every=3)
    print("start", flush=True)
    mcg.sample(mcg.models.conjugate(d=2).model, checkpoint=sys.argv[1], **kw)
    print("done", flush=True)
    """
)


@pytest.mark.slow  # five killed subprocesses and a resume
def test_random_sigkills_resume_bit_for_bit(tmp_path, uninterrupted):
    path = tmp_path / "ck"
    rng = np.random.default_rng(1503)
    kills = 0
    for attempt in range(5):
        proc = subprocess.Popen(
            [sys.executable, "-c", CAMPAIGN_CHILD, str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        # The first kill lands during start-up, compilation or warmup; later ones after a
        # random number of chunks plus a random delay (between writes or inside one).
        wanted = 0 if attempt == 0 else int(rng.integers(1, 4))
        seen = 0
        for line in proc.stdout:
            seen += line.startswith("chunk")
            if (wanted == 0 and line.startswith("start")) or (wanted and seen >= wanted):
                break
        time.sleep(rng.uniform(0.5, 2.0) if wanted == 0 else rng.uniform(0.0, 0.12))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=600)
        proc.stdout.close()
    assert kills >= 4  # the run outlived most kills
    resumed = mcg.sample(MODEL, checkpoint=path, **{**KW, "checkpoint_every": 3})
    assert resumed.posterior.attrs["resumed_draws"] > 0
    np.testing.assert_array_equal(
        resumed.posterior["x"].values, uninterrupted.posterior["x"].values
    )
    for name in uninterrupted.sample_stats.data_vars:
        np.testing.assert_array_equal(
            resumed.sample_stats[name].values, uninterrupted.sample_stats[name].values
        )


FINGERPRINTS = textwrap.dedent(
    """
    import json
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import mcmc_customgrad as mcg
    from mcmc_customgrad.sampling._identity import density_fingerprint

    out = {}
    for name, example in [("kepler", mcg.models.kepler()),
                          ("host", mcg.models.host_conjugate())]:
        m = example.model
        out[name] = density_fingerprint(m.logdensity, jnp.full(m.dim, 0.3))
    print(json.dumps(out))
    """
)


@pytest.mark.slow  # a subprocess
def test_density_fingerprints_are_the_same_in_another_process():
    import json

    from mcmc_customgrad.sampling._identity import density_fingerprint

    proc = subprocess.run(
        [sys.executable, "-c", FINGERPRINTS], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    theirs = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, example in [
        ("kepler", mcg.models.kepler()),
        ("host", mcg.models.host_conjugate()),  # a SciPy solver behind a host callback
    ]:
        m = example.model
        ours = json.loads(json.dumps(density_fingerprint(m.logdensity, jnp.full(m.dim, 0.3))))
        assert ours == theirs[name], name
