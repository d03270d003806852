"""The solvers: dense Gauss-Newton (QR) and PCG."""

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


def test_dense_gauss_newton_is_exact_in_one_step_for_an_affine_residual():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(12, 5)), rng.normal(size=12)
    x, r = solvers.dense_gauss_newton(lambda x: jnp.asarray(a) @ x - b, jnp.zeros(5), 1)
    np.testing.assert_allclose(x, np.linalg.lstsq(a, b, rcond=None)[0], rtol=1e-10)
    np.testing.assert_allclose(np.asarray(r).T @ np.asarray(r), a.T @ a, rtol=1e-10)
