"""The Gauss-Newton operator: its exact diagonal, preconditioner and bases, and PCG on it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import paper_recipe, small_2d_problem
from gpbayes import gauss_newton
from gpbayes import operators as op
from gpbayes.conditional import Conditional
from gpbayes.coordinates import Whitened
from gpbayes.infer import solvers
from gpbayes.stops import Stop


def dense_hessian(hess, grid):
    n = int(np.prod(grid))
    return np.asarray(hess(jnp.eye(n).reshape((n,) + grid))).reshape(n, n)


@pytest.mark.parametrize("equation", [
    "u_xx + u_yy",                       # constant coefficients
    "u_xx + x*u_y + (1 + y)*u",          # spatially varying, mixed orders
    "u_xx + u_yy + u**3 - u",            # nonlinear: the Gauss-Newton linearisation
])
def test_diagonal_is_exact(equation):
    obs = (np.array([[0.3, 0.4], [0.8, 0.1]]), np.array([0.1, -0.2]), 0.05)
    p, fit = small_2d_problem(n=9, equation=equation, observations=obs)
    cond = Conditional(p, fit.params, fit.recipe.jitter)
    u = jnp.asarray(np.random.default_rng(1).normal(size=p.grid))
    gn = cond.gauss_newton(u)
    h = dense_hessian(gn.mv, p.grid)
    diag = gn.diagonal
    assert np.allclose(h, h.T, rtol=1e-8, atol=1e-8 * np.abs(h).max())
    np.testing.assert_allclose(np.diag(h), np.asarray(diag).reshape(-1), rtol=1e-7)
    # the preconditioner inverts diag(H without the boundary) + the boundary rows exactly
    rows = gauss_newton.BoundaryRows(cond, gn.basis)
    n = p.size
    b = np.asarray(rows.apply(jnp.eye(n).reshape((n,) + p.grid))).T  # (n_b, n)
    inner = np.diag(h) - 1e4 * np.sum(b**2, axis=0)  # boundary_noise 0.01: scale 100
    m = np.diag(inner) + 1e4 * b.T @ b
    np.testing.assert_allclose(np.diag(m), np.diag(h), rtol=1e-7)
    v = np.random.default_rng(2).normal(size=n)
    got = np.asarray(gn.preconditioner(jnp.asarray(v.reshape(p.grid)))).reshape(-1)
    np.testing.assert_allclose(m @ got, v, rtol=1e-6, atol=1e-6 * np.abs(v).max())


def conditions_case(kind):
    """Boundary conditions of each kind on [0, 1]^2 (``boundary.Condition``)."""
    from gpbayes.boundary import Condition
    from gpbayes.problem import Face

    v = ("x", "y")

    def parse(text):
        return op.parse(text, set(v), allow_u=True, variables=v)

    x_faces, y_faces = (Face(0, "lo"), Face(0, "hi")), (Face(1, "lo"), Face(1, "hi"))
    if kind == "neumann":
        return dict(conditions=(Condition(x_faces), Condition(y_faces, parse("u_y"))))
    if kind == "robin":  # a coefficient that varies along the face, and two weights
        return dict(conditions=(Condition(x_faces, weight=3.0),
                                Condition(y_faces, parse("u + x*u_y + u_xx"), weight=0.5)))
    return dict(conditions=(Condition(y_faces),), periodic=(0,))


@pytest.mark.parametrize("kind", ["neumann", "robin", "periodic"])
def test_boundary_rows_of_every_condition_kind(kind):
    """The rows of each condition kind: BoundaryRows is the Jacobian of the boundary
    mismatch in s, the diagonal of H is exact with them, and the preconditioner inverts
    the diagonal of the other terms plus those rows exactly (Woodbury)."""
    p, fit = small_2d_problem(n=9, boundary_noise=None, **conditions_case(kind))
    values = {**fit.params, "log_tau_b": jnp.asarray(2.0)}
    cond = Conditional(p, values, fit.recipe.jitter)
    gn = cond.gauss_newton(jnp.asarray(np.random.default_rng(1).normal(size=p.grid)))
    n = p.size
    eye = jnp.eye(n).reshape((n,) + p.grid)
    rows = gauss_newton.BoundaryRows(cond, gn.basis)
    b = np.asarray(rows.apply(eye)).T  # (n_b, n)
    jac = jax.jacfwd(lambda s: cond.boundary_difference(gn.to_grid(s)))(gn.s0)
    np.testing.assert_allclose(b, np.asarray(jac).reshape(len(b), n), rtol=1e-9,
                               atol=1e-9 * np.abs(b).max())
    y = np.random.default_rng(3).normal(size=len(b))
    np.testing.assert_allclose(np.asarray(rows.transpose(jnp.asarray(y))).reshape(-1), b.T @ y,
                               rtol=1e-9, atol=1e-9 * np.abs(b.T @ y).max())
    w_inner = np.random.default_rng(4).uniform(0.5, 2.0, size=p.grid)  # the Gram from structure
    gram = b @ (w_inner.reshape(-1)[:, None] * b.T)
    for structured in (gauss_newton.gram_2d, gauss_newton.gram_kron):
        np.testing.assert_allclose(structured(rows, jnp.asarray(w_inner)), gram, rtol=1e-9,
                                   atol=1e-9 * np.abs(gram).max())
    h = dense_hessian(gn.mv, p.grid)
    np.testing.assert_allclose(np.diag(h), np.asarray(gn.diagonal).reshape(-1), rtol=1e-7)
    w = np.asarray(cond.boundary_scale) ** 2
    m = np.diag(np.diag(h) - (w[:, None] * b**2).sum(0)) + b.T @ (w[:, None] * b)
    v = np.random.default_rng(2).normal(size=n)
    got = np.asarray(gn.preconditioner(jnp.asarray(v.reshape(p.grid)))).reshape(-1)
    np.testing.assert_allclose(m @ got, v, rtol=1e-6, atol=1e-6 * np.abs(v).max())


def test_preconditioner_cuts_iterations_and_solution_is_exact():
    p, fit = small_2d_problem(n=14)
    gn = Conditional(p, fit.params, fit.recipe.jitter).gauss_newton(jnp.zeros(p.grid))
    hess, diag = gn.mv, gn.diagonal
    b = jnp.stack([-gn.gradient, jnp.ones(p.grid)])
    x, k, res = jax.jit(lambda b: gn.solve(b, 1e-10, 5000))(b)
    _, k_diag, _ = jax.jit(lambda b: solvers.pcg(hess, b, lambda v: v / diag, 1e-10, 5000, 2))(b)
    _, k_plain, _ = jax.jit(lambda b: solvers.pcg(hess, b, lambda v: v, 1e-10, 5000, 2))(b)
    h = dense_hessian(hess, p.grid)
    want = np.linalg.solve(h, np.asarray(b).reshape(2, -1).T).T
    assert float(res) < 1e-8 and int(k) <= int(k_diag) < int(k_plain) / 5
    np.testing.assert_allclose(np.asarray(x).reshape(2, -1), want, rtol=1e-6,
                               atol=1e-8 * np.abs(want).max())


def test_rotated_basis_factors_k_and_diagonalises_the_derivative_gram_per_decade():
    p, fit = small_2d_problem(n=14)
    cond = Conditional(p, fit.params, fit.recipe.jitter)
    basis = gauss_newton.rotated_basis(cond)
    for j, (e, e_inv, k_inv_e) in enumerate(zip(basis.e, basis.e_inv, basis.k_inv_e)):
        e, e_inv, k_inv_e = map(np.asarray, (e, e_inv, k_inv_e))
        k = np.asarray(cond.trils[j] @ cond.trils[j].T)
        np.testing.assert_allclose(e @ e.T, k, atol=1e-10 * np.abs(k).max())
        np.testing.assert_allclose(e_inv @ e, np.eye(len(k)), atol=1e-6)
        np.testing.assert_allclose(k @ k_inv_e, e, atol=1e-8 * np.abs(e).max())
        lam = np.sum(e**2, axis=0)  # the rotation keeps each column within its decade
        b = np.asarray(basis.operators[j, 2])
        gram = b.T @ b
        decade = np.floor(np.log10(lam) + 1e-9)
        same = decade[:, None] == decade[None, :]
        off = np.where(same & ~np.eye(len(lam), dtype=bool), gram, 0.0)
        assert np.abs(off).max() <= 1e-8 * np.abs(gram).max()
        assert not np.allclose(np.where(~same, gram, 0.0), 0.0)  # across decades: not


def test_decade_rotation_is_orthogonal_and_block_diagonal():
    rng = np.random.default_rng(3)
    lam = np.sort(np.concatenate([rng.uniform(1, 9, 4), rng.uniform(0.01, 0.09, 3)]))
    a = rng.normal(size=(7, 7))
    r = np.asarray(gauss_newton.decade_rotation(jnp.asarray(lam), jnp.asarray(a @ a.T)))
    np.testing.assert_allclose(r.T @ r, np.eye(7), atol=1e-12)
    assert np.all(r[:3, 3:] == 0) and np.all(r[3:, :3] == 0)
    g = r.T @ a @ a.T @ r
    for blk in (g[:3, :3], g[3:, 3:]):
        assert np.abs(blk - np.diag(np.diag(blk))).max() < 1e-10 * np.abs(blk).max()


def reference_preconditioner(h, sb):
    """D + (S B)^T (S B) densely: D the diagonal of H without the boundary rows S B."""
    return np.diag(np.diag(h) - np.sum(sb**2, axis=0)) + sb.T @ sb


def test_preconditioner_takes_the_1d_boundary_rows_exactly():
    """1-D grids above the dense limit use CG: the two boundary rows enter the
    preconditioner exactly (Woodbury), as the face rows do in 2-D."""
    from conftest import small_problem
    from gpbayes.infer.init import spectral_params

    p = small_problem(n=30, equation="u_xx + x*u_x", boundary_noise=0.01)
    values = {k: v for k, v in spectral_params(p, 0.3).items() if k != "U"}
    values["log_tau_e"] = jnp.asarray(4.0)
    cond = Conditional(p, values, 1e-6)
    gn = cond.gauss_newton(jnp.asarray(np.random.default_rng(1).normal(size=p.grid)))
    assert gauss_newton.exact_boundary_rows(p)
    h = dense_hessian(gn.mv, p.grid)
    b = np.asarray(gauss_newton.BoundaryRows(cond, gn.basis).apply(jnp.eye(p.size))).T  # (2, n)
    # Dirichlet rows: the conditional mean's values at the ends, (E - jitter K^-1 E) s
    e, k_inv_e = np.asarray(gn.basis.e[0]), np.asarray(gn.basis.k_inv_e[0])
    np.testing.assert_allclose(b, (e - 1e-6 * k_inv_e)[[0, -1]], rtol=1e-12)
    m = reference_preconditioner(h, 100.0 * b)  # boundary noise sd 0.01
    v = np.random.default_rng(2).normal(size=p.size)
    got = np.asarray(gn.preconditioner(jnp.asarray(v)))
    np.testing.assert_allclose(m @ got, v, rtol=1e-6, atol=1e-6 * np.abs(v).max())


def _gn_3d_with_derivative_conditions():
    import gpbayes as gb
    from gpbayes.boundary import Condition, Face
    from gpbayes.infer.init import spectral_params

    v = ("x", "y", "z")

    def parse(text):
        return op.parse(text, set(v), allow_u=True, variables=v)

    conditions = (Condition((Face(0, "lo"), Face(0, "hi"))),
                  Condition((Face(1, "lo"),), parse("u_y")),
                  Condition((Face(2, "hi"),), parse("u + y*u_z"), weight=3.0))
    p = gb.Problem(name="n3", variables=v, domain=[(0.0, 1.0)] * 3, grid=(5, 4, 5),
                   equation=parse("u_xx + u_yy + u_zz"), solution=op.parse("x*y*z", set(v)),
                   conditions=conditions, components=2, max_frequency=1.0, ghost_cells=0)
    values = {k: x for k, x in spectral_params(p).items() if k != "U"}
    values["log_tau_b"] = jnp.asarray(np.log(1e6))
    cond = Conditional(p, values, 1e-6)
    return p, cond, cond.gauss_newton(jnp.asarray(np.random.default_rng(1).normal(size=p.grid)))


def test_3d_diagonal_with_derivative_conditions():
    """The diagonal of the Gauss-Newton operator in 3-D, with Neumann and Robin rows
    (terms on 2-D faces)."""
    p, _, gn = _gn_3d_with_derivative_conditions()
    h = dense_hessian(gn.mv, p.grid)
    np.testing.assert_allclose(np.diag(h), np.asarray(gn.diagonal).reshape(-1), rtol=1e-7)


def test_3d_preconditioner_takes_the_boundary_rows_exactly():
    """In 3-D the face rows (Dirichlet, Neumann, Robin) enter the preconditioner exactly,
    by the Woodbury identity, as in 1-D and 2-D: P = D + B^T S^2 B, D the diagonal of the
    other terms; the capacitance's Gram B diag(w) B^T comes from the rows' structure."""
    p, cond, gn = _gn_3d_with_derivative_conditions()
    assert gauss_newton.exact_boundary_rows(p)
    h = dense_hessian(gn.mv, p.grid)
    rows = gauss_newton.BoundaryRows(cond, gn.basis)
    b = np.asarray(rows.apply(jnp.eye(p.size).reshape((-1,) + p.grid))).T
    w = np.random.default_rng(4).uniform(0.5, 2.0, size=p.grid)
    gram = b @ (w.reshape(-1)[:, None] * b.T)
    np.testing.assert_allclose(gauss_newton.gram_kron(rows, jnp.asarray(w)), gram, rtol=1e-9,
                               atol=1e-9 * np.abs(gram).max())
    m = reference_preconditioner(h, np.asarray(cond.boundary_scale)[:, None] * b)
    v = np.random.default_rng(2).normal(size=p.size)
    got = np.asarray(gn.preconditioner(jnp.asarray(v).reshape(p.grid))).reshape(-1)
    want = np.linalg.solve(m, v)  # m is ill-conditioned (tau_b 1e6): compare solutions
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-7 * np.abs(want).max())


def test_boundary_rows_beyond_the_capacitance_limit_by_their_diagonal(monkeypatch):
    """Above MAX_CAPACITANCE rows the preconditioner keeps their diagonal only: the
    inverse of the operator's diagonal."""
    monkeypatch.setattr(gauss_newton, "MAX_CAPACITANCE", 10)
    p, _, gn = _gn_3d_with_derivative_conditions()
    assert not gauss_newton.exact_boundary_rows(p)
    v = jnp.asarray(np.random.default_rng(2).normal(size=p.grid))
    np.testing.assert_allclose(gn.preconditioner(v), v / gn.diagonal, rtol=1e-12)


def test_unknowns_schur_complement_is_their_laplace_precision():
    """eliminate_unknowns: S^{-1} equals the unknown's variance in the inverse of the dense
    Gauss-Newton Hessian of the whole residual (whitened U and c together)."""
    from conftest import small_inverse_problem
    from gpbayes.infer.posterior import residual_vector

    p, fit = small_inverse_problem()
    values = {k: v for k, v in fit.params.items() if k != "U"}
    u = fit.params["U"]
    schur, h_cols, _, _ = jax.jit(lambda: Conditional(p, values, 1e-6).gauss_newton(u)
                                  .eliminate_unknowns(1e-12, 5000))()
    cond = Conditional(p, values, 1e-6)
    z = cond.whiten(u)

    def r(x):
        return residual_vector(cond, {"Z": x[:-1].reshape(p.grid), "c": x[-1]})

    jac = jax.jacfwd(r)(jnp.append(z.reshape(-1), values["c"]))
    cov = jnp.linalg.inv(jac.T @ jac)
    assert schur.shape == (1, 1) and h_cols.shape == (1,) + p.grid
    np.testing.assert_allclose(1.0 / schur[0, 0], cov[-1, -1], rtol=1e-6)


@pytest.mark.parametrize("n", [8, 9])
def test_woodbury_root_squares_to_the_inverse_preconditioner(n):
    """F F^T = P^{-1} for the preconditioner with the boundary rows exact (2-D, noisy
    boundary data and a Neumann condition)."""
    import dataclasses

    from gpbayes.boundary import Condition, Face

    p, fit = small_2d_problem(n=n)
    neumann = Condition((Face(1, "lo"),), op.parse("u_y", set(), allow_u=True,
                                                   variables=p.variables), weight=50.0)
    p = dataclasses.replace(p, conditions=p.conditions + (neumann,), ghost_cells=0)  # fit.U
    values = {k: v for k, v in fit.params.items() if k != "U"}
    cond = Conditional(p, values, 1e-6)
    basis = gauss_newton.rotated_basis(cond)
    inner = gauss_newton.equation_diagonal(cond, basis, fit.params["U"])
    eye = jnp.eye(p.size).reshape((p.size,) + p.grid)
    f = gauss_newton.woodbury_root(cond, basis, inner)(eye).reshape(p.size, p.size)  # F^T
    p_inv = gauss_newton.woodbury_preconditioner(cond, basis, inner)(eye).reshape(p.size, p.size)
    np.testing.assert_allclose(f.T @ f, p_inv, rtol=1e-7, atol=1e-9 * np.abs(p_inv).max())


def test_whitened_coordinates_agree_and_a_3d_fit_predicts_from_them():
    """``Rotated.whitened`` is z = L^{-1} U of ``to_grid``'s U (per axis the orthogonal
    L_j^{-1} E_j), and a 3-D fit that carries z predicts from it (``MapFit.latent``): the
    same mean as from U where K is well conditioned (jitter 1e-6 here)."""
    import dataclasses

    from gpbayes.results import MapFit

    p, cond, gn = _gn_3d_with_derivative_conditions()
    s = jnp.asarray(np.random.default_rng(3).normal(size=p.grid))
    z = gauss_newton.Rotated(s, gn.basis).whitened(cond)
    np.testing.assert_allclose(z, cond.whiten(gn.to_grid(s)), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(jnp.sum(z**2), jnp.sum(s**2), rtol=1e-10)  # orthogonal
    params = {**{k: np.asarray(v) for k, v in cond.values.items()},
              "U": np.asarray(gn.to_grid(s))}
    fit = MapFit(p, params, paper_recipe(jitter=1e-6), 0, 0.0, Stop.CONVERGED, True,
                 z=np.asarray(z))
    assert isinstance(fit.latent, Whitened)
    from_u = dataclasses.replace(fit, z=None)
    assert not isinstance(from_u.latent, Whitened)
    np.testing.assert_allclose(fit.test_prediction, from_u.test_prediction, rtol=1e-6,
                               atol=1e-8 * np.abs(from_u.test_prediction).max())
