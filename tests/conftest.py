import jax
import pytest

jax.config.update("jax_enable_x64", True)


@pytest.fixture(autouse=True)
def _x64():
    assert jax.config.jax_enable_x64


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    # Every compiled XLA:CPU program holds memory mappings of its machine code, and Linux
    # caps a process at vm.max_map_count (65,530). The whole suite compiles far more than
    # that would allow if everything stayed cached (it crashed in compilation once), so
    # each module's programs are released when the module is done.
    yield
    import mcmc_customgrad

    mcmc_customgrad.clear_caches()
