"""Figures: solution against exact, pointwise error, learned spectrum, posterior bands,
traces; drawn from a MapFit or posterior arrays.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from gpbayes import kernels  # noqa: E402
from gpbayes.infer.diagnostics import scalar_names  # noqa: E402
from gpbayes.io import import_arviz, write_atomic  # noqa: E402
from gpbayes.results import LIVE, live_components, load_fit  # noqa: E402


def _image(ax, values, axes, names, title, **style):
    extent = [axes[1][0], axes[1][-1], axes[0][0], axes[0][-1]]
    im = ax.imshow(values, origin="lower", extent=extent, aspect="auto",
                   **{"cmap": "RdBu_r", **style})
    ax.set_xlabel(names[1])
    ax.set_ylabel(names[0])
    ax.set_title(title)
    ax.figure.colorbar(im, ax=ax)


POINTS_PER_CYCLE = 24  # drawing grids: points per cycle of the kernel's highest frequency


def drawing_axes(fit) -> tuple:
    """Axes to draw a solution on: POINTS_PER_CYCLE points per cycle of the kernel's
    highest live frequency (|mu| plus its envelope's width, 1 / length scale), at least
    the test grid, at most 20000 points in 1-D and 600 per axis in 2-D. On a coarser
    grid (the test grid of sin(100x)) a plot shows false beats."""
    p, spec = fit.problem, fit.spectrum()
    cap = 20000 if p.ndim == 1 else 600
    fam = kernels.family(p.family)
    out = []
    for (lo, hi), test, comp in zip(p.domain, p.test_axes, spec.values()):
        w = np.asarray(comp["weight"])
        live = w > LIVE * w.max()
        mu = np.asarray(comp.get("mu", np.zeros_like(w)))
        f = np.abs(mu) + 1.0 / fam.length(np.asarray(comp["rho"]))
        n = int(np.clip(np.ceil(POINTS_PER_CYCLE * (hi - lo) * f[live].max()), len(test), cap))
        out.append(test if n == len(test) else np.linspace(lo, hi, n))
    return tuple(out)


def solution_figure(fit) -> Figure | None:
    """The MAP solution on ``drawing_axes`` (beside the exact one where given), with the
    observations (points; in 2-D marked on the image) and the unknowns' values."""
    p = fit.problem
    if p.ndim > 2:
        return None
    axes = drawing_axes(fit)
    pred, exact = fit.predict_grid(axes), p.exact(axes)
    obs = p.observations
    if p.ndim == 1:
        fig, ax = plt.subplots(figsize=(8, 3.5))
        x = axes[0]
        if exact is not None:
            ax.plot(x, exact, "k-", lw=2.5, alpha=0.35, label="exact")
        ax.plot(x, pred, "C0-", lw=1, label="GP (MAP)")
        if obs is not None:
            ax.plot(np.asarray(obs[0])[:, 0], obs[1], "C3o", ms=4, label="observations")
        ax.set_xlabel(p.variables[0])
        ax.set_ylabel("u")
        ax.legend(loc="upper right", fontsize=8)
    else:
        n = 2 if exact is not None else 1
        fig, axs = plt.subplots(1, n, figsize=(5.5 * n, 4.4), squeeze=False)
        _image(axs[0, 0], pred, axes, p.variables, "GP (MAP)")
        if exact is not None:
            _image(axs[0, 1], exact, axes, p.variables, "exact")
        if obs is not None:
            pts = np.asarray(obs[0])
            axs[0, 0].plot(pts[:, 1], pts[:, 0], "k.", ms=4, label="observations")
            axs[0, 0].legend(loc="upper right", fontsize=7)
    unknowns = fit.conditional.unknowns
    known = ", ".join(f"{k} = {float(v):.6g}" for k, v in unknowns.items())
    _title(fig, f"{p.name}: solution" + (f" (MAP {known})" if known else ""))
    return fig


def error_figure(fit) -> Figure | None:
    p = fit.problem
    if p.exact_test is None or p.ndim > 2:
        return None
    axes = drawing_axes(fit)
    err = fit.predict_grid(axes) - p.exact(axes)
    if p.ndim == 1:
        fig, ax = plt.subplots(figsize=(8, 3.5))
        ax.semilogy(axes[0], np.abs(err) + 1e-300, "C3-", lw=1)
        ax.set_xlabel(p.variables[0])
        ax.set_ylabel("|u - u_exact|")
    else:
        fig, ax = plt.subplots(figsize=(5.5, 4.6))
        _image(ax, err, axes, p.variables, "u - u_exact")
    _title(fig, f"{p.name}: pointwise error\n(relative L2 {fit.rel_l2_error:.3g} on the test "
                "grid)")
    return fig


def _title(fig: Figure, text: str) -> None:
    """A figure title that fits its width (wrapped, smaller on narrow figures)."""
    import textwrap

    width = fig.get_figwidth()
    chars = max(30, int(width * 11))
    lines = [w for line in text.split("\n") for w in textwrap.wrap(line, chars)]
    fig.suptitle("\n".join(lines), fontsize=11 if width >= 7 else 10)
    fig.tight_layout()


def spectrum_figure(fit) -> Figure:
    """Weight against frequency (spectral families) or against length scale (plain
    families) per axis, live components (weight above LIVE x the largest) filled: the
    Jeffreys prior drives unneeded weights towards 0."""
    spec, live = fit.spectrum(), live_components(fit.problem, fit.params)
    fig, axs = plt.subplots(1, len(spec), figsize=(6 * len(spec), 3.8), squeeze=False)
    for ax, (v, comp) in zip(axs[0], spec.items()):
        w = np.asarray(comp["weight"])
        if "mu" in comp:
            x, label = np.asarray(comp["mu"]), f"frequency mu (cycles per unit {v})"
        else:
            x = kernels.family(fit.problem.family).length(np.asarray(comp["rho"]))
            label = f"length scale ({v} units)"
            ax.set_xscale("log")
        on = w > LIVE * w.max()
        bottom = min(max(w.min(), w.max() * 1e-12), LIVE * w.max()) / 2
        ax.vlines(x, bottom, w, color="0.6")
        ax.plot(x[on], w[on], "o", color="C0", ms=5, label=f"live ({live[v]})")
        ax.plot(x[~on], w[~on], "o", mfc="none", color="C1", ms=5, label="pruned")
        ax.axhline(LIVE * w.max(), color="0.6", lw=0.8, ls="--", label="live threshold")
        ax.set_yscale("log")
        ax.set_ylim(bottom, w.max() * 2)
        if "mu" not in comp:  # a log axis with room around one length or a few
            ax.set_xlim(x.min() / 3, x.max() * 3)
        elif x.max() - x.min() < 1:
            ax.set_xlim(x.min() - 1, x.max() + 1)
        ax.set_xlabel(label)
        ax.set_ylabel("weight w")
        ax.set_title(f"axis {v}: {live[v]} of {len(w)} components live")
        ax.legend(fontsize=8)
    what = ("learned spectrum" if fit.kernel_learned
            else "kernel spectrum (held at the chosen start)")
    _title(fig, f"{fit.problem.name}: {what}, {fit.problem.family}")
    return fig


FIGURES = {"solution.png": solution_figure, "error.png": error_figure,
           "spectrum.png": spectrum_figure}


def save_all(fit, out_dir: str | Path) -> list[str]:
    """Write every figure of a MapFit that applies; returns the file names written."""
    out_dir, written = Path(out_dir), []
    for name, make in FIGURES.items():
        fig = make(fit)
        if fig is None:
            continue
        write_atomic(out_dir / name, lambda f, fig=fig: fig.savefig(f, dpi=110, format="png"))
        plt.close(fig)
        written.append(name)
    return written


def band_figure(problem, mean: np.ndarray, sd: np.ndarray, title: str,
                fit=None) -> Figure | None:
    """Posterior mean +- 2 sd on the test grid (1-D), with the exact solution and the data;
    in 2-D: images of the mean, the sd and (with an exact solution) |error| / sd. With the
    MAP ``fit`` of a problem whose test grid is coarser than ``drawing_axes`` (a line or
    image through too few points per cycle shows false beats), the band (1-D) or the first
    image (2-D) is drawn from the MAP on the solution figure's points, the sd from the
    test grid."""
    if problem.ndim == 2:
        return _band_images(problem, mean, sd, title, fit)
    if problem.ndim != 1:
        return None
    x = problem.test_axes[0]
    fig, (ax, ax_sd) = plt.subplots(2, 1, figsize=(8, 5.6), sharex=True,
                                    gridspec_kw={"height_ratios": [2, 1]})
    finer = _finer_map(problem, fit)
    if finer is not None:
        (fine,), centre = finer
        spread = np.interp(fine, x, sd)
        ax.fill_between(fine, centre - 2 * spread, centre + 2 * spread, color="C0", alpha=0.3,
                        label="MAP ± 2 sd (sd from the test grid)")
        ax.plot(fine, centre, "C0-", lw=0.8, label="MAP")
        ax.plot(x, mean, "C0.", ms=2, label="posterior mean (test grid)")
        exact = problem.exact((fine,))
    else:
        ax.fill_between(x, mean - 2 * sd, mean + 2 * sd, color="C0", alpha=0.3,
                        label="mean ± 2 sd")
        ax.plot(x, mean, "C0-", lw=1, label="posterior mean")
        fine, exact = x, problem.exact_test
    if exact is not None:
        ax.plot(fine, exact, "k--", lw=1, label="exact")
    if problem.observations is not None:
        pts, vals, _ = problem.observations
        ax.plot(pts[:, 0], vals, "C3o", ms=4, label="observations")
        for x_obs in np.asarray(pts)[:, 0]:
            ax_sd.axvline(x_obs, color="C3", lw=0.5, alpha=0.5)
    values = [(problem.axes[0][f.index], float(v[()])) for c, f, v in problem.boundary_arrays()
              if c.dirichlet]
    if values:
        ax.plot(*zip(*values), "C2s", ms=5, label="boundary data")
    ax.set_ylabel("u")
    ax.legend(loc="best", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax_sd.semilogy(x, sd, "C0-", lw=1)  # a separate panel: a tight band vanishes above
    ax_sd.set_ylabel("posterior sd")
    ax_sd.set_xlabel(problem.variables[0])
    fig.tight_layout()
    return fig


def _finer_map(problem, fit) -> tuple | None:
    """(``drawing_axes``, the MAP on them) where the MAP ``fit`` is given and those axes
    are finer than the test grid along some axis, else None."""
    if fit is None:
        return None
    fine = drawing_axes(fit)
    if not any(len(f) > len(t) for f, t in zip(fine, problem.test_axes)):
        return None
    return fine, np.asarray(fit.predict_grid(fine))


def _band_images(problem, mean, sd, title, fit=None):
    """2-D: the mean (the MAP on the solution figure's points where the test grid is
    coarser: an image of sin(100x) on too few points shows false beats), the sd and
    |error| / sd on the test grid."""
    test = problem.test_axes
    finer = _finer_map(problem, fit)
    first = ((finer[1], "MAP (the solution figure's points)", finer[0], {}) if finer
             else (mean, "posterior mean", test, {}))
    panels = [first, (sd, "posterior sd", test, {"cmap": "viridis"})]
    if problem.exact_test is not None:
        z = np.abs(mean - problem.exact_test) / sd
        inside = np.mean(z <= 1.645)
        panels.append((z, f"|mean - exact| / sd ({inside:.0%} within the 90% band)", test,
                       {"cmap": "viridis", "vmin": 0.0, "vmax": 3.0}))
    fig, axs = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
    for ax, (values, name, axes, style) in zip(axs[0], panels):
        _image(ax, values, axes, problem.variables, name, **style)
    _title(fig, title)
    return fig


def trace_figure(idata, var_names: list[str]) -> Figure | None:
    if not var_names:
        return None
    fig = _figure_of(import_arviz().plot_trace(idata, var_names=var_names, compact=True))
    fig.tight_layout()
    return fig


def _figure_of(axes) -> Figure:
    """The figure of the axes an ArviZ plot returns (one or an array)."""
    return np.asarray(axes).ravel()[0].figure


def save_figure(fig: Figure | None, path: str | Path) -> None:
    if fig is not None:
        write_atomic(path, lambda f: fig.savefig(f, dpi=110, format="png"))
        plt.close(fig)


def nuts_figures(problem, idata, out_dir: Path, fit=None) -> list[str]:
    """posterior.png (mean and sd of u_test over the draws; ``fit``: the MAP, as in
    ``band_figure``) and trace.png (the unknowns)."""
    u = idata.posterior["u_test"]
    mean, sd = u.mean(("chain", "draw")).values, u.std(("chain", "draw")).values
    path = str(getattr(idata, "attrs", {}).get("path", ""))  # how the sampler ran
    how = "unknowns on a lattice" if path.startswith("lattice") else "NUTS"
    save_figure(band_figure(problem, mean, sd, f"{problem.name}: {how} posterior", fit),
                out_dir / "posterior.png")
    names = scalar_names(problem, idata)
    save_figure(trace_figure(idata, names), out_dir / "trace.png")
    return ["posterior.png"] + (["trace.png"] if names else [])


def gaussian_figures(problem, mean: np.ndarray, sd: np.ndarray, out_dir: Path,
                     fit=None, idata=None) -> list[str]:
    """posterior.png of the Gaussian posterior (mean and sd on the test grid; ``fit``:
    the MAP, as in ``band_figure``) and, with unknowns, posterior_unknowns.png (their
    densities from the draws in ``idata``, 94% HDI)."""
    save_figure(band_figure(problem, mean, sd, f"{problem.name}: Gaussian posterior", fit),
                out_dir / "posterior.png")
    names = scalar_names(problem, idata) if idata is not None and "posterior" in idata else []
    if not names:
        return ["posterior.png"]
    fig = _figure_of(import_arviz().plot_posterior(idata, var_names=names, hdi_prob=0.94,
                                                   round_to=4))
    _title(fig, f"{problem.name}: unknowns, Gaussian (Laplace) posterior")
    save_figure(fig, out_dir / "posterior_unknowns.png")
    return ["posterior.png", "posterior_unknowns.png"]


def redraw(folder: Path, problem) -> list[str]:
    """Redraw the figures of a result folder of ``gpbayes solve`` or ``gpbayes sample``
    (and of its map/ subfolder) from its files; returns the paths written."""
    written = []
    if (folder / "result.nc").exists():
        written += [folder / n for n in save_all(load_fit(folder, problem), folder)]
    written += posterior_figures(folder, problem)
    if (folder / "map" / "result.nc").exists():
        written += redraw(folder / "map", problem)
    return written


def posterior_figures(folder: Path, problem, fit=None) -> list[str]:
    """The figures of the posterior saved in ``folder`` (posterior.nc of NUTS or of the
    Gaussian posterior; none if there is none), drawn about its MAP (``fit``, else the
    one in folder/map); returns the paths written."""
    import json

    if not (folder / "posterior.nc").exists():
        return []
    method = json.loads((folder / "summary.json").read_text()).get("method")
    if fit is None and (folder / "map" / "result.nc").exists():
        fit = load_fit(folder / "map", problem)
    problem = fit.problem if fit is not None else problem  # the kernel the MAP kept
    idata = import_arviz().from_netcdf(str(folder / "posterior.nc"))
    if method == "gaussian":
        if "posterior_moments" in idata.groups():
            ds = idata.posterior_moments
        else:  # a file of before 2026-12-05: the moments at the file's root
            import xarray as xr

            ds, idata = xr.load_dataset(folder / "posterior.nc", engine="h5netcdf"), None
        names = gaussian_figures(problem, ds["u_test_mean"].values, ds["u_test_sd"].values,
                                 folder, fit, idata)
    else:
        names = nuts_figures(problem, idata, folder, fit)
    return [folder / n for n in names]
