"""Measurements' Gaussian predictive given a least-squares prior: the rows (J_c, d_c)
define z ~ N(x_c, P^{-1}), P = J_c^T J_c (the prior's identity rows included), x_c the
least-squares solution; measurement rows (J_e, d_e) with unit noise then have
d_e ~ N(J_e x_c, S), S = I + J_e P^{-1} J_e^T.

``log_density`` carries its own derivative: every term of it is O(m n) given one QR of
J_c, because the m_e measurement rows are few (automatic differentiation through the QR
costs about twice the QR again).
"""

import math

import jax
import jax.numpy as jnp
from jax import Array
from jax.scipy.linalg import cho_solve, solve_triangular

from gpbayes.infer.solvers import least_squares

LOG_2PI = math.log(2 * math.pi)


def _factors(jac_c: Array, rhs_c: Array, jac_e: Array, rhs_e: Array) -> tuple:
    """x_c, R (R^T R = P), r_e = J_e x_c - d_e, W = R^{-T} J_e^T, C (C C^T = S), C^{-1} r_e."""
    x_c, root = least_squares(jac_c, rhs_c)
    r_e = jac_e @ x_c - rhs_e
    w = solve_triangular(root, jac_e.T, trans=1, lower=False)
    chol = jnp.linalg.cholesky(jnp.eye(len(r_e)) + w.T @ w)
    return x_c, root, r_e, w, chol, solve_triangular(chol, r_e, lower=True)


def _value(chol: Array, a: Array) -> Array:
    return -0.5 * jnp.sum(a**2) - jnp.sum(jnp.log(jnp.diag(chol))) - 0.5 * len(a) * LOG_2PI


@jax.custom_jvp
def log_density(jac_c: Array, rhs_c: Array, jac_e: Array, rhs_e: Array) -> Array:
    """log N(d_e; J_e x_c, I + J_e P^{-1} J_e^T)."""
    *_, chol, a = _factors(jac_c, rhs_c, jac_e, rhs_e)
    return _value(chol, a)


@log_density.defjvp
def _log_density_jvp(primals, tangents):
    """With s = S^{-1} r_e, G = P^{-1} J_e^T, g = G s, B = S^{-1} - s s^T, rho = d_c - J_c x_c:
    d log p = <dJ_e, -s x_c^T - B G^T> + <dd_e, s> + <dJ_c, (J_c g) x_c^T - rho g^T
              + J_c G B G^T> - <dd_c, J_c g>."""
    jac_c, rhs_c, jac_e, rhs_e = primals
    d_jac_c, d_rhs_c, d_jac_e, d_rhs_e = tangents
    x_c, root, _, w, chol, a = _factors(*primals)
    s = solve_triangular(chol, a, trans=1, lower=True)
    big_g = solve_triangular(root, w, lower=False)
    b = cho_solve((chol, True), jnp.eye(len(s))) - jnp.outer(s, s)
    g, jg = big_g @ s, jac_c @ (big_g @ s)
    rho = rhs_c - jac_c @ x_c
    on_c = jnp.outer(jg, x_c) - jnp.outer(rho, g) + (jac_c @ big_g) @ (b @ big_g.T)
    tangent = (jnp.sum(d_jac_e * (-jnp.outer(s, x_c) - b @ big_g.T)) + d_rhs_e @ s
               + jnp.sum(d_jac_c * on_c) - d_rhs_c @ jg)
    return _value(chol, a), tangent


def mode(jac_c: Array, rhs_c: Array, jac_e: Array, rhs_e: Array) -> Array:
    """z's mode given both sets of rows: x_c's Kalman update, x_c - P^{-1} J_e^T S^{-1} r_e."""
    x_c, root, _, w, chol, a = _factors(jac_c, rhs_c, jac_e, rhs_e)
    return x_c - solve_triangular(root, w @ solve_triangular(chol, a, trans=1, lower=True),
                                  lower=False)
