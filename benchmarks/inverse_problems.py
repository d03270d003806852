"""Write the three inverse problems of benchmarks/README.md (seeded noisy observations).

    python benchmarks/inverse_problems.py [--seed N] [--points N] [--out DIR]

inverse-helmholtz1d: u_xx + k u = f on [0, 1], u = sin 6x + 0.5 cos 11x, true k = 20,
  15 observations with noise sd 0.01, prior k ~ Normal(10, 10), 200 points.
inverse-nonlinear1d: u_xx + a u (u^2 - 1) = f on [0, 1], u = sin 3x + 0.5 sin 8x, true
  a = 5, 20 observations with noise sd 0.01, prior a ~ Normal(3, 3), 200 points.
inverse-advection2d: u_t + c u_x = 0 on [0, 1] x [0, 0.5], u = sin(2 pi (x - 2t)),
  true c = 2, inflow (x = 0) and initial data, 40 observations with noise sd 0.01,
  prior c ~ Normal(1, 2), a 100 x 100 grid (--points).
inverse-heat2d: u_t = nu u_xx on [0, 1] x [0, 0.5], u = e^(-0.2 pi^2 t) sin(pi x) +
  0.5 e^(-1.8 pi^2 t) sin(3 pi x), true nu = 0.2, u = 0 at both ends and initial data,
  30 observations with noise sd 0.01, prior log nu ~ Normal(-1, 1), a 50 x 50 grid.
inverse-advection-periodic2d: u_t + c u_x = 0, periodic in x, on [0, 1] x [0, 0.5],
  u = sin(2 pi (x - 2t)) + 0.3 cos(4 pi (x - 2t)), true c = 2, initial data only, 40
  observations with noise sd 0.01, prior c ~ Normal(1, 2), a 100 x 100 grid (--points).
  Both are smooth for every value of the unknown (no inflow data taken at the truth).
"""

import argparse
from pathlib import Path

import numpy as np


def _unit_interval(name: str, pde: str, u, count: int, unknown: str, rng, n: int) -> str:
    """A 1-D model file on [0, 1] (``pde``: its equation, source and solution lines;
    Dirichlet data from the solution at both ends) with ``count`` observations of ``u``
    at uniform points in [0.05, 0.95], noise sd 0.01, and one unknown."""
    xs = np.sort(rng.uniform(0.05, 0.95, count))
    vals = u(xs) + 0.01 * rng.normal(size=count)
    return f'''name = "{name}"
[pde]
variables = ["x"]
domain = [[0, 1]]
{pde}
[pde.boundary]
faces = "all"
[grid]
points = [{n}]
test_points = [300]
[[observations]]
points = {[[float(x)] for x in xs]}
values = {[float(v) for v in vals]}
noise = 0.01
[unknowns]
{unknown}
'''


def helmholtz(rng, n=200):
    return _unit_interval(
        "inverse-helmholtz1d", 'equation = "u_xx + k*u"\n'
        'source = "(20 - 36)*sin(6*x) + 0.5*(20 - 121)*cos(11*x)"\n'
        'solution = "sin(6*x) + 0.5*cos(11*x)"',
        lambda x: np.sin(6 * x) + 0.5 * np.cos(11 * x), 15,
        'k = { prior = "normal", loc = 10.0, scale = 10.0 }', rng, n)


def nonlinear(rng, n=200):
    u = "(sin(3*x) + 0.5*sin(8*x))"
    return _unit_interval(
        "inverse-nonlinear1d", 'equation = "u_xx + a*u*(u**2 - 1)"\n'
        f'source = "-9*sin(3*x) - 32*sin(8*x) + 5*{u}*({u}**2 - 1)"\n'
        f'solution = "{u[1:-1]}"',
        lambda x: np.sin(3 * x) + 0.5 * np.sin(8 * x), 20,
        'a = { prior = "normal", loc = 3.0, scale = 3.0 }', rng, n)


def _evolution(name: str, pde: str, u, count: int, unknown: str, rng, n: int,
               t_end: float, faces: str, test: int = 100) -> str:
    """A model file on [0, 1] x [0, t_end] (``pde``: its equation, source, solution and
    periodic lines) with data on ``faces`` from the solution, ``count`` observations of
    ``u`` (noise sd 0.01) at uniform points inside, and one unknown, on an n x n grid
    (a test x test test grid)."""
    pts = np.column_stack([rng.uniform(0.05, 0.95, count),
                           rng.uniform(0.1 * t_end, 0.9 * t_end, count)])
    vals = u(pts[:, 0], pts[:, 1]) + 0.01 * rng.normal(size=count)
    return f'''name = "{name}"
[pde]
variables = ["x", "t"]
domain = [[0, 1], [0, {t_end}]]
{pde}
[[pde.boundary]]
faces = {faces}
[grid]
points = [{n}, {n}]
test_points = [{test}, {test}]
[kernel]
family = "student-t-mixture"
components = 10
max_frequency = 5
[[observations]]
points = {pts.tolist()}
values = {vals.tolist()}
noise = 0.01
[unknowns]
{unknown}
'''


def advection(rng, n=100):
    """u_t + c u_x = 0 with inflow (x_lo) and initial data from the solution at c = 2."""
    return _evolution(
        "inverse-advection2d", 'equation = "u_t + c*u_x"\nsolution = "sin(2*pi*(x - 2*t))"\n'
        'source = "0"', lambda x, t: np.sin(2 * np.pi * (x - 2 * t)), 40,
        'c = { prior = "normal", loc = 1.0, scale = 2.0 }', rng, n, 0.5, '["x_lo", "t_lo"]',
        test=120)


def heat(rng, n=50):
    """u_t = nu u_xx from initial data, u = 0 at both ends: smooth for every nu > 0."""
    def u(x, t):
        return (np.exp(-np.pi**2 * 0.2 * t) * np.sin(np.pi * x)
                + 0.5 * np.exp(-9 * np.pi**2 * 0.2 * t) * np.sin(3 * np.pi * x))

    return _evolution(
        "inverse-heat2d", 'equation = "u_t - nu*u_xx"\nsource = "0"\n'
        'solution = "exp(-pi**2*0.2*t)*sin(pi*x) + 0.5*exp(-9*pi**2*0.2*t)*sin(3*pi*x)"',
        u, 30, 'nu = { prior = "lognormal", loc = -1.0, scale = 1.0 }', rng, n, 0.5,
        '["x_lo", "x_hi", "t_lo"]')


def advection_periodic(rng, n=100):
    """u_t + c u_x = 0, periodic in x, from initial data: u = u0(x - c t), smooth for every c."""
    def u(x, t):
        return np.sin(2 * np.pi * (x - 2 * t)) + 0.3 * np.cos(4 * np.pi * (x - 2 * t))

    return _evolution(
        "inverse-advection-periodic2d", 'equation = "u_t + c*u_x"\nsource = "0"\n'
        'solution = "sin(2*pi*(x - 2*t)) + 0.3*cos(4*pi*(x - 2*t))"\nperiodic = ["x"]',
        u, 40, 'c = { prior = "normal", loc = 1.0, scale = 2.0 }', rng, n, 0.5, '["t_lo"]')


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--points", type=int, default=100, help="grid points per axis (2-D)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "problems"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "inverse-helmholtz1d.toml").write_text(helmholtz(np.random.default_rng(args.seed)))
    (out / "inverse-nonlinear1d.toml").write_text(nonlinear(np.random.default_rng(args.seed)))
    (out / "inverse-advection2d.toml").write_text(
        advection(np.random.default_rng(args.seed), args.points))
    (out / "inverse-heat2d.toml").write_text(heat(np.random.default_rng(args.seed)))
    (out / "inverse-advection-periodic2d.toml").write_text(
        advection_periodic(np.random.default_rng(args.seed), args.points))
    print(f"wrote {out}/inverse-helmholtz1d.toml, inverse-nonlinear1d.toml, "
          "inverse-advection2d.toml, inverse-heat2d.toml, inverse-advection-periodic2d.toml")


if __name__ == "__main__":
    main()
