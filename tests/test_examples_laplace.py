"""The Laplace and host examples in --quick mode (the others: test_examples.py)."""

import pytest
from example_runner import LAPLACE_AND_HOST, examples_path, run_quick, tiered  # noqa: F401


@pytest.mark.parametrize("name", tiered(LAPLACE_AND_HOST))
def test_example_quick_run(name, examples_path, tmp_path, capsys):  # noqa: F811
    run_quick(name, tmp_path, capsys)
