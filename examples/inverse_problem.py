"""Inverse problem: recover the coefficient k of u_xx + k u = f from sparse noisy data.

    python examples/inverse_problem.py   (about a minute on a laptop)

The truth is k = 4 with u = sin(3x) on [0, 2], so f = (k - 9) sin(3x) = -5 sin(3x).
The model knows f, noisy boundary values and 8 noisy observations of u; k is an
unknown with a lognormal prior (median 2, a factor e either way). The posterior of k
comes from NUTS on the same model (kernel hyperparameters at the MAP).
"""

from pathlib import Path

import numpy as np

import gpbayes as gb
from gpbayes import plots
from gpbayes.infer import nuts
from gpbayes.threads import limit_blas_threads

limit_blas_threads()  # one BLAS thread: 4-5x faster on 2 cores (OPENBLAS_NUM_THREADS wins)

TRUE_K = 4.0
MODEL = """
name = "inverse-k"
[pde]
variables = ["x"]
domain = [[0, 2]]
equation = "u_xx + k*u"
source = "-5*sin(3*x)"
solution = "sin(3*x)"                  # used only to report errors
[pde.boundary]
faces = "all"
value = "{b0} + ({b1} - {b0})*x/2"
[grid]
points = [50]
test_points = [200]
[kernel]
family = "se"
components = 2
[likelihood]
boundary_noise = 0.01
equation_noise = 0.1
[[observations]]
points = {points}
values = {values}
noise = 0.01
[unknowns]
k = {{ prior = "lognormal", loc = 0.693, scale = 1.0 }}
"""


def run(out="runs/inverse_problem", seed=0, chains=2, draws=500):
    rng = np.random.default_rng(seed)
    xs = np.linspace(0.15, 1.85, 8)
    values = np.sin(3 * xs) + 0.01 * rng.normal(size=xs.size)
    b0, b1 = 0.01 * rng.normal(), np.sin(6.0) + 0.01 * rng.normal()
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    (path / "model.toml").write_text(MODEL.format(
        b0=b0, b1=b1, points=[[float(x)] for x in xs], values=[float(v) for v in values]))
    problem = gb.load_model(path / "model.toml")
    fit = gb.fit_map(problem, gb.load_inference("map-adam", steps=4000), progress=False)
    result = nuts.sample_nuts(problem, fit, chains=chains, warmup=400, draws=draws,
                              progress=False)
    summary, table = nuts.save(result, path)
    plots.posterior_figures(path, problem)  # posterior.png, trace.png
    k = np.exp(result.samples["log_k"]).ravel()
    lo, hi = np.quantile(k, [0.05, 0.95])
    return {"map_k": float(np.exp(fit.params["log_k"])), "interval": (float(lo), float(hi)),
            "r_hat": float(table.loc["k", "r_hat"]), "divergences": summary["divergences"],
            "ess_bulk": float(table.loc["k", "ess_bulk"]), "wall_time_s": result.wall_time_s}


if __name__ == "__main__":
    r = run()
    print(f"true k = {TRUE_K}; MAP k = {r['map_k']:.3f}")
    print(f"90% posterior interval of k: [{r['interval'][0]:.3f}, {r['interval'][1]:.3f}]; "
          f"r_hat {r['r_hat']:.3f}, ess_bulk {r['ess_bulk']:.0f}, "
          f"{r['divergences']} divergences, NUTS {r['wall_time_s']:.1f} s")
    print("figures and posterior.nc in runs/inverse_problem")
