"""KronSum and its direct solver against dense matrices (1-D, 2-D, 3-D)."""

import numpy as np
import pytest

from gpbayes.linalg import KronSum, KronSumSolver


def random_op(shape, shift, seed=0, symmetric=False):
    rng = np.random.default_rng(seed)
    mats = []
    for n in shape:
        m = rng.standard_normal((n, n)) / np.sqrt(n)
        m = m + m.T if symmetric else m
        mats.append(m - 3.0 * np.eye(n))  # eigenvalues away from zero
    return KronSum(tuple(mats), shift)


@pytest.mark.parametrize("shape", [(7,), (5, 6), (3, 4, 5)])
@pytest.mark.parametrize("shift", [0.0, 0.7])
def test_mv_and_solve_match_the_dense_matrix(shape, shift):
    op = random_op(shape, shift)
    a = op.as_matrix()
    dense = np.zeros((a.shape[0],) * 2)
    for j, m in enumerate(op.mats):  # the Kronecker sum written out
        mats = [np.eye(n) for n in shape]
        mats[j] = m
        term = mats[0]
        for x in mats[1:]:
            term = np.kron(term, x)
        dense = dense + term
    np.testing.assert_allclose(a, dense + shift * np.eye(len(dense)), atol=1e-12)
    b = np.random.default_rng(1).standard_normal((2,) + shape)  # a batch of two
    x = KronSumSolver(op).solve(b)
    assert x.shape == b.shape and np.isrealobj(x)
    for k in range(2):
        np.testing.assert_allclose(x[k].reshape(-1), np.linalg.solve(a, b[k].reshape(-1)),
                                   rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(op.mv(x), b, atol=1e-10)


def test_condition_of_the_eigenvectors_is_reported():
    assert KronSumSolver(random_op((4, 5), 0.0, symmetric=True)).condition < 1 + 1e-8
    assert KronSumSolver(random_op((4, 5), 0.0)).condition >= 1.0
