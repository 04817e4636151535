"""The documentation pages that run in a process of their own (see test_docs_markdown.py)."""

import pytest
from test_docs_markdown import IN_OWN_PROCESS, run_in_own_process


def test_howto_runs_in_its_own_process():
    assert [p.name for p in IN_OWN_PROCESS] == ["howto.md"]


# The how-to recipes each have a fast test of their own (custom and SciPy solvers in
# tests/test_solvers.py, devices in test_sampling.py, checkpoints in test_checkpoint.py,
# the report in test_compare.py); the page itself runs in the slow tier (61 s).
@pytest.mark.slow
@pytest.mark.parametrize("path", IN_OWN_PROCESS, ids=lambda p: p.name)
def test_markdown_code_blocks_run_in_own_process(path, tmp_path):
    run_in_own_process(path, tmp_path)
