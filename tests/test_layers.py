"""The package's layers import only downward, and no modules import each other in a cycle.

Layers, lowest first (docs/contributing.md): foundations that import nothing of the
package but each other (ArviZ's one module, the cache registry, the version); the core
``implicit``; the log-densities and the Laplace approximations built on it; the model
library and the sampler; the diagnostics; the command line and the package root. A
module may import its own layer and those below, at module level or inside a function.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mcmc_customgrad"
NAME = "mcmc_customgrad"

LAYERS = {
    0: ["_args", "_arviz", "_cache", "_order", "_precision", "_version", "caches", "stable"],
    1: ["implicit", "_errors"],
    2: ["logdensity", "laplace", "gmrf"],
    3: ["models", "sampling"],
    4: ["diagnostics"],
    5: ["cli", "__main__", ""],  # "" is the package root, mcmc_customgrad/__init__.py
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


MODULES = _modules()


def _is_package(module: str) -> bool:
    return MODULES.get(module, Path()).name == "__init__.py"


def _imports(module: str, path: Path, top_level_only: bool) -> set[str]:
    """Modules of the package that ``module`` imports (resolved to existing modules)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    nodes = tree.body if top_level_only else ast.walk(tree)
    base = module if _is_package(module) else module.rpartition(".")[0]
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                origin = ".".join(anchor + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            # `from pkg import sub` imports the submodule where one exists.
            targets = [
                f"{origin}.{a.name}" if f"{origin}.{a.name}" in MODULES else origin
                for a in node.names
            ]
        else:
            continue
        for target in targets:
            if target == NAME or target.startswith(NAME + "."):
                while target not in MODULES:  # `import pkg.sub.attr` style
                    target = target.rpartition(".")[0]
                found.add(target)
    found.discard(module)
    return found


def _layer(module: str) -> int:
    inner = module[len(NAME) + 1 :] if module != NAME else ""
    first = inner.split(".")[0]
    for level, names in LAYERS.items():
        if first in names:
            return level
    raise AssertionError(
        f"{module} is in no layer: add its top-level name to LAYERS in tests/test_layers.py "
        "and to the table in docs/contributing.md."
    )


def test_every_module_has_a_layer():
    for module in MODULES:
        _layer(module)


def test_imports_go_only_downward():
    upward = []
    for module, path in MODULES.items():
        for target in _imports(module, path, top_level_only=False):
            if _layer(target) > _layer(module):
                upward.append(
                    f"{module} (layer {_layer(module)}) imports {target} (layer {_layer(target)})"
                )
    assert not upward, "\n".join(upward)


def _import_graph():
    # Importing a.b.c runs the packages a.b (its __init__) first: those are imports too
    # (the root package aside, which imports everything for the user). A module's own
    # packages are already being imported when it runs, so they are not.
    graph = {}
    for module, path in MODULES.items():
        targets = set()
        for target in _imports(module, path, top_level_only=True):
            parts = target.split(".")
            targets |= {".".join(parts[:i]) for i in range(2, len(parts) + 1)}
        graph[module] = {t for t in targets if not module.startswith(t + ".")}
    return graph


def _cycles(graph):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return cycles


def test_no_import_cycles():
    assert not (cycles := _cycles(_import_graph())), f"import cycles: {cycles}"


def test_a_cycle_through_a_package_init_is_caught():
    # The cycle this test was written for: sampling.sample imported diagnostics._arviz,
    # which runs diagnostics/__init__, which imports calibration, which imported
    # sampling._kernels, which runs sampling/__init__, which imports sampling.sample.
    graph = {
        "sample": {"diagnostics"},
        "diagnostics": {"calibration"},
        "calibration": {"sampling"},
        "sampling": {"sample"},
        "leaf": set(),
    }
    assert _cycles(graph) == [["calibration", "diagnostics", "sample", "sampling"]]


@pytest.mark.parametrize(
    "source, module, expected",
    [
        (
            "from ..diagnostics import summary\n",
            "mcmc_customgrad.sampling.sample",
            {"mcmc_customgrad.diagnostics"},
        ),
        ("from .. import _arviz\n", "mcmc_customgrad.sampling.sample", {"mcmc_customgrad._arviz"}),
        (
            "def f():\n    import mcmc_customgrad as mcg\n",
            "mcmc_customgrad.cli",
            {"mcmc_customgrad"},
        ),
    ],
)
def test_the_import_reader_resolves_relative_and_nested_imports(tmp_path, source, module, expected):
    path = tmp_path / "m.py"
    path.write_text(source)
    assert _imports(module, path, top_level_only=False) == expected


def test_an_upward_import_is_caught(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from ..diagnostics import summary\n")
    (target,) = _imports("mcmc_customgrad.logdensity.model", path, top_level_only=False)
    assert _layer(target) > _layer("mcmc_customgrad.logdensity.model")


def _code_size():
    import importlib.util

    path = PACKAGE.parent / "scripts" / "code_size.py"
    spec = importlib.util.spec_from_file_location("code_size", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_function_is_longer_than_the_rule():
    # docs/contributing.md: no function over 150 code lines (docstring, comments and
    # blank lines not counted); split a longer one into named steps.
    size = _code_size()
    long = [
        f"{name}.{func} ({code} code lines)"
        for name, path in MODULES.items()
        for func, code, _ in size.long_functions(path.read_text(), size.MAX_FUNCTION_LINES)
    ]
    assert long == []


def test_the_function_length_count_skips_docstrings_comments_and_blanks():
    size = _code_size()
    source = 'def f(x):\n    """Doc.\n\n    More.\n    """\n    # why\n\n    y = x\n    return y\n'
    assert size.long_functions(source, 2) == [("f", 3, 9)]  # def, y = x, return
    assert size.long_functions(source, 3) == []
    assert size.code_lines(source) == 3
