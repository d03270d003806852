"""The unknowns' lattice (gpbayes.infer.lattice) on potentials whose answers are known."""

import numpy as np
import pytest

from gpbayes.infer import lattice


def gaussian(mean, cov):
    precision = np.linalg.inv(cov)

    def potential(x):
        d = np.asarray(x) - mean
        return 0.5 * d @ precision @ d

    return potential


@pytest.mark.parametrize(("scale", "offset"), [(1.0, 3.0), (0.3, 0.5), (3.0, 0.5)])
def test_lattice_moments_of_a_gaussian_away_from_its_centre(scale, offset):
    """Started ``offset`` sds from the mean with a covariance off by ``scale`` (the Laplace
    approximation of a marginal it is not centred on), the lattice walks to the mode and,
    where the scale was off by more than RESCALE, is built again in its own moments: its
    moments equal the Gaussian's."""
    mean, cov = np.array([1.0, -2.0]), np.array([[0.04, 0.018], [0.018, 0.09]])
    found, passes = lattice.build(gaussian(mean, cov), mean + [0.2 * offset, 0.0],
                                  scale**2 * cov)
    got_mean, got_cov = found.moments()
    assert not found.capped and (passes == 1) == (scale == 1.0)
    np.testing.assert_allclose(got_mean, mean, atol=1e-3 * 0.2)
    np.testing.assert_allclose(got_cov, cov, rtol=1e-2)


def test_lattice_of_a_skewed_density_matches_quadrature():
    """A Gamma(6) density in 1-D (skewed: a Laplace approximation misses its tails): the
    lattice's mean and sd match the exact 6 and sqrt(6) within 0.5%; its draws' mean too
    (within Monte-Carlo error) and their sd within 3% (the cells' width adds 1%)."""
    def potential(x):
        t = float(x[0])
        return np.inf if t <= 0 else -(5 * np.log(t) - t)

    found, _ = lattice.build(potential, np.array([5.0]), np.array([[5.0]]))
    m, c = found.moments()
    assert m[0] == pytest.approx(6.0, rel=5e-3) and np.sqrt(c[0, 0]) == pytest.approx(
        np.sqrt(6.0), rel=5e-3)
    draws, nodes = lattice.draw_theta(found, 20000, np.random.default_rng(0))
    draws = draws[:, 0]
    assert np.all(np.abs(draws - found.theta[nodes, 0]) <= 0.5 * found.step * found.root[0, 0])
    assert abs(draws.mean() - 6.0) < 4 * np.sqrt(6 / 20000)
    assert draws.std() == pytest.approx(np.sqrt(6.0), rel=0.03)
    assert draws.min() > 0


def test_a_lattice_too_small_for_the_posterior_says_so(monkeypatch):
    """A lattice that reaches MAX_NODES before its edge falls DROP below its best stops
    and is marked capped (the sampler then reports it as not converged)."""
    monkeypatch.setattr(lattice, "MAX_NODES", 20)
    found, _ = lattice.build(gaussian(np.zeros(2), np.eye(2)), np.zeros(2), 0.01 * np.eye(2))
    assert found.capped and len(found.index) <= 20


def test_mode_from_far_with_a_wrong_hessian():
    """The quasi-Newton search reaches the mode of a non-quadratic potential from 10 sds
    away with a Hessian 4x too large at the start, and returns a covariance near the
    mode's."""
    def value_and_grad(x):
        x = np.asarray(x)
        return 0.5 * x @ x + 0.05 * x[0] ** 4 / 4, x + 0.05 * np.array([x[0] ** 3, 0.0])

    x, cov = lattice.find_mode(value_and_grad, np.array([3.0, -10.0]), 4 * np.eye(2))
    np.testing.assert_allclose(x, 0.0, atol=0.05)
    assert np.all(np.diag(cov) > 0.5) and np.all(np.diag(cov) < 2.0)


def test_a_marginal_not_finite_anywhere_stops_with_one_line():
    """A potential that is nowhere finite raises NumericalError (the command prints it on
    one line and exits 1, the MAP kept) instead of drawing from NaN weights."""
    from gpbayes.errors import NumericalError

    with pytest.raises(NumericalError, match="not finite at any of the"):
        lattice.build(lambda x: np.nan, np.zeros(1), np.eye(1))
