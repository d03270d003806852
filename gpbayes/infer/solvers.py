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


def dense_gauss_newton(residual: Callable[[Array], Array], x: Array, steps: int,
                       safeguard: bool = False) -> tuple[Array, Array]:
    """``steps`` Gauss-Newton steps on |residual(x)|^2/2 from the flat vector x, each the
    least-squares solution of the linearisation by QR (exact in one step when the
    residual is affine; ``safeguard`` halves a step that does not lower |residual|, for
    residuals far from affine). Returns (x, R) with R^T R the Gauss-Newton Hessian at the
    last linearisation. Put heavy rows first in the residual: Householder QR is accurate
    for stiff weighted problems then."""
    r = None
    for _ in range(steps):
        jac = jax.jacfwd(residual)(x)
        r_x = residual(x)
        new, r = least_squares(jac, jac @ x - r_x)
        if safeguard:
            d = new - x
            t = backtrack(lambda t, x=x, d=d: jnp.sum(residual(x + t * d) ** 2), jnp.sum(r_x**2))
            new = x + t * d
        x = new
    return x, r


def least_squares(a: Array, b: Array) -> tuple[Array, Array]:
    """argmin_x |a x - b| for a (m >= n) of full column rank by Householder QR; returns
    (x, R), R^T R = a^T a. The QR of [a | b] gives R and Q^T b in its last column, without
    forming Q (half the cost of a QR that forms it)."""
    n = a.shape[1]
    r = jnp.linalg.qr(jnp.concatenate([a, b[:, None]], axis=1), mode="r")
    return solve_triangular(r[:n, :n], r[:n, n], lower=False), r[:n, :n]


def backtrack(f: Callable[[Array], Array], f0: Array, halvings: int = 30) -> Array:
    """The first t of 1, 1/2, 1/4, ... with f(t) <= f0, or 0 if none within ``halvings``
    (a non-finite f counts as a rise): the safeguard of a Gauss-Newton step."""

    def more(carry):
        t, v = carry
        return (t > 2.0**-halvings) & ~(v <= f0)

    def body(carry):
        t = 0.5 * carry[0]
        return t, f(t)

    one = jnp.asarray(1.0, dtype=f0.dtype)
    t, v = lax.while_loop(more, body, (one, f(one)))
    return jnp.where(v <= f0, t, 0.0)


def pcg(matvec: Callable, b: Array, precond: Callable, tol: float, maxiter: int,
        ndim: int, x0: Array | None = None) -> tuple:
    """Preconditioned conjugate gradients for SPD ``matvec``, batched over leading axes of b
    (the last ``ndim`` axes are the grid); ``precond`` applies the inverse preconditioner.
    Stops when |H x - b| <= tol |b| for every right-hand side or after maxiter steps (|.|
    of CG's recursive residual); returns (x, iterations, the largest recomputed relative
    residual |b - H x| / |b|). ``x0``: the start (default 0)."""
    axes = tuple(range(b.ndim - ndim, b.ndim))

    def dot(x, y):
        return jnp.sum(x * y, axis=axes, keepdims=True)

    bnorm = jnp.sqrt(dot(b, b))
    x = jnp.zeros_like(b) if x0 is None else x0
    r = b if x0 is None else b - matvec(x0)
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
        php = dot(p, hp)
        alpha = jnp.where(php > 0, rz / jnp.where(php > 0, php, 1.0), 0.0)  # b = 0: x = 0
        x = x + alpha * p
        r = r - alpha * hp
        z = precond(r)
        rz_new = dot(r, z)
        p = z + jnp.where(rz > 0, rz_new / jnp.where(rz > 0, rz, 1.0), 0.0) * p
        return k + 1, x, r, p, rz_new

    k, x, r, _, _ = lax.while_loop(cond, body, (0, x, r, p, rz))
    return x, k, rel(b - matvec(x))
