import argparse
import io
import re
import textwrap

import pytest

import mcmc_customgrad as mcg
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


def test_models_lists_every_builtin_in_plain_text():
    code, text = run(["models"])
    assert code == 0
    for name in models.REGISTRY:
        assert name in text
    # The docstrings' reStructuredText markup is not for the terminal.
    assert "``" not in text and ":func:" not in text
    assert "sum N(x_i) + N(f(x))" in text


def _subparsers():
    parser = cli._parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices


def test_every_option_of_every_command_shows_its_default():
    commands = _subparsers()
    assert set(commands) == {"demo", "sample", "summary", "compare", "check-grad", "models"}
    for name, command in commands.items():
        formatter = command._get_formatter()
        for action in command._actions:
            if not action.option_strings or action.default is argparse.SUPPRESS:
                continue  # positionals, --help
            shown = formatter._get_help_string(action) % {"default": action.default}
            assert "default" in shown, (name, action.option_strings)
    help_text = commands["sample"].format_help()
    assert "(default: 1000)" in help_text and "(default: 0.8)" in help_text
    assert "--no-progress" in help_text and "(default: True)" in help_text
    assert "--no-progress" in commands["demo"].format_help()


def test_cli_hints_name_the_flags():
    assert cli.cli_hints("run more chains, or lower min_chains=)", "compare") == (
        "run more chains, or lower --min-chains)"
    )
    text = "Raise max_treedepth, or reparameterise (dense_mass=True helps)."
    assert (
        cli.cli_hints(text, "sample")
        == "Raise --max-treedepth, or reparameterise (--dense-mass helps)."
    )


def test_summary_tables_round_like_arviz():
    import pandas as pd

    table = pd.DataFrame(
        {"mean": [0.123456], "sd": [1.98765], "ess_bulk": [812.34], "r_hat": [1.00678]},
        index=["x"],
    )
    rounded = cli._round_like_arviz(table)
    assert rounded.loc["x"].tolist() == [0.123, 1.988, 812.0, 1.01]


def _decimals(text):
    """Largest number of decimals of any number in the summary table's rows."""
    rows = [line for line in text.splitlines() if line.startswith("x[")]
    return max(len(d) for row in rows for d in re.findall(r"\d\.(\d+)", row))


@pytest.mark.slow  # fast tier: test_sample_a_model_from_a_file samples by the CLI too
def test_sample_then_summary(tmp_path, capsys, monkeypatch):
    calls = []
    monkeypatch.setattr("mcmc_customgrad._cache.configure_cache", lambda: calls.append(1))
    out = tmp_path / "run.nc"
    code, text = run(["sample", "conjugate", *FAST, "--out", str(out)])
    assert code == 0, text
    assert calls == [1]  # the persistent compilation cache is set up before compiling
    assert out.exists() and "x" in text and "r_hat" in text
    assert "inner-solver failures: 0" in text
    assert _decimals(text) <= 3  # ArviZ's rounding, not pandas' six digits
    # Progress is on by default, on stderr: each compilation with its time, then a few
    # plain lines (stderr is not a terminal here) with rates counted after compiling.
    err = capsys.readouterr().err
    assert re.search(r"compiling the warmup \.\.\. \(\d+\.\d s\)", err)
    assert re.search(r"compiling the draws \.\.\. \(\d+\.\d s\)", err)
    draws = [line for line in err.splitlines() if line.startswith("draws:")]
    assert 1 <= len(draws) <= 4 and "50/50 x 2 chains (100%)" in draws[-1]
    assert "\r" not in err
    code, text = run(["summary", str(out)])
    assert code == 0 and "ess_bulk" in text
    # 50 draws x 2 chains: too few for ESS >= 100 per chain, so --strict fails.
    code, text = run(["summary", str(out), "--strict"])
    assert code == 1 and "WARNING [ess_bulk]" in text


USER_MODEL = textwrap.dedent(
    """
    import jax
    import jax.numpy as jnp
    import mcmc_customgrad as mcg

    def build():
        return mcg.Model(lambda p: -0.5 * jnp.sum(p["z"] ** 2), {"z": mcg.real(shape=(2,))})

    def wrong():
        return 3

    @jax.custom_jvp
    def softplus(x):
        return jnp.logaddexp(x, 0.0)

    softplus.defjvp(lambda primals, tangents: (softplus(*primals), tangents[0]))

    def straight_through():  # a wrong (straight-through) derivative of softplus
        return mcg.Model(lambda p: -jnp.sum(softplus(p["z"])), {"z": mcg.real(shape=(2,))})
    """
)


def test_sample_a_model_from_a_file(tmp_path, capsys):
    file = tmp_path / "my_model.py"
    file.write_text(USER_MODEL)
    code, text = run(["sample", f"{file}:build", *FAST, "--no-progress"])
    assert code == 0 and "z[0]" in text
    assert capsys.readouterr().err == ""  # --no-progress: quiet


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
        (["compare", "missing.nc", "{file}"], "does not exist"),
        (["check-grad", "no_such_model"], "unknown model 'no_such_model'"),
    ],
)
def test_usage_errors_exit_2_with_a_message(tmp_path, capsys, argv, message):
    file = tmp_path / "my_model.py"
    file.write_text(USER_MODEL)
    argv = [a.replace("{file}", str(file)) for a in argv]
    code, _ = run(argv)
    assert code == 2
    assert message in capsys.readouterr().err


# The demo itself (`mcmc-customgrad demo`, 4 x 2,500 draws against the closed form, exit
# status 1 on a failed verdict) is the README's first set-up command, which .ci/run runs
# verbatim; its parts are tested here (check_seeds, compare, and the whole of the quick
# smoke run, in-process, at the end of this file) and in test_examples.py
# (examples/conjugate.py: the seed numbers, then sampling against the closed form).


def _runs(tmp_path, scale):
    import numpy as np

    from mcmc_customgrad import _arviz

    rng = np.random.default_rng(0)
    paths = []
    for name, s in (("custom", scale), ("reference", 1.0)):
        idata = _arviz.to_inference_data({"x": s * rng.normal(size=(4, 2500, 2))}, {})
        path = tmp_path / f"{name}.nc"
        _arviz.save(idata, path)
        paths.append(str(path))
    return paths


def test_compare_writes_a_report_and_exits_by_the_verdict(tmp_path):
    custom, reference = _runs(tmp_path, 1.0)
    code, text = run(["compare", custom, reference, "--out", str(tmp_path / "report")])
    assert code == 0, text
    assert text.startswith("PASSED: all") and "x[1]" in text
    report = (tmp_path / "report" / "report.md").read_text()
    assert "PASSED" in report and "](densities.png)" in report
    assert (tmp_path / "report" / "ranks.png").stat().st_size > 0
    # Too few draws for the protocol: the hint names the flag, not the Python keyword.
    code, text = run(["compare", custom, reference, "--min-draws", "3000"])
    assert code == 1 and "lower --min-draws" in text and "min_draws=" not in text
    wide, reference = _runs(tmp_path, 1.05)  # a 5% scale error
    code, text = run(["compare", wide, reference, "--no-figures", "--out", str(tmp_path / "r2")])
    assert code == 1 and text.startswith("FAILED")
    assert "wider overall" in text
    assert not list((tmp_path / "r2").glob("*.png"))


def test_check_grad_passes_a_model_and_fails_a_straight_through_rule(tmp_path, monkeypatch):
    code, text = run(["check-grad", "conjugate", "--points", "3"])
    assert code == 0, text
    assert "against its reference" in text and "| hessian |" in text and "PASSED" in text
    file = tmp_path / "my_model.py"
    file.write_text(USER_MODEL)
    png = tmp_path / "grad.png"
    titles = []
    plot = mcg.GradientReport.plot

    def recorded(self, path):
        titles.append(self._verdict())  # what the plot's title says
        return plot(self, path)

    monkeypatch.setattr(mcg.GradientReport, "plot", recorded)
    argv = ["check-grad", f"{file}:straight_through", "--points", "3", "--plot", str(png)]
    code, text = run(argv)
    assert code == 1 and "FAILED" in text and "grad_fd" in text
    assert "against finite differences" in text and png.stat().st_size > 0
    # The text and the plot's title say the same about where the points came from.
    where = "drawn by model.init (the sampler's random start"
    assert where in text and where in titles[0] and "seed 0" in titles[0]


def test_quick_demo_is_a_labelled_smoke_run_and_passes_the_gradient_result(monkeypatch, capsys):
    seen = {}
    compare = mcg.compare_chains

    def recorded(*args, **kwargs):
        seen.update(kwargs)
        return compare(*args, **kwargs)

    monkeypatch.setattr(mcg, "compare_chains", recorded)
    out = io.StringIO()
    assert cli.demo(out, quick=True, progress=True) is True
    text = out.getvalue()
    assert "all derivatives agree to 1e-6" in text
    assert "SMOKE RUN ONLY" in text and "smoke run PASSED" in text
    assert seen["gradients_passed"] is True  # check_seeds' result, same run
    err = capsys.readouterr().err
    assert re.search(r"compiling the seed derivatives \.\.\. \(\d+\.\d s\)", err)
    assert re.search(r"compiling the smoke run .* \.\.\. \(\d+\.\d s\)", err)
