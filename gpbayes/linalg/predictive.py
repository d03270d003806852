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
import numpy as np
from jax import Array, lax
from jax.scipy.linalg import cho_solve, solve_triangular

from gpbayes.infer import solvers
from gpbayes.infer.solvers import least_squares

LOG_2PI = math.log(2 * math.pi)
REFINE = 2  # solves of U's mode given the PDE (``structured``): the second on the first's
# recomputed residual
COVARIANCE = 1e-4  # the log density's error allowed from ``structured``'s covariance solves


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


def structured(gn, rows: np.ndarray, tol: float, cov_tol: float, maxiter: int,
               warm: tuple | None = None) -> tuple:
    """``log_density`` and ``mode`` without forming J: the rows of the Gauss-Newton
    operator ``gn`` (coordinates s, H = I + J^T J) where ``rows`` is True are the
    measurements, the others the PDE's (H_c = I + J_c^T J_c). x_c = H_c^{-1} J_c^T d_c is
    solved to ``tol``; the m columns W = H_c^{-1} J_e^T enter only S = I + J_e W, so they
    are solved to ``cov_tol``, then (where S - I is not small) again to COVARIANCE / (m
    |S - I|): the log density's error from them is then about COVARIANCE. Each solve is
    PCG inside ``lax.custom_linear_solve``, so derivatives come by implicit
    differentiation (more solves), never through CG's iterations; x_c from gn's point,
    refined REFINE times. ``warm`` (x_c and W on the grid, W's tolerance) at nearby values: each
    solve starts there, to the same tolerance of the same right-hand side (no derivatives
    then). Returns (s at the mode given all rows, the residual of all rows there,
    log N(d_e; J_e x_c, S), ``warm`` for nearby values)."""
    keep = jnp.asarray(~rows, dtype=gn.r0.dtype)
    index = np.flatnonzero(rows)
    ndim = gn.ndim

    def h_c(v):  # batched over leading axes
        flat = v.reshape((-1,) + v.shape[v.ndim - ndim:])
        out = flat + jax.vmap(lambda x: gn.vjp(keep * gn.jvp(x)))(flat)
        return out.reshape(v.shape)

    def pcg(b, tolerance, x0=None):
        return solvers.pcg(h_c, b, gn.preconditioner, tolerance, maxiter, ndim, x0)[0]

    def solve(b, tolerance):
        return lax.custom_linear_solve(h_c, b, lambda _, rhs: pcg(rhs, tolerance),
                                       symmetric=True)

    def s_minus_i(w):
        return jax.vmap(gn.jvp)(w)[:, index]

    s0 = lax.stop_gradient(gn.s0)
    cols = jax.vmap(lambda i: gn.vjp(jnp.zeros_like(gn.r0).at[i].set(1.0)))(index)  # J_e^T
    if warm is None:
        x_c = s0
        for _ in range(REFINE):  # iterative refinement: each on the recomputed gradient
            x_c = x_c - solve(x_c + gn.vjp(keep * (gn.r0 + gn.jvp(x_c - s0))), tol)
        w = solve(cols, cov_tol)
        size = jnp.linalg.norm(lax.stop_gradient(s_minus_i(w)), 2)
        w_tol = jnp.clip(COVARIANCE / (len(index) * size), 1e-12, cov_tol)
        w = lax.cond(w_tol < cov_tol, lambda: solve(cols, w_tol), lambda: w)
    else:  # on the grid: the basis s lives in is recomputed per call, not bitwise the same
        x_c = pcg(-gn.vjp(keep * (gn.r0 - gn.jvp(s0))), tol, gn.from_grid(warm[0]))
        w, w_tol = pcg(cols, warm[2], gn.from_grid(warm[1])), warm[2]
    r_e = (gn.r0 + gn.jvp(x_c - s0))[index]
    s_mat = jnp.eye(len(index)) + s_minus_i(w)
    chol = jnp.linalg.cholesky(0.5 * (s_mat + s_mat.T))
    a = solve_triangular(chol, r_e, lower=True)
    mode = x_c - jnp.tensordot(solve_triangular(chol, a, trans=1, lower=True), w, axes=1)
    return mode, gn.r0 + gn.jvp(mode - s0), _value(chol, a), (gn.to_grid(x_c), gn.to_grid(w),
                                                              w_tol)
