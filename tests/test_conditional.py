"""The model at fixed hyperparameters: fields, residuals, log joint, prediction."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gpbayes as gb
from conftest import small_2d_problem, small_problem
from gpbayes import kron, model
from gpbayes import operators as op
from gpbayes.conditional import Conditional
from gpbayes.coordinates import Whitened
from gpbayes.gauss_newton import Rotated, rotated_basis
from gpbayes.problem import Face


def random_values(p, seed=0):
    rng = np.random.default_rng(seed)
    params = model.initial_params(p)
    return {k: v + 0.1 * rng.normal(size=np.shape(v)) for k, v in params.items()}


def data_problem(prior):
    """1-D, noisy boundary and equation, observations and an unknown k (its prior)."""
    v = ("x",)
    return gb.Problem(name="data", variables=v, domain=[(0.0, 1.0)], grid=(20,),
                      equation=op.parse("u_xx + k*u", {"x", "k"}, allow_u=True, variables=v),
                      source=op.parse("x", {"x"}), boundary_value=op.parse("0", {"x"}),
                      faces=(Face(0, "lo"), Face(0, "hi")), components=3,
                      boundary_noise=0.1, equation_noise=2.0,
                      observations=(np.array([[0.3], [0.6]]), np.array([0.1, -0.2]), 0.05),
                      unknowns={"k": (prior, 0.5, 0.3)})


@pytest.mark.parametrize("case", ["plain", "normal", "lognormal", "2d", "robin", "periodic",
                                  "ghosts", "noisy-condition"])
def test_log_joint_is_the_models_log_density(case):
    from test_gauss_newton import conditions_case

    if case == "plain":
        p = small_problem(n=30)
    elif case in ("robin", "periodic"):  # derivative conditions with their own weights
        p, _ = small_2d_problem(n=9, boundary_noise=None, ghost_cells=0, **conditions_case(case))
    elif case == "ghosts":  # the grid extended past the Robin faces
        p, _ = small_2d_problem(n=9, boundary_noise=None, ghost_cells=2,
                                **conditions_case("robin"))
        assert p.grid == (9, 13)
    elif case == "noisy-condition":  # Dirichlet x faces noisy (own sd), Neumann y tempered
        dirichlet, neumann = conditions_case("neumann")["conditions"]
        p, _ = small_2d_problem(n=9, boundary_noise=None, conditions=(
            dataclasses.replace(dirichlet, noise=0.05), neumann))
        assert p.tempered_rows.sum() == 2 * p.grid[0] and not p.tempered_rows.all()
    elif case == "2d":
        p, _ = small_2d_problem(n=9, observations=(np.array([[0.3, 0.4]]), np.array([0.1]),
                                                    0.05), boundary_noise=None)
    else:
        p = data_problem(case)
    values = random_values(p)
    values.pop("U")
    u = jnp.asarray(np.random.default_rng(1).normal(size=p.grid))
    lp, _ = gb.log_density(p, {**values, "U": u})
    got = Conditional(p, values, 1e-6).log_joint(u)
    assert float(got) == pytest.approx(float(lp), rel=1e-10)


def test_data_residual_is_the_log_joint_up_to_a_constant():
    p = data_problem("lognormal")
    values = random_values(p)
    values.pop("U")
    cond = Conditional(p, values, 1e-6)
    rng = np.random.default_rng(2)
    u1, u2 = (jnp.asarray(rng.normal(size=p.grid)) for _ in range(2))

    def half(u):
        return 0.5 * float(jnp.sum(cond.whiten(u) ** 2) + jnp.sum(cond.data_residual(u) ** 2))

    assert half(u1) - half(u2) == pytest.approx(float(cond.log_joint(u2) - cond.log_joint(u1)),
                                                rel=1e-10)
    # the same residual from whitened coordinates
    z1 = Whitened(cond.whiten(u1))
    np.testing.assert_allclose(cond.data_residual(z1), cond.data_residual(u1), rtol=1e-6,
                               atol=1e-8)


def is_linear(p):
    return Conditional(p, model.initial_params(p), 1e-6).is_linear()


def test_linearity_detection():
    assert is_linear(small_problem(equation="u_xx + 3*u"))
    assert is_linear(small_problem(equation="u_xx + x*u"))
    assert not is_linear(small_problem(equation="u_xx + u*(u**2 - 1)"))
    assert is_linear(data_problem("normal"))  # the unknown k is in the environment


def test_gp_derivative_of_smooth_function():
    """k''(X, X) K^{-1} u recovers u_xx of a smooth function on a fine grid."""
    p = small_problem(n=60, family="se", components=1)
    values = {"log_w_x": jnp.zeros(1), "log_rho_x": jnp.log(jnp.array([0.5]))}  # length 1
    x = p.axes[0]
    f = Conditional(p, values, 1e-10).fields(jnp.asarray(np.sin(x)))
    inner = slice(10, -10)
    np.testing.assert_allclose(f["u_xx"][inner], -np.sin(x)[inner], atol=1e-3)


def test_mixed_derivative_in_2d():
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
    u = jnp.asarray(np.sin(p.axes[0])[:, None] * np.cos(p.axes[1])[None, :])
    f = Conditional(p, values, 1e-10).fields(u)["u_xy"]
    np.testing.assert_allclose(f[5:-5, 5:-5], p.source_values[5:-5, 5:-5], atol=1e-3)


def test_whitened_fields_equal_the_fields_of_u():
    """Fields from z (U = L z) and from s (U = E s) equal those from U, with mixed and
    zero-order terms, in 2-D; so do the data residuals."""
    p, fit = small_2d_problem(equation="u_xx + u_xy + u*u_y")
    cond = Conditional(p, fit.params, 1e-6)
    z = jax.random.normal(jax.random.PRNGKey(1), p.grid)
    u = kron.kron_apply(cond.trils, z)
    basis = rotated_basis(cond)
    s = Rotated(kron.kron_apply(basis.e_inv, u), basis)
    z = Whitened(z)
    a, b, c = cond.fields(u), cond.fields(z), cond.fields(s)
    assert set(a) == set(b) == set(c) == {"u", "u_xx", "u_xy", "u_y"}
    for k in a:
        scale = float(jnp.max(jnp.abs(a[k])))
        np.testing.assert_allclose(b[k], a[k], rtol=1e-6, atol=1e-7 * scale)
        np.testing.assert_allclose(c[k], a[k], rtol=1e-6, atol=1e-7 * scale)
    np.testing.assert_allclose(cond.residual(z), cond.residual(u), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(cond.data_residual(s), cond.data_residual(u), rtol=1e-6,
                               atol=1e-6)


def test_the_values_are_the_conditional_mean_not_u():
    """u's field (the equation's u terms, Dirichlet rows) is the conditional mean at the
    grid, U - jitter K^-1 U, the function every prediction reports; with a large jitter
    the two differ visibly from U."""
    p, fit = small_2d_problem(n=10)
    cond = Conditional(p, fit.params, 1e-2)
    u = jnp.asarray(np.random.default_rng(5).normal(size=p.grid))
    mean = cond.predict_grid(u, p.axes)
    assert float(jnp.max(jnp.abs(mean - u))) > 1e-3
    np.testing.assert_allclose(cond.fields(u, {"u": (0, 0)})["u"], mean, rtol=1e-8,
                               atol=1e-10)
    np.testing.assert_allclose(cond.fields(Whitened(cond.whiten(u)), {"u": (0, 0)})["u"], mean,
                               rtol=1e-8, atol=1e-10)


def test_predictions_agree_across_coordinates_and_point_layouts():
    """Scattered points, the tensor grid, batches, u and z: one conditional mean."""
    p, fit = small_2d_problem(n=10)
    cond = Conditional(p, fit.params, 1e-6)
    rng = np.random.default_rng(4)
    u = jnp.asarray(rng.normal(size=p.grid))
    grid = cond.predict_grid(u, p.test_axes)
    xs, ys = np.meshgrid(*p.test_axes, indexing="ij")
    pts = np.stack([xs.ravel(), ys.ravel()], -1)
    np.testing.assert_allclose(cond.predict(u, pts).reshape(grid.shape), grid, rtol=1e-9,
                               atol=1e-10)
    z = cond.whiten(u)
    np.testing.assert_allclose(cond.predict_grid(Whitened(z), p.test_axes), grid, rtol=1e-6,
                               atol=1e-8)
    batch = cond.predict_grid(jnp.stack([u, 2 * u]), p.test_axes)
    np.testing.assert_allclose(batch[1], 2 * grid, rtol=1e-12, atol=1e-12)
    # at the collocation points the conditional mean is kron_j (I - jitter K_j^{-1}) U
    want = u
    for j, l in enumerate(cond.trils):
        want = want - 1e-6 * kron.mode_cho_solve(l, want, j)
    np.testing.assert_allclose(cond.predict_grid(u, p.axes), want, rtol=1e-6,
                               atol=1e-9 * float(jnp.max(jnp.abs(want))))


def test_residual_on_the_grid_points_matches_the_grid_residual():
    p = small_problem(n=30, equation="u_xx + u*(u**2 - 1)")
    values = random_values(p)
    u = jnp.asarray(np.sin(3 * p.axes[0]))
    cond = Conditional(p, values, 1e-8)
    np.testing.assert_allclose(cond.residual_on(u, p.axes), cond.residual(u), rtol=1e-4,
                               atol=1e-4 * float(jnp.max(jnp.abs(cond.residual(u)))))


def test_linearised_rows_and_the_pde_mode():
    """Where the data terms are affine in U, their linearisation anywhere is the affine
    system itself, and one Gauss-Newton step from anywhere reaches U's mode given the
    PDE's rows; ``evidence_given_pde``'s mode equals ``u_given_rest``'s (all rows)."""
    from gpbayes.infer.solvers import least_squares

    p = data_problem("normal")
    cond = Conditional(p, {**model.initial_params(p), "k": jnp.asarray(0.7)}, 1e-6)
    anywhere = jax.random.normal(jax.random.PRNGKey(0), p.grid)
    for a, b in zip(cond.linear_system(anywhere), cond.linear_system()):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)
    jac, rhs = cond.linear_system()
    keep = ~np.concatenate([cond.evidence_rows, np.zeros(p.size, bool)])
    np.testing.assert_allclose(cond.pde_mode(anywhere, 1).ravel(),
                               least_squares(jac[keep], rhs[keep])[0], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(cond.evidence_given_pde(anywhere)[0], cond.u_given_rest()[0],
                               rtol=1e-8, atol=1e-10)


def test_a_conditional_is_an_immutable_pytree_sharing_its_factors():
    """The factors are leaves: a compiled function takes a Conditional and returns one
    (the same factors), ``with_values`` shares them for new precisions and computes them
    anew for a new kernel, and no attribute can be set."""
    p, fit = small_2d_problem(n=9)
    cond = Conditional(p, fit.params, 1e-6)
    assert {(0, 0), (0, 2), (1, 0), (1, 2)} <= set(cond.matrices)
    with pytest.raises(AttributeError):
        cond.jitter = 1.0
    back = jax.jit(lambda c: c)(cond)
    assert isinstance(back, Conditional) and back.problem is p
    for a, b in zip(jax.tree.leaves(cond), jax.tree.leaves(back)):
        np.testing.assert_array_equal(a, b)
    u = jnp.asarray(np.random.default_rng(2).normal(size=p.grid))
    np.testing.assert_allclose(jax.jit(lambda c: c.residual(u))(cond), cond.residual(u),
                               rtol=1e-12, atol=1e-9)
    tau = cond.with_values({"log_tau_e": jnp.asarray(3.0)})
    assert tau.trils is cond.trils and tau.values["log_tau_e"] == 3.0
    assert "log_tau_e" not in cond.values  # the original is unchanged
    site = next(k for k in fit.params if k.startswith("log_rho"))
    other = cond.with_values({site: fit.params[site] + 0.5})
    assert other.trils is not cond.trils
    assert not np.allclose(other.kernel_matrix(0), cond.kernel_matrix(0))
