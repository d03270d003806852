import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gpbayes.errors import NumericalError
from gpbayes.infer.marginal import TAU_RANGE, newton, settle_tau_e


def test_newton_reaches_the_mode_of_a_quadratic_and_returns_its_hessian():
    a = jnp.array([[3.0, 1.0], [1.0, 2.0]])
    f = jax.jit(lambda x, c: 0.5 * (x - c) @ a @ (x - c))
    x, h = newton(f, jnp.zeros(2), args=(jnp.array([1.0, -2.0]),))
    np.testing.assert_allclose(x, [1.0, -2.0], atol=1e-10)
    np.testing.assert_allclose(h, a, rtol=1e-12)


def test_settle_tau_e_finds_the_maximum_of_the_evidence_with_the_unknowns_integrated():
    """A potential whose evidence over log tau_e is known in closed form: theta's Gaussian
    has precision e^t (its Laplace integral -t/2) and height -(t - 4)^2/4 + t/2, so the
    log evidence is -(t - 4)^2/4 whatever theta's mode: the maximum at t = 4, found from
    a centre of 1; a mode that moves with t is followed."""
    def potential(v, t):
        return 0.5 * jnp.exp(t) * (v["a"] - 0.1 * t) ** 2 + (t - 4) ** 2 / 4 - t / 2

    out = settle_tau_e(potential, {"a": jnp.asarray(0.0)}, 1.0)
    assert out["log_tau_e"] == 4.0 and out["map"] == 1.0 and not out["at_edge"]
    values = dict((t, v) for t, v in out["log_evidence"])
    assert len(values) == 2 * TAU_RANGE + 1
    np.testing.assert_allclose(values[4.0] - values[6.0], 1.0, atol=1e-6)


def test_settle_tau_e_says_when_the_maximum_is_at_the_edge_of_its_search():
    """An evidence that rises without end (the equation's precision never hurts: a fine
    grid) stops at the search's edge, and says so."""
    out = settle_tau_e(lambda v, t: 0.5 * v["a"] ** 2 - jnp.tanh(t), {"a": jnp.asarray(0.0)},
                       0.0)
    assert out["log_tau_e"] == TAU_RANGE and out["at_edge"]


def test_settle_tau_e_stops_cleanly_where_the_evidence_is_never_finite():
    with pytest.raises(NumericalError, match="not finite"):
        settle_tau_e(lambda v, t: jnp.nan * v["a"], {"a": jnp.asarray(0.0)}, 0.0)
