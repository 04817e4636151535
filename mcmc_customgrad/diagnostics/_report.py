"""One format for every report of the diagnostics: verdict lines, cells and tables.

``check_gradients``, ``coupled_chains``, ``compare_chains`` and ``sbc`` all open with the
same verdict line, ``PASSED: all N checks, <what>`` or ``FAILED: k of N checks, <what>``,
and print their tables through :func:`markdown_table`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["verdict", "fmt", "markdown_table"]


def verdict(total: int, failed: int, what: str) -> str:
    """The first line of a report.

    Examples
    --------
    >>> from mcmc_customgrad.diagnostics._report import verdict
    >>> verdict(3, 0, "coupled chains (hmc, 10 transitions)")
    'PASSED: all 3 checks, coupled chains (hmc, 10 transitions)'
    >>> verdict(3, 1, "coupled chains (hmc, 10 transitions)")
    'FAILED: 1 of 3 checks, coupled chains (hmc, 10 transitions)'
    """
    if failed == 0:
        return f"PASSED: all {total} checks, {what}"
    return f"FAILED: {failed} of {total} checks, {what}"


def fmt(value, digits: int = 4, none: str = "n/a") -> str:
    """A table cell: ``digits`` significant digits for floats, yes/NO for booleans.

    Examples
    --------
    >>> from mcmc_customgrad.diagnostics._report import fmt
    >>> fmt(0.123456), fmt(3), fmt(True), fmt(None), fmt(float("nan"))
    ('0.1235', '3', 'yes', 'n/a', 'nan')
    """
    if value is None:
        return none
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "NO"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        if not np.isfinite(value):
            return str(float(value))
        return f"{float(value):.{digits}g}"
    return str(value)


def markdown_table(header, rows, digits: int = 4, none: str = "n/a") -> str:
    r"""A Markdown table; cells through :func:`fmt`, with ``|`` escaped inside them.

    Examples
    --------
    >>> from mcmc_customgrad.diagnostics._report import markdown_table
    >>> print(markdown_table(["check", "value"], [["|x - x_ref|", 1.5e-9]]))
    | check | value |
    |---|---|
    | \|x - x_ref\| | 1.5e-09 |
    """

    def cell(value):
        return fmt(value, digits, none).replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
