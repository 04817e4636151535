"""The ``mcmc-customgrad`` command.

Commands: ``sample MODEL`` (draws to netCDF), ``summary run.nc`` (ArviZ summary plus the
post-run checks), ``compare custom.nc reference.nc`` (the chain comparison of
``docs/validation.md``, optionally written as a report with figures), ``check-grad MODEL``
(the gradient report), ``models`` (the built-in models), ``demo`` (the README's main job).

Exit codes, for scripts: 0 success; 1 the run or check failed (sampling could not start,
the model's code raised while sampling or checking, a checkpoint belongs to another run,
the results could not be written, ``summary --strict`` found problems, a comparison or
gradient check failed, the demo's numbers disagree); 2 bad usage (unknown command, model
or option, a model file that fails to import or build, unreadable file, an output path
that cannot be written). Output paths are checked before anything is compiled, and draws
that cannot be written where asked are saved elsewhere, with the place in the message.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import linecache
import os
import sys
import sysconfig
import tempfile
import time
import warnings
from pathlib import Path

__all__ = ["main", "demo", "check_seeds", "load_model", "load_example"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad command-line input: exit code 2."""


class CommandFailed(Exception):
    """The command could not finish (the model's code raised, a result was not written): exit 1."""


def _library_roots() -> tuple[str, ...]:
    """Folders of code that is not the user's: this package, the stdlib, installed packages."""
    paths = sysconfig.get_paths()
    roots = {os.path.realpath(Path(__file__).parent)}
    roots |= {os.path.realpath(paths[k]) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    return tuple(root + os.sep for root in roots)


def _user_frame(err: BaseException, file=None):
    """``(file, line, function)``: the last frame of the user's code in ``err``, or None.

    The user's code is ``file`` and any other file outside this package, the standard
    library and the installed packages. An error raised ``from`` another is searched from
    the first one raised, which is where the user's code went wrong (a parameter the
    density reads but does not declare, say).
    """
    import traceback

    chain = [err]
    while chain[-1].__cause__ is not None and len(chain) < 20:
        chain.append(chain[-1].__cause__)
    roots = _library_roots()
    own = os.path.realpath(file) if file else None

    def users(name: str) -> bool:
        if name.startswith("<"):  # <frozen importlib._bootstrap>, <string>
            return False
        path = os.path.realpath(name)
        return path == own or not path.startswith(roots)

    for exc in reversed(chain):
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if users(f.filename)]
        if frames:
            return frames[-1].filename, frames[-1].lineno, frames[-1].name
    return None


def _describe_user_error(headline: str, err: BaseException, file=None) -> str | None:
    """``<headline>: <Type>: <message>``, then the user's line that raised.

    None when ``err`` did not pass through the user's code (a bug of the library).
    """
    frame = _user_frame(err, file)
    if frame is None:
        return None
    path, line, function = frame
    source = linecache.getline(path, line).strip()
    message = str(err).split("\n--------------------\n")[0].strip()  # JAX's filtering note
    text = f"{headline}: {type(err).__name__}: {message}\n  at {path}:{line}, in {function}"
    return f"{text}: {source}" if source else text


def _model_file(spec: str) -> str | None:
    """The file of a ``path/to/file.py:function`` model, or None for a built-in one."""
    if ":" in spec and spec.rsplit(":", 1)[0].endswith(".py"):
        return spec.rsplit(":", 1)[0]
    return None


@contextlib.contextmanager
def _running_user_code(spec: str, doing: str):
    """Report an error raised in a model file's code as a message naming its line (exit 1).

    A wrong derivative rule or a shape error in the user's density then reads as one
    message with the user's line, not a traceback through the library. Errors that never
    passed through the user's code are left alone.
    """
    try:
        yield
    except (UsageError, CommandFailed):
        raise
    except Exception as err:
        file = _model_file(spec)
        text = file and _describe_user_error(f"error in {file} {doing}", err, file)
        if text is None:
            raise
        raise CommandFailed(text) from err


def _rel(a, b) -> float:
    import numpy as np

    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


def _seed_rows():
    """``[(quantity, implicit, closed form)]``: the seed derivatives, in one compiled program.

    One ``jax.jit`` over every row compiles once (about 3 s) instead of the hundred small
    programs that evaluating them one operation at a time compiles (about 10 s).
    """
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    import mcmc_customgrad as mcg

    # Seed 000: f(x) = -min_y |y|^p/p - x y is the convex conjugate |x|^q/q, 1/p + 1/q = 1.
    p = 3.0
    q = p / (p - 1)

    def inner(y, x):
        return jnp.sum(jnp.abs(y) ** p / p - x * y)

    def conjugate(x):
        return -mcg.min_value(inner, jnp.zeros_like(x), x)

    def closed(x):
        return jnp.sum(jnp.abs(x) ** q / q)

    # Seed 001: Newton's square root as a fixed point.
    def sqrt(a):
        return mcg.fixed_point(lambda s, a: 0.5 * (s + a / s), a, a)

    # Kepler's equation E - e sin E = M.
    def eccentric_anomaly(m, e):
        return mcg.root(lambda E, m, e: E - e * jnp.sin(E) - m, m, m, e)

    @jax.jit
    def values(x, a, m, e):
        E = eccentric_anomaly(m, e)
        return [
            (jax.grad(conjugate)(x)[0], jax.grad(closed)(x)[0]),
            (jax.hessian(conjugate)(x)[0, 0], jax.hessian(closed)(x)[0, 0]),
            (jax.grad(sqrt)(a), jax.grad(jnp.sqrt)(a)),
            (jax.grad(jax.grad(sqrt))(a), jax.grad(jax.grad(jnp.sqrt))(a)),
            (jax.grad(eccentric_anomaly, 0)(m, e), 1 / (1 - e * jnp.cos(E))),
            (jax.grad(eccentric_anomaly, 1)(m, e), jnp.sin(E) / (1 - e * jnp.cos(E))),
        ]

    names = [
        "conjugate |y|^3/3: df/dx at 0.31415",
        "conjugate |y|^3/3: d2f/dx2",
        "Newton sqrt fixed point: d/da at 2",
        "Newton sqrt fixed point: d2/da2",
        "Kepler dE/dM",
        "Kepler dE/de",
    ]
    got = values(jnp.array([0.31415]), 2.0, 1.0, 0.5)
    return [(name, float(a), float(b)) for name, (a, b) in zip(names, got, strict=True)]


def _print_seed_rows(rows, out) -> bool:
    import mcmc_customgrad as mcg

    ok = True
    print(f"mcmc_customgrad {mcg.__version__}: implicit derivatives against closed forms", file=out)
    print(f"{'quantity':40s} {'implicit':>20s} {'closed form':>20s} {'rel. error':>10s}", file=out)
    for name, got, want in rows:
        err = _rel(got, want)
        ok &= err <= 1e-6
        print(f"{name:40s} {got:20.12f} {want:20.12f} {err:10.1e}", file=out)
    print("all derivatives agree to 1e-6" if ok else "MISMATCH: see the table above", file=out)
    return ok


def check_seeds(out=None) -> bool:
    """Print the seed numbers computed by the core against their closed forms.

    The derivatives of seed 000's conjugate, of Newton's square root as a fixed point and
    of Kepler's equation, each by the library's implicit rules and in closed form.

    Parameters
    ----------
    out : file, optional
        Where to print (default stdout).

    Returns
    -------
    bool
        True when every derivative agrees with its closed form to ``1e-6`` relative.

    Examples
    --------
    >>> import io
    >>> from mcmc_customgrad.cli import check_seeds
    >>> check_seeds(io.StringIO())
    True
    """
    return _print_seed_rows(_seed_rows(), out or sys.stdout)


def load_example(spec: str):
    """A built-in model name, or ``path/to/file.py:function``, -> ``(model, reference)``.

    ``function()`` (called with no arguments) may return an :class:`~mcmc_customgrad.Model`
    (``reference`` is then None) or an :class:`~mcmc_customgrad.models.Example`.

    Examples
    --------
    >>> from mcmc_customgrad.cli import load_example
    >>> model, reference = load_example("kepler")
    >>> model.names == reference.names
    True
    """
    from mcmc_customgrad import Model, models

    if _model_file(spec) is not None:
        path, name = spec.rsplit(":", 1)
        builder = _user_builder(path, name)
        try:
            built = builder()
        except Exception as err:
            text = _describe_user_error(f"error in {path}:{name}()", err, path)
            raise UsageError(
                text or f"{path}:{name}() failed: {type(err).__name__}: {err}"
            ) from err
    elif spec in models.REGISTRY:
        built = models.REGISTRY[spec]()
    else:
        hint = f"; name the function too, e.g. {spec}:build" if spec.endswith(".py") else ""
        raise UsageError(
            f"unknown model {spec!r}: use one of {sorted(models.REGISTRY)} (see "
            f"`mcmc-customgrad models`) or path/to/file.py:function{hint}."
        )
    if isinstance(built, models.Example):
        return built.model, built.reference
    if isinstance(built, Model):
        return built, None
    raise UsageError(
        f"{spec} returned {type(built).__name__}; it must return an mcg.Model or an "
        "mcg.models.Example."
    )


def _user_builder(path: str, name: str):
    """The function ``name`` of the file ``path``, which must take no arguments."""
    import inspect

    file = Path(path)
    if file.is_dir():
        raise UsageError(f"model file {path} is a directory; give path/to/file.py:{name}.")
    if not file.is_file():
        raise UsageError(f"model file {path} does not exist.")
    module_spec = importlib.util.spec_from_file_location(f"_mcg_user_{file.stem}", file)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as err:
        text = _describe_user_error(f"importing {path} failed", err, path)
        raise UsageError(text or f"importing {path} failed: {type(err).__name__}: {err}") from err
    builder = getattr(module, name, None)
    if not callable(builder):
        raise UsageError(f"{path} has no function {name!r}.")
    try:
        inspect.signature(builder).bind()
    except TypeError:
        raise UsageError(
            f"{path}:{name}{inspect.signature(builder)} needs arguments, but the command line "
            "calls it with none: give a function of no arguments that returns an mcg.Model or "
            "an mcg.models.Example (it may call this one with the arguments)."
        ) from None
    except ValueError:  # no signature to inspect (a builtin): calling it will tell
        pass
    return builder


def load_model(spec: str, reference: bool = False):
    """A built-in model name, or ``path/to/file.py:function``, -> what to sample.

    ``function()`` (called with no arguments) may return an :class:`~mcmc_customgrad.Model`
    or an :class:`~mcmc_customgrad.models.Example` (its ``model``, or its ``reference``
    when ``reference`` is True).

    Examples
    --------
    >>> from mcmc_customgrad.cli import load_model
    >>> load_model("conjugate").names
    ('x',)
    """
    model, closed = load_example(spec)
    if not reference:
        return model
    if closed is None:
        raise UsageError(f"{spec} returns a Model, which has no reference; drop --reference.")
    return closed


#: Decimals per summary column, as ArviZ's ``summary`` rounds by default (``round_to=None``
#: in ArviZ 0.23: 3 for the statistics, 0 for the effective sample sizes, 2 for R-hat).
_DECIMALS = {"ess_bulk": 0, "ess_tail": 0, "r_hat": 2, "z": 2}
_STAT_DECIMALS = 3


def _round_like_arviz(table):
    """Round a summary table as ArviZ prints it (columns may be a MultiIndex)."""

    def decimals(column):
        name = column[-1] if isinstance(column, tuple) else column
        return _DECIMALS.get(name, _STAT_DECIMALS)

    return table.round({c: decimals(c) for c in table.columns})


#: (pattern, replacement): the keyword arguments that messages from the library suggest,
#: as the flags of the command that prints them.
_FLAG_HINTS = {
    "compare": [
        (r"\bmin_draws=", "--min-draws"),
        (r"\bmin_chains=", "--min-chains"),
        (r"\bvar_names=", "--var-names"),
    ],
    "sample": [
        (r"\btarget_accept\b", "--target-accept"),
        (r"\bmax_treedepth\b", "--max-treedepth"),
        (r"\bdense_mass=True\b", "--dense-mass"),
    ],
}


def cli_hints(text: str, command: str) -> str:
    """Name the command-line flags in a library message (``min_draws=`` -> ``--min-draws``).

    Parameters
    ----------
    text : str
        A message written for Python callers.
    command : {"compare", "sample"}
        Whose flags to name (``summary`` reports on runs made by ``sample``).

    Returns
    -------
    str

    Examples
    --------
    >>> from mcmc_customgrad.cli import cli_hints
    >>> cli_hints("(draw more, or lower min_draws=)", "compare")
    '(draw more, or lower --min-draws)'
    >>> cli_hints("Raise target_accept (0.95, 0.99)", "sample")
    'Raise --target-accept (0.95, 0.99)'
    """
    import re

    for pattern, flag in _FLAG_HINTS[command]:
        text = re.sub(pattern, flag, text)
    return text


def _summary_table(idata):
    from mcmc_customgrad.diagnostics import summary

    table = summary(idata)[["mean", "sd", "hdi_3%", "hdi_97%", "ess_bulk", "ess_tail", "r_hat"]]
    return _round_like_arviz(table)


def _print_diagnostics(idata, out) -> int:
    import mcmc_customgrad as mcg
    from mcmc_customgrad import _arviz

    problems = mcg.diagnose(idata)
    stats = idata.sample_stats if "sample_stats" in _arviz.groups(idata) else {}
    fails = int(stats["solver_failure"].sum()) if "solver_failure" in stats else 0
    print(
        f"{idata.posterior.sizes['chain']} chains x {idata.posterior.sizes['draw']} draws; "
        f"inner-solver failures: {fails}",
        file=out,
    )
    for p in problems:
        print(f"WARNING [{p.name}] {cli_hints(p.message, 'sample')}", file=out)
    if not problems:
        print("all post-run checks passed", file=out)
    return len(problems)


def _side_by_side(custom, reference, out) -> None:
    """Both summaries in one table, with the z-score of each difference of means."""
    import numpy as np
    import pandas as pd

    from mcmc_customgrad.diagnostics import summary

    a, b = summary(custom), summary(reference)
    cols = ["mean", "sd", "ess_bulk", "r_hat"]
    table = pd.concat({"custom": a[cols], "reference": b[cols]}, axis=1)
    z = (a["mean"] - b["mean"]) / np.sqrt(a["mcse_mean"] ** 2 + b["mcse_mean"] ** 2)
    table[("", "z")] = z
    with pd.option_context("display.width", 120):
        print(_round_like_arviz(table).to_string(), file=out)


def _quick_run(example, warmup, draws, chains, seed, progress):
    """The smoke run: custom and reference as one product density, in one program.

    The joint density ``model(u) + reference(v)`` has the two posteriors as independent
    blocks, so one run samples both, and one compiled program holds the start, the
    warmup (Blackjax's window adaptation), the draws and the constrained transform:
    about a quarter of the compiling that ``mcg.sample`` does for the two densities
    apart (an initialisation check, a warmup, a draws and a per-draw program each). The
    kernel is MALA (HMC with one leapfrog step), whose program compiles in half NUTS's
    time; its draws are more correlated, hence more of them. Start checks, chunks and
    per-draw solver statistics are skipped.

    Returns ``(custom_idata, reference_idata, seconds, gradient_evaluations)``; the
    reference has no sampler statistics, which it shares with the custom run.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    from mcmc_customgrad import _arviz
    from mcmc_customgrad.sampling._kernels import Settings, draws_fn, warmup_fn
    from mcmc_customgrad.sampling._warnings import genuine_divergences

    model, reference = example.model, example.reference
    dim = model.dim

    def joint(z):
        return model.logdensity(z[:dim]) + reference.logdensity(z[dim:])

    settings = Settings(kernel="mala", num_warmup=warmup)
    run_warmup, run_draws = warmup_fn(joint, settings), draws_fn(joint, settings, draws)

    def one_chain(key):
        k_u, k_v, k_warm, k_draw = jax.random.split(key, 4)
        start = jnp.concatenate([model.init(k_u), reference.init(k_v)])
        state, step_size, imm, warm = run_warmup(k_warm, start)
        _, records = run_draws(state, step_size, imm, k_draw, jnp.int32(0), jnp.int32(draws))
        to_constrained = jax.vmap(model.to_constrained)
        t = records.transition
        return {
            "custom": to_constrained(records.position[:, :dim]),
            "reference": jax.vmap(reference.to_constrained)(records.position[:, dim:]),
            "stats": {
                "diverging": genuine_divergences(t.diverging, t.nonfinite),
                "solver_failure": t.nonfinite,
                "energy": t.energy,
                "acceptance_rate": t.acceptance_rate,
                "n_steps": t.n_steps,
                "tree_depth": t.tree_depth,
                "step_size": jnp.broadcast_to(step_size, t.energy.shape),
            },
            "warmup_steps": warm.n_steps.sum(),
        }

    keys = jax.random.split(jax.random.key(seed), chains)
    seconds = {}
    start = time.perf_counter()
    with progress.phase("compiling the smoke run (warmup and draws, one program)"):
        compiled = jax.jit(jax.vmap(one_chain)).lower(keys).compile()
    seconds["compile"] = time.perf_counter() - start
    start = time.perf_counter()
    with progress.phase(f"sampling: {chains} chains x ({warmup} warmup + {draws} draws)"):
        result = jax.device_get(compiled(keys))
    seconds["run"] = time.perf_counter() - start
    stats = {k: np.asarray(v) for k, v in result["stats"].items()}
    grads = int(stats["n_steps"].sum()) + int(np.sum(result["warmup_steps"]))
    custom = _arviz.to_inference_data(
        {k: np.asarray(v) for k, v in result["custom"].items()},
        stats,
        attrs={"num_grad_evals": int(stats["n_steps"].sum())},
    )
    # The reference shares the joint run's statistics, so it gets none: the efficiency
    # checks (step size, acceptance, ESS per gradient) have nothing to compare.
    ref = _arviz.to_inference_data({k: np.asarray(v) for k, v in result["reference"].items()}, {})
    return custom, ref, seconds, grads


def demo(out=None, quick: bool = False, progress=None) -> bool:
    """The README's main job: check the seed derivatives, then sample and compare.

    Prints the seed derivatives against their closed forms, then samples the seed-000
    conjugate density (inner Newton solve, cold start ``y0 = 0``) and its closed-form
    reference with NUTS, 4 chains x 2,500 draws each, prints both summaries side by side
    with the z-score of the difference of means (Monte Carlo standard errors of both
    runs), and ends with the verdict of :func:`~mcmc_customgrad.compare_chains`.

    Parameters
    ----------
    out : file, optional
        Where to print (default stdout).
    quick : bool
        A smoke run in about half the full demo's time (11 s against 23 s from scratch
        on 2 CPU cores; importing and the seed derivatives, 5.5 s, are common to both,
        and the sampling takes about 5 s against 17 s): the custom density and its
        reference are sampled together, as one product density of two independent
        blocks, by one compiled program with MALA (one gradient per draw), 4 chains x
        (500 warmup + 4,000 draws), then compared with ``min_draws=4000``. Its verdict
        is labelled as a smoke run: it is not the validation protocol (NUTS, 4 x 2,500
        draws of each density sampled on its own by ``mcg.sample``).
    progress : bool, optional
        Show on stderr what is being compiled and run, and how long each step took, with
        a progress bar of the draws. None: when stderr is a terminal and ``CI`` is unset.

    Returns
    -------
    bool
        True when the derivatives agree to 1e-6 and the comparison passes.

    Examples
    --------
    The README's first command runs ``mcmc-customgrad demo``; from Python (about half a
    minute, so not run as a doctest here: ``tests/test_cli.py`` runs the quick one)::

        import io
        from mcmc_customgrad.cli import demo
        assert demo(io.StringIO(), quick=True)
    """
    import jax

    jax.config.update("jax_enable_x64", True)
    import mcmc_customgrad as mcg
    from mcmc_customgrad.sampling._progress import Progress, is_terminal, progress_enabled

    out = out or sys.stdout
    show = progress_enabled(progress)
    status = Progress(enabled=show)
    with status.phase("compiling the seed derivatives"):
        rows = _seed_rows()
    ok = _print_seed_rows(rows, out)
    example = mcg.models.conjugate(d=2)
    if quick:
        chains, warmup, draws = 4, 500, 4000
        print(
            f"\nquick smoke run: the custom density and its closed-form reference sampled "
            f"together\nas one product density (two independent blocks) by one compiled "
            f"program:\nMALA (one gradient per draw; the full demo runs NUTS), {chains} chains "
            f"x ({warmup} warmup + {draws} draws)",
            file=out,
        )
        custom, reference, seconds, grads = _quick_run(example, warmup, draws, chains, 0, status)
        print(
            f"  compile {seconds['compile']:.1f} s, warmup and draws {seconds['run']:.2f} s, "
            f"{grads} gradient evaluations",
            file=out,
        )
        runs = {"custom": custom, "reference": reference}
        min_draws = draws
    else:
        warmup, draws, min_draws = 1000, 2500, 2500
        runs = {}
        for name in ("custom", "reference"):
            model = example.model if name == "custom" else example.reference
            print(
                f"\nsampling the {name} density: 4 chains x ({warmup} warmup + {draws} draws) ...",
                file=out,
            )
            if not is_terminal(out):  # else the line above says it on the same screen
                status.message(f"sampling the {name} density")
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", mcg.SamplingWarning)
                idata = mcg.sample(
                    model, num_warmup=warmup, num_samples=draws, seed=0, progress_bar=show
                )
            runs[name] = idata
            attrs = idata.posterior.attrs
            print(
                f"  compile {attrs['compile_seconds'] + attrs['warmup_compile_seconds']:.1f} s, "
                f"warmup {attrs['warmup_seconds']:.2f} s, draws {attrs['sampling_seconds']:.2f} "
                f"s, {attrs['num_grad_evals']} gradient evaluations",
                file=out,
            )
            for w in caught:
                print(f"  warning: {w.message}", file=out)
    print("\nposterior of x (conjugate density, d = 2): custom vs closed-form reference", file=out)
    _side_by_side(runs["custom"], runs["reference"], out)
    with status.phase("comparing the chains"):
        report = mcg.compare_chains(
            runs["custom"], runs["reference"], min_draws=min_draws, gradients_passed=ok
        )
    if quick:
        print(
            f"\ncomparison, SMOKE RUN ONLY ({chains} x {draws} joint MALA draws, min_draws="
            f"{draws};\nthe validation protocol is `mcmc-customgrad demo`: NUTS, 4 x 2,500 "
            "draws of each density):",
            file=out,
        )
        print(f"smoke run {report.verdict}", file=out)
    else:
        print("\ncomparison (docs/validation.md):", file=out)
        print(report.verdict, file=out)
    print(report.efficiency_verdict, file=out)
    for failure in report.failures + report.efficiency_failures:
        print(f"- {failure}", file=out)
    return ok and report.passed


def _writable_directory(folder: Path, flag: str, given) -> None:
    """Create ``folder`` if it is missing and check that files can be written in it."""
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{flag} {given}: {folder} is a file, not a directory; give another path.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(
            f"{flag} {given}: cannot create the directory {folder} ({err.strerror or err}); "
            "give a path in a writable place."
        ) from err
    try:  # the only sure test of writing is to write
        handle, probe = tempfile.mkstemp(prefix=".mcg-write-check-", dir=folder)
        os.close(handle)
        os.remove(probe)
    except OSError as err:
        raise UsageError(
            f"{flag} {given}: cannot write in {folder} ({err.strerror or err}); give a path in "
            "a writable place."
        ) from err


def _check_output_file(path, flag: str, example: str) -> None:
    """Before any work: ``path`` is a file that can be written (its directory is created)."""
    target = Path(path)
    if target.is_dir():
        raise UsageError(
            f"{flag} {path} is a directory; {flag} takes a file name, e.g. {flag} "
            f"{target / example}."
        )
    _writable_directory(target.parent, flag, path)
    if target.exists() and not os.access(target, os.W_OK):
        raise UsageError(
            f"{flag} {path}: the file exists and cannot be overwritten (permission denied); "
            "give another path, or make the file writable."
        )


def _check_output_directory(path, flag: str) -> None:
    """Before any work: ``path`` is a directory (created if missing) that can be written."""
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise UsageError(
            f"{flag} {path} is a file, but {flag} takes a directory (for report.md and the "
            f"figures): give a new or existing directory, e.g. {flag} {target.parent / 'report'}."
        )
    _writable_directory(target, flag, path)


def _rescue(idata, wanted) -> str | None:
    """Save ``idata`` under a new name in the current, else the temporary, directory.

    Returns the path, or None when neither can be written.
    """
    from mcmc_customgrad.diagnostics import save

    stem = Path(wanted).stem or "run"
    folders = []
    with contextlib.suppress(OSError):  # the current directory may have been removed
        folders.append(str(Path.cwd()))
    folders.append(tempfile.gettempdir())
    for folder in dict.fromkeys(folders):
        try:
            handle, name = tempfile.mkstemp(prefix=f"{stem}-unsaved-", suffix=".nc", dir=folder)
            os.close(handle)
        except OSError:
            continue
        try:
            return save(idata, name)
        except Exception:
            with contextlib.suppress(OSError):
                os.remove(name)
    return None


def _save_run(idata, path) -> str | None:
    """Write the draws to ``path``; if that fails, save them elsewhere.

    Returns None, or the error message, which says where the draws are.
    """
    from mcmc_customgrad.diagnostics import save

    try:
        save(idata, path)
    except Exception as err:
        reason = f"{type(err).__name__}: {err}"
        rescued = _rescue(idata, path)
        if rescued is None:
            return (
                f"writing {path} failed after sampling ({reason}), and so did saving the "
                f"draws in the current directory and in {tempfile.gettempdir()}: they are "
                "lost. Fix the cause (disk space, permissions), then sample again."
            )
        return (
            f"writing {path} failed after sampling ({reason}); the draws are saved in "
            f"{rescued} instead: move that file where you want it (`summary` and `compare` "
            "read it)."
        )
    return None


def _print_error(message) -> None:
    print(f"mcmc-customgrad: error: {message}", file=sys.stderr)


def _cmd_sample(args, out) -> int:
    import mcmc_customgrad as mcg

    model = load_model(args.model, reference=args.reference)
    if args.out:
        _check_output_file(args.out, "--out", "run.nc")
    with warnings.catch_warnings(), _running_user_code(args.model, "while sampling"):
        warnings.simplefilter("ignore", mcg.SamplingWarning)  # printed below instead
        idata = mcg.sample(
            model,
            num_chains=args.chains,
            num_warmup=args.warmup,
            num_samples=args.draws,
            seed=args.seed,
            kernel=args.kernel,
            target_accept=args.target_accept,
            max_treedepth=args.max_treedepth,
            dense_mass=args.dense_mass,
            chain_method=args.chain_method,
            checkpoint=args.checkpoint,
            progress_bar=args.progress,
        )
    # The draws first: if writing fails, where they went is said before anything else runs.
    failure = _save_run(idata, args.out) if args.out else None
    if failure:
        _print_error(failure)
    print(_summary_table(idata).to_string(), file=out)
    _print_diagnostics(idata, out)
    if failure:
        return EXIT_FAILED
    if args.out:
        print(f"wrote {args.out}", file=out)
    return EXIT_OK


def _cmd_summary(args, out) -> int:
    idata = _load_run(args.file)
    print(_summary_table(idata).to_string(), file=out)
    problems = _print_diagnostics(idata, out)
    return EXIT_FAILED if (problems and args.strict) else EXIT_OK


def _load_run(path):
    from mcmc_customgrad.diagnostics import load

    if Path(path).is_dir():
        runs = sorted(p.name for p in Path(path).glob("*.nc"))
        holds = f" ({path} holds {', '.join(runs[:5])})" if runs else ""
        raise UsageError(
            f"{path} is a directory; give a netCDF file written by `mcmc-customgrad sample "
            f"--out`, e.g. {Path(path) / (runs[0] if runs else 'run.nc')}{holds}."
        )
    if not Path(path).exists():
        raise UsageError(f"{path} does not exist; give a netCDF file written by `sample --out`.")
    try:
        idata = load(path)
    except OSError as err:  # unreadable: permissions, I/O
        raise UsageError(f"cannot read {path}: {err.strerror or err}.") from err
    except ValueError as err:  # not netCDF; the message names the path and what to give
        raise UsageError(str(err)) from err
    from mcmc_customgrad import _arviz

    if not _arviz.is_inference_data(idata):
        raise UsageError(f"{path} has no posterior group.")
    return idata


def _cmd_compare(args, out) -> int:
    import mcmc_customgrad as mcg

    custom, reference = _load_run(args.custom), _load_run(args.reference)
    if args.out:
        _check_output_directory(args.out, "--out")
    try:
        report = mcg.compare_chains(
            custom,
            reference,
            var_names=args.var_names,
            alpha=args.alpha,
            min_chains=args.min_chains,
            min_draws=args.min_draws,
            seed=args.seed,
        )
    except (KeyError, TypeError, ValueError) as err:
        message = cli_hints(str(err), "compare")
        raise UsageError(f"cannot compare {args.custom} with {args.reference}: {message}") from err
    print(cli_hints(str(report), "compare"), file=out)
    if args.out:
        try:
            path = mcg.write_report(report, args.out, figures=not args.no_figures)
        except OSError as err:
            raise CommandFailed(
                f"writing the report to {args.out} failed ({type(err).__name__}: {err}); the "
                "verdict above stands: run again with another --out for report.md and the figures."
            ) from err
        print(f"wrote {path}", file=out)
    failed = not report.passed or (args.require_efficiency and report.efficiency_passed is False)
    return EXIT_FAILED if failed else EXIT_OK


def _cmd_check_grad(args, out) -> int:
    import dataclasses

    import mcmc_customgrad as mcg

    model, reference = load_example(args.model)
    if args.plot:
        _check_plot_file(args.plot)
    with _running_user_code(args.model, "while checking the gradients"):
        report = mcg.check_gradients(
            model,
            model.init,
            None if args.no_reference else reference,
            order=args.order,
            num_points=args.points,
            seed=args.seed,
        )
    # One description of the points, for this text and for the plot's title.
    source = (
        f"drawn by model.init (the sampler's random start: uniform on (-2, 2) in every "
        f"unconstrained coordinate), seed {args.seed}"
    )
    report = dataclasses.replace(report, source=source)
    against = "finite differences" if reference is None or args.no_reference else "its reference"
    print(
        f"{args.model}: {args.points} points {source}; checked against {against} and itself",
        file=out,
    )
    print(report.table, file=out)
    for failure in report.failures:
        print(f"- {failure}", file=out)
    print("PASSED" if report.passed else "FAILED", file=out)
    if args.plot:
        try:
            print(f"wrote {report.plot(args.plot)}", file=out)
        except OSError as err:
            raise CommandFailed(
                f"writing the plot {args.plot} failed ({type(err).__name__}: {err}); the "
                "table above is the result: run again with another --plot for the figure."
            ) from err
    return EXIT_OK if report.passed else EXIT_FAILED


def _check_plot_file(path) -> None:
    """Before the check: a writable file in a format matplotlib writes."""
    from matplotlib.backend_bases import FigureCanvasBase

    _check_output_file(path, "--plot", "gradients.png")
    suffix = Path(path).suffix.lower().lstrip(".")
    formats = FigureCanvasBase.get_supported_filetypes()
    if suffix and suffix not in formats:
        raise UsageError(
            f"--plot {path}: matplotlib cannot write .{suffix} files; give a .png file "
            f"(or .{', .'.join(sorted(formats))})."
        )


def _role(match) -> str:
    target = match.group(1)
    if "<" in target:  # :func:`title <target>`
        return target.split("<", 1)[0].strip()
    return target[1:].rsplit(".", 1)[-1] if target.startswith("~") else target


def plain_text(text: str) -> str:
    """A docstring line without its reStructuredText markup, for the terminal.

    Examples
    --------
    >>> from mcmc_customgrad.cli import plain_text
    >>> plain_text("Density ``sum N(x_i)``, solved by :func:`~mcmc_customgrad.min_value`.")
    'Density sum N(x_i), solved by min_value.'
    """
    import re

    text = re.sub(r":[\w:]+:`([^`]+)`", _role, text)  # :func:`~a.b` -> b
    text = re.sub(r"``(.+?)``", r"\1", text)  # ``code`` -> code
    return re.sub(r"`([^`]+)`_?", r"\1", text)  # `title`, `link`_ -> title, link


def _cmd_models(args, out) -> int:
    from mcmc_customgrad import models

    for name, builder in models.REGISTRY.items():
        first = (builder.__doc__ or "").strip().splitlines()[0]
        print(f"{name:16s} {plain_text(first)}", file=out)
    return EXIT_OK


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default; a help that says it already is kept."""

    def _get_help_string(self, action):
        if "default" in (action.help or "") or action.default is argparse.SUPPRESS:
            return action.help
        if not action.option_strings:  # positional arguments have no default
            return action.help
        return (action.help or "") + " (default: %(default)s)"


def _parser():
    from mcmc_customgrad._version import __version__

    parser = argparse.ArgumentParser(
        prog="mcmc-customgrad",
        description="Implicit derivatives of inner solves for HMC log-densities.",
        epilog="Exit codes: 0 success, 1 the run or check failed, 2 bad usage.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name, help_text):
        return sub.add_parser(
            name, help=help_text, description=help_text, formatter_class=_HelpFormatter
        )

    progress_help = (
        "show on stderr what is compiled and run, with its time, and a progress bar of "
        "the draws (plain lines when stderr is not a terminal); --no-progress: quiet"
    )
    d = command("demo", "check the seed derivatives, sample the conjugate model, compare")
    d.add_argument(
        "--quick",
        action="store_true",
        help="smoke run in about half the time: custom and reference sampled together by "
        "one compiled MALA program, 4 x (500 warmup + 4,000 draws); not the validation "
        "protocol",
    )
    d.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=True, help=progress_help
    )
    s = command("sample", "sample a model and write the draws to netCDF")
    s.add_argument("model", help="built-in model name, or path/to/file.py:function")
    s.add_argument("--reference", action="store_true", help="sample the closed-form reference")
    s.add_argument("--chains", type=int, default=4, help="number of chains")
    s.add_argument("--warmup", type=int, default=1000, help="warmup (adaptation) steps per chain")
    s.add_argument("--draws", type=int, default=1000, help="draws per chain after warmup")
    s.add_argument("--seed", type=int, default=0, help="random seed (same seed, same draws)")
    s.add_argument("--kernel", default="nuts", choices=["nuts", "hmc", "mala"], help="MCMC kernel")
    s.add_argument(
        "--target-accept", type=float, default=0.8, help="step-size adaptation target in (0, 1)"
    )
    s.add_argument(
        "--max-treedepth", type=int, default=10, help="NUTS's maximum number of doublings"
    )
    s.add_argument(
        "--dense-mass",
        action="store_true",
        help="adapt a dense mass matrix (default: False, diagonal)",
    )
    s.add_argument(
        "--chain-method",
        default="vectorized",
        choices=["vectorized", "parallel", "sequential"],
        help="chains batched with vmap, sharded over devices, or one at a time",
    )
    s.add_argument(
        "--checkpoint",
        default=None,
        help="directory for resumable checkpoints (default: none, no checkpoints)",
    )
    s.add_argument(
        "--out", default=None, help="netCDF file for the run, e.g. run.nc (default: not saved)"
    )
    s.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=True, help=progress_help
    )
    m = command("summary", "ArviZ summary and post-run checks of a run file")
    m.add_argument("file", help="netCDF file written by `sample --out`")
    m.add_argument("--strict", action="store_true", help="exit 1 when any check fails")
    c = command("compare", "compare a run with its reference run (validation)")
    c.add_argument("custom", help="netCDF run of the custom-gradient density")
    c.add_argument("reference", help="netCDF run of the closed-form reference")
    c.add_argument(
        "--out", default=None, help="directory for report.md and the figures (default: print only)"
    )
    c.add_argument("--no-figures", action="store_true", help="write report.md only")
    c.add_argument(
        "--var-names", nargs="+", default=None, help="variables to compare (default: all of them)"
    )
    c.add_argument("--alpha", type=float, default=0.01, help="level of each test family")
    c.add_argument("--min-chains", type=int, default=4, help="required chains per run")
    c.add_argument("--min-draws", type=int, default=2500, help="required draws per chain")
    c.add_argument("--seed", type=int, default=0, help="seed of the permutation test")
    c.add_argument(
        "--require-efficiency",
        action="store_true",
        help="also exit 1 when the efficiency checks fail (a wrong gradient shows there)",
    )
    g = command("check-grad", "check a model's gradients (and its reference's)")
    g.add_argument("model", help="built-in model name, or path/to/file.py:function")
    g.add_argument("--points", type=int, default=20, help="number of random points")
    g.add_argument("--order", type=int, default=2, choices=[1, 2], help="2 checks Hessians")
    g.add_argument("--seed", type=int, default=0, help="seed of the random points")
    g.add_argument("--no-reference", action="store_true", help="skip the reference checks")
    g.add_argument(
        "--plot", default=None, help="PNG file for the gradient-error plot (default: no plot)"
    )
    command("models", "list the built-in models")
    return parser


def main(argv=None, out=None) -> int:
    """Entry point of the ``mcmc-customgrad`` console script; returns the exit code.

    Parameters
    ----------
    argv : list of str, optional
        The arguments (default ``sys.argv[1:]``).
    out : file, optional
        Where results go (default stdout); progress and errors go to stderr.

    Returns
    -------
    int
        0 success, 1 the run or check failed, 2 bad usage.

    Examples
    --------
    >>> import io
    >>> from mcmc_customgrad.cli import main
    >>> out = io.StringIO()
    >>> main(["models"], out=out)
    0
    >>> print(out.getvalue().splitlines()[0])
    conjugate        Seed 000's density sum N(x_i) + N(f(x)) with f(x) = -min_y g(y; x).
    """
    import jax

    jax.config.update("jax_enable_x64", True)
    from mcmc_customgrad import CheckpointError, InitializationError, SolverError
    from mcmc_customgrad._cache import configure_cache

    out = out or sys.stdout
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(out)
        return EXIT_USAGE
    if args.command in ("demo", "sample", "check-grad"):  # the commands that compile
        configure_cache()
    try:
        if args.command == "demo":
            ok = demo(out, quick=args.quick, progress=args.progress)
            return EXIT_OK if ok else EXIT_FAILED
        command = {
            "sample": _cmd_sample,
            "summary": _cmd_summary,
            "compare": _cmd_compare,
            "check-grad": _cmd_check_grad,
            "models": _cmd_models,
        }
        return command[args.command](args, out)
    except UsageError as err:
        _print_error(err)
        return EXIT_USAGE
    except (CommandFailed, SolverError) as err:  # an inner solve with on_failure="raise"
        _print_error(err)
        return EXIT_FAILED
    except ValueError as err:  # bad settings caught by mcg.sample before compiling
        kind = (InitializationError, CheckpointError)
        _print_error(err)
        return EXIT_FAILED if isinstance(err, kind) else EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
