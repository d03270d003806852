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


def hyper_prior(problem, name):
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


def derivative_matrix(problem, values, j, m):
    """k_j^(m)(x_j, x_j): the kernel's m-th derivative along axis j, on the axis's grid."""
    return kernels.toeplitz(problem.family, axis_params(problem, values, j),
                            jnp.asarray(problem.axes[j]), m)


def axis_factors(problem, values, jitter):
    """Per-axis lower Cholesky factors of K_j = k_j(x_j, x_j) + jitter I."""
    trils = []
    for j, x in enumerate(problem.axes):
        k = kernels.toeplitz(problem.family, axis_params(problem, values, j), jnp.asarray(x))
        trils.append(jnp.linalg.cholesky(k + jitter * jnp.eye(x.shape[0])))
    return trils


def derivative_fields(problem, values, trils, u, whitened=False):
    """u and its derivatives on the grid, by name, from the GP conditional mean.

    d^m u / dx_j^m = k_j^(m)(x_j, x_j) K_j^{-1} applied along axis j (mode product).
    ``whitened=True``: ``u`` holds whitened coordinates z of U = (L_1 kron ... L_d) z, and
    since K_j^{-1} L_j = L_j^{-T} axis j applies k_j^(m) L_j^{-T} (m > 0) or L_j (m = 0):
    one triangular solve instead of a Cholesky solve after a product with L_j, which
    keeps the rounding of an ill-conditioned K_j (small jitter) out of the fields.
    """
    out = {}
    for name, orders in problem.derivatives.items():
        field = u
        for j, m in enumerate(orders):
            if m:
                dk = derivative_matrix(problem, values, j, m)
                field = kron.mode_dot(dk, kron.mode_solve_tril(trils[j], field, j, True)
                                      if whitened else kron.mode_cho_solve(trils[j], field, j),
                                      j)
            elif whitened:
                field = kron.mode_dot(trils[j], field, j)
        out[name] = field  # XLA merges the repeated solves of U along an axis
    return out


def equation_residual(problem, values, trils, u, unknowns=None, whitened=False):
    """L[u] - f on every grid point (``unknowns``: values of the model's unknown constants;
    ``whitened``: ``u`` holds whitened coordinates, see ``derivative_fields``)."""
    env = dict(problem.constants)
    env.update(unknowns or unknown_values(problem, values))
    env.update(problem.coordinates())
    env.update(derivative_fields(problem, values, trils, u, whitened))
    return jnp.broadcast_to(problem.equation(env), u.shape) - problem.source_values


def unknown_values(problem, values):
    """{name: value} of the unknown constants from site values (lognormal: exp of log_)."""
    out = {}
    for name, site in problem.unknown_sites.items():
        out[name] = values[site] if site == name else jnp.exp(values[site])
    return out


def conditional_mean(problem, values, trils, u, points):
    """The GP conditional mean of u at scattered points, an array of shape (M, d)."""
    t = kron.kron_solve(trils, u)
    for j in range(problem.ndim):
        c = kernels.cross(problem.family, axis_params(problem, values, j), points[:, j],
                          jnp.asarray(problem.axes[j]))
        t = c @ t if j == 0 else jnp.einsum("mi,mi...->m...", c, t)
    return t


def boundary_difference(problem, u):
    """U - g on the listed faces, each face whole (corners count once per face)."""
    if not problem.faces:
        return jnp.zeros(0)
    return jnp.concatenate([f.take(u) for f in problem.faces]) - problem.boundary_values


def data_residual(problem, values, trils, u):
    """The model's data terms at grid values u as one weighted residual vector: the
    equation residual over its sd, the boundary mismatch (tempered or with its noise sd)
    and the observations over their noise sd. ``values``: every site but U and Z.
    """
    r = equation_residual(problem, values, trils, u, unknown_values(problem, values))
    parts = [r.reshape(-1) / equation_sd(problem, values)]
    b = boundary_difference(problem, u)
    if b.size:
        parts.append(boundary_scale(problem, values) * b)
    if problem.observations is not None:
        points, data, noise = problem.observations
        mean = conditional_mean(problem, values, trils, u, jnp.asarray(points))
        parts.append((mean - jnp.asarray(data)) / noise)
    return jnp.concatenate(parts)


def equation_sd(problem, values):
    """The sd of the equation residual (its noise sd, or tau_e^{-1/2})."""
    if problem.equation_noise is not None:
        return problem.equation_noise
    return jnp.exp(-0.5 * values["log_tau_e"])


def boundary_scale(problem, values):
    """The factor of the boundary mismatch in the residual (1/noise sd, or sqrt(w tau_b))."""
    if problem.boundary_noise is not None:
        return 1.0 / problem.boundary_noise
    return jnp.sqrt(problem.boundary_weight * jnp.exp(values["log_tau_b"]))


def pde_model(problem, jitter=1e-6, whiten=False, sample_hyper=False):
    """The NumPyro model of the PDE (see the module docstring).

    ``whiten=True`` samples Z ~ N(0, I) on the grid and sets U = (L_1 kron ... L_d) Z
    (a deterministic site): the same model in the coordinates NUTS samples well.
    ``sample_hyper=True`` puts the proper priors of ``hyper_prior`` on the kernel
    parameters and log precisions instead of the flat ones (for sampling them).
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
    trils = axis_factors(problem, values, jitter)
    if whiten:
        z = numpyro.sample("Z", dist.Normal(0.0, 1.0).expand(problem.grid)
                           .to_event(problem.ndim))
        u = numpyro.deterministic("U", kron.kron_apply(trils, z))
    else:
        u = numpyro.sample("U", kron.KroneckerNormal(trils))
    r = numpyro.deterministic("residual", equation_residual(problem, values, trils, u))
    if problem.equation_noise is None:
        sd_e = jnp.exp(-0.5 * numpyro.sample("log_tau_e", prior("log_tau_e", ())))
    else:
        sd_e = problem.equation_noise
    numpyro.factor("equation", dist.Normal(0.0, sd_e).log_prob(r).sum())
    b = numpyro.deterministic("boundary_gap", boundary_difference(problem, u))
    if b.size and problem.boundary_noise is not None:
        numpyro.sample("boundary_data", dist.Normal(b + problem.boundary_values,
                                                    problem.boundary_noise),
                       obs=problem.boundary_values)
    elif b.size:
        sd_b = jnp.exp(-0.5 * numpyro.sample("log_tau_b", prior("log_tau_b", ())))
        ll = dist.Normal(0.0, sd_b).log_prob(b).sum()
        numpyro.factor("boundary", problem.boundary_weight * ll)
    if problem.observations is not None:
        points, data, noise = problem.observations
        mean = conditional_mean(problem, values, trils, u, jnp.asarray(points))
        numpyro.sample("observations", dist.Normal(mean, noise), obs=jnp.asarray(data))


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
    for name, (_, loc, _) in problem.unknowns.items():
        params[problem.unknown_sites[name]] = jnp.asarray(float(loc))
    if problem.equation_noise is None:
        params["log_tau_e"] = jnp.zeros(())
    if problem.faces and problem.boundary_noise is None:
        params["log_tau_b"] = jnp.zeros(())
    params["U"] = jnp.zeros(problem.grid)
    return params
