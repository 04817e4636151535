"""A one-line progress display on stderr, updated between chunks (no dependency)."""

from __future__ import annotations

import os
import sys
import time

__all__ = ["Progress", "progress_enabled"]


def progress_enabled(requested) -> bool:
    """``None`` means: on when stderr is a terminal and we are not under CI."""
    if requested is not None:
        return bool(requested)
    stream = sys.stderr
    interactive = hasattr(stream, "isatty") and stream.isatty()
    return interactive and not os.environ.get("CI")


class Progress:
    """Draw counter with rate and divergences, redrawn in place."""

    def __init__(self, total: int, num_chains: int, enabled: bool, stream=None):
        self.total, self.num_chains, self.enabled = total, num_chains, enabled
        self.stream = stream or sys.stderr
        self.start = time.perf_counter()

    def message(self, text: str) -> None:
        """Print a status line (warmup start, say)."""
        if self.enabled:
            print(text, file=self.stream, flush=True)

    def update(self, done: int, divergences: int, failures: int) -> None:
        """Redraw with ``done`` draws per chain finished."""
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.start
        rate = done / elapsed if elapsed > 0 else float("inf")
        width = 30
        filled = int(width * done / max(self.total, 1))
        bar = "#" * filled + "-" * (width - filled)
        line = (
            f"\rsampling [{bar}] {done}/{self.total} draws x {self.num_chains} chains, "
            f"{rate:.0f} draws/s, {divergences} divergent, {failures} solver failures"
        )
        end = "\n" if done >= self.total else ""
        print(line, end=end, file=self.stream, flush=True)
