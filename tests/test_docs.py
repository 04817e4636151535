"""Every docstring example runs (the Markdown code blocks: test_docs_markdown.py)."""

import doctest
import importlib
import pathlib
import pkgutil

import pytest

import mcmc_customgrad

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODULES = sorted(
    m.name for m in pkgutil.walk_packages(mcmc_customgrad.__path__, prefix="mcmc_customgrad.")
)


@pytest.mark.parametrize("name", ["mcmc_customgrad", *MODULES])
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0


def test_every_public_function_has_an_example():
    missing = []
    for name in mcmc_customgrad.__all__:
        obj = getattr(mcmc_customgrad, name)
        if callable(obj) and not isinstance(obj, type) and ">>>" not in (obj.__doc__ or ""):
            missing.append(name)
    for name in mcmc_customgrad.solvers.__all__ + mcmc_customgrad.linear.__all__:
        obj = getattr(mcmc_customgrad.solvers, name, None) or getattr(mcmc_customgrad.linear, name)
        internal = ("Solver", "SolverInfo", "LinearSolver", "resolve_solver")
        if callable(obj) and name not in internal and ">>>" not in (obj.__doc__ or ""):
            missing.append(name)
    assert missing == []
