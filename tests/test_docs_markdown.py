"""Every Python code block in README.md and docs/ runs (a file of its own, so that the
two pytest-xdist workers share the documentation's compile time).

A page that needs its own process environment (``howto.md`` shards chains over four CPU
devices, which must be set before JAX starts) declares it in its first line,
``<!-- docs-test env: NAME=VALUE ... -->``; its blocks then run, in order, as one script
in a fresh interpreter with that environment.
"""

import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
MARKDOWN = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"```python\n(.*?)```", re.S)
ENV = re.compile(r"\A<!-- docs-test env: (.*?) -->")


def test_every_page_has_code_that_runs():
    # Pages of prose and generated tables are listed here on purpose.
    without = {p.name for p in MARKDOWN if not BLOCK.findall(p.read_text())}
    assert without == {"api.md", "benchmarks.md", "validation.md"}


#: Pages that declare an environment run in test_docs_markdown_env.py (a file of its own,
#: so that the two pytest-xdist workers share the documentation).
IN_OWN_PROCESS = [p for p in MARKDOWN if ENV.match(p.read_text())]


#: Pages whose code runs in the slow tier (`pytest -m slow`, run by .ci/run): long
#: walk-throughs whose every step the fast tier also tests on its own.
SLOW_PAGES = {
    # The Rust bus engine's build, gradient check and sampling: tests/test_rust_bus_engine.py.
    "rust-bus-engine.md",
    # Model building (tests/test_model.py), the model library (tests/test_models.py) and
    # NumPyro models in (tests/test_numpyro.py).
    "model.md",
    # Large inner problems: Sparse at small n against Dense (tests/test_sparse.py), the
    # PDE model against its references and its field (tests/test_pde_model.py).
    "large.md",
    # Sampling (tests/test_sampling.py, test_checkpoint.py, test_progress.py), the
    # Laplace pages (tests/test_laplace.py, test_laplace_models.py) and the diagnostics
    # (tests/test_compare.py, test_coupled.py, test_check_gradients.py, test_sbc.py):
    # moved when the defaults' robust fallbacks made every compile slower (issue 20).
    "sampling.md",
    "laplace.md",
    "diagnostics.md",
    # The implicit core's reference (tests/test_solvers.py, test_linear.py, test_status.py):
    # moved when the fast tier reached its 10 minutes (issue 18).
    "core.md",
}


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(p, marks=pytest.mark.slow) if p.name in SLOW_PAGES else p
        for p in MARKDOWN
        if p not in IN_OWN_PROCESS
    ],
    ids=lambda p: p.name,
)
def test_markdown_code_blocks_run(path):
    namespace = {}
    for block in BLOCK.findall(path.read_text()):
        exec(compile(block, f"{path.name}", "exec"), namespace)


def run_in_own_process(path, tmp_path):
    """Run the page's blocks, in order, as one script in a fresh interpreter with the
    environment its first line declares."""
    text = path.read_text()
    blocks = BLOCK.findall(text)
    env = ENV.match(text)
    script = tmp_path / path.name.replace(".md", ".py")
    script.write_text("\n".join(blocks))
    extra = dict(item.split("=", 1) for item in env.group(1).split())
    if "XLA_FLAGS" in extra:  # added to the flags the suite runs with (conftest.py)
        extra["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {extra['XLA_FLAGS']}".strip()
    proc = subprocess.run(
        [sys.executable, "-W", "error", str(script)],
        capture_output=True,
        text=True,
        env={**os.environ, **extra},
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]


LINK = re.compile(r"\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    # GitHub's anchors: lower case, punctuation dropped, spaces to hyphens.
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: p.name)
def test_relative_links_resolve(path):
    prose = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)  # not code
    prose = re.sub(r"`[^`]*`", "", prose)
    for target in LINK.findall(prose):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto
        file, _, anchor = target.partition("#")
        resolved = (path.parent / file).resolve() if file else path
        assert resolved.exists(), f"{path.name}: broken link {target}"
        if anchor and resolved.suffix == ".md":
            headings = re.findall(r"^#+ (.*)$", resolved.read_text(), re.M)
            assert anchor in {_slug(h) for h in headings}, f"{path.name}: no anchor {target}"
