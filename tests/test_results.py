import json

import jax.numpy as jnp
import numpy as np
import pytest

import gpbayes as gb
from conftest import paper_recipe, small_problem
from gpbayes.coordinates import Whitened
from gpbayes.io import import_arviz
from gpbayes.results import MapFit, load_fit
from gpbayes.stops import Stop


@pytest.fixture(scope="module")
def fit():
    return gb.fit_map(small_problem(), paper_recipe(chunk=50), steps=150, progress=False)


def test_predict_agrees_with_grid_prediction(fit):
    x = fit.problem.test_axes[0]
    np.testing.assert_allclose(fit.predict(x), fit.test_prediction, rtol=1e-10, atol=1e-12)
    # at the collocation points the conditional mean reproduces U (up to the jitter)
    np.testing.assert_allclose(fit.predict(fit.problem.axes[0]), fit.params["U"], atol=1e-4)


def test_summary_fields(fit):
    s = fit.summary()
    for key in ("name", "rel_l2_error", "max_abs_error", "equation_residual_rms",
                "boundary_rms", "steps", "wall_time_s", "converged", "stop_reason", "device",
                "spectrum", "check"):
        assert key in s
    assert s["steps"] == 150 and 0 < s["rel_l2_error"] < 1
    assert len(s["spectrum"]["x"]["weight"]) == fit.problem.components
    json.dumps(s)


def test_arviz_round_trip(fit, tmp_path):
    """The MAP is a point (a ``map`` group without chain or draw), on integer index dims
    with the grid as named coordinates; load_fit rebuilds the same fit."""
    fit.save(tmp_path)
    idata = import_arviz().from_netcdf(str(tmp_path / "result.nc"))
    assert "posterior" not in idata.groups()
    point = idata["map"]
    assert point["u"].dims == ("x_index",) and point["u_test"].dims == ("x_test_index",)
    np.testing.assert_allclose(point["x"].values, fit.problem.axes[0])
    np.testing.assert_allclose(point["u"].values, fit.params["U"])
    np.testing.assert_allclose(point["u_test"].values, fit.test_prediction)
    np.testing.assert_allclose(point["mu_x"].values, fit.params["mu_x"])
    assert point["log_tau_e"].dims == ()
    assert "u_exact_test" in idata.constant_data
    assert json.loads(point.attrs["summary"])["name"] == "small"
    back = load_fit(tmp_path, fit.problem)
    for k, v in fit.params.items():
        np.testing.assert_allclose(back.params[k], v)
    assert back.check == fit.check and back.rel_l2_error == fit.rel_l2_error
    assert (back.stop, back.stop_stats, back.stop_reason) == (fit.stop, fit.stop_stats,
                                                              fit.stop_reason)


def test_profile_fit_predicts_from_its_whitened_coordinates(tmp_path):
    """The profile solver keeps U's whitened coordinates (``MapFit.z``, U = L z), which
    reload with the fit (3-D grids predict from them)."""
    from conftest import small_2d_problem
    from gpbayes.conditional import Conditional

    p, _ = small_2d_problem(n=9)
    fit = gb.fit_map(p, gb.load_inference("map"), progress=False)
    assert fit.z is not None and not isinstance(fit.latent, Whitened)  # 2-D: U (``Z_AXES``)
    cond = Conditional(fit.problem, fit.params, fit.recipe.jitter)
    np.testing.assert_allclose(cond.to_grid(Whitened(jnp.asarray(fit.z))), fit.params["U"],
                               rtol=1e-8, atol=1e-10)
    fit.save(tmp_path)
    back = load_fit(tmp_path, fit.problem)
    np.testing.assert_allclose(back.z, fit.z)
    np.testing.assert_allclose(back.test_prediction, fit.test_prediction, rtol=1e-12)


def test_predict_2d_scattered_matches_grid():
    from gpbayes import operators as op
    from gpbayes.problem import Face

    v = ("x", "y")
    p = gb.Problem(name="p2", variables=v, domain=[(0, 1), (0, 2)], grid=(12, 10),
                   test_grid=(7, 5), equation=op.parse("u_xx + u_yy", set(v), allow_u=True,
                                                       variables=v),
                   solution=op.parse("x*y", set(v)), faces=(Face(0, "lo"), Face(1, "hi")),
                   components=3)
    f = gb.fit_map(p, paper_recipe(), steps=20, progress=False)
    xs, ys = np.meshgrid(*p.test_axes, indexing="ij")
    pts = np.stack([xs.ravel(), ys.ravel()], -1)
    np.testing.assert_allclose(f.predict(pts).reshape(xs.shape), f.test_prediction, rtol=1e-9,
                               atol=1e-12)


def test_independent_fraction_of_a_residual_field():
    """White noise counts fully, a sign-alternating residual too (rho clipped at 0), a
    smooth one as few values: AR(1) with rho = 0.9 is about (1 - 0.9) / (1 + 0.9) per axis."""
    import jax.numpy as jnp

    from gpbayes.results import _independent_fraction
    rng = np.random.default_rng(0)
    assert float(_independent_fraction(jnp.asarray(rng.normal(size=(4000,))))) > 0.95
    assert float(_independent_fraction(jnp.asarray((-1.0) ** np.arange(50)))) == 1.0
    e = rng.normal(size=(20000,))
    x = np.zeros_like(e)
    for i in range(1, x.size):
        x[i] = 0.9 * x[i - 1] + e[i]
    assert float(_independent_fraction(jnp.asarray(x))) == pytest.approx(0.1 / 1.9, rel=0.1)
    field = np.outer(x[:300], np.ones(40))
    assert float(_independent_fraction(jnp.asarray(field))) < 0.01  # constant along axis 1


def test_midpoint_source_is_computed_once_per_problem(fit, monkeypatch):
    """The check's source at the cell midpoints is the problem's, computed once: a second
    fit of the same problem reads it from the cache."""
    p = fit.problem
    p.__dict__.pop("midpoint_source", None)
    calls = []
    source_on = p.source_on
    monkeypatch.setattr(p, "source_on", lambda axes: calls.append(1) or source_on(axes))
    first = MapFit(problem=p, params=fit.params, recipe=fit.recipe, steps=0,
                   wall_time_s=0.0, stop=Stop.CONVERGED, converged=True)
    again = MapFit(problem=p, params=fit.params, recipe=fit.recipe, steps=0,
                   wall_time_s=0.0, stop=Stop.CONVERGED, converged=True)
    assert again.midpoint_residual == first.midpoint_residual == fit.midpoint_residual
    assert len(calls) == 1
    np.testing.assert_array_equal(p.midpoint_source, source_on(p.midpoints))
