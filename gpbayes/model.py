"""The GP-HM PDE model: one NumPyro model that MAP and NUTS both run, its sites, their
priors and starting values. Its terms at fixed hyperparameters come from ``Conditional``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax import Array
from numpyro.distributions import constraints
from numpyro.infer.util import log_density as _log_density

from gpbayes import kernels, kron
from gpbayes.conditional import LOG_2PI, Conditional
from gpbayes.coordinates import Whitened
from gpbayes.problem import Problem


def _flat(shape=()):
    return dist.ImproperUniform(constraints.real, (), shape)


def hyper_prior(problem: Problem, name: str) -> dist.Distribution:
    """The proper prior of a hyperparameter site (used when hyperparameters are sampled).

    ``problem.priors`` (the model file's [priors] table) sets [loc, scale] for log_w,
    log_rho and log_tau, and the scale of mu around its initial grid linspace(0, F, Q).
    """
    kind = name.rsplit("_", 1)[0] if not name.startswith("log_tau") else "log_tau"
    loc, scale = problem.priors[kind]
    if kind == "mu":
        loc = jnp.asarray(np.linspace(0.0, problem.max_frequency, problem.components))
    shape = () if kind == "log_tau" else (problem.components,)
    return dist.Normal(jnp.broadcast_to(loc, shape), scale).to_event(len(shape))


def axis_site_names(problem: Problem, j: int) -> list[str]:
    return kernels.family(problem.family).site_names(problem.variables[j])


def pde_model(problem: Problem, jitter: float = 1e-6, whiten: bool = False,
              sample_hyper: bool = False, held: Conditional | None = None,
              marginal: bool = False, start: Array | None = None,
              matrix_free: bool = False, warm: tuple | None = None) -> None:
    """The NumPyro model of the PDE. Sites (per axis v in the problem's variables):

      log_w_v, log_rho_v, mu_v   kernel parameters, flat priors (flat on log w = Jeffreys)
      <unknown> or log_<unknown> the unknown constants, normal priors
      log_tau_e, log_tau_b       log precisions of the equation and boundary terms, flat
      U                          the solution on the grid, KroneckerNormal(0, K_1 kron ... K_d)
      equation, boundary         factor sites (each boundary row tempered by its condition's
                                 weight: boundary.Condition), or
      boundary_data, observations  observed sites where the model file gives noise sds

    ``whiten=True`` samples Z ~ N(0, I) on the grid and sets U = (L_1 kron ... L_d) Z
    (a deterministic site): the same model in the coordinates NUTS samples well.
    ``sample_hyper=True`` puts the proper priors of ``hyper_prior`` on the kernel
    parameters and log precisions instead of the flat ones (for sampling them).
    ``held``: a Conditional at the kernel's values, its factors computed once outside
    (``sample_nuts``); the sites must be conditioned on them.
    ``marginal=True`` integrates U out: no U site; a factor adds the log of the Gaussian
    integral over Z around U's conditional mode (``Conditional.u_given_rest``), which is
    then the deterministic U, so the log density is the exact log marginal of the other
    sites where the PDE is linear in U; elsewhere ``start`` (whitened U) is given and the
    terms are linearised at U's mode given the PDE's rows (``Conditional.pde_mode``,
    LAPLACE_STEPS Gauss-Newton steps from it): a Laplace approximation.
    With measurements (observations, noisy boundary rows) the factor is instead their
    predictive given the PDE's own rows (``Conditional.evidence_given_pde``): the PDE a
    constraint, not evidence (the source alone gives inverse-helmholtz1d k = 19.53).
    ``matrix_free=True`` (a linear PDE, ``start`` U on the grid): that factor by PCG
    (``Conditional.evidence_matrix_free``); ``warm``: its solves nearby, to start from."""

    def prior(name, shape):
        return hyper_prior(problem, name) if sample_hyper else _flat(shape)

    values = {}
    q = problem.components
    for j in range(problem.ndim):
        for name in axis_site_names(problem, j):
            values[name] = numpyro.sample(name, prior(name, (q,)))
    for name, (_, loc, scale) in problem.unknowns.items():
        site = problem.unknown_sites[name]
        values[site] = numpyro.sample(site, dist.Normal(loc, scale))
    if problem.equation_noise is None:
        values["log_tau_e"] = numpyro.sample("log_tau_e", prior("log_tau_e", ()))
    if problem.tempered_rows.any():
        values["log_tau_b"] = numpyro.sample("log_tau_b", prior("log_tau_b", ()))
    varying = {k: v for k, v in values.items()
               if k.startswith("log_tau") or k in problem.unknown_sites.values()}
    cond = Conditional(problem, values, jitter) if held is None else held.with_values(varying)
    t = problem.tempered_rows  # the other rows are noisy observations
    if marginal:
        z, parts = _integrate_u(cond, start, matrix_free, warm)
        if parts is None:  # the measurements' predictive given the PDE: nothing more
            return
        gap, residual, mean = parts
    else:
        if whiten:  # the terms from z: U's rounding through L z and back shows in the
            # equation rows, weighted by tau_e^(1/2) ~ 1e6
            z = c = numpyro.sample("Z", dist.Normal(0.0, 1.0).expand(problem.grid)
                                   .to_event(problem.ndim))
        else:
            c = numpyro.sample("U", kron.KroneckerNormal(cond.trils))
        c = Whitened(c) if whiten else c
        residual, gap = cond.residual(c), cond.boundary_difference(c)
        mean = cond.predict(c, problem.observations[0]) if problem.observations else None
    if marginal or whiten:
        numpyro.deterministic("U", cond.to_grid(Whitened(z)))
    r = numpyro.deterministic("residual", residual)
    b = numpyro.deterministic("boundary_gap", gap)
    equation, boundary = pde_terms(cond, b, r)
    numpyro.factor("equation", equation)
    if t.any():
        numpyro.factor("boundary", boundary)
    if (~t).any():
        g = problem.boundary_values[~t]
        numpyro.sample("boundary_data", dist.Normal(b[~t] + g, problem.row_noise[~t]), obs=g)
    if problem.observations is not None:
        _, data, noise = problem.observations
        numpyro.sample("observations", dist.Normal(mean, noise), obs=jnp.asarray(data))


MATRIX_FREE = (1e-10, 1e-3, 20000)  # the matrix-free evidence's PCG: U's mode to 1e-10,
# the measurements' covariance columns to 1e-3 at most (tighter where they matter:
# ``predictive.structured``), iterations at most
LAPLACE_STEPS = 2  # Gauss-Newton steps to U's mode given the PDE, per evaluation, from a
# start at the MAP's unknowns (nonlinear PDEs, ``marginal=True``; journal: "Laplace within")


def _integrate_u(cond: Conditional, start: Array | None, matrix_free: bool,
                 warm: tuple | None) -> tuple:
    """The factor of ``pde_model(..., marginal=True)``; returns U's conditional mode z*
    and the data terms' parts there (``split_data_residual``), or None for the parts
    where the factor is the measurements' predictive (whose sites it then records)."""
    if matrix_free:  # a linear PDE with measurements; ``start``: U on the grid
        u, r, log_p, _ = cond.evidence_matrix_free(start, *MATRIX_FREE, warm)
        numpyro.factor("evidence", log_p)
        _record(cond, u, r)
        return None, None
    at = None if start is None else jax.lax.stop_gradient(cond.pde_mode(start, LAPLACE_STEPS))
    if not cond.evidence_rows.any():
        z, root, r = cond.u_given_rest(at)
        numpyro.factor("U_integrated_out", gaussian_volume(z, root))
        return z, cond.split_data_residual(r)
    z, r, log_p = cond.evidence_given_pde(at)
    numpyro.factor("evidence", log_p)
    _record(cond, cond.to_grid(Whitened(z)), r)
    return z, None


def _record(cond: Conditional, u: Array, r: Array) -> None:
    """U's conditional mode and the data terms there, as deterministic sites."""
    gap, residual, _ = cond.split_data_residual(r)
    numpyro.deterministic("U", u)
    numpyro.deterministic("residual", residual)
    numpyro.deterministic("boundary_gap", gap)


def gaussian_volume(z: Array, root: Array) -> Array:
    """log N(z; 0, I) plus the log of the Gaussian integral around the mode z whose
    precision is R^T R (``root``): the whitened prior's share of a log marginal."""
    return (dist.Normal(0.0, 1.0).log_prob(z).sum() + 0.5 * z.size * LOG_2PI
            - jnp.sum(jnp.log(jnp.abs(jnp.diag(root)))))


def pde_terms(cond: Conditional, gap: Array, residual: Array) -> tuple[Array, Array]:
    """The log-likelihoods of the equation's rows (``residual`` on the grid) and of the
    tempered boundary rows (``gap``: each row's mismatch, weighted by its condition)."""
    p = cond.problem
    equation = dist.Normal(0.0, cond.equation_sd).log_prob(residual).sum()
    t = p.tempered_rows
    if not t.any():
        return equation, jnp.zeros(())
    ll = dist.Normal(0.0, jnp.exp(-0.5 * cond.values["log_tau_b"])).log_prob(gap[t])
    return equation, jnp.sum(jnp.asarray(p.row_weights[t]) * ll)


def log_density(problem: Problem, params: dict, jitter: float = 1e-6) -> tuple:
    """The model's log joint at ``params`` (a dict of site values), and its trace."""
    return _log_density(pde_model, (problem,), {"jitter": jitter}, params)


def initial_params(problem: Problem) -> dict:
    """The paper's initial values: U = 0, log w = log(1/Q), log rho = 0, mu = linspace(0, F, Q)."""
    q = problem.components
    params = {}
    for j in range(problem.ndim):
        params.update(kernels.family(problem.family).initial(problem.variables[j], q,
                                                             problem.max_frequency))
    for name, (_, loc, _) in problem.unknowns.items():
        params[problem.unknown_sites[name]] = jnp.asarray(float(loc))
    if problem.equation_noise is None:
        params["log_tau_e"] = jnp.zeros(())
    if problem.tempered_rows.any():
        params["log_tau_b"] = jnp.zeros(())
    params["U"] = jnp.zeros(problem.grid)
    return params
