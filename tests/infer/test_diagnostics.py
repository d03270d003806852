"""The posterior's convergence checks on made-up diagnostics."""

import numpy as np
import pandas as pd

from gpbayes.infer.diagnostics import (
    DIVERGENT_SHARE,
    ESS_PER_CHAIN,
    R_HAT_MAX,
    laplace_failures,
    nuts_failures,
)


def table(rows):
    """An az.summary-like table: one row per variable (r_hat, ess_bulk)."""
    return pd.DataFrame.from_dict(rows, orient="index", columns=["r_hat", "ess_bulk"])


def stats(chains=4, draws=500, divergent=0, capped=0, cap=1023):
    diverging = np.zeros((chains, draws), bool)
    diverging.flat[:divergent] = True
    steps = np.full((chains, draws), 7)
    steps.flat[:capped] = cap
    return {"diverging": diverging, "num_steps": steps}


def test_a_mixed_run_passes():
    t = table({"k": [1.002, 900.0], "log_w_x[0]": [1.0, 500.0], "log_w_x[1]": [1.005, 450.0]})
    assert nuts_failures(t, ["k", "log_w_x"], stats(), 4, 1023) == []


def test_each_check_fails_on_its_own():
    t = table({"k": [R_HAT_MAX + 0.05, 900.0], "log_w_x[0]": [1.0, 500.0],
               "log_w_x[1]": [1.0, ESS_PER_CHAIN * 4 - 1]})
    out = nuts_failures(t, ["k", "log_w_x"], stats(), 4, 1023)
    assert len(out) == 2 and out[0].startswith("k r_hat") and out[1].startswith("log_w_x ess")
    few = int(DIVERGENT_SHARE * 2000)  # at the threshold: passes; one more: fails
    assert nuts_failures(table({}), [], stats(divergent=few), 4, 1023) == []
    assert "divergences" in nuts_failures(table({}), [], stats(divergent=few + 1), 4, 1023)[0]
    assert nuts_failures(table({}), [], stats(capped=1000), 4, 1023) == []
    assert "tree-depth cap" in nuts_failures(table({}), [], stats(capped=1001), 4, 1023)[0]


def test_nan_diagnostics_fail():
    t = table({"k": [np.nan, np.nan]})  # one draw per chain: ArviZ gives NaN
    assert len(nuts_failures(t, ["k"], stats(), 4, 1023)) == 2


def test_laplace_factor():
    assert laplace_failures(np.array([3.0, 1.0, 1e-9])) == []
    assert laplace_failures(np.ones(0)) == []
    assert laplace_failures(np.array([1.0, np.nan]))
    assert laplace_failures(np.array([1.0, 0.0]))
