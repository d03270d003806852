"""The profile solver (the default MAP for plain problems): U and the precisions maximised
exactly by alternation over several starts, then the kernel learned from the chosen one.

How the free precisions are bounded: where the kernel can fit the equation's rows to
rounding, the closed-form tau_e = N / |R|^2 climbs without end (the free-precision MAP is
unbounded), each step up costs more CG work, and U starts to fit rounding. A start's
sweeps are therefore held out by the check (``check_score``: the PDE residual at the cell
midpoints and the boundary mismatch): once it rises past CHECK_RISE x its lowest, the
start keeps the sweep of its lowest, its U and the precisions U was solved at (U is their
exact conditional maximum; the objective is minus the log joint there). ``tau_max`` caps
the climb where the check does not rise.
"""

import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from tqdm.auto import tqdm

from gpbayes.conditional import Conditional
from gpbayes.gauss_newton import exact_boundary_rows
from gpbayes.infer import learn
from gpbayes.infer.init import PLAIN_COMPONENTS, plain_lengths, plain_params, spectral_params
from gpbayes.infer.solvers import dense_gauss_newton, is_dense
from gpbayes.model import initial_params
from gpbayes.problem import Problem
from gpbayes.results import MapFit, check_score
from gpbayes.spec import Recipe

ROUNDING = 100  # a fall of the log joint up to ROUNDING x tolerance (relative) is rounding
CHECK_RANGE = 10  # starts whose check score is within this factor of the best compete
LOOSER = 100  # CG tolerance factor of the kernel learning's trial solves
CHECK_RISE = 2  # a start stops once its check score rises past this factor of its lowest
STEADY_MAX, STEADY_SPREAD = 0.9, 0.1  # a steady linear rate for Aitken's jump (``aitken``)


def boundary_start(problem: Problem, recipe: Recipe) -> float:
    """The starting boundary precision: ``recipe.tau_b_start`` where the U solve takes the
    boundary rows exactly (the dense solve; the Woodbury preconditioner up to
    ``gauss_newton.MAX_CAPACITANCE`` rows), else 1.

    The boundary data are exact, so tau_b's conditional optimum tends to the cap, and
    starting there keeps CG fast; where the preconditioner takes the boundary rows by
    their diagonal only (3-D grids beyond about 36^3) a tight start stalls CG
    (benchmarks/journal.md), so those grids start at 1.
    """
    exact = is_dense(problem) or exact_boundary_rows(problem)
    return recipe.tau_b_start if exact else 1.0


def dense_u_solver(gn_steps: int, joint: bool = True):
    """(conditional, U0) -> (U, {unknown site: value}, 0): U (and the unknowns, if any)
    maximising the log joint at the conditional's other hyperparameters, by dense QR in
    whitened coordinates z (the 0 stands for CG iterations). From z the fields need one
    triangular solve, not K^{-1}: exact to rounding in one step where K is
    ill-conditioned (benchmarks/journal.md). With unknowns (``joint``) the residual is not
    affine and each Gauss-Newton step is safeguarded (halved until it does not fall);
    ``joint=False`` holds them."""

    def solve(cond, u0):
        sites = list(cond.problem.unknown_sites.values()) if joint else []
        n = u0.size

        def split(x):
            return x[:n].reshape(u0.shape), dict(zip(sites, x[n:]))

        def residual(x):  # heavy (boundary) rows first, the priors last
            z, theta = split(x)
            c = cond.with_values(theta)
            return jnp.concatenate([c.data_residual(z, "z"), z.reshape(-1), c.prior_residual])

        x0 = jnp.concatenate([cond.whiten(u0).reshape(-1)]
                             + [jnp.reshape(cond.values[s], 1) for s in sites])
        x, _ = dense_gauss_newton(residual, x0, gn_steps, safeguard=bool(sites))
        z, theta = split(x)
        return cond.to_grid(z, "z"), theta, 0

    return solve


def cg_u_solver(gn_steps: int, tol: float, maxiter: int, joint: bool = True):
    """(conditional, U0) -> (U, {unknown site: value}, most CG iterations of a step): the
    same conditional MAP by Gauss-Newton steps, each solved matrix-free
    (``GaussNewton.step``, or ``joint_step`` with the unknowns unless ``joint=False``)."""

    def solve(cond, u):
        sites = list(cond.problem.unknown_sites.values()) if joint else []

        def step(_, carry):  # a loop, not unrolled: one compiled step
            u, theta, most = carry
            gn = cond.with_values(theta).gauss_newton(u)
            if sites:
                u, theta, k = gn.joint_step(tol, maxiter)
            else:
                u, k, _ = gn.step(tol, maxiter)
            return u, theta, jnp.maximum(most, k)

        theta = {s: jnp.asarray(cond.values[s], jnp.float64) for s in sites}
        _ = cond.bases  # the kernel's factors and bases, computed once outside the loop
        return jax.lax.fori_loop(0, gn_steps, step, (u, theta, jnp.zeros((), jnp.int32)))

    return solve


def tau_sites(problem: Problem) -> list[str]:
    """The free precisions' sites (a term with a noise sd in the model file has none)."""
    return [s for s in ("log_tau_e", "log_tau_b") if s in initial_params(problem)]


def as_params(theta: dict, u: Array, log_tau: dict) -> dict:
    """The site values of a profile state, as numpy arrays."""
    return {k: np.asarray(v) for k, v in {**theta, **log_tau, "U": u}.items()}


def closed_form_log_tau(cond: Conditional, u: Array, cap: float,
                        cap_e: float | Array | None = None) -> dict:
    """The conditional optima of the free precisions, log tau_e = log(N/|R|^2) and
    log tau_b = log(sum w / sum w B^2) (w the tempered rows' weights), capped (tau_e at
    ``cap_e`` where given)."""
    sites = tau_sites(cond.problem)
    out = {}
    if "log_tau_e" in sites:
        r = cond.residual(u)
        out["log_tau_e"] = jnp.minimum(jnp.log(r.size / jnp.sum(r**2)),
                                       cap if cap_e is None else cap_e)
    if "log_tau_b" in sites:
        t = cond.problem.tempered_rows
        b, w = cond.boundary_difference(u)[t], jnp.asarray(cond.problem.row_weights[t])
        out["log_tau_b"] = jnp.minimum(jnp.log(jnp.sum(w) / jnp.sum(w * b**2)), cap)
    return out


def candidates(problem: Problem, recipe: Recipe) -> list:
    """The starts, as (label, problem with the start's kernel, site values): the model
    file's family at each ``recipe.rho_scales`` factor (frequencies from the data's
    spectrum), then each plain family of ``recipe.families`` as one component at each
    of ``plain_lengths``, longest first (``fit_profile`` walks that ladder until the log
    joint falls), and as PLAIN_COMPONENTS components whose lengths span the box (a
    solution whose scales differ by axis: suite g05's pulse, 6e-5 from it, 2e-3 from
    the ladder)."""
    if recipe.init != "spectrum":
        return [(problem.family, problem, initial_params(problem))]
    out = [(f"{problem.family}, length-scale factor {s:g}", problem,
            spectral_params(problem, s)) for s in recipe.rho_scales]
    for family in recipe.families:
        if family != problem.family:
            variant = problem.with_kernel(family, 1)
            out += [(f"{family}, length {f:g}", variant, plain_params(variant, f))
                    for f in plain_lengths(problem)]
            spread = problem.with_kernel(family, PLAIN_COMPONENTS)
            out.append((f"{family}, {PLAIN_COMPONENTS} lengths", spread, plain_params(spread)))
    return out


def fit_profile(problem: Problem, recipe: Recipe, progress: bool | None = None,
                interrupt: Callable[[], str | None] | None = None) -> MapFit:
    """MAP over a few starts, the kernel learned from the best; returns a MapFit.

    For each start (``candidates``) the kernel is held and each sweep raises the log
    joint twice: the exact U solve, then the closed-form precisions (capped at
    ``recipe.tau_max``). Sweeps stop when the log joint changes by less than
    ``recipe.tolerance`` (relative) or falls at rounding level, or at the check's minimum
    (module docstring). With ``recipe.screen_sweeps`` the starts race by successive
    halving (``race``: that many sweeps each, the better half by check twice as many
    more, the last to its end; runs cut short are never chosen). Where the precisions
    converge linearly, a sweep starts from their Aitken limit (``aitken``), undone unless
    it raises the log joint. Among the starts whose
    check score (PDE residual at the cell midpoints, between collocation points, plus
    the boundary mismatch: ``check_score``, from the equation, the source and the
    boundary data only, never the exact solution) is within CHECK_RANGE of the best, the
    one with the largest log joint is chosen. The plain-family starts run only if the
    model file's family leaves a check score above ``recipe.refine_above`` (a residual
    its kernel leaves visible; a family's one-envelope ladder stops at the first start
    whose log joint falls), and one is kept only if its check score is below every
    start of the model file's family; so does the learning: if the chosen start's score is
    above it (and the grid has at most ``recipe.learn_max_points``),
    ``recipe.learn_sweeps`` sweeps from it begin with ``recipe.learn_iterations`` steps of
    kernel learning (``learn.update``:
    variable projection, the trial U solves at LOOSER x ``cg_tolerance``); the learned
    result is returned if it raised the log joint without worsening the check score.
    """
    start = time.perf_counter()
    init0 = initial_params(problem)
    # Gauss-Newton steps per solve: one where the residual is affine in U (and no unknown)
    linear = Conditional(problem, init0, recipe.jitter).is_linear()
    gn_u = 1 if linear else recipe.gauss_newton_steps
    gn = recipe.gauss_newton_steps if problem.unknowns else gn_u
    solve = (dense_u_solver(gn) if is_dense(problem) else
             cg_u_solver(gn, recipe.cg_tolerance, recipe.cg_max_iterations))
    # the learning's trial solves hold the unknowns and need less: each sweep ends with a
    # solve at cg_tolerance
    trial = (dense_u_solver(gn_u, joint=False) if is_dense(problem) else
             cg_u_solver(gn_u, recipe.cg_tolerance * LOOSER, recipe.cg_max_iterations,
                         joint=False))
    cap = float(np.log(recipe.tau_max))
    log_tau_b0 = float(np.log(min(boundary_start(problem, recipe), recipe.tau_max)))
    unknown_sites = problem.unknown_sites.values()
    sweeps = {}

    def make_sweep(prob, learning):
        @jax.jit
        def sweep(theta, u, log_tau, cap_e):
            if learning:  # kernel and precisions by variable projection
                def solve_u(values):  # the unknowns held: U only
                    return trial(Conditional(prob, values, recipe.jitter), u)[0]

                theta, log_tau, u = learn.update(prob, theta, log_tau, solve_u,
                                                 recipe.jitter, cap, recipe.learn_iterations)
            cond = Conditional(prob, {**theta, **log_tau}, recipe.jitter)
            u, unknowns, k = solve(cond, u)
            theta, cond = {**theta, **unknowns}, cond.with_values(unknowns)
            held = -cond.log_joint(u)  # at the precisions U was solved at
            log_tau = closed_form_log_tau(cond, u, cap, cap_e)
            objective = -cond.with_values(log_tau).log_joint(u)  # same factors
            return theta, u, log_tau, objective, (k, held)
        return sweep

    carry = {}  # id(fit) -> (lowest check and its state, last objective) of a budgeted run

    def run_start(label, prob, init, learning=False, cap_e=cap, fresh=True, budget=None,
                  resume=None):
        key = (prob.family, prob.components, learning)
        if key not in sweeps:
            sweeps[key] = make_sweep(prob, learning)
        sweep = sweeps[key]
        # theta: the kernel and the unknowns (learned together in the learning run)
        theta = {k: init[k] for k in learn.kernel_sites(prob) + list(unknown_sites)}
        if learning:
            theta = learn.clip(prob, theta)
        u = init["U"]
        # a (fresh) start's tau_b begins at boundary_start; a run from a fit continues its
        log_tau = {k: init[k] for k in tau_sites(prob)}
        if "log_tau_b" in log_tau and fresh:
            log_tau["log_tau_b"] = log_tau_b0
        # strong float64 (a weakly typed start would compile the sweep a second time)
        theta, log_tau, u = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), (theta, log_tau, u))
        budget = budget or (recipe.learn_sweeps if learning else recipe.sweeps)
        reason, objective = f"sweep budget ({budget}) reached", None
        trail, before_jump = [], None  # accepted precisions; the state a jump left
        caps = {"log_tau_e": min(cap, cap_e), "log_tau_b": cap}
        # the smallest check score so far and its state, and the last objective: carried
        # over from the run this one continues (``resume``, a fit of the race)
        lowest, previous = carry.get(id(resume), ((np.inf, None), np.inf))
        for i in range(budget):
            solved_at = log_tau
            new_theta, new_u, new_tau, obj, (k, held) = sweep(theta, u, log_tau,
                                                              jnp.float64(cap_e))
            obj = float(obj)
            jumped, before_jump = before_jump, None
            if jumped is not None and not (obj < previous and int(k) < recipe.cg_max_iterations):
                log_tau, trail = jumped, []  # the jump did not raise the log joint: undo it
                continue
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
            theta, u, log_tau, objective = new_theta, new_u, new_tau, obj
            history.append({"step": len(history) + 1, "start": label, "objective": obj,
                            "time_s": time.perf_counter() - start, "cg_iterations": int(k),
                            **{n: float(v) for n, v in new_tau.items()}})  # precisions
            if not learning:  # the check holds out the precisions' climb (module docstring)
                state = (theta, u, solved_at, float(held))
                score = check_score(MapFit(prob, as_params(*state[:3]), recipe, 0, 0.0, "",
                                           False, objective=state[3]))
                if score > CHECK_RISE * lowest[0]:
                    theta, u, log_tau, objective = lowest[1]
                    reason = (f"check minimum (the check rose {CHECK_RISE}x at sweep {i + 1}; "
                              "kept the sweep of its lowest, its U and the precisions it was "
                              "solved at)")
                    break
                lowest = min(lowest, (score, state), key=lambda x: x[0])
            if abs(previous - obj) <= recipe.tolerance * abs(obj):
                reason = f"log joint converged (relative change <= {recipe.tolerance:g})"
                break
            previous = obj
            trail.append({n: float(v) for n, v in log_tau.items()})
            jump = aitken(trail, caps) if not learning and i + 1 < budget else {}
            if jump:  # the next sweep starts from the extrapolated precisions
                before_jump, trail = log_tau, []
                log_tau = {**log_tau, **{n: jnp.float64(v) for n, v in jump.items()}}
        fit = MapFit(problem=prob, params=as_params(theta, u, log_tau), recipe=recipe,
                     steps=0, wall_time_s=0.0, stop_reason=reason,
                     converged=reason.startswith(("log joint converged", "check minimum")),
                     history=history, objective=objective, kernel_learned=learning)
        carry[id(fit)] = (lowest, previous)
        return fit

    todo = candidates(problem, recipe)
    starts, history, stopped = [], [], None  # starts: (check score, fit, label)
    show = sys.stderr.isatty() if progress is None else progress
    with tqdm(total=len(todo), disable=not show, desc=problem.name, unit="start",
              file=sys.stderr) as bar:

        def run(label, prob, init, **kwargs):  # one start or a run from the chosen fit
            fit = run_start(label, prob, init, **kwargs)
            score = check_score(fit) if fit.objective is not None else np.inf
            starts.append((score, fit, label))
            bar.update(1)
            bar.set_postfix(check=f"{score:.3g}")
            return fit, score

        def run_from(fit, label, **kwargs):  # one more run, from the chosen fit
            bar.total += 1
            return run(label, fit.problem, fit.params, fresh=False, **kwargs)

        cut = set()  # ids of the fits the race cut short: never chosen

        def leg(run_result, budget):  # (check, fit) of a race's run; cut short if budgeted
            fit, score = run_result
            if budget and fit.stop_reason.startswith("sweep budget"):
                cut.add(id(fit))
            return score, fit

        def race(group):  # successive halving over the starts of ``group``
            budget = recipe.screen_sweeps
            pool = [(*leg(run(lb, prob, init, budget=budget), budget), lb)
                    for lb, prob, init in group]
            while not (interrupt and interrupt()):
                pool = sorted(pool, key=lambda x: x[0])[:max(1, len(pool) // 2)]
                last, budget = len(pool) == 1, 2 * budget
                for i, (_, fit, lb) in enumerate(pool):
                    if id(fit) in cut:  # unfinished: runs on (the last to its end)
                        more = None if last else budget
                        pool[i] = (*leg(run_from(fit, lb, budget=more, resume=fit), more), lb)
                if last:
                    return

        def resolved():  # a finished start's check is at or below refine_above
            done = [s for s, f, _ in starts if id(f) not in cut]
            return bool(done) and min(done) <= recipe.refine_above

        own = [c for c in todo if c[1] is problem]
        racing = bool(recipe.screen_sweeps) and len(todo) > 1
        if racing:  # the model file's family's starts, then (unresolved) the plain ones
            race(own)
            if len(own) < len(todo) and not resolved():
                race(todo[len(own):])
        ladder = {}  # (family, components): the last start's log joint, None once it fell
        for label, prob, init in [] if racing else todo:
            stopped = interrupt() if interrupt else None
            if stopped and starts:
                break
            rung = (prob.family, prob.components)
            if prob is not problem and (resolved() or ladder.get(rung, 0) is None):
                bar.update(1)  # resolved by the model file's family, or the ladder turned
                continue
            fit, _ = run(label, prob, init)
            if prob is not problem:  # shorter lengths only while the log joint rises
                last = ladder.get(rung, np.inf)
                rose = fit.objective is not None and fit.objective < last
                ladder[rung] = fit.objective if rose else None
        finished = [x for x in starts if id(x[1]) not in cut] or starts
        best, chosen, passed, held = choose(finished, problem)
        tried = len(finished)
        stopped = interrupt() if interrupt else None
        if (recipe.learn_iterations and best.objective is not None and not stopped
                and held > recipe.refine_above and problem.size <= recipe.learn_max_points):
            label = f"{chosen}, kernel learned"
            fit, score = run_from(best, label, learning=True)
            if fit.objective is not None and fit.objective <= best.objective and score <= held:
                best, chosen = fit, label
        cap_e = held_out_cap(best) if recipe.calibrate_tau_e and not stopped else None
        if cap_e is not None and best.params["log_tau_e"] > cap_e:
            label = f"{chosen}, tau_e held out"
            fit, _ = run_from(best, label, cap_e=cap_e)
            fit.kernel_learned = best.kernel_learned
            if fit.objective is not None:
                best, chosen = fit, label
    best.steps = len(history)
    best.wall_time_s = time.perf_counter() - start
    best.candidates = [{"start": label, "check": float(score), "objective": fit.objective,
                        "chosen": fit is best, "cut": id(fit) in cut}
                       for score, fit, label in starts]
    if stopped and len(starts) < len(todo):
        best.stop_reason = (f"interrupted ({stopped}) after {len(history)} sweeps; kept "
                            "the best start so far (rerun to finish)")
    elif len(starts) > 1:
        best.stop_reason += (f"; kept {chosen} (the start with the largest log joint of the "
                             f"{passed} of {tried} finished starts that pass the check"
                             + (", its kernel learned)" if best.kernel_learned else ")"))
    return best


def aitken(trail: list[dict], caps: dict) -> dict:
    """{site: Aitken's limit of its log precision, capped} for the sites whose last four
    values in ``trail`` (one dict per accepted sweep) converge linearly at a steady rate:
    both ratios of successive changes in (0, STEADY_MAX) and within STEADY_SPREAD of each
    other. On stiff problems the U / precision alternation is a fixed-point iteration on
    log tau that converges linearly, at about 0.2 per sweep; jumping to its limit saves
    the tail of sweeps (benchmarks/journal.md, "the τ_e alternation converges linearly")."""
    if len(trail) < 4:
        return {}
    x0, x1, x2, x3 = trail[-4:]
    out = {}
    for name in x3:
        d1, d2, d3 = x1[name] - x0[name], x2[name] - x1[name], x3[name] - x2[name]
        if d1 == 0 or d2 == 0:
            continue
        r1, r2 = d2 / d1, d3 / d2
        if 0 < r2 < STEADY_MAX and abs(r2 - r1) <= STEADY_SPREAD * r2:
            limit = min(x3[name] + d3 * r2 / (1 - r2), caps[name])
            if limit != x3[name]:
                out[name] = limit
    return out


def held_out_cap(fit: MapFit) -> float | None:
    """log of n / (N mean square PDE residual at the cell midpoints), where the model has
    data for the equation to compete with (observations or conditions with a noise sd)
    and a free tau_e; else None. n / N is the share of those residuals that count as
    independent (``MapFit.midpoint_independent``: AR(1) along each axis).

    The free tau_e's optimum, N / |R|^2 over the collocation rows, reads the kernel's
    discretisation error there as independent noise (tiny: the rows are fitted); at
    points the fit never saw the residual is the honest size of the equation's error,
    and a smooth residual carries the information of fewer values than it has. Held at
    this cap, the data are not overruled by an equation believed too exactly
    (benchmarks/journal.md, "Held-out equation precision").
    """
    p = fit.problem
    data = p.observations is not None or not p.tempered_rows.all()
    if not data or "log_tau_e" not in fit.params or fit.objective is None:
        return None
    rms, share = fit.midpoint_rms, fit.midpoint_independent
    ok = np.isfinite(rms) and rms > 0 and np.isfinite(share) and share > 0
    return float(np.log(share) - 2 * np.log(rms)) if ok else None


def choose(starts: list, problem: Problem) -> tuple:
    """The start with the largest log joint among those whose check score is within
    CHECK_RANGE of the smallest (a start far behind on the check, e.g. one stuck with a
    loose boundary, is a poor local optimum whatever its log joint). A start of another
    family than ``problem``'s is kept only if its check score is below every start of
    the model file's family (else the choice is made among those). Returns (fit, its
    label, how many passed, its check score)."""
    floor = min(score for score, _, _ in starts)
    passed = [(fit.objective, i) for i, (score, fit, _) in enumerate(starts)
              if fit.objective is not None and score <= CHECK_RANGE * floor]
    if not passed:  # no finite start: the first, with its failure reason
        return starts[0][1], starts[0][2], 0, starts[0][0]
    _, i = min(passed)
    score, fit, label = starts[i]
    own = [x for x in starts if x[1].problem is problem]
    if fit.problem is not problem and own and min(s for s, _, _ in own) < score:
        return choose(own, problem)
    return fit, label, len(passed), score
