"""The square collocation system (equation at the free points, Dirichlet data at the
rest) against a dense assembly of the same equations; Newton on a nonlinear one."""

import numpy as np
import pytest

import gpbayes as gb
from conftest import small_2d_problem, small_problem
from gpbayes.conditional import Conditional
from gpbayes.infer.init import plain_params
from gpbayes.linalg.square import SquareSystem, applies, fixed_faces
from gpbayes.problem import Face


def dense_square_system(system, coefficients):
    """(A, b): the dense square system of sum_name c_name * field_name = f at the free
    points and u = g on the Dirichlet faces, from the system's derivative matrices, each
    checked first: D_j^(m) K_j = k_j^(m), D_j^(0) = I."""
    cond = system.cond
    p = cond.problem
    for j, mats in enumerate(system.d):
        k = np.asarray(cond.kernel_matrix(j)) + cond.jitter * np.eye(p.grid[j])
        for m, d in mats.items():
            km = np.asarray(cond.kernel_matrix(j, m)) if m else k
            np.testing.assert_allclose(d @ k, km, atol=1e-8 * np.abs(km).max())
    n = p.size
    a = 0.0
    for name, c in coefficients.items():
        term = np.ones((1, 1))
        for j, m in enumerate(p.derivatives[name]):
            term = np.kron(term, system.d[j][m])
        a = a + c * term
    fixed = np.zeros(p.grid, bool)
    for _, face in p.boundary_parts:
        index = [slice(None)] * p.ndim
        index[face.axis] = face.index
        fixed[tuple(index)] = True
    fixed = fixed.reshape(-1)
    a[fixed] = np.eye(n)[fixed]  # the boundary rows: u = g
    b = np.asarray(p.source_values).reshape(-1).copy()
    b[fixed] = np.asarray(p.exact(p.axes)).reshape(-1)[fixed]
    return a, b


def assert_solves(u, a, b):
    """u solves A u = b to a backward error near rounding (the systems are ill-conditioned:
    two stable solvers agree in residual, not digit by digit)."""
    u = u.reshape(-1)
    backward = np.linalg.norm(a @ u - b) / (np.linalg.norm(a, 2) * np.linalg.norm(u)
                                            + np.linalg.norm(b))
    assert backward < 1e-12, backward


def with_se(p, length=0.3):
    p = p.with_kernel("se", 1)
    return Conditional(p, plain_params(p, length), 1e-10)


CASES = {
    "poisson-1d": (lambda: small_problem(n=30), {"u_xx": 1.0}),
    "poisson-2d": (lambda: small_2d_problem(n=12)[0], {"u_xx": 1.0, "u_yy": 1.0}),
    "helmholtz-2d": (lambda: small_2d_problem(n=12, equation="u_xx + u_yy + 5*u")[0],
                     {"u_xx": 1.0, "u_yy": 1.0, "u": 5.0}),
    "heat-2d": (lambda: small_2d_problem(
        n=12, equation="u_y - 0.2*u_xx", solution="exp(-0.2*9*y)*sin(3*x)",
        faces=(Face(0, "lo"), Face(0, "hi"), Face(1, "lo")))[0], {"u_y": 1.0, "u_xx": -0.2}),
}


@pytest.mark.parametrize("case", ["poisson-1d", "poisson-2d", "helmholtz-2d", "heat-2d"])
def test_square_solution_matches_the_dense_system(case):
    make, coefficients = CASES[case]
    system = SquareSystem(with_se(make()))
    sol = system.solve()
    assert sol.converged and sol.stats[0].iterations <= 2  # separable: the direct solve
    assert_solves(sol.u, *dense_square_system(system, coefficients))


def test_square_solution_in_3d_is_accurate():
    from gpbayes import operators as op

    v = ("x", "y", "z")
    p = gb.Problem(name="p3", variables=v, domain=[(0.0, 1.0)] * 3, grid=(9, 8, 7),
                   equation=op.parse("u_xx + u_yy + u_zz", set(v), allow_u=True, variables=v),
                   solution=op.parse("sin(x)*cos(y)*exp(z)", set(v)),
                   faces=tuple(Face(a, s) for a in range(3) for s in ("lo", "hi")),
                   components=1)
    system = SquareSystem(with_se(p, 0.5))
    sol = system.solve()
    assert_solves(sol.u, *dense_square_system(system, {"u_xx": 1.0, "u_yy": 1.0, "u_zz": 1.0}))
    exact = np.asarray(p.exact(p.axes))
    assert np.linalg.norm(sol.u - exact) / np.linalg.norm(exact) < 1e-2


def test_newton_on_a_nonlinear_equation():
    """u_xx + u_yy + u**3 = f: Newton steps, each GMRES preconditioned by the separable
    part, drive the residual at the free points to rounding."""
    p = small_2d_problem(n=14, equation="u_xx + u_yy + u**3")[0]
    system = SquareSystem(with_se(p))
    sol = system.solve()
    assert len(sol.stats) > 1 and all(s.iterations >= 1 for s in sol.stats)
    r = system.residual(sol.u)[1:-1, 1:-1]
    assert np.linalg.norm(r) < 1e-8 * np.linalg.norm(np.asarray(p.source_values))
    exact = np.asarray(p.exact(p.axes))
    assert np.linalg.norm(sol.u - exact) / np.linalg.norm(exact) < 1e-3


def test_which_problems_have_a_square_system(root):
    from conftest import small_inverse_problem

    assert fixed_faces(small_problem()) == ((True, True),)
    heat = CASES["heat-2d"][0]()
    assert fixed_faces(heat) == ((True, True), (True, False)) and applies(heat)
    robin = gb.load_model(root / "models/poisson1d-robin.toml")
    assert fixed_faces(robin) is None and not applies(robin)
    assert not applies(small_inverse_problem()[0])  # unknowns: no square system
