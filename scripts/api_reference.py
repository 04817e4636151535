"""Write docs/api.md, the API reference, from the docstrings of the public API.

    python scripts/api_reference.py           # rewrite docs/api.md
    python scripts/api_reference.py --check   # exit 1 if docs/api.md is out of date

The public API is ``mcmc_customgrad.__all__`` and the ``__all__`` of its public
submodules (``solvers``, ``linear``, ``laplace``, ``gmrf``, ``models``, ``diagnostics``,
``stable``).
Each entry gets its signature and its numpy-style docstring turned into Markdown: section
titles become bold lines, parameter entries a list, and the ``Examples`` section a
``pycon`` block (those examples run as doctests in ``tests/test_docs.py``, not as
Markdown blocks). ``tests/test_api_reference.py`` fails when the file is stale.
"""

from __future__ import annotations

import argparse
import inspect
import pathlib
import re
import sys
import textwrap

import mcmc_customgrad as mcg

OUT = pathlib.Path(__file__).resolve().parent.parent / "docs" / "api.md"

#: (title, module, prefix used in the docs, names); ``None``: the module's ``__all__``.
SECTIONS = [
    ("Implicit solves", mcg, "mcg", ["root", "fixed_point", "argmin", "min_value"]),
    (
        "Solve reports and errors",
        mcg,
        "mcg",
        ["SolverInfo", "SolverError", "Float32Warning", "with_solver_stats", "SolverStats"],
    ),
    ("Solvers", mcg.solvers, "mcg.solvers", None),
    ("Tangent (linear) solvers", mcg.linear, "mcg.linear", None),
    ("Laplace approximation", mcg.laplace, "mcg.laplace", None),
    ("Sparse latent fields (GMRF)", mcg.gmrf, "mcg.gmrf", None),
    ("Models and parameters", mcg, "mcg", ["Model", "Constraint", "real", "positive", "interval"]),
    (
        "Sampling",
        mcg,
        "mcg",
        ["sample", "InitializationError", "CheckpointError", "DistributedError", "clear_caches"],
    ),
    ("Diagnostics", mcg.diagnostics, "mcg.diagnostics", None),
    ("Model library", mcg.models, "mcg.models", None),
    ("Numerically stable helpers", mcg.stable, "mcg.stable", None),
]

_SECTION_TITLE = re.compile(r"^(\S.*)\n-{3,}$", re.M)
_ROLE = re.compile(r":(?:func|class|mod|data|meth|attr|exc):`(~?)([\w.]+)`")
_LITERAL = re.compile(r"``(.+?)``")
_PARAM_SECTIONS = {"Parameters", "Returns", "Yields", "Raises", "Attributes", "Other Parameters"}


def _signature(obj) -> str:
    if not callable(obj):
        return ""
    target = obj.__init__ if inspect.isclass(obj) and "__init__" in vars(obj) else obj
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return "(...)"
    params = list(sig.parameters.values())
    if target is not obj and params and params[0].name == "self":
        params = params[1:]
    text = str(sig.replace(parameters=params, return_annotation=inspect.Signature.empty))
    text = re.sub(r"ForwardRef\('([^']*)'\)", r"\1", text)  # postponed annotations
    return re.sub(r" at 0x[0-9a-f]+", "", text)  # default values that are functions


def _markdown(text: str) -> str:
    """Turn reStructuredText roles and literals into Markdown code spans."""

    def role(m):
        path = m.group(2).replace("mcmc_customgrad.", "mcg.")
        return f"`{path.rsplit('.', 1)[-1] if m.group(1) else path}`"

    return _LITERAL.sub(r"`\1`", _ROLE.sub(role, text))


def _split_sections(doc: str) -> list[tuple[str | None, str]]:
    """``[(title or None, body)]`` of a cleaned numpy-style docstring."""
    parts, last, title = [], 0, None
    for m in _SECTION_TITLE.finditer(doc):
        parts.append((title, doc[last : m.start()]))
        title, last = m.group(1).strip(), m.end()
    parts.append((title, doc[last:]))
    return [(t, body.strip("\n")) for t, body in parts if body.strip() or t]


def _params(body: str) -> str:
    """``name : type`` lines and their indented descriptions -> a Markdown list."""
    items = []
    for line in body.splitlines():
        if line and not line[0].isspace():
            items.append(
                [
                    f"- `{line.split(' : ')[0]}`"
                    + (f" : {line.split(' : ', 1)[1]}" if " : " in line else ""),
                    [],
                ]
            )
        elif items:
            items[-1][1].append(line.strip())
        elif line.strip():
            items.append([line.strip(), []])
    out = []
    for head, desc in items:
        text = " ".join(d for d in desc if d)
        out.append(f"{head}: {text}" if text else head)
    return "\n".join(out)


def _examples(body: str) -> str:
    lines = body.splitlines()
    if any(line.lstrip().startswith(">>>") for line in lines):
        return "```pycon\n" + textwrap.dedent(body).strip("\n") + "\n```"
    return body


def render(obj, qualname: str) -> str:
    """The Markdown entry of one object."""
    kind = "class" if inspect.isclass(obj) else ("function" if callable(obj) else "constant")
    head = f"### `{qualname}{_signature(obj)}`" if kind != "constant" else f"### `{qualname}`"
    if kind == "constant":
        if isinstance(obj, dict):  # REGISTRY: name -> builder (no addresses in the docs)
            return f"{head}\n\nA dict with the keys {', '.join(f'`{k}`' for k in obj)}.\n"
        return f"{head}\n\nValue: `{obj!r}`.\n"
    doc = inspect.getdoc(obj) or ""
    if not doc:
        raise SystemExit(f"{qualname} has no docstring: every public object needs one.")
    out = [head, ""]
    for title, body in _split_sections(doc):
        if title is not None:
            out += [f"**{title}**", ""]
        if title in _PARAM_SECTIONS:
            out.append(_markdown(_params(body)))
        elif title == "Examples":
            out.append(_examples(body))
        else:
            out.append(_markdown(body))
        out.append("")
    return "\n".join(out)


def build() -> str:
    """The whole of docs/api.md."""
    lines = [
        "# API reference",
        "",
        "Generated from the docstrings by `python scripts/api_reference.py` (the tests fail",
        "when this file is out of date). `import mcmc_customgrad as mcg`; the examples run",
        "as doctests.",
        "",
    ]
    seen = set()
    for title, module, _prefix, names in SECTIONS:
        names = names if names is not None else list(module.__all__)
        anchor = re.sub(r"[^a-z0-9 -]", "", title.lower()).replace(" ", "-")
        lines.append(f"- [{title}](#{anchor})")
        seen.update(id(getattr(module, n)) for n in names)
    missing = [
        n
        for n in mcg.__all__
        if id(getattr(mcg, n)) not in seen
        and not inspect.ismodule(getattr(mcg, n))
        and n != "__version__"
    ]
    if missing:
        raise SystemExit(f"public names missing from SECTIONS: {missing}")
    lines.append("")
    for title, module, prefix, names in SECTIONS:
        names = names if names is not None else list(module.__all__)
        lines += [f"## {title}", ""]
        if module is not mcg and module.__doc__:
            lines += [inspect.cleandoc(module.__doc__).split("\n\n")[0], ""]
        for name in names:
            lines.append(render(getattr(module, name), f"{prefix}.{name}"))
    return "\n".join(lines).rstrip() + "\n"


def main(argv=None) -> int:
    """Write or check docs/api.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args(argv)
    text = build()
    if args.check:
        if OUT.read_text() != text:
            print(f"{OUT} is out of date: run python scripts/api_reference.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT} ({len(text.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
