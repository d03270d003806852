"""The Gaussian posterior of U at the MAP's hyperparameters (exact for a linear PDE, the
Laplace approximation otherwise): dense QR, or PCG with perturbation-optimisation draws.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.flatten_util import ravel_pytree
from jax.scipy.linalg import solve_triangular
from tqdm.auto import tqdm

from gpbayes.conditional import Conditional, with_factors
from gpbayes.coordinates import Whitened
from gpbayes.errors import SpecError
from gpbayes.infer import lattice
from gpbayes.infer.diagnostics import laplace_failures
from gpbayes.infer.marginal import LAPLACE_MAX, integrates_u, marginal, matrix_free
from gpbayes.infer.solvers import MAX_DENSE, dense_gauss_newton
from gpbayes.io import import_arviz, write_atomic, write_json
from gpbayes.problem import Problem
from gpbayes.results import MapFit, fixed_sites, grid_coords

if TYPE_CHECKING:
    import arviz

BLOCK = 16  # perturbation-optimisation draws solved together


def residual_vector(cond: Conditional, latent: dict) -> Array:
    """r(latent) with minus the log joint = |r|^2 / 2 + const at the conditional's sites.

    The model's Gaussian terms as one weighted residual: the data terms
    (``data_residual`` from the whitened Z, heavy rows first), the whitened prior Z and
    the normal priors of the unknowns in ``latent``. Solving with the Jacobian of r (QR)
    is stable where the Hessian itself is too ill-conditioned.
    """
    p = cond.problem
    unknowns = {k: v for k, v in latent.items() if k != "Z"}
    cond = cond.with_values(unknowns) if unknowns else cond
    parts = [cond.data_residual(Whitened(latent["Z"])), latent["Z"].reshape(-1)]
    for name, (_, loc, scale) in p.unknowns.items():
        site = p.unknown_sites[name]
        if site in unknowns:
            parts.append(jnp.atleast_1d((unknowns[site] - loc) / scale))
    return jnp.concatenate(parts)


def laplace(problem: Problem, fit: MapFit, keep: tuple = ()) -> tuple:
    """(mean latent dict, upper R with R^T R = the Gauss-Newton Hessian, unravel, the
    Conditional at the MAP's other sites) at the MAP. ``keep`` names unknown sites to
    treat as latent together with Z.
    """
    if problem.size > MAX_DENSE:
        raise SpecError(f"the Gaussian posterior is dense: at most {MAX_DENSE} grid points",
                        "recipe", "method")
    cond = with_factors(problem, {**fixed_sites(fit, keep),
                                  **{k: jnp.asarray(fit.params[k]) for k in keep}},
                        fit.recipe.jitter)
    latent = {"Z": cond.whiten(jnp.asarray(fit.params["U"]))}
    latent.update({k: jnp.asarray(fit.params[k]) for k in keep})
    flat, unravel = ravel_pytree(latent)
    step = jax.jit(lambda x: dense_gauss_newton(
        lambda y: residual_vector(cond, unravel(y)), x, 1))
    x = flat
    for _ in range(3):  # exact in one step for a linear PDE
        x, r = step(x)
    if not bool(jnp.all(jnp.isfinite(r))):
        raise FloatingPointError("the posterior precision is not finite at the MAP")
    return unravel(x), r, unravel, cond


@dataclass
class GaussianPosterior:
    """Mean and pointwise sd of u on the grid and the test grid.

    ``solver`` "dense" (exact sd), "marginal" (the unknowns' Laplace approximation on their
    marginal, U given them exact: ``marginal_posterior``) or "cg" (sd from ``samples``
    perturbation-optimisation draws: relative Monte-Carlo error about 1/sqrt(2 samples));
    ``cg``: iterations and the worst relative residual of the CG solves, and whether they
    all reached the tolerance.
    The unknowns: see ``gaussian_posterior`` (their Laplace marginal, or latent with U).
    """

    problem: object
    mean: np.ndarray
    sd: np.ndarray
    test_mean: np.ndarray
    test_sd: np.ndarray
    solver: str = "dense"
    samples: int = None
    cg: dict = None
    unknowns: dict = None  # {name: {"site", "mean", "sd"}}: the unknowns' Laplace marginals
    failures: tuple = ()  # ``diagnostics.laplace_failures`` of the precision's factor
    unknown_cov: np.ndarray = None  # the unknowns' covariance, in their sites' coordinates
    tau_e: dict = None  # log tau_e's marginal maximum (``marginal.settle_tau_e``), where held there

    @property
    def converged(self) -> bool:
        return (self.cg is None or self.cg["converged"]) and not self.failures

    def mean_fit(self, fit: MapFit) -> MapFit:
        """The MAP ``fit`` with U and the unknowns at this posterior's means (what the trust
        check judges for the "marginal" solver, whose mean is not the joint MAP's)."""
        sites = {u["site"]: u["mean"] for u in (self.unknowns or {}).values()}
        return fit.at({"U": self.mean, **sites})

    def interval(self, mass: float = 0.9, test: bool = True) -> tuple:
        zq = float(jax.scipy.stats.norm.ppf(0.5 + mass / 2))
        m, s = (self.test_mean, self.test_sd) if test else (self.mean, self.sd)
        return m - zq * s, m + zq * s


def _dense_kron(mats):
    out = jnp.ones((1, 1))
    for m in mats:
        out = jnp.kron(out, m)
    return out


def gaussian_posterior(problem: Problem, fit: MapFit, solver: str = "auto", samples: int = 64,
                       seed: int = 0, tolerance: float = 1e-10, max_iterations: int = 20000,
                       progress: bool = False) -> "GaussianPosterior":
    """The Gaussian posterior of u given the MAP's hyperparameters (see the module doc).

    ``solver``: "dense" (QR of the whole Jacobian, grids up to MAX_DENSE points), "cg"
    (matrix-free, any grid: ``structured_posterior``); both the joint Laplace
    approximation of U and the unknowns. "auto": with unknowns ``marginal_posterior``
    where U can be integrated out (grids up to ``marginal.LAPLACE_MAX`` points, or
    beyond where ``marginal.matrix_free``), else dense when it fits, else "cg".
    """
    if solver == "auto" and (integrates_u(problem, LAPLACE_MAX) or matrix_free(problem)):
        return marginal_posterior(problem, fit, seed, samples)
    if solver == "cg" or (solver == "auto" and problem.size > MAX_DENSE):
        return structured_posterior(problem, fit, samples, seed, tolerance, max_iterations,
                                    progress)
    sites = tuple(problem.unknown_sites.values())
    latent, r, _, cond = laplace(problem, fit, keep=sites)
    z = latent["Z"]
    zero = {k: jnp.zeros_like(v) for k, v in latent.items()}

    def embed(rows, site="Z"):  # rows of a map from one latent part -> from the whole latent
        return jax.vmap(lambda v: ravel_pytree({**zero, site: v.reshape(zero[site].shape)})[0])(
            rows)

    def sd(rows):  # cov = (R^T R)^{-1}: var(a . x) = |R^-T a|^2
        return jnp.sqrt(jnp.sum(solve_triangular(r, rows.T, trans=1, lower=False) ** 2, axis=0))

    rows = [embed(jnp.ones((1, 1)), site) for site in sites]
    w = (solve_triangular(r, jnp.concatenate(rows).T, trans=1, lower=False) if rows
         else jnp.zeros((0, 0)))
    cov = w.T @ w  # the unknowns' covariance (R^T R)^{-1} restricted to their sites
    return GaussianPosterior(
        problem, np.asarray(cond.to_grid(Whitened(z))),
        np.asarray(sd(embed(_dense_kron(cond.trils)))).reshape(problem.grid),
        np.asarray(cond.predict_grid(Whitened(z), problem.test_axes)),
        np.asarray(sd(embed(_test_rows(cond)))).reshape(problem.test_grid),
        unknowns=_unknowns(problem, latent, cov),
        failures=tuple(laplace_failures(np.diag(np.asarray(r)))), unknown_cov=np.asarray(cov))


def marginal_posterior(problem: Problem, fit: MapFit, seed: int = 0,
                       samples: int = 64) -> "GaussianPosterior":
    """With unknowns where U can be integrated out (``gaussian_posterior``): the unknowns'
    Laplace approximation on their marginal (U integrated out, the PDE a constraint: the
    model NUTS samples), and U's Gaussian given them at their mode, widened by its mode's
    change with them. The joint Laplace approximation of U and the unknowns counts the
    source as evidence: 100x too narrow on inverse-nonlinear1d (benchmarks/README.md)."""
    m = marginal(problem, fit)
    if m.u_map is not None:
        return _matrix_free_marginal_posterior(m, seed, samples)
    theta, hessian = m.laplace()
    cov = jnp.linalg.inv(hessian)
    z, r, spread = m.spread(theta, psd_root(cov))
    held = m.held

    def sd(rows):  # of rows @ z: cov(z) = (R^T R)^{-1} + spread spread^T
        given = solve_triangular(r, rows.T, trans=1, lower=False)
        return jnp.sqrt(jnp.sum(given**2, axis=0) + jnp.sum((rows @ spread) ** 2, axis=1))

    return GaussianPosterior(
        problem, np.asarray(held.to_grid(Whitened(z))),
        np.asarray(sd(_dense_kron(held.trils))).reshape(problem.grid),
        np.asarray(held.predict_grid(Whitened(z), problem.test_axes)),
        np.asarray(sd(_test_rows(held))).reshape(problem.test_grid),
        unknowns=_unknowns(problem, theta, cov),
        solver="marginal",
        failures=tuple(laplace_failures(np.diag(np.asarray(jnp.linalg.cholesky(hessian))))),
        unknown_cov=np.asarray(cov), tau_e=m.tau_e)


def _matrix_free_marginal_posterior(m, seed: int, samples: int = 64) -> "GaussianPosterior":
    """``marginal_posterior`` beyond LAPLACE_MAX points (``marginal.matrix_free``): the
    unknowns' mode and Hessian from differences of the matrix-free marginal
    (``lattice.mode``, ``lattice.curvature`` there), U's mean its mode given them, its sd
    from ``samples`` perturbation-optimisation draws given them (``Marginal.u_draws``)
    widened by its mode's slope in them (central differences of 0.1 sd)."""
    p = m.problem
    x, _ = lattice.mode(m)
    hessian = lattice.curvature(m.near(x), x)
    cov = np.linalg.inv(hessian)
    u, u_test = m.u_draws(x[None], np.zeros(samples, int), seed)
    h = 0.1 * np.sqrt(np.abs(np.diag(cov)))
    ends = np.concatenate([x + np.diag(h), x - np.diag(h)])
    means = m.u_modes(ends)
    root = np.asarray(psd_root(jnp.asarray(cov)))
    spread = [np.tensordot(root.T, np.stack([(a[i] - a[i + len(x)]) / (2 * h[i])
                                             for i in range(len(x))]), axes=1) for a in means]
    mean, test_mean = m.u_modes(x[None])
    sd, test_sd = (np.sqrt(np.mean((d - c[0]) ** 2, 0) + np.sum(s**2, 0))
                   for d, c, s in ((u, mean, spread[0]), (u_test, test_mean, spread[1])))
    _, unravel = ravel_pytree(m.theta)
    return GaussianPosterior(
        p, mean[0], sd, test_mean[0], test_sd,
        unknowns=_unknowns(p, unravel(jnp.asarray(x)), jnp.asarray(cov)), solver="marginal",
        samples=samples,
        failures=tuple(laplace_failures(np.diag(np.asarray(jnp.linalg.cholesky(hessian))))),
        unknown_cov=cov)


def psd_root(cov: Array) -> Array:
    """A root of a covariance (root root^T = cov) that stays finite where cov is not
    positive definite (a failed precision): eigenvalues clipped at 0."""
    lam, vec = jnp.linalg.eigh(cov)
    return vec * jnp.sqrt(jnp.clip(lam, 0.0, None))


def _test_rows(cond: Conditional) -> Array:
    """The map from whitened U to u on the test grid, one row per test point."""
    p, n = cond.problem, cond.problem.size
    return cond.predict_grid(Whitened(jnp.eye(n).reshape((n,) + p.grid)),
                             p.test_axes).reshape(n, -1).T


def _unknowns(problem: Problem, mean: dict, cov: Array) -> dict:
    """{name: {"site", "mean", "sd"}}: each unknown's Gaussian in its site's coordinates."""
    return {name: {"site": site, "mean": float(mean[site]), "sd": float(jnp.sqrt(cov[i, i]))}
            for i, (name, site) in enumerate(problem.unknown_sites.items())}


def structured_posterior(problem: Problem, fit: MapFit, samples: int = 64, seed: int = 0,
                         tolerance: float = 1e-10, max_iterations: int = 20000,
                         progress: bool = False) -> "GaussianPosterior":
    """The Gaussian posterior without forming any grid-sized matrix.

    In eigen-whitened coordinates z (``pcg``) the posterior precision is H = I + J^T J.
    The mean is one Gauss-Newton step from the MAP, H dz = -(z + J^T r), solved by
    preconditioned CG (Gauss-Newton steps repeat for a nonlinear PDE or with unknowns,
    then joint steps: the Laplace approximation). The sd comes from perturbation-optimisation
    draws: xi, eta ~ N(0, I) (the residual's length, the grid's), dz = H^{-1} (eta + J^T xi)
    ~ N(0, H^{-1}) exactly, up to the CG tolerance. The
    unknowns theta join by their Schur complement S (``eliminate_unknowns``): theta's sd
    is sqrt(diag S^{-1}), and each draw adds -H^{-1}C d_theta, d_theta ~ N(0, S^{-1}).
    """
    fixed = fixed_sites(fit)
    iterations, worst = [], 0.0

    def conditional():  # built inside each compiled function
        return Conditional(problem, fixed, fit.recipe.jitter)
    sites = list(problem.unknown_sites.values())

    @jax.jit
    def newton(u, values):  # to the mode: U alone, or U and the unknowns jointly
        gn = Conditional(problem, values, fit.recipe.jitter).gauss_newton(u)
        if sites:
            s, theta, k = gn.joint_step(tolerance, max_iterations)
            return gn.to_grid(s), k, jnp.zeros(()), {**values, **theta}
        s, k, res = gn.step(tolerance, max_iterations)
        return gn.to_grid(s), k, res, values

    u = jnp.asarray(fit.params["U"])
    linear = conditional().is_linear() and not sites
    for _ in range(1 if linear else fit.recipe.gauss_newton_steps):
        u, k, res, fixed = newton(u, fixed)
        iterations.append(int(k))
        worst = max(worst, float(res))

    schur, h_cols = jnp.ones((0, 0)), jnp.zeros((0,) + problem.grid)
    if sites:  # s | theta ~ N(-H^{-1}C theta, H^{-1}), theta ~ N(0, S^{-1}) (deviations)
        schur, h_cols, _, k = jax.jit(lambda u: conditional().gauss_newton(u).eliminate_unknowns(
            tolerance, max_iterations))(u)
        iterations.append(int(k))
    failures = laplace_failures(np.diag(np.asarray(jnp.linalg.cholesky(schur))) if sites
                                else np.ones(0))
    cov = jnp.linalg.inv(schur)
    root = jnp.linalg.cholesky(cov) if sites else cov

    @jax.jit
    def draws(u, key):
        gn = conditional().gauss_newton(u)
        k1, k2, k3 = jax.random.split(key, 3)
        xi = jax.random.normal(k2, (BLOCK, gn.r0.size))
        rhs = jax.random.normal(k1, (BLOCK,) + problem.grid) + jax.vmap(gn.vjp)(xi)
        ds, k, res = gn.solve(rhs, tolerance, max_iterations)
        d_th = jax.random.normal(k3, (BLOCK, len(sites))) @ root.T
        du = gn.to_grid(ds - jnp.tensordot(d_th, h_cols, axes=1))
        test = problem.test_axes
        return du, gn.cond.predict_grid(du, test), gn.cond.predict_grid(u, test), k, res

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
                             solver="cg", samples=n, cg=cg,
                             unknowns=_unknowns(problem, fixed, cov),
                             failures=tuple(failures),
                             unknown_cov=np.asarray(cov) if sites else np.zeros((0, 0)))


DRAWS = 4000  # draws of the unknowns from their Gaussian, for posterior.nc and the summary


def to_arviz(post: "GaussianPosterior", seed: int = 0) -> "arviz.InferenceData":
    """The Gaussian posterior as InferenceData: ``posterior`` holds DRAWS draws (one chain)
    of each unknown in its natural units (drawn in its site's coordinates from the
    Laplace Gaussian, then exp for a lognormal prior), ``posterior_moments`` the exact
    mean and sd of u on the grid and the test grid."""
    import xarray as xr

    p = post.problem
    dims, coords = grid_coords(p)
    grid, test = dims["u"], dims["u_test"]
    moments = xr.Dataset({"u_mean": (grid, post.mean), "u_sd": (grid, post.sd),
                          "u_test_mean": (test, post.test_mean),
                          "u_test_sd": (test, post.test_sd)},
                         coords=coords, attrs={"name": p.name, "method": "gaussian",
                                               "solver": post.solver})
    groups = {"posterior_moments": moments}
    if post.unknowns:
        mean = np.array([u["mean"] for u in post.unknowns.values()])
        root = np.asarray(psd_root(jnp.asarray(post.unknown_cov)))
        site = mean + np.random.default_rng(seed).standard_normal((DRAWS, len(mean))) @ root.T
        draws = {name: (["chain", "draw"], (site[:, i] if u["site"] == name
                                            else np.exp(site[:, i]))[None])
                 for i, (name, u) in enumerate(post.unknowns.items())}
        groups["posterior"] = xr.Dataset(draws, attrs={"method": "gaussian"})
    return import_arviz().InferenceData(**groups)


def unknown_summary(post: "GaussianPosterior", idata=None) -> dict:
    """Per unknown, in its natural units: ``az.summary``'s mean, sd and 94% HDI of the
    draws in ``idata`` (``to_arviz``; the level NUTS reports), and its site's Gaussian
    (``site``, ``site_mean``, ``site_sd``)."""
    if not post.unknowns:
        return {}
    idata = idata if idata is not None else to_arviz(post)
    table = import_arviz().summary(idata, var_names=list(post.unknowns), kind="stats",
                                   round_to="none")
    return {name: {**{k: float(v) for k, v in table.loc[name].items()}, "site": u["site"],
                   "site_mean": u["mean"], "site_sd": u["sd"]}
            for name, u in post.unknowns.items()}


def save(post: "GaussianPosterior", fit: MapFit, out_dir: str | Path, recipe: str = "") -> dict:
    """posterior.nc (InferenceData: ``to_arviz``) and summary.json (``recipe``: the
    sampling recipe's file, stated in the summary)."""
    p = post.problem
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    idata = to_arviz(post)
    write_atomic(out / "posterior.nc", lambda f: idata.to_netcdf(str(f)))
    summary = {"name": p.name, "method": "gaussian", "solver": post.solver,
               "map_rel_l2_error": fit.rel_l2_error, "map_check_passed": fit.check["passed"],
               "recipe": recipe,
               "u_test_sd_min": float(post.test_sd.min()),
               "u_test_sd_max": float(post.test_sd.max()),
               "unknowns": unknown_summary(post, idata),
               "converged": post.converged, "failures": list(post.failures)}
    if post.solver == "marginal":
        summary["posterior_mean_check"] = post.mean_fit(fit).check
    if post.tau_e:
        summary["tau_e"] = post.tau_e
    if post.solver == "cg":
        summary.update(samples=post.samples, cg_iterations=post.cg["iterations"],
                       cg_max_relative_residual=post.cg["max_relative_residual"])
    if p.exact_test is not None:
        lo, hi = post.interval(0.9)
        summary["coverage_90"] = float(np.mean((p.exact_test >= lo) & (p.exact_test <= hi)))
    write_json(out / "summary.json", summary)
    return summary
