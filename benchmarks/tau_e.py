"""The equation precision held at its held-out cap against its marginal maximum, over
replicated data sets, each against its exact posterior (issue 39, point 3).

    python benchmarks/tau_e.py [--problem heat|helmholtz] [--points N]
                               [--sets 8] [--first 0] [--width 0.6]

Each data set (``calibration.PROBLEMS``' generators at N points per axis, seeds first,
first + 1, ...) goes through the sampling recipe's MAP; then the unknowns' marginal
(U integrated out, the kernel held; ``pde_model(..., marginal=True)``) is evaluated on a
grid of the unknown's site (801 values within ``width`` of the MAP's) times log tau_e
(-8 to 34 in steps of 1), and the unknown's posterior taken by quadrature at four
choices of log tau_e: the held-out cap (``policy.held_out_cap``), the MAP's value, its
maximum of the evidence on that grid (``marginal.settle_tau_e`` searches within 12 of the
MAP's, by Laplace), and
log tau_e integrated under a flat prior over the grid. Prints, per set and in total,
each choice's offset from the exact posterior's mean (in exact sds), its sd ratio, and
whether its 90% interval covers the truth.
"""

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy.special import logsumexp

sys.path.insert(0, str(Path(__file__).parent))
from calibration import PROBLEMS  # noqa: E402
from posterior_reference import reference  # noqa: E402

TAUS = np.arange(-8.0, 34.5, 1.0)
CHOICES = ("held-out cap", "MAP's", "marginal maximum", "integrated")


def scan(problem: str, n: int, seed: int, width: float) -> dict:
    """One data set's marginal on the (site, log tau_e) grid and its exact posterior."""
    import jax

    import gpbayes as gb
    from gpbayes.infer.marginal import dense_potential, marginal
    from gpbayes.infer.policy import held_out_cap

    generate, name, truth, points = PROBLEMS[problem]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "set.toml"
        path.write_text(generate(np.random.default_rng(seed), n))
        model = gb.load_model(path)
    recipe = gb.map_recipe_of(gb.load_inference("nuts"))
    fit = gb.fit_map(model, recipe, progress=False)
    p = fit.problem
    site = p.unknown_sites[name]
    m = marginal(p, fit)  # its kernel's factors and U's start; log tau_e free below
    free = dense_potential(fit, m.held, m.z_start, ("log_tau_e",))
    f = jax.jit(lambda v, t: free({site: v, "log_tau_e": t}))
    sites = float(fit.params[site]) + np.linspace(-width, width, 801)
    potential = np.array([[float(f(v, t)) for v in sites] for t in TAUS])  # no vmap: a
    # vmapped batch of QRs hung here (jax 0.10, CPU)
    cap = held_out_cap(fit)
    return {"sites": sites, "potential": potential, "natural": site != name,
            "truth": truth, "exact": reference(model, points),
            "map": float(fit.params["log_tau_e"]), "cap": cap}


def moments(log_w: np.ndarray, row: dict) -> tuple:
    """Mean, sd and 90% interval of the unknown (natural units) under log weights."""
    w = np.exp(log_w - log_w.max())
    w /= w.sum()
    x = np.exp(row["sites"]) if row["natural"] else row["sites"]
    mean = w @ x
    q05, q95 = np.interp([0.05, 0.95], np.cumsum(w), x)
    return mean, np.sqrt(w @ (x - mean) ** 2), q05, q95


def choices(row: dict) -> dict:
    v = np.where(np.isfinite(row["potential"]), row["potential"], np.inf)

    def at(t):  # the potential at log tau_e t, linear between the grid's rows
        return np.array([np.interp(t, TAUS, v[:, j]) for j in range(v.shape[1])])

    evidence = logsumexp(-v, axis=1)
    cap = row["cap"] if row["cap"] is not None else row["map"]
    return {"held-out cap": moments(-at(cap), row), "MAP's": moments(-at(row["map"]), row),
            "marginal maximum": moments(-v[np.argmax(evidence)], row),
            "integrated": moments(logsumexp(-v, axis=0), row)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problem", default="heat", choices=tuple(PROBLEMS))
    ap.add_argument("--points", type=int, default=12)
    ap.add_argument("--sets", type=int, default=8)
    ap.add_argument("--first", type=int, default=0)
    ap.add_argument("--width", type=float, default=0.6, help="of the site's grid")
    args = ap.parse_args()
    from gpbayes.threads import limit_blas_threads

    limit_blas_threads()
    table = {c: [] for c in CHOICES}
    for seed in range(args.first, args.first + args.sets):
        row = scan(args.problem, args.points, seed, args.width)
        e = row["exact"]
        line = f"set {seed:2d}: exact {e['mean']:.4f} +- {e['sd']:.4f};"
        for c, (mean, sd, q05, q95) in choices(row).items():
            z, ratio = (mean - e["mean"]) / e["sd"], sd / e["sd"]
            covers = q05 <= row["truth"] <= q95
            table[c].append((z, ratio, covers))
            line += f" {c} {z:+.2f} sd, x{ratio:.2f}{'' if covers else ' MISSES'};"
        print(line, flush=True)
    print("\n| log tau_e held at | 90% intervals covering | |z| median / max | sd ratio "
          "median (range) |\n|---|---|---|---|")
    for c, rows in table.items():
        z, r, k = (np.array(a) for a in zip(*rows))
        print(f"| {c} | {k.sum()} of {len(k)} | {np.median(abs(z)):.2f} / {abs(z).max():.2f} | "
              f"{np.median(r):.2f} ({r.min():.2f}-{r.max():.2f}) |")


if __name__ == "__main__":
    main()
