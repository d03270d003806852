"""Stop codes and their words: every code a run can end with is worded, from its stats."""

import pytest

from gpbayes.stops import CONVERGED, Note, Stop, describe

STATS = {"tolerance": 1e-9, "sweep": 3, "rise": 2, "fall": 0.1, "budget": 4, "draws": 500,
         "step_size": 1e-300, "capped": 0.75, "cap": 1023, "bar": 1e-6}


@pytest.mark.parametrize("stop", [s for s in Stop if s not in (Stop.INTERRUPTED,
                                                             Stop.NON_FINITE)])
def test_every_stop_is_worded_from_its_stats(stop):
    text = describe(stop, STATS)
    assert text and "{" not in text


@pytest.mark.parametrize("stats, words", [
    ({"signal": "SIGINT", "draws": 40}, "interrupted (SIGINT) after 40 draws per chain"),
    ({"signal": "SIGTERM", "sweeps": 7}, "interrupted (SIGTERM) after 7 sweeps; kept the best"),
    ({"signal": "SIGTERM", "step": 300}, "interrupted (SIGTERM) after step 300; continue with"),
])
def test_an_interrupt_says_what_was_done(stats, words):
    assert describe(Stop.INTERRUPTED, stats).startswith(words)


def test_non_finite_names_the_sweep_or_the_step():
    assert "at sweep 3" in describe(Stop.NON_FINITE, {"sweep": 3})
    adam = describe(Stop.NON_FINITE, {"step": 200, "retries": 2, "jitter": 1e-4, "kept": 100})
    assert "after step 200 (jitter raised 2 times to 0.0001); kept the state after step 100" \
        in adam


def test_a_sampler_adds_its_path_and_notes():
    text = describe(Stop.DRAWS, STATS, "marginal", (Note.STEP_COLLAPSED, Note.TREE_DEPTH))
    assert text.startswith("500 draws per chain; U integrated out (exact given the unknowns)")
    assert "collapsed to 1.0e-300" in text and "75% of the draws reached" in text
    assert describe(Stop.DRAWS, STATS, "joint") == "500 draws per chain"


def test_only_finished_ends_count_as_converged():
    assert Stop.CG_BUDGET in CONVERGED and Stop.LEARNING_CG_BUDGET not in CONVERGED
    assert Stop.LEARNING_NON_FINITE not in CONVERGED
    assert not CONVERGED & {Stop.SWEEP_BUDGET, Stop.NON_FINITE, Stop.INTERRUPTED}


def test_docs_name_every_code_a_summary_carries():
    """docs/cli.md's summary.json row names every MAP stop code (``Stop``; a sampler's
    ``draws`` is the posterior's) and every ``kernel_why`` code."""
    from pathlib import Path

    from gpbayes.results import KERNEL_WHY
    from gpbayes.stops import Stop

    row = next(line for line in (Path(__file__).parents[1] / "docs/cli.md").read_text()
               .splitlines() if line.startswith("| `summary.json`"))
    codes = {s.value for s in Stop if s is not Stop.DRAWS} | set(KERNEL_WHY)
    assert not {c for c in codes if f"`{c}`" not in row}
