"""The profile solver's policy: which start is kept, when the precisions jump."""

from types import SimpleNamespace

import numpy as np
import pytest

from gpbayes.infer.policy import CHECK_RANGE, aitken, choose, diagonal_rows, learn_sweeps
from gpbayes.infer.solvers import MAX_DENSE
from gpbayes.spec import Recipe


def test_choice_of_start_is_the_largest_log_joint_that_passes_the_check():
    """A start far behind on the check (a poor local optimum, e.g. a loose boundary) is
    skipped even with the best log joint; among the rest the largest log joint wins."""
    own = SimpleNamespace()  # the model file's problem

    def start(score, objective, scale, problem=own):
        return score, SimpleNamespace(objective=objective, problem=problem), scale

    starts = [start(1e-6, -100.0, 0.3), start(2e-6, -120.0, 0.1),
              start(1e-6 * CHECK_RANGE * 2, -500.0, 1.0), start(np.inf, None, 3.0)]
    fit, scale, passed, score = choose(starts, own)
    assert scale == 0.1 and fit.objective == -120.0 and passed == 2 and score == 2e-6
    # another family's start with the largest log joint is kept only if it beats every
    # start of the model file's family on the check
    plain = start(1.5e-6, -200.0, "se", SimpleNamespace())
    assert choose(starts + [plain], own)[1] == 0.1
    plain = start(0.5e-6, -200.0, "se", SimpleNamespace())
    assert choose(starts + [plain], own)[1] == "se"


def test_aitken_jumps_to_the_limit_of_a_steady_linear_sequence():
    caps = {"log_tau_e": 27.6, "log_tau_b": 27.6}
    geometric = [{"log_tau_e": 20.0 - 3.0 * 0.25**i} for i in range(4)]
    assert aitken(geometric, caps)["log_tau_e"] == pytest.approx(20.0, rel=1e-12)
    assert aitken(geometric[:3], caps) == {}  # too few sweeps to judge the rate
    # an unsteady rate (0.5 then 0.25) or a non-contracting one: no jump
    assert aitken([{"log_tau_e": x} for x in (0.0, 1.0, 1.5, 1.625)], caps) == {}
    assert aitken([{"log_tau_e": x} for x in (0.0, 1.0, 2.0, 3.0)], caps) == {}
    # the limit is capped; a site already at its cap is left alone
    assert aitken([{"log_tau_e": 30.0 - 3.0 * 0.25**i} for i in range(4)], caps) == {
        "log_tau_e": 27.6}
    assert aitken([{"log_tau_b": 27.6}] * 4, caps) == {}


def test_large_grids_learn_in_fewer_sweeps():
    """Up to MAX_DENSE grid points the learning run has ``learn_sweeps`` sweeps, beyond it
    ``learn_sweeps_large`` (each trial a CG solve there)."""
    recipe = Recipe(learn_sweeps=3, learn_sweeps_large=1)
    assert learn_sweeps(SimpleNamespace(size=MAX_DENSE), recipe) == 3
    assert learn_sweeps(SimpleNamespace(size=MAX_DENSE + 1), recipe) == 1


def test_the_boundary_rows_are_by_their_diagonal_on_large_3d_grids():
    """``diagonal_rows``: beyond MAX_CAPACITANCE boundary rows on the CG path (32^3: 6144
    rows), not on 12^3 (864) nor on a dense 1-D grid."""
    from conftest import small_3d_problem, small_problem

    def cube(n):
        return small_3d_problem((n,) * 3, components=2, test=5)

    assert diagonal_rows(cube(32)) and not diagonal_rows(cube(12))
    assert not diagonal_rows(small_problem())
