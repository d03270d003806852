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
   (``structured_preconditioner``), and with that inside the default's symmetric
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


def structured_preconditioner(cond: Conditional, gn) -> Callable:
    """v -> P^{-1} v in s (measurement 5) for the Laplacian, H = I + tau_e J^T J + B^T B.

    In the per-axis eigenbasis of K_j (E_j = Q_j Lambda_j^{1/2}), J = (E_x kron E_y) M
    exactly, with M = T_x kron Z_y + Z_x kron T_y: T_j = E_j^{-1} k_j'' K_j^{-1} E_j
    (symmetric), Z_j = diag(1 - jitter / lambda_j) (the mean's values). So J^T J = M G M
    with G = Lambda_x kron Lambda_y diagonal, and M = Z^{1/2} (C_x (+) C_y) Z^{1/2} with
    C_j = Z_j^{-1/2} T_j Z_j^{-1/2} = Y_j diag(sigma_j) Y_j^T: M^{-1} is two orthogonal
    mode products per axis and a division by sigma_x + sigma_y (fast diagonalization).
    P = M (tau_e G + Delta) M + B^T B, where Delta = diag(1 / (M^2)_ii) stands for the
    prior's I = M M^{-2} M: exact on the modes the equation rules. The boundary rows
    enter by Woodbury (the capacitance from P's inverse applied to every row)."""
    p, jitter = cond.problem, cond.jitter
    tau = float(1.0 / cond.equation_sd**2)
    outer_mats, inner, lam, sigma, m_sq = [], [], [], [], []
    for j, e_inv in enumerate(gn.basis.e_inv):
        k = np.asarray(cond.kernel_matrix(j)) + jitter * np.eye(p.grid[j])
        lk, q = np.linalg.eigh(k)
        lk = np.maximum(lk, jitter)
        t = (q / np.sqrt(lk)).T @ np.asarray(cond.kernel_matrix(j, 2)) @ (q / np.sqrt(lk))
        t = 0.5 * (t + t.T)
        z = np.maximum(1.0 - jitter / lk, 1e-8)
        s, y = np.linalg.eigh(t / np.sqrt(np.outer(z, z)))
        inner.append(y / np.sqrt(z)[:, None])  # Z^{-1/2} Y: sigma basis -> Q basis
        # sigma basis -> default basis (s_default = E_default^{-1} E_Q s_Q)
        outer_mats.append(np.asarray(e_inv) @ (q * np.sqrt(lk)) @ inner[-1])
        lam.append(lk), sigma.append(s)
        m_sq.append((np.sum(t * t, 0), np.diag(t) * z, z * z))
    sig = sigma[0][:, None] + sigma[1][None, :]
    (ttx, tzx, zzx), (tty, tzy, zzy) = m_sq
    m_diag = np.outer(ttx, zzy) + 2 * np.outer(tzx, tzy) + np.outer(zzx, tty)  # (M^2)_ii
    w = 1.0 / (tau * np.outer(*lam) + 1.0 / m_diag)

    def base(v):  # (M (tau G + Delta) M)^{-1}, in the default basis
        x = per_axis([a.T for a in outer_mats], v) / sig
        x = per_axis(inner, x) * w
        x = per_axis([a.T for a in inner], x) / sig
        return per_axis(outer_mats, x)

    rows = BoundaryRows(cond, gn.basis)
    scale = np.asarray(cond.boundary_scale)
    n_b = len(scale)
    r = np.asarray(rows.transpose(jnp.eye(n_b))) * scale[:, None, None]
    pr = base(r)
    cap = np.eye(n_b) + r.reshape(n_b, -1) @ pr.reshape(n_b, -1).T
    cap = 0.5 * (cap + cap.T)
    cap += 1e-12 * np.mean(np.diag(cap)) * np.eye(n_b)  # corners repeat: near-singular
    factor = sl.cho_factor(cap)

    def host(v):
        y = base(np.asarray(v))
        t = np.tensordot(y, r, axes=(list(range(-p.ndim, 0)), list(range(1, p.ndim + 1))))
        c = sl.cho_solve(factor, np.moveaxis(t, -1, 0))
        return y - np.tensordot(np.moveaxis(c, 0, -1), pr, axes=1)

    return on_host(host)


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


def two_level(gn, structured: Callable, omega: float = 0.5) -> Callable:
    """Symmetric multiplicative: omega P_d^{-1} (the default, which holds the modes the
    prior rules), the structured correction (exact on those the equation rules), omega
    P_d^{-1} again; symmetric, so PCG takes it (two more products with H each)."""
    def precond(r):
        x = omega * gn.preconditioner(r)
        x = x + structured(r - gn.mv(x))
        return x + omega * gn.preconditioner(r - gn.mv(x))

    return precond


def structured_iterations(path: str, n: int, tau_e: float) -> dict:
    """PCG iterations and seconds with the default preconditioner (at most 5000), the
    structured one and ``two_level`` (at most 1000 each: the prototype's host iterations
    cost 0.1-0.3 s on 200^2), and the structured setup's seconds: random right-hand
    side, tolerance 1e-8."""
    cond, gn, b = system(path, n, tau_e)
    solvers.pcg(gn.mv, b, gn.preconditioner, 1e-8, 2, 2)[0].block_until_ready()  # compile
    out = {}

    def run(name, pre, budget):
        t0 = time.perf_counter()
        out[name] = int(solvers.pcg(gn.mv, b, pre, 1e-8, budget, 2)[1])
        out[name + " s"] = time.perf_counter() - t0

    run("default", gn.preconditioner, 5000)
    t0 = time.perf_counter()
    structured = structured_preconditioner(cond, gn)
    out["setup s"] = time.perf_counter() - t0
    run("structured", structured, 1000)
    run("two-level", two_level(gn, structured), 1000)
    return out


def main():
    threads.limit_blas_threads()
    if "--structured" in sys.argv:
        print("5. PCG iterations (seconds): default (at most 5000) / structured, setup + PCG "
              "/ two-level (at most 1000 each)")
        for path, n in ((SIN6COS20, 40), (SIN6COS20, 70), (SIN6COS20, 100), (SIN100, 100),
                        (SIN6COS20, 200), (SIN100, 200)):
            for tau_e in (1e6, 1e10):
                r = structured_iterations(path, n, tau_e)
                print(f"   {path} {n}^2 tau_e {tau_e:g}: {r['default']} ({r['default s']:.1f} s)"
                      f" / {r['structured']} ({r['setup s']:.1f} + {r['structured s']:.1f} s)"
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
