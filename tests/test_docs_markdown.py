"""Every Python code block in README.md and docs/ runs (a file of its own, so that the
two pytest-xdist workers share the documentation's compile time)."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
MARKDOWN = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"```python\n(.*?)```", re.S)


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: p.name)
def test_markdown_code_blocks_run(path):
    blocks = BLOCK.findall(path.read_text())
    namespace = {}
    for block in blocks:
        exec(compile(block, f"{path.name}", "exec"), namespace)
