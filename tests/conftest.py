import jax
import pytest

jax.config.update("jax_enable_x64", True)


@pytest.fixture(autouse=True)
def _x64():
    assert jax.config.jax_enable_x64
