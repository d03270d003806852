"""The Gaussian posterior of U at fixed hyperparameters: dense (QR, grids up to 4000
points) or matrix-free (preconditioned CG and perturbation-optimisation draws, any grid).

With the kernel parameters, precisions and unknown constants fixed at the MAP, the model's
log joint is quadratic in the whitened grid values Z when the PDE is linear, so the
posterior of U is exactly Gaussian: one Newton step from the MAP gives its mean, the
Hessian its precision. For a nonlinear PDE the same computation is the Laplace
approximation at the MAP.
"""

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jax.scipy.linalg import solve_triangular
from tqdm.auto import tqdm

from gpbayes import kernels, kron
from gpbayes.errors import SpecError
from gpbayes.infer import pcg
from gpbayes.infer.profile import MAX_DENSE, is_linear
from gpbayes.model import axis_factors, axis_params, data_residual, log_density

BLOCK = 16  # perturbation-optimisation draws solved together


def fixed_sites(fit, keep=()):
    """The MAP values of every site but U (and those in ``keep``)."""
    return {k: jnp.asarray(v) for k, v in fit.params.items() if k != "U" and k not in keep}


def whitened_objective(problem, fixed, jitter, trils):
    """latent dict {"Z": ..., unknown sites...} -> minus the log joint."""

    def neg(latent):
        u = kron.kron_apply(trils, latent["Z"])
        values = {**fixed, **{k: v for k, v in latent.items() if k != "Z"}, "U": u}
        return -log_density(problem, values, jitter)[0]

    return neg


def residual_vector(problem, fixed, trils, latent):
    """r(latent) with minus the log joint = |r|^2 / 2 + const at the fixed sites.

    The model's Gaussian terms as one weighted residual: the whitened prior Z, the data
    terms (``data_residual``) and the unknowns' normal priors. Solving with the Jacobian
    of r (QR) is stable where the Hessian itself is too ill-conditioned.
    """
    u = kron.kron_apply(trils, latent["Z"])
    values = {**fixed, **{k: v for k, v in latent.items() if k != "Z"}}
    parts = [latent["Z"].reshape(-1), data_residual(problem, values, trils, u)]
    for name, (_, loc, scale) in problem.unknowns.items():
        site = problem.unknown_sites[name]
        if site in latent:
            parts.append(jnp.atleast_1d((latent[site] - loc) / scale))
    return jnp.concatenate(parts)


def laplace(problem, fit, keep=()):
    """(mean latent dict, upper R with R^T R = the Gauss-Newton Hessian, unravel, trils,
    fixed sites) at the MAP's hyperparameters. ``keep`` names unknown sites to treat as
    latent together with Z.
    """
    if problem.size > MAX_DENSE:
        raise SpecError(f"the Gaussian posterior is dense: at most {MAX_DENSE} grid points",
                        "recipe", "method")
    jitter = fit.recipe.jitter
    fixed = fixed_sites(fit, keep)
    trils = axis_factors(problem, fixed, jitter)
    latent = {"Z": kron.kron_whiten(trils, jnp.asarray(fit.params["U"]))}
    latent.update({k: jnp.asarray(fit.params[k]) for k in keep})
    flat, unravel = ravel_pytree(latent)

    @jax.jit
    def gauss_newton(x):
        res = residual_vector(problem, fixed, trils, unravel(x))
        jac = jax.jacfwd(lambda y: residual_vector(problem, fixed, trils, unravel(y)))(x)
        q, r = jnp.linalg.qr(jac)
        return x - solve_triangular(r, q.T @ res, lower=False), r

    x = flat
    for _ in range(3):  # exact in one step for a linear PDE
        x, r = gauss_newton(x)
    if not bool(jnp.all(jnp.isfinite(r))):
        raise FloatingPointError("the posterior precision is not finite at the MAP")
    return unravel(x), r, unravel, trils, fixed


@dataclass
class GaussianPosterior:
    """Mean and pointwise sd of u on the grid and the test grid.

    ``solver`` "dense" (exact sd) or "cg" (sd from ``samples`` perturbation-optimisation
    draws: relative Monte-Carlo error about 1/sqrt(2 samples)); ``cg``: iterations and the
    worst relative residual of the CG solves, and whether they all reached the tolerance.
    """

    problem: object
    mean: np.ndarray
    sd: np.ndarray
    test_mean: np.ndarray
    test_sd: np.ndarray
    solver: str = "dense"
    samples: int = None
    cg: dict = None

    @property
    def converged(self):
        return self.cg is None or self.cg["converged"]

    def interval(self, mass=0.9, test=True):
        zq = float(jax.scipy.stats.norm.ppf(0.5 + mass / 2))
        m, s = (self.test_mean, self.test_sd) if test else (self.mean, self.sd)
        return m - zq * s, m + zq * s


def test_matrices(problem, values, trils):
    """k*_j L_j^{-T} per axis: along each axis they map whitened Z to u on the test grid."""
    return [solve_triangular(l, k.T, lower=True).T
            for k, l in zip(cross_matrices(problem, values), trils)]


def _dense_kron(mats):
    out = jnp.ones((1, 1))
    for m in mats:
        out = jnp.kron(out, m)
    return out


def gaussian_posterior(problem, fit, solver="auto", samples=64, seed=0, tolerance=1e-10,
                       max_iterations=20000, progress=False):
    """The Gaussian posterior of u given the MAP's hyperparameters (see the module doc).

    ``solver``: "dense" (QR of the whole Jacobian, grids up to MAX_DENSE points), "cg"
    (matrix-free, any grid: ``structured_posterior``) or "auto" (dense when it fits).
    """
    if solver == "cg" or (solver == "auto" and problem.size > MAX_DENSE):
        return structured_posterior(problem, fit, samples, seed, tolerance, max_iterations,
                                    progress)
    latent, r, _, trils, fixed = laplace(problem, fit)
    a = _dense_kron(trils)  # U = A Z; cov(Z) = (R^T R)^{-1}, so var(a_i . Z) = |R^-T a_i|^2
    mean = (a @ latent["Z"].reshape(-1)).reshape(problem.grid)
    sd = jnp.sqrt(jnp.sum(solve_triangular(r, a.T, trans=1, lower=False) ** 2, axis=0))
    c = _dense_kron(test_matrices(problem, fixed, trils))
    test_mean = (c @ latent["Z"].reshape(-1)).reshape(problem.test_grid)
    test_sd = jnp.sqrt(jnp.sum(solve_triangular(r, c.T, trans=1, lower=False) ** 2, axis=0))
    return GaussianPosterior(problem, np.asarray(mean), np.asarray(sd).reshape(problem.grid),
                             np.asarray(test_mean), np.asarray(test_sd).reshape(problem.test_grid))


def structured_posterior(problem, fit, samples=64, seed=0, tolerance=1e-10,
                         max_iterations=20000, progress=False):
    """The Gaussian posterior without forming any grid-sized matrix.

    In eigen-whitened coordinates z (``pcg``) the posterior precision is H = I + J^T J.
    The mean is one Gauss-Newton step from the MAP, H dz = -(z + J^T r), solved by
    preconditioned CG (Gauss-Newton steps repeat for a nonlinear PDE: the Laplace
    approximation). The sd comes from perturbation-optimisation draws: with
    xi ~ N(0, I) of the residual's length and eta ~ N(0, I) on the grid,
    dz = H^{-1} (eta + J^T xi) ~ N(0, H^{-1}) exactly, up to the CG tolerance.
    """
    fixed = fixed_sites(fit)
    trils = axis_factors(problem, fixed, fit.recipe.jitter)
    iterations, worst = [], 0.0

    newton = jax.jit(lambda u: pcg.newton_step(problem, fixed, trils, u, tolerance,
                                               max_iterations))
    u = jnp.asarray(fit.params["U"])
    for _ in range(1 if is_linear(problem) else fit.recipe.gauss_newton_steps):
        u, k, res = newton(u)
        iterations.append(int(k))
        worst = max(worst, float(res))

    @jax.jit
    def draws(u, key):
        z0, bases, r0, jvp, vjp, hess, _, pre = pcg.gauss_newton_system(problem, fixed, trils, u)
        k1, k2 = jax.random.split(key)
        xi = jax.random.normal(k2, (BLOCK, r0.size))
        rhs = jax.random.normal(k1, (BLOCK,) + problem.grid) + jax.vmap(vjp)(xi)
        dz, k, res = pcg.pcg(hess, rhs, pre, tolerance, max_iterations, problem.ndim)
        test = [c @ b[2] for c, b in zip(cross_matrices(problem, fixed), bases)]
        return (kron.kron_apply([b[0] for b in bases], dz), kron.kron_apply(test, dz),
                kron.kron_apply(test, z0), k, res)

    var, test_var = jnp.zeros(problem.grid), jnp.zeros(problem.test_grid)
    blocks = -(-samples // BLOCK)
    keys = jax.random.split(jax.random.PRNGKey(seed), blocks)
    for key in tqdm(keys, desc="posterior draws", unit="block", disable=not progress):
        du, dt, test_mean, k, res = draws(u, key)
        var, test_var = var + jnp.sum(du**2, 0), test_var + jnp.sum(dt**2, 0)
        iterations.append(int(k))
        worst = max(worst, float(res))
    n = blocks * BLOCK  # the draws have mean zero exactly: var = mean of squares
    # converged: every solve met the tolerance on CG's own (recursive) residual; the
    # recomputed residual |b - H x| / |b| reported beside it can sit above it by rounding
    cg = {"iterations": iterations, "max_relative_residual": worst,
          "converged": max(iterations) < max_iterations, "tolerance": tolerance}
    return GaussianPosterior(problem, np.asarray(u), np.sqrt(np.asarray(var) / n),
                             np.asarray(test_mean), np.sqrt(np.asarray(test_var) / n),
                             solver="cg", samples=n, cg=cg)


def cross_matrices(problem, values):
    """k(x*_j, x_j) per axis: grid to test grid."""
    return [kernels.cross(problem.family, axis_params(problem, values, j), jnp.asarray(x),
                          jnp.asarray(problem.axes[j])) for j, x in enumerate(problem.test_axes)]


def save(post, fit, out_dir):
    """posterior.nc (mean and sd on the grid and the test grid), summary.json, PNG."""
    import json
    from pathlib import Path

    import xarray as xr

    from gpbayes import plots
    from gpbayes.results import write_atomic

    p = post.problem
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    grid, test = list(p.variables), [f"{v}_test" for v in p.variables]
    coords = {v: x for v, x in zip(p.variables, p.axes)}
    coords.update({f"{v}_test": x for v, x in zip(p.variables, p.test_axes)})
    ds = xr.Dataset({"u_mean": (grid, post.mean), "u_sd": (grid, post.sd),
                     "u_test_mean": (test, post.test_mean), "u_test_sd": (test, post.test_sd)},
                    coords=coords,
                    attrs={"name": p.name, "method": "gaussian", "solver": post.solver})
    write_atomic(out / "posterior.nc", lambda f: ds.to_netcdf(str(f), engine="h5netcdf"))
    summary = {"name": p.name, "method": "gaussian", "solver": post.solver,
               "map_rel_l2_error": fit.rel_l2_error,
               "u_test_sd_min": float(post.test_sd.min()),
               "u_test_sd_max": float(post.test_sd.max())}
    if post.solver == "cg":
        summary.update(samples=post.samples, cg_iterations=post.cg["iterations"],
                       cg_max_relative_residual=post.cg["max_relative_residual"],
                       converged=post.converged)
    if p.exact_test is not None:
        lo, hi = post.interval(0.9)
        summary["coverage_90"] = float(np.mean((p.exact_test >= lo) & (p.exact_test <= hi)))
    write_atomic(out / "summary.json", lambda f: f.write_text(json.dumps(summary, indent=2)))
    plots.save_figure(plots.band_figure(p, post.test_mean, post.test_sd,
                                        f"{p.name}: Gaussian posterior"), out / "posterior.png")
    return summary
