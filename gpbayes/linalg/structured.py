"""The structured preconditioner of the regularized U solve for the Laplacian, compiled
(traced jax, no host callback): H = I + tau_e J^T J + B^T B in the rotated whitened
coordinates s of ``gauss_newton`` (a study: not yet in the profile solver; measured by
``benchmarks/preconditioner_study.py --structured``).

In each axis's eigenbasis of K_j (E_j = Q_j Lambda_j^{1/2}), J = (kron_j E_j) M exactly,
M = sum_j T_j (x) Z_others, T_j = E_j^{-1} k_j'' K_j^{-1} E_j (symmetric) and Z_j =
diag(1 - jitter / lambda_j) (the mean's values). So J^T J = M G M, G = kron_j Lambda_j,
and M = Z^{1/2} (C_1 (+) ... (+) C_d) Z^{1/2} with C_j = Z_j^{-1/2} T_j Z_j^{-1/2} = Y_j
diag(sigma_j) Y_j^T: M^{-1} is a fast diagonalization. P = M (tau_e G + Delta) M + B^T B,
Delta = diag(1 / (M^2)_ii) standing for the prior's I = M M^{-2} M (exact on the modes the
equation rules); the boundary rows enter by Woodbury, the capacitance formed by applying
P's first part to every row (setup O(n_b N n)), each application two of P's first part.
"""

import math
from collections.abc import Callable

import jax.numpy as jnp
from jax import Array
from jax.scipy.linalg import cho_factor, cho_solve

from gpbayes import kron


def _axis_factors(cond, j: int, e_inv: Array) -> tuple:
    """Axis j's (outer: sigma basis -> s, inner: sigma basis -> Q basis, lambda, sigma,
    (T^2)_ii, T_ii z, z^2)."""
    n = cond.problem.grid[j]
    lk, q = jnp.linalg.eigh(cond.kernel_matrix(j) + cond.jitter * jnp.eye(n))
    lk = jnp.maximum(lk, cond.jitter)
    root = jnp.sqrt(lk)
    t = (q / root).T @ cond.kernel_matrix(j, 2) @ (q / root)
    t = 0.5 * (t + t.T)
    z = jnp.maximum(1.0 - cond.jitter / lk, 1e-8)
    sigma, y = jnp.linalg.eigh(t / jnp.sqrt(jnp.outer(z, z)))
    inner = y / jnp.sqrt(z)[:, None]
    outer = e_inv @ (q * root) @ inner
    return outer, inner, lk, sigma, (jnp.sum(t * t, 0), jnp.diag(t) * z, z * z)


def _along(vectors: list) -> list:
    """Each v_j of ``vectors`` shaped to broadcast along axis j of the grid."""
    d = len(vectors)
    return [v.reshape((-1,) + (1,) * (d - 1 - j)) for j, v in enumerate(vectors)]


def _grid_sum(vectors: list) -> Array:
    """sum_j v_j, v_j along axis j of the grid."""
    return sum(_along(vectors))


def _grid_product(vectors: list) -> Array:
    """prod_j v_j, v_j along axis j of the grid (the diagonal of kron_j diag(v_j))."""
    return math.prod(_along(vectors))


def _m_squared_diagonal(diags: list) -> Array:
    """(M^2)_ii on the grid for M = sum_j T_j (x) Z_others: sum_j (T_j^2)_ii z_others^2
    + sum_{j != k} (T_j)_ii z_j (T_k)_ii z_k z_others^2."""
    d = len(diags)
    out = 0.0
    for j in range(d):
        for k in range(d):
            vecs = [diags[c][2] for c in range(d)]  # z^2
            if j == k:
                vecs[j] = diags[j][0]
            else:
                vecs[j], vecs[k] = diags[j][1], diags[k][1]
            out = out + _grid_product(vecs)
    return out


def structured_preconditioner(cond, basis, rows) -> Callable[[Array], Array]:
    """v -> P^{-1} v in s (module docstring) for ``cond`` of the equation u_xx + u_yy
    (+ u_zz); ``basis`` its ``gauss_newton.RotatedBasis``, ``rows`` its
    ``gauss_newton.BoundaryRows``.
    Traceable: the setup is d eigendecompositions per axis and the n_b x n_b capacitance."""
    d = cond.problem.ndim
    factors = [_axis_factors(cond, j, basis.e_inv[j]) for j in range(d)]
    outer, inner = [f[0] for f in factors], [f[1] for f in factors]
    sig = _grid_sum([f[3] for f in factors])
    tau = 1.0 / cond.equation_sd**2
    w = 1.0 / (tau * _grid_product([f[2] for f in factors])
               + 1.0 / _m_squared_diagonal([f[4] for f in factors]))

    def base(v):  # (M (tau G + Delta) M)^{-1}
        x = kron.kron_apply([a.T for a in outer], v) / sig
        x = kron.kron_apply(inner, x) * w
        x = kron.kron_apply([a.T for a in inner], x) / sig
        return kron.kron_apply(outer, x)

    scale = cond.boundary_scale
    n_b = scale.shape[0]
    pr = base(rows.transpose(jnp.eye(n_b) * scale))  # P_0^{-1} R^T, R = diag(scale) B
    cap = jnp.eye(n_b) + rows.apply(pr) * scale
    cap = 0.5 * (cap + cap.T)
    cap = cap + 1e-12 * jnp.mean(jnp.diag(cap)) * jnp.eye(n_b)  # corners repeat a row
    factor = cho_factor(cap, lower=True)

    def apply(v: Array) -> Array:  # R by its mode products: no n_b x N array read per call
        y = base(v)
        c = cho_solve(factor, jnp.moveaxis(rows.apply(y) * scale, -1, 0))
        return y - base(rows.transpose(jnp.moveaxis(c, 0, -1) * scale))

    return apply


def two_level(mv: Callable, default: Callable, structured: Callable,
              omega: float = 0.5) -> Callable[[Array], Array]:
    """Symmetric multiplicative: omega ``default`` (the diagonal preconditioner, which
    holds the modes the prior rules), the ``structured`` correction (exact on those the
    equation rules) of the residual, omega ``default`` again; symmetric, so PCG takes it
    (two more products with H, ``mv``, each)."""
    def apply(r: Array) -> Array:
        x = omega * default(r)
        x = x + structured(r - mv(x))
        return x + omega * default(r - mv(x))

    return apply
