import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gpbayes as gb
from conftest import small_problem
from gpbayes import kernels, kron, model


def random_params(p, seed=0):
    rng = np.random.default_rng(seed)
    params = model.initial_params(p)
    params = {k: v + 0.1 * rng.normal(size=np.shape(v)) for k, v in params.items()}
    params["U"] = rng.normal(size=p.grid)
    return params


def dense_log_joint(p, params, jitter=1e-6):
    """The GP-HM log joint written densely (1-D Poisson, u_xx = f), for comparison."""
    x = jnp.asarray(p.axes[0])
    ap = model.axis_params(p, params, 0)
    k = kernels.cross(p.family, ap, x, x) + jitter * jnp.eye(len(x))
    kxx = kernels.cross(p.family, ap, x, x, 2)
    u = params["U"]
    n = len(x)
    prior = -0.5 * jnp.linalg.slogdet(k)[1] - 0.5 * u @ jnp.linalg.solve(k, u) \
        - 0.5 * n * np.log(2 * np.pi)
    r = kxx @ jnp.linalg.solve(k, u) - p.source_values
    te, tb = jnp.exp(params["log_tau_e"]), jnp.exp(params["log_tau_b"])
    eq = 0.5 * n * jnp.log(te / (2 * np.pi)) - 0.5 * te * jnp.sum(r**2)
    b = u[jnp.array([0, n - 1])] - p.boundary_values
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


def test_gp_derivative_of_smooth_function():
    """k''(X, X) K^{-1} u recovers u_xx of a smooth function on a fine grid."""
    p = small_problem(n=60, family="se", components=1)
    values = {"log_w_x": jnp.zeros(1), "log_rho_x": jnp.log(jnp.array([0.5]))}  # length 1
    x = p.axes[0]
    u = jnp.asarray(np.sin(x))
    f = model.derivative_fields(p, values, model.axis_factors(p, values, 1e-10), u)
    inner = slice(10, -10)
    np.testing.assert_allclose(f["u_xx"][inner], -np.sin(x)[inner], atol=1e-3)


@pytest.mark.parametrize("family", ["matern52", "gaussian-mixture"])
def test_families_have_their_sites(family):
    p = small_problem(family=family)
    _, trace = gb.log_density(p, model.initial_params(p))
    assert ("mu_x" in trace) == (family == "gaussian-mixture")


def test_mixed_derivative_in_2d():
    from gpbayes import operators as op
    from gpbayes.problem import Face

    v = ("x", "y")
    p = gb.Problem(name="mix", variables=v, domain=[(0, 1), (0, 1)], grid=(30, 28),
                   equation=op.parse("u_xy", set(v), allow_u=True, variables=v),
                   solution=op.parse("sin(x)*cos(y)", set(v)), faces=(Face(0, "lo"),),
                   family="se", components=1)
    assert p.derivatives == {"u_xy": (1, 1)}
    np.testing.assert_allclose(p.source_values, -np.cos(p.axes[0])[:, None]
                               * np.sin(p.axes[1])[None, :], atol=1e-12)
    values = {"log_w_x": jnp.zeros(1), "log_rho_x": jnp.log(jnp.array([2.0])),
              "log_w_y": jnp.zeros(1), "log_rho_y": jnp.log(jnp.array([2.0]))}
    trils = model.axis_factors(p, values, 1e-10)
    u = jnp.asarray(np.sin(p.axes[0])[:, None] * np.cos(p.axes[1])[None, :])
    f = model.derivative_fields(p, values, trils, u)["u_xy"]
    np.testing.assert_allclose(f[5:-5, 5:-5], p.source_values[5:-5, 5:-5], atol=1e-3)


def test_whitened_fields_equal_the_fields_of_u():
    """Fields from z (U = L z) equal those from U, with mixed and zero-order terms, in 2-D."""
    from conftest import small_2d_problem

    p, fit = small_2d_problem(equation="u_xx + u_xy + u*u_y")
    values = fit.params
    trils = model.axis_factors(p, values, 1e-6)
    z = jax.random.normal(jax.random.PRNGKey(1), p.grid)
    u = kron.kron_apply(trils, z)
    a = model.derivative_fields(p, values, trils, u)
    b = model.derivative_fields(p, values, trils, z, whitened=True)
    assert set(a) == set(b) == {"u", "u_xx", "u_xy", "u_y"}
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-6, atol=1e-7 * float(jnp.max(jnp.abs(a[k]))))
    np.testing.assert_allclose(model.equation_residual(p, values, trils, z, whitened=True),
                               model.equation_residual(p, values, trils, u), rtol=1e-6, atol=1e-6)

