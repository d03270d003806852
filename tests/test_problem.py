import numpy as np

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
