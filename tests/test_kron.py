import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest

from gpbayes import kron


def spd(n, seed):
    a = np.random.default_rng(seed).normal(size=(n, n))
    return a @ a.T + n * np.eye(n)


def dense(mats):
    out = np.ones((1, 1))
    for m in mats:
        out = np.kron(out, m)
    return out


@pytest.mark.parametrize("shape", [(5,), (4, 3), (3, 4, 2)])
def test_log_prob_matches_dense_mvn(shape):
    ks = [spd(n, i) for i, n in enumerate(shape)]
    trils = [jnp.linalg.cholesky(k) for k in ks]
    u = np.random.default_rng(9).normal(size=shape)
    mvn = dist.MultivariateNormal(jnp.zeros(int(np.prod(shape))), jnp.asarray(dense(ks)))
    np.testing.assert_allclose(kron.KroneckerNormal(trils).log_prob(u),
                               mvn.log_prob(u.reshape(-1)), rtol=1e-10)


@pytest.mark.parametrize("shape", [(4, 3), (3, 4, 2)])
def test_solve_apply_logdet_match_dense(shape):
    ks = [spd(n, i + 3) for i, n in enumerate(shape)]
    trils = [jnp.linalg.cholesky(k) for k in ks]
    u = np.random.default_rng(1).normal(size=shape)
    big = dense(ks)
    np.testing.assert_allclose(kron.kron_solve(trils, u).reshape(-1),
                               np.linalg.solve(big, u.reshape(-1)), rtol=1e-9)
    np.testing.assert_allclose(kron.kron_apply(ks, u).reshape(-1), big @ u.reshape(-1),
                               rtol=1e-10)
    np.testing.assert_allclose(kron.kron_logdet(trils), np.linalg.slogdet(big)[1], rtol=1e-10)


def test_mode_dot_on_each_axis():
    u = np.random.default_rng(2).normal(size=(3, 4, 5))
    a = np.random.default_rng(3).normal(size=(6, 4))
    np.testing.assert_allclose(kron.mode_dot(a, u, 1), np.einsum("ij,ajb->aib", a, u),
                               rtol=1e-12)


def test_sample_shape_and_covariance():
    ks = [spd(3, 0), spd(2, 1)]
    d = kron.KroneckerNormal([jnp.linalg.cholesky(k) for k in ks])
    s = d.sample(jax.random.PRNGKey(0), (40000,))
    assert s.shape == (40000, 3, 2) and d.event_shape == (3, 2)
    emp = np.cov(np.asarray(s).reshape(40000, -1).T)
    big = dense(ks)
    assert np.max(np.abs(emp - big)) < 0.05 * np.max(np.abs(big))
    np.testing.assert_allclose(d.variance.reshape(-1), np.diag(big), rtol=1e-12)


def test_batched_log_prob():
    ks = [spd(3, 0), spd(2, 1)]
    d = kron.KroneckerNormal([jnp.linalg.cholesky(k) for k in ks])
    u = np.random.default_rng(4).normal(size=(7, 3, 2))
    lp = d.log_prob(u)
    assert lp.shape == (7,)
    np.testing.assert_allclose(lp[3], d.log_prob(u[3]), rtol=1e-12)
