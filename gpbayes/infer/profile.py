"""The profile solver: the conditional MAP of U and the precisions at a fixed kernel.

For fixed kernel parameters and precisions the model's log joint is, in whitened
coordinates U = L z, a least-squares problem in z:

    min_z  1/2 |z|^2 + tau_e/2 |R(L z)|^2 + w_b tau_b/2 |B L z - g|^2,

solved by Gauss-Newton (one step when the PDE is linear): a dense QR least squares on
1-D grids up to MAX_DENSE points, else matrix-free preconditioned CG (``pcg``). The
precisions then take their closed-form conditional optima; sweeps alternate the two.
The kernel parameters stay at the spectral start (``init``); several starting length
scales are tried and, among those that pass a check (``choose``), the one with the
largest log joint is kept.
"""

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular
from tqdm.auto import tqdm

from gpbayes.infer import pcg
from gpbayes.model import axis_factors, boundary_difference, equation_residual, log_density

MAX_DENSE = 4000  # grid points; the dense solve is O(N^3)
ROUNDING = 100  # a fall of the log joint up to ROUNDING x tolerance (relative) is rounding
CHECK_RANGE = 100  # starts whose check score is within this factor of the best compete


def is_dense(problem):
    """1-D grids up to MAX_DENSE points are solved densely (QR), the rest by PCG."""
    return problem.ndim == 1 and problem.size <= MAX_DENSE


def is_linear(problem):
    """True when the residual is affine in U (checked on random fields)."""
    rng = jax.random.PRNGKey(0)
    names = list(problem.derivatives)
    shape = problem.grid
    a, b = (dict(zip(names, jax.random.normal(k, (len(names),) + shape)))
            for k in jax.random.split(rng))
    env = dict(problem.constants)
    env.update(problem.coordinates())

    def ev(fields):
        return jnp.broadcast_to(problem.equation({**env, **fields}), shape)

    mix = {n: 0.3 * a[n] + 0.7 * b[n] for n in names}
    lhs = ev(mix)
    rhs = 0.3 * ev(a) + 0.7 * ev(b)
    return bool(jnp.allclose(lhs, rhs, rtol=1e-9, atol=1e-9 * float(jnp.max(jnp.abs(rhs)) + 1)))


def boundary_start(problem, recipe):
    """The starting boundary precision: ``recipe.tau_b_start`` where the U solve takes the
    boundary rows exactly (the dense solve; the Woodbury preconditioner in 2-D), else 1.

    The boundary data are exact, so tau_b's conditional optimum tends to the cap, and
    starting there keeps CG fast in 2-D (allencahn2d-multiscale at 400^2: ~500 CG
    iterations per solve from the start; from tau_b = 1 its solves ran to the 20000 cap).
    Elsewhere (3-D; 1-D beyond MAX_DENSE) the preconditioner takes the boundary rows by
    their diagonal only, and a tight start stalls CG (measured on a 12^3 Poisson
    problem: error 0.74 against 2e-3), so those grids start at 1.
    """
    exact = is_dense(problem) or pcg.exact_boundary_rows(problem)
    return recipe.tau_b_start if exact else 1.0


def make_u_solver(problem, jitter, gn_steps):
    """(values with log precisions, U0) -> (U, 0): U minimising the log joint for fixed
    kernel parameters and precisions, by dense QR (the 0 stands for CG iterations)."""
    n = problem.size
    weight = problem.boundary_weight

    def solve(values, u0):
        tau_e, tau_b = jnp.exp(values["log_tau_e"]), jnp.exp(values["log_tau_b"])
        trils = axis_factors(problem, values, jitter)
        lower = trils[0]

        def residual(z):  # in whitened coordinates: see model.derivative_fields
            return equation_residual(problem, values, trils, z, whitened=True)

        def boundary(z):
            return boundary_difference(problem, lower @ z)

        se, sb = jnp.sqrt(tau_e), jnp.sqrt(weight * tau_b)
        z = solve_triangular(lower, u0, lower=True)
        for _ in range(gn_steps):
            jac, bjac = jax.jacfwd(residual)(z), jax.jacfwd(boundary)(z)
            # heavy rows first: Householder QR is accurate for stiff weighted problems then
            m = jnp.concatenate([sb * bjac, se * jac, jnp.eye(n)])
            rhs = jnp.concatenate([sb * (bjac @ z - boundary(z)), se * (jac @ z - residual(z)),
                                   jnp.zeros(n)])
            q, r = jnp.linalg.qr(m)
            z = solve_triangular(r, q.T @ rhs, lower=False)
        return lower @ z, 0

    return solve


def make_cg_solver(problem, jitter, gn_steps, tol, maxiter):
    """(values with log precisions, U0) -> (U, most CG iterations of a step): the same
    conditional MAP by Gauss-Newton steps, each solved matrix-free (``pcg``)."""

    def solve(values, u):
        trils = axis_factors(problem, values, jitter)
        most = 0
        for _ in range(gn_steps):
            u, k, _ = pcg.newton_step(problem, values, trils, u, tol, maxiter)
            most = jnp.maximum(most, k)
        return u, most

    return solve


def closed_form_log_tau(problem, values, u, jitter, cap):
    """The conditional optima log tau_e = log(N/|R|^2), log tau_b = log(n_b/|B|^2), capped."""
    trils = axis_factors(problem, values, jitter)
    r = equation_residual(problem, values, trils, u)
    b = boundary_difference(problem, u)
    out = {"log_tau_e": jnp.minimum(jnp.log(r.size / jnp.sum(r**2)), cap)}
    out["log_tau_b"] = (jnp.minimum(jnp.log(b.size / jnp.sum(b**2)), cap) if b.size
                        else jnp.asarray(cap))
    return out


def fit_profile(problem, recipe, progress=None, interrupt=None):
    """Conditional MAP by alternation, over a few starting length scales; returns a MapFit.

    For each length-scale factor in ``recipe.rho_scales`` the kernel parameters are set
    from the data's spectrum (``gpbayes.infer.init``) and held there; U and the precisions
    are then maximised by alternating the exact U solve with the closed-form precisions
    (each sweep raises the log joint) until the log joint changes by less than
    ``recipe.tolerance`` (relative) or falls at rounding level. Among the candidates
    whose check score (PDE residual at the cell midpoints, between collocation points,
    plus the boundary mismatch: ``check_score``, from the equation, the source and the
    boundary data only, never the exact solution) is within CHECK_RANGE of the best, the
    one with the largest log joint is kept.
    """
    from gpbayes.infer.init import spectral_params
    from gpbayes.model import initial_params
    from gpbayes.results import MapFit

    start = time.perf_counter()
    gn = 1 if is_linear(problem) else recipe.gauss_newton_steps
    solve = (make_u_solver(problem, recipe.jitter, gn) if is_dense(problem) else
             make_cg_solver(problem, recipe.jitter, gn, recipe.cg_tolerance,
                            recipe.cg_max_iterations))
    cap = float(np.log(recipe.tau_max))
    log_tau_b0 = float(np.log(min(boundary_start(problem, recipe), recipe.tau_max)))
    kernel_keys = [k for k in initial_params(problem) if k not in ("U", "log_tau_e", "log_tau_b")]

    @jax.jit
    def sweep(theta, u, log_tau):
        u, k = solve({**theta, **log_tau}, u)
        log_tau = closed_form_log_tau(problem, theta, u, recipe.jitter, cap)
        objective = -log_density(problem, {**theta, **log_tau, "U": u}, recipe.jitter)[0]
        return u, log_tau, objective, k

    def run_start(scale, history):
        init = spectral_params(problem, scale) if scale else initial_params(problem)
        theta = {k: init[k] for k in kernel_keys}
        u = init["U"]
        log_tau = {"log_tau_e": init["log_tau_e"], "log_tau_b": jnp.asarray(log_tau_b0)}
        previous, reason, objective = np.inf, f"sweep budget ({recipe.sweeps}) reached", None
        for i in range(recipe.sweeps):
            new_u, new_tau, obj, k = sweep(theta, u, log_tau)
            obj = float(obj)
            if not np.isfinite(obj):
                reason = (f"non-finite objective at sweep {i + 1}; kept the last finite state. "
                          "Try a larger jitter or a smaller tau_max.")
                break
            if int(k) >= recipe.cg_max_iterations and objective is not None:
                reason = (f"CG reached cg_max_iterations at sweep {i + 1}; kept the last "
                          "converged state")
                break
            # each sweep raises the log joint in exact arithmetic: a small fall is rounding
            if previous <= obj <= previous + ROUNDING * recipe.tolerance * abs(obj):
                reason = (f"log joint converged (stopped rising at sweep {i + 1}: rounding "
                          "level; kept the sweep before)")
                break
            u, log_tau, objective = new_u, new_tau, obj
            history.append({"step": len(history) + 1, "rho_scale": scale, "objective": obj,
                            "time_s": time.perf_counter() - start, "cg_iterations": int(k)})
            if abs(previous - obj) <= recipe.tolerance * abs(obj):
                reason = f"log joint converged (relative change <= {recipe.tolerance:g})"
                break
            previous = obj
        params = {k: np.asarray(v) for k, v in {**theta, **log_tau, "U": u}.items()}
        return MapFit(problem=problem, params=params, recipe=recipe, steps=0, wall_time_s=0.0,
                      stop_reason=reason, converged=reason.startswith("log joint converged"),
                      history=history, objective=objective, kernel_learned=False)

    scales = recipe.rho_scales if recipe.init == "spectrum" else [None]
    starts, history, stopped = [], [], None  # starts: (check score, fit, scale)
    show = sys.stderr.isatty() if progress is None else progress
    with tqdm(total=len(scales), disable=not show, desc=problem.name, unit="start",
              file=sys.stderr) as bar:
        for scale in scales:
            stopped = interrupt() if interrupt else None
            if stopped and starts:
                break
            fit = run_start(scale, history)
            score = check_score(fit) if fit.objective is not None else np.inf
            starts.append((score, fit, scale))
            bar.update(1)
            bar.set_postfix(check=f"{score:.3g}")
    best, chosen, passed = choose(starts)
    best.steps = len(history)
    best.wall_time_s = time.perf_counter() - start
    if stopped and len(starts) < len(scales):
        best.stop_reason = (f"interrupted ({stopped}) after {len(history)} sweeps; kept "
                            "the best start so far (rerun to finish)")
    elif len(scales) > 1:
        best.stop_reason += (f"; kept the start with length-scale factor {chosen} (largest "
                             f"log joint of the {passed} of {len(scales)} that pass the check)")
    return best


def choose(starts):
    """The start with the largest log joint among those whose check score is within
    CHECK_RANGE of the smallest (a start far behind on the check, e.g. one stuck with a
    loose boundary, is a poor local optimum whatever its log joint). Returns (fit, its
    length-scale factor, how many passed)."""
    floor = min(score for score, _, _ in starts)
    passed = [(fit.objective, i) for i, (score, fit, _) in enumerate(starts)
              if fit.objective is not None and score <= CHECK_RANGE * floor]
    if not passed:  # no finite start: the first, with its failure reason
        return starts[0][1], starts[0][2], 0
    _, i = min(passed)
    return starts[i][1], starts[i][2], len(passed)


def check_score(fit):
    """Relative PDE residual at the cell midpoints plus relative boundary rms.

    Uses the equation, the source and the boundary data only (never the exact solution).
    """
    g = np.asarray(fit.problem.boundary_values)
    if not g.size:
        return fit.midpoint_residual
    # relative to the solution's size: boundary data that vanish (u = 0 on the faces)
    # must not turn rounding-level mismatches into a large score
    size = max(np.sqrt(np.mean(g**2)), np.sqrt(np.mean(np.asarray(fit.params["U"])**2)), 1e-300)
    return fit.midpoint_residual + fit.boundary_rms / float(size)
