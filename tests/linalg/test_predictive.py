"""The measurements' predictive given least-squares rows, and its own derivative."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gpbayes.infer.solvers import least_squares
from gpbayes.linalg import predictive


def _rows(seed, n=12, m_c=9, m_e=4):
    """Random rows: m_c data rows and the prior's n identity rows, m_e measurements."""
    rng = np.random.default_rng(seed)
    jac_c = np.vstack([rng.normal(size=(m_c, n)) * 30.0, np.eye(n)])
    rhs_c = np.concatenate([rng.normal(size=m_c), np.zeros(n)])
    return tuple(map(jnp.asarray, (jac_c, rhs_c, rng.normal(size=(m_e, n)),
                                   rng.normal(size=m_e))))


def _dense(jac_c, rhs_c, jac_e, rhs_e):
    """The same predictive from the normal equations (plain automatic differentiation)."""
    p = jac_c.T @ jac_c
    x_c = jnp.linalg.solve(p, jac_c.T @ rhs_c)
    s = jnp.eye(len(rhs_e)) + jac_e @ jnp.linalg.solve(p, jac_e.T)
    return jax.scipy.stats.multivariate_normal.logpdf(rhs_e, jac_e @ x_c, s)


@pytest.mark.parametrize("seed", [0, 1])
def test_log_density_and_mode(seed):
    rows = _rows(seed)
    np.testing.assert_allclose(predictive.log_density(*rows), _dense(*rows), rtol=1e-10)
    both, _ = least_squares(jnp.vstack([rows[0], rows[2]]), jnp.concatenate([rows[1], rows[3]]))
    np.testing.assert_allclose(predictive.mode(*rows), both, rtol=1e-9, atol=1e-12)


def test_derivative_forward_reverse_and_second_order():
    """The hand-written JVP against plain AD of the dense formula, in each argument; its
    transpose (grad) and a Hessian through it (what NUTS's mass matrix takes)."""
    rows = _rows(2)
    rng = np.random.default_rng(3)
    tangents = tuple(jnp.asarray(rng.normal(size=r.shape)) for r in rows)
    _, ours = jax.jvp(predictive.log_density, rows, tangents)
    _, plain = jax.jvp(_dense, rows, tangents)
    np.testing.assert_allclose(ours, plain, rtol=1e-8)
    for i in range(4):
        np.testing.assert_allclose(jax.grad(predictive.log_density, i)(*rows),
                                   jax.grad(_dense, i)(*rows), rtol=1e-7, atol=1e-10)

    def along(t, f):  # the rows as a function of one scalar, as the model's unknowns
        return f(rows[0] + t * tangents[0], rows[1], rows[2], rows[3] + t * tangents[3])

    np.testing.assert_allclose(jax.hessian(along)(0.3, predictive.log_density),
                               jax.hessian(along)(0.3, _dense), rtol=1e-7)


def test_matrix_free_evidence_equals_the_dense_one():
    """``structured`` (PCG, implicit derivatives; ``Conditional.evidence_matrix_free``)
    against the dense QR (``evidence_given_pde``) on a 2-D grid with an unknown c and 12
    observations: the log density, its derivative in c, and U's mode;
    the warm start from the solves at a nearby c gives the same value."""
    from conftest import small_inverse_problem
    from gpbayes.conditional import Conditional
    from gpbayes.coordinates import Whitened
    from gpbayes.results import fixed_sites

    p, fit = small_inverse_problem()
    held = Conditional(p, fixed_sites(fit), fit.recipe.jitter)
    u = fit.params["U"]

    def dense(c):
        return held.with_values({"c": c}).evidence_given_pde()[2]

    @jax.jit
    def free(c, warm=None):
        return held.with_values({"c": c}).evidence_matrix_free(u, 1e-12, 1e-12, 5000, warm)

    def value(c):
        return free(c)[2]

    c = jnp.asarray(1.9)
    np.testing.assert_allclose(value(c), dense(c), rtol=1e-9)
    np.testing.assert_allclose(jax.jit(jax.grad(value))(c), jax.jit(jax.grad(dense))(c),
                               rtol=1e-6)
    cond = held.with_values({"c": c})
    np.testing.assert_allclose(free(c)[0], cond.to_grid(Whitened(cond.evidence_given_pde()[0])),
                               rtol=1e-8, atol=1e-10)
    warm = free(jnp.asarray(2.0))[3]
    np.testing.assert_allclose(free(c, warm)[2], dense(c), rtol=1e-9)
