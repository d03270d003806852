"""Kernel learning (variable projection of the log joint) and the choice among families."""

import jax.numpy as jnp
import numpy as np
import pytest

import gpbayes as gb
from conftest import ROOT, paper_recipe, small_problem
from gpbayes import kernels
from gpbayes.conditional import Conditional
from gpbayes.infer import learn
from gpbayes.infer.init import plain_lengths, plain_params
from gpbayes.infer.policy import CHECK_RANGE
from gpbayes.infer.profile import candidates, dense_u_solver
from gpbayes.results import live_components
from gpbayes.stops import Stop


def learning(**kw):
    settings = dict(optimizer="profile", init="spectrum", rho_scales=[0.3],
                    learn_iterations=10, learn_sweeps=3, jitter=1e-6)
    return paper_recipe(**{**settings, **kw})


def test_update_raises_the_log_joint_and_stays_in_the_box():
    p = small_problem(n=40, solution="exp(x)*x**2 - x").with_kernel("se", 4)
    init = plain_params(p)
    theta = learn.clip(p, {k: init[k] for k in learn.kernel_sites(p)})
    log_tau = {"log_tau_e": jnp.asarray(5.0), "log_tau_b": jnp.asarray(20.0)}
    solve = dense_u_solver(1)

    def solve_u(values):
        return solve(Conditional(p, values, 1e-6), jnp.zeros(p.grid))[0]

    def objective(th, lt):
        values = {**th, **lt}
        return -float(Conditional(p, values, 1e-6).log_joint(solve_u(values)))

    new_theta, new_tau, u = learn.update(p, theta, log_tau, solve_u, 1e-6, np.log(1e12), 10)
    assert objective(new_theta, new_tau) < objective(theta, log_tau) - 1.0
    for name, (lo, hi) in learn.bounds(p).items():
        if name in new_theta:
            assert np.all((new_theta[name] >= lo) & (new_theta[name] <= hi))
    assert all(float(v) <= np.log(1e12) for v in new_tau.values())
    assert np.allclose(u, solve_u({**new_theta, **new_tau}))


@pytest.fixture(scope="module")
def learned_fit():
    p = small_problem(n=60, solution="sin(2*pi*2*x)", components=8, max_frequency=4.0)
    return gb.fit_map(p, learning(), progress=False)


def test_no_learning_where_the_boundary_rows_are_by_their_diagonal(monkeypatch):
    """Where the preconditioner takes the boundary rows by their diagonal (3-D grids
    beyond MAX_CAPACITANCE rows) each trial solve takes about 1000 CG iterations: the
    kernel is held (``kernel_why`` "diagonal"), no learning run. Measured on three 3-D
    problems (suite g03 and two not in the repository): learning took 4-6x the rest of
    the solve and gained nothing. The rule forced on a small 1-D problem here."""
    from gpbayes.infer import profile

    p = small_problem(n=60, solution="sin(2*pi*2*x)", components=8, max_frequency=4.0)
    monkeypatch.setattr(profile, "diagonal_rows", lambda problem: True)
    fit = gb.fit_map(p, learning(), progress=False)
    assert fit.kernel_why == "diagonal" and not fit.kernel_learned
    assert not any(c["start"].endswith("kernel learned") for c in fit.candidates)


def test_learned_objective_is_the_models_log_density(learned_fit):
    fit = learned_fit
    assert fit.kernel_learned and fit.candidates[-1]["chosen"]
    lp, _ = gb.log_density(fit.problem, fit.params, fit.recipe.jitter)
    assert fit.objective == pytest.approx(-float(lp), rel=1e-6)
    # learning started at the held start's optimum and raised the log joint
    held, learned = (c["objective"] for c in fit.candidates)
    assert learned < held
    assert fit.rel_l2_error < 1e-3


@pytest.mark.xfail(strict=False, reason=(
    "the learning path follows rounding (issue 38, open): here (AMD EPYC, one XLA thread) "
    "it passed from 3 of 6 starts perturbed by 1e-9 (relative), not from the unperturbed "
    "one (it stalled at log joint 1046 with the top at frequency 0; the pruned optimum is "
    "about 1350); with 10 line-search evaluations a step, from 12 of 16, at twice the "
    "learning's cost elsewhere (benchmarks/journal.md, 2026-12-07, eighth)"))
def test_jeffreys_prior_prunes_unneeded_components():
    """u = f (the operator is the identity: the kernel meets the data only through the
    prior) with one frequency: from the spectral start (8 components, equal weights)
    eight rounds of learning leave the weight on one component at the true frequency,
    the seven others below 5% of it. (With a differential operator extra components also
    sharpen the collocation residual, worth more than the prior's log-determinant, so
    more stay live.)"""
    from gpbayes.infer.init import spectral_params
    from gpbayes.plots import spectrum_figure
    from gpbayes.results import MapFit

    p = small_problem(n=60, equation="u", solution="sin(2*pi*2*x)", components=8,
                      max_frequency=4.0)
    init = spectral_params(p, 0.3)
    theta = learn.clip(p, {k: init[k] for k in learn.kernel_sites(p)})
    log_tau = {"log_tau_e": jnp.asarray(10.0), "log_tau_b": jnp.asarray(20.0)}
    solve = dense_u_solver(1)

    def solve_u(values):
        return solve(Conditional(p, values, 1e-6), jnp.zeros(p.grid))[0]

    for _ in range(8):
        theta, log_tau, u = learn.update(p, theta, log_tau, solve_u, 1e-6, np.log(1e12), 30)
    params = {**theta, **log_tau, "U": u}
    w, mu = np.exp(theta["log_w_x"]), np.asarray(theta["mu_x"])
    top = np.argmax(w)
    assert abs(mu[top] - 2.0) < 0.02
    others = np.abs(mu - 2.0) > 0.05
    assert others.sum() >= 6 and np.all(w[others] < 0.05 * w[top])
    assert live_components(p, params)["x"] <= 5
    fit = MapFit(problem=p, params=params, recipe=learning(), steps=0, wall_time_s=0.0,
                 stop=Stop.CONVERGED, converged=True)
    assert spectrum_figure(fit) is not None


def test_candidates_include_the_plain_families():
    """After the spectral starts, each plain family as one component at halving lengths
    (fractions of the axis), longest first, down to 2 MIN_SPACINGS grid spacings."""
    p = small_problem()
    recipe = gb.load_inference(ROOT / "inference/map.toml", families=["se", "matern52"])
    starts = candidates(p, recipe)
    lengths = plain_lengths(p)
    assert len(starts) == len(recipe.rho_scales) + 2 * (len(lengths) + 1)
    assert lengths[0] == kernels.MAX_SE_LENGTH and np.allclose(np.diff(np.log2(lengths)), -1)
    h = 1.0 / (p.domain_grid[0] - 1)
    assert lengths[-1] >= 2 * learn.MIN_SPACINGS * h > lengths[-1] / 2
    plain = starts[len(recipe.rho_scales):]
    assert [(s[1].family, s[1].components) for s in plain] == (
        [("se", 1)] * len(lengths) + [("se", 4)] + [("matern52", 1)] * len(lengths)
        + [("matern52", 4)])
    (lo, hi), width = learn.bounds(plain[0][1])["log_rho_x"], np.diff(p.domain[0])[0]
    rho = [float(np.asarray(s[2]["log_rho_x"])[0]) for s in plain[: len(lengths)]]
    np.testing.assert_allclose(rho, np.clip(-2 * np.log(np.array(lengths) * width), lo, hi))
    # the equal-weight spread start spans the box
    p_se = plain[len(lengths)][1]
    lo, hi = learn.bounds(p_se)["log_rho_x"]
    rho = np.asarray(plain[len(lengths)][2]["log_rho_x"])
    assert np.all(np.diff(rho) > 0) and lo < rho[0] and rho[-1] < hi


def test_default_recipe_on_a_smooth_problem_picks_by_the_rule():
    """No clean tone: the default recipe (learning, plain families) on a smooth
    polynomial-exponential solution. The held starts are chosen among by the check and
    the log joint (a plain family only if it beats the model file's on the check); the
    learned kernel is kept only if it raised the log joint without
    worsening the check. Measured: error 3.4e-7."""
    p = small_problem(n=60, solution="exp(x)*x**2 - x", components=8, max_frequency=2.0)
    fit = gb.fit_map(p, gb.load_inference(ROOT / "inference/map.toml"), progress=False)
    assert fit.rel_l2_error < 1e-5
    *held, learned = fit.candidates
    assert learned["start"].endswith("kernel learned")
    held = [c for c in held if not c["cut"]]  # the runs the race cut short are not chosen
    floor = min(c["check"] for c in held)
    pick = min((c for c in held if c["check"] <= CHECK_RANGE * floor),
               key=lambda c: c["objective"])
    own = [c for c in held if c["start"].startswith(p.family)]
    if not pick["start"].startswith(p.family) and min(c["check"] for c in own) < pick["check"]:
        floor = min(c["check"] for c in own)  # a plain family must beat it on the check
        pick = min((c for c in own if c["check"] <= CHECK_RANGE * floor),
                   key=lambda c: c["objective"])
    assert learned["start"].startswith(pick["start"])
    keep = learned["objective"] <= pick["objective"] and learned["check"] <= pick["check"]
    assert (learned if keep else pick)["chosen"] and fit.kernel_learned == keep
    assert sum(c["chosen"] for c in fit.candidates) == 1
    summary = fit.summary()
    assert summary["live_components"]["x"] >= 1 and summary["family"] == fit.problem.family
    # without the race, the se ladder runs longest first while the log joint rises
    fit = gb.fit_map(p, gb.load_inference(ROOT / "inference/map.toml", screen_sweeps=0),
                     progress=False)
    ladder = [c for c in fit.candidates if c["start"].startswith("se, length")
              and not c["start"].endswith("kernel learned")]
    lengths = plain_lengths(p)
    assert [c["start"] for c in ladder] == [f"se, length {f:g}" for f in lengths[:len(ladder)]]
    obj = [c["objective"] for c in ladder]
    assert all(b < a for a, b in zip(obj[:-2], obj[1:-1]))
    assert len(ladder) == len(lengths) or obj[-1] is None or obj[-1] >= obj[-2]


LAYER_2D = """name = "layer2d"
[pde]
variables = ["x", "y"]
domain = [[0, 1], [0, 1]]
equation = "u_xx + u_yy"
solution = "exp(-x/0.08) + x*sin(3*y)"
[grid]
points = [36, 28]
test_points = [40, 40]
[kernel]
family = "student-t-mixture"
components = 8
max_frequency = 3
"""


def test_the_kernel_is_learned_on_a_2d_grid_by_cg(tmp_path, monkeypatch):
    """2-D grids solve U by CG; the default recipe learns the kernel there too, on grids
    above MAX_DENSE points (lowered here to 500) in ``learn_sweeps_large`` sweeps, and
    keeps it only if it raised the log joint without worsening the check; above
    ``learn_max_points`` the kernel is held. On this boundary layer the held kernel
    fails the trust check and the learned one passes."""
    from gpbayes.infer import policy

    path = tmp_path / "layer2d.toml"
    path.write_text(LAYER_2D)
    p = gb.load_model(path)
    recipe = gb.load_inference("map")
    monkeypatch.setattr(policy, "MAX_DENSE", 500)
    fit = gb.fit_map(p, recipe, progress=False)
    *held, learned = fit.candidates
    assert learned["start"].endswith("kernel learned") and fit.kernel_why in ("learned", "worse")
    sweeps = [h for h in fit.history if h["start"] == learned["start"]]
    assert 1 <= len(sweeps) <= recipe.learn_sweeps_large < recipe.learn_sweeps
    pick = next(c for c in held if learned["start"] == c["start"] + ", kernel learned")
    keep = learned["objective"] <= pick["objective"] and learned["check"] <= pick["check"]
    assert fit.kernel_learned == keep and (learned if keep else pick)["chosen"]
    assert fit.check["passed"] and fit.rel_l2_error < 1e-4
    small = gb.fit_map(p, gb.load_inference("map", learn_max_points=p.size - 1), progress=False)
    assert small.kernel_why == "large" and not small.kernel_learned
    # measured: 3.2e-6 learned (check passed) against 2.5e-5 held (pde check 1.5e-3: failed)
    assert fit.kernel_learned and fit.rel_l2_error < 0.5 * small.rel_l2_error
