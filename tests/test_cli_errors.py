"""The command line's errors: early, in one line that says what to do, draws never lost.

Issue 15 (points 4 and 6). Output paths are checked before anything is compiled, a result
that cannot be written after the work is saved elsewhere (or the work's verdict stands),
and mistakes in a user's model file or in the paths given are reported as messages (exit
code 2 for bad usage, 1 for a run that failed), not as tracebacks through the library.
Sampling is replaced by a stand-in where only the paths matter, so the file runs in a
few seconds.
"""

import errno
import io
import os
import re
import tempfile
import textwrap

import numpy as np
import pytest

import mcmc_customgrad as mcg
from mcmc_customgrad import _arviz, cli


def run(argv):
    out = io.StringIO()
    code = cli.main(argv, out=out)
    return code, out.getvalue()


def _run_data(chains=2, draws=20, seed=0):
    rng = np.random.default_rng(seed)
    stats = {
        "diverging": np.zeros((chains, draws), bool),
        "energy": rng.normal(size=(chains, draws)),
    }
    return _arviz.to_inference_data({"x": rng.normal(size=(chains, draws, 2))}, stats)


@pytest.fixture
def fake_sample(monkeypatch):
    """``mcg.sample`` replaced by a stand-in that records where the output's folder was."""
    calls = []

    def sample(model, **kwargs):
        calls.append(kwargs)
        return _run_data()

    monkeypatch.setattr(mcg, "sample", sample)
    monkeypatch.setattr("mcmc_customgrad._cache.configure_cache", lambda: None)
    return calls


# ------------------------------------------------------------------ sample --out


def test_sample_out_creates_missing_directories_before_sampling(tmp_path, fake_sample, monkeypatch):
    target = tmp_path / "new" / "deeper" / "run.nc"
    seen = []
    sample = mcg.sample

    def recorded(model, **kwargs):
        seen.append(target.parent.is_dir())  # created before the sampler is called
        return sample(model, **kwargs)

    monkeypatch.setattr(mcg, "sample", recorded)
    code, text = run(["sample", "conjugate", "--out", str(target)])
    assert code == 0, text
    assert seen == [True] and f"wrote {target}" in text
    assert mcg.diagnostics.load(target).posterior["x"].shape == (2, 20, 2)
    assert [p.name for p in target.parent.iterdir()] == ["run.nc"]  # no write-check left


@pytest.mark.parametrize(
    "out, message",
    [
        ("adir", "--out {tmp}/adir is a directory; --out takes a file name, e.g. --out "),
        ("afile/run.nc", "afile is a file, not a directory"),
        ("afile/sub/run.nc", "cannot create the directory"),
    ],
)
def test_sample_out_that_cannot_be_written_fails_before_sampling(
    tmp_path, fake_sample, capsys, out, message
):
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("")
    code, _ = run(["sample", "conjugate", "--out", str(tmp_path / out)])
    assert code == 2 and fake_sample == []
    err = capsys.readouterr().err
    assert message.format(tmp=tmp_path) in err and "Traceback" not in err


def test_sample_out_in_a_read_only_directory_fails_before_sampling(
    tmp_path, fake_sample, capsys, monkeypatch
):
    # Root may write anywhere, so the refusal is simulated where the check writes.
    folder = tmp_path / "read_only"
    folder.mkdir()
    mkstemp = tempfile.mkstemp

    def refuse(*args, dir=None, **kwargs):
        if os.path.realpath(dir) == os.path.realpath(folder):
            raise PermissionError(errno.EACCES, "Permission denied")
        return mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    code, _ = run(["sample", "conjugate", "--out", str(folder / "run.nc")])
    assert code == 2 and fake_sample == []
    err = capsys.readouterr().err
    assert f"cannot write in {folder} (Permission denied)" in err


def test_draws_are_saved_elsewhere_when_writing_fails_after_sampling(
    tmp_path, fake_sample, capsys, monkeypatch
):
    target = tmp_path / "out" / "run.nc"
    save = mcg.diagnostics.save

    def disk_full_at_target(idata, path):
        if os.path.realpath(path) == os.path.realpath(target):
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(idata, path)

    monkeypatch.setattr(mcg.diagnostics, "save", disk_full_at_target)
    here = tmp_path / "cwd"
    here.mkdir()
    monkeypatch.chdir(here)
    code, text = run(["sample", "conjugate", "--out", str(target)])
    assert code == 1
    assert "x[0]" in text and "wrote" not in text  # the summary is still printed
    err = capsys.readouterr().err
    assert f"writing {target} failed after sampling" in err and "No space left" in err
    (rescued,) = here.glob("run-unsaved-*.nc")
    assert f"the draws are saved in {rescued} instead" in err
    np.testing.assert_array_equal(
        mcg.diagnostics.load(rescued).posterior["x"].values, _run_data().posterior["x"].values
    )


def test_draws_that_cannot_be_saved_anywhere_are_reported_lost(
    tmp_path, fake_sample, capsys, monkeypatch
):
    def disk_full(idata, path):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(mcg.diagnostics, "save", disk_full)
    monkeypatch.chdir(tmp_path)
    code, _ = run(["sample", "conjugate", "--out", str(tmp_path / "run.nc")])
    assert code == 1
    assert "they are lost" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # no empty files left behind


# ------------------------------------------------------------------ compare --out


@pytest.fixture
def runs(tmp_path):
    paths = []
    for i, name in enumerate(("custom", "reference")):
        path = tmp_path / f"{name}.nc"
        _arviz.save(_run_data(chains=4, draws=100, seed=i), path)
        paths.append(str(path))
    return paths


def test_compare_out_that_is_a_file_is_refused_before_comparing(tmp_path, runs, capsys):
    existing = tmp_path / "notes.txt"
    existing.write_text("keep me")
    code, text = run(["compare", *runs, "--min-draws", "100", "--out", str(existing)])
    assert code == 2 and text == ""  # refused before the comparison
    err = capsys.readouterr().err
    assert f"--out {existing} is a file, but --out takes a directory" in err
    assert "Traceback" not in err and existing.read_text() == "keep me"


def test_compare_keeps_its_verdict_when_the_report_cannot_be_written(
    tmp_path, runs, capsys, monkeypatch
):
    def fail(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(mcg, "write_report", fail)
    argv = ["compare", *runs, "--min-draws", "100", "--no-figures", "--out", str(tmp_path / "r")]
    code, text = run(argv)
    assert code == 1 and "checks" in text  # the verdict was printed
    err = capsys.readouterr().err
    assert "writing the report to" in err and "the verdict above stands" in err


# ------------------------------------------------------------------ summary and load


def test_summary_of_a_directory_says_it_is_one(tmp_path, capsys):
    folder = tmp_path / "adir"
    folder.mkdir()
    _arviz.save(_run_data(), folder / "run.nc")
    code, _ = run(["summary", f"{folder}/"])
    assert code == 2
    err = capsys.readouterr().err
    assert "is a directory" in err and "sample --out" in err and "does not exist" not in err
    assert f"e.g. {folder / 'run.nc'}" in err


@pytest.mark.parametrize("content", ["some notes\n", ""])
def test_summary_of_a_file_that_is_not_netcdf_names_it(tmp_path, capsys, content):
    path = tmp_path / "run.nc"
    path.write_text(content)
    code, _ = run(["summary", str(path)])
    assert code == 2
    err = capsys.readouterr().err
    assert f"{path} is not a netCDF run file" in err
    assert "signature" not in err and "Traceback" not in err  # no h5py internals


def test_load_errors_name_the_path_and_what_to_give(tmp_path):
    missing = tmp_path / "missing.nc"
    with pytest.raises(FileNotFoundError, match=re.escape(f"{missing} does not exist")):
        mcg.diagnostics.load(missing)
    with pytest.raises(IsADirectoryError, match=re.escape(f"{tmp_path} is a directory")):
        mcg.diagnostics.load(tmp_path)
    for name, content, why in [
        ("notes.txt", "not a run\n", "its contents are not netCDF"),
        ("empty.nc", "", "it is empty"),
    ]:
        path = tmp_path / name
        path.write_text(content)
        with pytest.raises(ValueError) as info:
            mcg.diagnostics.load(path)
        message = str(info.value)
        assert message.startswith(f"{path} is not a netCDF run file: {why}")
        assert "written by mcmc_customgrad or ArviZ" in message
        assert info.value.__cause__ is not None  # the reader's own error, for debugging


def test_save_errors_name_the_path(tmp_path):
    run_data = _run_data()
    target = tmp_path / "nodir" / "run.nc"
    with pytest.raises(
        FileNotFoundError, match=re.escape(f"to {target}: its directory {target.parent} does not")
    ):
        mcg.diagnostics.save(run_data, target)
    with pytest.raises(IsADirectoryError, match=re.escape(f"to {tmp_path}: it is a directory")):
        mcg.diagnostics.save(run_data, tmp_path)
    assert not target.parent.exists()


# ------------------------------------------------------------------ errors in a model file


MODEL_FILE = textwrap.dedent(
    """
    import jax
    import jax.numpy as jnp
    import mcmc_customgrad as mcg

    def helper():
        return 1 / 0

    def raises():
        return helper()

    def density(p):
        return -0.5 * jnp.sum(p["y"] ** 2)

    def undeclared():
        return mcg.Model(density, {"z": mcg.real(shape=(2,))})

    def needs(n):
        return n

    @jax.custom_jvp
    def square(x):
        return jnp.sum(x**2)

    @square.defjvp
    def square_jvp(primals, tangents):
        (x,), (t,) = primals, tangents
        return square(x), jnp.dot(jnp.ones(3), t)  # the wrong shape

    def wrong_rule():
        return mcg.Model(lambda p: -square(p["z"]), {"z": mcg.real(shape=(2,))})

    def cube_root(p):  # two Newton steps cannot solve y^3 = 1e9, and failing raises
        newton = mcg.solvers.Newton(max_steps=2)
        x = 1e9 + p["z"][0] ** 2
        y = mcg.root(lambda y, x: y**3 - x, 1.0, x, solver=newton, on_failure="raise")
        return -0.5 * jnp.sum(p["z"] ** 2) + 0.0 * y

    def unsolved():
        return mcg.Model(cube_root, {"z": mcg.real(shape=(2,))})
    """
)


def _line(text: str) -> int:
    """The line of ``MODEL_FILE`` that holds ``text``."""
    (number,) = [i for i, line in enumerate(MODEL_FILE.splitlines(), 1) if text in line]
    return number


@pytest.fixture
def model_file(tmp_path):
    file = tmp_path / "my_model.py"
    file.write_text(MODEL_FILE)
    return file


@pytest.mark.parametrize(
    "function, headline, at",
    [
        ("raises", "ZeroDivisionError: division by zero", ("return 1 / 0", "helper")),
        (
            "undeclared",
            "ValueError: Model: logdensity_fn reads parameter 'y'",
            ('p["y"]', "density"),
        ),
    ],
)
def test_an_error_in_build_names_the_users_line(model_file, capsys, function, headline, at):
    code, _ = run(["sample", f"{model_file}:{function}"])
    assert code == 2
    err = capsys.readouterr().err
    assert f"error in {model_file}:{function}(): {headline}" in err
    source, where = at
    (located,) = [line for line in err.splitlines() if line.startswith("  at ")]
    assert located.startswith(f"  at {model_file}:{_line(source)}, in {where}: ")
    assert located.endswith(source) or source in located
    assert "Traceback" not in err and "mcmc_customgrad/cli.py" not in err


def test_a_function_that_needs_arguments_is_refused(model_file, capsys):
    code, _ = run(["check-grad", f"{model_file}:needs"])
    assert code == 2
    err = capsys.readouterr().err
    assert f"{model_file}:needs(n) needs arguments" in err and "Traceback" not in err


def test_an_import_error_names_the_users_line(tmp_path, capsys):
    file = tmp_path / "broken.py"
    file.write_text("import math\nimport no_such_module_for_mcg\n")
    code, _ = run(["sample", f"{file}:build"])
    assert code == 2
    err = capsys.readouterr().err
    assert f"importing {file} failed: ModuleNotFoundError" in err
    assert f"at {file}:2, in <module>: import no_such_module_for_mcg" in err


def test_a_file_without_a_function_gets_a_hint(model_file, capsys):
    assert run(["sample", str(model_file)])[0] == 2
    assert f"name the function too, e.g. {model_file}:build" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, doing",
    [
        (
            ["sample", "--chains", "1", "--warmup", "5", "--draws", "5", "--no-progress"],
            "while sampling",
        ),
        (["check-grad", "--points", "1", "--order", "1"], "while checking the gradients"),
    ],
)
def test_an_error_in_the_users_density_while_running_names_its_line(
    model_file, capsys, argv, doing
):
    command, *flags = argv
    code, _ = run([command, f"{model_file}:wrong_rule", *flags])
    assert code == 1
    err = capsys.readouterr().err
    assert f"error in {model_file} {doing}: TypeError: dot_general" in err
    assert f"at {model_file}:{_line('the wrong shape')}, in square_jvp" in err
    assert "Traceback" not in err and "JAX_TRACEBACK_FILTERING" not in err


def test_an_inner_solve_that_raises_ends_the_run_with_its_message(model_file, capsys):
    argv = ["sample", f"{model_file}:unsolved", "--chains", "1", "--warmup", "5", "--draws", "5"]
    code, _ = run([*argv, "--no-progress"])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("mcmc-customgrad: error: mcmc_customgrad.root did not converge")
    assert "Traceback" not in err


# ------------------------------------------------------------------ check-grad --plot


@pytest.mark.parametrize(
    "plot, message",
    [
        ("adir", "--plot {tmp}/adir is a directory; --plot takes a file name"),
        ("grad.xyz", "matplotlib cannot write .xyz files; give a .png file"),
    ],
)
def test_check_grad_plot_is_checked_before_the_check(tmp_path, capsys, monkeypatch, plot, message):
    (tmp_path / "adir").mkdir()

    def never(*args, **kwargs):
        raise AssertionError("the check ran before the plot's path was checked")

    monkeypatch.setattr(mcg, "check_gradients", never)
    monkeypatch.setattr("mcmc_customgrad._cache.configure_cache", lambda: None)
    code, _ = run(["check-grad", "conjugate", "--plot", str(tmp_path / plot)])
    assert code == 2
    assert message.format(tmp=tmp_path) in capsys.readouterr().err


def test_python_dash_m_runs_the_command_line():
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "mcmc_customgrad", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("mcmc-customgrad ")
