"""One U solve on the Poisson operator: the structured direct solve of the square
collocation system (``gpbayes.linalg.square``: fast diagonalization, Dirichlet values
eliminated) against the PCG solve of the regularized Gauss-Newton system that the profile
solver runs each sweep (``GaussNewton.solve``, at tau_e = 1e6 and 1e10, tau_b = 1e12 x
the boundary weight, tolerance 1e-8), in the same run, on 100^2, 200^2, 400^2 and 32^3.

The two solve different systems (the square one is the precisions' limit without the
prior): the table says what each costs, and the relative error of each U on the grid.

    XLA_FLAGS=--xla_cpu_multi_thread_eigen=false OPENBLAS_NUM_THREADS=1 \\
        python benchmarks/u_solve.py [--quick] [--json FILE]
"""

import argparse
import json
import platform
import subprocess
import time
from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np

import gpbayes as gb
from gpbayes.conditional import Conditional
from gpbayes.infer.init import plain_params, spectral_params
from gpbayes.linalg.square import SquareSystem

CASES = [("models/poisson2d-sin6cos20.toml", (100, 100)),
         ("models/poisson2d-sin6cos20.toml", (200, 200)),
         ("models/poisson2d-sin100.toml", (400, 400)),
         ("../shared/suite/g03-poisson3d.toml", (32, 32, 32))]
JITTER = 3e-11


def setup(path: str, grid: tuple):
    """The problem on ``grid`` and its start's kernel: the spectral start (factor 0.3),
    or one se component of length 0.25 where the model file's family has no frequencies
    to read (the smooth 3-D case)."""
    p = replace(gb.load_model(path), grid=grid)
    if p.ndim == 3:
        p = p.with_kernel("se", 1)
        return p, plain_params(p, 0.25)
    return p, spectral_params(p, 0.3)


def error(p, u) -> float:
    exact = np.asarray(p.exact(p.axes))
    return float(np.linalg.norm(np.asarray(u) - exact) / np.linalg.norm(exact))


def direct(p, values) -> dict:
    t0 = time.perf_counter()
    system = SquareSystem(Conditional(p, values, JITTER))
    t1 = time.perf_counter()
    sol = system.solve()
    t2 = time.perf_counter()
    return {"setup_s": t1 - t0, "solve_s": t2 - t1, "iterations": sol.iterations,
            "error": error(p, sol.u)}


def pcg(p, values, log_tau_e: float) -> dict:
    values = {**values, "log_tau_e": jnp.float64(log_tau_e),
              "log_tau_b": jnp.float64(np.log(1e12))}

    @jax.jit
    def solve(values):
        gn = Conditional(p, values, JITTER).gauss_newton(jnp.zeros(p.grid))
        s, k, res = gn.step(1e-8, 20000)
        return gn.to_grid(s), k, res

    jax.block_until_ready(solve(values))  # compile
    t = time.perf_counter()
    u, k, res = jax.block_until_ready(solve(values))
    return {"solve_s": time.perf_counter() - t, "iterations": int(k), "error": error(p, u)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the 100^2 case only")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    rows = []
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    print(f"commit {commit}, {platform.processor() or platform.machine()}, "
          f"{jax.devices()[0].platform}")
    print("| grid | direct setup s | direct solve s | direct error | PCG tau_e | PCG its | "
          "PCG s | PCG error |")
    print("|---|---|---|---|---|---|---|---|")
    for path, grid in CASES[:1] if args.quick else CASES:
        p, values = setup(path, grid)
        d = direct(p, values)
        for log_tau in (np.log(1e6), np.log(1e10)):
            c = pcg(p, values, log_tau)
            rows.append({"grid": grid, "direct": d, "pcg": c, "tau_e": float(np.exp(log_tau))})
            print(f"| {'x'.join(map(str, grid))} | {d['setup_s']:.2f} | {d['solve_s']:.3f} | "
                  f"{d['error']:.1e} | {np.exp(log_tau):.0e} | {c['iterations']} | "
                  f"{c['solve_s']:.2f} | {c['error']:.1e} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
