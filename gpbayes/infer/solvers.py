"""Solvers of Gauss-Newton systems: dense QR least squares (``dense_gauss_newton``, grids up
to MAX_DENSE points) and matrix-free preconditioned CG (``pcg``, any grid).
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import Array, lax
from jax.scipy.linalg import solve_triangular

MAX_DENSE = 4000  # grid points; the dense solve is O(N^3)


def is_dense(problem) -> bool:
    """1-D grids up to MAX_DENSE points are solved densely (QR), the rest by PCG."""
    return problem.ndim == 1 and problem.size <= MAX_DENSE


def dense_gauss_newton(residual: Callable[[Array], Array], x: Array,
                       steps: int) -> tuple[Array, Array]:
    """``steps`` Gauss-Newton steps on |residual(x)|^2/2 from the flat vector x, each the
    least-squares solution of the linearisation by QR (exact in one step when the
    residual is affine). Returns (x, R) with R^T R the Gauss-Newton Hessian at the last
    linearisation. Put heavy rows first in the residual: Householder QR is accurate for
    stiff weighted problems then."""
    r = None
    for _ in range(steps):
        jac = jax.jacfwd(residual)(x)
        q, r = jnp.linalg.qr(jac)
        x = solve_triangular(r, q.T @ (jac @ x - residual(x)), lower=False)
    return x, r


def pcg(matvec: Callable, b: Array, precond: Callable, tol: float, maxiter: int,
        ndim: int) -> tuple:
    """Preconditioned conjugate gradients for SPD ``matvec``, batched over leading axes of b
    (the last ``ndim`` axes are the grid); ``precond`` applies the inverse preconditioner.
    Stops when |H x - b| <= tol |b| for every right-hand side or after maxiter steps (|.|
    of CG's recursive residual); returns (x, iterations, the largest recomputed relative
    residual |b - H x| / |b|)."""
    axes = tuple(range(b.ndim - ndim, b.ndim))

    def dot(x, y):
        return jnp.sum(x * y, axis=axes, keepdims=True)

    bnorm = jnp.sqrt(dot(b, b))
    x = jnp.zeros_like(b)
    r = b
    z = precond(r)
    p = z
    rz = dot(r, z)

    def rel(r):
        return jnp.max(jnp.sqrt(dot(r, r)) / jnp.maximum(bnorm, 1e-300))

    def cond(state):
        k, x, r, p, rz = state
        return (k < maxiter) & (rel(r) > tol)

    def body(state):
        k, x, r, p, rz = state
        hp = matvec(p)
        alpha = rz / dot(p, hp)
        x = x + alpha * p
        r = r - alpha * hp
        z = precond(r)
        rz_new = dot(r, z)
        p = z + (rz_new / rz) * p
        return k + 1, x, r, p, rz_new

    k, x, r, _, _ = lax.while_loop(cond, body, (0, x, r, p, rz))
    return x, k, rel(b - matvec(x))
