"""Lines of code of the package: per folder, and the longest functions.

    python scripts/code_size.py                # the package as it is now
    python scripts/code_size.py --rev 24267f3  # as it was at a commit (git show)
    python scripts/code_size.py --functions 100

A *code* line is one that is not blank, not a comment and not inside a docstring. The
library's rule (docs/contributing.md) is no function over ``MAX_FUNCTION_LINES`` code
lines; ``tests/test_layers.py`` checks it.
"""

from __future__ import annotations

import argparse
import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = "mcmc_customgrad"
MAX_FUNCTION_LINES = 150


def _docstring_lines(tree) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        kinds = (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
        if isinstance(node, kinds) and node.body:
            first = node.body[0]
            value = getattr(first, "value", None)
            is_text = isinstance(value, ast.Constant) and isinstance(value.value, str)
            if isinstance(first, ast.Expr) and is_text:
                lines.update(range(first.lineno, first.end_lineno + 1))
    return lines


def code_lines(source: str) -> int:
    """Lines that are not blank, comments or docstrings."""
    doc = _docstring_lines(ast.parse(source))
    return sum(
        1
        for i, line in enumerate(source.splitlines(), 1)
        if line.strip() and not line.strip().startswith("#") and i not in doc
    )


def long_functions(source: str, limit: int) -> list[tuple[str, int, int]]:
    """``(name, code lines, all lines)`` of the functions over ``limit`` code lines.

    Code lines of a function: its lines less its docstring, comments and blank lines.
    """
    tree = ast.parse(source)
    doc = _docstring_lines(tree)
    lines = source.splitlines()
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            span = range(node.lineno, node.end_lineno + 1)
            code = sum(
                1
                for i in span
                if lines[i - 1].strip()
                and not lines[i - 1].strip().startswith("#")
                and i not in doc
            )
            if code > limit:
                out.append((node.name, code, len(span)))
    return out


def _files(rev):
    if rev is None:
        for path in sorted((ROOT / PACKAGE).rglob("*.py")):
            yield path.relative_to(ROOT).as_posix(), path.read_text()
        return
    names = subprocess.run(
        ["git", "ls-tree", "-r", "--name-only", rev, PACKAGE],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout.split()
    for name in names:
        if name.endswith(".py"):
            text = subprocess.run(
                ["git", "show", f"{rev}:{name}"],
                capture_output=True,
                text=True,
                check=True,
                cwd=ROOT,
            ).stdout
            yield name, text


def main(argv=None) -> int:
    """Print the table of folders and the list of long functions."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", help="a git revision (default: the working tree)")
    parser.add_argument("--functions", type=int, default=MAX_FUNCTION_LINES, metavar="N")
    args = parser.parse_args(argv)
    folders, longest = {}, []
    for name, text in _files(args.rev):
        parts = name.split("/")
        folder = "/".join(parts[:2]) if len(parts) > 2 else parts[0] + " (top level)"
        total, code = folders.get(folder, (0, 0))
        folders[folder] = (total + len(text.splitlines()), code + code_lines(text))
        longest += [(name, *f) for f in long_functions(text, args.functions)]
    print("| folder | lines | code lines |\n|---|---:|---:|")
    for folder, (total, code) in sorted(folders.items()):
        print(f"| {folder} | {total:,} | {code:,} |")
    print(f"\nFunctions over {args.functions} code lines (code / all):")
    for name, func, code, total in sorted(longest, key=lambda r: -r[2]):
        print(f"- {name}: {func} {code} / {total}")
    if not longest:
        print("- none")
    return 0


if __name__ == "__main__":
    sys.exit(main())
