"""The equation residual in the edge cells of a solved model, next to the faces whose
condition takes a derivative across them (Neumann, Robin, initial velocity). Between the
grid's first two points the conditional mean's residual is unseen by the collocation rows;
with a derivative condition its integral over that cell becomes a slope of the error
across the domain (benchmarks/README.md, "The edge cells of derivative conditions"; the
ghost points, ``grid.ghost_cells``, are the remedy).

    gpbayes solve MODEL --out DIR --no-figures
    python benchmarks/edge_residual.py MODEL DIR
"""

import argparse

import jax.numpy as jnp
import numpy as np

import gpbayes as gb
from gpbayes.results import load_fit


def rms(a) -> float:
    return float(np.sqrt(np.mean(np.square(a))))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("out_dir")
    ap.add_argument("--samples", type=int, default=41, help="points across the edge cell")
    args = ap.parse_args()
    p = gb.load_model(args.model)
    fit = load_fit(args.out_dir, p)
    cond = fit.conditional
    inner = p.midpoints
    print(f"{args.model}: error {fit.rel_l2_error:.3g}, "
          f"residual at all cell midpoints (rms) {rms(cond.residual_on(fit.u, inner)):.3g}")
    for c, face in p.boundary_parts:
        j = face.axis
        if not c.crosses(face, p.variables):
            continue
        x = np.asarray(p.domain_axes[j])
        a, b = (x[0], x[1]) if face.side == "lo" else (x[-2], x[-1])
        t = np.linspace(a, b, args.samples)
        axes = tuple(jnp.asarray(t) if k == j else jnp.asarray(v)
                     for k, v in enumerate(p.domain_axes))
        r = np.moveaxis(np.asarray(cond.residual_on(fit.u, axes)), j, 0)
        integral = np.trapezoid(r, t, axis=0)
        print(f"  {face.name(p.variables)} ({c.operator.text if c.operator else 'u'}): "
              f"residual across the edge cell (rms) {rms(r):.3g}, "
              f"its integral over the cell (rms over the face) {rms(integral):.3g}")


if __name__ == "__main__":
    main()
