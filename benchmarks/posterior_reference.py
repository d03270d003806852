"""The exact posterior of the unknown of a 1-D model file, without a GP: u(theta) by
second-order finite differences on a fine grid (the model file's equation, source,
Dirichlet ends and observations, through its expression environment; Newton's method,
continued from one theta to the next, where the equation is nonlinear), then the
posterior of theta on a fine grid of its values by quadrature (its prior times the
observations' Gaussian likelihood). What a calibrated posterior of theta is, to compare
`gpbayes sample` with (``--compare`` an output folder).

    python benchmarks/posterior_reference.py [MODEL] [--points N] [--compare DIR]
"""

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import stats
from scipy.linalg import solve_banded

import gpbayes as gb

FIELDS = ("u", "u_x", "u_xx")


def linearised(p, x: np.ndarray, theta: dict, u: np.ndarray) -> tuple:
    """The equation at u by central differences, L[u] - f, and its derivative in each
    field at u ({field: dL/dfield(x)}, by central differences in the field's value:
    exact for an affine equation, to 1e-10 for a polynomial one)."""
    env = p.coordinates((x,))
    h = x[1] - x[0]
    fields = {"u": u, "u_x": np.gradient(u, h), "u_xx": np.zeros_like(u)}
    fields["u_xx"][1:-1] = (u[2:] - 2 * u[1:-1] + u[:-2]) / h**2

    def at(values):
        return np.broadcast_to(np.asarray(p.equation(p.environment(env, {**theta, **values}))),
                               x.shape)

    eps = 1e-6
    slope = {n: (at({**fields, n: fields[n] + eps}) - at({**fields, n: fields[n] - eps}))
             / (2 * eps) for n in FIELDS}
    return at(fields) - p.source_on((x,)), slope


def solve(p, x: np.ndarray, theta: dict, ends: tuple, start=None) -> np.ndarray:
    """u on x: L[u] = f at the inner points (central differences), u = ends at both ends;
    Newton's method from ``start`` (default: the line between the ends), one step for a
    linear equation; None where it does not converge."""
    h = x[1] - x[0]
    u = np.linspace(*ends, len(x)) if start is None else start.copy()
    u[0], u[-1] = ends
    for _ in range(50):
        r, c = linearised(p, x, theta, u)
        bands = np.zeros((3, len(x)))  # tridiagonal, row i: (i, i+1), (i, i), (i, i-1)
        bands[0, 1:] = (c["u_xx"] / h**2 + c["u_x"] / (2 * h))[:-1]
        bands[1] = -2 * c["u_xx"] / h**2 + c["u"]
        bands[2, :-1] = (c["u_xx"] / h**2 - c["u_x"] / (2 * h))[1:]
        bands[1, 0] = bands[1, -1] = 1.0  # the Dirichlet rows
        bands[0, 1] = bands[2, -2] = 0.0
        r[0] = r[-1] = 0.0
        step = solve_banded((1, 1), bands, -r)
        u += step
        if np.max(np.abs(step)) <= 1e-10 * (1 + np.max(np.abs(u))):
            return u
    return None  # no convergence (near a resonance of a linear equation: singular)


def log_prior(prior: tuple, t: np.ndarray) -> np.ndarray:
    kind, loc, scale = prior
    if kind == "normal":
        return stats.norm.logpdf(t, loc, scale)
    if kind == "lognormal":
        return np.where(t > 0, stats.lognorm.logpdf(t, scale, scale=np.exp(loc)), -np.inf)
    raise SystemExit(f"prior {kind!r}: only normal and lognormal are supported here")


def reference(p, points: int) -> dict:
    """The posterior of the one unknown: mean, sd, the 5% and 95% quantiles, the grid."""
    if p.ndim != 1 or len(p.unknowns) != 1 or p.observations is None:
        raise SystemExit("expected a 1-D model file with one unknown and observations")
    (name, prior), = p.unknowns.items()
    ends = {f.side: float(np.ravel(v)[0]) for c, f, v in p.boundary_arrays() if c.dirichlet}
    if set(ends) != {"lo", "hi"}:
        raise SystemExit("expected Dirichlet conditions at both ends")
    lo, hi = p.domain[0]
    x = np.linspace(lo, hi, points)
    obs_x, obs_y, noise = p.observations

    last = [None]  # continuation: each solve starts from the one before

    def misfit(t, strict=True):
        last[0] = solve(p, x, {name: t}, (ends["lo"], ends["hi"]), last[0])
        if last[0] is None and strict:
            raise SystemExit(f"Newton's method did not converge at {name} = {t}")
        if last[0] is None:
            return np.full(len(obs_y), np.inf)
        return (np.interp(obs_x[:, 0], x, last[0]) - obs_y) / noise

    coarse = np.linspace(prior[1] - 3 * prior[2], prior[1] + 3 * prior[2], 241)
    if prior[0] == "lognormal":
        coarse = np.exp(coarse)
    t = coarse[np.argmin([np.sum(misfit(v, strict=False) ** 2) for v in coarse])]
    last[0] = None
    for _ in range(10):  # Gauss-Newton on the misfit: the centre and width of the grid
        eps = 1e-6 * max(1.0, abs(t))
        jac = (misfit(t + eps) - misfit(t - eps)) / (2 * eps)
        t -= jac @ misfit(t) / (jac @ jac)
    width = 1.0 / np.sqrt(jac @ jac)
    grid = np.linspace(t - 10 * width, t + 10 * width, 801)
    logp = log_prior(prior, grid) - 0.5 * np.array([np.sum(misfit(v) ** 2) for v in grid])
    w = np.exp(logp - logp.max())
    w /= np.trapezoid(w, grid)
    mean = np.trapezoid(grid * w, grid)
    sd = np.sqrt(np.trapezoid((grid - mean) ** 2 * w, grid))
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (w[1:] + w[:-1]) * np.diff(grid))])
    q05, q95 = np.interp([0.05, 0.95], cdf / cdf[-1], grid)
    return {"name": name, "mean": mean, "sd": sd, "q05": q05, "q95": q95, "points": points}


def compare(ref: dict, folder: Path) -> str:
    """One line: a `gpbayes sample` folder's posterior of the unknown against the reference."""
    summary = json.loads((folder / "summary.json").read_text())
    got = summary["unknowns"][ref["name"]]
    z = (got["mean"] - ref["mean"]) / ref["sd"]
    return (f"{folder}: {ref['name']} = {got['mean']:.4f} +- {got['sd']:.4f}: "
            f"{z:+.2f} reference sd from its mean, sd ratio {got['sd'] / ref['sd']:.2f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default="benchmarks/problems/inverse-helmholtz1d.toml")
    ap.add_argument("--points", type=int, default=4001)
    ap.add_argument("--compare", nargs="*", default=[], help="gpbayes sample output folders")
    args = ap.parse_args()
    ref = reference(gb.load_model(args.model), args.points)
    print(f"{ref['name']} = {ref['mean']:.4f} +- {ref['sd']:.4f} (90% interval "
          f"{ref['q05']:.4f} to {ref['q95']:.4f}), exact posterior by quadrature, finite "
          f"differences on {ref['points']} points")
    for folder in args.compare:
        print(compare(ref, Path(folder)))


if __name__ == "__main__":
    main()
