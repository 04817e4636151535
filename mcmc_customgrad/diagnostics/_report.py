"""One format for every report of the diagnostics: checks, verdict lines, cells and tables.

``check_gradients``, ``coupled_chains``, ``compare_chains`` and ``sbc`` each judge a list
of :class:`Check` records; all open with the same verdict line, ``PASSED: all N checks,
<what>`` or ``FAILED: k of N checks, <what>`` (:func:`verdict_of`), take their failure
sentences from the failed checks (:func:`failures_of`), and print their tables through
:func:`markdown_table`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Check", "failures_of", "verdict", "verdict_of", "fmt", "markdown_table"]


@dataclass(frozen=True)
class Check:
    """One judged statistic of a report, or one piece of context (``passed=None``).

    Attributes
    ----------
    name : str
        What is checked (``"R-hat (max)"``).
    value : object
        The statistic (a float, an int or a short string).
    threshold : str
        The requirement as printed (``"< 1.01"``).
    passed : bool or None
        The outcome; None for context that is shown but not judged.
    message : str
        The failure sentence: what, its value, the threshold and what to do. Shown only
        when ``passed`` is False.
    parameter, side, kind : str or None
        Where the check applies (a parameter's label, one run of a comparison) and its
        family (``"sanity"``, ``"distribution"``, ...), for reports that group them.

    Examples
    --------
    >>> from mcmc_customgrad.diagnostics._report import Check, failures_of, verdict_of
    >>> checks = [Check("chains", 4, ">= 4", True),
    ...           Check("R-hat (max)", 1.2, "< 1.01", False, "R-hat is 1.2: run longer"),
    ...           Check("step size", 0.3, "-", None)]
    >>> verdict_of(checks, "a toy report")
    'FAILED: 1 of 2 checks, a toy report'
    >>> failures_of(checks)
    ['R-hat is 1.2: run longer']
    >>> checks[1].as_row()["check"]
    'R-hat (max)'
    """

    name: str
    value: object
    threshold: str
    passed: bool | None
    message: str = ""
    parameter: str | None = None
    side: str | None = None
    kind: str | None = None

    def __post_init__(self):
        if self.passed is not None:
            object.__setattr__(self, "passed", bool(self.passed))

    @property
    def result(self) -> str:
        """``ok``, ``FAIL`` or ``info`` (context), as the tables print it."""
        return "info" if self.passed is None else ("ok" if self.passed else "FAIL")

    def as_row(self) -> dict:
        """The check as a row of the reports' ``checks`` and ``rows`` lists.

        Keys: ``check``, ``kind``, ``side``, ``parameter``, ``value``, ``threshold``,
        ``passed``.
        """
        return {
            "check": self.name,
            "kind": self.kind,
            "side": self.side,
            "parameter": self.parameter,
            "value": self.value,
            "threshold": self.threshold,
            "passed": self.passed,
        }


def failures_of(checks) -> list[str]:
    """The failure sentences of the failed checks, in order."""
    return [c.message for c in checks if c.passed is False]


def verdict_of(checks, what: str) -> str:
    """:func:`verdict` over the judged checks (those whose ``passed`` is not None)."""
    judged = [c for c in checks if c.passed is not None]
    return verdict(len(judged), sum(not c.passed for c in judged), what)


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
