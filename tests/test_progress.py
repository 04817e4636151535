"""The progress display: compile phases with their time, a bar or a few plain lines."""

import io
import re

from mcmc_customgrad.sampling._progress import Progress, progress_enabled


class Terminal(io.StringIO):
    def isatty(self):
        return True


def _run(progress, chunks=20, total=100, compile_seconds=0.0):
    with progress.phase("compiling the draws"):
        pass
    progress.start(0)
    for k in range(1, chunks + 1):
        done = total * k // chunks
        # 500 draws per second of sampling, however long the wall clock took.
        progress.update(done, 1, 2, seconds=done / 500)
    progress.close()


def test_plain_lines_are_few_and_rates_count_sampling_time_only():
    out = io.StringIO()
    _run(Progress(100, 4, True, stream=out))
    lines = out.getvalue().splitlines()
    assert re.fullmatch(r"compiling the draws \.\.\. \(\d+\.\d s\)", lines[0])
    draws = [line for line in lines if line.startswith("draws:")]
    assert len(draws) == 4  # 25%, 50%, 75%, 100%: not one line per chunk
    assert "\r" not in out.getvalue()
    assert all("500 draws/s per chain, 1 divergent, 2 solver failures" in d for d in draws)
    assert draws[-1].startswith("draws: 100/100 x 4 chains (100%)")


def test_a_terminal_gets_a_tqdm_bar_on_one_line():
    out = Terminal()
    _run(Progress(100, 4, True, stream=out))
    text = out.getvalue()
    assert "compiling the draws ... (" in text
    assert "\r" in text and "100%|" in text and "100/100" in text
    assert "500 draws/s/chain, 1 divergent, 2 solver failures" in text
    assert "draws: " not in text  # no plain lines


def test_a_resumed_run_counts_only_the_new_draws():
    out = io.StringIO()
    progress = Progress(100, 2, True, stream=out)
    progress.start(60)  # 60 draws read from a checkpoint
    progress.update(80, 0, 0, seconds=0.1)
    progress.update(100, 0, 0, seconds=0.2)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2  # 75% and 100%; 25% and 50% were passed before the start
    assert "200 draws/s per chain" in lines[-1]  # 40 new draws in 0.2 s


def test_disabled_progress_prints_nothing():
    out = Terminal()
    _run(Progress(100, 4, False, stream=out))
    assert out.getvalue() == ""


def test_a_failed_phase_says_so():
    out = io.StringIO()
    progress = Progress(enabled=True, stream=out)
    try:
        with progress.phase("compiling the warmup"):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert re.fullmatch(r"compiling the warmup \.\.\. failed after \d+\.\d s\n", out.getvalue())


def test_default_is_on_for_a_terminal_outside_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr("sys.stderr", Terminal())
    assert progress_enabled(None) is True
    monkeypatch.setenv("CI", "true")
    assert progress_enabled(None) is False
    monkeypatch.delenv("CI")
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert progress_enabled(None) is False
    assert progress_enabled(True) is True
