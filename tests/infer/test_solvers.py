"""The solvers: dense Gauss-Newton (QR) and PCG."""

import jax
import jax.numpy as jnp
import numpy as np

from conftest import small_2d_problem
from gpbayes.conditional import Conditional
from gpbayes.infer import solvers


def test_pcg_stops_at_max_iterations():
    p, fit = small_2d_problem(n=9)
    gn = Conditional(p, fit.params, fit.recipe.jitter).gauss_newton(jnp.zeros(p.grid))
    _, k, res = gn.solve(jnp.ones(p.grid), 1e-14, 3)
    assert int(k) == 3 and float(res) > 1e-6


def test_pcg_gives_up_once_its_tolerance_is_out_of_reach():
    """``give_up``: past half its budget PCG stops once its mean rate so far would not
    reach tol by maxiter, and reports maxiter (not converged); a solve that converges
    within its budget is untouched. A diagonal system, eigenvalues 1 to 1e8 evenly in
    log: CG needs far more than 100 iterations for 1e-8 (and about 30 for 1 to 10)."""
    lam = jnp.logspace(0, 8, 400)
    b, products = jnp.ones(400), [0]

    def mv(v):
        products[0] += 1
        return lam * v

    with jax.disable_jit():  # count the products
        for give_up in (False, True):
            products[0] = 0
            _, k, res = solvers.pcg(mv, b, lambda r: r, 1e-8, 100, 1, give_up=give_up)
            assert int(k) == 100 and float(res) > 1e-8, give_up  # the same verdict
            assert (products[0] < 90) is give_up  # one a step, one at the end
        easy = [solvers.pcg(lambda v: jnp.sqrt(lam) ** 0.25 * v, b, lambda r: r, 1e-8, 400, 1,
                            give_up=g)[1] for g in (False, True)]  # eigenvalues 1 to 10
    assert int(easy[0]) == int(easy[1]) < 400


def test_dense_gauss_newton_is_exact_in_one_step_for_an_affine_residual():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(12, 5)), rng.normal(size=12)
    x, r = solvers.dense_gauss_newton(lambda x: jnp.asarray(a) @ x - b, jnp.zeros(5), 1)
    np.testing.assert_allclose(x, np.linalg.lstsq(a, b, rcond=None)[0], rtol=1e-10)
    np.testing.assert_allclose(np.asarray(r).T @ np.asarray(r), a.T @ a, rtol=1e-10)
