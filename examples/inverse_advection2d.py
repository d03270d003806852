"""2-D inverse problem: the speed c of u_t + c u_x = 0 from 40 noisy observations.

    python examples/inverse_advection2d.py   (about a minute on a 2-core laptop)

The truth is c = 2 with u = sin(2 pi (x - 2 t)) on [0, 1] x [0, 0.5]; the model knows
the inflow (x = 0) and initial (t = 0) data, 40 interior observations with noise sd
0.01, and a normal prior on c (mean 1, sd 2). The MAP is the one `gpbayes sample`
starts from (`map_recipe_of`: jitter 1e-6, the equation precision held out on the cell
midpoints), then the Gaussian posterior: c's Laplace approximation on its marginal (U
integrated out, the PDE a constraint), U's Gaussian given c. Prints c's 94% HDI and how
much of u's 90% band covers the exact solution; draws both. The inflow data are the
truth's, so for any other c the exact solution has a kink along the characteristic from
the corner, which the GP's smooth prior penalises (issue 39); no exact posterior of c is
computed for this problem (benchmarks/problems/inverse-advection-periodic2d.toml, the
same question without inflow, has one).
"""

from pathlib import Path

import numpy as np

import gpbayes as gb
from gpbayes import plots
from gpbayes.infer import posterior
from gpbayes.threads import limit_blas_threads

limit_blas_threads()  # one BLAS thread: 4-5x faster on 2 cores (OPENBLAS_NUM_THREADS wins)

TRUE_C = 2.0
MODEL = """
name = "inverse-advection2d"
[pde]
variables = ["x", "t"]
domain = [[0, 1], [0, 0.5]]
equation = "u_t + c*u_x"
source = "0"
solution = "sin(2*pi*(x - 2*t))"       # the inflow and initial data; errors and coverage
[pde.boundary]
faces = ["x_lo", "t_lo"]
[grid]
points = [{n}, {n}]
test_points = [60, 60]
[kernel]
family = "student-t-mixture"
components = 10
max_frequency = 5
[[observations]]
points = {points}
values = {values}
noise = 0.01
[unknowns]
c = {{ prior = "normal", loc = 1.0, scale = 2.0 }}
"""


def run(out="runs/inverse_advection2d", n=40, seed=0, figure=True):
    rng = np.random.default_rng(seed)
    pts = np.column_stack([rng.uniform(0.05, 0.95, 40), rng.uniform(0.05, 0.45, 40)])
    vals = np.sin(2 * np.pi * (pts[:, 0] - TRUE_C * pts[:, 1])) + 0.01 * rng.normal(size=40)
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    (path / "model.toml").write_text(MODEL.format(n=n, points=pts.tolist(),
                                                  values=vals.tolist()))
    problem = gb.load_model(path / "model.toml")
    fit = gb.fit_map(problem, gb.map_recipe_of(gb.load_inference("gaussian")), progress=False)
    post = posterior.gaussian_posterior(fit.problem, fit)
    summary = posterior.save(post, fit, path)  # posterior.nc, summary.json
    plots.posterior_figures(path, fit.problem)  # posterior.png
    if figure:
        draw(fit.problem, post, summary["unknowns"]["c"], path / "inverse_advection2d.png")
    return summary


def draw(problem, post, c, file):
    """c's posterior density, and u's 90% band and the exact solution about the
    posterior mean along t = 0.25."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    d = np.linspace(-4, 4, 200) * c["sd"] + c["mean"] - TRUE_C  # c - truth
    a.plot(d, np.exp(-0.5 * ((d + TRUE_C - c["mean"]) / c["sd"]) ** 2), label="posterior")
    a.axvline(0.0, color="k", ls="--", label="truth")
    a.set_xlabel(f"c - {TRUE_C:g}")
    a.ticklabel_format(axis="x", style="sci", scilimits=(0, 0))
    a.legend()
    x, t = problem.test_axes
    j = int(np.argmin(np.abs(t - 0.25)))
    lo, hi = post.interval(0.9)
    m = post.test_mean[:, j]
    b.fill_between(x, lo[:, j] - m, hi[:, j] - m, alpha=0.3, label="90% band - mean")
    b.plot(x, problem.exact_test[:, j] - m, "k", label="exact - mean")
    b.set_xlabel(f"x (t = {t[j]:.2f})")
    b.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    b.legend()
    fig.tight_layout()
    fig.savefig(file, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    s = run()
    c = s["unknowns"]["c"]
    print(f"true c = {TRUE_C}; c = {c['mean']:.5f} +- {c['sd']:.5f}, 94% HDI "
          f"[{c['hdi_3%']:.5f}, {c['hdi_97%']:.5f}]")
    print(f"u's 90% band covers the exact solution at {100 * s['coverage_90']:.0f}% of the "
          f"test points; MAP error {s['map_rel_l2_error']:.1e}")
    print("figures, posterior.nc and summary.json in runs/inverse_advection2d")
