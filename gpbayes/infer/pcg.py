"""Matrix-free Gauss-Newton systems on the grid, solved by preconditioned CG.

At fixed hyperparameters minus the log joint is |z|^2/2 + |r(E z)|^2/2 in whitened grid
coordinates z, with r the model's data residual (``posterior.data_residual``). Here the
whitening is per-axis eigen: U = (E_1 kron ... kron E_d) z, E_j = Q_j Lambda_j^{1/2} from
K_j = Q_j Lambda_j Q_j^T. The Gauss-Newton matrix H = I + J^T J (J the Jacobian of
z -> r(E z)) is applied by one jvp and one vjp, never formed. In that basis the PDE's
stationary operators are nearly diagonal, so CG is preconditioned by the exact diagonal of
H, which Kronecker algebra gives cheaply: for J = sum_o diag(c_o) (kron_j B_j^o),

    diag(J^T J) = sum_{o,o'} (kron_j (B_j^o * B_j^o'))^T (c_o c_o')   (* elementwise).
"""

import jax
import jax.numpy as jnp
from jax import lax

from gpbayes import kernels, kron
from gpbayes.model import (
    axis_params,
    boundary_scale,
    data_residual,
    derivative_fields,
    equation_sd,
    unknown_values,
)


def eigen_bases(trils):
    """Per axis (E_j, E_j^{-1}, lambda_j) with K_j = L_j L_j^T = E_j E_j^T."""
    out = []
    for l in trils:
        lam, q = jnp.linalg.eigh(l @ l.T)  # no gradient flows here
        lam = jnp.maximum(lam, lam[-1] * 1e-300)
        out.append((q * jnp.sqrt(lam), (q / jnp.sqrt(lam)).T, lam))
    return out


def equation_coefficients(problem, values, trils, u):
    """{derivative name: c_o on the grid}, the linearisation of L[u] at u in each field."""
    fields = derivative_fields(problem, values, trils, u)
    env = dict(problem.constants)
    env.update(unknown_values(problem, values))
    env.update(problem.coordinates())

    def ev(fs):
        return jnp.broadcast_to(problem.equation({**env, **fs}), u.shape)

    ones = jnp.ones(u.shape)
    return {name: jax.jvp(lambda f, n=name: ev({**fields, n: f}), (fields[name],), (ones,))[1]
            for name in fields}


def axis_operator(problem, values, bases, j, m):
    """B_j^m: whitened z along axis j -> d^m u / dx_j^m (K_j^(m) K_j^{-1} E_j)."""
    e, e_inv, lam = bases[j]
    if m == 0:
        return e
    dk = kernels.toeplitz(problem.family, axis_params(problem, values, j),
                          jnp.asarray(problem.axes[j]), m)
    return dk @ (e / lam)


def hessian_diagonal(problem, values, trils, bases, u, sd_e, scale_b):
    """The exact diagonal of H = I + J^T J in the eigen-whitened coordinates."""
    coef = equation_coefficients(problem, values, trils, u)
    ops = {name: [axis_operator(problem, values, bases, j, m)
                  for j, m in enumerate(problem.derivatives[name])] for name in coef}
    diag = jnp.ones(problem.grid)
    names = list(coef)
    for a in names:
        for b in names:
            mats = [(pa * pb).T for pa, pb in zip(ops[a], ops[b])]
            diag = diag + kron.kron_apply(mats, coef[a] * coef[b]) / sd_e**2
    for face in problem.faces:
        row = 0 if face.side == "lo" else -1
        parts = [bases[j][0][row] ** 2 if j == face.axis else jnp.sum(bases[j][0] ** 2, 0)
                 for j in range(problem.ndim)]
        diag = diag + scale_b**2 * _outer(parts)
    if problem.observations is not None:
        points, _, noise = problem.observations
        rows = [kernels.cross(problem.family, axis_params(problem, values, j),
                              jnp.asarray(points[:, j]), jnp.asarray(problem.axes[j]))
                @ (bases[j][0] / bases[j][2]) for j in range(problem.ndim)]
        sq = [r**2 for r in rows]
        term = sq[0]
        for s in sq[1:]:
            term = term[..., None] * s.reshape((s.shape[0],) + (1,) * (term.ndim - 1)
                                               + (s.shape[1],))
        diag = diag + jnp.sum(term, axis=0) / noise**2
    return diag


def _outer(vectors):
    out = vectors[0]
    for v in vectors[1:]:
        out = out[..., None] * v
    return out


def pcg(matvec, b, precond, tol, maxiter):
    """Preconditioned conjugate gradients for SPD ``matvec``, batched over leading axes of b
    (the last axes are the grid). Stops when |H x - b| <= tol |b| for every right-hand side
    or after maxiter steps (|.| of CG's recursive residual); returns (x, iterations, the
    largest recomputed relative residual |b - H x| / |b|)."""
    nd = b.ndim - precond.ndim
    axes = tuple(range(nd, b.ndim))

    def dot(x, y):
        return jnp.sum(x * y, axis=axes, keepdims=True)

    bnorm = jnp.sqrt(dot(b, b))
    x = jnp.zeros_like(b)
    r = b
    z = r / precond
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
        z = r / precond
        rz_new = dot(r, z)
        p = z + (rz_new / rz) * p
        return k + 1, x, r, p, rz_new

    k, x, r, _, _ = lax.while_loop(cond, body, (0, x, r, p, rz))
    return x, k, rel(b - matvec(x))


def gauss_newton_system(problem, values, trils, u):
    """(z0, bases, r0, jvp, vjp, H matvec, diag) of the linearisation at grid values u."""
    bases = eigen_bases(trils)
    z0 = kron.kron_apply([b[1] for b in bases], u)
    e = [b[0] for b in bases]
    d = problem.ndim

    def f(z):
        return data_residual(problem, values, trils, kron.kron_apply(e, z))

    r0, jvp = jax.linearize(f, z0)
    transpose = jax.linear_transpose(jvp, z0)

    def vjp(v):
        return transpose(v)[0]

    def hess(v):  # batched over leading axes
        flat = v.reshape((-1,) + v.shape[v.ndim - d:])
        out = flat + jax.vmap(lambda x: vjp(jvp(x)))(flat)
        return out.reshape(v.shape)

    scale_b = boundary_scale(problem, values) if problem.faces else 0.0
    diag = hessian_diagonal(problem, values, trils, bases, u, equation_sd(problem, values),
                            scale_b)
    return z0, bases, r0, jvp, vjp, hess, diag
