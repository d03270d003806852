"""Why the U solve's preconditioner needs hundreds of CG iterations on 2-D grids: three
measurements on the Poisson operator (issue 38's design question; findings in journal.md).

1. PCG iterations of ``GaussNewton.solve`` (random right-hand side, tolerance 1e-8) with
   the rotation's blocks at ``gauss_newton.DECADES`` = 2 (the default) and one block (a
   full rotation), on n x n grids.
2. On a small grid, dense: the spectrum of P^{-1} H for the default preconditioner P.
3. The share of modes whose curvature the prior dominates (tau_e x the equation's
   diagonal below 1, in the basis of D = K'' K^{-1}'s generalized eigenvectors): where
   it is large, a preconditioner built from the equation alone (the square system's
   fast diagonalization) misses them.
4. (``--square``) PCG iterations with that preconditioner, built: P = S^T W S in U (S the
   square system, the equation at the free points and the Dirichlet rows; W their
   precisions), applied as S^{-1} W^{-1} S^{-T} by fast diagonalization (on the host),
   against the default's, on the same systems.
5. (``--structured``) PCG iterations and seconds with the equation at every point solved
   exactly by fast diagonalization and the prior approximated in its basis
   (``gpbayes.linalg.structured``, compiled), and with that inside the default's symmetric
   smoothing (``two_level``), against the default's, on the same systems.

    XLA_FLAGS=--xla_cpu_multi_thread_eigen=false OPENBLAS_NUM_THREADS=1 \\
        python benchmarks/preconditioner_study.py [--square | --structured]
"""

import sys
import time
from collections.abc import Callable
from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg as sl

import gpbayes as gb
from gpbayes import gauss_newton, threads
from gpbayes.conditional import Conditional
from gpbayes.gauss_newton import BoundaryRows
from gpbayes.infer import solvers
from gpbayes.infer.init import spectral_params
from gpbayes.linalg.kronsum import KronSum, KronSumSolver, mode_dot
from gpbayes.linalg.square import SquareSystem
from gpbayes.linalg.structured import structured_preconditioner, two_level

JITTER = 3e-11
SIN6COS20, SIN100 = "models/poisson2d-sin6cos20.toml", "models/poisson2d-sin100.toml"


def conditional(path: str, n: int, tau_e: float) -> Conditional:
    p = replace(gb.load_model(path), grid=(n, n))
    values = {**spectral_params(p, 0.3), "log_tau_e": jnp.float64(np.log(tau_e)),
              "log_tau_b": jnp.float64(np.log(1e12))}
    return Conditional(p, values, JITTER)


def iterations(path: str, n: int, tau_e: float, decades: float) -> int:
    gauss_newton.DECADES = decades
    gn = conditional(path, n, tau_e).gauss_newton(jnp.zeros((n, n)))
    b = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)))
    return int(gn.solve(b, 1e-8, 20000)[1])


def spectrum(path: str, n: int, tau_e: float) -> np.ndarray:
    """The eigenvalues of P^{-1} H, both formed densely from their matrix-vector products."""
    gauss_newton.DECADES = 2.0
    gn = conditional(path, n, tau_e).gauss_newton(jnp.zeros((n, n)))
    eye = jnp.eye(n * n).reshape(-1, n, n)
    h = np.asarray(jax.lax.map(gn.mv, eye, batch_size=256)).reshape(n * n, -1)
    p_inv = np.asarray(jax.lax.map(gn.preconditioner, eye, batch_size=256)).reshape(n * n, -1)
    root = np.linalg.cholesky(0.5 * (p_inv + p_inv.T))
    return np.linalg.eigvalsh(root.T @ (0.5 * (h + h.T)) @ root)


def prior_share(path: str, n: int, tau_e: float) -> float:
    c = conditional(path, n, tau_e)
    lam, g = [], []
    for j in range(2):
        k = np.asarray(c.kernel_matrix(j)) + JITTER * np.eye(n)
        k2 = np.asarray(c.kernel_matrix(j, 2))
        w, vecs = sl.eigh(0.5 * (k2 + k2.T), k)  # D = K'' K^{-1} = V diag(w) V^{-1}, V = K vecs
        v = k @ vecs
        lam.append(w)
        g.append(np.sum(v * v, 0))
    curvature = tau_e * (lam[0][:, None] + lam[1][None, :]) ** 2 * np.outer(g[0], g[1])
    return float(np.mean(curvature < 1))


def square_preconditioner(cond: Conditional, gn) -> Callable:
    """v -> P^{-1} v in s for P = S^T W S (the Laplacian's square system, measurement 4):
    S = [[L_II, L_IB], [0, I]] over (free, Dirichlet) points, so S^{-1} and S^{-T} are one
    fast-diagonalization solve with L_II each; in s, P^{-1} = E^{-1} P_U^{-1} E^{-T}. W:
    tau_e on the free rows, the mean boundary precision on the Dirichlet rows."""
    p, sq = cond.problem, SquareSystem(cond)
    free = np.ix_(*sq.free)
    laplacian = KronSum(tuple(d[2] for d in sq.d))  # on the whole grid
    transposed = KronSum(tuple(d[2].T for d in sq.d))
    mats = [d[2][np.ix_(f, f)] for d, f in zip(sq.d, sq.free)]
    forward = KronSumSolver(KronSum(tuple(mats)))
    backward = KronSumSolver(KronSum(tuple(m.T for m in mats)))
    inside = np.zeros(p.grid, bool)
    inside[free] = True
    tau_e = float(1.0 / cond.equation_sd**2)
    tau_b = float(np.mean(np.asarray(cond.boundary_scale) ** 2))

    def p_u_inverse(y):
        r = np.zeros_like(y)
        r[free] = backward.solve(y[free])  # S^{-T}: free rows first, then the Dirichlet rows
        r = np.where(inside, r / tau_e, (y - transposed.mv(np.where(inside, r, 0.0))) / tau_b)
        x = np.where(inside, 0.0, r)  # S^{-1}: the Dirichlet values, then the free ones
        x[free] = forward.solve(r[free] - laplacian.mv(x)[free])
        return x

    e_inv = [np.asarray(m) for m in gn.basis.e_inv]

    def host(v):
        return per_axis(e_inv, p_u_inverse(per_axis([m.T for m in e_inv], np.asarray(v))))

    return on_host(host)


def per_axis(mats, x):
    """x times mats[j] along each of the last len(mats) axes."""
    for j, m in enumerate(mats):
        x = mode_dot(m, x, x.ndim - len(mats) + j)
    return x


def on_host(host: Callable) -> Callable:
    return lambda v: jax.pure_callback(host, jax.ShapeDtypeStruct(v.shape, v.dtype), v,
                                       vmap_method="sequential")


def system(path: str, n: int, tau_e: float) -> tuple:
    """(Conditional, its Gauss-Newton operator at U = 0 with the default rotation, a
    random right-hand side): the system measurements 4 and 5 solve."""
    gauss_newton.DECADES = 2.0
    cond = conditional(path, n, tau_e)
    b = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)))
    return cond, cond.gauss_newton(jnp.zeros((n, n))), b


def square_iterations(path: str, n: int, tau_e: float) -> tuple:
    """PCG iterations (random right-hand side, tolerance 1e-8, at most 5000) with the
    default preconditioner and with ``square_preconditioner``."""
    cond, gn, b = system(path, n, tau_e)
    square = square_preconditioner(cond, gn)
    return tuple(int(solvers.pcg(gn.mv, b, pre, 1e-8, 5000, 2)[1])
                 for pre in (gn.preconditioner, square))


def structured_iterations(path: str, n: int, tau_e: float) -> dict:
    """PCG iterations and seconds with the default preconditioner (at most 5000), the
    structured one (``gpbayes.linalg.structured``, compiled: its setup inside the same
    jit) and ``two_level`` (at most 1000 each), and the structured setup's seconds (with
    one application): random right-hand side, tolerance 1e-8. Each compiled first, then
    timed."""
    cond, gn, b = system(path, n, tau_e)
    out = {}

    def structured():
        return structured_preconditioner(cond, gn.basis, BoundaryRows(cond, gn.basis))

    runs = {"default": lambda b: solvers.pcg(gn.mv, b, gn.preconditioner, 1e-8, 5000, 2),
            "structured": lambda b: solvers.pcg(gn.mv, b, structured(), 1e-8, 1000, 2),
            "two-level": lambda b: solvers.pcg(
                gn.mv, b, two_level(gn.mv, gn.preconditioner, structured()), 1e-8, 1000, 2),
            "setup": lambda b: (structured()(b), 0)}
    for name, run in runs.items():
        f = jax.jit(run)
        jax.block_until_ready(f(b))  # compile
        t0 = time.perf_counter()
        k = f(b)[1]
        jax.block_until_ready(k)
        out[name], out[name + " s"] = int(k), time.perf_counter() - t0
    return out


def main():
    threads.limit_blas_threads()
    if "--structured" in sys.argv:
        print("5. PCG iterations (seconds, compiled): default (at most 5000) / structured "
              "(its setup's seconds) / two-level (at most 1000 each)")
        for path, n in ((SIN6COS20, 40), (SIN6COS20, 70), (SIN6COS20, 100), (SIN100, 100),
                        (SIN6COS20, 200), (SIN100, 200)):
            for tau_e in (1e6, 1e10):
                r = structured_iterations(path, n, tau_e)
                print(f"   {path} {n}^2 tau_e {tau_e:g}: {r['default']} ({r['default s']:.1f} s)"
                      f" / {r['structured']} ({r['structured s']:.1f} s;"
                      f" setup {r['setup s']:.1f} s)"
                      f" / {r['two-level']} ({r['two-level s']:.1f} s)", flush=True)
        return
    if "--square" in sys.argv:
        print("4. PCG iterations, default preconditioner / the square system's (at most 5000)")
        for path, n in ((SIN6COS20, 40), (SIN6COS20, 70), (SIN6COS20, 100), (SIN100, 200)):
            for tau_e in (1e6, 1e10):
                default, square = square_iterations(path, n, tau_e)
                print(f"   {path} {n}^2 tau_e {tau_e:g}: {default} / {square}", flush=True)
        return
    print("1. PCG iterations, DECADES = 2 (default) / one block")
    for path, n in ((SIN6COS20, 40), (SIN6COS20, 70), (SIN6COS20, 100), (SIN6COS20, 200),
                    (SIN100, 400)):
        for tau_e in (1e6, 1e10):
            print(f"   {path} {n}^2 tau_e {tau_e:g}: "
                  f"{iterations(path, n, tau_e, 2.0)} / {iterations(path, n, tau_e, np.inf)}",
                  flush=True)
    ev = spectrum(SIN6COS20, 70, 1e6)
    q = np.quantile(ev, [0, 0.01, 0.5, 0.99, 1])
    print("2. P^{-1} H on 70^2, tau_e 1e6: quantiles (0, 1%, 50%, 99%, 100%)",
          " ".join(f"{x:.2g}" for x in q), f"; outside [0.5, 2]: {np.sum((ev < .5) | (ev > 2))},"
          f" outside [0.1, 10]: {np.sum((ev < .1) | (ev > 10))} of {ev.size}")
    print("3. share of modes the prior dominates (tau_e 1e6 / 1e10)")
    for path, n in ((SIN6COS20, 70), (SIN6COS20, 200), (SIN100, 400)):
        shares = [prior_share(path, n, t) for t in (1e6, 1e10)]
        print(f"   {path} {n}^2: {shares[0]:.2f} / {shares[1]:.2f}", flush=True)


if __name__ == "__main__":
    main()
