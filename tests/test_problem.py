import numpy as np
import pytest

from conftest import small_problem


def test_source_from_solution_by_autodiff():
    p = small_problem(equation="u_xx + u*(u**2 - 1)", solution="sin(3*x)")
    x = p.axes[0]
    u = np.sin(3 * x)
    np.testing.assert_allclose(p.source_values, -9 * u + u * (u**2 - 1), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(p.boundary_values, [0.0, np.sin(6.0)], atol=1e-15)


def test_axes_include_both_ends_and_test_grid():
    p = small_problem(n=11)
    assert p.axes[0][0] == 0.0 and p.axes[0][-1] == 2.0 and len(p.axes[0]) == 11
    np.testing.assert_allclose(p.exact_test, np.sin(3 * p.test_axes[0]))


def test_2d_faces_count_corners_twice(root):
    import gpbayes as gb

    p = gb.load_model(root / "models" / "poisson2d-sin6cos20.toml")
    n = p.grid[0]
    assert p.boundary_values.shape == (4 * n,)
    x = p.axes[0]
    v = np.sin(6 * x) * np.cos(20 * x)
    # x_lo face: u(0, y) = v(0) + v(y)
    np.testing.assert_allclose(p.boundary_values[:n], v[0] + v, atol=1e-12)


def test_condition_values_come_from_the_operator_applied_to_the_solution(root):
    """A model file with [[pde.boundary]] tables: the Robin value is u + u_x of the exact
    solution on its face, a Dirichlet one the solution itself; periodic parts carry 0."""
    import gpbayes as gb

    p = gb.load_model(root / "models" / "poisson1d-robin.toml")
    robin, dirichlet = p.conditions
    assert robin.operator.text == "u + u_x" and dirichlet.dirichlet
    x0, x1 = p.domain[0]
    want = [np.sin(40 * x0) + np.exp(x0) + 40 * np.cos(40 * x0) + np.exp(x0),
            np.sin(40 * x1) + np.exp(x1)]
    np.testing.assert_allclose(p.boundary_values, want, rtol=1e-12)
    q = gb.load_model(root / "models" / "advection-periodic.toml")
    assert [c.periodic for c in q.conditions] == [False, True]  # t_lo; u in x (order 1)
    assert np.all(q.boundary_values[q.grid[0]:] == 0)
    assert len(q.boundary_values) == q.grid[0] + q.grid[1]
    wave = gb.load_model(root / "models" / "wave1d.toml")
    velocity = [v for c, _, v in wave.boundary_arrays() if not c.dirichlet][0]
    x = wave.axes[0]
    np.testing.assert_allclose(velocity, 0.5 * 20 * np.pi * np.sin(20 * np.pi * x), atol=1e-9)


def test_derivative_conditions_default_weight_scales_with_the_spacing(root):
    """A condition with a k-th derivative along an axis weighs boundary_weight * h^(2k) by
    default (Dirichlet: boundary_weight); a table's own weight is kept as given."""
    import dataclasses

    import gpbayes as gb

    p = gb.load_model(root / "models" / "poisson2d-mixed.toml")
    h = p.axes[1][1] - p.axes[1][0]
    n = p.grid[1]  # an x face spans the y axis (its ghost points too)
    dirichlet, neumann = p.conditions
    assert neumann.operator.text == "u_y"
    np.testing.assert_allclose(p.row_weights[: 2 * n], p.boundary_weight)
    np.testing.assert_allclose(p.row_weights[2 * n:], p.boundary_weight * h**2, rtol=1e-12)
    robin = gb.load_model(root / "models" / "poisson1d-robin.toml")
    h = robin.axes[0][1] - robin.axes[0][0]
    assert robin.row_weights[0] == robin.boundary_weight * h**2  # u + u_x: first order
    assert robin.row_weights[1] == robin.boundary_weight  # Dirichlet
    given = dataclasses.replace(neumann, weight=3.0)
    q = dataclasses.replace(p, conditions=(dirichlet, given))
    np.testing.assert_allclose(q.row_weights[2 * n:], 3.0)


def test_ghost_cells_extend_the_grid_past_derivative_faces_only():
    from test_gauss_newton import conditions_case

    from conftest import small_2d_problem

    p, _ = small_2d_problem(n=9, boundary_noise=None, ghost_cells=3,
                            **conditions_case("neumann"))  # Dirichlet x, Neumann y
    assert p.domain_grid == (9, 9) and p.grid == (9, 15) and p.ghosts == ((0, 0), (3, 3))
    x, y = p.axes
    np.testing.assert_allclose(y[3:12], np.linspace(0, 1, 9), atol=1e-15)
    np.testing.assert_allclose(np.diff(y), 1 / 8, rtol=1e-12)
    np.testing.assert_allclose(p.domain_axes[1], np.linspace(0, 1, 9), atol=1e-15)
    # the faces stay on the domain's boundary: y = 0 and y = 1 at grid rows 3 and -4
    for _, f in p.boundary_parts:
        coord = np.asarray(f.axes(p.axes)[f.axis])
        assert coord == pytest.approx([0.0 if f.side == "lo" else 1.0], abs=1e-15)
    # the source on the whole extended grid, the equation held on the ghost points too
    assert p.source_values.shape == (9, 15)
    u = np.sin(3 * x)[:, None] * np.sin(2 * y)[None, :]
    np.testing.assert_allclose(p.source_values, -13 * u, atol=1e-12)


def test_ghost_cells_are_automatic_where_the_data_continue():
    from test_gauss_newton import conditions_case

    from conftest import small_2d_problem
    from gpbayes import operators as op
    from gpbayes.problem import AUTO_GHOST_CELLS

    p, _ = small_2d_problem(n=9, boundary_noise=None, **conditions_case("neumann"))
    assert p.ghosts == ((0, 0), (AUTO_GHOST_CELLS,) * 2) and p.grid == (9, 9 + 2 * AUTO_GHOST_CELLS)
    # sqrt(y) is not finite below y = 0: no ghost points, and no error
    p, _ = small_2d_problem(n=9, boundary_noise=None, source=op.parse("sqrt(y)", {"x", "y"}),
                            **conditions_case("neumann"))
    assert p.ghosts == ((0, 0), (0, 0)) and p.grid == (9, 9)
    assert np.all(np.isfinite(p.source_values))


def test_replace_keeps_the_domain_grid_or_takes_a_new_one():
    import dataclasses

    from test_gauss_newton import conditions_case

    from conftest import small_2d_problem

    p, _ = small_2d_problem(n=9, boundary_noise=None, ghost_cells=2,
                            **conditions_case("neumann"))
    same = dataclasses.replace(p, name="again")
    assert same.domain_grid == (9, 9) and same.grid == (9, 13)
    finer = dataclasses.replace(p, grid=(11, 12))
    assert finer.domain_grid == (11, 12) and finer.grid == (11, 16)
