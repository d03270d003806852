"""Why a run stopped, as a result code plus stats (the lineax way): the solvers and samplers
set a ``Stop`` and a dict of numbers; code branches on the code, and ``describe`` words it
for people (the command line, the ``stop_reason`` line of summary.json).
"""

from enum import StrEnum


class Stop(StrEnum):
    """A run's end. Stats each may carry are named in ``MESSAGES``' fields."""

    CONVERGED = "converged"  # the log joint's relative change at or below the tolerance
    ROUNDING = "rounding"  # the log joint stopped rising at rounding level
    CHECK_MINIMUM = "check_minimum"  # the held-out check rose: its lowest sweep kept
    CHECK_FLAT = "check_flat"  # converged at a looser tolerance once the check levelled off
    CG_BUDGET = "cg_budget"  # a solve needed more than cg_max_iterations: the lowest check kept
    LEARNING_CG_BUDGET = "learning_cg_budget"  # the same in a kernel-learning run
    LEARNING_NON_FINITE = "learning_non_finite"  # a learning sweep non-finite: the last kept
    LEARNING_FELL = "learning_fell"  # a learning sweep lowered the log joint: the one before
    LEARNING_PASSED = "learning_passed"  # a learning sweep's check at or below refine_above
    SWEEP_BUDGET = "sweep_budget"  # a run's sweep budget (a race round) used up
    STEP_BUDGET = "step_budget"  # Adam's fixed number of steps done
    NON_FINITE = "non_finite"  # the objective went non-finite: the last finite state kept
    INTERRUPTED = "interrupted"  # SIGINT or SIGTERM: the state so far kept
    LOADED = "loaded"  # a fit read back from a checkpoint
    DRAWS = "draws"  # a sampler drew what it was asked


CONVERGED = frozenset({Stop.CONVERGED, Stop.ROUNDING, Stop.CHECK_MINIMUM, Stop.CHECK_FLAT,
                       Stop.CG_BUDGET})
"""The profile solver's ends that leave a finished start (its choice then rests on the
check); a sweep budget, non-finite objective or interrupt leave an unfinished one."""


class Note(StrEnum):
    """A sampler's warning beside its stop (the stats: ``step_size``, ``capped``)."""

    STEP_COLLAPSED = "step_collapsed"  # the adapted step size fell below STEP_FLOOR
    TREE_DEPTH = "tree_depth"  # most draws reached NUTS's tree-depth cap
    LATTICE_CAPPED = "lattice_capped"  # the unknowns' lattice reached its node cap


MESSAGES = {  # a stop's words; a tuple: (stat, words) variants, the first whose stat is there
    Stop.CONVERGED: "log joint converged (relative change <= {tolerance:g})",
    Stop.ROUNDING: ("log joint converged (stopped rising at sweep {sweep}: rounding level; "
                    "kept the sweep before)"),
    Stop.CHECK_MINIMUM: ("check minimum (the check rose {rise}x at sweep {sweep}; kept the "
                         "sweep of its lowest, its U and the precisions it was solved at)"),
    Stop.CHECK_FLAT: ("log joint converged at the looser tolerance of a levelled check (it "
                      "fell less than {fall:.0%} over the two sweeps to sweep {sweep})"),
    Stop.CG_BUDGET: ("CG budget (sweep {sweep} needed more than cg_max_iterations: the "
                     "precisions' climb ends there; kept the sweep of the lowest check)"),
    Stop.LEARNING_CG_BUDGET: ("CG reached cg_max_iterations at sweep {sweep}; kept the last "
                              "converged state"),
    Stop.LEARNING_NON_FINITE: ("the kernel learning went non-finite at sweep {sweep}; kept "
                               "the last finite learned state"),
    Stop.LEARNING_FELL: ("the kernel learning lowered the log joint at sweep {sweep}; kept "
                         "the sweep before"),
    Stop.LEARNING_PASSED: ("the kernel learning's check reached refine_above ({bar:g}) at "
                           "sweep {sweep}"),
    Stop.SWEEP_BUDGET: "sweep budget ({budget}) reached",
    Stop.STEP_BUDGET: "step budget reached (fixed-step protocol)",
    Stop.NON_FINITE: (
        ("sweep", "non-finite objective at sweep {sweep}; kept the last finite state. Try a "
                  "larger jitter or a smaller tau_max."),
        ("step", "non-finite objective after step {step} (jitter raised {retries} times to "
                 "{jitter:g}); kept the state after step {kept}. Try a smaller learning_rate "
                 "or a larger jitter.")),
    Stop.INTERRUPTED: (
        ("before_draws", "interrupted ({signal}) before the first draws"),
        ("draws", "interrupted ({signal}) after {draws} draws per chain"),
        ("sweeps", "interrupted ({signal}) after {sweeps} sweeps; kept the best start so far "
                   "(rerun to finish)"),
        ("step", "interrupted ({signal}) after step {step}; continue with --resume")),
    Stop.LOADED: "loaded from a checkpoint",
    Stop.DRAWS: "{draws} draws per chain",
}

PATHS = {  # how a sampler ran (NutsResult.path)
    "joint": "",
    "marginal": "U integrated out (exact given the unknowns)",
    "marginal_laplace": "U integrated out (Laplace: the PDE is nonlinear in U)",
    "matrix_free": "matrix-free (Laplace-scaled coordinates)",
    "hyper": "hyperparameters sampled",
    "lattice": ("U integrated out (exact given the unknowns), the unknowns integrated on a "
                "lattice (independent draws, no NUTS)"),
    "lattice_laplace": ("U integrated out (Laplace: the PDE is nonlinear in U), the unknowns "
                        "integrated on a lattice (independent draws, no NUTS)"),
}

NOTES = {
    Note.STEP_COLLAPSED: ("the step size collapsed to {step_size:.1e} and the chains did not "
                          "move: start from a MAP at jitter 1e-6 (nuts.toml's map_jitter); "
                          "with unknowns on a grid beyond 500 points, where NUTS samples U "
                          "too, --method gaussian integrates U out (up to 4000 points)"),
    Note.TREE_DEPTH: ("{capped:.0%} of the draws reached the tree-depth cap ({cap} leapfrog "
                      "steps): the mass matrix does not whiten this posterior, so the draws "
                      "are strongly correlated (read ess_bulk); the Gaussian posterior "
                      "(--method gaussian) is its Laplace approximation at a fraction of the "
                      "cost"),
    Note.LATTICE_CAPPED: ("the unknowns' lattice reached {max_nodes} nodes before its edge "
                          "fell {drop:g} below its best: the posterior is much wider than its "
                          "Laplace approximation at the MAP, and the draws are cut at the "
                          "lattice's edge"),
}


def describe(stop: Stop, stats: dict, path: str = "", notes: tuple = ()) -> str:
    """One line for people: the stop with its stats, the sampler's path and notes."""
    words = MESSAGES[stop]
    if isinstance(words, tuple):
        words = next(text for stat, text in words if stat in stats)
    parts = [words.format(**stats), PATHS.get(path, path)]
    return "; ".join(p for p in parts + [NOTES[n].format(**stats) for n in notes] if p)
