"""The reference posterior of k for a 1-D model file u_xx + k u = f with Dirichlet ends and
observations (benchmarks/problems/inverse-helmholtz1d.toml): u(k) by second-order finite
differences on a fine grid, k by Gauss-Newton least squares on the observations, its sd
from the Fisher information (the prior N(10, 10^2) is negligible here). No GP: what a
calibrated posterior of k should look like.

    python benchmarks/inverse_reference.py [MODEL] [--points N]
"""

import argparse

import numpy as np

import gpbayes as gb


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default="benchmarks/problems/inverse-helmholtz1d.toml")
    ap.add_argument("--points", type=int, default=4001)
    args = ap.parse_args()
    p = gb.load_model(args.model)
    if p.ndim != 1 or set(p.unknowns) != {"k"} or p.observations is None:
        raise SystemExit("expected a 1-D model with one unknown k and observations")
    lo, hi = p.domain[0]
    x = np.linspace(lo, hi, args.points)
    h = x[1] - x[0]
    f = p.source_on((x,))
    ends = p.exact((np.array([lo, hi]),))
    points, values, noise = p.observations

    def predict(k):
        n = len(x)
        a = (np.diag(np.full(n, -2 / h**2 + k)) + np.diag(np.full(n - 1, 1 / h**2), 1)
             + np.diag(np.full(n - 1, 1 / h**2), -1))
        a[0], a[-1] = 0, 0
        a[0, 0] = a[-1, -1] = 1
        b = f.copy()
        b[0], b[-1] = ends
        return np.interp(points[:, 0], x, np.linalg.solve(a, b))

    k, eps = float(p.unknowns["k"][1]), 1e-5
    ks = np.linspace(k - 3 * p.unknowns["k"][2], k + 3 * p.unknowns["k"][2], 121)
    k = ks[np.argmin([np.sum((predict(t) - values) ** 2) for t in ks])]
    for _ in range(8):
        jac = (predict(k + eps) - predict(k - eps)) / (2 * eps)
        k -= jac @ (predict(k) - values) / (jac @ jac)
    sd = noise / np.sqrt(jac @ jac)
    print(f"k = {k:.4f} +- {sd:.4f} (90% interval {k - 1.645 * sd:.3f} to "
          f"{k + 1.645 * sd:.3f}), finite differences on {args.points} points")


if __name__ == "__main__":
    main()
