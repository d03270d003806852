"""The GP-HM PDE model: one NumPyro model that MAP and NUTS both run.

Sites (per axis v in the problem's variables):
  log_w_v, log_rho_v, mu_v   kernel parameters, flat priors (flat on log w = Jeffreys on w)
  log_tau_e, log_tau_b       log precisions of the equation and boundary terms, flat
  U                          the solution on the grid, KroneckerNormal(0, K_1 kron ... K_d)
  equation, boundary         numpyro.factor sites; the boundary one tempered by its weight
"""

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints
from numpyro.infer.util import log_density as _log_density

from gpbayes import kernels, kron


def _flat(shape=()):
    return dist.ImproperUniform(constraints.real, (), shape)


def axis_site_names(problem, j):
    v = problem.variables[j]
    names = [f"log_w_{v}", f"log_rho_{v}"]
    if kernels.has_frequencies(problem.family):
        names.append(f"mu_{v}")
    return names


def axis_params(problem, values, j):
    """The kernel parameters of axis j as a dict (log_w, log_rho[, mu])."""
    v = problem.variables[j]
    out = {"log_w": values[f"log_w_{v}"], "log_rho": values[f"log_rho_{v}"]}
    if kernels.has_frequencies(problem.family):
        out["mu"] = values[f"mu_{v}"]
    return out


def axis_factors(problem, values, jitter):
    """Per-axis lower Cholesky factors of K_j = k_j(x_j, x_j) + jitter I."""
    trils = []
    for j, x in enumerate(problem.axes):
        k = kernels.toeplitz(problem.family, axis_params(problem, values, j), jnp.asarray(x))
        trils.append(jnp.linalg.cholesky(k + jitter * jnp.eye(x.shape[0])))
    return trils


def derivative_fields(problem, values, trils, u):
    """u and its derivatives on the grid, by name, from the GP conditional mean.

    d^m u / dx_j^m = k_j^(m)(x_j, x_j) K_j^{-1} applied along axis j (mode product).
    """
    out = {}
    for name, orders in problem.derivatives.items():
        field = u
        for j, m in enumerate(orders):
            if m:
                dk = kernels.toeplitz(problem.family, axis_params(problem, values, j),
                                      jnp.asarray(problem.axes[j]), m)
                field = kron.mode_dot(dk, kron.mode_cho_solve(trils[j], field, j), j)
        out[name] = field  # XLA merges the repeated solves of U along an axis
    return out


def equation_residual(problem, values, trils, u):
    """L[u] - f on every grid point."""
    env = dict(problem.constants)
    env.update(problem.coordinates())
    env.update(derivative_fields(problem, values, trils, u))
    return jnp.broadcast_to(problem.equation(env), u.shape) - problem.source_values


def boundary_difference(problem, u):
    """U - g on the listed faces, each face whole (corners count once per face)."""
    if not problem.faces:
        return jnp.zeros(0)
    return jnp.concatenate([f.take(u) for f in problem.faces]) - problem.boundary_values


def pde_model(problem, jitter=1e-6):
    """The NumPyro model of the PDE (see the module docstring)."""
    values = {}
    q = problem.components
    for j in range(problem.ndim):
        for name in axis_site_names(problem, j):
            values[name] = numpyro.sample(name, _flat((q,)))
    log_tau_e = numpyro.sample("log_tau_e", _flat())
    log_tau_b = numpyro.sample("log_tau_b", _flat())
    trils = axis_factors(problem, values, jitter)
    u = numpyro.sample("U", kron.KroneckerNormal(trils))
    r = numpyro.deterministic("residual", equation_residual(problem, values, trils, u))
    numpyro.factor("equation", dist.Normal(0.0, jnp.exp(-0.5 * log_tau_e)).log_prob(r).sum())
    b = numpyro.deterministic("boundary_gap", boundary_difference(problem, u))
    if b.size:
        ll = dist.Normal(0.0, jnp.exp(-0.5 * log_tau_b)).log_prob(b).sum()
        numpyro.factor("boundary", problem.boundary_weight * ll)


def log_density(problem, params, jitter=1e-6):
    """The model's log joint at ``params`` (a dict of site values), and its trace."""
    return _log_density(pde_model, (problem,), {"jitter": jitter}, params)


def initial_params(problem):
    """The paper's initial values: U = 0, log w = log(1/Q), log rho = 0, mu = linspace(0, F, Q)."""
    q = problem.components
    params = {}
    for j in range(problem.ndim):
        v = problem.variables[j]
        params[f"log_w_{v}"] = jnp.full(q, np.log(1.0 / q))
        params[f"log_rho_{v}"] = jnp.zeros(q)
        if kernels.has_frequencies(problem.family):
            params[f"mu_{v}"] = jnp.asarray(np.linspace(0.0, 1.0, q) * problem.max_frequency)
    params["log_tau_e"] = jnp.zeros(())
    params["log_tau_b"] = jnp.zeros(())
    params["U"] = jnp.zeros(problem.grid)
    return params
