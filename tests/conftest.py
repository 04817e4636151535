import os
import pathlib

# A persistent XLA compilation cache for the run, shared by the xdist workers and the
# subprocesses tests start (they inherit the environment): each module's programs are
# released after it (below), and the next module that needs the same program, or the
# other worker, loads it from disk instead of compiling it again (a sampler: 12 s -> 4 s).
# Inside the checkout, so a fresh clone starts cold; pytest's cache folder is ignored by git.
_CACHE = pathlib.Path(__file__).resolve().parent.parent / ".pytest_cache" / "jax"
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_CACHE))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

# The suite is bound by XLA:CPU compile time (hundreds of small programs that each run for
# milliseconds), so the tests compile with LLVM's cheapest settings: about 30% less
# compile time for a sampler, and up to 3x slower machine code, which the tests' short
# runs do not notice. XLA:CPU enables no fast-math at any level, but the optimisation
# level changes rounding (which operations LLVM fuses and in what order it evaluates
# them), and Markov chains amplify that: with the same seed, seed 002's straight-through
# density gives other draws here than in a plain process (one divergence in 10,000
# against none). Tests therefore compare statistics, never draws, across processes that
# may differ in these flags; draws are compared bit for bit only within one setting.
# The README's main job (`mcmc-customgrad demo`) and the benchmarks run with the
# default, optimised settings. MCG_TEST_XLA_OPTIMIZE=1 keeps the defaults here too.
if os.environ.get("MCG_TEST_XLA_OPTIMIZE") != "1":
    _FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FAST_COMPILE}".strip()

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)


@pytest.fixture(autouse=True)
def _x64():
    assert jax.config.jax_enable_x64


@pytest.fixture
def float32(monkeypatch):
    """JAX's default float for the duration of one test; the Float32Warning's
    once-per-process flag starts fresh."""
    from mcmc_customgrad import _precision

    monkeypatch.setattr(_precision, "_warned", False)
    jax.config.update("jax_enable_x64", False)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", True)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    # Every compiled XLA:CPU program holds memory mappings of its machine code, and Linux
    # caps a process at vm.max_map_count (65,530). The whole suite compiles far more than
    # that would allow if everything stayed cached (it crashed in compilation once), so
    # each module's programs are released when the module is done.
    yield
    import mcmc_customgrad

    mcmc_customgrad.clear_caches()
