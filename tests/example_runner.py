"""Running the scripts of examples/ in --quick mode, for test_examples*.py."""

import importlib
import pathlib
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"
NAMES = sorted(p.stem for p in EXAMPLES.glob("*.py") if not p.stem.startswith("_"))
#: Run by test_examples_laplace.py; the rest by test_examples.py. Two files, so that the
#: two pytest-xdist workers (a file each) share the examples' compile time.
LAPLACE_AND_HOST = ["disease_map", "eight_schools", "latent_gp_poisson", "scipy_host"]
#: Figures an example writes beside the comparison report's.
EXTRA_FIGURES = {
    "disease_map": ["risk.png"],
    "kepler": ["rv_curve.png"],
    "latent_gp_poisson": ["rate.png"],
    "rust_bus_engine": ["replacement.png"],
}
#: What an example prints beside the summary and the verdict.
EXTRA_OUTPUT = {
    "disease_map": ["truth:", "b[15]"],  # the area effects are generated quantities
    "conjugate": ["implicit 0.5604908", "Part 2: NUTS on the density in d = 3"],
    "eight_schools": ["theta[7]"],  # the recovered school effects are in the summary
    "kepler": ["truth:"],
    "rust_bus_engine": ["policy_iteration, W", "PSIS-LOO", "quadrature reference:"],
}


@pytest.fixture(scope="module")
def examples_path():
    """``examples/`` on ``sys.path`` (the scripts import their ``_common``)."""
    sys.path.insert(0, str(EXAMPLES))
    yield
    sys.path.remove(str(EXAMPLES))


def run_quick(name, tmp_path, capsys):
    """Run ``examples/<name>.py --quick`` in this process; check its output and files."""
    module = importlib.import_module(name)
    code = module.main(["--quick", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "ArviZ summary of the custom-gradient run" in out
    assert "PASSED: all" in out, out
    assert code == 0
    for text in EXTRA_OUTPUT.get(name, []):
        assert text in out, text
    report = (tmp_path / "report.md").read_text()
    assert report.startswith("> (--quick: a smoke run") and "\n# " in report
    assert "(--quick: a smoke run" in out
    for figure in ["densities.png", "ranks.png", *EXTRA_FIGURES.get(name, [])]:
        assert (tmp_path / figure).stat().st_size > 10_000, figure


#: The examples whose --quick run is in the fast tier; the others' compile for 15-60 s
#: each and run in CI's slow tier (pytest -m slow). (eight_schools moved there when the
#: fast tier reached its 10 minutes: its model is in test_laplace_models.py.)
FAST_EXAMPLES = {"conjugate"}


def tiered(names):
    """``names`` as pytest parameters, all but ``FAST_EXAMPLES`` marked slow."""
    return [n if n in FAST_EXAMPLES else pytest.param(n, marks=pytest.mark.slow) for n in names]
