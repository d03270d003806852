"""The GP-HM PDE model: one NumPyro model that MAP and NUTS both run, its sites, their
priors and starting values. Its terms at fixed hyperparameters come from ``Conditional``.
"""

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints
from numpyro.infer.util import log_density as _log_density

from gpbayes import kernels, kron
from gpbayes.conditional import Conditional
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
              sample_hyper: bool = False, held: Conditional | None = None) -> None:
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
    (``sample_nuts`` with the kernel held); the sites must then be conditioned
    on those values.
    """

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
    if held is None:
        cond = Conditional(problem, values, jitter)
    else:
        cond = held.with_values({k: values[k] for k in problem.unknown_sites.values()})
    trils = cond.trils
    if whiten:
        z = numpyro.sample("Z", dist.Normal(0.0, 1.0).expand(problem.grid)
                           .to_event(problem.ndim))
        u = numpyro.deterministic("U", kron.kron_apply(trils, z))
    else:
        u = numpyro.sample("U", kron.KroneckerNormal(trils))
    r = numpyro.deterministic("residual", cond.residual(u))
    if problem.equation_noise is None:
        sd_e = jnp.exp(-0.5 * numpyro.sample("log_tau_e", prior("log_tau_e", ())))
    else:
        sd_e = problem.equation_noise
    numpyro.factor("equation", dist.Normal(0.0, sd_e).log_prob(r).sum())
    b = numpyro.deterministic("boundary_gap", cond.boundary_difference(u))
    t = problem.tempered_rows  # the other rows are noisy observations
    if (~t).any():
        g = problem.boundary_values[~t]
        numpyro.sample("boundary_data", dist.Normal(b[~t] + g, problem.row_noise[~t]), obs=g)
    if t.any():
        sd_b = jnp.exp(-0.5 * numpyro.sample("log_tau_b", prior("log_tau_b", ())))
        ll = dist.Normal(0.0, sd_b).log_prob(b[t])
        numpyro.factor("boundary", jnp.sum(jnp.asarray(problem.row_weights[t]) * ll))
    if problem.observations is not None:
        points, data, noise = problem.observations
        mean = cond.predict(u, points)
        numpyro.sample("observations", dist.Normal(mean, noise), obs=jnp.asarray(data))


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
