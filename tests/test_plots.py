"""Figures: solution drawn finely enough, the 1-D posterior's sd panel, redrawing."""

import numpy as np
import pytest

import gpbayes as gb
from conftest import paper_recipe, small_problem
from gpbayes import plots
from gpbayes.results import LIVE
from gpbayes.stops import Stop


@pytest.fixture(scope="module")
def fit():
    return gb.fit_map(small_problem(), paper_recipe(chunk=50), steps=150, progress=False)


def test_drawing_grid_resolves_the_highest_live_frequency(fit):
    (x,) = plots.drawing_axes(fit)
    spec = fit.spectrum()["x"]
    w = np.asarray(spec["weight"])
    f = np.max(np.abs(np.asarray(spec["mu"]))[w > LIVE * w.max()])
    assert len(x) > len(fit.problem.test_axes[0])  # finer than the 50-point test grid
    assert np.diff(x).max() <= 1.0 / (plots.POINTS_PER_CYCLE * f) + 1e-12
    assert x[0] == 0.0 and x[-1] == 2.0


def test_posterior_band_has_an_sd_panel(fit):
    p = fit.problem
    sd = np.full(len(p.test_axes[0]), 1e-9)  # a band too tight to see
    fig = plots.band_figure(p, fit.test_prediction, sd, "t")
    top, bottom = fig.axes
    assert bottom.get_yscale() == "log" and bottom.get_ylabel() == "posterior sd"
    np.testing.assert_allclose(bottom.lines[0].get_ydata(), sd)


def test_redraw_a_map_folder(fit, tmp_path):
    fit.save(tmp_path)
    written = plots.redraw(tmp_path, fit.problem)
    assert sorted(w.name for w in written) == ["error.png", "solution.png", "spectrum.png"]
    assert all(w.stat().st_size > 1000 for w in written)


def test_spectrum_of_one_plain_component_is_drawn_around_it():
    """A kept plain family with one length (the smooth problems' choice): the figure's
    log axis has room around that length and the point lies inside both limits."""
    from gpbayes.infer.init import plain_params
    from gpbayes.results import MapFit

    p = small_problem().with_kernel("se", 1)
    f = MapFit(p, {**plain_params(p, 0.25), "U": np.zeros(p.grid)}, paper_recipe(), 0,
               0.0, Stop.CONVERGED, False, kernel_why="passed")
    ax = plots.spectrum_figure(f).axes[0]
    (x,), (y,) = ax.lines[0].get_xdata(), ax.lines[0].get_ydata()  # the live point
    lo, hi = ax.get_xlim()
    assert ax.get_xscale() == "log" and lo < x / 2 and hi > 2 * x
    assert ax.get_ylim()[0] < y < ax.get_ylim()[1]


def test_a_gaussian_posterior_folder_of_the_old_layout_redraws(tmp_path):
    """posterior.nc as written before it was InferenceData (the moments at the root)."""
    import json

    import xarray as xr

    p = small_problem()
    dims = [f"{p.variables[0]}_test_index"]
    n = p.test_grid[0]
    old = xr.Dataset({"u_test_mean": (dims, np.zeros(n)), "u_test_sd": (dims, np.full(n, 0.1))})
    old.to_netcdf(tmp_path / "posterior.nc", engine="h5netcdf")
    (tmp_path / "summary.json").write_text(json.dumps({"method": "gaussian"}))
    written = plots.posterior_figures(tmp_path, p)
    assert [w.name for w in written] == ["posterior.png"]
    assert (tmp_path / "posterior.png").stat().st_size > 1000


def test_2d_posterior_mean_image_is_drawn_on_the_solution_figures_points():
    """A 9 x 9 test grid is coarser than the drawing axes of a kernel with frequency 2: the
    first image is the MAP on those axes, the sd and the error ratio on the test grid."""
    from conftest import small_2d_problem

    p, fit = small_2d_problem()
    fine = plots.drawing_axes(fit)
    assert len(fine[0]) > len(p.test_axes[0])
    sd = np.full(tuple(len(t) for t in p.test_axes), 0.1)
    fig = plots.band_figure(p, fit.test_prediction, sd, "t", fit=fit)
    images = [ax.images[0] for ax in fig.axes if ax.images]
    assert images[0].get_array().shape == tuple(len(f) for f in fine)
    assert fig.axes[0].get_title().startswith("MAP")
    assert images[1].get_array().shape == sd.shape
    np.testing.assert_allclose(images[0].get_array(), np.asarray(fit.predict_grid(fine)))
