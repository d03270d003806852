"""The trust check flags results that cannot be believed, from the equation and the data
only, and passes resolved ones."""

import numpy as np
import pytest

import gpbayes as gb
from conftest import paper_recipe, small_problem
from gpbayes.results import MapFit
from gpbayes.stops import Stop
from gpbayes.trust import NOISY, THRESHOLDS, trust_check, warning


def quick_map(problem):
    """The default recipe with one start per family (fast)."""
    recipe = gb.load_inference("map", rho_scales=[0.3], families=["se"])
    return gb.fit_map(problem, recipe, progress=False)


def test_resolved_problem_passes():
    fit = quick_map(small_problem(n=40))
    check = fit.check
    assert fit.rel_l2_error < 1e-4
    assert check["passed"] and check["failed"] == [] and check["advice"] == ""
    assert check["thresholds"] == {"pde": THRESHOLDS["pde"], "boundary": THRESHOLDS["boundary"]}
    assert fit.summary()["converged"] == fit.converged  # the check passed: the solver decides


def test_under_resolved_problem_is_flagged():
    """sin(100x) on 80 points over [0, 2 pi]: 1.3 points per period, below Nyquist."""
    p = small_problem(n=80, solution="sin(100*x)", domain=[(0.0, 2 * np.pi)])
    fit = quick_map(p)
    assert fit.rel_l2_error > 0.5  # the exact solution only confirms the flag
    assert fit.check["passed"] is False and "pde" in fit.check["failed"]
    assert fit.summary()["converged"] is False
    line = warning(fit.check)
    assert "\n" not in line and "pde" in line and "finer grid" in line


def test_residual_relative_to_the_equations_terms():
    """u_t + 50 u_x = 0 has no source: the midpoint residual is measured against the
    equation's terms (50 u_x ~ 300 here), not against f = 0."""
    from gpbayes import operators as op
    from gpbayes.problem import Face

    v = ("x", "t")
    p = gb.Problem(name="adv", variables=v, domain=[(0, 1), (0, 0.1)], grid=(24, 16),
                   test_grid=(24, 16),
                   equation=op.parse("u_t + 50*u_x", set(v), allow_u=True, variables=v),
                   solution=op.parse("sin(2*pi*(x - 50*t))", set(v)),
                   faces=(Face(0, "lo"), Face(1, "lo")), family="se", components=1)
    start = gb.fit_map(p, paper_recipe(), steps=1, progress=False)
    params = {**start.params, "U": np.asarray(p.exact(p.axes))}
    fit = MapFit(problem=p, params=params, recipe=start.recipe, steps=0, wall_time_s=0.0,
                 stop=Stop.CONVERGED, converged=True)
    cond = fit.conditional
    mid = tuple(0.5 * (x[1:] + x[:-1]) for x in p.axes)
    fields = cond.fields_on(params["U"], mid)
    terms = [np.sqrt(np.mean(np.asarray(t) ** 2)) for t in (fields["u_t"], 50 * fields["u_x"])]
    scale = float(cond.term_scale(fields, mid))
    np.testing.assert_allclose(scale, max(terms), rtol=1e-12)
    assert scale > 10  # against f = 0, the old floor of 1
    r = np.asarray(cond.residual_on(params["U"], mid))
    np.testing.assert_allclose(fit.pde_check, np.sqrt(np.mean(r**2)) / scale, rtol=1e-9)


def test_noisy_terms_are_standardized(tmp_path):
    """With noise sds in the model file the checks are residual over sd (threshold NOISY),
    and observations add a standardized check."""
    model = tmp_path / "noisy.toml"
    model.write_text('name = "noisy"\n[pde]\nvariables = ["x"]\ndomain = [[0, 1]]\n'
                     'equation = "u_xx"\nsolution = "sin(3*x)"\n[grid]\npoints = [30]\n'
                     '[kernel]\nfamily = "se"\ncomponents = 1\n'
                     '[likelihood]\nboundary_noise = 0.01\nequation_noise = 0.1\n'
                     '[[observations]]\npoints = [[0.3], [0.6]]\nvalues = [0.7833, 0.9738]\n'
                     'noise = 0.01\n')
    p = gb.load_model(model)
    fit = quick_map(p)
    check = trust_check(fit)
    assert check["thresholds"] == {"pde": NOISY, "boundary": NOISY, "observations": NOISY}
    np.testing.assert_allclose(check["values"]["pde"], fit.midpoint_rms / 0.1)
    z = (fit.predict(np.array([[0.3], [0.6]])) - [0.7833, 0.9738]) / 0.01
    np.testing.assert_allclose(check["values"]["observations"], np.sqrt(np.mean(z**2)))
    assert check["passed"]


@pytest.mark.parametrize("bad", [np.nan, 1.0])
def test_a_failed_or_nan_value_fails(bad):
    class Fake:
        problem = small_problem()
        pde_check, boundary_relative = bad, 0.0

    assert trust_check(Fake())["failed"] == ["pde"]
