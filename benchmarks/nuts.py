"""NUTS wall time and ESS per second on a 1-D problem with 100 and 400 grid points.

The problem: u_xx = f on [0, 1], u = sin(6x) + x, noisy boundary values (sd 0.05),
three noisy interior observations (sd 0.02), equation noise sd 30 (tests/infer's
calibration problem). MAP (Adam, 3000 steps) first, then 4 chains x 500 draws after 500
warm-up, sequential on the CPU. ESS is the minimum bulk ESS over u on the test grid;
wall time is the NUTS run (warm-up and sampling, compilation included).

    XLA_FLAGS=--xla_cpu_multi_thread_eigen=false python benchmarks/nuts.py
    ... python benchmarks/nuts.py --hyper   # kernel hyperparameters sampled too: N = 40,
                                            # 2 chains x 400 draws after 400 warm-up
    ... python benchmarks/nuts.py --grid2d N [DRAWS [SAMPLES]]  # matrix-free NUTS, N x N

--grid2d: Poisson on [0, 1]^2, u = sin 3x sin 2y, noisy boundary values (sd 0.01),
equation noise sd 1, the kernel held at the spectral start (tests/conftest.py's
small_2d_problem); one chain, DRAWS draws (default 200) after as many warm-up, against the
matrix-free Gaussian posterior (SAMPLES perturbation-optimisation draws, default 256) of
the same model.
"""

import sys
from pathlib import Path

import numpy as np

import gpbayes as gb
from gpbayes.infer.nuts import sample_nuts
from gpbayes.infer.posterior import gaussian_posterior
from gpbayes.io import import_arviz

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path[:0] = [str(TESTS / "infer"), str(TESTS)]  # the test problems (and their conftest)
from test_posterior import noisy_problem  # noqa: E402


def hyper():
    az = import_arviz()
    p = noisy_problem(np.random.default_rng(0), n=40)
    fit = gb.fit_map(p, gb.load_inference("map-adam"), steps=3000, progress=False)
    r = sample_nuts(p, fit, chains=2, warmup=400, draws=400, progress=False, sample_hyper=True)
    s = az.summary(r.to_arviz(), var_names=["log_w_x", "log_rho_x", "u_test"])
    print(f"N=40, hyperparameters sampled: {r.wall_time_s:.1f} s, "
          f"{int(r.extra['diverging'].sum())} divergences, "
          f"{r.extra['num_steps'].mean():.0f} leapfrog steps per draw, "
          f"max r_hat {s['r_hat'].max():.3f}, min ess_bulk {s['ess_bulk'].min():.0f}")


def grid2d(n: int, draws: int = 200, samples: int = 256):
    import time

    from conftest import small_2d_problem

    az = import_arviz()
    from dataclasses import replace

    p, fit = small_2d_problem(n=n, test_grid=(25, 25))
    fit = replace(fit, recipe=replace(fit.recipe, jitter=1e-6))
    t = time.perf_counter()
    g = gaussian_posterior(p, fit, solver="cg", samples=samples)
    t_g = time.perf_counter() - t
    r = sample_nuts(p, fit, chains=1, warmup=draws, draws=draws, progress=False)
    s = az.summary(r.to_arviz(), var_names=["u_test"])
    ratio = r.u_test[0].std(0) / g.test_sd
    ess = s["ess_bulk"].min()
    print(f"grid {n}x{n}: Gaussian posterior (CG, {samples} draws) {t_g:.1f} s; NUTS "
          f"{draws}+{draws} draws {r.wall_time_s:.1f} s, "
          f"{r.extra['num_steps'].mean():.0f} leapfrog steps per draw, "
          f"{int(r.extra['diverging'].sum())} divergences, min ess_bulk {ess:.0f} "
          f"({ess / r.wall_time_s:.2f}/s), sd NUTS / Gaussian on the test grid: mean "
          f"{ratio.mean():.3f}, {np.quantile(ratio, 0.05):.3f}-{np.quantile(ratio, 0.95):.3f} "
          "(5-95%)")


def main():
    if "--hyper" in sys.argv:
        return hyper()
    if "--grid2d" in sys.argv:
        i = sys.argv.index("--grid2d")
        rest = sys.argv[i + 1:]
        return grid2d(*[int(a) for a in rest[:3]])
    az = import_arviz()
    print(f"{'N':>5} {'wall s':>8} {'min ess_bulk':>12} {'ess/s':>8} {'max r_hat':>9} "
          f"{'div':>4} {'leapfrog':>8} {'sd ratio NUTS/exact':>20}")
    for n in (100, 400):
        p = noisy_problem(np.random.default_rng(0), n=n)
        fit = gb.fit_map(p, gb.load_inference("map-adam"), steps=3000, progress=False)
        r = sample_nuts(p, fit, chains=4, warmup=500, draws=500, progress=False)
        s = az.summary(r.to_arviz(), var_names=["u_test"])
        g = gaussian_posterior(p, fit)
        ratio = r.u_test.reshape(-1, *p.test_grid).std(0) / g.test_sd
        print(f"{n:5d} {r.wall_time_s:8.1f} {s['ess_bulk'].min():12.0f} "
              f"{s['ess_bulk'].min() / r.wall_time_s:8.0f} {s['r_hat'].max():9.3f} "
              f"{int(r.extra['diverging'].sum()):4d} {r.extra['num_steps'].mean():8.1f} "
              f"{ratio.min():9.3f}-{ratio.max():.3f}", flush=True)


if __name__ == "__main__":
    main()
