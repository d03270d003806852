"""The Gaussian posterior on 2-D grids: dense (QR) against matrix-free CG, same run.

A 2-D Poisson problem on [0, 1]^2, u = sin(6x) sin(4y), with noisy boundary data (sd 0.01)
and an equation noise sd of 1; the kernel at the spectral start (the posterior is given
the hyperparameters, so no MAP run is needed). For each grid: wall time of the CG
posterior (mean + ``--samples`` perturbation-optimisation draws, compilation included),
its CG iterations, and, where the dense solver fits (<= 4000 points), the dense time and
the largest relative difference of the means and the range of the sd ratios.

    XLA_FLAGS=--xla_cpu_multi_thread_eigen=false OPENBLAS_NUM_THREADS=1 \\
        python benchmarks/gaussian_posterior.py [--grids 40 60 100 200] [--samples 64]
"""

import argparse
import os
import time

import jax
import numpy as np

import gpbayes as gb
from gpbayes import operators as op
from gpbayes.infer.init import spectral_params
from gpbayes.infer.posterior import gaussian_posterior
from gpbayes.infer.solvers import MAX_DENSE
from gpbayes.problem import Face
from gpbayes.results import MapFit
from gpbayes.stops import Stop


def problem(n):
    v = ("x", "y")
    p = gb.Problem(name=f"poisson2d-noisy-{n}", variables=v, domain=[(0.0, 1.0)] * 2,
                   grid=(n, n), test_grid=(50, 50),
                   equation=op.parse("u_xx + u_yy", set(v), allow_u=True, variables=v),
                   solution=op.parse("sin(6*x)*sin(4*y)", set(v)),
                   faces=tuple(Face(a, s) for a in (0, 1) for s in ("lo", "hi")),
                   components=4, max_frequency=3.0, boundary_noise=0.01, equation_noise=1.0)
    return p, MapFit(p, spectral_params(p), gb.load_inference("map-adam"), 0, 0.0,
                     Stop.CONVERGED, False)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--grids", type=int, nargs="*", default=[40, 60, 100, 200])
    ap.add_argument("--samples", type=int, default=64)
    args = ap.parse_args()
    dev = jax.devices()[0]
    print(f"device: {dev.platform} {dev.device_kind}, {os.cpu_count()} host cpus; "
          f"{args.samples} draws")
    print(f"{'grid':>8} {'cg s':>7} {'CG iterations (mean step, draw blocks)':>40} | "
          f"{'dense s':>7} {'mean diff':>9} {'sd ratio':>13}")
    for n in args.grids:
        p, fit = problem(n)
        t = time.perf_counter()
        s = gaussian_posterior(p, fit, solver="cg", samples=args.samples)
        t_cg = time.perf_counter() - t
        its = s.cg["iterations"]
        line = f"{n:>4}^2 {t_cg:7.1f} {its[0]:>6} {min(its[1:]):>6}-{max(its[1:]):<6}"
        line += " " * 19 + "|"
        if p.size <= MAX_DENSE:
            t = time.perf_counter()
            g = gaussian_posterior(p, fit, solver="dense")
            t_dense = time.perf_counter() - t
            diff = np.abs(s.mean - g.mean).max() / np.abs(g.mean).max()
            ratio = s.test_sd / g.test_sd
            line += f" {t_dense:7.1f} {diff:9.1e} {ratio.min():6.3f}-{ratio.max():.3f}"
        else:
            line += " (dense: over 4000 points)"
        print(line, flush=True)


if __name__ == "__main__":
    main()
