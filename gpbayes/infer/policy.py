"""The profile solver's policy: when a start stops, which start is kept, when the
precisions jump to their limit, where tau_e is held out. Each constant is one rule's
threshold; the mechanism (the sweeps, the race) is ``gpbayes.infer.profile``'s.
"""

import numpy as np

from gpbayes.gauss_newton import exact_boundary_rows
from gpbayes.infer.solvers import MAX_DENSE, is_dense
from gpbayes.problem import Problem
from gpbayes.results import MapFit
from gpbayes.spec import Recipe

ROUNDING = 100  # a fall of the log joint up to ROUNDING x tolerance (relative) is rounding
CHECK_RANGE = 10  # starts whose check score is within this factor of the best compete
RACE_TIE = 2  # the race's last two run one more round each (once) if this close in score
# (after its budget a start's score follows rounding: 0.22 or 0.38 by the thread count)
LOOSER = 100  # CG tolerance factor of the kernel learning's trial solves
CHECK_RISE = 2  # a start stops once its check score rises past this factor of its lowest
CHECK_FALL = 0.1  # a check that fell by less than this share over two sweeps levelled off
LEVELLED = 100  # once it levelled off the log joint converges at this x the tolerance
STEADY_MAX, STEADY_SPREAD = 0.9, 0.1  # a steady linear rate for Aitken's jump (``aitken``)
DIAGONAL_BUDGET = 10  # CG budget factor where the boundary rows are by their diagonal


def diagonal_rows(problem: Problem) -> bool:
    """The preconditioner takes the boundary rows by their diagonal (3-D grids beyond
    ``gauss_newton.MAX_CAPACITANCE`` rows): a U solve there takes about 1000 CG
    iterations or more. Never on the dense path, which takes them exactly."""
    return bool(problem.conditions) and not (is_dense(problem) or exact_boundary_rows(problem))


def cg_budget(problem: Problem, recipe: Recipe) -> int:
    """The CG budget of one U solve: ``recipe.cg_max_iterations``, times DIAGONAL_BUDGET
    where the boundary rows are by their diagonal (``diagonal_rows``): there an iteration
    costs a small fraction of one with the capacitance (1/20 on 32^3) and a solve needs a
    few times as many."""
    return recipe.cg_max_iterations * (DIAGONAL_BUDGET if diagonal_rows(problem) else 1)


def learn_sweeps(problem: Problem, recipe: Recipe) -> int:
    """The sweeps of a kernel-learning run: ``recipe.learn_sweeps``, or
    ``learn_sweeps_large`` on grids above ``solvers.MAX_DENSE`` points, where each trial
    is a CG solve and a later sweep's solve at the learned kernel's higher tau_e mostly
    ran past the CG budget (benchmarks/journal.md, 2026-12-07, fifth)."""
    return recipe.learn_sweeps if problem.size <= MAX_DENSE else recipe.learn_sweeps_large


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
