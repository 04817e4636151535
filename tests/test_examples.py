"""Every script in examples/ runs in its --quick mode: summary, verdict, report, figures
(the Laplace and host examples: test_examples_laplace.py)."""

import importlib

import pytest
from example_runner import LAPLACE_AND_HOST, NAMES, examples_path, run_quick, tiered  # noqa: F401


def test_every_use_has_an_example():
    assert NAMES == [
        "bilevel_ridge",
        "conjugate",
        "disease_map",
        "eight_schools",
        "equilibrium",
        "kepler",
        "latent_gp_poisson",
        "rust_bus_engine",
        "scipy_host",
    ]


@pytest.mark.parametrize("name", tiered([n for n in NAMES if n not in LAPLACE_AND_HOST]))
def test_example_quick_run(name, examples_path, tmp_path, capsys):  # noqa: F811
    run_quick(name, tmp_path, capsys)


def test_example_command_line(examples_path, capsys):  # noqa: F811
    module = importlib.import_module("conjugate")
    with pytest.raises(SystemExit, match="--dim must be >= 1"):
        module.main(["--dim", "0"])
    with pytest.raises(SystemExit):
        module.main(["--help"])
    assert "--quick" in capsys.readouterr().out
