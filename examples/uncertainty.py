"""Noisy boundary data and a few interior observations -> a credible band that widens
where the data are weak.  python examples/uncertainty.py  (about a minute on a laptop)

The PDE u_xx = f on [0, 1] with u = sin(6x) + x; the boundary values carry noise of sd
0.05, three interior observations (all in the left half) noise of sd 0.02, and the
equation is trusted to sd 1 (equation_noise). The band is narrow near the observations
and widest in the middle of the right half.
"""

from pathlib import Path

import numpy as np

import gpbayes as gb
from gpbayes import plots
from gpbayes.infer import nuts, posterior
from gpbayes.threads import limit_blas_threads

limit_blas_threads()  # one BLAS thread: 4-5x faster on 2 cores (OPENBLAS_NUM_THREADS wins)

HERE = Path(__file__).parent
MODEL = """
name = "uncertainty-demo"
[pde]
variables = ["x"]
domain = [[0, 1]]
equation = "u_xx"
source = "-36*sin(6*x)"
solution = "sin(6*x) + x"              # used only to report errors and coverage
[pde.boundary]
faces = "all"
value = "{b0} + ({b1} - {b0})*x"   # noisy data at x = 0 and x = 1
[grid]
points = [60]
test_points = [200]
[kernel]
family = "se"
components = 2
[likelihood]
boundary_noise = 0.05
equation_noise = 30.0
[[observations]]
points = [[0.1], [0.2], [0.3]]
values = {obs}
noise = 0.02
"""

rng = np.random.default_rng(1)
truth = lambda x: np.sin(6 * x) + x  # noqa: E731
b0, b1 = truth(0.0) + 0.05 * rng.normal(), truth(1.0) + 0.05 * rng.normal()
obs = [float(truth(x) + 0.02 * rng.normal()) for x in (0.1, 0.2, 0.3)]
path = Path("runs/uncertainty")
path.mkdir(parents=True, exist_ok=True)
(path / "model.toml").write_text(MODEL.format(b0=b0, b1=b1, obs=obs))

problem = gb.load_model(path / "model.toml")
fit = gb.fit_map(problem, gb.load_inference("map-adam", steps=3000))
gauss = posterior.gaussian_posterior(problem, fit)
posterior.save(gauss, fit, path / "gaussian")
result = nuts.sample_nuts(problem, fit, chains=2, warmup=300, draws=500)
summary, _ = nuts.save(result, path / "nuts")
for folder in ("gaussian", "nuts"):
    plots.posterior_figures(path / folder, problem)  # posterior.png, trace.png

x = problem.test_axes[0]
left, right = gauss.test_sd[x < 0.35].mean(), gauss.test_sd[(x > 0.55) & (x < 0.85)].mean()
lo, hi = gauss.interval(0.9)
print(f"MAP error {fit.rel_l2_error:.3f}; posterior sd near the data {left:.4f}, "
      f"far from it {right:.4f}")
print(f"90% band covers the truth at {np.mean((truth(x) >= lo) & (truth(x) <= hi)):.0%} "
      "of the test points")
print(f"NUTS: {summary['wall_time_s']:.1f} s, max r_hat {summary['u_test_max_r_hat']:.3f}, "
      f"{summary['divergences']} divergences; figures in {path}/gaussian and {path}/nuts")
