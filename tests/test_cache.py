"""The persistent compilation cache: where it goes, who wins, and what goes wrong."""

import os
import pathlib
import subprocess
import sys

import jax
import pytest

from mcmc_customgrad import _cache
from mcmc_customgrad._cache import (
    CompilationCacheWarning,
    configure_cache,
    default_cache_dir,
    resolve_cache_dir,
)


@pytest.fixture
def fresh(monkeypatch):
    """A process that has not configured the cache yet and has no JAX cache folder set.

    The test run's own folder (tests/conftest.py) is put back afterwards; the JAX cache
    object, once made, does not change with the setting, so nothing is written elsewhere.
    """
    saved_dir = jax.config.jax_compilation_cache_dir
    saved_min = jax.config.jax_persistent_cache_min_compile_time_secs
    monkeypatch.setattr(_cache, "_configured", _cache._UNSET)
    jax.config.update("jax_compilation_cache_dir", None)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    yield
    jax.config.update("jax_compilation_cache_dir", saved_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", saved_min)


def test_default_folder_per_platform():
    linux = default_cache_dir({"HOME": "/home/a"}, "linux")
    assert linux == pathlib.Path("/home/a/.cache/mcmc_customgrad/jax")
    xdg = default_cache_dir({"HOME": "/home/a", "XDG_CACHE_HOME": "/xdg"}, "linux")
    assert xdg == pathlib.Path("/xdg/mcmc_customgrad/jax")
    relative_xdg = default_cache_dir({"HOME": "/home/a", "XDG_CACHE_HOME": "rel"}, "linux")
    assert relative_xdg == linux  # the XDG spec ignores relative paths
    mac = default_cache_dir({"HOME": "/Users/a"}, "darwin")
    assert mac == pathlib.Path("/Users/a/Library/Caches/mcmc_customgrad/jax")
    win = default_cache_dir({"HOME": "C:/Users/a", "LOCALAPPDATA": "C:/Local"}, "win32")
    assert win == pathlib.Path("C:/Local/mcmc_customgrad/Cache/jax")


def test_resolution_order():
    env = {"HOME": "/home/a"}
    assert resolve_cache_dir(env) == ("/home/a/.cache/mcmc_customgrad/jax", "default")
    assert resolve_cache_dir({**env, "MCMC_CUSTOMGRAD_CACHE_DIR": "/c"}) == ("/c", "env")
    assert resolve_cache_dir({**env, "MCMC_CUSTOMGRAD_CACHE_DIR": "OFF"}) == (None, "off")
    # An explicit JAX setting wins over ours, "off" included.
    mine = {**env, "MCMC_CUSTOMGRAD_CACHE_DIR": "off", "JAX_COMPILATION_CACHE_DIR": "/j"}
    assert resolve_cache_dir(mine) == ("/j", "jax")
    assert resolve_cache_dir(env, jax_dir="/set") == ("/set", "jax")


def test_configure_creates_the_folder_and_sets_jax_once(fresh, tmp_path):
    folder = tmp_path / "a" / "b"
    env = {"MCMC_CUSTOMGRAD_CACHE_DIR": str(folder)}
    assert configure_cache(env) == str(folder)
    assert folder.is_dir()
    assert jax.config.jax_compilation_cache_dir == str(folder)
    assert jax.config.jax_persistent_cache_min_compile_time_secs == _cache.MIN_COMPILE_SECONDS
    # Once per process: a later call does not look again.
    assert configure_cache({"MCMC_CUSTOMGRAD_CACHE_DIR": "off"}) == str(folder)


def test_explicit_min_compile_time_is_kept(fresh, tmp_path):
    env = {
        "MCMC_CUSTOMGRAD_CACHE_DIR": str(tmp_path),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "1",
    }
    assert configure_cache(env) == str(tmp_path)
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 1.0


def test_off_leaves_jax_alone(fresh):
    assert configure_cache({"MCMC_CUSTOMGRAD_CACHE_DIR": "off"}) is None
    assert jax.config.jax_compilation_cache_dir is None


def test_a_jax_setting_wins(fresh, tmp_path):
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "users"))
    assert configure_cache({"MCMC_CUSTOMGRAD_CACHE_DIR": str(tmp_path / "ours")}) == str(
        tmp_path / "users"
    )
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "users")
    assert not (tmp_path / "ours").exists()


def test_an_unusable_folder_warns_and_runs_without_a_cache(fresh, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    env = {"MCMC_CUSTOMGRAD_CACHE_DIR": str(blocker / "jax")}
    with pytest.warns(
        CompilationCacheWarning, match=r"cannot use .*file/jax.*MCMC_CUSTOMGRAD_CACHE_DIR"
    ):
        assert configure_cache(env) is None
    assert jax.config.jax_compilation_cache_dir is None


def test_a_fresh_process_writes_compiled_programs_to_the_folder(tmp_path):
    # What a user gets: no JAX setting, the folder from MCMC_CUSTOMGRAD_CACHE_DIR.
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env["MCMC_CUSTOMGRAD_CACHE_DIR"] = str(tmp_path / "cache")
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"  # cache even this tiny program
    script = (
        "import jax, jax.numpy as jnp\n"
        "from mcmc_customgrad._cache import configure_cache\n"
        "print(configure_cache())\n"
        "jax.jit(lambda x: jnp.sin(x) * 2.0)(jnp.ones(3)).block_until_ready()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(tmp_path / "cache")
    assert any(p.is_file() for p in (tmp_path / "cache").iterdir())
