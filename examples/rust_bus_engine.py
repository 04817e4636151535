"""Rust's (1987) bus-engine replacement model: a Bellman fixed point inside the likelihood.

Harold Zurcher, superintendent of maintenance at the Madison (Wisconsin) Metropolitan Bus
Company, decides each month for each bus whether to keep its engine (operating cost
``c(x) = theta1 * 0.001 * x``, rising with the mileage bin ``x``) or replace it (cost
``RC``; the mileage restarts from 0). Mileage is discretised into 90 bins (Rust's 5,000-mile
bins); a kept engine moves up 0, 1 or 2 bins a month with known probabilities. With type-I
extreme value shocks the choice probabilities are logits of the choice-specific values

    v(x, keep) = -c(x) + beta E[V(x') | x],   v(x, replace) = -RC + beta E[V(x') | 0],

and the integrated value function ``V(x) = log(exp v(x, keep) + exp v(x, replace))`` is
the fixed point of that smoothed Bellman operator. ``mcg.fixed_point`` solves it at every
evaluation of the log-density (Rust's nested fixed point, NFXP), relative to the state
``x = 0`` so that values stay of order ``RC``, and differentiates it in ``(RC, theta1)``
by the implicit function theorem. At ``beta = 0.995`` plain iteration needs about 1,000
steps (3,500 on ``V`` itself, whose contraction factor is ``beta``); Newton's method,
which on this operator is policy iteration, needs 8.

Two parameters, so the posterior is checked against exact independent draws from the
gridded posterior (``mcg.diagnostics.quadrature_reference``) instead of a closed form.
Walk-through: ``docs/rust-bus-engine.md``. Besides the summary and the verdict, the script
plots the replacement probability by mileage for 50 posterior draws against the data
(``replacement.png``).

    .venv/bin/python examples/rust_bus_engine.py            # 4 x 2,500 draws, 64 x 64 grid
    .venv/bin/python examples/rust_bus_engine.py --quick    # a smoke run (what the tests do)
    mcmc-customgrad check-grad examples/rust_bus_engine.py:build
"""

from __future__ import annotations

import time

import jax

jax.config.update("jax_enable_x64", True)  # before any array: float64 throughout

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.scipy.linalg import solve_triangular  # noqa: E402
from jax.scipy.stats import norm  # noqa: E402

import mcmc_customgrad as mcg  # noqa: E402

#: The monthly discount factor (Rust used 0.9999; 0.995 already makes iteration crawl).
BETA = 0.995
#: Mileage bins (Rust: 90 bins of 5,000 miles).
NUM_STATES = 90
#: Probabilities of moving up 0, 1 or 2 bins in a month (close to Rust's first-stage
#: estimates), treated as known: the data are simulated with them.
INCREMENT_PROBS = (0.3919, 0.5953, 0.0128)
#: The parameters the data are simulated at.
TRUTH = {"RC": 10.0, "theta1": 2.5}


def next_states(num_states: int, num_steps: int = len(INCREMENT_PROBS)) -> jnp.ndarray:
    """``next_states[x, j] = min(x + j, num_states - 1)``: up ``j`` bins, capped at the top."""
    x = jnp.arange(num_states)[:, None]
    return jnp.minimum(x + jnp.arange(num_steps)[None, :], num_states - 1)


def expected_next(W, probs):
    """``E[W(x') | x, keep] = sum_j p_j W(min(x + j, n - 1))`` for every bin ``x``.

    The mileage transition is banded (up 0, 1 or 2 bins), so the expectation is a
    weighted sum of three shifted copies of ``W``: ``O(n)``, where the dense ``P @ W``
    is ``O(n^2)``. (The dense product also made a second-order ``check_gradients`` at 10
    points hang on a 2-core machine: a deadlock in XLA:CPU's threaded matrix products.)
    """
    return jnp.sum(probs * W[next_states(W.shape[0], probs.shape[0])], axis=1)


def transition_matrix(num_states: int, probs=INCREMENT_PROBS) -> jnp.ndarray:
    """The dense mileage transition of a kept engine, ``P[x, x']`` (rows sum to one).

    A replaced engine restarts at 0, so its next mileage follows row ``P[0]``.
    """
    probs = jnp.asarray(probs, dtype=jnp.result_type(float))
    rows = jnp.broadcast_to(jnp.arange(num_states)[:, None], (num_states, probs.shape[0]))
    cols = next_states(num_states, probs.shape[0])
    return jnp.zeros((num_states, num_states), probs.dtype).at[rows, cols].add(probs)


def flow_utilities(RC, theta1, num_states: int):
    """Per-period utilities ``u(x, keep) = -c(x)`` and ``u(x, replace) = -RC - c(0)``."""
    x = jnp.arange(num_states, dtype=jnp.result_type(float))
    keep = -0.001 * theta1 * x
    replace = jnp.broadcast_to(-RC, keep.shape)  # c(0) = 0
    return keep, replace


def choice_values(W, RC, theta1, probs, beta):
    """Choice-specific values ``v(x, d) = u(x, d) + beta E[W(x') | x, d]``."""
    keep, replace = flow_utilities(RC, theta1, W.shape[0])
    expected = expected_next(W, probs)  # a replaced engine continues as from x = 0
    return keep + beta * expected, replace + beta * expected[0]


def bellman_absolute(V, RC, theta1, probs, beta):
    """The smoothed Bellman operator ``T(V)(x) = log(exp v(x, keep) + exp v(x, replace))``.

    The operator of the integrated value function under type-I extreme value shocks
    (Euler's constant dropped: it shifts every value by ``gamma / (1 - beta)``).
    ``logaddexp`` subtracts the larger of the two values before exponentiating. A
    contraction with factor ``beta``; its fixed point is of order ``|u| / (1 - beta)``.
    """
    v_keep, v_replace = choice_values(V, RC, theta1, probs, beta)
    return jnp.logaddexp(v_keep, v_replace)


def bellman(W, RC, theta1, probs, beta):
    """The Bellman operator relative to the new-engine state: ``T(W) - T(W)(0)``.

    Choices depend only on differences of values, and ``T(W + c) = T(W) + beta c`` for a
    constant ``c`` (transition probabilities sum to one), so ``W = V - V(0)`` is the
    fixed point of this operator: values of order ``RC`` at any ``beta``, and the same
    choice probabilities as ``V``.
    """
    T = bellman_absolute(W, RC, theta1, probs, beta)
    return T - T[0]


def newton_kantorovich(fun, y0, *args, max_steps=50):
    """Undamped Newton on ``fun(y) - y = 0`` (Rust's Newton-Kantorovich step).

    Each step solves ``(I - dT/dy) dy = T(y) - y`` with the Jacobian by forward mode and
    an LU solve. For the smoothed Bellman operator this is policy iteration with soft
    (logit) policies: it converges from any start, quadratically near the fixed point.
    The library checks the residual at the answer and differentiates by the implicit
    function theorem; this loop is never differentiated.
    """
    eye = jnp.eye(y0.shape[0], dtype=y0.dtype)

    def residual(y):
        return fun(y, *args) - y

    def cond(state):  # 100 times tighter than the library's acceptance test
        y, r, k = state
        going = jnp.max(jnp.abs(r)) > 1e-12 * (1.0 + jnp.max(jnp.abs(y)))
        return (k < max_steps) & going & jnp.all(jnp.isfinite(r))

    def body(state):
        y, r, k = state
        jac = jax.jacfwd(fun)(y, *args) - eye
        y = y - jnp.linalg.solve(jac, r)
        return y, residual(y), k + 1

    y, r, k = jax.lax.while_loop(cond, body, (y0, residual(y0), 0))
    return y, mcg.SolverInfo(jnp.all(jnp.isfinite(r)), k, jnp.max(jnp.abs(r)))


def policy_iteration(fun, W0, RC, theta1, probs, beta, max_steps=50):
    """The Newton step of :func:`newton_kantorovich`, with the structure of the Jacobian.

    For this operator a Newton step is one step of (soft) policy iteration: the next
    ``W`` is the exact value of the current logit policy ``pi(x) = Pr(replace | x)``,
    ``V_pi = (I - beta P_pi)^-1 (T(W) - beta P_pi W)``, normalised to ``V_pi(0) = 0``,
    where ``P_pi = diag(1 - pi) P + pi P[0]`` is the mileage transition under the policy.
    ``I - beta P_pi`` is an upper triangular matrix (mileage never decreases on
    keeping) minus a rank-one term (replacing), so two triangular solves and the
    Sherman-Morrison formula replace the dense Jacobian and its LU factorisation:
    ``O(n^2)`` per step instead of ``O(n^3)``, the same iterates. ``fun`` (the operator
    :func:`bellman`) is used for the residual, which the library checks again.
    """
    n = W0.shape[0]
    P = transition_matrix(n, probs)
    eye = jnp.eye(n, dtype=W0.dtype)

    def residual(W):
        return fun(W, RC, theta1, probs, beta) - W

    def step(W):
        v_keep, v_replace = choice_values(W, RC, theta1, probs, beta)
        pi = jax.nn.sigmoid(v_replace - v_keep)
        expected = expected_next(W, probs)
        # Flow utility plus entropy of the logit policy: T(W) = reward + beta P_pi W.
        reward = jnp.logaddexp(v_keep, v_replace) - beta * ((1 - pi) * expected + pi * expected[0])
        upper = eye - beta * (1 - pi)[:, None] * P  # keeping: upper triangular
        both = solve_triangular(upper, jnp.stack([reward, beta * pi], axis=1), lower=False)
        a, b = both[:, 0], both[:, 1]  # replacing: minus the rank-one beta pi P[0]
        V = a + b * jnp.sum(P[0] * a) / (1.0 - jnp.sum(P[0] * b))  # Sherman-Morrison
        return V - V[0]

    def cond(state):  # 100 times tighter than the library's acceptance test
        W, r, k = state
        going = jnp.max(jnp.abs(r)) > 1e-12 * (1.0 + jnp.max(jnp.abs(W)))
        return (k < max_steps) & going & jnp.all(jnp.isfinite(r))

    def body(state):
        W, _, k = state
        W = step(W)
        return W, residual(W), k + 1

    W, r, k = jax.lax.while_loop(cond, body, (W0, residual(W0), 0))
    return W, mcg.SolverInfo(jnp.all(jnp.isfinite(r)), k, jnp.max(jnp.abs(r)))


#: The forward solver of the inner fixed point (see ``docs/rust-bus-engine.md``).
SOLVER = policy_iteration


def value_function(RC, theta1, num_states=NUM_STATES, beta=BETA, solver=SOLVER, full_output=False):
    """``W = V - V(0)``, the Bellman fixed point, differentiable in ``RC`` and ``theta1``."""
    W0 = jnp.zeros(num_states, dtype=jnp.result_type(float))
    probs = jnp.asarray(INCREMENT_PROBS)
    return mcg.fixed_point(
        bellman, W0, RC, theta1, probs, beta, solver=solver, full_output=full_output
    )


def choice_log_probs(RC, theta1, num_states=NUM_STATES, beta=BETA, solver=SOLVER):
    """``log Pr(d | x)``, shape ``(num_states, 2)``: column 0 keep, column 1 replace."""
    W = value_function(RC, theta1, num_states, beta, solver)
    v_keep, v_replace = choice_values(W, RC, theta1, jnp.asarray(INCREMENT_PROBS), beta)
    diff = v_replace - v_keep
    return jnp.stack([jax.nn.log_sigmoid(-diff), jax.nn.log_sigmoid(diff)], axis=-1)


def simulate(num_buses, num_periods, num_states=NUM_STATES, truth=None, seed=0, burn_in=100):
    """Mileage and replacement decisions of ``num_buses`` buses over ``num_periods`` months.

    Every bus starts with a new engine (``x = 0``) ``burn_in`` months before the first
    recorded month, so that the recorded fleet has engines of all ages. Returns a dict
    with ``x`` and ``d`` (int arrays of shape ``(num_buses, num_periods)``: the mileage
    bin and the decision, 1 = replace, of each bus-month), ``num_states`` and ``truth``.
    """
    truth = dict(TRUTH if truth is None else truth)
    log_probs = choice_log_probs(truth["RC"], truth["theta1"], num_states)
    prob_replace = np.exp(np.asarray(log_probs[:, 1]))
    rng = np.random.default_rng(seed)
    x = np.zeros(num_buses, dtype=np.int64)
    xs, ds = [], []
    for t in range(burn_in + num_periods):
        d = (rng.random(num_buses) < prob_replace[x]).astype(np.int64)
        if t >= burn_in:
            xs.append(x)
            ds.append(d)
        step = rng.choice(len(INCREMENT_PROBS), size=num_buses, p=INCREMENT_PROBS)
        x = np.minimum(np.where(d == 1, 0, x) + step, num_states - 1)
    return {
        "x": np.stack(xs, axis=1),
        "d": np.stack(ds, axis=1),
        "num_states": num_states,
        "truth": truth,
    }


def make_model(data, beta=BETA, solver=SOLVER) -> mcg.Model:
    """The posterior of ``(RC, theta1)`` given the simulated decisions.

    Priors: ``log RC ~ N(log 10, 1)``, ``log theta1 ~ N(log 2, 1)`` (log-normal, so both
    are positive: ``mcg.positive``). The likelihood is the product over bus-months of the
    logit choice probabilities ``Pr(d | x)``; the mileage transitions do not depend on
    ``(RC, theta1)`` and are left out. ``log_likelihood_fn`` gives one term per bus (its
    months summed), the pointwise log-likelihood of ArviZ's ``loo`` (leave one bus out;
    one term per bus-month would be 10,000 numbers per draw); the log-density sums the
    same terms by state (counts of keep and replace per mileage bin), which is cheaper.
    """
    num_states = int(data["num_states"])
    x, d = jnp.asarray(data["x"]), jnp.asarray(data["d"])
    counts = jnp.zeros((num_states, 2)).at[x.ravel(), d.ravel()].add(1.0)

    def log_prior(p):
        RC, theta1 = p["RC"], p["theta1"]
        return (
            norm.logpdf(jnp.log(RC), jnp.log(10.0), 1.0)
            - jnp.log(RC)
            + norm.logpdf(jnp.log(theta1), jnp.log(2.0), 1.0)
            - jnp.log(theta1)
        )

    def log_likelihood(p):  # one term per bus
        return jnp.sum(
            choice_log_probs(p["RC"], p["theta1"], num_states, beta, solver)[x, d], axis=1
        )

    def logdensity(p):
        logp = choice_log_probs(p["RC"], p["theta1"], num_states, beta, solver)
        return jnp.sum(counts * logp) + log_prior(p)

    return mcg.Model(
        logdensity,
        {"RC": mcg.positive(), "theta1": mcg.positive()},
        log_likelihood_fn=log_likelihood,
    )


#: Sizes of the full run and of ``--quick`` (a smoke run: the same model and data, no
#: gradient check, two solvers in the table, fewer draws, a coarser grid).
FULL = {"num_buses": 100, "num_periods": 100, "grad_points": 10, "quad_points": None}
QUICK = {"num_buses": 100, "num_periods": 100, "grad_points": 0, "quad_points": 32}


def build() -> mcg.Model:
    """The model of the full run, for the command line.

    ``mcmc-customgrad check-grad examples/rust_bus_engine.py:build`` and
    ``mcmc-customgrad sample examples/rust_bus_engine.py:build`` call this.
    """
    return make_model(simulate(FULL["num_buses"], FULL["num_periods"]))


def solver_table(num_states, truth, beta=BETA, quick=False):
    """Iterations and time per solve of the inner fixed point at ``truth``, per solver."""
    iteration = mcg.solvers.FixedPointIteration(max_steps=20_000)
    rows = [
        ("FixedPointIteration, V", bellman_absolute, iteration),
        ("FixedPointIteration, W", bellman, iteration),
        ("Anderson(memory=5), W", bellman, mcg.solvers.Anderson(max_steps=5_000)),
        ("Newton (library), W", bellman, mcg.solvers.Newton()),
        ("newton_kantorovich, W", bellman, newton_kantorovich),
        ("policy_iteration, W", bellman, policy_iteration),
    ]
    if quick:
        rows = [rows[1], rows[-1]]
    W0, probs = jnp.zeros(num_states), jnp.asarray(INCREMENT_PROBS)
    print(f"\ninner fixed point at the truth, beta = {beta}, {num_states} states, from 0:")
    print(f"  {'solver, unknown':24s} {'iterations':>10s} {'residual':>9s} {'ms/solve':>9s}")
    steps = {}
    for name, operator, solver in rows:

        def solve(RC, theta1, operator=operator, solver=solver):
            return mcg.fixed_point(
                operator, W0, RC, theta1, probs, beta, solver=solver, full_output=True
            )

        solve = jax.jit(solve)
        _, info = jax.block_until_ready(solve(truth["RC"], truth["theta1"]))
        start = time.perf_counter()
        for _ in range(5):
            jax.block_until_ready(solve(truth["RC"], truth["theta1"]))
        ms = (time.perf_counter() - start) / 5 * 1e3
        steps[name] = int(info.num_steps)
        residual = float(info.residual_norm)
        print(f"  {name:24s} {steps[name]:10d} {residual:9.1e} {ms:9.2f}")
    return steps


def gradient_check(model, truth, num_points, order=2):
    """``mcg.check_gradients`` at points around the truth (finite differences, fwd/rev)."""
    center = model.to_unconstrained(truth)
    points = center + 0.3 * jax.random.normal(jax.random.key(1), (num_points, model.dim))
    start = time.perf_counter()
    report = mcg.check_gradients(model, points, order=order)
    print(f"\ngradient check, order {order}, {num_points} points around the truth:")
    print(report.table)
    print(f"gradient check: {'PASSED' if report.passed else 'FAILED'}", end=" ")
    print(f"({time.perf_counter() - start:.1f} s)")
    return report


def plot_replacement(idata, data, path, num_curves=50):
    """Replacement probability by mileage: 50 posterior draws and the data's frequencies."""
    from _common import figure

    post = idata.posterior
    RC, theta1 = (np.asarray(post[k]).reshape(-1) for k in ("RC", "theta1"))
    pick = np.random.default_rng(0).choice(RC.size, num_curves, replace=False)
    n = int(data["num_states"])
    curves = jax.vmap(lambda a, b: jnp.exp(choice_log_probs(a, b, n)[:, 1]))(
        jnp.asarray(RC[pick]), jnp.asarray(theta1[pick])
    )
    x, d = data["x"].ravel(), data["d"].ravel()
    seen = np.bincount(x, minlength=n)
    replaced = np.bincount(x, weights=d, minlength=n)
    bins = np.flatnonzero(seen >= 20)
    with figure(path) as ax:
        ax.plot(np.arange(n), np.asarray(curves).T, color="C0", alpha=0.1)
        ax.plot(bins, replaced[bins] / seen[bins], "o", color="k", ms=3, label="data")
        ax.set(
            xlabel="mileage bin x",
            ylabel="Pr(replace | x)",
            title="50 posterior draws and the data's frequencies (bins seen 20+ times)",
        )
        ax.legend()


def print_loo(idata):
    """ArviZ's PSIS-LOO from the per-bus log-likelihoods (leave one bus out)."""
    import warnings

    import arviz as az

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loo = az.loo(idata)
    print(
        f"\nPSIS-LOO, leaving one bus out: elpd_loo {loo.elpd_loo:.1f} (se {loo.se:.1f}), ", end=""
    )
    print(f"p_loo {loo.p_loo:.2f}, max Pareto k {float(np.max(loo.pareto_k)):.2f}")
    for w in caught:
        print(f"  warning: {w.message}")


def main(argv=None) -> int:
    """Check gradients, sample, compare with the quadrature reference; 0 when all passed."""
    from _common import compare_and_report, exit_code, parse_args, run_settings

    args = parse_args("rust_bus_engine", __doc__, argv)
    sizes = QUICK if args.quick else FULL
    data = simulate(sizes["num_buses"], sizes["num_periods"])
    model = make_model(data)
    print(f"truth: {data['truth']}, beta = {BETA}, {data['num_states']} mileage states")
    print(
        f"data: {data['x'].shape[0]} buses x {data['x'].shape[1]} months, "
        f"{int(data['d'].sum())} replacements"
    )
    solver_table(int(data["num_states"]), data["truth"], quick=args.quick)
    grads = None
    if args.quick:
        print("\n(--quick: no gradient check; tests/test_rust_bus_engine.py checks gradients)")
    else:
        grads = gradient_check(model, data["truth"], sizes["grad_points"])

    # log RC and log theta1 are correlated (about 0.92 a posteriori): a dense mass matrix
    # gives about 5 times the ESS of the diagonal one (docs/rust-bus-engine.md, section 7).
    settings = {**run_settings(args), "dense_mass": True}
    print(
        f"\nsampling: {settings['num_chains']} chains x {settings['num_samples']} draws after "
        f"{settings['num_warmup']} warmup steps, dense mass matrix",
        flush=True,
    )
    start = time.perf_counter()
    idata = mcg.sample(model, **settings, progress_bar=False)
    attrs = idata.posterior.attrs
    print(
        f"sampling took {time.perf_counter() - start:.1f} s (compile "
        f"{attrs['warmup_compile_seconds'] + attrs['compile_seconds']:.1f} s, warmup "
        f"{attrs['warmup_seconds']:.1f} s, draws {attrs['sampling_seconds']:.1f} s), "
        f"{attrs['num_grad_evals_warmup'] + attrs['num_grad_evals']} gradient evaluations"
    )
    start = time.perf_counter()
    reference = mcg.diagnostics.quadrature_reference(
        model,
        num_points=sizes["quad_points"],
        num_draws=settings["num_samples"],
        num_chains=settings["num_chains"],
    )
    quad = reference.posterior.attrs
    print(
        f"quadrature reference: {quad['quadrature_num_points']} grid, "
        f"{quad['quadrature_num_evaluations']} log-density evaluations, acceptance "
        f"{quad['quadrature_acceptance']:.2f}, edge mass {quad['quadrature_edge_mass']:.1e}, "
        f"{time.perf_counter() - start:.1f} s"
    )

    print("\nArviZ summary of the custom-gradient run:")
    print(mcg.diagnostics.summary(idata).to_string())
    print_loo(idata)
    report = compare_and_report(idata, reference, args, settings, names=("NUTS", "quadrature"))
    plot_replacement(idata, data, args.out / "replacement.png")
    if grads is not None and not grads.passed:
        return 1
    return exit_code(report)


if __name__ == "__main__":
    raise SystemExit(main())
