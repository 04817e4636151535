"""The scripts under scripts/ run (quick modes), so they cannot rot."""

import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _load(name):
    spec = importlib.util.spec_from_file_location(
        f"_script_{name}", ROOT / "scripts" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_validate_quick_runs_the_three_checks(capsys):
    validate = _load("validate")
    assert validate.main(["--quick", "--models", "equilibrium"]) == 0
    out = capsys.readouterr().out
    for heading in ("### Gradients: PASSED", "### Coupled chains: PASSED", "PASSED: all"):
        assert heading in out
    assert out.rstrip().endswith("ALL PASSED")


def test_sbc_conjugate_quick_passes_the_right_model_and_fails_the_wrong_one(tmp_path, capsys):
    script = _load("sbc_conjugate")
    argv = ["--quick", "--simulations", "20", "--out", str(tmp_path / "sbc")]
    assert script.main(argv) == 0
    out = capsys.readouterr().out
    assert "## calibrated" in out and "## miscalibrated" in out
    assert (tmp_path / "sbc_calibrated.png").stat().st_size > 0
