"""What a run shows on stderr while it works: compile phases, then the draws.

Compilation takes most of a short run's wall time and happens before anything can be
counted, so each phase is announced when it starts and its time printed when it ends
(``compiling the warmup ... (8.2 s)``). The draws then show as a tqdm progress bar on a
terminal, or as a few plain lines (at 25%, 50%, 75% and 100%) when stderr is a file or a
pipe (a CI log, ``2> run.log``). Rates count sampling time only: compilation, the
per-draw statistics and checkpoint writes are left out.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

__all__ = ["Progress", "progress_enabled", "is_terminal"]

#: Fractions of the draws at which the plain-line display prints a line.
MILESTONES = (0.25, 0.5, 0.75, 1.0)


def is_terminal(stream) -> bool:
    """True when ``stream`` is an interactive terminal."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def progress_enabled(requested) -> bool:
    """``None`` means: on when stderr is a terminal and we are not under CI.

    Examples
    --------
    >>> from mcmc_customgrad.sampling._progress import progress_enabled
    >>> progress_enabled(True), progress_enabled(False)
    (True, False)
    """
    if requested is not None:
        return bool(requested)
    return is_terminal(sys.stderr) and not os.environ.get("CI")


class Progress:
    """Compile phases and a draw counter on stderr (or ``stream``).

    Parameters
    ----------
    total : int
        Draws per chain.
    num_chains : int
        Number of chains.
    enabled : bool
        False: every method does nothing.
    stream : file, optional
        Where to write (default ``sys.stderr``, looked up when writing).
    bar : bool, optional
        True: a tqdm bar redrawn in place; False: plain lines at
        :data:`MILESTONES`. Default: a bar when ``stream`` is a terminal.

    Examples
    --------
    >>> import io
    >>> from mcmc_customgrad.sampling._progress import Progress
    >>> out = io.StringIO()
    >>> p = Progress(100, 4, True, stream=out)
    >>> with p.phase("compiling the draws"):
    ...     pass
    >>> p.start(0)
    >>> for done in range(10, 101, 10):
    ...     p.update(done, 0, 0, seconds=done / 500)
    >>> p.close()
    >>> print(out.getvalue())
    compiling the draws ... (0.0 s)
    draws:  30/100 x 4 chains (30%), 500 draws/s per chain, 0 divergent, 0 solver failures
    draws:  50/100 x 4 chains (50%), 500 draws/s per chain, 0 divergent, 0 solver failures
    draws:  80/100 x 4 chains (80%), 500 draws/s per chain, 0 divergent, 0 solver failures
    draws: 100/100 x 4 chains (100%), 500 draws/s per chain, 0 divergent, 0 solver failures
    <BLANKLINE>
    """

    def __init__(self, total=0, num_chains=0, enabled=True, stream=None, bar=None):
        self.total, self.num_chains, self.enabled = int(total), int(num_chains), bool(enabled)
        self._stream = stream
        self.bar = is_terminal(self.stream) if bar is None else bool(bar)
        self._tqdm = None
        self._first = 0
        self._next = 0

    @property
    def stream(self):
        """Where the display goes (``sys.stderr`` unless given)."""
        return self._stream if self._stream is not None else sys.stderr

    def message(self, text: str) -> None:
        """Print a status line."""
        if self.enabled:
            print(text, file=self.stream, flush=True)

    @contextlib.contextmanager
    def phase(self, text: str):
        """Announce ``text ...`` now and its duration, ``(8.2 s)``, when the block ends."""
        if not self.enabled:
            yield
            return
        print(f"{text} ...", end="", file=self.stream, flush=True)
        start = time.perf_counter()
        try:
            yield
        except BaseException:
            print(f" failed after {time.perf_counter() - start:.1f} s", file=self.stream)
            raise
        print(f" ({time.perf_counter() - start:.1f} s)", file=self.stream, flush=True)

    def start(self, done: int) -> None:
        """Begin the draw display; ``done`` draws per chain exist already (a resume)."""
        self._first = done
        self._next = 0
        while self._next < len(MILESTONES) and done >= MILESTONES[self._next] * self.total:
            self._next += 1
        if not (self.enabled and self.bar):
            return
        from tqdm import tqdm

        self._tqdm = tqdm(
            total=self.total,
            initial=done,
            desc=f"{self.num_chains} chains",
            unit="draw",
            file=self.stream,
            dynamic_ncols=True,
            leave=True,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} draws "
            "[{elapsed}<{remaining}{postfix}]",
        )

    def _details(self, done, divergences, failures, seconds, per=" per chain") -> str:
        drawn = done - self._first
        rate = f"{drawn / seconds:.0f}" if seconds > 0 else "-"
        return f"{rate} draws/s{per}, {divergences} divergent, {failures} solver failures"

    def update(self, done: int, divergences: int, failures: int, seconds: float) -> None:
        """Show ``done`` draws per chain; ``seconds`` is the time spent drawing them."""
        if not self.enabled:
            return
        if self._tqdm is not None:
            details = self._details(done, divergences, failures, seconds, per="/chain")
            self._tqdm.set_postfix_str(details, refresh=False)
            self._tqdm.update(done - self._tqdm.n)
            return
        details = self._details(done, divergences, failures, seconds)
        if self._next < len(MILESTONES) and done >= MILESTONES[self._next] * self.total:
            while self._next < len(MILESTONES) and done >= MILESTONES[self._next] * self.total:
                self._next += 1
            width = len(str(self.total))
            print(
                f"draws: {done:{width}d}/{self.total} x {self.num_chains} chains "
                f"({100 * done / max(self.total, 1):.0f}%), {details}",
                file=self.stream,
                flush=True,
            )

    def close(self) -> None:
        """End the draw display."""
        if self._tqdm is not None:
            self._tqdm.close()
            self._tqdm = None
