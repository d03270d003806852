"""The exact posterior of the unknown of a model file, without a GP, then the posterior
of theta on a fine grid of its values by quadrature (its prior times the observations'
Gaussian likelihood). What a calibrated posterior of theta is, to compare
`gpbayes sample` with (``--compare`` an output folder). u(theta) comes from:

- 1-D: second-order finite differences on N points (the model file's equation, source,
  Dirichlet ends and observations, through its expression environment; Newton's method,
  continued from one theta to the next, where the equation is nonlinear);
- 2-D in (x, t), an evolution from initial data (an equation affine in u_t, with u, u_x
  and u_xx): the method of lines, N points in x (Chebyshev with Dirichlet ends, Fourier
  where x is periodic: spectrally accurate) and an implicit Runge-Kutta method in t
  (Radau, relative tolerance 1e-10), u at each observation by interpolation in x; on the
  two 2-D problems of benchmarks/problems, 16 and 32 points in x agree to 1e-11.

    python benchmarks/posterior_reference.py [MODEL] [--points N] [--compare DIR ...]
"""

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import stats
from scipy.integrate import solve_ivp
from scipy.interpolate import BarycentricInterpolator
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
    linear equation; None where it does not converge or its Jacobian is singular."""
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
        try:
            step = solve_banded((1, 1), bands, -r)
        except np.linalg.LinAlgError:  # a singular Jacobian: no solution from here
            return None
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


def misfit_1d(p, name: str, points: int):
    """theta -> the observations' residuals / noise, u by finite differences (1-D)."""
    ends = {f.side: float(np.ravel(v)[0]) for c, f, v in p.boundary_arrays() if c.dirichlet}
    if set(ends) != {"lo", "hi"}:
        raise SystemExit("expected Dirichlet conditions at both ends")
    lo, hi = p.domain[0]
    x = np.linspace(lo, hi, points)
    obs_x, obs_y, noise = p.observations

    last = [None]  # continuation: each solve starts from the one before

    def misfit(t, strict=True):
        u = solve(p, x, {name: t}, (ends["lo"], ends["hi"]), last[0])
        if u is None and last[0] is not None:  # a fold between: again from the line
            u = solve(p, x, {name: t}, (ends["lo"], ends["hi"]))
        last[0] = u
        if last[0] is None and strict:
            raise SystemExit(f"Newton's method did not converge at {name} = {t}")
        if last[0] is None:
            return np.full(len(obs_y), np.inf)
        return (np.interp(obs_x[:, 0], x, last[0]) - obs_y) / noise

    misfit.restart = lambda: last.__setitem__(0, None)  # the next solve from the line
    return misfit


def chebyshev(n: int, lo: float, hi: float) -> tuple:
    """n + 1 Chebyshev points on [lo, hi] (ascending) and the differentiation matrix."""
    k = np.arange(n + 1)
    y = -np.cos(np.pi * k / n)  # ascending on [-1, 1]
    c = np.where((k == 0) | (k == n), 2.0, 1.0) * (-1.0) ** k
    dy = y[:, None] - y[None, :]
    d = np.outer(c, 1 / c) / (dy + np.eye(n + 1))
    d -= np.diag(d.sum(axis=1))
    return lo + (y + 1) * (hi - lo) / 2, d * 2 / (hi - lo)


def env_on(p, x: np.ndarray, t: float) -> dict:
    """The expression environment at the points x at time t, numpy arrays (x, 1)."""
    return p.environment({"x": np.asarray(x, float)[:, None], "t": np.full((1, 1), t)})


def value_on(p, expr, x: np.ndarray, t: float, extra: dict | None = None) -> np.ndarray:
    """An expression on the points x at time t, shape (len(x),)."""
    out = expr(p.environment(env_on(p, x, t), extra))
    return np.broadcast_to(np.asarray(out, float), (len(x), 1))[:, 0]


def face_value(p, condition, x: np.ndarray, t: float) -> np.ndarray:
    """A condition's value (its expression, else the solution's) at the points x, time t."""
    return value_on(p, condition.value if condition.value is not None else p.solution, x, t)


def misfit_evolution(p, name: str, points: int):
    """theta -> the observations' residuals / noise, u by the method of lines in (x, t)."""
    if p.variables != ("x", "t") or set(p.derivatives) - {"u", "u_x", "u_xx", "u_t"}:
        raise SystemExit("expected variables x, t and an equation in u, u_x, u_xx, u_t")
    parts = {(f.axis, f.side): c for c, f in p.boundary_parts if not c.periodic}
    periodic = 0 in p.periodic
    if (1, "lo") not in parts or not parts[1, "lo"].dirichlet or not periodic and not (
            parts.get((0, "lo")) and parts.get((0, "hi")) and parts[0, "lo"].dirichlet
            and parts[0, "hi"].dirichlet):
        raise SystemExit("expected initial data (t_lo) and x periodic or Dirichlet at both ends")
    (x0, x1), (t0, _) = p.domain
    if periodic:
        x = x0 + (x1 - x0) * np.arange(points) / points
        k = 2j * np.pi * np.fft.fftfreq(points, (x1 - x0) / points)

        def fields(u):
            uh = np.fft.fft(u)
            return {"u": u, "u_x": np.fft.ifft(k * uh).real, "u_xx": np.fft.ifft(k**2 * uh).real}

        def at(u, xs):  # the trigonometric interpolant
            uh = np.fft.fft(u) / points
            return np.real(np.exp(np.outer(xs - x0, k)) @ uh)
    else:
        x, d = chebyshev(points - 1, x0, x1)
        d2 = d @ d

        def fields(u):
            return {"u": u, "u_x": d @ u, "u_xx": d2 @ u}

        def at(u, xs):
            return BarycentricInterpolator(x, u)(xs)

    u_start = face_value(p, parts[1, "lo"], x, t0)
    if p.source is None:
        raise SystemExit("expected a source expression (pde.source)")
    obs, obs_y, noise = p.observations
    times, where = np.unique(obs[:, 1], return_inverse=True)

    def rate(theta):
        def f(t, u):
            if not periodic:  # the Dirichlet ends at time t
                u = u.copy()
                u[0] = face_value(p, parts[0, "lo"], [x0], t)[0]
                u[-1] = face_value(p, parts[0, "hi"], [x1], t)[0]
            fld = {n: v[:, None] for n, v in fields(u).items()}

            def eq(u_t):
                return value_on(p, p.equation, x, t, {**theta, **fld, "u_t": u_t})

            rest, slope = eq(0.0), eq(1.0) - eq(0.0)
            du = (value_on(p, p.source, x, t) - rest) / slope
            if not periodic:
                du[0] = du[-1] = 0.0  # the ends follow their data, set in each evaluation
            return du

        return f

    def misfit(t, strict=True):
        f = rate({name: t})
        f0 = f(t0, u_start)  # the Jacobian at the start, by columns: exact where the
        jac = np.stack([f(t0, u_start + e) - f0 for e in np.eye(len(x))], axis=1)  # rate
        sol = solve_ivp(f, (t0, times[-1]), u_start, method="Radau", t_eval=times,  # is
                        rtol=1e-10, atol=1e-12, jac=jac)  # affine in u, Radau's Newton's else
        if not sol.success:
            if strict:
                raise SystemExit(f"the time integration failed at {name} = {t}: {sol.message}")
            return np.full(len(obs_y), np.inf)
        states = sol.y.T
        if not periodic:  # the ends' data at each time
            for i, ti in enumerate(times):
                states[i, 0] = face_value(p, parts[0, "lo"], [x0], ti)[0]
                states[i, -1] = face_value(p, parts[0, "hi"], [x1], ti)[0]
        u = np.array([at(states[w], np.array([xi]))[0] for w, xi in zip(where, obs[:, 0])])
        return (u - obs_y) / noise

    return misfit


def reference(p, points: int | None) -> dict:
    """The posterior of the one unknown: mean, sd, the 5% and 95% quantiles, the grid."""
    if p.ndim > 2 or len(p.unknowns) != 1 or p.observations is None:
        raise SystemExit("expected a 1-D or 2-D model file with one unknown and observations")
    (name, prior), = p.unknowns.items()
    points = points or (4001 if p.ndim == 1 else 32)
    misfit = (misfit_1d if p.ndim == 1 else misfit_evolution)(p, name, points)

    scan, nodes = (241, 801) if p.ndim == 1 else (61, 201)  # a 2-D solve takes 0.1-1 s
    coarse = np.linspace(prior[1] - 3 * prior[2], prior[1] + 3 * prior[2], scan)
    if prior[0] == "lognormal":
        coarse = np.exp(coarse)
    t = coarse[np.argmin([np.sum(misfit(v, strict=False) ** 2) for v in coarse])]
    getattr(misfit, "restart", lambda: None)()
    for _ in range(10):  # Gauss-Newton on the misfit: the centre and width of the grid
        eps = 1e-6 * max(1.0, abs(t))
        jac = (misfit(t + eps) - misfit(t - eps)) / (2 * eps)
        t -= jac @ misfit(t) / (jac @ jac)
    width = 1.0 / np.sqrt(jac @ jac)
    grid = np.linspace(t - 10 * width, t + 10 * width, nodes)
    logp = log_prior(prior, grid) - 0.5 * np.array([np.sum(misfit(v) ** 2) for v in grid])
    w = np.exp(logp - logp.max())
    w /= np.trapezoid(w, grid)
    mean = np.trapezoid(grid * w, grid)
    sd = np.sqrt(np.trapezoid((grid - mean) ** 2 * w, grid))
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (w[1:] + w[:-1]) * np.diff(grid))])
    q05, q95 = np.interp([0.05, 0.95], cdf / cdf[-1], grid)
    return {"name": name, "mean": mean, "sd": sd, "q05": q05, "q95": q95, "points": points,
            "ndim": p.ndim}


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
    ap.add_argument("--points", type=int, default=None,
                    help="1-D: finite-difference points (4001); 2-D: points in x (32)")
    ap.add_argument("--compare", nargs="*", default=[], help="gpbayes sample output folders")
    args = ap.parse_args()
    ref = reference(gb.load_model(args.model), args.points)
    print(f"{ref['name']} = {ref['mean']:.4f} +- {ref['sd']:.4f} (90% interval "
          f"{ref['q05']:.4f} to {ref['q95']:.4f}), exact posterior by quadrature, u on "
          f"{ref['points']} points" + (" in x, by the method of lines" if ref["ndim"] == 2 else
                                       ", by finite differences"))
    for folder in args.compare:
        print(compare(ref, Path(folder)))


if __name__ == "__main__":
    main()
