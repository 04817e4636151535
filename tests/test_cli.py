import io
import subprocess
import sys
import textwrap

import pytest

from mcmc_customgrad import cli, models

FAST = ["--chains", "2", "--warmup", "100", "--draws", "50", "--seed", "1"]


def run(argv):
    out = io.StringIO()
    code = cli.main(argv, out=out)
    return code, out.getvalue()


def test_check_seeds_prints_the_table_and_passes():
    out = io.StringIO()
    assert cli.check_seeds(out) is True
    text = out.getvalue()
    assert "0.5604908" in text and "all derivatives agree" in text
    assert text.count("\n") >= 8


def test_main_exit_codes(capsys):
    assert run([])[0] == 2
    with pytest.raises(SystemExit) as err:
        cli.main(["no-such-command"])
    assert err.value.code == 2
    with pytest.raises(SystemExit) as err:
        cli.main(["--version"])
    assert err.value.code == 0
    assert "mcmc-customgrad" in capsys.readouterr().out


def test_models_lists_every_builtin():
    code, text = run(["models"])
    assert code == 0
    for name in models.REGISTRY:
        assert name in text


def test_sample_then_summary(tmp_path, capsys):
    out = tmp_path / "run.nc"
    code, text = run(["sample", "conjugate", *FAST, "--out", str(out)])
    assert code == 0, text
    assert out.exists() and "x" in text and "r_hat" in text
    assert "inner-solver failures: 0" in text
    code, text = run(["summary", str(out)])
    assert code == 0 and "ess_bulk" in text
    # 50 draws x 2 chains: too few for ESS >= 100 per chain, so --strict fails.
    code, text = run(["summary", str(out), "--strict"])
    assert code == 1 and "WARNING [ess_bulk]" in text


USER_MODEL = textwrap.dedent(
    """
    import jax.numpy as jnp
    import mcmc_customgrad as mcg

    def build():
        return mcg.Model(lambda p: -0.5 * jnp.sum(p["z"] ** 2), {"z": mcg.real(shape=(2,))})

    def wrong():
        return 3
    """
)


def test_sample_a_model_from_a_file(tmp_path):
    file = tmp_path / "my_model.py"
    file.write_text(USER_MODEL)
    code, text = run(["sample", f"{file}:build", *FAST])
    assert code == 0 and "z[0]" in text


@pytest.mark.parametrize(
    "argv, message",
    [
        (["sample", "no_such_model"], "unknown model 'no_such_model'"),
        (["sample", "missing.py:build"], "does not exist"),
        (["sample", "{file}:nothing"], "has no function 'nothing'"),
        (["sample", "{file}:wrong"], "returned int"),
        (["sample", "{file}:build", "--reference"], "has no reference"),
        (["sample", "conjugate", "--draws", "0"], "num_samples must be an integer"),
        (["summary", "missing.nc"], "does not exist"),
        (["summary", "{file}"], "is not a netCDF run file"),
    ],
)
def test_usage_errors_exit_2_with_a_message(tmp_path, capsys, argv, message):
    file = tmp_path / "my_model.py"
    file.write_text(USER_MODEL)
    argv = [a.replace("{file}", str(file)) for a in argv]
    code, _ = run(argv)
    assert code == 2
    assert message in capsys.readouterr().err


def test_demo_console_entry_point_samples_and_compares():
    # The README's main job (quick variant): the module entry point runs and exits 0.
    proc = subprocess.run(
        [sys.executable, "-m", "mcmc_customgrad.cli", "demo", "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Kepler dE/dM" in proc.stdout
    assert "custom" in proc.stdout and "reference" in proc.stdout
    assert "means agree within 4 standard errors" in proc.stdout
