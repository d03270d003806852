from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.infer.util import log_density as _log_density

import gpbayes as gb
from conftest import small_problem
from gpbayes import kernels, model
from gpbayes.conditional import axis_params


def random_params(p, seed=0):
    rng = np.random.default_rng(seed)
    params = model.initial_params(p)
    params = {k: v + 0.1 * rng.normal(size=np.shape(v)) for k, v in params.items()}
    params["U"] = rng.normal(size=p.grid)
    return params


def dense_log_joint(p, params, jitter=1e-6):
    """The GP-HM log joint written densely (1-D Poisson, u_xx = f), for comparison; the
    boundary rows on the conditional mean's values, U - jitter K^-1 U."""
    x = jnp.asarray(p.axes[0])
    ap = axis_params(p, params, 0)
    k = kernels.cross(p.family, ap, x, x) + jitter * jnp.eye(len(x))
    kxx = kernels.cross(p.family, ap, x, x, 2)
    u = params["U"]
    n = len(x)
    prior = -0.5 * jnp.linalg.slogdet(k)[1] - 0.5 * u @ jnp.linalg.solve(k, u) \
        - 0.5 * n * np.log(2 * np.pi)
    r = kxx @ jnp.linalg.solve(k, u) - p.source_values
    te, tb = jnp.exp(params["log_tau_e"]), jnp.exp(params["log_tau_b"])
    eq = 0.5 * n * jnp.log(te / (2 * np.pi)) - 0.5 * te * jnp.sum(r**2)
    mean = u - jitter * jnp.linalg.solve(k, u)
    b = mean[jnp.array([0, n - 1])] - p.boundary_values
    bd = 0.5 * 2 * jnp.log(tb / (2 * np.pi)) - 0.5 * tb * jnp.sum(b**2)
    return prior + eq + p.boundary_weight * bd


def test_log_density_matches_dense_formula():
    p = small_problem(n=30)
    params = random_params(p)
    lp, trace = gb.log_density(p, params)
    np.testing.assert_allclose(lp, dense_log_joint(p, params), rtol=1e-9)
    assert {"U", "equation", "boundary", "log_w_x", "mu_x"} <= set(trace)


def test_gradient_is_finite_and_matches_dense():
    p = small_problem(n=25)
    params = random_params(p, 1)
    g1 = jax.grad(lambda q: gb.log_density(p, q)[0])(params)
    g2 = jax.grad(lambda q: dense_log_joint(p, q))(params)
    for k in g1:
        np.testing.assert_allclose(g1[k], g2[k], rtol=1e-6, atol=1e-8 * np.max(np.abs(g2[k])))


def test_held_conditional_gives_the_same_log_joint():
    """NUTS with the kernel held passes a Conditional with its factors computed once
    (``held``); the unknowns still vary: the log joint is the model's at any k."""
    from gpbayes import operators as op
    from gpbayes.conditional import Conditional
    p = replace(small_problem(n=25), equation=op.parse("u_xx + k*u", {"x", "k"},
                                                       allow_u=True, variables=("x",)),
                source=op.parse("-7*sin(3*x)", {"x"}), unknowns={"k": ("normal", 1.0, 2.0)})
    params = random_params(p)
    held = Conditional(p, {k: v for k, v in params.items() if k != "U"}, 1e-6)
    held.residual(jnp.asarray(params["U"]))
    for k in (0.3, 2.5):
        moved = {**params, "k": jnp.asarray(k)}
        lp = _log_density(model.pde_model, (p,), {"held": held}, moved)[0]
        np.testing.assert_allclose(lp, gb.log_density(p, moved)[0], rtol=1e-12)


@pytest.mark.parametrize("family", ["matern52", "gaussian-mixture"])
def test_families_have_their_sites(family):
    p = small_problem(family=family)
    _, trace = gb.log_density(p, model.initial_params(p))
    assert ("mu_x" in trace) == (family == "gaussian-mixture")


@pytest.mark.parametrize("measured", [True, False])
def test_marginal_model_is_the_joint_integrated_over_u(measured):
    """``marginal=True``: the log density is the joint integrated over U divided by the
    same integral of the PDE's rows alone (where there are measurements), each computed
    apart here in data space: the data terms are affine in U, r(u) = M u - d, so the
    integral of N(u; 0, K) exp(-|r|^2/2) is N(d; 0, I + M K M^T) (2 pi)^(m/2) times the
    rows' normalising constants. 6 x 6 grid, an unknown c; with observations and noisy
    boundary rows, or with neither (tempered boundary rows, no evidence factor)."""
    from conftest import small_inverse_problem
    from gpbayes.conditional import Conditional
    from gpbayes.results import fixed_sites

    p, fit = small_inverse_problem(n=6)
    if not measured:
        p = replace(p, observations=None, boundary_noise=None)
        fit.params["log_tau_b"] = jnp.asarray(3.0)
    rest = {k: v for k, v in {**fixed_sites(fit), "c": jnp.asarray(1.3)}.items()
            if k in model.initial_params(p)}
    lp = _log_density(model.pde_model, (p,), {"marginal": True}, rest)[0]
    cond = Conditional(p, rest, 1e-6)
    zero = jnp.zeros(p.grid)
    m_mat = jax.jacfwd(lambda u: cond.data_residual(u.reshape(p.grid)))(zero.reshape(-1))
    d = -cond.data_residual(zero)
    k = jnp.ones((1, 1))
    for l in cond.trils:
        k = jnp.kron(k, l @ l.T)

    def log_gauss(rows):  # log N(d; 0, I + M K M^T) on ``rows``
        m = m_mat[rows]
        s = jnp.eye(len(m)) + m @ k @ m.T
        return jax.scipy.stats.multivariate_normal.logpdf(d[rows], jnp.zeros(len(m)), s)

    e = cond.evidence_rows
    assert e.any() == measured
    prior = jax.scipy.stats.norm.logpdf(1.3, 1.0, 2.0)
    if measured:  # the measurements' rows' constants (their weights) stay in the ratio
        w = jnp.concatenate([cond.boundary_scale, jnp.ones(p.size) / cond.equation_sd,
                             jnp.ones(len(p.observations[1])) / p.observations[2]])
        expected = prior + jnp.sum(jnp.log(w[e])) + log_gauss(np.ones(len(d), bool)) \
            - log_gauss(~e)
    else:
        joint_at_zero = _log_density(model.pde_model, (p,), {"whiten": True},
                                     {**rest, "Z": zero})[0]
        constant = joint_at_zero + 0.5 * p.size * np.log(2 * np.pi) + 0.5 * jnp.sum(d**2)
        expected = constant + 0.5 * len(d) * np.log(2 * np.pi) + log_gauss(~e)
    np.testing.assert_allclose(lp, expected, rtol=1e-10)
