"""The profile solver (the default MAP for plain problems): U and the precisions maximised
exactly by alternation over several starts, then the kernel learned from the chosen one.

How the free precisions are bounded: where the kernel can fit the equation's rows to
rounding, the closed-form tau_e = N / |R|^2 climbs without end (the free-precision MAP is
unbounded), each step up costs more CG work, and U starts to fit rounding. A start's
sweeps are therefore held out by the check (``check_score``: the PDE residual at the cell
midpoints and the boundary mismatch): once it rises past CHECK_RISE x its lowest, the
start keeps the sweep of its lowest, its U and the precisions U was solved at (U is their
exact conditional maximum; the objective is minus the log joint there); on the CG path,
once it has levelled off (fallen by less than CHECK_FALL over two sweeps), the log joint
converges at LEVELLED x the tolerance (the dense path's sweeps cost milliseconds: there
the start converges fully, and the kernel learning starts from it). ``tau_max`` caps
the climb where the check does not rise.
"""

import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from tqdm.auto import tqdm

from gpbayes import threads
from gpbayes.conditional import Conditional, is_linear, unknown_values
from gpbayes.coordinates import Whitened
from gpbayes.gauss_newton import Rotated, exact_boundary_rows, rotated_basis
from gpbayes.infer import learn
from gpbayes.infer.init import PLAIN_COMPONENTS, plain_lengths, plain_params, spectral_params
from gpbayes.infer.policy import (
    CHECK_FALL,
    CHECK_RISE,
    LEVELLED,
    LOOSER,
    RACE_TIE,
    ROUNDING,
    aitken,
    cg_budget,
    choose,
    diagonal_rows,
    held_out_cap,
    learn_sweeps,
)
from gpbayes.infer.solvers import dense_gauss_newton, is_dense, least_squares
from gpbayes.model import initial_params
from gpbayes.problem import Problem
from gpbayes.results import MapFit, check_score, check_values, latent
from gpbayes.spec import Recipe
from gpbayes.stops import CONVERGED, Stop


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
    """(conditional, U0, system) -> (U, z, {unknown site: value}, 0): U (and the unknowns,
    if any) maximising the log joint at the conditional's other hyperparameters, by dense
    QR in whitened coordinates z (the 0 stands for CG iterations). From z the fields need
    one triangular solve, not K^{-1}: exact to rounding in one step where K is
    ill-conditioned (benchmarks/journal.md). With unknowns (``joint``) the residual is not
    affine and each Gauss-Newton step is safeguarded (halved until it does not fall);
    ``joint=False`` holds them. ``system`` (``linear_system``'s, of a linear problem
    without unknowns, formed at the same kernel) saves forming the Jacobian again: the
    precisions only scale its rows."""

    def solve(cond, u0, system=None):
        if system is not None:  # (J, d, scales): U's linear system at other precisions
            z = least_squares(*scaled_system(cond, system))[0].reshape(u0.shape)
            return cond.to_grid(Whitened(z)), z, {}, 0
        sites = list(cond.problem.unknown_sites.values()) if joint else []
        n = u0.size

        def split(x):
            return x[:n].reshape(u0.shape), dict(zip(sites, x[n:]))

        def residual(x):  # heavy (boundary) rows first, the priors last
            z, theta = split(x)
            c = cond.with_values(theta)
            return jnp.concatenate([c.data_residual(Whitened(z)), z.reshape(-1), c.prior_residual])

        x0 = jnp.concatenate([cond.whiten(u0).reshape(-1)]
                             + [jnp.reshape(cond.values[s], 1) for s in sites])
        x, _ = dense_gauss_newton(residual, x0, gn_steps, safeguard=bool(sites))
        z, theta = split(x)
        return cond.to_grid(Whitened(z)), z, theta, 0

    return solve


def cg_u_solver(gn_steps: int, tol: float, maxiter: int, joint: bool = True):
    """(conditional, U0) -> (U, z, {unknown site: value}, most CG iterations of a step):
    the same conditional MAP by Gauss-Newton steps, each solved matrix-free
    (``GaussNewton.step``, or ``joint_step`` with the unknowns unless ``joint=False``)."""

    def solve(cond, u):
        sites = list(cond.problem.unknown_sites.values()) if joint else []

        def step(_, carry):  # a loop, not unrolled: one compiled step
            u, _, theta, most = carry
            gn = cond.with_values(theta).gauss_newton(u, basis)
            if sites:
                s, theta, k = gn.joint_step(tol, maxiter)
            else:
                s, k, _ = gn.step(tol, maxiter)
            return gn.to_grid(s), s, theta, jnp.maximum(most, k)

        theta = {s: jnp.asarray(cond.values[s], jnp.float64) for s in sites}
        basis = rotated_basis(cond)  # computed once, outside the loop
        u, s, theta, most = jax.lax.fori_loop(
            0, gn_steps, step, (u, jnp.zeros_like(u), theta, jnp.zeros((), jnp.int32)))
        return u, Rotated(s, basis).whitened(cond), theta, most  # the unknowns leave the basis

    return solve


def tau_sites(problem: Problem) -> list[str]:
    """The free precisions' sites (a term with a noise sd in the model file has none)."""
    return [s for s in ("log_tau_e", "log_tau_b") if s in initial_params(problem)]


def as_params(theta: dict, u: Array, log_tau: dict) -> dict:
    """The site values of a profile state, as numpy arrays."""
    return {k: np.asarray(v) for k, v in {**theta, **log_tau, "U": u}.items()}


def scaled_system(cond: Conditional, system: tuple) -> tuple[Array, Array]:
    """(J, d) of U's whitened linear system (``make_system``'s (J, d, the row scales it
    was formed at)) at ``cond``'s precisions: its data rows scaled by the ratio of the
    ``row_scales``."""
    j, d, scales = system
    n = j.shape[1]
    ratio = jnp.concatenate([cond.row_scales / scales, jnp.ones(n)])
    return j * ratio[:, None], d * ratio


def closed_form_log_tau(cond: Conditional, boundary: Array, residual: Array, cap: float,
                        cap_e: float | Array | None = None) -> dict:
    """The conditional optima of the free precisions given U's boundary differences and
    equation residual R: log tau_e = log(N/|R|^2) and log tau_b = log(sum w / sum w B^2)
    (w the tempered rows' weights), capped (tau_e at ``cap_e`` where given)."""
    sites = tau_sites(cond.problem)
    out = {}
    if "log_tau_e" in sites:
        out["log_tau_e"] = jnp.minimum(jnp.log(residual.size / jnp.sum(residual**2)),
                                       cap if cap_e is None else cap_e)
    if "log_tau_b" in sites:
        t = cond.problem.tempered_rows
        b, w = boundary[t], jnp.asarray(cond.problem.row_weights[t])
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
    ``recipe.tau_max``); a start stops by the rules of ``policy`` (the log joint
    converged or fell at rounding level, or the check's minimum: module docstring).
    With ``recipe.screen_sweeps`` the starts race by successive halving (``Starts.race``),
    else they run in turn (``Starts.ladder``). The finished start kept is ``policy.choose``'s;
    if its check score is above ``recipe.refine_above`` (a residual its kernel leaves
    visible), the plain-family starts run (one is kept only if its check score is below
    every start of the model file's family) and, on grids of at most
    ``recipe.learn_max_points`` whose boundary rows are not by their diagonal
    (``policy.diagonal_rows``), ``policy.learn_sweeps`` sweeps from it begin with
    ``recipe.learn_iterations`` steps of kernel learning (``learn.update``: variable
    projection); the learned result is kept if it raised the log joint without worsening
    the check score.
    """
    start = time.perf_counter()
    todo = candidates(problem, recipe)
    show = sys.stderr.isatty() if progress is None else progress
    with tqdm(total=len(todo), disable=not show, desc=problem.name, unit="start",
              file=sys.stderr) as bar:
        runs = Starts(problem, recipe, bar, start)
        own = [c for c in todo if c[1] is problem]
        if recipe.screen_sweeps and len(todo) > 1:  # the model file's family, then plain
            runs.race(own, recipe.screen_sweeps, interrupt)
            if len(own) < len(todo) and not runs.resolved():
                plain = recipe.plain_screen_sweeps if runs.dense else recipe.screen_sweeps
                runs.race(todo[len(own):], plain, interrupt)
        else:
            runs.ladder(todo, interrupt)
        finished = runs.finished() or runs.starts
        best, chosen, passed, held = choose(finished, problem)
        stopped = interrupt() if interrupt else None
        best, chosen, why = runs.refine(best, chosen, held, stopped)
    best.steps = len(runs.history)
    best.wall_time_s = time.perf_counter() - start
    best.candidates = [{"start": label, "check": float(score), "objective": fit.objective,
                        "chosen": fit is best, "cut": id(fit) in runs.cut}
                       for score, fit, label in runs.starts]
    best.kernel_why = why
    best.start = {"chosen": chosen, "passed": passed, "finished": len(finished)}
    if stopped and len(runs.starts) < len(todo):
        best.stop, best.stop_stats = Stop.INTERRUPTED, {"signal": stopped,
                                                        "sweeps": len(runs.history)}
    return best


class Starts:
    """The runs of one problem's starts: the compiled sweeps (one per kernel family,
    learning mode and jitter) and linear systems (``system_for``), a start's sweep loop
    (``run_start``), the history of every sweep,
    the finished runs (``starts``: (check score, fit, label)) and those the race cut
    short (``cut``: never chosen). The runs of one round of the race are independent
    and run in ``workers`` threads at once (``threads.start_workers``); their sweeps
    enter the history in the round's order, so the outcome does not depend on timing."""

    def __init__(self, problem: Problem, recipe: Recipe, bar, start: float):
        self.problem, self.recipe, self.bar, self.start = problem, recipe, bar, start
        # Gauss-Newton steps per solve: one where the residual is affine in U (no unknown)
        linear = is_linear(problem, unknown_values(problem, initial_params(problem)))
        gn_u = 1 if linear else recipe.gauss_newton_steps
        gn = recipe.gauss_newton_steps if problem.unknowns else gn_u
        self.dense = dense = is_dense(problem)
        # the dense solves of a linear problem without unknowns reuse the Jacobian within a run
        self.reuse = dense and linear and not problem.unknowns
        self.maxiter = maxiter = cg_budget(problem, recipe)
        self.solve = (dense_u_solver(gn) if dense else
                      cg_u_solver(gn, recipe.cg_tolerance, maxiter))
        # the learning's trial solves hold the unknowns and need less: each sweep ends
        # with a solve at cg_tolerance
        self.trial = (dense_u_solver(gn_u, joint=False) if dense else
                      cg_u_solver(gn_u, recipe.cg_tolerance * LOOSER, maxiter, joint=False))
        self.cap = float(np.log(recipe.tau_max))
        self.log_tau_b0 = float(np.log(min(boundary_start(problem, recipe), recipe.tau_max)))
        self.sweeps, self.history, self.starts, self.cut = {}, [], [], set()
        self.carry = {}  # id(fit) -> a run's lowest check and its state, last objective,
        # checks and precisions' trail (a run the race continues goes on as one run)
        self.workers = threads.start_workers()
        self.lock = threading.Lock()  # one compiled sweep per key, whichever thread asks

    def recipe_for(self, prob: Problem) -> Recipe:
        """The recipe of ``prob``'s runs: a plain family's on the dense path at
        ``recipe.plain_jitter`` (smooth solutions are jitter-limited there)."""
        if self.dense and prob is not self.problem:
            return replace(self.recipe, jitter=self.recipe.plain_jitter)
        return self.recipe

    def sweep_of(self, prob: Problem, learning: bool):
        """The compiled sweep of ``prob``'s kernel family (``make_sweep``): (theta, U,
        log tau, cap_e, system) -> (theta, U, log tau, objective, (CG iterations, objective
        where U was solved, z, residual checks))."""
        recipe = self.recipe_for(prob)
        key = (prob.family, prob.components, learning, recipe.jitter)
        with self.lock:
            if key not in self.sweeps:
                self.sweeps[key] = make_sweep(prob, recipe, self.solve, self.trial, learning,
                                              self.cap)
            return self.sweeps[key]

    def system_for(self, prob: Problem, learning: bool, theta: dict, u: Array,
                   log_tau: dict) -> tuple | None:
        """U's linear system at a run's start (``make_system``'s: J, d, the row scales it
        was formed at) where the run's dense solves reuse it (the kernel held: no learning;
        a linear problem without unknowns), else None."""
        if not self.reuse or learning:
            return None
        recipe = self.recipe_for(prob)
        key = (prob.family, prob.components, "system", recipe.jitter)
        with self.lock:
            if key not in self.sweeps:
                self.sweeps[key] = make_system(prob, recipe.jitter)
        return self.sweeps[key](theta, u, log_tau)

    def state(self, prob: Problem, init: dict, learning: bool, fresh: bool) -> tuple:
        """(theta, U, log tau) of a run from site values ``init``: theta the kernel and the
        unknowns; a fresh start's tau_b begins at ``boundary_start``, a continued run
        keeps its own; strong float64 (a weak type would compile the sweep again)."""
        theta = {k: init[k] for k in learn.kernel_sites(prob) + list(prob.unknown_sites.values())}
        if learning:
            theta = learn.clip(prob, theta)
        log_tau = {k: init[k] for k in tau_sites(prob)}
        if "log_tau_b" in log_tau and fresh:
            log_tau["log_tau_b"] = self.log_tau_b0
        return jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), (theta, init["U"], log_tau))

    def run_start(self, label: str, prob: Problem, init: dict, log: list,
                  learning: bool = False, cap_e: float | None = None, fresh: bool = True,
                  budget: int | None = None, resume: MapFit | None = None) -> MapFit:
        """One run of at most ``budget`` sweeps from ``init`` by ``policy``'s rules (going on
        from ``resume``, a run of the race, as one run); its sweeps are appended to ``log``."""
        recipe, cap_e = self.recipe_for(prob), self.cap if cap_e is None else cap_e
        sweep = self.sweep_of(prob, learning)
        theta, u, log_tau = self.state(prob, init, learning, fresh)
        z = None if resume is None else resume.z
        system = self.system_for(prob, learning, theta, u, log_tau)
        budget = budget or (learn_sweeps(prob, recipe) if learning else recipe.sweeps)
        # known: the kept state's residual checks (``results.check_values``)
        (reason, stats), objective, known = (Stop.SWEEP_BUDGET, {"budget": budget}), None, None
        before_jump, flat = None, False  # the state a jump left; the check levelled off
        caps = {"log_tau_e": min(self.cap, cap_e), "log_tau_b": self.cap}
        lowest, previous, checks, trail = self.carry.get(id(resume),
                                                         ((np.inf, None), np.inf, [], []))
        checks, trail = list(checks), list(trail)  # per accepted sweep: check, precisions
        for i in range(budget):
            solved_at = log_tau
            new_theta, new_u, new_tau, obj, (k, held, new_z, new_checks) = sweep(
                theta, u, log_tau, jnp.float64(cap_e), system)
            obj, k = float(obj), int(k)
            jumped, before_jump = before_jump, None
            if jumped is not None and not (obj < previous and k < self.maxiter):
                log_tau, trail = jumped, []  # the jump did not raise the log joint: undo it
                continue
            failure = failed_sweep(obj, k, self.maxiter, objective is not None, learning, previous)
            if failure is Stop.CG_BUDGET:  # the unconverged solve competes by the check
                state = (new_theta, new_u, solved_at, float(held), new_z, new_checks)
                capped = (self.score(prob, state), state)
                theta, u, log_tau, objective, z, known = min(lowest, capped,
                                                             key=lambda x: x[0])[1]
                reason, stats = failure, {"sweep": i + 1}
                break
            if failure or previous <= obj <= previous + ROUNDING * recipe.tolerance * abs(obj):
                # each sweep raises the log joint in exact arithmetic: a small fall is rounding
                reason, stats = failure or Stop.ROUNDING, {"sweep": i + 1}
                break
            theta, u, log_tau, objective, z = new_theta, new_u, new_tau, obj, new_z
            known = new_checks
            entry = {"start": label, "objective": obj, "cg_iterations": k,
                     "time_s": time.perf_counter() - self.start,
                     **{n: float(v) for n, v in new_tau.items()}}
            log.append(entry)
            state = (theta, u, solved_at, float(held), z, known)
            score = entry["check"] = self.score(prob, state)
            if not learning:  # the check holds out the precisions' climb (module docstring)
                if score > CHECK_RISE * lowest[0]:
                    theta, u, log_tau, objective, z, known = lowest[1]
                    reason, stats = Stop.CHECK_MINIMUM, {"rise": CHECK_RISE, "sweep": i + 1}
                    break
                lowest = min(lowest, (score, state), key=lambda x: x[0])
                checks.append(score)
                flat = (not self.dense and len(checks) > 2
                        and score > (1 - CHECK_FALL) * checks[-3])
            done = finished_sweep(previous, obj, flat, learning, score, recipe, i + 1)
            if done:
                reason, stats = done
                break
            previous = obj
            trail.append({n: float(v) for n, v in log_tau.items()})
            jump = aitken(trail, caps) if not learning and i + 1 < budget else {}
            if jump:  # the next sweep starts from the extrapolated precisions
                before_jump, trail = log_tau, []
                log_tau = {**log_tau, **{n: jnp.float64(v) for n, v in jump.items()}}
        if objective is None and resume is not None:  # stopped at once: the state resumed
            objective, known = resume.objective, None
        fit = MapFit(problem=prob, params=as_params(theta, u, log_tau), recipe=recipe,
                     steps=0, wall_time_s=0.0, stop=reason, stop_stats=stats,
                     converged=reason in CONVERGED, history=self.history, objective=objective,
                     kernel_why="learned" if learning else "",
                     z=None if z is None else np.asarray(z))
        if known is not None:
            fit.known_checks(known)
        self.carry[id(fit)] = (lowest, previous, checks, trail)
        return fit

    def score(self, prob: Problem, state: tuple) -> float:
        """The check score of a sweep's state (theta, U, the precisions U was solved at,
        minus the log joint there, z, its residual checks)."""
        fit = MapFit(prob, as_params(*state[:3]), self.recipe_for(prob), 0, 0.0,
                     Stop.SWEEP_BUDGET, False, objective=state[3], z=state[4])
        return check_score(fit.known_checks(state[5]))

    def run(self, label: str, prob: Problem, init: dict, **kwargs) -> tuple:
        """(fit, check score) of one run (``run_start``), recorded as ``rounds`` does."""
        return self.rounds([(label, prob, init, kwargs)])[0]

    def rounds(self, jobs: list) -> list:
        """[(fit, check score)] of independent runs, each job (label, problem, site
        values, ``run_start``'s keywords), in ``workers`` threads; each is recorded in
        ``starts`` in the jobs' order, its sweeps in the history; a run with a ``budget``
        that used it all is marked cut (the race runs it on or drops it)."""

        def work(job):
            label, prob, init, kwargs = job
            log = []
            fit = self.run_start(label, prob, init, log, **kwargs)
            return fit, check_score(fit) if fit.objective is not None else np.inf, log

        if self.workers > 1 and len(jobs) > 1:
            with ThreadPoolExecutor(min(self.workers, len(jobs))) as pool:
                done = list(pool.map(work, jobs))
        else:
            done = [work(job) for job in jobs]
        out = []
        for (label, _, _, kwargs), (fit, score, log) in zip(jobs, done):
            self.history.extend({"step": len(self.history) + i + 1, **entry}
                                for i, entry in enumerate(log))
            if kwargs.get("budget") and fit.stop is Stop.SWEEP_BUDGET:
                self.cut.add(id(fit))
            self.starts.append((score, fit, label))
            self.bar.update(1)
            self.bar.set_postfix(check=f"{score:.3g}")
            out.append((fit, score))
        return out

    def run_from(self, fit: MapFit, label: str, **kwargs) -> tuple:
        """One more run, from ``fit``'s state."""
        self.bar.total += 1
        return self.run(label, fit.problem, fit.params, fresh=False, **kwargs)

    def race(self, group: list, budget: int, interrupt=None) -> None:
        """Successive halving over the starts of ``group``: ``budget`` sweeps each, the
        better half by check twice as many more, and so on; the last to its end. Where
        the last two's scores are within ``policy.RACE_TIE`` both run one more round
        first (once): a tie at a budget is decided by rounding. Each round's runs run at
        once (``rounds``)."""
        done = self.rounds([(lb, prob, init, {"budget": budget}) for lb, prob, init in group])
        pool = [(score, fit, lb) for (fit, score), (lb, _, _) in zip(done, group)]
        extended = False
        while not (interrupt and interrupt()):
            pool = sorted(pool, key=lambda x: x[0])
            tie = not extended and len(pool) in (2, 3) and pool[1][0] <= RACE_TIE * pool[0][0]
            extended |= tie
            pool = pool[:2 if tie else max(1, len(pool) // 2)]
            last, budget = len(pool) == 1, 2 * budget
            more = [i for i, (_, fit, _) in enumerate(pool) if id(fit) in self.cut]
            self.bar.total += len(more)
            done = self.rounds([(pool[i][2], pool[i][1].problem, pool[i][1].params,
                                 {"budget": None if last else budget, "fresh": False,
                                  "resume": pool[i][1]}) for i in more])
            for i, (fit, score) in zip(more, done):  # unfinished: runs on (the last to its end)
                pool[i] = (score, fit, pool[i][2])
            if last:
                return

    def ladder(self, todo: list, interrupt=None) -> None:
        """Each start in turn to its end; a plain family's lengths, longest first, only
        while its log joint rises, and none once the model file's family resolved it."""
        ladder = {}  # (family, components): the last start's log joint, None once it fell
        for label, prob, init in todo:
            if interrupt and interrupt() and self.starts:
                return
            rung = (prob.family, prob.components)
            if prob is not self.problem and (self.resolved() or ladder.get(rung, 0) is None):
                self.bar.update(1)
                continue
            fit, _ = self.run(label, prob, init)
            if prob is not self.problem:  # shorter lengths only while the log joint rises
                rose = fit.objective is not None and fit.objective < ladder.get(rung, np.inf)
                ladder[rung] = fit.objective if rose else None

    def finished(self) -> list:
        """The runs not cut short by the race: (check score, fit, label)."""
        return [x for x in self.starts if id(x[1]) not in self.cut]

    def resolved(self) -> bool:
        """A finished start's check is at or below ``recipe.refine_above``."""
        done = self.finished()
        return bool(done) and min(s for s, _, _ in done) <= self.recipe.refine_above

    def refine(self, best: MapFit, chosen: str, held: float, stopped: str | None) -> tuple:
        """(fit, its label, why its kernel is learned or held: a ``results.KERNEL_WHY``
        code) after the kernel learning (where the check asks and the grid is small
        enough) and the held-out tau_e (``recipe.calibrate_tau_e``)."""
        recipe = self.recipe
        why = ("interrupted" if stopped else "off" if not recipe.learn_iterations
               else "passed" if held <= recipe.refine_above
               else "large" if self.problem.size > recipe.learn_max_points
               else "diagonal" if diagonal_rows(self.problem)
               else "failed" if best.objective is None else None)  # None: learning runs
        if why is None:
            fit, score = self.run_from(best, f"{chosen}, kernel learned", learning=True)
            kept = fit.objective is not None and fit.objective <= best.objective and score <= held
            best, chosen, why = ((fit, f"{chosen}, kernel learned", "learned") if kept
                                 else (best, chosen, "worse"))
        cap_e = held_out_cap(best) if recipe.calibrate_tau_e and not stopped else None
        if cap_e is not None and best.params["log_tau_e"] > cap_e:
            fit, _ = self.run_from(best, f"{chosen}, tau_e held out", cap_e=cap_e)
            fit.kernel_why = best.kernel_why
            if fit.objective is not None:
                best, chosen = fit, f"{chosen}, tau_e held out"
        return best, chosen, why


def failed_sweep(obj: float, k: int, maxiter: int, any_kept: bool,
                 learning: bool = False, previous: float = np.inf) -> Stop | None:
    """The stop of a sweep that ends its run, else None: a non-finite objective (in a
    learning run with a learned state kept, that state is its result: the kernel moved
    where the solve fails, not the start), CG at its budget ``maxiter``
    (``policy.cg_budget``) once a state is kept (the precisions' climb ends there and the
    unconverged state competes by the check; in a learning run the last converged state
    is kept), or a learning sweep that lowered the log joint below the ``previous``
    sweep's (minus it above): the learning's path follows its trial solves' rounding,
    and the sweep before is kept."""
    if not np.isfinite(obj):
        return Stop.LEARNING_NON_FINITE if learning and any_kept else Stop.NON_FINITE
    if k >= maxiter and any_kept:
        return Stop.LEARNING_CG_BUDGET if learning else Stop.CG_BUDGET
    return Stop.LEARNING_FELL if learning and obj > previous else None


def finished_sweep(previous: float, obj: float, flat: bool, learning: bool, score: float,
                   recipe: Recipe, sweep: int) -> tuple | None:
    """(stop, stats) of a kept sweep that ends its run, else None: the log joint converged
    (its change from ``previous`` at most ``recipe.tolerance`` of |obj|, or LEVELLED x that
    once the check levelled off: ``flat``), or a learning sweep's check ``score`` is at or
    below ``recipe.refine_above``, the bar that started the learning."""
    change = abs(previous - obj)
    if change <= recipe.tolerance * abs(obj):
        return Stop.CONVERGED, {"tolerance": recipe.tolerance}
    if flat and change <= LEVELLED * recipe.tolerance * abs(obj):
        return Stop.CHECK_FLAT, {"fall": CHECK_FALL, "sweep": sweep}
    if learning and score <= recipe.refine_above:
        return Stop.LEARNING_PASSED, {"bar": recipe.refine_above, "sweep": sweep}
    return None


def make_system(prob: Problem, jitter: float):
    """The compiled (theta, U, log tau) -> (J, d, row scales): U's whitened linear system
    (``Conditional.linear_system`` at U) and the ``row_scales`` it was formed at."""

    @jax.jit
    def system(theta, u, log_tau):
        cond = Conditional(prob, {**theta, **log_tau}, jitter)
        return (*cond.linear_system(cond.whiten(u)), cond.row_scales)

    return system


def make_sweep(prob: Problem, recipe: Recipe, solve, trial, learning: bool, cap: float):
    """One compiled sweep: (kernel learned by variable projection, if ``learning``), U
    solved (``solve``, from ``system`` where given: ``make_system``'s), then the
    precisions in closed form. Returns (theta, U, log tau, objective, (CG iterations, the
    objective where U was solved, z, U's residual checks: ``results.check_values``))."""
    f_mid = prob.midpoint_source  # computed outside the trace

    @jax.jit
    def sweep(theta, u, log_tau, cap_e, system=None):
        if learning:  # kernel and precisions by variable projection
            def solve_u(values):  # the unknowns held: U only
                return trial(Conditional(prob, values, recipe.jitter), u)[0]

            theta, log_tau, u = learn.update(prob, theta, log_tau, solve_u, recipe.jitter,
                                             cap, recipe.learn_iterations)
        cond = Conditional(prob, {**theta, **log_tau}, recipe.jitter)
        u, z, unknowns, k = solve(cond, u) if system is None else solve(cond, u, system)
        theta, cond = {**theta, **unknowns}, cond.with_values(unknowns)
        checks = check_values(cond, u, latent(prob, u, z), f_mid)
        if system is None:  # the data terms through the fields
            held = -cond.log_joint(u)  # at the precisions U was solved at
            log_tau = closed_form_log_tau(cond, cond.boundary_difference(u), cond.residual(u),
                                          cap, cap_e)
            objective = -cond.with_values(log_tau).log_joint(u)  # same factors
        else:  # from U's linear system, smooth where the fields' rounding is not
            j, d = scaled_system(cond, system)
            r = (j @ z.reshape(-1) - d)[:-z.size]
            held = -cond.log_joint_of(z, r)
            gap, eq, _ = cond.split_data_residual(r)
            log_tau = closed_form_log_tau(cond, gap, eq, cap, cap_e)
            new = cond.with_values(log_tau)
            objective = -new.log_joint_of(z, r * new.row_scales / cond.row_scales)
        return theta, u, log_tau, objective, (k, held, z, checks)

    return sweep
