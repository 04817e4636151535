"""Checkpoints: chunked writes, resume after SIGKILL, refusal of foreign or unsafe files."""

import os
import signal
import subprocess
import sys
import textwrap
import zipfile

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


def test_a_checkpoint_of_another_run_is_refused(tmp_path):
    path = tmp_path / "ck"
    mcg.sample(MODEL, checkpoint=path, **{**KW, "num_samples": 10})
    with pytest.raises(mcg.CheckpointError, match=r"different run: \[.*'seed'\] differ"):
        mcg.sample(MODEL, checkpoint=path, **{**KW, "num_samples": 10, "seed": 6})
    # Same layout and seed but another density: the log-density at the starts differs.
    other = mcg.models.conjugate(d=2, p=4.0).model
    with pytest.raises(mcg.CheckpointError, match=r"different run: \['init_lp'\] differ"):
        mcg.sample(other, checkpoint=path, **{**KW, "num_samples": 10})
    file = tmp_path / "file"
    file.write_text("")
    with pytest.raises(mcg.CheckpointError, match="not a directory"):
        mcg.sample(MODEL, checkpoint=file, **KW)


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
