"""docs/api.md is generated from the docstrings and kept up to date."""

import importlib.util
import pathlib

import mcmc_customgrad as mcg

SCRIPT = pathlib.Path(__file__).resolve().parent.parent / "scripts" / "api_reference.py"


def _load():
    spec = importlib.util.spec_from_file_location("api_reference", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_api_reference_is_up_to_date():
    api = _load()
    assert api.main(["--check"]) == 0, "run: python scripts/api_reference.py"


def test_api_reference_documents_every_public_name():
    text = (SCRIPT.parent.parent / "docs" / "api.md").read_text()
    for name in mcg.__all__:
        obj = getattr(mcg, name)
        if name == "__version__" or type(obj).__name__ == "module":
            continue
        assert f"`mcg.{name}(" in text or f".{name}(" in text or f".{name}`" in text, name
    for name in mcg.solvers.__all__ + mcg.laplace.__all__ + mcg.diagnostics.__all__:
        assert f"mcg.{name}" in text or f".{name}" in text, name


def test_docstring_markup_becomes_markdown():
    api = _load()
    assert api._markdown("see :func:`~mcmc_customgrad.root` and ``y0``") == "see `root` and `y0`"
    assert api._markdown(":mod:`mcmc_customgrad.linear`") == "`mcg.linear`"
