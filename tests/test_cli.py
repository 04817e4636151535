import io
import subprocess
import sys

import pytest

from mcmc_customgrad import cli


def test_demo_prints_the_table_and_passes():
    out = io.StringIO()
    assert cli.demo(out) is True
    text = out.getvalue()
    assert "0.5604908" in text and "all derivatives agree" in text
    assert text.count("\n") >= 8


def test_main_exit_codes(capsys):
    assert cli.main(["demo"]) == 0
    assert cli.main([]) == 2
    with pytest.raises(SystemExit) as err:
        cli.main(["no-such-command"])
    assert err.value.code == 2
    with pytest.raises(SystemExit) as err:
        cli.main(["--version"])
    assert err.value.code == 0
    assert "mcmc-customgrad" in capsys.readouterr().out


def test_console_script_is_installed():
    # The README's main job: the installed command runs and exits 0.
    proc = subprocess.run(
        [sys.executable, "-m", "mcmc_customgrad.cli", "demo"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Kepler dE/dM" in proc.stdout
